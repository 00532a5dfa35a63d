"""Banned words, strikes and escalating blocks.

The word list is a plain file: one word or phrase per line, ``#`` starts a
comment line, blank lines are ignored. It is re-read when its modification
time or size changes (checked at most every ``reload_check_s``); a list that
cannot be read at start is a configuration error, one that breaks later keeps
the last good list in force.

Matching is case-insensitive (Unicode case folding after NFKC, so full-width
and styled letters match too, and invisible format characters are dropped)
and by whole words: ``cat`` matches "Cat!" and "cat_girl" but not "category".
A phrase matches its words in order with any punctuation or spaces between
them. Terms in scripts written without spaces (Chinese, Japanese, Thai…)
match anywhere, since they have no word boundaries to honour.

A refused prompt, or a "Banned prompt detected" answer from Midjourney, is a
strike. Enough strikes within the window block the member for the next step
of ``block_steps_h`` (1 h, 2 h, 10 h…); a block long past resets the ladder.
Strikes are counted in memory per process; blocks are stored with the user
record (``blocked_until``, ``block_level``) so every process and ``gouache
user show`` see them.
"""

from __future__ import annotations

import os
import re
import time
import unicodedata
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path

import structlog

from gouache.errors import ConfigError
from gouache.intake.settings import ModerationSettings
from gouache.queue.quota import Clock
from gouache.storage.base import Store, UserRecord

log = structlog.get_logger(__name__)

# Scripts written without spaces between words: no word boundaries there.
_UNSPACED = (
    "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u31f0-\u31ff"
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f"
)
_UNSPACED_CHAR = re.compile(f"[{_UNSPACED}]")
# A "word" is a run of letters and digits outside those scripts.
_WORD = re.compile(f"[^\\W_{_UNSPACED}]+")


def normalize(text: str) -> str:
    """Case-folded NFKC text without invisible format characters (zero-width spaces…)."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    return text.casefold()


def parse_word_list(content: str) -> list[str]:
    """The terms of a word-list file: one per line, ``#`` comment lines and blanks skipped."""
    terms = []
    for line in content.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            terms.append(line)
    return terms


class WordMatcher:
    """Whole-word, case-insensitive matching of many words and phrases at once."""

    def __init__(self, terms: Iterable[str]) -> None:
        self._phrases: dict[int, dict[tuple[str, ...], str]] = {}
        # Fragments (no word boundaries) by length: one set lookup per window and length.
        self._fragments: dict[int, dict[str, str]] = {}
        count = 0
        for term in terms:
            norm = normalize(term)
            if _UNSPACED_CHAR.search(norm):
                key = "".join(norm.split())
                self._fragments.setdefault(len(key), {}).setdefault(key, term)
                count += 1
                continue
            words = tuple(_WORD.findall(norm))
            if words:
                self._phrases.setdefault(len(words), {}).setdefault(words, term)
                count += 1
        self.size = count

    def find(self, text: str) -> str | None:
        """The first listed term found in ``text`` (for logs; never shown to the member)."""
        norm = normalize(text)
        # Every fragment holds an unspaced-script character, so text without one cannot match.
        if self._fragments and _UNSPACED_CHAR.search(norm):
            squeezed = "".join(norm.split())
            for size, fragments in self._fragments.items():
                for i in range(len(squeezed) - size + 1):
                    found = fragments.get(squeezed[i : i + size])
                    if found is not None:
                        return found
        if self._phrases:
            words: list[str] = _WORD.findall(norm)
            for n, phrases in self._phrases.items():
                for i in range(len(words) - n + 1):
                    hit = phrases.get(tuple(words[i : i + n]))
                    if hit is not None:
                        return hit
        return None


