"""Queue throughput, start latency and fairness, end to end through a real store.

    python benchmarks/queue.py --backend sqlite --users 1000 --jobs 50000
    python benchmarks/queue.py --backend redis --users 1000 --jobs 50000
    python benchmarks/queue.py --compare saq,arq --jobs 20000 [--repeat 3]

Jobs come from members with a Zipf-skewed demand (a few ask a lot); one in ten
is VIP (weight 3). ``--producers`` concurrent streams enqueue every job (quota
reserved, durable) while ``--concurrency`` slots run them. Two modes consume:

- ``dispatcher`` (the default, and the one compared): the real `Dispatcher`
  and `Pool`, built as `gouache run` builds them from config.example.toml's
  ``[queue]``, over instant stand-in workers (`gouache_sandbox.instant`) with
  ``--concurrency`` slots in all. Each job walks SUBMITTED → RUNNING →
  GENERATED → STORING → SUCCEEDED with one progress report and a tiny image
  stored, every step persisted.
- ``loop`` (``gouache-loop``): a loop written for this benchmark that pops
  batches into free slots and walks each job through the same states with no
  worker, no image and no adaptive window: what the store alone allows.

Then a trickle: ``--trickle-jobs`` single jobs at a Poisson ``--trickle-rate``,
far below capacity, so a slot is always free. One JSON line per run:

- ``jobs_per_s``: jobs of the loaded phase over first enqueue → last done.
- ``pop_p50_ms``/``pop_p99_ms``: how long a ``Store.pop`` call takes.
- ``start_p50_ms``/``start_p99_ms``: the trickle's enqueue → its worker
  starting the job (a slot is free): what a member of a quiet server feels.
- ``wait_p99_ms``: enqueue → start of every loaded job; ``light_wait_p50_ms``/
  ``light_wait_p99_ms``: the same for jobs of light members (at most
  ``light_max_queued`` queued, this one included) enqueued while some member had
  ``heavy_min_queued`` or more queued: what a member with one or two requests
  feels behind members with hundreds. ``light_jobs`` counts them.
- ``jain_fairness``: Jain's index of service/weight among members that stayed
  backlogged, over consecutive windows in which each is due ~20 jobs, averaged
  with the pops as weights. Near 1 by design of a fair queue; the light
  members' wait is what it cannot show.

``--compare`` runs gouache on Redis and each peer (benchmarks/compare.py) with
the same members, producers and slots, alternating in rounds, then prints a
summary of medians. ``arq`` runs twice: at its defaults and as
``arq-fastpoll``; ``gouache-loop`` may be named as a peer too.
"""

from __future__ import annotations

import sys

# This file is named queue.py (as the issue asks); run as a script, its folder would
# shadow the standard library's `queue`, which asyncio needs. Drop it from the path
# first, and put it back at the end, where `import harness` still finds it.
if sys.path and sys.path[0] and __file__.startswith(sys.path[0]):
    sys.path.append(sys.path.pop(0))

import argparse
import asyncio
import json
import random
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Coroutine, Hashable
from pathlib import Path
from typing import Any, Protocol

import structlog
from harness import (
    EXAMPLE_CONFIG,
    Backlog,
    Load,
    StartingWorker,
    Starts,
    TimedPops,
    dispatcher_settings,
    drop_store,
    example_config,
    open_store,
    percentile,
    produce,
    trickle,
    zipf_users,
)

from gouache.app import App, queue_options
from gouache.jobs import Job, JobEventKind, JobState
from gouache.queue.quota import QuotaPolicy
from gouache.runtime import tune_gc
from gouache.storage.base import Store

STEPS = (JobState.RUNNING, JobState.GENERATED, JobState.STORING, JobState.SUCCEEDED)
TIMEOUT_S = 600.0


class _Counter:
    """Jobs done, with an event at a target (no polling)."""

    def __init__(self) -> None:
        self.count = 0
        self.failed = 0
        self.target = 0
        self.event = asyncio.Event()

    def expect(self, total: int) -> None:
        self.target = total
        self.event.clear()
        if self.count >= total:
            self.event.set()

    def hit(self, ok: bool = True) -> None:
        self.count += 1
        self.failed += not ok
        if self.count >= self.target:
            self.event.set()


