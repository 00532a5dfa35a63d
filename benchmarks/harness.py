"""What the benchmarks share: the load, the stores, the settings `gouache run` has, the clocks.

Not a benchmark (it prints nothing). ``queue.py``, ``compare.py`` and
``e2e.py`` import it; run as scripts they first drop their own folder from the
front of ``sys.path`` (``queue.py`` would shadow the standard library's
``queue``) and append it at the end, so ``import harness`` still finds it.
"""

from __future__ import annotations

import asyncio
import random
import time
import tomllib
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gouache.config import Config, QueueConfig
from gouache.jobs import Job
from gouache.pool.base import JobSink
from gouache.queue.dispatcher import Dispatcher
from gouache.queue.fairness import FairnessMeter
from gouache.queue.quota import QuotaPolicy
from gouache.storage.base import Store
from gouache.storage.sqlite import SQLiteStore
from gouache_sandbox.instant import InstantWorker

EXAMPLE_CONFIG = Path(__file__).resolve().parent.parent / "config.example.toml"


def zipf_users(users: int, jobs: int, s: float, rng: random.Random, first: int = 0) -> list[int]:
    """Draw the member of each job: the member of rank ``r`` with weight 1 / r**s.

    Ids run from ``first``; they are shuffled, so an id does not reveal its rank.
    """
    weights = [1 / (rank**s) for rank in range(1, users + 1)]
    ids = list(range(first, first + users))
    rng.shuffle(ids)
    return [ids[i] for i in rng.choices(range(users), weights=weights, k=jobs)]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by rank, rounded to µs; None without samples."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))], 3)


def example_config(path: Path = EXAMPLE_CONFIG) -> Config:
    """A `Config` with the ``[queue]`` section of ``path`` (by default config.example.toml).

    Only ``[queue]`` is read: it holds every setting of the queue and the
    dispatcher, and the other sections name secrets and servers a benchmark
    does not have. Pass the result to `gouache.app.queue_options`.
    """
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    return Config(queue=QueueConfig.model_validate(raw.get("queue", {})))


def dispatcher_settings(dispatcher: Dispatcher) -> dict[str, Any]:
    """The dispatcher's settings, for a result line (read off the object, not restated)."""
    return {
        "max_batch": dispatcher.max_batch,
        "window_initial": dispatcher.limit.value,
        "window_max": dispatcher.limit.maximum,
        "lease_s": dispatcher.lease_s,
    }


async def open_store(
    backend: str, tmp: Path, policy: QuotaPolicy, redis_url: str, **options: Any
) -> Store:
    """A started store: SQLite in ``tmp``, or Redis under a fresh key prefix."""
    if backend == "sqlite":
        store: Store = SQLiteStore(tmp / "bench.db", policy=policy, **options)
    else:
        from gouache.storage.redis import RedisStore

        prefix = f"bench-{random.getrandbits(40):x}"
        store = RedisStore(redis_url, prefix=prefix, policy=policy, **options)
    await store.start()
    return store


async def drop_store(store: Store) -> None:
    """Delete a Redis run's keys (its prefix is unique), so runs do not pile up in Redis."""
    from gouache.storage.redis import RedisStore

    if isinstance(store, RedisStore):
        await store.drop()


