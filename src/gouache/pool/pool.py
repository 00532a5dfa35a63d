"""The pool: the registry of workers, slot accounting and worker selection.

The pool decides *where* a job runs; the dispatcher decides *when*. Slots are
counted here (not by asking workers) so that two placements in the same
instant can never both take a worker's last slot.

Selection: among workers that are healthy (READY/BUSY), not draining, with a
free slot and that `can_serve` the job, take the least loaded (in-flight /
capacity), ties by name for stable tests. A follow-up (U/V/reroll) can only
run on the account that produced its parent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from dataclasses import replace

import structlog

from gouache.errors import WorkerUnavailable
from gouache.jobs import Job
from gouache.pool.base import JobSink, Worker, WorkerSnapshot, WorkerState

log = structlog.get_logger(__name__)

HEALTHY = frozenset({WorkerState.READY, WorkerState.BUSY})


class Pool:
    """All workers of this process, with their free slots."""

    def __init__(self, workers: Iterable[Worker] = ()) -> None:
        self._workers: dict[str, Worker] = {}
        self._running: dict[str, set[str]] = {}  # worker name -> job ids placed there
        self._placed: dict[str, str] = {}  # job id -> worker name
        self._draining: set[str] = set()
        self._disabled: dict[str, str] = {}  # worker name -> reason (owner's switch)
        self._done_today: dict[str, int] = {}
        self._elsewhere: set[str] = set()  # run by another process (see `WorkerLeases`)
        self.shared = False  # True when `WorkerLeases` splits the workers among processes
        self._given = 0  # placements so far; `_last_given` holds each worker's latest
        self._last_given: dict[str, int] = {}
        self._states: dict[str, WorkerState] = {}  # last state logged per worker
        self.slot_freed = asyncio.Event()
        for worker in workers:
            self.add(worker)

    def add(self, worker: Worker) -> None:
        """Register a worker (before or after start)."""
        if worker.name in self._workers:
            raise ValueError(f"duplicate worker name {worker.name!r}")
        self._workers[worker.name] = worker
        self._running[worker.name] = set()
        self._states[worker.name] = worker.state
        worker.add_listener(self.slot_freed.set)  # a worker that becomes healthy frees slots
        worker.add_listener(lambda: self._log_state(worker))

    def __len__(self) -> int:
        return len(self._workers)

    def _log_state(self, worker: Worker) -> None:
        """One structured event per change of a worker's own state (listeners also fire on capacity)."""
        state = worker.state
        before = self._states.get(worker.name)
        if state is before:
            return
        self._states[worker.name] = state
        try:
            snap = worker.snapshot()
            reason = snap.reason or snap.last_error
        except Exception:  # a half-built worker must not break its own state change
            reason = None
        log.info(
            "worker.state",
            worker=worker.name,
            kind=worker.kind,
            state=state.value,
            previous=before.value if before else None,
            reason=reason,
        )

    def get(self, name: str) -> Worker:
        """The worker with that name (KeyError if unknown)."""
        return self._workers[name]

    @property
    def workers(self) -> list[Worker]:
        """Every registered worker, by name."""
        return [self._workers[n] for n in sorted(self._workers)]

    async def start(self) -> None:
        """Start every worker; a worker that fails to start is logged, not fatal."""
        for worker in self.workers:
            try:
                await worker.start()
            except Exception as exc:
                log.error("worker.start_failed", worker=worker.name, error=str(exc))

    async def aclose(self) -> None:
        """Stop every worker."""
        for worker in self.workers:
            try:
                await worker.aclose()
            except Exception as exc:  # keep closing the others
                log.error("worker.close_failed", worker=worker.name, error=str(exc))

    # -- capacity ----------------------------------------------------------

    def _available(self, worker: Worker) -> bool:
        return (
            worker.state in HEALTHY
            and worker.name not in self._draining
            and worker.name not in self._disabled
            and worker.name not in self._elsewhere
        )

    def set_elsewhere(self, name: str, elsewhere: bool) -> None:
        """Mark a worker as run by another process (no jobs here, no row here) or by this one."""
        if name not in self._workers:
            raise KeyError(name)
        if elsewhere:
            self._elsewhere.add(name)
        else:
            self._elsewhere.discard(name)
        self.slot_freed.set()

    def names_here(self) -> set[str] | None:
        """The workers this process runs, when several processes share them (else None: all)."""
        if not self.shared:
            return None
        return {name for name in self._workers if name not in self._elsewhere}

    def runs_here(self, name: str) -> bool:
        """Whether this process runs the worker (always, without `WorkerLeases`)."""
        return name not in self._elsewhere

    def free_slots_of(self, worker: Worker) -> int:
        """Slots the pool may still fill on ``worker``."""
        if not self._available(worker):
            return 0
        return max(0, worker.capacity - len(self._running[worker.name]))

    def free_slots(self, kind: str | None = None) -> int:
        """Free slots over healthy workers (of one kind, if given)."""
        return sum(
            self.free_slots_of(w) for w in self._workers.values() if kind is None or w.kind == kind
        )

    def capacity(self, kind: str | None = None) -> int:
        """Total slots of healthy workers (of one kind, if given)."""
        return sum(
            w.capacity
            for w in self._workers.values()
            if self._available(w) and (kind is None or w.kind == kind)
        )

    def in_flight(self) -> int:
        """Jobs placed on workers now."""
        return len(self._placed)

    def kinds(self) -> set[str]:
        """The kinds of worker registered."""
        return {w.kind for w in self._workers.values()}

    # -- placement ---------------------------------------------------------

    def _candidates(self, job: Job, exclude: set[str]) -> Iterator[Worker]:
        """Workers that may take ``job`` at all (its pin and backend), by name."""
        pinned = job.pinned_worker
        for name in sorted(self._workers):
            worker = self._workers[name]
            if (pinned is not None and name != pinned) or name in exclude:
                continue
            if job.backend and worker.kind != job.backend:
                continue
            yield worker

    def select(self, job: Job) -> Worker | None:
        """The best worker for ``job`` right now, or None if none has a free slot."""
        # Workers that already failed this job are skipped while another could take it.
        avoid = set(job.meta.get("avoid", ())) if job.pinned_worker is None else set()
        if avoid and not self._serveable(job, exclude=avoid):
            avoid = set()
        best: Worker | None = None
        best_load: tuple[float, int] = (2.0, 0)
        for worker in self._candidates(job, avoid):
            if self.free_slots_of(worker) <= 0 or not worker.can_serve(job):
                continue
            # Least loaded; among equals, the one given work least recently.
            name = worker.name
            load = (len(self._running[name]) / worker.capacity, self._last_given.get(name, 0))
            if best is None or load < best_load:
                best, best_load = worker, load
        return best

    def could_ever_serve(self, job: Job) -> bool:
        """Whether some registered, not-disabled worker could take ``job`` once it has a slot."""
        return self._serveable(job, exclude=set())

    def _serveable(self, job: Job, *, exclude: set[str]) -> bool:
        return any(
            w.name not in self._disabled
            and w.state is not WorkerState.DISABLED
            and w.can_serve(job)
            for w in self._candidates(job, exclude)
        )

    async def submit(self, job: Job, report: JobSink) -> Worker:
        """Place ``job`` on the best worker and submit it; raises `WorkerUnavailable`."""
        worker = self.select(job)
        if worker is None:
            raise WorkerUnavailable("No worker can take this job right now.")
        self._running[worker.name].add(job.id)
        self._placed[job.id] = worker.name
        self._given += 1
        self._last_given[worker.name] = self._given
        try:
            await worker.submit(job, report)
        except BaseException:
            self.release(job.id)
            raise
        log.info("job.placed", job_id=job.id, worker=worker.name, kind=worker.kind)
        return worker

    def release(self, job_id: str, *, succeeded: bool = False) -> None:
        """Free the slot ``job_id`` held (idempotent) and wake the dispatcher."""
        name = self._placed.pop(job_id, None)
        if name is None:
            return
        self._running[name].discard(job_id)
        if succeeded:
            self._done_today[name] = self._done_today.get(name, 0) + 1
        self.slot_freed.set()

    def worker_of(self, job_id: str) -> Worker | None:
        """The worker running ``job_id`` in this process, if any."""
        name = self._placed.get(job_id)
        return self._workers[name] if name else None

    # -- owner controls ----------------------------------------------------

    def disable(self, name: str, reason: str = "disabled by the owner") -> None:
        """Take a worker out of rotation; its running jobs continue."""
        self.get(name)
        self._disabled[name] = reason
        self._draining.discard(name)
        log.warning("worker.disabled", worker=name, reason=reason)

    def enable(self, name: str) -> None:
        """Put a worker back into rotation."""
        self.get(name)
        self._disabled.pop(name, None)
        self._draining.discard(name)
        self.slot_freed.set()
        log.info("worker.enabled", worker=name)

    def drain(self, name: str) -> None:
        """Let a worker finish its jobs but give it no new ones."""
        self.get(name)
        self._draining.add(name)
        log.info("worker.draining", worker=name)

    def reset_daily_counts(self) -> None:
        """Start a new day of `done_today` counters."""
        self._done_today.clear()

    def snapshot(self) -> list[WorkerSnapshot]:
        """One row per worker for `gouache pool status`, with pool-level overrides applied."""
        rows: list[WorkerSnapshot] = []
        for worker in self.workers:
            if worker.name in self._elsewhere:
                continue  # its holder shows it
            snap = worker.snapshot()
            in_flight = len(self._running[worker.name])
            done = max(snap.done_today, self._done_today.get(worker.name, 0))
            if worker.name in self._disabled:
                snap = replace(snap, state=WorkerState.DISABLED, reason=self._disabled[worker.name])
            elif worker.name in self._draining:
                snap = replace(snap, state=WorkerState.DRAINING)
            elif snap.state is WorkerState.READY and in_flight >= worker.capacity:
                snap = replace(snap, state=WorkerState.BUSY)
            rows.append(replace(snap, in_flight=in_flight, done_today=done))
        return rows
