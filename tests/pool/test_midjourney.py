"""A Midjourney account worker against the Discord sandbox and its Midjourney stand-in."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gouache.errors import GouacheError, WorkerUnavailable
from gouache.events import EventBus
from gouache.jobs import Action, ErrorCode, Job, JobEventKind, JobState
from gouache.params import Params
from gouache.pool.base import (
    Accepted,
    Failed,
    Generated,
    Progress,
    Signal,
    Waiting,
    WorkerAlert,
    WorkerState,
)
from gouache.pool.gateway import Backoff, IdentifyPacer
from gouache.pool.midjourney import MidjourneyTimeouts, MidjourneyWorker
from gouache.pool.pool import Pool
from gouache.queue.dispatcher import AdaptiveLimit, Dispatcher, StageTimeouts
from gouache.storage.images import ImageStore
from gouache.storage.sqlite import SQLiteStore
from gouache_sandbox.discord import DiscordSandbox
from gouache_sandbox.discord.midjourney import APPLICATION_ID, ERRORS
from gouache_sandbox.discord.state import Channel, Guild, Message, User

PNG = b"\x89PNG\r\n\x1a\n"
FAST = MidjourneyTimeouts(request=5, first_message=3, start=5, progress=5, download=5)


class Clock:
    """A wall clock that only moves when told."""

    def __init__(self) -> None:
        self.now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Recorder:
    """A `JobSink` that keeps every signal and wakes waiters."""

    signals: dict[str, list[Signal]] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, job: Job, signal: Signal) -> None:
        self.signals.setdefault(job.id, []).append(signal)
        self.changed.set()

    def of(self, job: Job) -> list[Signal]:
        return self.signals.get(job.id, [])

    async def until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    async def final(self, job: Job, timeout: float = 5.0) -> Generated | Failed:
        await self.until(
            lambda: any(isinstance(s, Generated | Failed) for s in self.of(job)), timeout
        )
        (last,) = [s for s in self.of(job) if isinstance(s, Generated | Failed)]
        return last

    async def done(self, job: Job, timeout: float = 5.0) -> Generated:
        result = await self.final(job, timeout)
        assert isinstance(result, Generated), result
        return result


@dataclass
class World:
    sb: DiscordSandbox
    user: User
    token: str
    guild: Guild
    channel: Channel
    alerts: asyncio.Queue[WorkerAlert]
    workers: list[MidjourneyWorker]

    @property
    def mj(self) -> Any:
        assert self.sb.midjourney is not None
        return self.sb.midjourney

    async def alert(self, alert: WorkerAlert) -> None:
        self.alerts.put_nowait(alert)

    async def worker(
        self, name: str = "mj1", *, ready: bool = True, token: str | None = None, **kw: Any
    ) -> MidjourneyWorker:
        kw.setdefault("timeouts", FAST)
        worker = MidjourneyWorker(
            name,
            token or self.token,
            self.guild.id,
            self.channel.id,
            api_base=f"{self.sb.base_url}/api/v9",
            gateway_url=self.sb.gateway_url,
            alert=self.alert,
            gateway_options={"invalid_session_delay": (0.05, 0.1)},
            gateway_backoff=Backoff(base=0.02, cap=0.1),
            identify_pacer=IdentifyPacer(window=0.05),
            **kw,
        )
        self.workers.append(worker)
        await worker.start()
        if ready:
            await worker.wait_ready(5)
        return worker

    async def bot_message(self, predicate: Callable[[Message], bool]) -> Message:
        return await self.sb.wait_for_message(
            self.channel.id, lambda m: m.author.id == APPLICATION_ID and predicate(m)
        )


@pytest.fixture
async def world() -> AsyncIterator[World]:
    sb = DiscordSandbox(heartbeat_interval_ms=400)
    assert sb.midjourney is not None
    sb.midjourney.settings.step_delay = 0.0
    sb.midjourney.settings.progress_steps = (15, 50, 93)
    sb.midjourney.settings.tile_size = 16
    await sb.start()
    user, token = sb.add_user_account("painter")
    guild = sb.add_guild("art")
    channel = sb.add_channel(guild, "imagine")
    sb.join(guild, user)
    w = World(sb, user, token, guild, channel, asyncio.Queue(), [])
    try:
        yield w
    finally:
        for worker in w.workers:
            await worker.aclose()
        await sb.aclose()


async def until(
    worker: MidjourneyWorker, predicate: Callable[[], bool], timeout: float = 5
) -> None:
    """Wait, on the worker's state-change notifications, until ``predicate()`` holds."""
    changed = asyncio.Event()
    worker.add_listener(changed.set)
    async with asyncio.timeout(timeout):
        while not predicate():
            changed.clear()
            await changed.wait()


