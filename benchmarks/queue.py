"""Queue throughput, dispatch latency and fairness, end to end through a real store.

    python benchmarks/queue.py --backend sqlite --users 1000 --jobs 50000
    python benchmarks/queue.py --backend redis --users 1000 --jobs 50000
    python benchmarks/queue.py --compare saq,arq --jobs 20000 [--repeat 3]

Jobs come from users with a Zipf-skewed demand (a few users ask a lot); one
in ten users is VIP (weight 3). A producer enqueues every job (quota reserved,
durable); a dispatcher pops batches sized to the free slots of a pool of no-op
workers (slots freed while a pop is on its way get a pop of their own, as
each slot of saq's and arq's workers dequeues for itself); each job then walks SUBMITTED → RUNNING → GENERATED → STORING →
SUCCEEDED, every step persisted. Prints one JSON line per run.

Fairness: Jain's index of service/weight among users that stayed backlogged,
measured over consecutive windows in which each such user is due ~20 jobs
(so one job of rounding cannot dominate), averaged with the pops as weights.
"""

from __future__ import annotations

import sys

# This file is named queue.py (as the issue asks); run as a script, its folder would
# shadow the standard library's `queue`, which asyncio needs. Drop it from the path first.
if sys.path and sys.path[0] and __file__.startswith(sys.path[0]):
    _bench_dir = sys.path.pop(0)
else:  # pragma: no cover - imported, not run
    _bench_dir = ""

import argparse
import asyncio
import json
import random
import resource
import statistics
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import structlog

from gouache.jobs import Job, JobState
from gouache.queue.fairness import FairnessMeter
from gouache.queue.quota import QuotaPolicy
from gouache.runtime import tune_gc
from gouache.storage.base import Store
from gouache.storage.sqlite import SQLiteStore

STEPS = (JobState.RUNNING, JobState.GENERATED, JobState.STORING, JobState.SUCCEEDED)


def zipf_users(users: int, jobs: int, s: float, rng: random.Random) -> list[int]:
    """Draw the user of each job: user ``r`` is drawn with weight 1 / r**s."""
    weights = [1 / (rank**s) for rank in range(1, users + 1)]
    order = list(range(users))
    rng.shuffle(order)  # user ids do not reveal rank
    return [order[i] for i in rng.choices(range(users), weights=weights, k=jobs)]


async def open_store(args: argparse.Namespace, tmp: Path) -> Store:
    policy = QuotaPolicy("UTC", default_limit=args.jobs)
    if args.backend == "sqlite":
        store: Store = SQLiteStore(tmp / "bench.db", policy=policy, lease_s=600)
    else:
        from gouache.storage.redis import RedisStore

        prefix = f"bench-{random.getrandbits(40):x}"
        store = RedisStore(args.redis_url, prefix=prefix, policy=policy, lease_s=600)
    await store.start()
    return store


