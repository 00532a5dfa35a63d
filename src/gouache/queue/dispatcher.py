"""The dispatcher: pops jobs in batches sized to free capacity and runs each to its end.

Event-driven: it sleeps in `Store.wait_for_work` while the queue is empty and
on the pool's ``slot_freed`` event while every slot is taken; there is no
polling timer on the path of a job. Each pop takes

    k = min(free slots, adaptive window − jobs in flight, max batch)

jobs in one call. The adaptive window follows AIMD: clean completions grow it
by one per window's worth of completions, and signs of a struggling backend
(a stage timeout, "Job queued", a retryable failure, a 429 seen by a worker,
event-loop lag) halve it, at most once per cooldown.

After the pop the dispatcher owns the job: it places it on a worker, turns the
worker's signals into store transitions (persisted first) and `JobEvent`s
(announced after), enforces each stage's timeout, copies the images into the
image store, renews leases while the job runs and requeues or fails it when
the worker gives up.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from gouache.errors import (
    GouacheError,
    IllegalTransition,
    JobNotFound,
    LeaseLost,
    WorkerUnavailable,
)
from gouache.events import EventBus
from gouache.jobs import ErrorCode, Job, JobEvent, JobEventKind, JobState
from gouache.pool.base import Accepted, Failed, Generated, Progress, Signal, Waiting, Worker
from gouache.pool.pool import Pool
from gouache.storage.base import Store
from gouache.storage.images import ImageStore

log = structlog.get_logger(__name__)

# Failure codes that say "the backend is struggling", as opposed to "this prompt is bad".
_CONGESTION_CODES = frozenset(
    {ErrorCode.QUEUE_FULL, ErrorCode.WORKER_ERROR, ErrorCode.TIMEOUT, ErrorCode.RATE_LIMITED}
)


@dataclass(frozen=True, slots=True)
class StageTimeouts:
    """How long each stage of a job may take before it is TIMED_OUT (seconds)."""

    submit: float = 60.0  # popped → accepted by the backend
    start: float = 900.0  # accepted → first progress (the backend's own queue)
    run: float = 600.0  # first progress → images generated
    store: float = 120.0  # images generated → stored


class AdaptiveLimit:
    """An AIMD window on jobs in flight (additive increase, multiplicative decrease)."""

    def __init__(
        self,
        initial: float = 4.0,
        *,
        minimum: float = 1.0,
        maximum: float = 256.0,
        cooldown_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.value = max(minimum, min(initial, maximum))
        self.minimum = minimum
        self.maximum = maximum
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._last_decrease = -float("inf")
        self.decreases = 0

    @property
    def limit(self) -> int:
        """The window as a whole number of jobs (at least 1)."""
        return max(1, int(self.value))

    def on_success(self, in_flight: int | None = None) -> None:
        """A clean completion: grow by one job per window of completions.

        With ``in_flight`` (jobs running when it completed, itself included), only
        while the window was full: a window the pool never filled has shown nothing
        about a larger one, and growing it anyway would leave it far above the
        pool's capacity, limiting nothing when the workers start to struggle
        (TCP grows its window only when the window limits it, for the same reason).
        """
        if in_flight is not None and in_flight < self.limit:
            return
        self.value = min(self.maximum, self.value + 1.0 / self.value)

    def on_congestion(self, reason: str) -> bool:
        """A sign of overload: halve, unless we already did within the cooldown."""
        now = self._clock()
        if now - self._last_decrease < self.cooldown_s:
            return False
        self._last_decrease = now
        before = self.value
        self.value = max(self.minimum, self.value / 2)
        self.decreases += 1
        log.info(
            "dispatch.window_halved",
            reason=reason,
            before=round(before, 2),
            after=round(self.value, 2),
        )
        return True


class ServiceTimes:
    """EWMA of how long a job takes on each backend kind, for ETAs."""

    def __init__(self, alpha: float = 0.2, default_s: float = 60.0) -> None:
        self.alpha = alpha
        self.default_s = default_s
        self._ewma: dict[str, float] = {}

    def observe(self, kind: str, seconds: float) -> None:
        """Fold one job's service time into the average of its kind."""
        old = self._ewma.get(kind)
        self._ewma[kind] = seconds if old is None else old + self.alpha * (seconds - old)

    def mean(self, kind: str | None = None) -> float:
        """The average service time of a kind (or across kinds), or the default before any."""
        if kind is not None and kind in self._ewma:
            return self._ewma[kind]
        if self._ewma:
            return sum(self._ewma.values()) / len(self._ewma)
        return self.default_s

    def eta(self, position: int, *, capacity: int, kind: str | None = None) -> float:
        """Seconds until a job at ``position`` (0 = next) is done, with ``capacity`` slots."""
        rounds = position // max(1, capacity) + 1
        return rounds * self.mean(kind)