class BannedWords:
    """The banned-word list from a file, re-read when the file changes."""

    def __init__(
        self,
        path: Path | None,
        *,
        check_interval_s: float = 2.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.check_interval_s = check_interval_s
        self._monotonic = monotonic
        self._matcher = WordMatcher(())
        self._signature: tuple[int, int] | None = None
        self._checked_at = float("-inf")
        self.loads = 0

    def load(self) -> None:
        """Read the list now; raises `ConfigError` if the file is missing or unreadable."""
        if self.path is None:
            return
        try:
            self._read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                [f"moderation.banned_words_file: cannot read {self.path}: {exc.__class__.__name__}"]
            ) from None

    def _read(self) -> None:
        assert self.path is not None
        stat = os.stat(self.path)
        content = self.path.read_text(encoding="utf-8")
        self._matcher = WordMatcher(parse_word_list(content))
        self._signature = (stat.st_mtime_ns, stat.st_size)
        self._checked_at = self._monotonic()
        self.loads += 1
        log.info("moderation.words_loaded", terms=self._matcher.size)

    def refresh(self) -> None:
        """Re-read the file if it changed (stat at most every ``check_interval_s``)."""
        if self.path is None:
            return
        now = self._monotonic()
        if now - self._checked_at < self.check_interval_s:
            return
        self._checked_at = now
        try:
            stat = os.stat(self.path)
            if (stat.st_mtime_ns, stat.st_size) != self._signature:
                self._read()
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("moderation.words_reload_failed", error=exc.__class__.__name__)

    @property
    def size(self) -> int:
        """How many terms are in force."""
        return self._matcher.size

    def find(self, *texts: str) -> str | None:
        """The first banned term in any of ``texts``, or None."""
        self.refresh()
        for text in texts:
            if (hit := self._matcher.find(text)) is not None:
                return hit
        return None


class StrikeKind(StrEnum):
    """Why a strike was counted."""

    REFUSED = "refused"  # our word list refused the prompt
    BANNED_RESULT = "banned_result"  # Midjourney answered "Banned prompt detected"


@dataclass(frozen=True, slots=True)
class Block:
    """A block just imposed."""

    until: datetime
    level: int
    duration: timedelta


def block_duration(level: int, steps_h: tuple[float, ...]) -> timedelta:
    """How long the ``level``-th block lasts (the last step repeats)."""
    step = steps_h[min(max(level, 1), len(steps_h)) - 1]
    return timedelta(hours=step)


def next_block(record: UserRecord, now: datetime, settings: ModerationSettings) -> Block:
    """The block a member earns now, one step above their last unless it is long past."""
    level = record.block_level
    if record.blocked_until is None or now - record.blocked_until > timedelta(
        hours=settings.block_reset_h
    ):
        level = 0
    level += 1
    duration = block_duration(level, settings.block_steps_h)
    return Block(until=now + duration, level=level, duration=duration)


class Moderation:
    """Word checks, strike counting and blocks for one process."""

    def __init__(
        self,
        settings: ModerationSettings,
        store: Store,
        *,
        clock: Clock,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.words = BannedWords(
            settings.banned_words_file,
            check_interval_s=settings.reload_check_s,
            monotonic=monotonic,
        )
        self._strikes: dict[tuple[int, StrikeKind], deque[datetime]] = {}

    def load(self) -> None:
        """Read the word list (raises `ConfigError` when it cannot)."""
        self.words.load()

    async def blocked_until(self, user_id: int) -> datetime | None:
        """When the member's block or ban ends, if one is in force."""
        record = await self.store.get_user(user_id)
        now = self.clock()
        ends = [t for t in (record.blocked_until, record.banned_until) if t is not None and t > now]
        return max(ends) if ends else None

    async def strike(self, user_id: int, kind: StrikeKind) -> Block | None:
        """Count a strike; returns the block it triggers, if any."""
        now = self.clock()
        window = timedelta(seconds=self.settings.strike_window_s)
        key = (user_id, kind)
        times = self._strikes.setdefault(key, deque())
        times.append(now)
        while times and now - times[0] > window:
            times.popleft()
        limit = (
            self.settings.refusals_to_block
            if kind is StrikeKind.REFUSED
            else self.settings.banned_results_to_block
        )
        self._prune(now - window)
        if len(times) < limit:
            return None
        for k in StrikeKind:
            self._strikes.pop((user_id, k), None)
        record = await self.store.get_user(user_id)
        block = next_block(record, now, self.settings)
        await self.store.put_user(
            replace(record, blocked_until=block.until, block_level=block.level)
        )
        log.warning(
            "moderation.user_blocked",
            user_id=user_id,
            level=block.level,
            hours=block.duration.total_seconds() / 3600,
            reason=kind.value,
        )
        return block

    def _prune(self, cutoff: datetime) -> None:
        # Keep memory bounded by active offenders: drop windows that have run out.
        if len(self._strikes) < 1024:
            return
        for key in [k for k, times in self._strikes.items() if not times or times[-1] < cutoff]:
            del self._strikes[key]
