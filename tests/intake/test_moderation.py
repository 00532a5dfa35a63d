"""Banned words (whole words, Unicode, phrases, reload), strikes and escalating blocks."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from gouache.errors import ConfigError
from gouache.intake import BannedWords, ModerationSettings, StrikeKind, WordMatcher
from gouache.intake.moderation import Moderation, block_duration, next_block, parse_word_list
from gouache.storage.base import UserRecord
from gouache.storage.sqlite import SQLiteStore

from ..conftest import ManualClock
from .conftest import Ticker

WORDS = """
# comment lines and blank lines are skipped

Gore
blood bath
色情
nsfw
  straße
"""


@pytest.fixture
def matcher() -> WordMatcher:
    return WordMatcher(parse_word_list(WORDS))


def test_word_list_format() -> None:
    assert parse_word_list(WORDS) == ["Gore", "blood bath", "色情", "nsfw", "straße"]


@pytest.mark.parametrize(
    "text",
    [
        "gore",
        "GORE!",
        "so much Gore, wow",
        "cat_gore",  # an underscore joins nothing
        "ｇｏｒｅ",  # full-width letters
        "go\u200bre",  # a zero-width space inside
        "a blood bath at dawn",
        "a Blood-Bath",
        "blood   bath",
        "blood\nbath",
        "一张色情图片",  # no word boundaries in Chinese
        "色 情",
        "NSFW art",
        "STRASSE at night",  # German ß case-folds to ss
        "Straße",
    ],
)
def test_matches(matcher: WordMatcher, text: str) -> None:
    assert matcher.find(text) is not None


@pytest.mark.parametrize(
    "text",
    [
        "gorey",
        "gorgeous",
        "a bloodbath",  # one word is not the phrase
        "blood on the bath",
        "bath blood",
        "nsfwx",
        "色彩",
        "an ordinary cat",
        "",
    ],
)
def test_does_not_match(matcher: WordMatcher, text: str) -> None:
    assert matcher.find(text) is None


def test_a_large_list_stays_fast(matcher: WordMatcher) -> None:
    big = WordMatcher(
        [f"word{i}" for i in range(20_000)] + [f"phrase {i} here" for i in range(5000)]
    )
    assert big.size == 25_000
    text = " ".join(f"token{i}" for i in range(300)) + " phrase 4999 here"
    assert big.find(text) == "phrase 4999 here"


def test_file_is_reloaded_when_it_changes(tmp_path: Path, ticker: Ticker) -> None:
    path = tmp_path / "banned.txt"
    path.write_text("gore\n", encoding="utf-8")
    words = BannedWords(path, check_interval_s=2.0, monotonic=ticker)
    words.load()
    assert words.find("gore") == "gore" and words.find("splatter") is None
    path.write_text("gore\nsplatter\n", encoding="utf-8")
    os.utime(path, ns=(1, 1_000_000_000))  # a distinct mtime even on coarse file systems
    assert words.find("splatter") is None  # not checked again within the interval
    ticker.advance(2.5)
    assert words.find("splatter") == "splatter" and words.loads == 2
    ticker.advance(2.5)
    assert words.find("splatter") == "splatter" and words.loads == 2  # unchanged: not re-read


def test_missing_file_is_a_config_error_at_start_and_kept_later(
    tmp_path: Path, ticker: Ticker
) -> None:
    missing = BannedWords(tmp_path / "nope.txt", monotonic=ticker)
    with pytest.raises(ConfigError, match=r"moderation\.banned_words_file"):
        missing.load()
    path = tmp_path / "banned.txt"
    path.write_text("gore\n", encoding="utf-8")
    words = BannedWords(path, check_interval_s=0, monotonic=ticker)
    words.load()
    path.unlink()
    ticker.advance(1)
    assert words.find("gore") == "gore"  # the last good list stays in force
    path.write_bytes(b"\xff\xfe broken")
    ticker.advance(1)
    assert words.find("gore") == "gore"


def test_block_ladder() -> None:
    steps = (1.0, 2.0, 10.0)
    assert [block_duration(n, steps) for n in (1, 2, 3, 4, 9)] == [
        timedelta(hours=1),
        timedelta(hours=2),
        timedelta(hours=10),
        timedelta(hours=10),
        timedelta(hours=10),
    ]


def test_next_block_escalates_then_resets(clock: ManualClock) -> None:
    settings = ModerationSettings(block_reset_h=48)
    now = clock()
    first = next_block(UserRecord(user_id=1), now, settings)
    assert first.level == 1 and first.until == now + timedelta(hours=1)
    second = next_block(
        UserRecord(user_id=1, blocked_until=first.until, block_level=1),
        now + timedelta(hours=3),
        settings,
    )
    assert second.level == 2 and second.duration == timedelta(hours=2)
    fresh = next_block(
        UserRecord(user_id=1, blocked_until=first.until, block_level=3),
        now + timedelta(days=3),
        settings,
    )
    assert fresh.level == 1


def test_settings_reject_bad_block_steps() -> None:
    with pytest.raises(ValueError, match="at least one block length"):
        ModerationSettings(block_steps_h=())
    with pytest.raises(ValueError, match="at least one block length"):
        ModerationSettings(block_steps_h=(1.0, 0.0))


async def test_strikes_in_a_window_block_and_escalate(
    store: SQLiteStore, clock: ManualClock
) -> None:
    mod = Moderation(
        ModerationSettings(refusals_to_block=3, strike_window_s=600), store, clock=clock
    )
    assert await mod.strike(7, StrikeKind.REFUSED) is None
    clock.advance(601)  # the first strike falls out of the window
    assert await mod.strike(7, StrikeKind.REFUSED) is None
    assert await mod.strike(7, StrikeKind.REFUSED) is None
    block = await mod.strike(7, StrikeKind.REFUSED)
    assert block is not None and block.level == 1 and block.duration == timedelta(hours=1)
    record = await store.get_user(7)
    assert record.blocked_until == clock() + timedelta(hours=1) and record.block_level == 1
    assert record.banned(clock()) and await mod.blocked_until(7) == record.blocked_until
    # the block ends; three more strikes earn the next step
    clock.advance(3601)
    assert await mod.blocked_until(7) is None
    for _ in range(2):
        assert await mod.strike(7, StrikeKind.REFUSED) is None
    second = await mod.strike(7, StrikeKind.REFUSED)
    assert second is not None and second.level == 2 and second.duration == timedelta(hours=2)
    clock.advance(2 * 3600 + 1)
    for _ in range(2):
        await mod.strike(7, StrikeKind.REFUSED)
    third = await mod.strike(7, StrikeKind.REFUSED)
    assert third is not None and third.level == 3 and third.duration == timedelta(hours=10)
    assert (await store.get_user(7)).block_level == 3


async def test_banned_results_have_their_own_threshold_and_keep_owner_fields(
    store: SQLiteStore, clock: ManualClock
) -> None:
    await store.put_user(UserRecord(user_id=8, tier="vip", daily_limit=40))
    mod = Moderation(ModerationSettings(banned_results_to_block=2), store, clock=clock)
    await mod.strike(8, StrikeKind.REFUSED)
    assert await mod.strike(8, StrikeKind.BANNED_RESULT) is None
    block = await mod.strike(8, StrikeKind.BANNED_RESULT)
    assert block is not None
    record = await store.get_user(8)
    assert record.tier == "vip" and record.daily_limit == 40 and record.block_level == 1
