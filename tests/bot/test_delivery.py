"""Delivery: coalescing, per-message spacing, global budget, finals first, token fallback.

The `Sender` seam is recorded here; the discord.py sender is exercised end to
end against the Discord sandbox in tests/e2e.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from gouache.bot.delivery import Delivery, Edit, TokenExpired
from gouache.events import EventBus
from gouache.jobs import Job, JobEvent, JobEventKind, JobState, utcnow
from gouache.sandbox.instant import tiny_png
from gouache.storage.images import ImageStore
from gouache.storage.sqlite import SQLiteStore


@dataclass
class Recorder:
    edits: list[tuple[str, JobState, bool, float, int]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    expire_webhook: bool = False
    reply_missing: int = 0  # "@original" answers 404 this many more times (no reply yet)
    fail_next: int = 0  # Discord answers this many more edits with an error

    async def edit(self, edit: Edit) -> int | None:
        if self.fail_next > 0:
            self.fail_next -= 1
            raise RuntimeError("503 Service Unavailable")
        if edit.via_webhook and self.expire_webhook:
            raise TokenExpired("401: Invalid Webhook Token")
        if edit.via_webhook and edit.job.message_id is None and self.reply_missing > 0:
            self.reply_missing -= 1
            raise TokenExpired("404: Unknown Message")
        self.edits.append(
            (edit.job.id, edit.job.state, edit.via_webhook, time.monotonic(), len(edit.files))
        )
        self.changed.set()
        return None

    async def wait_for(self, pred: object, timeout: float = 5) -> None:
        async with asyncio.timeout(timeout):
            while not pred():  # type: ignore[operator]
                self.changed.clear()
                await self.changed.wait()


@dataclass
class Rig:
    store: SQLiteStore
    bus: EventBus
    rec: Recorder
    delivery: Delivery
    now: list[datetime]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    store = SQLiteStore(tmp_path / "g.db")
    await store.start()
    bus = EventBus()
    rec = Recorder()
    now = [utcnow()]
    delivery = Delivery(
        store,
        ImageStore(tmp_path / "img"),
        bus,
        rec,
        per_message_s=0.2,
        edits_per_s=200,
        now=lambda: now[0],
    )
    await delivery.start()
    yield Rig(store, bus, rec, delivery, now)
    await delivery.aclose()
    await store.aclose()


async def new_job(rig: Rig, **kw: object) -> Job:
    fields: dict[str, object] = {
        "channel_id": 5,
        "message_id": 6,
        "interaction_token": "tok",
        "interaction_at": rig.now[0],
        **kw,
    }
    job = Job(user_id=1, prompt="p", **fields)  # type: ignore[arg-type]
    return (await rig.store.enqueue(job, daily_limit=1000)).job


async def run_to(rig: Rig, job: Job, *states: JobState) -> None:
    for s in states:
        if s is JobState.SUBMITTED:
            await rig.store.pop(1, owner="w")
        else:
            await rig.store.transition(
                job.id,
                s,
                owner="w",
                **(
                    {"results": [await rig.delivery.images.put(tiny_png(1))]}
                    if s is JobState.SUCCEEDED
                    else {}
                ),
            )
        rig.bus.publish(JobEvent(job.id, JobEventKind.STATE, s))


async def test_progress_bursts_are_coalesced_and_spaced(rig: Rig) -> None:
    job = await new_job(rig)
    await run_to(rig, job, JobState.SUBMITTED, JobState.RUNNING)
    for pct in range(1, 60):
        await rig.store.update(job.id, progress=pct)
        rig.bus.publish(
            JobEvent(
                job.id, JobEventKind.PROGRESS, JobState.RUNNING, progress=pct, preview=tiny_png(pct)
            )
        )
    await run_to(rig, job, JobState.GENERATED, JobState.STORING, JobState.SUCCEEDED)
    await rig.rec.wait_for(lambda: any(e[1] is JobState.SUCCEEDED for e in rig.rec.edits))
    mine = [e for e in rig.rec.edits if e[0] == job.id]
    assert len(mine) <= 6  # 64 events, a handful of edits
    times = [e[3] for e in mine]
    assert all(b - a >= 0.18 for a, b in itertools.pairwise(times))
    assert mine[-1][1] is JobState.SUCCEEDED and mine[-1][4] == 1  # the image is attached


async def test_final_results_jump_the_line(rig: Rig) -> None:
    rig.delivery.budget.rate = 20
    rig.delivery.budget.burst = 1
    jobs = [await new_job(rig) for _ in range(15)]
    finisher = jobs[-1]
    await rig.store.pop(15, owner="w")
    for j in jobs:
        rig.bus.publish(JobEvent(j.id, JobEventKind.STATE, JobState.SUBMITTED))
    await run_to(rig, finisher, JobState.GENERATED, JobState.STORING, JobState.SUCCEEDED)
    await rig.rec.wait_for(lambda: any(e[1] is JobState.SUCCEEDED for e in rig.rec.edits))
    order = [e[0] for e in rig.rec.edits]
    assert order.index(finisher.id) < 8


async def test_expired_token_switches_to_the_channel_endpoint(rig: Rig) -> None:
    job = await new_job(rig)
    rig.now[0] += timedelta(minutes=16)
    await run_to(rig, job, JobState.SUBMITTED)
    await rig.rec.wait_for(lambda: rig.rec.edits)
    assert rig.rec.edits[-1][2] is False
    # a token Discord refuses early also falls back
    rig.now[0] -= timedelta(minutes=16)
    rig.rec.expire_webhook = True
    job2 = await new_job(rig)
    await run_to(rig, job2, JobState.SUBMITTED)
    await rig.rec.wait_for(lambda: any(e[0] == job2.id for e in rig.rec.edits))
    assert [e[2] for e in rig.rec.edits if e[0] == job2.id] == [False]


async def test_queued_positions_refresh_when_queue_moves(rig: Rig) -> None:
    rig.delivery.position_refresh_s = 0.1
    first = await new_job(rig)
    waiting = await new_job(rig)
    rig.delivery.track(waiting.id)
    await run_to(rig, first, JobState.SUBMITTED)
    await rig.rec.wait_for(lambda: any(e[0] == waiting.id for e in rig.rec.edits))
    assert any(e[0] == waiting.id and e[1] is JobState.QUEUED for e in rig.rec.edits)


async def test_a_job_tracked_after_it_started_gets_progress_edits_at_the_running_pace(
    rig: Rig,
) -> None:
    job = await new_job(rig)
    await run_to(rig, job, JobState.SUBMITTED, JobState.RUNNING)
    await rig.rec.wait_for(
        lambda: any(e[0] == job.id and e[1] is JobState.RUNNING for e in rig.rec.edits)
    )
    rig.delivery.track(job.id)  # the bot's answer landed after the job had left the queue
    for pct in (10, 40, 70):
        before = len([e for e in rig.rec.edits if e[0] == job.id])
        await rig.store.update(job.id, progress=pct)
        rig.bus.publish(JobEvent(job.id, JobEventKind.PROGRESS, JobState.RUNNING, progress=pct))
        # Within a couple of seconds, not the 10 s refresh of a queued job's position.
        await rig.rec.wait_for(
            lambda before=before: len([e for e in rig.rec.edits if e[0] == job.id]) > before,
            timeout=2,
        )


async def test_a_reply_not_posted_yet_is_waited_for_not_replaced_by_a_new_message(rig: Rig) -> None:
    """Another shard answers the interaction while this process already runs the job."""
    rig.rec.reply_missing = 2
    job = await new_job(rig, message_id=None)
    await run_to(rig, job, JobState.SUBMITTED)
    await rig.rec.wait_for(lambda: any(e[0] == job.id for e in rig.rec.edits), timeout=5)
    first = next(e for e in rig.rec.edits if e[0] == job.id)
    assert first[2] is True  # still through the interaction's webhook, not a new channel message
    assert rig.rec.reply_missing == 0


async def test_a_final_edit_the_last_process_never_made_is_made_after_a_restart(
    rig: Rig, tmp_path: Path
) -> None:
    """The process died between the store's last transition and the message edit."""
    done = await new_job(rig)
    shown = await new_job(rig)
    for job in (done, shown):
        await rig.store.pop(1, owner="w")
        for s in (JobState.GENERATED, JobState.STORING):
            await rig.store.transition(job.id, s, owner="w")
        await rig.store.transition(
            job.id,
            JobState.SUCCEEDED,
            owner="w",
            results=[await rig.delivery.images.put(tiny_png(1))],
        )
    # The other job's message was edited (and says so) before the crash.
    await rig.store.update(shown.id, meta={"shown": "succeeded"})
    # No event reaches the bus: the process that ran the jobs is gone. A new one starts.
    await rig.delivery.aclose()
    rig.now[0] = utcnow() + timedelta(seconds=20)
    rec = Recorder()
    later = Delivery(
        rig.store,
        ImageStore(tmp_path / "img"),
        EventBus(),
        rec,
        per_message_s=0.2,
        edits_per_s=200,
        now=lambda: rig.now[0],
    )
    await later.start()
    try:
        await rec.wait_for(lambda: any(e[0] == done.id for e in rec.edits))
    finally:
        await later.aclose()
    assert [(e[0], e[1], e[4]) for e in rec.edits] == [(done.id, JobState.SUCCEEDED, 1)]
    job = await rig.store.get(done.id)
    assert job is not None and job.meta["shown"] == "succeeded"
    # Once shown, the next round leaves it alone.
    assert await later.catch_up() == 0