class _Stop:
    """Sentinel in a job's signal queue: stop following it (cancelled, lease lost, shutdown)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class Dispatcher:
    """Moves jobs from the store to the pool and follows them to a terminal state."""

    def __init__(  # noqa: PLR0913
        self,
        store: Store,
        pool: Pool,
        images: ImageStore,
        bus: EventBus,
        *,
        owner: str | None = None,
        timeouts: StageTimeouts | None = None,
        max_batch: int = 32,
        lease_s: float = 120.0,
        max_attempts: int = 3,
        limit: AdaptiveLimit | None = None,
        lag_threshold_s: float = 0.25,
    ) -> None:
        self.store = store
        self.pool = pool
        self.images = images
        self.bus = bus
        self.owner = owner or f"dispatcher-{uuid.uuid4().hex[:8]}"
        self.timeouts = timeouts or StageTimeouts()
        self.max_batch = max_batch
        self.lease_s = lease_s
        self.max_attempts = max_attempts
        self.limit = limit or AdaptiveLimit(
            initial=min(8, max_batch), maximum=max(8, max_batch * 8)
        )
        self.lag_threshold_s = lag_threshold_s
        self.service = ServiceTimes()
        self._jobs: dict[str, asyncio.Queue[Signal | _Stop]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._intake = True
        self._unplaced = 0
        self.popped = 0
        self.completed = 0

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Start the dispatch loop, the lease renewer, the reaper and the lag monitor."""
        self._intake = True
        self._loops = [
            asyncio.create_task(self._dispatch_loop(), name="dispatch"),
            asyncio.create_task(self._renew_loop(), name="lease-renew"),
            asyncio.create_task(self._reap_loop(), name="lease-reaper"),
            asyncio.create_task(self._lag_loop(), name="loop-lag"),
        ]

    def stop_intake(self) -> None:
        """Pop no more jobs (graceful shutdown begins); running jobs go on."""
        self._intake = False
        self.pool.slot_freed.set()

    async def drain(self, grace_s: float) -> None:
        """Wait up to ``grace_s`` for running jobs to finish."""
        self.stop_intake()
        pending = set(self._tasks)
        if pending:
            await asyncio.wait(pending, timeout=grace_s)

    async def aclose(self) -> None:
        """Stop everything; jobs still running keep their leases and are recovered later."""
        self._intake = False
        for queue in self._jobs.values():
            queue.put_nowait(_Stop("shutdown"))
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
        for task in list(self._tasks):
            task.cancel()
        self._loops = []

    @property
    def in_flight(self) -> int:
        """Jobs this dispatcher is following now."""
        return len(self._jobs)

    def eta(self, position: int, backend: str | None = None) -> float:
        """Seconds until a queued job at ``position`` should be done."""
        return self.service.eta(
            position, capacity=max(1, self.pool.capacity(backend)), kind=backend
        )

    # -- the loop ------------------------------------------------------------

    def batch_size(self) -> int:
        """How many jobs the next pop may take."""
        window = self.limit.limit - self.in_flight
        # Popped jobs not yet placed will take slots the pool still counts as free.
        free = self.pool.free_slots() - self._unplaced
        return max(0, min(free, window, self.max_batch))

    async def _dispatch_loop(self) -> None:
        while True:
            if not self._intake:
                self.pool.slot_freed.clear()
                await self.pool.slot_freed.wait()
                continue
            k = self.batch_size()
            if k <= 0:
                self.pool.slot_freed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(60):  # a backstop, not a poll: wakes are events
                        await self.pool.slot_freed.wait()
                continue
            try:
                if not await self.store.wait_for_work(60):
                    continue
            except Exception as exc:  # the store is away (Redis restarting): wait and ask again
                log.error("dispatch.wait_failed", error=str(exc))
                self.limit.on_congestion("store error")
                await asyncio.sleep(0.5)
                continue
            k = self.batch_size()  # capacity may have changed while we slept
            if k <= 0 or not self._intake:
                continue
            try:
                jobs = await self.store.pop(
                    k, owner=self.owner, lease_s=self.lease_s, workers=self.pool.names_here()
                )
            except Exception as exc:
                log.error("dispatch.pop_failed", error=str(exc))
                self.limit.on_congestion("store error")
                await asyncio.sleep(0.5)
                continue
            self.popped += len(jobs)
            for job in jobs:
                self._log_transition(job)
                self._follow(job)

    def _follow(self, job: Job) -> None:
        queue: asyncio.Queue[Signal | _Stop] = asyncio.Queue()
        self._jobs[job.id] = queue
        self._unplaced += 1
        task = asyncio.create_task(self._run(job, queue), name=f"job-{job.id[:8]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- one job ---------------------------------------------------------------

    def _publish(self, job: Job, kind: JobEventKind = JobEventKind.STATE, **extra: Any) -> None:
        self.bus.publish(
            JobEvent(job_id=job.id, kind=kind, state=job.state, progress=job.progress, **extra)
        )

    @staticmethod
    def _log_transition(job: Job) -> None:
        log.info(
            "job.transition",
            job_id=job.id,
            state=job.state.value,
            worker=job.worker,
            user_id=job.user_id,
            attempts=job.attempts,
            error_code=job.error_code,
        )

    async def _transition(self, job: Job, state: JobState, **changes: Any) -> Job:
        job = await self.store.transition(job.id, state, owner=self.owner, **changes)
        self._log_transition(job)
        self._publish(job)
        return job

    async def _run(self, job: Job, queue: asyncio.Queue[Signal | _Stop]) -> None:
        started = time.monotonic()
        worker: Worker | None = None
        succeeded = False
        try:
            self._publish(job)
            try:
                worker = await self._place(job, queue)
            finally:
                self._unplaced -= 1
            if worker is None:
                return
            succeeded = await self._watch(job, worker, queue)
            if succeeded:
                self.service.observe(worker.kind, time.monotonic() - started)
        except (IllegalTransition, LeaseLost, JobNotFound) as exc:
            # Someone else decided (a cancel, the reaper): stop working on it.
            log.info("job.abandoned", job_id=job.id, reason=str(exc))
            if worker is not None:
                await self._cancel_on(worker, job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("job.crashed", job_id=job.id, error=str(exc))
            with contextlib.suppress(GouacheError):
                await self._transition(
                    job,
                    JobState.FAILED,
                    error_code=ErrorCode.INTERNAL.value,
                    error_message="Something went wrong on our side; the image was refunded.",
                )
        finally:
            running = self.in_flight  # this job included
            self._jobs.pop(job.id, None)
            self.pool.release(job.id, succeeded=succeeded)
            if succeeded:
                self.completed += 1
                self.limit.on_success(running)

    async def _place(self, job: Job, queue: asyncio.Queue[Signal | _Stop]) -> Worker | None:
        """Put the job on a worker, waiting for a slot of the right kind up to the submit timeout."""

        async def sink(_job: Job, signal: Signal) -> None:
            queue.put_nowait(signal)

        deadline = time.monotonic() + self.timeouts.submit
        while True:
            if not self.pool.could_ever_serve(job):
                await self._transition(
                    job,
                    JobState.FAILED,
                    error_code=ErrorCode.WORKER_UNAVAILABLE.value,
                    error_message="No image worker can run this request right now.",
                )
                return None
            try:
                return await self.pool.submit(job, sink)
            except WorkerUnavailable:
                pass
            except Exception as exc:  # the backend refused or was unreachable
                log.warning("job.submit_failed", job_id=job.id, error=str(exc))
                await self._retry_or_fail(
                    job,
                    Failed(
                        ErrorCode.WORKER_ERROR, "The image worker did not answer.", retryable=True
                    ),
                )
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                await self._retry_or_fail(
                    job, Failed(ErrorCode.TIMEOUT, "No worker was free in time.", retryable=True)
                )
                return None
            self.pool.slot_freed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self.pool.slot_freed.wait()
            if not queue.empty() and isinstance(queue.get_nowait(), _Stop):
                return None

    async def _watch(self, job: Job, worker: Worker, queue: asyncio.Queue[Signal | _Stop]) -> bool:  # noqa: PLR0912
        """Follow a placed job's signals to its end; True if it succeeded."""
        stage_timeout = self.timeouts.submit
        while True:
            try:
                async with asyncio.timeout(stage_timeout):
                    signal = await queue.get()
            except TimeoutError:
                self.limit.on_congestion("stage timeout")
                await self._cancel_on(worker, job)
                await self._transition(
                    job,
                    JobState.TIMED_OUT,
                    error_code=ErrorCode.TIMEOUT.value,
                    error_message=f"The image took too long (stage {job.state.value}); it was refunded.",
                )
                return False
            if isinstance(signal, _Stop):
                if signal.reason != "shutdown":
                    await self._cancel_on(worker, job)
                return False
            if isinstance(signal, Accepted):
                job = await self.store.update(
                    job.id, worker=worker.name, external_id=signal.external_id
                )
                stage_timeout = self.timeouts.start
            elif isinstance(signal, Waiting):
                self.limit.on_congestion("backend queue")
                self._publish(
                    job, JobEventKind.POSITION, position=signal.position, message=signal.message
                )
            elif isinstance(signal, Progress):
                changes: dict[str, Any] = {
                    "progress": max(0, min(100, signal.percent)),
                    "worker": worker.name,
                }
                if signal.preview_url:
                    changes["preview_url"] = signal.preview_url
                if signal.external_id:
                    changes["external_id"] = signal.external_id
                if job.state is JobState.SUBMITTED:
                    job = await self.store.transition(
                        job.id, JobState.RUNNING, owner=self.owner, **changes
                    )
                    self._log_transition(job)
                    stage_timeout = self.timeouts.run
                else:
                    job = await self.store.update(job.id, **changes)
                self._publish(
                    job,
                    JobEventKind.PROGRESS,
                    preview=signal.preview,
                    preview_url=signal.preview_url,
                )
            elif isinstance(signal, Generated):
                await self._finish(job, worker, signal)
                return True
            elif isinstance(signal, Failed):
                if signal.code in _CONGESTION_CODES or signal.retryable:
                    self.limit.on_congestion(f"failure: {signal.code}")
                await self._retry_or_fail(job, signal)
                return False

    async def _finish(self, job: Job, worker: Worker, signal: Generated) -> None:
        job = await self._transition(
            job,
            JobState.GENERATED,
            worker=worker.name,
            progress=100,
            external_id=signal.external_id or job.external_id,
            meta={**job.meta, **signal.meta, "worker": worker.name},
        )
        job = await self._transition(job, JobState.STORING)
        async with asyncio.timeout(self.timeouts.store):
            keys = [await self.images.put(data) for data in signal.images]
        if not keys:
            raise GouacheError("the worker reported success without an image")
        await self._transition(job, JobState.SUCCEEDED, results=keys)

    async def _retry_or_fail(self, job: Job, failure: Failed) -> None:
        current = await self.store.get(job.id)
        attempts = current.attempts if current else job.attempts
        state = current.state if current else job.state
        if (
            failure.retryable
            and attempts < self.max_attempts
            and state in (JobState.SUBMITTED, JobState.RUNNING)
        ):
            # The next attempt goes to another worker if any other could take it.
            base = current or job
            avoid = [*base.meta.get("avoid", []), *([base.worker] if base.worker else [])]
            meta = {**base.meta, "avoid": sorted(set(avoid))}
            await self._transition(
                job,
                JobState.QUEUED,
                error_message=failure.message,
                error_detail=failure.detail,
                meta=meta,
            )
            log.info(
                "job.requeued",
                job_id=job.id,
                attempts=attempts,
                reason=failure.code,
                avoid=meta["avoid"],
            )
            return
        code = failure.code if not failure.retryable else ErrorCode.ATTEMPTS_EXHAUSTED.value
        target = JobState.TIMED_OUT if failure.code == ErrorCode.TIMEOUT else JobState.FAILED
        await self._transition(
            job,
            target,
            error_code=code,
            error_message=failure.message,
            error_detail=failure.detail,
        )

    async def _cancel_on(self, worker: Worker, job: Job) -> None:
        try:
            async with asyncio.timeout(10):
                await worker.cancel(job)
        except Exception as exc:
            log.warning(
                "job.cancel_on_worker_failed", job_id=job.id, worker=worker.name, error=str(exc)
            )

    # -- control ---------------------------------------------------------------

    async def cancel(self, job_id: str, *, reason: str = "Cancelled.") -> Job:
        """Cancel a job wherever it is; a running one is stopped on its worker too."""
        job = await self.store.cancel(job_id, reason=reason)
        queue = self._jobs.get(job_id)
        if queue is not None:
            queue.put_nowait(_Stop("cancelled"))
        if job.state is JobState.CANCELED:
            self._log_transition(job)
            self._publish(job)
        return job

    # -- background duties -----------------------------------------------------

    async def _renew_loop(self) -> None:
        interval = max(0.05, self.lease_s / 3)
        while True:
            await asyncio.sleep(interval)
            ids = list(self._jobs)
            if not ids:
                continue
            try:
                kept = set(await self.store.renew(ids, owner=self.owner, lease_s=self.lease_s))
            except Exception as exc:
                log.error("lease.renew_failed", error=str(exc))
                continue
            for job_id in ids:
                if job_id not in kept and job_id in self._jobs:
                    self._jobs[job_id].put_nowait(_Stop("lease lost"))

    async def _reap_loop(self) -> None:
        interval = max(0.05, self.lease_s / 2)
        while True:
            await asyncio.sleep(interval)
            try:
                for job in await self.store.recover_expired(max_attempts=self.max_attempts):
                    self._log_transition(job)
                    self._publish(job)
            except Exception as exc:
                log.error("lease.reap_failed", error=str(exc))

    async def _lag_loop(self) -> None:
        interval = 0.5
        while True:
            before = time.monotonic()
            await asyncio.sleep(interval)
            lag = time.monotonic() - before - interval
            if lag > self.lag_threshold_s:
                self.limit.on_congestion(f"event loop lag {lag * 1000:.0f} ms")
