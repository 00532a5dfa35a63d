"""Peers for ``benchmarks/queue.py --compare``: saq and arq on the same Redis, given the same load.

Each peer gets what gouache gets (a `harness.Load`): the same members' jobs
from the same number of concurrent producer streams, the same number of
slots, then the same trickle of single jobs for the start latency. One worker
runs the jobs in this process; a job is a no-op that notes when it started.
A job counts as done when the library has recorded its end (saq's
``after_process``, arq's ``after_job_end``), as gouache's counts when SUCCEEDED
is persisted. Each run uses a fresh queue name and deletes its keys.

How each takes work (read in their sources, saq 0.26 and arq 0.28):

- saq: ``concurrency`` tasks, each blocking on its own dequeue (BLMOVE); no poll.
- arq: a poll loop. An iteration begins every ``poll_delay`` (default 0.5 s;
  the sleep is ``poll_delay`` less the time the iteration took), reads at most
  ``queue_read_limit`` job ids (default max(5 × max_jobs, 100)) and starts them
  one by one while fewer than ``max_jobs`` run, leaving the rest for the next
  iteration. So it starts at most ``queue_read_limit`` jobs per ``poll_delay``:
  with 64 slots, 320 per 0.5 s = 640 jobs/s, and a job that arrives on an
  idle queue waits up to 0.5 s. ``arq`` runs at those defaults;
  ``arq-fastpoll`` sets ``poll_delay`` to 0.01 s, where that ceiling
  (32,000 jobs/s) no longer binds.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

from harness import Backlog, Load, Starts, produce, trickle

TIMEOUT_S = 600.0
FASTPOLL_S = 0.01


class _Done:
    """Counts completions and fires an event at a target (no polling)."""

    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.event = asyncio.Event()

    def expect(self, total: int) -> None:
        self.target = total
        self.event.clear()
        if self.count >= total:
            self.event.set()

    def hit(self) -> None:
        self.count += 1
        if self.count >= self.target:
            self.event.set()


def _marker(load: Load, backlog: Backlog, starts: Starts) -> Callable[[int], None]:
    """Where a job's start goes: the loaded phase's backlog, or the trickle's clock."""
    jobs = len(load.users)

    def mark(n: int) -> None:
        if n < jobs:
            backlog.started(n)
        else:
            starts.mark(n)

    return mark


def _result(
    name: str, load: Load, seconds: float, backlog: Backlog, start: dict[str, Any]
) -> dict[str, Any]:
    jobs = len(load.users)
    return {
        "name": name,
        "backend": "redis",
        **load.settings(),
        "seconds": round(seconds, 3),
        "jobs_per_s": round(jobs / seconds, 1),
        **start,
        **backlog.result(),
    }


async def _drop(redis_url: str, pattern: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=pattern, count=1000)]
        for start in range(0, len(keys), 500):
            await client.delete(*keys[start : start + 500])
    finally:
        await client.aclose()


async def _run_saq(load: Load, redis_url: str) -> dict[str, Any]:
    from saq import Queue, Worker

    jobs = len(load.users)
    backlog, starts, done = Backlog(load), Starts(), _Done()
    mark = _marker(load, backlog, starts)

    async def noop(ctx: Any, *, n: int) -> None:
        mark(n)

    async def after(ctx: Any) -> None:
        done.hit()

    name = f"bench-{uuid.uuid4().hex[:8]}"
    queue = Queue.from_url(redis_url, name=name)
    await queue.connect()
    worker = Worker(
        queue, functions=[("noop", noop)], concurrency=load.concurrency, after_process=after
    )

    async def enqueue(n: int) -> int:
        await queue.enqueue("noop", n=n)
        return n

    try:
        runner = asyncio.create_task(worker.start())
        done.expect(jobs)
        started = time.perf_counter()
        await produce(load, backlog, enqueue)
        await asyncio.wait_for(done.event.wait(), TIMEOUT_S)
        seconds = time.perf_counter() - started
        done.expect(jobs + load.trickle_jobs)
        start = await trickle(load, starts, lambda i: enqueue(jobs + i))
        await asyncio.wait_for(done.event.wait(), TIMEOUT_S)
        await worker.stop()
        runner.cancel()
        await asyncio.wait([runner])
    finally:
        await queue.disconnect()
    await _drop(redis_url, f"saq:*{name}*")  # saq:job:<queue>:<id>, saq:<queue>:...
    result = _result("saq", load, seconds, backlog, start)
    result["peer_settings"] = f"saq defaults; concurrency={load.concurrency}"
    return result