async def test_a_failed_final_edit_is_tried_again_until_it_lands(rig: Rig) -> None:
    """Discord refused the edit (5xx, a run of 429s): the message must not stay on "running"."""
    job = await new_job(rig)
    await run_to(rig, job, JobState.SUBMITTED, JobState.RUNNING)
    await rig.rec.wait_for(lambda: any(e[0] == job.id for e in rig.rec.edits))
    rig.rec.fail_next = 3
    await run_to(rig, job, JobState.GENERATED, JobState.STORING, JobState.SUCCEEDED)
    await rig.rec.wait_for(
        lambda: any(e[0] == job.id and e[1] is JobState.SUCCEEDED for e in rig.rec.edits),
        timeout=10,
    )
    assert rig.rec.fail_next == 0 and rig.delivery.failures == 3


async def test_a_result_whose_reply_never_came_is_posted_after_a_restart(
    rig: Rig, tmp_path: Path
) -> None:
    """Discord refused the answer, the job had finished, the process died before posting it."""
    job = await new_job(rig, message_id=None)
    await rig.store.pop(1, owner="w")
    for s in (JobState.GENERATED, JobState.STORING):
        await rig.store.transition(job.id, s, owner="w")
    await rig.store.transition(
        job.id, JobState.SUCCEEDED, owner="w", results=[await rig.delivery.images.put(tiny_png(1))]
    )
    await rig.store.update(
        job.id, interaction_token=None, interaction_at=None, meta={"unanswered": True}
    )
    withdrawn = await new_job(rig, message_id=None)
    await rig.store.update(
        withdrawn.id, interaction_token=None, interaction_at=None, meta={"unanswered": True}
    )
    await rig.store.cancel(withdrawn.id)
    await rig.delivery.aclose()
    rig.now[0] = utcnow() + timedelta(seconds=20)
    rec = Recorder()
    later = Delivery(
        rig.store,
        ImageStore(tmp_path / "img"),
        EventBus(),
        rec,
        per_message_s=0.2,
        edits_per_s=200,
        now=lambda: rig.now[0],
    )
    await later.start()
    try:
        await rec.wait_for(lambda: any(e[0] == job.id for e in rec.edits))
    finally:
        await later.aclose()
    assert [(e[0], e[1], e[2]) for e in rec.edits] == [(job.id, JobState.SUCCEEDED, False)]
    assert await later.catch_up() == 0  # shown now; the withdrawn one is never shown