async def until_state(worker: MidjourneyWorker, state: WorkerState, timeout: float = 5) -> None:
    """Wait until the worker is in ``state``."""
    await until(worker, lambda: worker.state is state, timeout)


def imagine(prompt: str = "a lighthouse at dusk", **kw: Any) -> Job:
    return Job(user_id=1, prompt=prompt, **kw)


def follow_up(
    parent: Job, result: Generated, worker: str, action: Action, index: int | None
) -> Job:
    """A follow-up as `bot.service.Requests.follow_up` builds it from a finished parent."""
    ref = {"job_id": parent.id, "worker": worker, "external_id": result.external_id, **result.meta}
    return Job(
        user_id=1,
        prompt=parent.prompt,
        action=action,
        index=index,
        parent_id=parent.id,
        meta={"parent": ref},
    )


def attachment_bytes(w: World, message_id: str) -> bytes:
    msg = w.sb.state.get_message(w.channel.id, int(message_id))
    (att,) = msg.attachments
    return att.data


# -- the happy paths ------------------------------------------------------------------------


async def test_imagine_reports_progress_previews_and_the_real_image(world: World) -> None:
    worker = await world.worker()
    rec = Recorder()
    job = imagine("a lighthouse   at dusk", params=Params(aspect=(3, 2)))
    await worker.submit(job, rec)
    result = await rec.done(job)
    signals = rec.of(job)
    assert isinstance(signals[0], Accepted)
    progress = [s for s in signals if isinstance(s, Progress)]
    assert [p.percent for p in progress] == [15, 50, 93]
    assert all(p.preview is not None and p.preview.startswith(PNG) for p in progress)
    assert all(p.preview_url and p.external_id == result.external_id for p in progress)
    # The bytes are those of the result attachment the stand-in posted, nothing else.
    assert result.images == [attachment_bytes(world, result.meta["message_id"])]
    assert result.meta["job_hash"] == result.external_id
    assert result.meta["grid"] is True and result.meta["mode"] == "fast"
    mj_job = world.mj.jobs[result.external_id]
    assert mj_job.prompt == "a lighthouse at dusk --ar 3:2 --fast"  # text, params, speed mode
    assert worker.in_flight == 0 and worker.done_today == 1
    assert worker.state is WorkerState.READY