class Consumer(Protocol):
    """What takes the jobs out of the store and runs them (one of the two modes)."""

    done: _Counter

    def settings(self) -> dict[str, Any]:
        """Its settings (and counters), for the result line."""
        ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


class DispatcherConsumer:
    """The real `Dispatcher` and `Pool`, as `gouache run` builds them, over instant workers."""

    def __init__(
        self,
        store: Store,
        args: argparse.Namespace,
        images: Path,
        on_start: Callable[[Job], None],
    ) -> None:
        config = example_config(args.config)
        if args.batch is not None:
            config = config.model_copy(
                update={"queue": config.queue.model_copy(update={"max_batch": args.batch})}
            )
        shares = [
            args.concurrency // args.workers + (i < args.concurrency % args.workers)
            for i in range(args.workers)
        ]
        workers = [
            StartingWorker(f"instant-{i}", capacity=n, on_start=on_start)
            for i, n in enumerate(shares)
        ]
        self.app = App.assemble(
            store=store, workers=workers, images_dir=images, **queue_options(config)
        )
        self.done = _Counter()
        self._settings = {
            **dispatcher_settings(self.app.dispatcher),
            "workers": args.workers,
            "worker_steps": workers[0].behaviour.steps,
        }
        self._events = self.app.bus.subscribe(
            lambda e: e.kind is JobEventKind.STATE and e.state.terminal, size=10_000_000
        )
        self._watcher: asyncio.Task[None] | None = None

    def settings(self) -> dict[str, Any]:
        limit = self.app.dispatcher.limit
        # Halvings come from signs of congestion (event-loop lag on a busy machine among them).
        return {**self._settings, "window_end": limit.limit, "window_halvings": limit.decreases}

    async def _watch(self) -> None:
        async for event in self._events:
            self.done.hit(event.state is JobState.SUCCEEDED)

    async def start(self) -> None:
        self._watcher = asyncio.create_task(self._watch())
        await self.app.pool.start()
        await self.app.dispatcher.start()

    async def aclose(self) -> None:
        await self.app.dispatcher.aclose()
        await self.app.pool.aclose()
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.wait([self._watcher])


class LoopConsumer:
    """A loop written for the benchmark: pops into free slots, walks each job's states itself."""

    def __init__(
        self, store: Store, args: argparse.Namespace, on_start: Callable[[Job], None]
    ) -> None:
        self.store = store
        self.concurrency = args.concurrency
        self.batch = args.batch or example_config(args.config).queue.max_batch
        self.on_start = on_start
        self.done = _Counter()
        self.in_flight = 0  # jobs running
        self.reserved = 0  # slots promised to pops on their way
        self.tasks: set[asyncio.Task[None]] = set()
        self.slot_freed = asyncio.Event()
        self.stopping = False
        self._loop: asyncio.Task[None] | None = None

    def settings(self) -> dict[str, Any]:
        return {"max_batch": self.batch}

    async def start(self) -> None:
        self._loop = asyncio.create_task(self._dispatch())

    async def aclose(self) -> None:
        self.stopping = True
        self.slot_freed.set()
        if self._loop is not None:
            await asyncio.wait([self._loop])
        if self.tasks:
            await asyncio.wait(set(self.tasks))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _work(self, job: Job) -> None:
        for state in STEPS:
            await self.store.transition(job.id, state, owner="bench")
        self.in_flight -= 1
        self.slot_freed.set()
        self.done.hit()

    async def _take(self, k: int) -> None:
        """One pop of up to ``k`` jobs into slots reserved for it; start each job."""
        jobs = await self.store.pop(k, owner="bench")
        self.reserved -= k
        self.in_flight += len(jobs)
        if len(jobs) < k:
            self.slot_freed.set()  # the slots it did not fill are free again
        for job in jobs:
            self.on_start(job)
            self._spawn(self._work(job))

    async def _dispatch(self) -> None:
        """Pop into free slots; slots freed while a pop is on its way get a pop of their own."""
        while not self.stopping:
            free = self.concurrency - self.in_flight - self.reserved
            if free <= 0:
                self.slot_freed.clear()
                await self.slot_freed.wait()
                continue
            if not await self.store.wait_for_work(0.5):
                continue
            k = min(free, self.batch)
            self.reserved += k
            self._spawn(self._take(k))
            # The next pop waits for a slot to free: pops stay few and large.
            self.slot_freed.clear()
            await self.slot_freed.wait()