class TimedPops:
    """Wraps a store's ``pop`` to record how long each call takes (ms)."""

    def __init__(self, store: Store) -> None:
        self.samples: list[float] = []
        original = store.pop

        async def pop(k: int, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await original(k, **kwargs)
            finally:
                self.samples.append((time.perf_counter() - t0) * 1000)

        store.pop = pop  # type: ignore[method-assign]


class Starts:
    """When each job reached its worker (``perf_counter``), by key; lets a caller wait for keys."""

    def __init__(self) -> None:
        self.at: dict[Hashable, float] = {}
        self._changed = asyncio.Event()

    def mark(self, key: Hashable) -> None:
        """The job ``key`` starts now."""
        self.at[key] = time.perf_counter()
        self._changed.set()

    async def wait_for(self, keys: Sequence[Hashable], timeout: float) -> None:
        """Return once every key has started; TimeoutError after ``timeout``."""
        async with asyncio.timeout(timeout):
            while not all(k in self.at for k in keys):
                self._changed.clear()
                await self._changed.wait()


class StartingWorker(InstantWorker):
    """An `InstantWorker` that tells ``on_start`` when a job reaches it (the member's job starts)."""

    def __init__(self, name: str, *, capacity: int, on_start: Callable[[Job], None]) -> None:
        super().__init__(name, capacity=capacity)
        self.behaviour.steps = 1  # one progress report: the job passes through RUNNING
        self._on_start = on_start

    async def submit(self, job: Job, report: JobSink) -> None:
        self._on_start(job)
        await super().submit(job, report)


@dataclass
class Load:
    """What every system of a comparison is given alike: the members, the streams, the slots."""

    members: int  # how many members may ask
    users: list[int]  # the member of each job, in draw order (job n belongs to users[n])
    weights: dict[Hashable, float]  # each member's scheduling weight (VIPs 3)
    producers: int  # concurrent enqueue streams (stream i sends jobs i, i + producers, …)
    concurrency: int  # slots that run jobs
    trickle_jobs: int = 300  # jobs of the start-latency phase, one at a time
    trickle_rate: float = 100.0  # their mean arrival rate (jobs/s), far below any capacity
    heavy: int = 100  # a member with this many queued is heavy
    light: int = 2  # a member with at most this many queued (this job included) is light
    seed: int = 7

    def settings(self) -> dict[str, Any]:
        """The settings a result line prints."""
        return {
            "users": self.members,
            "jobs": len(self.users),
            "concurrency": self.concurrency,
            "producers": self.producers,
            "trickle_jobs": self.trickle_jobs,
            "trickle_rate": self.trickle_rate,
            "light_max_queued": self.light,
            "heavy_min_queued": self.heavy,
        }


@dataclass
class _Pending:
    t0: float
    user: int
    light: bool
    counted: bool  # already told to the fairness meter


@dataclass
class Backlog:
    """Wait (enqueue → start) of every job of the loaded phase, and what light members feel.

    A job is *light* when its member has at most ``load.light`` jobs queued
    (this one included) as it is enqueued while some member has at least
    ``load.heavy`` queued. Also feeds a `FairnessMeter` (a job is served as it
    starts): with ``early`` the meter counts a job as queued before the
    enqueue call (SQLite queues it in memory as the call is made), otherwise
    when the call returns or the job starts, whichever comes first.
    """

    load: Load
    early: bool = False
    meter: FairnessMeter = field(init=False)
    waits: list[float] = field(default_factory=list)
    light_waits: list[float] = field(default_factory=list)
    queued: Counter[int] = field(default_factory=Counter)
    heavy_users: set[int] = field(default_factory=set)
    heavy_max: int = 0
    _pending: dict[int, _Pending] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.meter = FairnessMeter(self.load.weights)

    def enqueuing(self, n: int) -> None:
        """Job ``n`` is about to be enqueued."""
        user = self.load.users[n]
        self.queued[user] += 1
        count = self.queued[user]
        if count >= self.load.heavy:
            self.heavy_users.add(user)
            self.heavy_max = max(self.heavy_max, count)
        light = count <= self.load.light and bool(self.heavy_users)
        self._pending[n] = _Pending(time.perf_counter(), user, light, counted=self.early)
        if self.early:
            self.meter.enqueued(user)

    def enqueued(self, n: int) -> None:
        """The enqueue call of job ``n`` returned."""
        pending = self._pending.get(n)
        if pending is not None and not pending.counted:
            pending.counted = True
            self.meter.enqueued(pending.user)

    def started(self, n: int) -> None:
        """Job ``n`` reached its worker."""
        now = time.perf_counter()
        pending = self._pending.pop(n)
        if not pending.counted:
            self.meter.enqueued(pending.user)
        self.meter.popped(pending.user)
        self.queued[pending.user] -= 1
        if self.queued[pending.user] < self.load.heavy:
            self.heavy_users.discard(pending.user)
        wait = (now - pending.t0) * 1000
        self.waits.append(wait)
        if pending.light:
            self.light_waits.append(wait)

    def result(self) -> dict[str, Any]:
        """The fields this phase adds to a result line."""
        self.meter.close()
        jain, jain_min = self.meter.index()
        return {
            "wait_p50_ms": percentile(self.waits, 0.5),
            "wait_p99_ms": percentile(self.waits, 0.99),
            "light_wait_p50_ms": percentile(self.light_waits, 0.5),
            "light_wait_p99_ms": percentile(self.light_waits, 0.99),
            "light_jobs": len(self.light_waits),
            "heavy_queued_max": self.heavy_max,
            "jain_fairness": round(jain, 4),
            "jain_fairness_min": round(jain_min, 4),
        }


async def produce(load: Load, backlog: Backlog, enqueue: Callable[[int], Awaitable[Any]]) -> None:
    """Enqueue every job of ``load`` from ``load.producers`` concurrent streams."""

    async def stream(first: int) -> None:
        for n in range(first, len(load.users), load.producers):
            backlog.enqueuing(n)
            await enqueue(n)
            backlog.enqueued(n)

    await asyncio.gather(*(stream(i) for i in range(load.producers)))


async def trickle(
    load: Load,
    starts: Starts,
    enqueue: Callable[[int], Awaitable[Hashable]],
    *,
    timeout: float = 120.0,
) -> dict[str, Any]:
    """Start latency while a slot is free: ``load.trickle_jobs`` jobs, one at a time.

    Arrivals are Poisson at ``load.trickle_rate`` (the same gaps for every
    system); each job belongs to a member with nothing else queued.
    ``enqueue(i)`` enqueues the i-th and returns the key its start is marked
    with. Returns start_p50_ms and start_p99_ms: enqueue call → worker start.
    """
    rng = random.Random(load.seed)
    sent: dict[Hashable, float] = {}
    for i in range(load.trickle_jobs):
        t0 = time.perf_counter()
        key = await enqueue(i)
        sent[key] = t0
        await asyncio.sleep(rng.expovariate(load.trickle_rate))
    await starts.wait_for(list(sent), timeout)
    samples = [(starts.at[k] - t0) * 1000 for k, t0 in sent.items()]
    return {
        "start_p50_ms": percentile(samples, 0.5),
        "start_p99_ms": percentile(samples, 0.99),
    }