async def test_upscale_variation_and_reroll_follow_the_parent(world: World) -> None:
    worker = await world.worker()
    rec = Recorder()
    parent = imagine("a red fox")
    await worker.submit(parent, rec)
    grid = await rec.done(parent)
    jobs = {
        "upscale": follow_up(parent, grid, worker.name, Action.UPSCALE, 2),
        "variation": follow_up(parent, grid, worker.name, Action.VARIATION, 1),
        "reroll": follow_up(parent, grid, worker.name, Action.REROLL, None),
    }
    for job in jobs.values():
        assert worker.can_serve(job)
        await worker.submit(job, rec)
    for kind, job in jobs.items():
        result = await rec.done(job)
        mj_job = world.mj.jobs[result.external_id]
        assert mj_job.kind == kind and mj_job.parent.hash == grid.external_id
        assert result.images == [attachment_bytes(world, result.meta["message_id"])]
        assert result.external_id != grid.external_id
    assert world.mj.jobs[rec.of(jobs["upscale"])[-1].external_id].index == 2  # type: ignore[union-attr]
    assert world.mj.jobs[rec.of(jobs["variation"])[-1].external_id].index == 1  # type: ignore[union-attr]
    upscaled = rec.of(jobs["upscale"])[-1]
    assert isinstance(upscaled, Generated) and upscaled.meta["grid"] is False
    # An upscale cannot be upscaled again: refused without bothering Discord.
    again = follow_up(jobs["upscale"], upscaled, worker.name, Action.UPSCALE, 1)
    await worker.submit(again, rec)
    failed = await rec.final(again)
    assert isinstance(failed, Failed) and failed.code == ErrorCode.PARENT_UNAVAILABLE
    # Another account's result is not ours to follow up.
    foreign = follow_up(parent, grid, "someone-else", Action.UPSCALE, 1)
    assert not worker.can_serve(foreign)
    with pytest.raises(WorkerUnavailable):
        await worker.submit(foreign, rec)


async def test_identical_prompts_in_flight_are_never_swapped(world: World) -> None:
    worker = await world.worker(concurrency=3)
    rec = Recorder()
    world.mj.pause()
    jobs = [imagine("the same prompt") for _ in range(3)]
    with capture_logs() as logs:
        for job in jobs:
            await worker.submit(job, rec)
    nonces = {e["job_id"]: e["nonce"] for e in logs if e["event"] == "mj.submitted"}
    world.mj.resume()
    hashes = set()
    for job in jobs:
        result = await rec.done(job)
        # The stand-in's job behind this result was started by *this* job's interaction.
        assert world.mj.jobs[result.external_id].interaction.nonce == nonces[job.id]
        assert result.images == [attachment_bytes(world, result.meta["message_id"])]
        hashes.add(result.external_id)
    assert len(hashes) == 3


# -- Midjourney's errors --------------------------------------------------------------------

# error kind → (code, retryable, state of the account afterwards)
EXPECTED: dict[str, tuple[str, bool, WorkerState]] = {
    "banned_prompt": (ErrorCode.BANNED_PROMPT, False, WorkerState.READY),
    "invalid_parameter": (ErrorCode.INVALID_PARAMETER, False, WorkerState.READY),
    "invalid_prompt": (ErrorCode.INVALID_PROMPT, False, WorkerState.READY),
    "invalid_link": (ErrorCode.INVALID_PROMPT, False, WorkerState.READY),
    "output_filtered": (ErrorCode.OUTPUT_FILTERED, False, WorkerState.READY),
    "queue_full": (ErrorCode.QUEUE_FULL, True, WorkerState.READY),
    "action_needed": (ErrorCode.WORKER_UNAVAILABLE, True, WorkerState.QUARANTINED),
    "blocked": (ErrorCode.WORKER_UNAVAILABLE, True, WorkerState.QUARANTINED),
    "subscription_required": (ErrorCode.WORKER_UNAVAILABLE, True, WorkerState.QUARANTINED),
    "subscription_paused": (ErrorCode.WORKER_UNAVAILABLE, True, WorkerState.QUARANTINED),
    "plan_cancelled": (ErrorCode.WORKER_UNAVAILABLE, True, WorkerState.QUARANTINED),
    "pending_mod_message": (ErrorCode.WORKER_UNAVAILABLE, True, WorkerState.QUARANTINED),
    # With the "pause" policy; the relax policy has its own test.
    "credits_exhausted": (ErrorCode.WORKER_UNAVAILABLE, True, WorkerState.DISABLED),
}


def test_every_error_embed_of_the_stand_in_has_an_expectation() -> None:
    assert set(EXPECTED) == set(ERRORS)


