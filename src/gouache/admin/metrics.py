"""Prometheus metrics of one process: jobs, queue, wait and run times, workers, Discord 429s.

Each `Metrics` has its own `CollectorRegistry` (no process-global state, so
tests can run several apps). Sources:

* job outcomes, wait and run times — the event bus: on a terminal state the
  job is read once from the store for its worker and timestamps;
* queue depth and jobs by live state — the store, read by `refresh` just
  before each scrape (`render` does both);
* workers — the pool's snapshot at scrape time, plus gateway figures
  (reconnects, heartbeat) read from the worker objects when they have them;
* Discord 429s — discord.py retries them itself and only logs a warning, so a
  logging handler on the ``discord`` logger counts those warnings; workers that
  count their own 429s (an attribute ``rate_limited``) are added per worker;
* refused requests — `Requests.on_refused`, labelled by error code
  (``quota_exceeded``, ``user_blocked``, ``queue_limit``, ...).

Metrics are per process: with several processes on one Redis, scrape each;
`gouache pool status` is the place for the merged view.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gouache.admin.port import ProcessPort
from gouache.admin.status import gateway_figures
from gouache.events import EventBus, Subscription
from gouache.jobs import Job, JobEventKind, JobState
from gouache.pool.base import Worker, WorkerSnapshot, WorkerState
from gouache.storage.base import Store

_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)
_LIVE_STATES = [s for s in JobState if not s.terminal]


class _Live(Collector):
    """Gauges read at scrape time from the pool and from the last `Metrics.refresh`."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.m
        depth = GaugeMetricFamily("gouache_queue_depth", "Jobs waiting in the queue")
        depth.add_metric([], float(m.depth))
        yield depth
        live = GaugeMetricFamily(
            "gouache_jobs_current",
            "Jobs in each non-terminal state (all processes)",
            labels=["state"],
        )
        for job_state in _LIVE_STATES:
            live.add_metric([job_state.value], float(m.counts.get(job_state, 0)))
        yield live
        in_flight = GaugeMetricFamily("gouache_jobs_in_flight", "Jobs this process is running")
        in_flight.add_metric([], float(m.in_flight()))
        yield in_flight

        state = GaugeMetricFamily(
            "gouache_worker_state",
            "1 for each worker's current state",
            labels=["worker", "kind", "state"],
        )
        slots = GaugeMetricFamily(
            "gouache_worker_in_flight", "Jobs on each worker", labels=["worker"]
        )
        capacity = GaugeMetricFamily(
            "gouache_worker_capacity", "Slots of each worker", labels=["worker"]
        )
        done = GaugeMetricFamily(
            "gouache_worker_done_today", "Jobs each worker finished today", labels=["worker"]
        )
        latency = GaugeMetricFamily(
            "gouache_worker_latency_seconds", "Heartbeat / health round trip", labels=["worker"]
        )
        heartbeat = GaugeMetricFamily(
            "gouache_gateway_heartbeat_seconds", "Gateway heartbeat round trip", labels=["worker"]
        )
        reconnects = CounterMetricFamily(
            "gouache_gateway_reconnects", "Gateway reconnects since start", labels=["worker"]
        )
        worker_429 = CounterMetricFamily(
            "gouache_worker_rate_limited",
            "429 answers a worker got from its backend",
            labels=["worker"],
        )
        workers = m.workers()
        for row in m.snapshot():
            for s in WorkerState:
                state.add_metric([row.name, row.kind, s.value], 1.0 if row.state is s else 0.0)
            slots.add_metric([row.name], float(row.in_flight))
            capacity.add_metric([row.name], float(row.capacity))
            done.add_metric([row.name], float(row.done_today))
            if row.latency_ms is not None:
                latency.add_metric([row.name], row.latency_ms / 1000)
            worker = workers.get(row.name)
            if worker is None:
                continue
            figures = gateway_figures(worker)
            if figures["heartbeat_ms"] is not None:
                heartbeat.add_metric([row.name], figures["heartbeat_ms"] / 1000)
            if figures["reconnects"] is not None:
                reconnects.add_metric([row.name], figures["reconnects"])
            limited = getattr(worker, "rate_limited", None)
            if isinstance(limited, int | float) and not isinstance(limited, bool):
                worker_429.add_metric([row.name], float(limited))
        yield from (state, slots, capacity, done, latency, heartbeat, reconnects, worker_429)


# discord.py's warnings, one per 429 it got (the REST client's and the webhook
# adapter's); its "global rate limit" warning follows one of these, so is not counted.
_429_WARNINGS = ("responded with 429", "is rate limited. Retrying")