async def _run_arq(load: Load, redis_url: str, poll_delay: float | None) -> dict[str, Any]:
    from arq import create_pool
    from arq.connections import RedisSettings
    from arq.worker import Worker, func

    jobs = len(load.users)
    backlog, starts, done = Backlog(load), Starts(), _Done()
    mark = _marker(load, backlog, starts)

    async def noop(ctx: Any, n: int) -> None:
        mark(n)

    async def after(ctx: Any) -> None:
        done.hit()

    name = f"bench-{uuid.uuid4().hex[:8]}"
    settings = RedisSettings.from_dsn(redis_url)
    pool = await create_pool(settings, default_queue_name=name)
    options: dict[str, Any] = {} if poll_delay is None else {"poll_delay": poll_delay}
    worker = Worker(
        functions=[func(noop, name="noop")],
        queue_name=name,
        redis_settings=settings,
        max_jobs=load.concurrency,
        handle_signals=False,
        log_results=False,
        after_job_end=after,
        **options,
    )

    async def enqueue(n: int) -> int:
        await pool.enqueue_job("noop", n, _queue_name=name)
        return n

    try:
        runner = asyncio.create_task(worker.async_run())
        done.expect(jobs)
        started = time.perf_counter()
        await produce(load, backlog, enqueue)
        await asyncio.wait_for(done.event.wait(), TIMEOUT_S)
        seconds = time.perf_counter() - started
        done.expect(jobs + load.trickle_jobs)
        start = await trickle(load, starts, lambda i: enqueue(jobs + i))
        await asyncio.wait_for(done.event.wait(), TIMEOUT_S)
        # arq's own way out: in burst mode its poll loop returns once the queue is empty.
        # (Cancelling it instead can land inside a WATCH pipeline and hang.)
        worker.burst = True
        await asyncio.wait_for(runner, 60)
    finally:
        if worker._pool is not None:  # arq's own close() re-raises its cancelled tasks
            await worker.pool.aclose()
        await pool.aclose()
    await _drop(redis_url, "arq:*")
    await _drop(redis_url, f"{name}*")
    label = "arq" if poll_delay is None else "arq-fastpoll"
    result = _result(label, load, seconds, backlog, start)
    result["poll_delay_s"] = worker.poll_delay_s
    result["queue_read_limit"] = worker.queue_read_limit
    result["peer_settings"] = (
        f"arq defaults (poll_delay={worker.poll_delay_s} s, queue_read_limit="
        f"{worker.queue_read_limit}: at most {worker.queue_read_limit / worker.poll_delay_s:.0f}"
        f" jobs/s); max_jobs={load.concurrency}"
        if poll_delay is None
        else f"arq with a short poll_delay={worker.poll_delay_s} s (queue_read_limit="
        f"{worker.queue_read_limit}); max_jobs={load.concurrency}"
    )
    return result


PEERS = ("saq", "arq", "arq-fastpoll")


def run(peer: str, load: Load, redis_url: str) -> dict[str, Any]:
    """Run ``load`` through ``peer`` (one of `PEERS`); one result line's fields."""
    if peer == "saq":
        return asyncio.run(_run_saq(load, redis_url))
    if peer == "arq":
        return asyncio.run(_run_arq(load, redis_url, None))
    if peer == "arq-fastpoll":
        return asyncio.run(_run_arq(load, redis_url, FASTPOLL_S))
    raise ValueError(f"unknown peer {peer!r} (known: {', '.join(PEERS)})")