@pytest.mark.parametrize("ephemeral", [False, True])
@pytest.mark.parametrize("kind", sorted(ERRORS))
async def test_each_error_embed_has_its_outcome(world: World, kind: str, ephemeral: bool) -> None:
    world.mj.settings.ephemeral_errors = ephemeral
    worker = await world.worker(on_credits_exhausted="pause")
    changes: list[WorkerState] = []
    worker.add_listener(lambda: changes.append(worker.state))
    world.mj.fail_next(world.user.id, kind)
    rec = Recorder()
    job = imagine("a quiet pond")
    await worker.submit(job, rec)
    failed = await rec.final(job)
    code, retryable, state = EXPECTED[kind]
    assert isinstance(failed, Failed)
    assert (failed.code, failed.retryable) == (code, retryable)
    assert failed.message and world.token not in failed.message
    assert worker.state is state
    if state is WorkerState.READY:
        assert world.alerts.empty()
        assert worker.last_error == failed.message
    else:
        alert = await asyncio.wait_for(world.alerts.get(), 5)
        assert alert.worker == worker.name and alert.state is state
        assert ERRORS[kind][0] in alert.reason  # the owner hears Midjourney's own words
        assert state in changes  # the pool was told without polling
        assert worker.snapshot().reason is not None
        with pytest.raises(WorkerUnavailable):
            await worker.submit(imagine(), rec)
        worker.reinstate()
        assert worker.state is WorkerState.READY
        second = imagine("a quiet pond again")
        await worker.submit(second, rec)
        await rec.done(second)


async def test_invalid_link_on_a_follow_up_means_the_parent_is_gone(world: World) -> None:
    worker = await world.worker()
    rec = Recorder()
    parent = imagine("a kite")
    await worker.submit(parent, rec)
    grid = await rec.done(parent)
    del world.mj.jobs[grid.external_id]  # Midjourney forgot the job
    job = follow_up(parent, grid, worker.name, Action.VARIATION, 3)
    await worker.submit(job, rec)
    failed = await rec.final(job)
    assert isinstance(failed, Failed) and failed.code == ErrorCode.PARENT_UNAVAILABLE


async def test_a_deleted_parent_message_fails_the_follow_up_cleanly(world: World) -> None:
    worker = await world.worker()
    rec = Recorder()
    parent = imagine("a boat")
    await worker.submit(parent, rec)
    grid = await rec.done(parent)
    msg = world.sb.state.get_message(world.channel.id, int(grid.meta["message_id"]))
    world.sb.state.delete_message(msg)
    job = follow_up(parent, grid, worker.name, Action.UPSCALE, 1)
    await worker.submit(job, rec)
    failed = await rec.final(job)
    assert isinstance(failed, Failed) and failed.code == ErrorCode.PARENT_UNAVAILABLE
    assert worker.limits.submitted_today == 1  # the refused interaction did not count


async def test_credits_exhausted_switches_to_relax_and_the_job_still_runs(world: World) -> None:
    worker = await world.worker()
    world.mj.fail_next(world.user.id, "credits_exhausted")
    rec = Recorder()
    job = imagine("a glacier")
    await worker.submit(job, rec)
    result = await rec.done(job)
    assert worker.mode == "relax" and worker.state is WorkerState.READY
    assert world.mj.jobs[result.external_id].prompt.endswith("--relax")
    assert result.meta["mode"] == "relax"
    alert = await asyncio.wait_for(world.alerts.get(), 5)
    assert "Credits exhausted" in alert.reason and "relax" in alert.reason
    assert worker.snapshot().mode == "relax"


