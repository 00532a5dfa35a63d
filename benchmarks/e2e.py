"""The seed load through the whole back end: request rules, store, dispatcher, pool.

    python benchmarks/e2e.py --users 10000 --jobs 300000 --backend sqlite
    python benchmarks/e2e.py --users 10000 --jobs 300000 --backend redis

10,000 members send 300,000 /imagine requests with a Zipf-skewed demand
(a few members ask hundreds of times) through `Requests.imagine` (parameter
parsing, tiers, the daily limit of 100, the per-member queue cap), and the
real `Dispatcher` runs them on a pool of instant stand-in workers. Requests
past the daily limit are refused, as in production. Prints one JSON line:
seconds, jobs_per_s (completed), refused, jain_fairness (among backlogged
members), over_limit (members who got more than their limit: must be 0),
dispatch_p99_ms (store pop latency) and idle_cpu_percent (the whole process,
measured after the load while everything waits for work).
"""

from __future__ import annotations

import sys

# benchmarks/queue.py would shadow the standard library's `queue` (asyncio needs it).
if sys.path and sys.path[0] and __file__.startswith(sys.path[0]):
    sys.path.pop(0)

import argparse
import asyncio
import json
import random
import resource
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import structlog

from gouache.bot.service import RequestContext, Requests, Tier
from gouache.errors import QueueLimitExceeded, QuotaExceeded
from gouache.events import EventBus
from gouache.jobs import JobEventKind, JobState
from gouache.pool.pool import Pool
from gouache.queue.dispatcher import AdaptiveLimit, Dispatcher
from gouache.queue.fairness import FairnessMeter
from gouache.queue.quota import QuotaPolicy
from gouache.sandbox.instant import InstantWorker
from gouache.storage.base import Store
from gouache.storage.images import ImageStore
from gouache.storage.sqlite import SQLiteStore

VIP_ROLE = 1


