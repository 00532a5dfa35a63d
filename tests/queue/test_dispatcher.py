"""The dispatcher against a real SQLite store and in-process stand-in workers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gouache.events import EventBus, Subscription
from gouache.jobs import ErrorCode, Job, JobEvent, JobEventKind, JobState
from gouache.pool.pool import Pool
from gouache.queue.dispatcher import AdaptiveLimit, Dispatcher, ServiceTimes, StageTimeouts
from gouache.storage.images import ImageStore
from gouache.storage.sqlite import SQLiteStore
from gouache_sandbox.instant import InstantWorker


@dataclass
class Rig:
    store: SQLiteStore
    pool: Pool
    workers: list[InstantWorker]
    dispatcher: Dispatcher
    bus: EventBus
    events: Subscription
    images: ImageStore

    async def submit(self, user: int, **kw: object) -> Job:
        return (
            await self.store.enqueue(Job(user_id=user, prompt="a cat", **kw), daily_limit=100)
        ).job  # type: ignore[arg-type]

    async def until(self, job_id: str, state: JobState, timeout: float = 5.0) -> JobEvent:
        async with asyncio.timeout(timeout):
            while True:
                event = await self.events.get()
                if (
                    event.job_id == job_id
                    and event.kind is JobEventKind.STATE
                    and event.state is state
                ):
                    return event


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    store = SQLiteStore(tmp_path / "g.db", lease_s=30)
    await store.start()
    workers = [InstantWorker("a", capacity=2), InstantWorker("b", capacity=2)]
    pool = Pool(workers)
    await pool.start()
    bus = EventBus()
    events = bus.subscribe(size=100_000)
    images = ImageStore(tmp_path / "images")
    dispatcher = Dispatcher(
        store,
        pool,
        images,
        bus,
        timeouts=StageTimeouts(submit=2, start=2, run=2, store=2),
        max_batch=8,
        lease_s=30,
        limit=AdaptiveLimit(initial=8, cooldown_s=0),
        # A busy machine's event-loop lag must not halve the window behind a test's back:
        # the window tests count the halvings their own scenario causes.
        lag_threshold_s=float("inf"),
    )
    await dispatcher.start()
    yield Rig(store, pool, workers, dispatcher, bus, events, images)
    await dispatcher.aclose()
    await pool.aclose()
    await store.aclose()


async def test_job_runs_to_success_with_events_in_order(rig: Rig) -> None:
    job = await rig.submit(1)
    seen: list[tuple[JobEventKind, JobState]] = []
    async with asyncio.timeout(5):
        while not seen or seen[-1][1] is not JobState.SUCCEEDED:
            e = await rig.events.get()
            if e.job_id == job.id:
                seen.append((e.kind, e.state))
    states = [s for k, s in seen if k is JobEventKind.STATE]
    assert states == [JobState.SUBMITTED, JobState.GENERATED, JobState.STORING, JobState.SUCCEEDED]
    assert (JobEventKind.PROGRESS, JobState.RUNNING) in seen
    done = await rig.store.get(job.id)
    assert done is not None and done.state is JobState.SUCCEEDED
    assert len(done.results) == 1 and rig.images.exists(done.results[0])
    assert done.worker in {"a", "b"} and done.meta["worker"] == done.worker
    assert (await rig.store.quota(1, daily_limit=100)).used == 1


async def test_never_more_in_flight_than_free_slots(rig: Rig) -> None:
    for w in rig.workers:
        w.behaviour.hang_next = 100
    jobs = [await rig.submit(i) for i in range(10)]
    submitted = 0
    async with asyncio.timeout(5):
        while submitted < 4:
            e = await rig.events.get()
            submitted += e.state is JobState.SUBMITTED and e.kind is JobEventKind.STATE
    with pytest.raises(TimeoutError):
        await rig.until(jobs[-1].id, JobState.SUBMITTED, timeout=0.3)
    assert sum(len(w.submitted) for w in rig.workers) == 4
    assert await rig.store.depth() == 6
    assert rig.dispatcher.batch_size() == 0


async def test_stage_timeout_fails_refunds_and_halves_the_window(rig: Rig) -> None:
    rig.workers[0].behaviour.hang_next = 1
    rig.workers[1].behaviour.hang_next = 1
    before = rig.dispatcher.limit.value
    job = await rig.submit(1)
    event = await rig.until(job.id, JobState.TIMED_OUT, timeout=6)
    assert event.state is JobState.TIMED_OUT
    final = await rig.store.get(job.id)
    assert final is not None and final.error_code == ErrorCode.TIMEOUT
    assert (await rig.store.quota(1, daily_limit=100)).used == 0
    assert job.id in rig.workers[0].cancelled + rig.workers[1].cancelled
    assert rig.dispatcher.limit.decreases == 1
    assert rig.dispatcher.limit.value == pytest.approx(before / 2)


async def test_retryable_failure_is_requeued_then_succeeds_on_another_worker(rig: Rig) -> None:
    a, b = rig.workers  # both idle: "a" (first by name) gets the job, and fails it
    a.behaviour.fail_next = 1
    a.behaviour.fail_retryable = True
    job = await rig.submit(1)
    await rig.until(job.id, JobState.QUEUED)
    await rig.until(job.id, JobState.SUCCEEDED)
    final = await rig.store.get(job.id)
    assert final is not None and final.attempts == 2
    assert final.meta["avoid"] == ["a"]
    assert final.worker == "b"  # the second attempt ran elsewhere, though "a" was free again
    assert a.submitted == [job.id] and b.submitted == [job.id]


async def test_submit_refused_is_retried(rig: Rig) -> None:
    a, b = rig.workers
    for w in rig.workers:
        w.behaviour.refuse_submit_next = 1
    job = await rig.submit(1)
    states: list[JobState] = []
    async with asyncio.timeout(5):
        while not states or states[-1] is not JobState.SUCCEEDED:
            e = await rig.events.get()
            if e.job_id == job.id and e.kind is JobEventKind.STATE:
                states.append(e.state)
    # "a" refuses, the job goes back to the queue; "b" (given work least recently) refuses
    # too; the third attempt goes to "a" again, which takes it.
    assert states[:5] == [JobState.SUBMITTED, JobState.QUEUED] * 2 + [JobState.SUBMITTED]
    assert a.behaviour.refuse_submit_next == 0 and b.behaviour.refuse_submit_next == 0
    assert a.submitted == [job.id] and b.submitted == []
    final = await rig.store.get(job.id)
    assert final is not None and final.state is JobState.SUCCEEDED
    assert final.attempts == 3 and final.worker == "a"
    # Each refusal gave its slot back: nothing is held, every slot is free again.
    assert rig.pool.in_flight() == 0
    assert [rig.pool.free_slots_of(w) for w in rig.workers] == [2, 2]


async def test_prompt_failure_fails_and_refunds(rig: Rig) -> None:
    for w in rig.workers:
        w.behaviour.fail_next = 1
        w.behaviour.fail_code = ErrorCode.BANNED_PROMPT
    job = await rig.submit(1)
    await rig.until(job.id, JobState.FAILED)
    final = await rig.store.get(job.id)
    assert final is not None and final.error_code == ErrorCode.BANNED_PROMPT and final.attempts == 1
    assert (await rig.store.quota(1, daily_limit=100)).used == 0


async def test_cancel_running_job_stops_the_worker(rig: Rig) -> None:
    for w in rig.workers:
        w.behaviour.hang_next = 1
    job = await rig.submit(1)
    await rig.until(job.id, JobState.SUBMITTED)
    cancelled = await rig.dispatcher.cancel(job.id)
    assert cancelled.state is JobState.CANCELED
    await rig.until(job.id, JobState.CANCELED)
    seen = [asyncio.create_task(w.cancel_seen.wait()) for w in rig.workers]
    done, pending = await asyncio.wait(seen, timeout=5, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    assert done
    assert job.id in rig.workers[0].cancelled + rig.workers[1].cancelled
    assert (await rig.store.quota(1, daily_limit=100)).used == 0
    assert rig.pool.in_flight() == 0


async def test_job_queued_notice_halves_window_and_job_still_finishes(rig: Rig) -> None:
    for w in rig.workers:
        w.behaviour.queued_notice_next = 1
    before = rig.dispatcher.limit.value
    job = await rig.submit(1)
    await rig.until(job.id, JobState.SUCCEEDED)
    # Halved once by the notice; one job alone did not fill the window, so its
    # success says nothing about a larger one: the window does not grow.
    assert rig.dispatcher.limit.decreases == 1
    assert rig.dispatcher.limit.value == pytest.approx(before / 2)


async def test_the_window_grows_only_while_the_pool_fills_it(rig: Rig) -> None:
    """Four slots: however many jobs succeed, the window stays near what they can use."""
    rig.dispatcher.limit.value = 2.0  # below the pool's four slots: full, so it grows
    waiting = {(await rig.submit(user)).id for user in range(1, 121)}
    async with asyncio.timeout(30):
        while waiting:
            event = await rig.events.get()
            if event.kind is JobEventKind.STATE and event.state is JobState.SUCCEEDED:
                waiting.discard(event.job_id)
    assert rig.dispatcher.limit.decreases == 0
    # It grew past 2 while two jobs at a time filled it, then stopped growing
    # once the four slots, not the window, kept jobs back: at most one job over.
    assert 4.0 <= rig.dispatcher.limit.value < 6.0


async def test_light_user_is_served_before_heavy_backlog(rig: Rig) -> None:
    for w in rig.workers:
        w.behaviour.hang_next = 4  # fill all four slots with the heavy user's first jobs
    heavy = [await rig.submit(1) for _ in range(50)]
    for j in heavy[:4]:
        await rig.until(j.id, JobState.SUBMITTED)
    light = await rig.submit(2)
    assert await rig.store.position(light.id) == 0
    await rig.dispatcher.cancel(heavy[0].id)  # frees a slot
    await rig.until(light.id, JobState.SUBMITTED)
    assert await rig.store.depth(1) == 50 - 4


async def test_job_no_worker_can_serve_fails_cleanly(rig: Rig) -> None:
    job = await rig.submit(1, backend="midjourney")
    await rig.until(job.id, JobState.FAILED)
    final = await rig.store.get(job.id)
    assert final is not None and final.error_code == ErrorCode.WORKER_UNAVAILABLE


async def test_worker_coming_back_wakes_the_dispatcher(rig: Rig) -> None:
    from gouache.pool.base import WorkerState

    for w in rig.workers:
        w.set_state(WorkerState.OFFLINE)
    job = await rig.submit(1)
    with pytest.raises(TimeoutError):
        await rig.until(job.id, JobState.SUBMITTED, timeout=0.2)
    rig.workers[1].set_state(WorkerState.READY)
    await rig.until(job.id, JobState.SUCCEEDED)


def test_aimd_grows_only_a_full_window() -> None:
    limit = AdaptiveLimit(initial=4, maximum=64)
    limit.on_success(in_flight=3)  # a job done while one slot of the window stood empty
    assert limit.value == 4.0
    limit.on_success(in_flight=4)
    assert limit.value == pytest.approx(4.25)


def test_aimd_grows_additively_and_halves_with_cooldown() -> None:
    now = [0.0]
    limit = AdaptiveLimit(initial=4, maximum=64, cooldown_s=5, clock=lambda: now[0])
    for _ in range(4):
        limit.on_success()
    grown = 4.0
    for _ in range(4):
        grown += 1 / grown  # one job more per window of completions
    assert limit.value == pytest.approx(grown)
    assert limit.on_congestion("x")
    assert limit.value == pytest.approx(grown / 2)
    halved = limit.value
    assert not limit.on_congestion("again, within cooldown")
    assert limit.value == halved
    now[0] = 6
    assert limit.on_congestion("later")
    assert limit.value == pytest.approx(halved / 2)
    for _ in range(50):
        limit.on_congestion("x")
        now[0] += 10
    assert limit.limit == 1


def test_eta_from_service_times() -> None:
    times = ServiceTimes(alpha=0.5, default_s=60)
    assert times.eta(0, capacity=4) == 60
    times.observe("comfyui", 10)
    times.observe("comfyui", 20)
    assert times.mean("comfyui") == 15
    assert times.eta(0, capacity=4, kind="comfyui") == 15
    assert times.eta(7, capacity=4, kind="comfyui") == 30
    assert times.eta(8, capacity=4, kind="comfyui") == 45


async def test_the_dispatcher_outlives_a_redis_restart_while_it_waits_for_work(
    tmp_path: Path,
) -> None:
    """Redis goes away while the queue is empty: the wait fails, the loop must not die with it."""
    from structlog.testing import capture_logs

    from gouache.storage.redis import RedisStore

    from ..conftest import _free_port, start_redis_server

    port = _free_port()
    server = ("--port", str(port), "--save", "", "--appendonly", "yes", "--appendfsync", "always")
    proc = start_redis_server(tmp_path, *server)
    url = f"redis://127.0.0.1:{port}/0"
    store = RedisStore(url, prefix="outlive")
    front = RedisStore(url, prefix="outlive")
    await store.start()
    await front.start()
    pool = Pool([InstantWorker("a")])
    await pool.start()
    bus = EventBus()
    dispatcher = Dispatcher(store, pool, ImageStore(tmp_path / "images"), bus, lease_s=30)
    await dispatcher.start()
    failed = asyncio.Event()

    def watch(_logger: object, _method: str, event: dict[str, object]) -> dict[str, object]:
        if event.get("event") == "dispatch.wait_failed":
            failed.set()
        return event

    try:
        with capture_logs(processors=[watch]):
            proc.terminate()
            proc.wait(timeout=10)
            # The waiting dispatcher is woken by the lost connection and finds Redis away.
            await asyncio.wait_for(failed.wait(), 10)
        proc = start_redis_server(tmp_path, *server)
        with bus.subscribe(lambda e: e.final) as finals:
            job = (await front.enqueue(Job(user_id=1, prompt="a cat"), daily_limit=9)).job
            async with asyncio.timeout(15):
                final = await anext(aiter(finals))
        assert (final.job_id, final.state) == (job.id, JobState.SUCCEEDED)
    finally:
        await dispatcher.aclose()
        await pool.aclose()
        await store.aclose()
        await front.aclose()
        proc.terminate()
        proc.wait(timeout=10)