async def test_job_queued_waits_then_completes(world: World) -> None:
    world.mj.settings.max_concurrent = 1
    worker = await world.worker(concurrency=3)
    world.mj.pause()
    rec = Recorder()
    first, second = imagine("first in line"), imagine("second in line")
    await worker.submit(first, rec)
    await worker.submit(second, rec)
    await rec.until(lambda: any(isinstance(s, Waiting) for s in rec.of(second)))
    assert not any(isinstance(s, Waiting) for s in rec.of(first))
    world.mj.resume()
    await rec.done(first)
    await rec.done(second)
    kinds = [type(s).__name__ for s in rec.of(second)]
    assert kinds[:2] == ["Accepted", "Waiting"] and kinds[-1] == "Generated"
    assert "Progress" in kinds


# -- account-level behaviour ----------------------------------------------------------------


async def test_command_version_republished_is_refreshed_and_the_job_goes_through(
    world: World,
) -> None:
    worker = await world.worker()
    rec = Recorder()
    first = imagine("before the republish")
    await worker.submit(first, rec)
    await rec.done(first)
    assert worker.api.index_fetches == 1
    new_version = world.mj.republish()
    calls_before = len(world.sb.rest.calls)
    second = imagine("after the republish")
    await worker.submit(second, rec)
    await rec.done(second)
    calls = list(world.sb.rest.calls)[calls_before:]
    assert ("POST", "/interactions", 400) in calls  # the stale version was refused...
    assert ("POST", "/interactions", 204) in calls  # ...and the retry accepted
    assert worker.api.index_fetches == 2
    assert world.mj.jobs[rec.of(second)[-1].external_id].interaction.data["version"] == str(  # type: ignore[union-attr]
        new_version
    )


async def test_quarantine_takes_the_account_out_of_the_pool(world: World) -> None:
    worker = await world.worker()
    pool = Pool([worker])
    assert pool.free_slots() == worker.concurrency
    world.mj.fail_next(world.user.id, "action_needed")
    rec = Recorder()
    job = imagine("a lantern")
    await pool.submit(job, rec)
    failed = await rec.final(job)
    pool.release(job.id)
    assert isinstance(failed, Failed) and failed.retryable
    alert = await asyncio.wait_for(world.alerts.get(), 5)
    assert alert.state is WorkerState.QUARANTINED and "Action needed" in alert.reason
    assert pool.free_slots() == 0 and pool.select(imagine()) is None
    (row,) = pool.snapshot()
    assert row.state is WorkerState.QUARANTINED and "Action needed" in (row.reason or "")


async def test_a_silent_midjourney_times_the_job_out(world: World) -> None:
    worker = await world.worker(
        timeouts=MidjourneyTimeouts(request=5, first_message=0.3, start=0.3, progress=5)
    )
    rec = Recorder()
    world.mj.pause()  # the job stays "(Waiting to start)"
    held = imagine("held at the start")
    await worker.submit(held, rec)
    failed = await rec.final(held)
    assert isinstance(failed, Failed) and failed.code == ErrorCode.TIMEOUT and not failed.retryable
    assert "start" in failed.message
    del world.sb.state.app_handlers[APPLICATION_ID]  # Midjourney hears nothing at all
    unheard = imagine("into the void")
    await worker.submit(unheard, rec)
    failed = await rec.final(unheard)
    assert isinstance(failed, Failed) and failed.code == ErrorCode.TIMEOUT
    assert "first message" in failed.message
    assert worker.in_flight == 0


async def test_cancel_reports_cancelled_and_keeps_the_slot_until_midjourney_is_done(
    world: World,
) -> None:
    worker = await world.worker(concurrency=2)
    rec = Recorder()
    world.mj.pause()
    job = imagine("never mind")
    await worker.submit(job, rec)
    await world.bot_message(lambda m: "never mind" in m.content)
    await worker.cancel(job)
    failed = await rec.final(job)
    assert isinstance(failed, Failed) and failed.code == ErrorCode.CANCELED
    assert worker.in_flight == 0 and worker.orphans == 1 and worker.capacity == 1
    world.mj.resume()
    await until(worker, lambda: worker.orphans == 0)
    assert worker.capacity == 2
    assert not any(isinstance(s, Generated) for s in rec.of(job))  # nothing after the end