class TimedPops:
    """Wraps a store's ``pop`` to record its latency (the dispatcher's view of the store)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.samples: list[float] = []
        original = store.pop

        async def pop(k: int, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await original(k, **kwargs)
            finally:
                self.samples.append((time.perf_counter() - t0) * 1000)

        store.pop = pop  # type: ignore[method-assign]


def zipf(users: int, jobs: int, s: float, rng: random.Random) -> list[int]:
    weights = [1 / (rank**s) for rank in range(1, users + 1)]
    ids = list(range(1, users + 1))
    rng.shuffle(ids)
    return [ids[i] for i in rng.choices(range(users), weights=weights, k=jobs)]


async def open_store(args: argparse.Namespace, tmp: Path, policy: QuotaPolicy) -> Store:
    if args.backend == "sqlite":
        store: Store = SQLiteStore(tmp / "e2e.db", policy=policy, lease_s=600)
    else:
        from gouache.storage.redis import RedisStore

        store = RedisStore(
            args.redis_url, prefix=f"e2e-{random.getrandbits(40):x}", policy=policy, lease_s=600
        )
    await store.start()
    return store


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    draws = zipf(args.users, args.jobs, args.zipf, rng)
    vip = {u for u in range(1, args.users + 1) if u % 20 == 0}
    weights: dict[Any, float] = {u: (3.0 if u in vip else 1.0) for u in range(1, args.users + 1)}
    policy = QuotaPolicy("UTC", default_limit=args.daily_limit)
    with tempfile.TemporaryDirectory() as tmp:
        store = await open_store(args, Path(tmp), policy)
        timed = TimedPops(store)
        workers = [InstantWorker(f"w{i}", capacity=args.slots) for i in range(args.workers)]
        for w in workers:
            w.behaviour.steps = 1
        pool = Pool(workers)
        await pool.start()
        bus = EventBus()
        dispatcher = Dispatcher(
            store,
            pool,
            ImageStore(Path(tmp) / "img"),
            bus,
            max_batch=64,
            lease_s=600,
            limit=AdaptiveLimit(initial=64, maximum=1024),
        )
        requests = Requests(
            store=store,
            policy=policy,
            max_queued=args.max_queued,
            tiers=[Tier("default"), Tier("vip", weight=3, role_ids=frozenset({VIP_ROLE}))],
            backends=pool.kinds,
            eta=dispatcher.eta,
            cancel_job=dispatcher.cancel,
        )
        meter = FairnessMeter(weights)
        completed: Counter[int] = Counter()
        refused = Counter[str]()
        accepted = 0
        finished = asyncio.Event()
        producers_done = asyncio.Event()
        events = bus.subscribe(size=10_000_000)
        owner_of: dict[str, int] = {}

        async def watch() -> None:
            done = 0
            async for event in events:
                if event.kind is not JobEventKind.STATE:
                    continue
                if event.state is JobState.SUBMITTED:
                    meter.popped(owner_of[event.job_id])
                elif event.state.terminal:
                    done += 1
                    if event.state is JobState.SUCCEEDED:
                        completed[owner_of.pop(event.job_id)] += 1
                    if producers_done.is_set() and done >= accepted:
                        finished.set()

        async def produce(share: list[int]) -> None:
            nonlocal accepted
            for user in share:
                ctx = RequestContext(
                    user_id=user, role_ids=frozenset({VIP_ROLE}) if user in vip else frozenset()
                )
                try:
                    receipt = await requests.imagine(ctx, f"benchmark {user} --ar 3:2")
                except QuotaExceeded:
                    refused["quota"] += 1
                    continue
                except QueueLimitExceeded:
                    refused["queue_cap"] += 1
                    continue
                owner_of[receipt.job.id] = user
                meter.enqueued(user)
                accepted += 1

        watcher = asyncio.create_task(watch())
        await dispatcher.start()
        started = time.perf_counter()
        shares = [draws[i :: args.producers] for i in range(args.producers)]
        await asyncio.gather(*(produce(s) for s in shares))
        producers_done.set()
        if sum(completed.values()) >= accepted:
            finished.set()
        await asyncio.wait_for(finished.wait(), args.timeout)
        seconds = time.perf_counter() - started
        meter.close()

        # Idle: everything is up and waiting for work.
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        await asyncio.sleep(args.idle_seconds)
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        idle = ((cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)) / (
            time.perf_counter() - t0
        )

        watcher.cancel()
        await dispatcher.aclose()
        await pool.aclose()
        await store.aclose()
        if args.backend == "redis":
            from gouache.storage.redis import RedisStore

            assert isinstance(store, RedisStore)
            await store.drop()  # the run's prefix is unique: leave nothing behind

    over = sum(1 for u, n in completed.items() if n > policy.limit_for(tier_limit=None))
    jain, jain_min = meter.index()
    samples = sorted(timed.samples)
    return {
        "backend": args.backend,
        "users": args.users,
        "requests": args.jobs,
        "accepted": accepted,
        "refused": dict(refused),
        "completed": sum(completed.values()),
        "seconds": round(seconds, 2),
        "jobs_per_s": round(sum(completed.values()) / seconds, 1),
        "jain_fairness": round(jain, 4),
        "jain_fairness_min": round(jain_min, 4),
        "over_limit": over,
        "dispatch_p50_ms": round(statistics.median(samples), 3),
        "dispatch_p99_ms": round(samples[int(len(samples) * 0.99)], 3),
        "idle_cpu_percent": round(idle * 100, 2),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["sqlite", "redis"], default="sqlite")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--jobs", type=int, default=300_000)
    parser.add_argument("--daily-limit", type=int, default=100)
    parser.add_argument("--max-queued", type=int, default=50)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--slots", type=int, default=16, help="capacity of each stand-in worker")
    parser.add_argument("--producers", type=int, default=32)
    parser.add_argument("--zipf", type=float, default=1.1)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(30),  # warnings and up
    )
    print(json.dumps(asyncio.run(run(args))), flush=True)


if __name__ == "__main__":
    main()
