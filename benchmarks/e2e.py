"""The seed load through the whole back end: request rules, store, dispatcher, pool.

    python benchmarks/e2e.py --users 10000 --jobs 300000 --backend sqlite
    python benchmarks/e2e.py --users 10000 --jobs 300000 --backend redis

10,000 members send 300,000 /imagine requests with a Zipf-skewed demand
(a few members ask hundreds of times) through `Requests.imagine` (parameter
parsing, tiers, the daily limit, the per-member queue cap), and the real
`Dispatcher` runs them on a pool of instant stand-in workers. Everything is
built by `App.assemble` with the ``[queue]`` settings of config.example.toml
(``--config``), as `gouache run` builds it: the same tiers, limits, timeouts,
largest batch and adaptive window. One in twenty members holds the role of the
heaviest tier (VIP). Prompt intake (translation, banned words, the per-member
request rate) is not in the path: it would refuse most of this load at the door.
Requests past a daily limit are refused, as in production.

Prints one JSON line: the settings it ran with; seconds; jobs_per_s
(completed) and requests_per_s (requests answered, accepted or refused, over
the same time); refused; jain_fairness (among backlogged members); over_limit
(members who got more than their limit: must be 0); pop_p50_ms/pop_p99_ms
(how long a store pop takes); start_p50_ms/start_p99_ms (a trickle of single
requests after the load, while slots are free: request → its worker starting
it); idle_cpu_percent (the whole process, measured after the load while
everything waits for work).
"""

from __future__ import annotations

import sys

# benchmarks/queue.py would shadow the standard library's `queue` (asyncio needs it):
# drop this folder from the front of the path, and put it at the end for `import harness`.
if sys.path and sys.path[0] and __file__.startswith(sys.path[0]):
    sys.path.append(sys.path.pop(0))

import argparse
import asyncio
import json
import random
import resource
import tempfile
import time
from collections import Counter
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import structlog
from harness import (
    EXAMPLE_CONFIG,
    Load,
    StartingWorker,
    Starts,
    TimedPops,
    dispatcher_settings,
    drop_store,
    example_config,
    open_store,
    percentile,
    trickle,
    zipf_users,
)

from gouache.app import App, queue_options
from gouache.bot.service import RequestContext, Tier
from gouache.errors import QueueLimitExceeded, QuotaExceeded
from gouache.jobs import Job, JobEventKind, JobState
from gouache.queue.fairness import FairnessMeter
from gouache.queue.quota import QuotaPolicy


def vip_tier(tiers: list[Tier]) -> Tier | None:
    """The heaviest tier a role grants (None if no tier is granted by a role)."""
    granted = [t for t in tiers if t.role_ids]
    return max(granted, key=lambda t: t.weight) if granted else None


async def run(args: argparse.Namespace) -> dict[str, Any]:
    draws = zipf_users(args.users, args.jobs, args.zipf, random.Random(args.seed), first=1)
    options = queue_options(example_config(args.config))
    policy: QuotaPolicy = options["policy"]
    tiers: list[Tier] = options["tiers"]
    default = next(t for t in tiers if t.name == options["default_tier"])
    vip = vip_tier(tiers)
    vips = {u for u in range(1, args.users + 1) if u % 20 == 0} if vip else set()
    vip_roles = vip.role_ids if vip else frozenset()

    def tier_of(user: int) -> Tier:
        return vip if vip is not None and user in vips else default

    weights: dict[Hashable, float] = {u: tier_of(u).weight for u in range(1, args.users + 1)}
    trickle_load = Load(
        members=args.users,
        users=[],
        weights=weights,
        producers=1,
        concurrency=args.workers * args.slots,
        trickle_jobs=args.trickle_jobs,
        trickle_rate=args.trickle_rate,
        seed=args.seed,
    )
    with tempfile.TemporaryDirectory() as tmp:
        store = await open_store(
            args.backend,
            Path(tmp),
            policy,
            args.redis_url,
            lease_s=options["lease_s"],
            max_attempts=options["max_attempts"],
        )
        timed = TimedPops(store)
        starts = Starts()

        def on_start(job: Job) -> None:
            starts.mark(job.id)

        workers = [
            StartingWorker(f"w{i}", capacity=args.slots, on_start=on_start)
            for i in range(args.workers)
        ]
        app = App.assemble(store=store, workers=workers, images_dir=Path(tmp) / "img", **options)
        dispatcher, requests = app.dispatcher, app.requests
        settings = dispatcher_settings(dispatcher)
        await app.pool.start()
        meter = FairnessMeter(weights)
        completed: Counter[int] = Counter()
        refused = Counter[str]()
        accepted = 0
        finished = asyncio.Event()
        producers_done = asyncio.Event()
        events = app.bus.subscribe(lambda e: e.kind is JobEventKind.STATE, size=10_000_000)
        owner_of: dict[str, int] = {}
        singles: set[str] = set()  # the trickle's jobs
        singles_done = asyncio.Event()

        async def watch() -> None:
            done = 0
            async for event in events:
                if event.job_id in singles:
                    if event.state.terminal:
                        singles.discard(event.job_id)
                        if not singles:
                            singles_done.set()
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
                    user_id=user, role_ids=vip_roles if user in vips else frozenset()
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

        async def single(i: int) -> Hashable:
            ctx = RequestContext(user_id=args.users + 1 + i)  # a member with nothing queued
            receipt = await requests.imagine(ctx, f"benchmark single {i} --ar 3:2")
            singles.add(receipt.job.id)
            return receipt.job.id

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
        start = await trickle(trickle_load, starts, single)
        await asyncio.wait_for(singles_done.wait(), args.timeout)

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
        await app.pool.aclose()
        await store.aclose()
        await drop_store(store)  # a Redis run's prefix is unique: leave nothing behind

    over = sum(
        1 for u, n in completed.items() if n > policy.limit_for(tier_limit=tier_of(u).daily_limit)
    )
    jain, jain_min = meter.index()
    done = sum(completed.values())
    return {
        "backend": args.backend,
        "users": args.users,
        "requests": args.jobs,
        "producers": args.producers,
        "workers": args.workers,
        "slots": args.workers * args.slots,
        **settings,
        "daily_limit": policy.default_limit,
        "vip_daily_limit": vip.daily_limit if vip else None,
        "max_queued": options["max_queued"],
        "accepted": accepted,
        "refused": dict(refused),
        "completed": done,
        "seconds": round(seconds, 2),
        "jobs_per_s": round(done / seconds, 1),
        "requests_per_s": round(args.jobs / seconds, 1),
        "jain_fairness": round(jain, 4),
        "jain_fairness_min": round(jain_min, 4),
        "over_limit": over,
        "pop_p50_ms": percentile(timed.samples, 0.5),
        "pop_p99_ms": percentile(timed.samples, 0.99),
        **start,
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
    parser.add_argument(
        "--config", type=Path, default=EXAMPLE_CONFIG, help="the [queue] settings to run with"
    )
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--slots", type=int, default=16, help="capacity of each stand-in worker")
    parser.add_argument("--producers", type=int, default=32)
    parser.add_argument("--zipf", type=float, default=1.1)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--trickle-jobs", type=int, default=300)
    parser.add_argument("--trickle-rate", type=float, default=100.0, help="jobs/s")
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