async def drop_store(store: Store) -> None:
    """Delete a Redis run's keys (its prefix is unique), so runs do not pile up in Redis."""
    from gouache.storage.redis import RedisStore

    if isinstance(store, RedisStore):
        await store.drop()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    draws = zipf_users(args.users, args.jobs, args.zipf, rng)
    weights = {u: (3.0 if u % 10 == 0 else 1.0) for u in range(args.users)}
    meter = FairnessMeter(weights)
    dispatch_ms: list[float] = []
    done = asyncio.Event()
    completed = 0
    in_flight = 0  # jobs running
    reserved = 0  # slots promised to pops on their way
    tasks: set[asyncio.Task[None]] = set()
    slot_freed = asyncio.Event()

    with tempfile.TemporaryDirectory() as tmp:
        store = await open_store(args, Path(tmp))
        tune_gc()  # as `gouache run` does once started
        try:

            async def produce(share: list[int]) -> None:
                # A user counts as backlogged from the moment their job can be
                # popped: SQLite queues it in memory as enqueue is called (its
                # write commits with the pop's); Redis when the script runs,
                # whose reply comes before that of any pop issued later.
                early = args.backend == "sqlite"
                for user in share:
                    if early:
                        meter.enqueued(user)
                    await store.enqueue(
                        Job(user_id=user, prompt="bench", weight=weights[user]),
                        daily_limit=args.jobs,
                    )
                    if not early:
                        meter.enqueued(user)

            async def work(job: Job) -> None:
                nonlocal completed, in_flight
                for state in STEPS:
                    await store.transition(job.id, state, owner="bench")
                completed += 1
                in_flight -= 1
                slot_freed.set()
                if completed == args.jobs:
                    done.set()

            async def take(k: int) -> None:
                """One pop of up to ``k`` jobs into slots reserved for it; start each job."""
                nonlocal in_flight, reserved
                t0 = time.perf_counter()
                jobs = await store.pop(k, owner="bench")
                dispatch_ms.append((time.perf_counter() - t0) * 1000)
                reserved -= k
                in_flight += len(jobs)
                if len(jobs) < k:
                    slot_freed.set()  # the slots it did not fill are free again
                for job in jobs:
                    meter.popped(job.user_id)
                    start(work(job))

            def start(coro: Coroutine[Any, Any, None]) -> None:
                task = asyncio.create_task(coro)
                tasks.add(task)
                task.add_done_callback(tasks.discard)

            async def dispatch() -> None:
                """Pop into free slots; slots freed while a pop is on its way get a pop of their own."""
                nonlocal reserved
                while not done.is_set():
                    free = args.concurrency - in_flight - reserved
                    if free <= 0:
                        slot_freed.clear()
                        await slot_freed.wait()
                        continue
                    if not await store.wait_for_work(0.5):
                        continue
                    k = min(free, args.batch)
                    reserved += k
                    start(take(k))
                    # The next pop waits for a slot to free: pops stay few and large.
                    slot_freed.clear()
                    await slot_freed.wait()

            started = time.perf_counter()
            # Members ask at the same time: --producers concurrent streams of requests.
            shares = [draws[i :: args.producers] for i in range(args.producers)]
            await asyncio.gather(*(produce(share) for share in shares), dispatch())
            seconds = time.perf_counter() - started
            meter.close()
            counts = await store.count_by_state()
        finally:
            await store.aclose()
            await drop_store(store)

    assert counts.get(JobState.SUCCEEDED) == args.jobs, counts
    jain, jain_min = meter.index()
    dispatch_ms.sort()
    return {
        "backend": args.backend,
        "users": args.users,
        "jobs": args.jobs,
        "concurrency": args.concurrency,
        "producers": args.producers,
        "seconds": round(seconds, 3),
        "jobs_per_s": round(args.jobs / seconds, 1),
        "dispatch_p50_ms": round(statistics.median(dispatch_ms), 3),
        "dispatch_p99_ms": round(dispatch_ms[int(len(dispatch_ms) * 0.99)], 3),
        "jain_fairness": round(jain, 4),
        "jain_fairness_min": round(jain_min, 4),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["sqlite", "redis"], default="sqlite")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=50000)
    parser.add_argument("--concurrency", type=int, default=64, help="no-op workers' slots")
    parser.add_argument(
        "--batch", type=int, default=32, help="largest pop (the dispatcher's default max_batch)"
    )
    parser.add_argument("--producers", type=int, default=16, help="concurrent enqueue streams")
    parser.add_argument("--zipf", type=float, default=1.1)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--compare", default="", help="comma list of peers: saq,arq")
    parser.add_argument(
        "--repeat", type=int, default=3, help="with --compare: rounds; the summary has medians"
    )
    args = parser.parse_args()
    # Logs go to stderr so stdout carries only the JSON result lines.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    if not args.compare:
        print(json.dumps(asyncio.run(run(args))), flush=True)
        return
    sys.path.append(str(Path(__file__).parent))
    import compare  # type: ignore[import-not-found]

    args.backend = "redis"
    peers = [p.strip() for p in args.compare.split(",") if p.strip()]
    ratios: dict[str, list[float]] = {peer: [] for peer in peers}
    rates: dict[str, list[float]] = {peer: [] for peer in ["gouache", *peers]}
    # Rounds alternate gouache and each peer, so a drift in the machine's speed
    # (other work, CPU frequency) touches both sides of each ratio alike.
    for _ in range(args.repeat):
        ours = asyncio.run(run(args))
        rates["gouache"].append(ours["jobs_per_s"])
        print(json.dumps(ours), flush=True)
        for peer in peers:
            result = getattr(compare, f"run_{peer}")(args.jobs, args.redis_url)
            result["gouache_jobs_per_s"] = ours["jobs_per_s"]
            result["gouache_ratio"] = round(ours["jobs_per_s"] / result["jobs_per_s"], 2)
            ratios[peer].append(result["gouache_ratio"])
            rates[peer].append(result["jobs_per_s"])
            print(json.dumps(result), flush=True)
    summary: dict[str, Any] = {"summary": "median of rounds", "rounds": args.repeat}
    for name, values in rates.items():
        summary[f"{name}_jobs_per_s"] = round(statistics.median(values), 1)
    for peer, values in ratios.items():
        summary[f"ratio_{peer}"] = round(statistics.median(values), 2)
        summary[f"ratio_{peer}_min"] = min(values)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
