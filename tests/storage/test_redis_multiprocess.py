"""Four OS processes share one Redis store; one is killed with SIGKILL halfway.

The test process enqueues every job first (so the fair order is fully known:
`FairQueue` fed the same jobs gives it), then starts four workers
(``redis_worker.py``). Each pop is one atomic ZPOPMIN-like script, so each
batch must be the next run of that order, whichever process took it; sorting
the batches rebuilds the global pop order and checks it job for job.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from gouache.jobs import Job, JobState
from gouache.queue.fair import FairQueue
from gouache.queue.quota import QuotaPolicy
from gouache.storage.redis import RedisStore

WORKER = Path(__file__).with_name("redis_worker.py")
JOBS = 20_000
USERS = 500
PROCESSES = 4
LEASE_S = 2.0


async def _enqueue_all(store: RedisStore) -> dict[int, float]:
    rng = random.Random(20_000)
    weights = {u: 3.0 if u % 10 == 0 else 1.0 for u in range(USERS)}
    # Skewed demand: a few users ask a lot, everybody asks at least once.
    demand = [1 / (rank + 1) ** 0.9 for rank in range(USERS)]
    draws = list(range(USERS)) + rng.choices(range(USERS), weights=demand, k=JOBS - USERS)
    rng.shuffle(draws)
    for start in range(0, JOBS, 1000):
        await asyncio.gather(
            *(
                store.enqueue(Job(user_id=u, prompt="mp", weight=weights[u]), daily_limit=JOBS)
                for u in draws[start : start + 1000]
            )
        )
    return weights


async def _read_events(proc: asyncio.subprocess.Process, name: str, out: list[Any]) -> None:
    assert proc.stdout is not None
    async for line in proc.stdout:
        event = json.loads(line)
        out.append(event)
        if "halfway" in event:
            proc.kill()  # SIGKILL: no cleanup, its leased jobs stay leased


def _check_weighted_fairness(order: list[Job], weights: dict[int, float]) -> None:
    """Among users still backlogged, service/weight never differs by more than one job."""
    left = Counter(j.user_id for j in order)
    served: Counter[int] = Counter()
    for n, job in enumerate(order, start=1):
        served[job.user_id] += 1
        left[job.user_id] -= 1
        if n % 100 == 0:
            norm = [served[u] / weights[u] for u, k in left.items() if k > 0]
            if len(norm) > 1:
                assert max(norm) - min(norm) <= 1.0 + 1e-9, n


async def test_four_processes_share_the_queue_and_survive_a_kill(redis_url: str) -> None:
    prefix = f"mp-{uuid.uuid4().hex[:10]}"
    store = RedisStore(redis_url, prefix=prefix, policy=QuotaPolicy("UTC"), lease_s=LEASE_S)
    await store.start()
    raw = Redis.from_url(redis_url, decode_responses=True)
    procs: list[asyncio.subprocess.Process] = []
    try:
        weights = await _enqueue_all(store)
        jobs = list(reversed(await store.list_jobs(limit=JOBS)))  # oldest (lowest seq) first
        assert len(jobs) == JOBS and await store.depth() == JOBS
        reference = FairQueue()
        for job in jobs:
            reference.push(job.id, job.user_id, cost=job.cost, weight=job.weight)
        fair_order = [e.job_id for e in reference.pop(JOBS)]
        rank = {job_id: i for i, job_id in enumerate(fair_order)}
        by_id = {j.id: j for j in jobs}

        events: list[list[Any]] = [[] for _ in range(PROCESSES)]
        for i in range(PROCESSES):
            victim = ["--victim", str(JOBS // 2)] if i == 0 else []
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(WORKER),
                redis_url,
                prefix,
                f"proc-{i}",
                str(JOBS),
                str(LEASE_S),
                *victim,
                stdout=asyncio.subprocess.PIPE,
            )
            procs.append(proc)
        await asyncio.wait_for(
            asyncio.gather(
                *(_read_events(p, f"proc-{i}", events[i]) for i, p in enumerate(procs)),
                *(p.wait() for p in procs),
            ),
            timeout=90,
        )
        assert procs[0].returncode == -9, "the victim was not killed"
        assert all(p.returncode == 0 for p in procs[1:])

        # No job completed twice, none lost.
        done = [e["done"] for ev in events for e in ev if "done" in e]
        assert len(done) == len(set(done)) == JOBS
        assert await store.count_by_state() == {JobState.SUCCEEDED: JOBS}
        assert await store.depth() == 0

        # The victim's leased jobs came back (attempt 2) and survivors finished them.
        (halfway,) = [e["halfway"] for e in events[0] if "halfway" in e]
        assert halfway
        done_by_survivors = {e["done"] for ev in events[1:] for e in ev if "done" in e}
        assert set(halfway) <= done_by_survivors
        retried = {
            job_id
            for ev in events[1:]
            for e in ev
            if "batch" in e
            for job_id, attempts in e["batch"]
            if attempts == 2
        }
        assert set(halfway) <= retried

        # Fairness across processes: each pop's first-attempt jobs are the next
        # run of the fair order, and the runs tile it exactly.
        runs = []
        for ev in events:
            for e in ev:
                if "batch" not in e:
                    continue
                firsts = sorted(rank[job_id] for job_id, attempts in e["batch"] if attempts == 1)
                if firsts:
                    assert firsts == list(range(firsts[0], firsts[0] + len(firsts)))
                    runs.append(firsts)
        runs.sort()
        assert [i for run in runs for i in run] == list(range(JOBS))
        _check_weighted_fairness([by_id[job_id] for job_id in fair_order], weights)

        # Quotas add up exactly: every job reserved and committed one image, on its day.
        expected = Counter((j.user_id, j.quota_day) for j in jobs)
        for (user, day), n in expected.items():
            quota = await raw.hgetall(f"{{{prefix}}}:quota:{user}:{day}")
            assert quota == {"used": str(n), "committed": str(n)}, user
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        keys = [k async for k in raw.scan_iter(match="{" + prefix + "}*", count=1000)]
        for start in range(0, len(keys), 500):
            await raw.delete(*keys[start : start + 500])
        await raw.aclose()
        await store.aclose()
