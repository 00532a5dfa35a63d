"""Peers for ``benchmarks/queue.py --compare``: saq and arq running no-op jobs on the same Redis.

Each run enqueues ``jobs`` no-op jobs from 16 concurrent producers while one
worker with 50 concurrent slots runs them, in this process, and measures the
time from the first enqueue to the last completion. Both libraries keep their
own defaults otherwise (arq polls its queue every 0.5 s when it finds it empty;
saq blocks on Redis). Each run uses a fresh queue name and deletes its keys.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

CONCURRENCY = 50
PRODUCERS = 16
TIMEOUT_S = 600.0


class _Done:
    """Counts completions and fires an event at the last one (no polling)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.count = 0
        self.event = asyncio.Event()

    def hit(self) -> None:
        self.count += 1
        if self.count >= self.total:
            self.event.set()


async def _produce(jobs: int, enqueue: Callable[[], Awaitable[Any]]) -> None:
    async def stream(n: int) -> None:
        for _ in range(n):
            await enqueue()

    shares = [jobs // PRODUCERS + (1 if i < jobs % PRODUCERS else 0) for i in range(PRODUCERS)]
    await asyncio.gather(*(stream(n) for n in shares))


def _result(name: str, jobs: int, seconds: float) -> dict[str, Any]:
    return {
        "name": name,
        "jobs": jobs,
        "seconds": round(seconds, 3),
        "jobs_per_s": round(jobs / seconds, 1),
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


async def _run_saq(jobs: int, redis_url: str) -> dict[str, Any]:
    from saq import Queue, Worker

    done = _Done(jobs)

    async def noop(ctx: Any) -> None:
        done.hit()

    name = f"bench-{uuid.uuid4().hex[:8]}"
    queue = Queue.from_url(redis_url, name=name)
    await queue.connect()
    worker = Worker(queue, functions=[("noop", noop)], concurrency=CONCURRENCY)
    try:
        runner = asyncio.create_task(worker.start())
        started = time.perf_counter()
        await _produce(jobs, lambda: queue.enqueue("noop"))
        await asyncio.wait_for(done.event.wait(), TIMEOUT_S)
        seconds = time.perf_counter() - started
        await worker.stop()
        runner.cancel()
        await asyncio.wait([runner])
    finally:
        await queue.disconnect()
    await _drop(redis_url, f"saq:*{name}*")  # saq:job:<queue>:<id>, saq:<queue>:...
    return _result("saq", jobs, seconds)


async def _run_arq(jobs: int, redis_url: str) -> dict[str, Any]:
    from arq import create_pool
    from arq.connections import RedisSettings
    from arq.worker import Worker, func

    done = _Done(jobs)

    async def noop(ctx: Any) -> None:
        done.hit()

    name = f"bench-{uuid.uuid4().hex[:8]}"
    settings = RedisSettings.from_dsn(redis_url)
    pool = await create_pool(settings, default_queue_name=name)
    worker = Worker(
        functions=[func(noop, name="noop")],
        queue_name=name,
        redis_settings=settings,
        max_jobs=CONCURRENCY,
        handle_signals=False,
        log_results=False,
    )
    try:
        runner = asyncio.create_task(worker.async_run())
        started = time.perf_counter()
        await _produce(jobs, lambda: pool.enqueue_job("noop", _queue_name=name))
        await asyncio.wait_for(done.event.wait(), TIMEOUT_S)
        seconds = time.perf_counter() - started
        # Let the last jobs' bookkeeping finish before stopping the poll loop.
        pending = [t for t in worker.tasks.values() if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=10)
        runner.cancel()
        await asyncio.wait([runner])
    finally:
        if worker._pool is not None:  # arq's own close() re-raises its cancelled tasks
            await worker.pool.aclose()
        await pool.aclose()
    await _drop(redis_url, "arq:*")
    await _drop(redis_url, f"{name}*")
    return _result("arq", jobs, seconds)


def run_saq(jobs: int, redis_url: str) -> dict[str, Any]:
    """saq: enqueue ``jobs`` no-op jobs and run them with 50 concurrent slots; jobs/s end to end."""
    return asyncio.run(_run_saq(jobs, redis_url))


def run_arq(jobs: int, redis_url: str) -> dict[str, Any]:
    """arq: enqueue ``jobs`` no-op jobs and run them with 50 concurrent slots; jobs/s end to end."""
    return asyncio.run(_run_arq(jobs, redis_url))
