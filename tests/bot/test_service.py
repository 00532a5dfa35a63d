"""Request rules: parameters, tiers, quotas, follow-ups, cancel permissions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gouache.bot.service import NotYourJob, RequestContext, Requests, Tier
from gouache.errors import (
    InvalidParameter,
    JobNotFound,
    QueueLimitExceeded,
    QuotaExceeded,
    UserBlocked,
    WorkerUnavailable,
)
from gouache.jobs import Action, JobState
from gouache.queue.quota import QuotaPolicy
from gouache.storage.base import UserRecord
from gouache.storage.sqlite import SQLiteStore

from ..conftest import ManualClock

VIP_ROLE = 555


@pytest.fixture
async def requests(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Requests]:
    async with SQLiteStore(tmp_path / "g.db", clock=clock) as store:
        yield Requests(
            store=store,
            policy=QuotaPolicy("UTC", default_limit=3),
            clock=clock,
            tiers=[
                Tier("default"),
                Tier("vip", weight=3, daily_limit=10, role_ids=frozenset({VIP_ROLE})),
            ],
            max_queued=5,
            backends=lambda: {"midjourney", "comfyui"},
        )


def ctx(user: int = 1, roles: frozenset[int] = frozenset(), owner: bool = False) -> RequestContext:
    return RequestContext(
        user_id=user, role_ids=roles, guild_id=9, channel_id=10, locale="zh-CN", is_owner=owner
    )


async def test_imagine_merges_options_into_params(requests: Requests) -> None:
    r = await requests.imagine(
        ctx(), "a fox --chaos 10", aspect="16:9", negative="text, logo", seed=42
    )
    assert r.job.prompt == "a fox"
    assert r.job.params.aspect == (16, 9)
    assert r.job.params.no == ("text", "logo")
    assert r.job.params.seed == 42 and r.job.params.chaos == 10
    assert r.job.locale == "zh-CN" and r.job.channel_id == 10
    assert r.position == 0 and r.quota.remaining == 2


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"aspect": "2:1", "prompt": "x --ar 1:1"}, "given twice"),
        ({"aspect": "nope"}, "must look like"),
        ({"seed": 1, "prompt": "x --seed 3"}, "given twice"),
        ({"backend": "dalle"}, "Unknown backend"),
    ],
)
async def test_bad_options_are_refused_and_nothing_is_queued(
    requests: Requests, kw: dict[str, object], msg: str
) -> None:
    prompt = str(kw.pop("prompt", "a fox"))
    with pytest.raises(InvalidParameter, match=msg):
        await requests.imagine(ctx(), prompt, **kw)  # type: ignore[arg-type]
    assert await requests.store.depth() == 0
    assert (await requests.quota(ctx())).used == 0


async def test_tier_from_roles_sets_weight_and_limit(requests: Requests) -> None:
    vip = ctx(2, frozenset({VIP_ROLE, 1}))
    r = await requests.imagine(vip, "castle")
    assert r.job.tier == "vip" and r.job.weight == 3
    assert r.quota.limit == 10
    await requests.store.put_user(UserRecord(user_id=3, tier="vip", daily_limit=1))
    r3 = await requests.imagine(ctx(3), "castle")
    assert r3.job.tier == "vip" and r3.quota.limit == 1


async def test_daily_limit_and_queue_cap(requests: Requests) -> None:
    for _ in range(3):
        await requests.imagine(ctx(), "x")
    with pytest.raises(QuotaExceeded):
        await requests.imagine(ctx(), "x")
    vip = ctx(2, frozenset({VIP_ROLE}))
    for _ in range(5):
        await requests.imagine(vip, "x")
    with pytest.raises(QueueLimitExceeded):
        await requests.imagine(vip, "x")


async def test_banned_user_is_refused(requests: Requests, clock: ManualClock) -> None:
    await requests.store.put_user(
        UserRecord(user_id=4, banned_until=datetime(2026, 6, 2, tzinfo=UTC))
    )
    with pytest.raises(UserBlocked):
        await requests.imagine(ctx(4), "x")
    clock.now = datetime(2026, 6, 3, tzinfo=UTC)
    await requests.imagine(ctx(4), "x")


async def test_follow_up_references_parent_worker_and_costs_the_clicker(requests: Requests) -> None:
    parent = (await requests.imagine(ctx(1), "a fox --ar 3:2")).job
    await requests.store.pop(1, owner="w")
    for state in (JobState.RUNNING, JobState.GENERATED, JobState.STORING):
        await requests.store.transition(
            parent.id, state, owner="w", worker="mj-1", meta={"hash": "abc", "message_id": 77}
        )
    with pytest.raises(InvalidParameter, match="not finished"):
        await requests.follow_up(ctx(2), parent.id, Action.UPSCALE, 2)
    await requests.store.transition(parent.id, JobState.SUCCEEDED, owner="w")
    r = await requests.follow_up(ctx(2), parent.id, Action.UPSCALE, 2)
    assert r.job.parent_id == parent.id and r.job.index == 2 and r.job.user_id == 2
    assert r.job.meta["parent"]["worker"] == "mj-1" and r.job.meta["parent"]["hash"] == "abc"
    assert r.job.params.aspect == (3, 2)
    assert (await requests.quota(ctx(2))).used == 1
    with pytest.raises(InvalidParameter, match="1–4"):
        await requests.follow_up(ctx(2), parent.id, Action.VARIATION, None)
    with pytest.raises(JobNotFound):
        await requests.follow_up(ctx(2), "0" * 32, Action.REROLL, None)


async def test_cancel_own_jobs_only_unless_owner(requests: Requests) -> None:
    job = (await requests.imagine(ctx(1), "x")).job
    with pytest.raises(NotYourJob):
        await requests.cancel(ctx(2), job.id)
    done = await requests.cancel(ctx(2, owner=True), job.id)
    assert done.state is JobState.CANCELED
    assert (await requests.quota(ctx(1))).used == 0
    again = await requests.cancel(ctx(1), job.id)
    assert again.state is JobState.CANCELED
    with pytest.raises(JobNotFound):
        await requests.cancel(ctx(1), "f" * 32)


async def test_pending_and_history(requests: Requests) -> None:
    a = (await requests.imagine(ctx(1), "a")).job
    b = (await requests.imagine(ctx(1), "b")).job
    pending = await requests.pending(ctx(1))
    assert [(j.id, p) for j, p in pending] == [(b.id, 1), (a.id, 0)]
    assert (await requests.latest_cancellable(ctx(1))).id == b.id  # type: ignore[union-attr]
    assert await requests.history(ctx(1)) == []


async def test_a_follow_up_for_a_worker_no_process_runs_is_refused_before_its_quota(
    requests: Requests,
) -> None:
    """With many processes a follow-up can only run where its parent's account runs."""
    parent = (await requests.imagine(ctx(1), "a fox")).job
    await requests.store.pop(1, owner="w")
    for state in (JobState.RUNNING, JobState.GENERATED, JobState.STORING, JobState.SUCCEEDED):
        await requests.store.transition(parent.id, state, owner="w", worker="mj-1")

    async def running(name: str) -> bool:  # as WorkerLeases.running_anywhere: a held lease
        return await requests.store.worker_owner(name) is not None

    requests.worker_running = running
    with pytest.raises(WorkerUnavailable, match="not running right now"):
        await requests.follow_up(ctx(2), parent.id, Action.UPSCALE, 1)
    assert (await requests.quota(ctx(2))).used == 0 and await requests.store.depth() == 0
    assert await requests.store.acquire_worker("mj-1", "process-b", 15)
    receipt = await requests.follow_up(ctx(2), parent.id, Action.UPSCALE, 1)
    assert receipt.job.pinned_worker == "mj-1" and (await requests.quota(ctx(2))).used == 1