class _RateLimitLog(logging.Handler):
    """Counts discord.py's 429 warnings (it waits and retries 429s itself)."""

    def __init__(self, counter: Counter) -> None:
        super().__init__(logging.WARNING)
        self.counter = counter

    def emit(self, record: logging.LogRecord) -> None:
        message = str(record.msg)
        if any(marker in message for marker in _429_WARNINGS):
            self.counter.inc()


class Metrics:
    """The metrics of one app (see the module docstring for where each comes from)."""

    def __init__(
        self,
        store: Store,
        bus: EventBus,
        *,
        snapshot: Callable[[], list[WorkerSnapshot]] = list,
        workers: Callable[[], dict[str, Worker]] = dict,
        in_flight: Callable[[], int] = lambda: 0,
    ) -> None:
        self.store = store
        self.bus = bus
        self.snapshot = snapshot
        self.workers = workers
        self.in_flight = in_flight
        self.depth = 0
        self.counts: dict[JobState, int] = {}
        self.registry = CollectorRegistry()
        self.jobs = Counter(
            "gouache_jobs",
            "Jobs that reached a terminal state, by state and backend kind",
            ["state", "backend"],
            registry=self.registry,
        )
        self.wait = Histogram(
            "gouache_job_wait_seconds",
            "From enqueue to a worker (first pop)",
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.run = Histogram(
            "gouache_job_run_seconds",
            "From a worker to the end",
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "gouache_discord_rate_limited",
            "429 answers Discord gave the bot (discord.py retried them)",
            registry=self.registry,
        )
        self.refusals = Counter(
            "gouache_refusals",
            "Requests refused at intake, by reason (quota_exceeded, user_blocked, ...)",
            ["reason"],
            registry=self.registry,
        )
        self.registry.register(_Live(self))
        self._handler = _RateLimitLog(self.rate_limited)
        self._task: asyncio.Task[None] | None = None
        self._sub: Subscription | None = None

    @classmethod
    def for_port(cls, port: ProcessPort) -> Metrics:
        """Metrics wired to one process's store, bus, pool and in-flight count."""
        pool = port.pool
        return cls(
            port.store,
            port.bus,
            snapshot=pool.snapshot,
            workers=lambda: {w.name: w for w in pool.workers},
            in_flight=port.in_flight,
        )

    async def start(self) -> None:
        """Follow the event bus and discord.py's rate-limit warnings."""
        logging.getLogger("discord").addHandler(self._handler)
        self._sub = self.bus.subscribe(lambda e: e.kind is JobEventKind.STATE and e.state.terminal)
        self._task = asyncio.create_task(self._follow(self._sub), name="metrics")

    async def aclose(self) -> None:
        """Stop following."""
        logging.getLogger("discord").removeHandler(self._handler)
        if self._sub is not None:
            self._sub.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _follow(self, sub: Subscription) -> None:
        async for event in sub:
            try:
                job = await self.store.get(event.job_id)
            except Exception:  # the store is briefly away: lose one sample, not the follower
                continue
            if job is not None:
                self.observe(job)

    def backend_of(self, job: Job) -> str:
        """The kind of worker that ran ``job`` (or was asked for), else ``none``."""
        worker = self.workers().get(job.worker) if job.worker is not None else None
        if worker is not None:
            return worker.kind
        return job.backend or "none"

    def observe(self, job: Job) -> None:
        """Count one finished job and its wait and run times."""
        self.jobs.labels(state=job.state.value, backend=self.backend_of(job)).inc()
        if job.started_at is not None:
            self.wait.observe(max(0.0, (job.started_at - job.created_at).total_seconds()))
            if job.finished_at is not None:
                self.run.observe(max(0.0, (job.finished_at - job.started_at).total_seconds()))

    def refused(self, reason: str) -> None:
        """Count a refused request (quota, banned, queue limit, bad parameters...)."""
        self.refusals.labels(reason=reason).inc()

    async def refresh(self) -> None:
        """Read the store-backed gauges (queue depth, jobs by live state)."""
        self.depth = await self.store.depth()
        self.counts = await self.store.count_by_state()

    async def render(self) -> bytes:
        """Refresh, then the text exposition format."""
        await self.refresh()
        return generate_latest(self.registry)


def sample(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float | None:
    """The current value of one sample (for tests and the status page)."""
    value: Any = metrics.registry.get_sample_value(name, labels or {})
    return float(value) if value is not None else None
