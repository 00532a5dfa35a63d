"""`Intake` plugged into the request service: translation, refusals, blocks, limits, replies."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from gouache.bot.render import LiveInfo, job_embed
from gouache.bot.service import Requests
from gouache.errors import PromptRejected, QueueLimitExceeded, UserBlocked
from gouache.events import EventBus
from gouache.intake import Block, Intake, RateLimited, RateLimiter, format_duration
from gouache.jobs import ErrorCode, Job, JobState
from gouache.params import parse_prompt
from gouache.pool.pool import Pool
from gouache.queue.dispatcher import Dispatcher
from gouache.queue.quota import QuotaPolicy
from gouache.storage.base import UserRecord
from gouache.storage.images import ImageStore
from gouache.storage.sqlite import SQLiteStore
from gouache_sandbox.instant import InstantWorker
from gouache_sandbox.ollama import OllamaSandbox

from ..conftest import ManualClock
from .conftest import MakeIntake, ctx


@pytest.fixture
def banned_file(tmp_path: Path) -> Path:
    path = tmp_path / "banned.txt"
    path.write_text("# test list\ngore\nblood bath\n色情\n", encoding="utf-8")
    return path


def requests_with(store: SQLiteStore, clock: ManualClock, intake: Intake, **kw: object) -> Requests:
    return Requests(
        store=store,
        policy=QuotaPolicy("UTC", default_limit=100),
        clock=clock,
        intake=intake,
        **kw,  # type: ignore[arg-type]
    )


async def test_chinese_prompt_is_queued_in_english_with_its_parameters(
    make_intake: MakeIntake, store: SQLiteStore, clock: ManualClock
) -> None:
    intake = await make_intake()
    requests = requests_with(store, clock, intake)
    receipt = await requests.imagine(
        ctx(locale="zh-CN"), "一只可爱的猫在月球上 --ar 16:9 --chaos 20", negative="文字", seed=42
    )
    job = await store.get(receipt.job.id)
    assert job is not None
    assert job.prompt == "a cute cat on moon"
    assert job.params == parse_prompt("x --ar 16:9 --chaos 20 --seed 42 --no text").params
    assert (
        job.meta["original_prompt"]
        == "一只可爱的猫在月球上 --ar 16:9 --seed 42 --no 文字 --chaos 20"
    )
    assert (
        job.meta["translated_prompt"]
        == "a cute cat on moon --ar 16:9 --seed 42 --no text --chaos 20"
    )
    # the reply shows both
    embed = job_embed(job, LiveInfo(position=0, eta_s=30))
    fields = {f.name: f.value for f in embed.fields}
    assert fields["提示词"] == job.meta["original_prompt"]
    assert fields["英文提示词"] == job.meta["translated_prompt"]


async def test_translation_failure_sends_the_original_with_a_note(
    make_intake: MakeIntake, store: SQLiteStore, clock: ManualClock, ollama: OllamaSandbox
) -> None:
    intake = await make_intake(translate={"timeout_s": 0.2})
    ollama.settings.hang_next = 1
    requests = requests_with(store, clock, intake)
    receipt = await requests.imagine(ctx(), "一只猫 --ar 2:3")
    job = receipt.job
    assert job.prompt == "一只猫" and job.params.aspect == (2, 3)
    assert job.meta == {"translation": "unavailable"}
    embed = job_embed(job, LiveInfo(position=0))
    assert embed.description is not None and "sent as written" in embed.description
    assert [f.value for f in embed.fields if f.name == "Prompt"] == ["一只猫 --ar 2:3"]
    assert not any(f.name == "English prompt" for f in embed.fields)


@pytest.mark.parametrize(
    ("prompt", "negative"),
    [
        ("so much GORE", None),
        ("a blood-bath at dawn --ar 1:1", None),
        ("a quiet lake", "gore"),
        ("一张色情图片", None),
        ("一只猫 --no 色情", None),
    ],
)
async def test_banned_words_are_refused_without_naming_them(
    make_intake: MakeIntake,
    store: SQLiteStore,
    clock: ManualClock,
    banned_file: Path,
    prompt: str,
    negative: str | None,
) -> None:
    intake = await make_intake(moderation={"banned_words_file": banned_file})
    requests = requests_with(store, clock, intake)
    for locale, words in (("en-US", "refused"), ("zh-CN", "拒绝")):
        with pytest.raises(PromptRejected) as caught:
            await requests.imagine(ctx(locale=locale), prompt, negative=negative)
        message = str(caught.value)
        assert words in message and caught.value.code == "prompt_banned"
        assert not any(w in message.lower() for w in ("gore", "blood", "色情"))
    assert await store.depth() == 0
    assert (await requests.quota(ctx())).used == 0


async def test_words_the_translation_produces_are_refused_too(
    make_intake: MakeIntake, store: SQLiteStore, clock: ManualClock, tmp_path: Path
) -> None:
    path = tmp_path / "banned.txt"
    path.write_text("dragon\n", encoding="utf-8")
    intake = await make_intake(moderation={"banned_words_file": path})
    requests = requests_with(store, clock, intake)
    with pytest.raises(PromptRejected, match="refused"):
        await requests.imagine(ctx(), "一只龙")  # the toy model answers "a dragon"
    assert await store.depth() == 0


async def test_repeated_refusals_block_with_time_left(
    make_intake: MakeIntake, store: SQLiteStore, clock: ManualClock, banned_file: Path
) -> None:
    intake = await make_intake(moderation={"banned_words_file": banned_file})
    blocks: list[tuple[int, Block]] = []
    intake.on_block = lambda user, block: blocks.append((user, block))
    requests = requests_with(store, clock, intake)
    for _ in range(2):
        with pytest.raises(PromptRejected):
            await requests.imagine(ctx(user=3), "gore")
    with pytest.raises(UserBlocked, match="1 h") as third:
        await requests.imagine(ctx(user=3), "gore")
    assert "refused" in str(third.value)
    assert [(u, b.level) for u, b in blocks] == [(3, 1)]
    clock.advance(20 * 60)
    with pytest.raises(UserBlocked) as later:
        await requests.imagine(ctx(user=3, locale="zh-CN"), "a harmless cat")
    assert str(later.value) == "你在 40 分钟 内无法生成图片。"
    record = await store.get_user(3)
    assert record.block_level == 1 and record.blocked_until == clock() + timedelta(minutes=40)
    # others are not affected, and the block ends on time
    await requests.imagine(ctx(user=4), "a harmless cat")
    clock.advance(40 * 60 + 1)
    await requests.imagine(ctx(user=3), "a harmless cat")


async def test_owner_ban_is_reported_without_a_duration(
    make_intake: MakeIntake, store: SQLiteStore, clock: ManualClock
) -> None:
    await store.put_user(UserRecord(user_id=5, banned_until=clock() + timedelta(days=365)))
    intake = await make_intake()
    with pytest.raises(UserBlocked, match="cannot request images right now"):
        await requests_with(store, clock, intake).imagine(ctx(user=5), "a cat")


async def test_banned_results_from_the_worker_block_the_member(
    make_intake: MakeIntake, store: SQLiteStore, clock: ManualClock, tmp_path: Path
) -> None:
    intake = await make_intake(moderation={"banned_results_to_block": 2})
    blocked = asyncio.Event()
    intake.on_block = lambda user, block: blocked.set()
    worker = InstantWorker("mj", capacity=2)
    worker.behaviour.fail_next = 2
    worker.behaviour.fail_code = ErrorCode.BANNED_PROMPT
    pool = Pool([worker])
    bus = EventBus()
    dispatcher = Dispatcher(store, pool, ImageStore(tmp_path / "img"), bus)
    intake.follow(bus)
    requests = requests_with(store, clock, intake)
    await pool.start()
    await dispatcher.start()
    try:
        for _ in range(2):
            await requests.imagine(ctx(user=6), "a borderline prompt")
        await asyncio.wait_for(blocked.wait(), 10)
    finally:
        await dispatcher.aclose()
        await pool.aclose()
    failed = await store.list_jobs(user_id=6, states=[JobState.FAILED])
    assert len(failed) == 2 and all(j.error_code == "banned_prompt" for j in failed)
    record = await store.get_user(6)
    assert record.block_level == 1 and record.blocked_until == clock() + timedelta(hours=1)
    with pytest.raises(UserBlocked, match="1 h"):
        await requests.imagine(ctx(user=6), "a cat")


async def test_rate_limit_burst_then_sustained(
    make_intake: MakeIntake, store: SQLiteStore, clock: ManualClock
) -> None:
    intake = await make_intake(limits={"rate_burst": 3, "rate_per_minute": 6})
    requests = requests_with(store, clock, intake)
    for _ in range(3):
        await requests.imagine(ctx(user=1), "a cat")
    with pytest.raises(RateLimited, match="10 s") as caught:
        await requests.imagine(ctx(user=1), "a cat")
    assert caught.value.code == "rate_limited" and caught.value.retry_after_s == pytest.approx(10)
    await requests.imagine(ctx(user=2), "a cat")  # per member
    await requests.imagine(ctx(user=1, owner=True), "a cat")  # owners are not limited
    clock.advance(10)
    await requests.imagine(ctx(user=1), "a cat")  # one token back every 10 s
    with pytest.raises(RateLimited):
        await requests.imagine(ctx(user=1), "a cat")
    assert await store.depth(user_id=1) == 5


def test_token_bucket_arithmetic() -> None:
    limiter = RateLimiter(burst=2, per_minute=30)
    assert limiter.take(1, 0.0) == 0 and limiter.take(1, 0.0) == 0
    assert limiter.take(1, 0.0) == pytest.approx(2.0)
    assert limiter.take(1, 1.0) == pytest.approx(1.0)  # half a token back
    assert limiter.take(1, 2.0) == 0
    # a long pause refills only up to the burst
    assert [limiter.take(1, 1000.0) for _ in range(3)][2] > 0
    small = RateLimiter(burst=1, per_minute=60, max_tracked=2)
    for user in range(5):
        small.take(user, float(user * 10))
    assert len(small) <= 2  # members whose bucket is full again are forgotten


async def test_prompt_length_limit_counts_text_and_parameters(
    make_intake: MakeIntake, store: SQLiteStore, clock: ManualClock, ollama: OllamaSandbox
) -> None:
    intake = await make_intake(limits={"max_prompt_chars": 40})
    requests = requests_with(store, clock, intake, prompt_max_length=4000)
    await requests.imagine(ctx(), "x" * 30 + " --ar 1:1")  # 39 characters rendered
    with pytest.raises(PromptRejected) as caught:
        await requests.imagine(ctx(locale="zh-CN"), "猫" * 31 + " --ar 16:9")
    assert caught.value.code == "prompt_too_long"
    assert str(caught.value) == "提示词过长（41 个字符，最多 40 个）。"
    assert ollama.requests == []  # refused before any translation
    assert await store.depth() == 1


async def test_queued_jobs_cap_is_enforced_by_the_store(
    make_intake: MakeIntake, store: SQLiteStore, clock: ManualClock
) -> None:
    intake = await make_intake(limits={"rate_burst": 100})
    requests = requests_with(store, clock, intake, max_queued=2)
    for _ in range(2):
        await requests.imagine(ctx(), "a cat")
    with pytest.raises(QueueLimitExceeded):
        await requests.imagine(ctx(), "一只猫")
    assert await store.depth(user_id=1) == 2


def test_durations_in_both_languages() -> None:
    assert format_duration("en-US", timedelta(seconds=0.2)) == "1 s"
    assert format_duration("en-US", timedelta(seconds=61)) == "2 min"
    assert format_duration("en-US", timedelta(hours=10)) == "10 h"
    assert format_duration("zh-CN", timedelta(hours=1, minutes=20)) == "1 小时 20 分钟"


def test_echo_respects_discord_limits() -> None:
    long = "字" * 5000
    job = Job(
        user_id=1,
        prompt="w " * 3000,
        params=parse_prompt("x --ar 16:9 --no " + "a, " * 500 + "b").params,
        meta={
            "original_prompt": long,
            "translated_prompt": "ignored",
            "translation": "unavailable",
        },
        error_message="e" * 5000,
    )
    for state in JobState:
        embed = job_embed(job.model_copy(update={"state": state}), LiveInfo(position=1, eta_s=5))
        assert len(embed) <= 6000
        assert embed.title is not None and len(embed.title) <= 256
        assert embed.description is None or len(embed.description) <= 4096
        assert all(len(f.value or "") <= 1024 and len(f.name or "") <= 256 for f in embed.fields)