async def run(args: argparse.Namespace, load: Load, mode: str) -> dict[str, Any]:
    """One run of gouache in ``mode`` (dispatcher or loop); one result line's fields."""
    jobs = len(load.users)
    total = jobs + load.trickle_jobs
    # SQLite queues a job in memory as enqueue is called (its write commits with
    # the pop's); Redis when the script runs, whose reply comes before any later pop's.
    backlog = Backlog(load, early=args.backend == "sqlite")
    starts = Starts()
    loaded: dict[str, int] = {}  # job id -> n, for jobs of the loaded phase

    def on_start(job: Job) -> None:
        n = loaded.pop(job.id, None)
        if n is None:
            starts.mark(job.id)
        else:
            backlog.started(n)

    with tempfile.TemporaryDirectory() as tmp:
        policy = QuotaPolicy("UTC", default_limit=total)
        store = await open_store(args.backend, Path(tmp), policy, args.redis_url, lease_s=600)
        timed = TimedPops(store)
        consumer: Consumer = (
            DispatcherConsumer(store, args, Path(tmp) / "images", on_start)
            if mode == "dispatcher"
            else LoopConsumer(store, args, on_start)
        )
        try:
            await consumer.start()
            tune_gc()  # as `gouache run` does once started

            async def enqueue(n: int) -> None:
                user = load.users[n]
                job = Job(user_id=user, prompt="bench", weight=load.weights[user])
                loaded[job.id] = n
                await store.enqueue(job, daily_limit=total)

            async def enqueue_single(i: int) -> Hashable:
                job = Job(user_id=len(load.weights) + i, prompt="bench")  # a member of its own
                await store.enqueue(job, daily_limit=total)
                return job.id

            consumer.done.expect(jobs)
            started = time.perf_counter()
            await produce(load, backlog, enqueue)
            await asyncio.wait_for(consumer.done.event.wait(), TIMEOUT_S)
            seconds = time.perf_counter() - started
            consumer.done.expect(total)
            start = await trickle(load, starts, enqueue_single)
            await asyncio.wait_for(consumer.done.event.wait(), TIMEOUT_S)
            await consumer.aclose()
            counts = await store.count_by_state()
        finally:
            await store.aclose()
            await drop_store(store)

    assert consumer.done.failed == 0, counts
    assert counts.get(JobState.SUCCEEDED) == total, counts
    return {
        "name": "gouache" if mode == "dispatcher" else "gouache-loop",
        "mode": mode,
        "backend": args.backend,
        **load.settings(),
        **consumer.settings(),
        "seconds": round(seconds, 3),
        "jobs_per_s": round(jobs / seconds, 1),
        "pop_p50_ms": percentile(timed.samples, 0.5),
        "pop_p99_ms": percentile(timed.samples, 0.99),
        **start,
        **backlog.result(),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def build_load(args: argparse.Namespace) -> Load:
    """The members, streams and slots every system of a run is given."""
    users = zipf_users(args.users, args.jobs, args.zipf, random.Random(args.seed))
    weights: dict[Hashable, float] = {u: (3.0 if u % 10 == 0 else 1.0) for u in range(args.users)}
    return Load(
        members=args.users,
        users=users,
        weights=weights,
        producers=args.producers,
        concurrency=args.concurrency,
        trickle_jobs=args.trickle_jobs,
        trickle_rate=args.trickle_rate,
        heavy=args.heavy,
        seed=args.seed,
    )


def run_system(name: str, args: argparse.Namespace, load: Load) -> dict[str, Any]:
    """One run of ``name`` (gouache, gouache-loop or a peer of compare.py)."""
    if name == "gouache":
        return asyncio.run(run(args, load, "dispatcher"))
    if name == "gouache-loop":
        return asyncio.run(run(args, load, "loop"))
    import compare

    return compare.run(name, load, args.redis_url)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["sqlite", "redis"], default="sqlite")
    parser.add_argument("--mode", choices=["dispatcher", "loop"], default="dispatcher")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=50000)
    parser.add_argument("--concurrency", type=int, default=64, help="slots, for every system")
    parser.add_argument(
        "--producers", type=int, default=16, help="concurrent enqueue streams, for every system"
    )
    parser.add_argument("--workers", type=int, default=1, help="instant workers sharing the slots")
    parser.add_argument(
        "--config", type=Path, default=EXAMPLE_CONFIG, help="the [queue] settings gouache runs with"
    )
    parser.add_argument(
        "--batch", type=int, default=None, help="largest pop (default: the config's max_batch)"
    )
    parser.add_argument("--trickle-jobs", type=int, default=300)
    parser.add_argument("--trickle-rate", type=float, default=100.0, help="jobs/s")
    parser.add_argument(
        "--heavy", type=int, default=100, help="queued jobs that make a heavy member"
    )
    parser.add_argument("--zipf", type=float, default=1.1)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--compare",
        default="",
        help="comma list of peers: saq, arq (and arq-fastpoll), gouache-loop",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="with --compare: rounds; the summary has medians"
    )
    args = parser.parse_args()
    # Logs go to stderr so stdout carries only the JSON result lines.
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(30),  # warnings and up
    )
    load = build_load(args)
    if not args.compare:
        print(
            json.dumps(
                run_system("gouache" if args.mode == "dispatcher" else "gouache-loop", args, load)
            ),
            flush=True,
        )
        return

    args.backend = "redis"
    peers: list[str] = []
    for peer in (p.strip() for p in args.compare.split(",")):
        for name in ["arq", "arq-fastpoll"] if peer == "arq" else [peer] if peer else []:
            if name not in peers:
                peers.append(name)
    ours = "gouache" if args.mode == "dispatcher" else "gouache-loop"
    peers = [p for p in peers if p != ours]
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in [ours, *peers]}
    ratios: dict[str, list[float]] = {peer: [] for peer in peers}
    # Rounds alternate gouache and each peer, so a drift in the machine's speed
    # (other work, CPU frequency) touches both sides of each ratio alike.
    for round_ in range(1, args.repeat + 1):
        result = run_system(ours, args, load)
        result["round"] = round_
        rows[ours].append(result)
        print(json.dumps(result), flush=True)
        for peer in peers:
            theirs = run_system(peer, args, load)
            theirs["round"] = round_
            theirs["gouache_jobs_per_s"] = result["jobs_per_s"]
            theirs["gouache_ratio"] = round(result["jobs_per_s"] / theirs["jobs_per_s"], 2)
            ratios[peer].append(theirs["gouache_ratio"])
            rows[peer].append(theirs)
            print(json.dumps(theirs), flush=True)

    def median(name: str, key: str) -> float | None:
        values = [r[key] for r in rows[name] if r.get(key) is not None]
        return round(statistics.median(values), 3) if values else None

    summary: dict[str, Any] = {
        "summary": "median of rounds",
        "rounds": args.repeat,
        "gouache": ours,
        **load.settings(),
    }
    for name in rows:
        for key in ("jobs_per_s", "start_p99_ms", "light_wait_p99_ms", "wait_p99_ms"):
            summary[f"{name}_{key}"] = median(name, key)
    for peer, values in ratios.items():
        summary[f"ratio_{peer}"] = round(statistics.median(values), 2)
        summary[f"ratio_{peer}_min"] = min(values)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