@pytest.mark.parametrize("fault", ["drop", "zombie", "reconnect", "restart", "invalid_session"])
async def test_a_job_in_flight_survives_a_gateway_fault(world: World, fault: str) -> None:
    worker = await world.worker()
    gateway = worker._gateway
    assert gateway is not None
    rec = Recorder()
    world.mj.pause()
    job = imagine(f"through the storm {fault}")
    await worker.submit(job, rec)
    await world.bot_message(lambda m: f"storm {fault}" in m.content)
    uid = world.user.id
    if fault == "drop":
        assert world.sb.drop_connections(user_id=uid) == 1
    elif fault == "zombie":
        assert world.sb.stop_acking(user_id=uid) == 1
    elif fault == "reconnect":
        assert world.sb.send_reconnect(user_id=uid) == 1
    elif fault == "restart":
        assert world.sb.restart_gateway() >= 1
    else:  # the session is gone: a new one, and the channel is read back
        assert world.sb.send_invalid_session(False, user_id=uid) == 1
    # Midjourney goes on while we reconnect; what we miss is replayed or read back.
    await gateway.wait_for(lambda g: g.counters.reconnects >= 1, 5)
    world.mj.resume()
    result = await rec.done(job, timeout=10)
    assert result.images == [attachment_bytes(world, result.meta["message_id"])]
    await gateway.wait_ready(5)
    if fault == "zombie":
        assert gateway.counters.missed_heartbeats >= 1
    if fault == "invalid_session":
        assert gateway.counters.identifies == 2
    else:
        assert gateway.counters.identifies == 1 and gateway.counters.resumed >= 1
    assert worker.state is WorkerState.READY


async def test_rest_faults_on_the_interaction(world: World) -> None:
    worker = await world.worker()
    rec = Recorder()
    # A short 429 is waited out and retried.
    world.sb.fail_route("POST", "/interactions", 429, times=1)
    limited = imagine("rate limited")
    await worker.submit(limited, rec)
    await rec.done(limited)
    # A server error is raised to the caller (the dispatcher retries), and not counted.
    world.sb.fail_route("POST", "/interactions", 502, times=1)
    with pytest.raises(GouacheError) as caught:
        await worker.submit(imagine("bad gateway"), rec)
    assert "502" in caught.value.message and world.token not in str(caught.value)
    assert worker.state is WorkerState.READY and worker.in_flight == 0
    assert worker.limits.submitted_today == 1
    # A version refused again right after a refresh is not retried in a loop.
    stale = {
        "code": 50035,
        "message": "Invalid Form Body",
        "errors": {
            "data": {"_errors": [{"code": "INTERACTION_APPLICATION_COMMAND_INVALID_VERSION"}]}
        },
    }
    world.sb.rest.faults.add("POST", "/interactions", status=400, times=2, body=stale)
    fetches = worker.api.index_fetches
    with pytest.raises(GouacheError):
        await worker.submit(imagine("stale twice"), rec)
    assert worker.api.index_fetches == fetches + 1
    # 401: the token is dead; the account is disabled and the owner told.
    world.sb.fail_route("POST", "/interactions", 401, times=1)
    with pytest.raises(WorkerUnavailable):
        await worker.submit(imagine("unauthorized"), rec)
    assert worker.snapshot().state is WorkerState.DISABLED
    alert = await asyncio.wait_for(world.alerts.get(), 5)
    assert alert.state is WorkerState.DISABLED and "401" in alert.reason


