"""Delivery: coalescing, per-message spacing, global budget, finals first, token fallback.

The `Sender` seam is recorded here; the discord.py sender is exercised end to
end against the Discord sandbox in tests/e2e.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gouache.bot.delivery import Delivery, Edit, Refused, TokenExpired
from gouache.events import EventBus
from gouache.jobs import Job, JobEvent, JobEventKind, JobState
from gouache.storage.images import ImageStore
from gouache.storage.sqlite import SQLiteStore
from gouache_sandbox.instant import tiny_png

from ..conftest import ManualClock

SPACING = 0.25  # per-message spacing: a binary fraction, so sums of it compare exactly


@dataclass
class Recorder:
    """The `Sender` seam: every edit, stamped with the manual clock's time."""

    clock: ManualClock
    edits: list[tuple[str, JobState, bool, float, int]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    expire_webhook: bool = False
    reply_missing: int = 0  # "@original" answers 404 this many more times (no reply yet)
    refuse: set[bool] = field(default_factory=set)  # routes (via_webhook) answering 403
    told: list[tuple[str, str, bool]] = field(default_factory=list)
    dm_open: bool = True
    fail_next: int = 0  # Discord answers this many more edits with an error
    calls: int = 0  # edits tried, refused and failed ones included
    posts: list[str] = field(default_factory=list)  # new channel messages, by job id

    async def edit(self, edit: Edit) -> int | None:
        self.calls += 1
        self.changed.set()  # refused calls count as activity too
        if self.fail_next > 0:
            self.fail_next -= 1
            raise RuntimeError("503 Service Unavailable")
        if edit.via_webhook and self.expire_webhook:
            raise TokenExpired("401: Invalid Webhook Token")
        if edit.via_webhook in self.refuse and edit.files:
            raise Refused(("Attach Files",), "webhook" if edit.via_webhook else "channel")
        if edit.via_webhook and edit.job.message_id is None and self.reply_missing > 0:
            self.reply_missing -= 1
            raise TokenExpired("404: Unknown Message")
        self.edits.append(
            (
                edit.job.id,
                edit.job.state,
                edit.via_webhook,
                self.clock.monotonic(),
                len(edit.files),
            )
        )
        if not edit.via_webhook and edit.job.message_id is None:
            self.posts.append(edit.job.id)
            return 7000 + len(self.posts)  # a new message in the channel
        return None

    async def direct(self, edit: Edit, note: str) -> bool:
        self.told.append((edit.job.id, f"DM: {note} files={len(edit.files)}", False))
        return self.dm_open

    async def tell(self, job: Job, text: str, *, via_webhook: bool) -> bool:
        self.told.append((job.id, text, via_webhook))
        self.changed.set()
        return True

    def of(self, job_id: str) -> list[tuple[str, JobState, bool, float, int]]:
        return [e for e in self.edits if e[0] == job_id]

    async def wait_for(self, pred: Callable[[], object], timeout: float = 5) -> None:
        async with asyncio.timeout(timeout):
            while not pred():
                self.changed.clear()
                await self.changed.wait()


@dataclass
class Rig:
    """Delivery on a manual clock: no edit waits on real time, so no edit depends on speed.

    Edits due now go out at once; an edit held back by the per-message spacing
    or the edit budget goes out only after the test advances ``clock``.
    """

    store: SQLiteStore
    bus: EventBus
    rec: Recorder
    delivery: Delivery
    clock: ManualClock


@pytest.fixture
async def rig(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Rig]:
    store = SQLiteStore(tmp_path / "g.db", clock=clock)
    await store.start()
    bus = EventBus()
    rec = Recorder(clock)
    delivery = Delivery(
        store,
        ImageStore(tmp_path / "img"),
        bus,
        rec,
        per_message_s=SPACING,
        edits_per_s=200,
        clock=clock.monotonic,
        now=clock,
    )
    await delivery.start()
    yield Rig(store, bus, rec, delivery, clock)
    await delivery.aclose()
    await store.aclose()


async def new_job(rig: Rig, **kw: object) -> Job:
    fields: dict[str, object] = {
        "channel_id": 5,
        "message_id": 6,
        "interaction_token": "tok",
        "interaction_at": rig.clock(),
        **kw,
    }
    job = Job(user_id=1, prompt="p", **fields)  # type: ignore[arg-type]
    return (await rig.store.enqueue(job, daily_limit=1000)).job


async def settle(rig: Rig, until: Callable[[], object]) -> None:
    """Move the clock on, a spacing at a time, until ``until()`` holds (edits held back
    by the spacing go out one spacing later)."""
    for _ in range(40):
        rig.clock.advance(SPACING)
        with contextlib.suppress(TimeoutError):
            await rig.rec.wait_for(until, timeout=0.5)
            return
    raise AssertionError("the edits never went out")


async def restarted(rig: Rig, tmp_path: Path, job_id: str) -> tuple[Delivery, Recorder]:
    """The process that ran the jobs is gone: a new one's delivery starts, hears no event,
    and is stopped once it has edited ``job_id``'s message (its edits are in the recorder)."""
    await rig.delivery.aclose()
    rig.clock.advance(20)
    rec = Recorder(rig.clock)
    later = Delivery(
        rig.store,
        ImageStore(tmp_path / "img"),
        EventBus(),
        rec,
        per_message_s=SPACING,
        edits_per_s=200,
        clock=rig.clock.monotonic,
        now=rig.clock,
    )
    await later.start()
    try:
        await rec.wait_for(lambda: any(e[0] == job_id for e in rec.edits))
    finally:
        await later.aclose()
    return later, rec


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
    await rig.rec.wait_for(lambda: rig.rec.of(job.id))  # the first edit goes out at once
    for pct in range(1, 60):
        await rig.store.update(job.id, progress=pct)
        rig.bus.publish(
            JobEvent(
                job.id, JobEventKind.PROGRESS, JobState.RUNNING, progress=pct, preview=tiny_png(pct)
            )
        )
    await run_to(rig, job, JobState.GENERATED, JobState.STORING, JobState.SUCCEEDED)
    # The clock has not moved, so however long those 64 events took to store and
    # publish, none of them may edit the message before the spacing has passed.
    assert len(rig.rec.of(job.id)) == 1
    rig.clock.advance(SPACING)
    await rig.rec.wait_for(lambda: any(e[1] is JobState.SUCCEEDED for e in rig.rec.of(job.id)))
    assert await rig.delivery.flush(5)
    first, last = rig.rec.of(job.id)  # 64 events, two edits
    assert last[3] - first[3] == SPACING
    assert last[1] is JobState.SUCCEEDED and last[4] == 1  # the image is attached


async def test_final_results_jump_the_line(rig: Rig) -> None:
    rig.delivery.budget.rate = 20
    rig.delivery.budget.burst = 1
    jobs = [await new_job(rig) for _ in range(15)]
    finisher = jobs[-1]
    await rig.store.pop(15, owner="w")
    for j in jobs:
        rig.bus.publish(JobEvent(j.id, JobEventKind.STATE, JobState.SUBMITTED))
    # One edit spends the budget's only token; the other senders take an edit in hand
    # each and wait for the clock to refill it, however long the store takes here.
    await rig.rec.wait_for(lambda: rig.rec.edits)
    await run_to(rig, finisher, JobState.GENERATED, JobState.STORING, JobState.SUCCEEDED)

    def final_sent() -> bool:
        return any(e[1] is JobState.SUCCEEDED for e in rig.rec.of(finisher.id))

    while not final_sent():
        sent = len(rig.rec.edits)
        rig.clock.advance(1)  # a bucket of one holds one token, however long we wait
        await rig.rec.wait_for(lambda sent=sent: len(rig.rec.edits) > sent)
    at = next(i for i, e in enumerate(rig.rec.edits) if e[0] == finisher.id)
    assert rig.rec.edits[at][1] is JobState.SUCCEEDED  # its queued-state edit was folded in
    # Only the first edit and those already in the senders' hands (one each) went
    # before it; nine others still wait.
    assert at <= 1 + rig.delivery.senders
    assert len(rig.rec.edits) == at + 1


async def test_expired_token_switches_to_the_channel_endpoint(rig: Rig) -> None:
    job = await new_job(rig)
    rig.clock.advance(16 * 60)
    await run_to(rig, job, JobState.SUBMITTED)
    await rig.rec.wait_for(lambda: rig.rec.edits)
    assert rig.rec.edits[-1][2] is False
    # a token Discord refuses early also falls back
    rig.rec.expire_webhook = True
    job2 = await new_job(rig)  # answered just now: its token is fresh
    await run_to(rig, job2, JobState.SUBMITTED)
    await rig.rec.wait_for(lambda: rig.rec.of(job2.id))
    assert [e[2] for e in rig.rec.of(job2.id)] == [False]


async def test_queued_positions_refresh_when_queue_moves(rig: Rig) -> None:
    rig.delivery.position_refresh_s = 0.1
    first = await new_job(rig)
    waiting = await new_job(rig)
    rig.delivery.track(waiting.id)
    await run_to(rig, first, JobState.SUBMITTED)
    await rig.rec.wait_for(lambda: rig.rec.of(waiting.id))
    assert [e[1] for e in rig.rec.of(waiting.id)] == [JobState.QUEUED]


async def test_a_job_tracked_after_it_started_gets_progress_edits_at_the_running_pace(
    rig: Rig,
) -> None:
    job = await new_job(rig)
    await run_to(rig, job, JobState.SUBMITTED, JobState.RUNNING)
    await rig.rec.wait_for(lambda: rig.rec.of(job.id))
    rig.clock.advance(SPACING)  # the RUNNING edit, if the first one went out before it
    await rig.rec.wait_for(lambda: any(e[1] is JobState.RUNNING for e in rig.rec.of(job.id)))
    rig.delivery.track(job.id)  # the bot's answer landed after the job had left the queue
    for pct in (10, 40, 70):
        before = len(rig.rec.of(job.id))
        await rig.store.update(job.id, progress=pct)
        rig.bus.publish(JobEvent(job.id, JobEventKind.PROGRESS, JobState.RUNNING, progress=pct))
        # One message spacing later, not the 10 s refresh of a queued job's position.
        rig.clock.advance(SPACING)
        await rig.rec.wait_for(lambda before=before: len(rig.rec.of(job.id)) > before)


async def test_a_reply_not_posted_yet_is_waited_for_not_replaced_by_a_new_message(rig: Rig) -> None:
    """Another shard answers the interaction while this process already runs the job."""
    rig.rec.reply_missing = 2
    job = await new_job(rig, message_id=None)
    await run_to(rig, job, JobState.SUBMITTED)
    for missing in (1, 0):  # each 404 is tried again one spacing later
        await rig.rec.wait_for(lambda missing=missing: rig.rec.reply_missing == missing)
        assert not rig.rec.of(job.id)
        rig.clock.advance(SPACING)
    await rig.rec.wait_for(lambda: rig.rec.of(job.id))
    (first,) = rig.rec.of(job.id)
    assert first[2] is True  # still through the interaction's webhook, not a new channel message
    assert rig.rec.reply_missing == 0


async def test_a_reply_that_never_came_withdraws_a_running_job_once_discord_window_closed(
    rig: Rig,
) -> None:
    """The answering process died before its callback: Discord told the member "This
    interaction failed", so no "@original" will ever exist. Past the answer window the
    job is withdrawn and refunded instead of waiting for the token's 15 minutes."""
    cancelled: list[str] = []

    async def cancel(job_id: str, *, reason: str) -> Job:
        job = await rig.store.cancel(job_id, reason=reason)
        cancelled.append(job_id)  # once the store has cancelled and refunded it
        rig.rec.changed.set()
        return job

    rig.delivery.cancel = cancel
    rig.rec.reply_missing = 10_000
    job = await new_job(rig, message_id=None)
    await run_to(rig, job, JobState.SUBMITTED, JobState.RUNNING)
    await settle(rig, lambda: rig.rec.calls >= 3)  # 404s before the deadline: tried again
    assert cancelled == []
    rig.clock.advance(16)  # past Discord's answer window
    await settle(rig, lambda: cancelled)
    current = await rig.store.get(job.id)
    assert current is not None
    assert current.state is JobState.CANCELED
    assert current.meta.get("unanswered") is True and current.interaction_token is None
    assert (await rig.store.quota(1, daily_limit=1000)).used == 0  # refunded
    assert rig.rec.of(job.id) == []  # nothing shown: the member was told it failed


async def test_a_finished_job_whose_reply_never_came_is_posted_in_the_channel(
    rig: Rig,
) -> None:
    rig.rec.reply_missing = 10_000
    job = await new_job(rig, message_id=None)
    await run_to(rig, job, JobState.SUBMITTED, JobState.RUNNING, JobState.GENERATED)
    await run_to(rig, job, JobState.STORING, JobState.SUCCEEDED)
    rig.clock.advance(16)  # past Discord's answer window
    await settle(rig, lambda: rig.rec.of(job.id))
    (posted,) = rig.rec.of(job.id)
    assert posted[1] is JobState.SUCCEEDED and posted[2] is False  # a channel message
    current = await rig.store.get(job.id)
    assert current is not None and current.state is JobState.SUCCEEDED
    assert (await rig.store.quota(1, daily_limit=1000)).used == 1  # paid for and delivered


async def test_a_posted_message_whose_record_failed_is_edited_next_not_posted_again(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The post went out but the store was away when its id was to be written: the
    retry edits that message (a second post would show the image twice)."""
    update = rig.store.update
    failed: list[str] = []

    async def flaky_update(job_id: str, **changes: object) -> Job:
        if "message_id" in changes and not failed:
            failed.append(job_id)
            raise ConnectionError("store away")
        return await update(job_id, **changes)  # type: ignore[arg-type]

    monkeypatch.setattr(rig.store, "update", flaky_update)
    job = await new_job(rig, message_id=None, interaction_token=None, interaction_at=None)
    await run_to(rig, job, JobState.SUBMITTED, JobState.RUNNING, JobState.GENERATED)
    await run_to(rig, job, JobState.STORING, JobState.SUCCEEDED)
    await settle(rig, lambda: len(rig.rec.of(job.id)) >= 2)
    assert failed == [job.id] and rig.rec.posts == [job.id]
    stored = await update(job.id)
    assert stored.message_id == 7001 and stored.meta.get("shown") == "succeeded"


async def test_a_refused_route_is_replaced_by_the_other(rig: Rig) -> None:
    rig.rec.refuse = {True}  # the webhook may not upload (@everyone lost Attach Files)
    job = await new_job(rig)
    await run_to(rig, job, JobState.SUBMITTED, JobState.RUNNING, JobState.GENERATED)
    await run_to(rig, job, JobState.STORING, JobState.SUCCEEDED)
    rig.clock.advance(SPACING)  # the final edit is due
    await rig.rec.wait_for(lambda: any(e[1] is JobState.SUCCEEDED for e in rig.rec.edits))
    final = [e for e in rig.rec.edits if e[1] is JobState.SUCCEEDED]
    assert final[-1][2] is False and final[-1][4] == 1  # through the channel, image attached
    assert rig.delivery.refusals >= 1 and rig.rec.told == []


async def test_no_route_left_cancels_a_running_job_and_tells_a_finished_ones_member(
    rig: Rig,
) -> None:
    cancelled: list[tuple[str, str]] = []

    async def cancel(job_id: str, *, reason: str) -> Job:
        job = await rig.store.cancel(job_id, reason=reason)
        cancelled.append((job_id, reason))  # once the store has cancelled and refunded it
        rig.rec.changed.set()
        return job

    rig.delivery.cancel = cancel
    rig.rec.refuse = {True, False}
    running = await new_job(rig)
    await run_to(rig, running, JobState.SUBMITTED, JobState.RUNNING)
    rig.bus.publish(
        JobEvent(running.id, JobEventKind.PROGRESS, JobState.RUNNING, preview=tiny_png(3))
    )
    rig.clock.advance(SPACING)  # the preview's edit is due
    await rig.rec.wait_for(lambda: cancelled)
    assert cancelled[0][0] == running.id and "Attach Files" in cancelled[0][1]
    assert (await rig.store.quota(1, daily_limit=1000)).used == 0  # refunded
    # A job that finished before anyone noticed: its member is told, once.
    done = await new_job(rig)
    await rig.store.pop(1, owner="w")
    await run_to(rig, done, JobState.RUNNING, JobState.GENERATED, JobState.STORING)
    await run_to(rig, done, JobState.SUCCEEDED)
    rig.clock.advance(SPACING)  # its final edit is due
    await rig.rec.wait_for(lambda: len([t for t in rig.rec.told if t[0] == done.id]) == 2)
    rig.delivery.mark(done.id, final=True, soon=True)  # refused again: told only once
    rig.clock.advance(SPACING)
    assert await rig.delivery.flush(5)
    told = [t for t in rig.rec.told if t[0] == done.id]
    assert len(told) == 2 and told[0][1].startswith("DM: ") and "files=1" in told[0][1]
    assert "direct message" in told[1][1] and told[1][2] is True


async def test_a_retried_job_starts_without_the_previous_attempts_preview(rig: Rig) -> None:
    job = await new_job(rig)
    await run_to(rig, job, JobState.SUBMITTED, JobState.RUNNING)
    await settle(rig, lambda: any(e[1] is JobState.RUNNING for e in rig.rec.of(job.id)))
    await rig.store.update(job.id, progress=60)
    rig.bus.publish(
        JobEvent(job.id, JobEventKind.PROGRESS, JobState.RUNNING, progress=60, preview=tiny_png(3))
    )
    await settle(rig, lambda: any(e[4] == 1 for e in rig.rec.of(job.id)))  # the preview shows
    # The worker died: the job goes back to the queue and a second attempt starts.
    await rig.store.transition(job.id, JobState.QUEUED, owner="w", progress=0)
    rig.bus.publish(JobEvent(job.id, JobEventKind.STATE, JobState.QUEUED))
    before = len(rig.rec.edits)
    await run_to(rig, job, JobState.SUBMITTED, JobState.RUNNING)
    await rig.store.update(job.id, progress=5)
    rig.bus.publish(JobEvent(job.id, JobEventKind.PROGRESS, JobState.RUNNING, progress=5))
    await settle(
        rig,
        lambda: any(e[0] == job.id and e[1] is JobState.RUNNING for e in rig.rec.edits[before:]),
    )
    retried = [e for e in rig.rec.edits[before:] if e[0] == job.id]
    assert retried and all(e[4] == 0 for e in retried), retried


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
    later, rec = await restarted(rig, tmp_path, done.id)
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

    def landed() -> bool:
        return any(e[0] == job.id and e[1] is JobState.SUCCEEDED for e in rig.rec.edits)

    for _ in range(4):  # each failure is tried again after a longer wait on the clock
        calls = rig.rec.calls
        rig.clock.advance(60)
        await rig.rec.wait_for(lambda calls=calls: rig.rec.calls > calls)
        if landed():
            break
    assert landed()
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
    later, rec = await restarted(rig, tmp_path, job.id)
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
    slow = Slow(rig.clock)
    front = Delivery(
        rig.store,
        rig.delivery.images,
        rig.bus,
        slow,
        per_message_s=0.0,  # the order of the edits is the point here, not their spacing
        edits_per_s=200,
        clock=rig.clock.monotonic,
        now=rig.clock,
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