async def test_a_stale_edit_landing_after_the_end_is_followed_by_the_end_again(
    rig: Rig,
) -> None:
    """Two processes edit one message: the queued view must not be the last word."""
    job = await new_job(rig)
    gate, underway = asyncio.Event(), asyncio.Event()
    sent: list[JobState] = []

    class Slow(Recorder):
        async def edit(self, edit: Edit) -> int | None:
            if edit.job.state is JobState.QUEUED:
                underway.set()
                await gate.wait()  # on its way while the job finishes elsewhere
            sent.append(edit.job.state)
            return await super().edit(edit)

    await rig.delivery.aclose()
    slow = Slow()
    front = Delivery(
        rig.store, rig.delivery.images, rig.bus, slow, per_message_s=0.2, edits_per_s=200
    )
    await front.start()
    try:
        front.mark(job.id, soon=True)  # the answering process shows the queue position
        await asyncio.wait_for(underway.wait(), 5)
        # The job runs and ends in another process, which shows the result.
        await rig.store.pop(1, owner="w")
        for s in (JobState.GENERATED, JobState.STORING):
            await rig.store.transition(job.id, s, owner="w")
        await rig.store.transition(
            job.id, JobState.SUCCEEDED, owner="w", results=[await front.images.put(tiny_png(1))]
        )
        gate.set()
        await slow.wait_for(lambda: JobState.SUCCEEDED in sent)
    finally:
        await front.aclose()
    assert sent == [JobState.QUEUED, JobState.SUCCEEDED]