async def test_a_captcha_modal_quarantines_and_a_failed_interaction_retries(
    world: World,
) -> None:
    worker = await world.worker()
    rec = Recorder()
    world.mj.pause()
    jobs = [imagine("one"), imagine("two")]
    with capture_logs() as logs:
        for job in jobs:
            await worker.submit(job, rec)
    nonces = [e["nonce"] for e in logs if e["event"] == "mj.submitted"]
    # What Discord sends a client whose interaction the application did not answer.
    world.sb.gateway.dispatch_to_user(
        world.user.id, "INTERACTION_FAILURE", {"id": "1", "nonce": nonces[0]}
    )
    failed = await rec.final(jobs[0])
    assert isinstance(failed, Failed) and failed.retryable and failed.code == ErrorCode.WORKER_ERROR
    # A verification modal in answer to the second one: a person must step in.
    world.sb.gateway.dispatch_to_user(
        world.user.id,
        "INTERACTION_IFRAME_MODAL_CREATE",
        {"id": "2", "nonce": nonces[1], "application_id": str(APPLICATION_ID), "title": "Verify"},
    )
    failed = await rec.final(jobs[1])
    assert isinstance(failed, Failed) and failed.retryable
    assert worker.state is WorkerState.QUARANTINED
    alert = await asyncio.wait_for(world.alerts.get(), 5)
    assert alert.state is WorkerState.QUARANTINED and "verification" in alert.reason


async def test_daily_cap_is_enforced_and_resets_the_next_day(world: World) -> None:
    clock = Clock()
    worker = await world.worker(daily_cap=2, clock=clock)
    rec = Recorder()
    for n in range(2):
        job = imagine(f"image {n}")
        await worker.submit(job, rec)
        await rec.done(job)
    assert worker.capacity == 0 and not worker.can_serve(imagine())
    assert worker.snapshot().reason == "daily cap of 2 reached"
    assert Pool([worker]).free_slots() == 0
    with pytest.raises(WorkerUnavailable):
        await worker.submit(imagine("one too many"), rec)
    assert len(world.mj.jobs) == 2
    clock.advance(24 * 3600)
    assert worker.capacity == worker.concurrency and worker.can_serve(imagine())
    assert worker.done_today == 0


async def test_pause_between_jobs_holds_the_next_submission(world: World) -> None:
    worker = await world.worker(pause_s=0.4, concurrency=3)
    woke = asyncio.Event()
    worker.add_listener(woke.set)
    rec = Recorder()
    first = imagine("first")
    started = time.monotonic()
    await worker.submit(first, rec)
    assert worker.capacity == worker.in_flight  # no free slot while pausing
    with pytest.raises(WorkerUnavailable):
        await worker.submit(imagine("too soon"), rec)
    async with asyncio.timeout(5):
        while worker.capacity <= worker.in_flight:
            woke.clear()
            await woke.wait()
    assert time.monotonic() - started >= 0.39
    second = imagine("second")
    await worker.submit(second, rec)
    await rec.done(first)
    await rec.done(second)


async def test_a_rejected_token_disables_the_account_and_tells_the_owner(world: World) -> None:
    worker = await world.worker("bad", token="not-a-real-token-at-all", ready=False)
    await until_state(worker, WorkerState.DISABLED)
    alert = await asyncio.wait_for(world.alerts.get(), 5)
    assert alert.state is WorkerState.DISABLED and "4004" in alert.reason
    assert worker.snapshot().reason == alert.reason
    assert not worker.can_serve(imagine())


async def test_a_disabled_account_never_connects() -> None:
    worker = MidjourneyWorker("off", "tok", 1, 2, enabled=False)
    await worker.start()
    assert worker.state is WorkerState.DISABLED
    assert worker.snapshot().reason == "disabled in the configuration"
    await worker.aclose()


async def test_the_token_never_reaches_logs_reprs_or_errors(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "sekrit-token-value-123"
    with capture_logs() as logs:
        worker = await world.worker()
        rec = Recorder()
        world.mj.fail_next(world.user.id, "invalid_parameter")
        bad = imagine("a cat")
        await worker.submit(bad, rec)
        await rec.final(bad)
        good = imagine("a dog")
        await worker.submit(good, rec)
        await rec.done(good)
        stranger = await world.worker("stranger", token=secret, ready=False)
        await until_state(stranger, WorkerState.DISABLED)
    alerts = [world.alerts.get_nowait() for _ in range(world.alerts.qsize())]
    texts = [
        repr(worker),
        repr(worker.api),
        repr(worker.snapshot()),
        repr(stranger),
        repr(stranger.snapshot()),
        repr(logs),
        caplog.text,
        repr(rec.signals),
        repr(alerts),
    ]
    for text in texts:
        assert world.token not in text and secret not in text
    assert logs  # the run did log


# -- in the pool and the dispatcher -----------------------------------------------------------


async def test_through_the_pool_and_dispatcher_to_stored_images(
    world: World, tmp_path: Path
) -> None:
    worker = await world.worker()
    store = SQLiteStore(tmp_path / "g.db", lease_s=30)
    await store.start()
    pool = Pool([worker])
    bus = EventBus()
    events = bus.subscribe(size=10_000)
    images = ImageStore(tmp_path / "images")
    dispatcher = Dispatcher(
        store,
        pool,
        images,
        bus,
        timeouts=StageTimeouts(submit=5, start=5, run=5, store=5),
        lease_s=30,
        limit=AdaptiveLimit(initial=4, cooldown_s=0),
    )
    await dispatcher.start()

    async def finished(job_id: str) -> Job:
        async with asyncio.timeout(10):
            while True:
                event = await events.get()
                if event.job_id == job_id and event.kind is JobEventKind.STATE and event.final:
                    got = await store.get(job_id)
                    assert got is not None
                    return got

    try:
        parent = (await store.enqueue(imagine("a harbour"), daily_limit=10)).job
        done = await finished(parent.id)
        assert done.state is JobState.SUCCEEDED and done.worker == worker.name
        stored = await images.get(done.results[0])
        assert stored == attachment_bytes(world, done.meta["message_id"])
        ref = {
            "job_id": done.id,
            "worker": done.worker,
            "external_id": done.external_id,
            **{k: v for k, v in done.meta.items() if k != "parent"},
        }
        child = Job(
            user_id=1,
            prompt=done.prompt,
            action=Action.UPSCALE,
            index=4,
            parent_id=done.id,
            meta={"parent": ref},
        )
        child = (await store.enqueue(child, daily_limit=10)).job
        up = await finished(child.id)
        assert up.state is JobState.SUCCEEDED
        assert world.mj.jobs[up.external_id].parent.hash == done.external_id
        assert {r.name: r.done_today for r in pool.snapshot()}[worker.name] == 2
        # A job Midjourney holds past the worker's stage timeout ends TIMED_OUT, refunded.
        worker.timeouts = MidjourneyTimeouts(request=5, first_message=3, start=0.3, progress=5)
        world.mj.pause()
        held = (await store.enqueue(imagine("held"), daily_limit=10)).job
        timed_out = await finished(held.id)
        assert timed_out.state is JobState.TIMED_OUT
        assert timed_out.error_code == ErrorCode.TIMEOUT
    finally:
        await dispatcher.aclose()
        await store.aclose()


async def test_snapshot_reports_latency_in_flight_and_mode(world: World) -> None:
    worker = await world.worker(concurrency=2)
    rec = Recorder()
    world.mj.pause()
    job = imagine("a slow one")
    await worker.submit(job, rec)
    snap = worker.snapshot()
    assert (snap.kind, snap.capacity, snap.in_flight, snap.mode) == ("midjourney", 2, 1, "fast")
    gateway = worker._gateway
    assert gateway is not None
    await gateway.wait_for(lambda g: g.latency_ms is not None, 5)
    assert worker.snapshot().latency_ms is not None
    world.mj.resume()
    await rec.done(job)
    assert worker.snapshot().done_today == 1
