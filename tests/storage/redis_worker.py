"""One worker process of the multi-process Redis test (run as a script).

    python redis_worker.py URL PREFIX NAME TOTAL LEASE_S [--victim HALF]

Pops batches from the shared store, walks each job to SUCCEEDED and counts
completions in the Redis key ``<prefix>:test:done``. Writes one JSON line per
event to stdout, flushed at once: ``{"batch": [[id, attempts], ...]}`` after
each pop and ``{"done": id}`` after each completion. A survivor runs recovery
whenever the queue looks empty, and stops once TOTAL jobs are done.

With ``--victim HALF`` the process, once the shared counter reaches HALF and
while it still holds leased jobs, prints ``{"halfway": [ids it holds]}`` and
waits to be killed (SIGKILL) by the test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import structlog
from redis.asyncio import Redis

from gouache.errors import LeaseLost
from gouache.jobs import Job, JobState
from gouache.queue.quota import QuotaPolicy
from gouache.storage.redis import RedisStore

STEPS = (JobState.RUNNING, JobState.GENERATED, JobState.STORING, JobState.SUCCEEDED)
BATCH = 16


def emit(**event: object) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def complete(store: RedisStore, job: Job, owner: str) -> bool:
    try:
        for state in STEPS:
            await store.transition(job.id, state, owner=owner)
    except LeaseLost:
        return False  # it was recovered and handed to someone else
    return True


async def main(args: argparse.Namespace) -> None:
    store = RedisStore(args.url, prefix=args.prefix, policy=QuotaPolicy("UTC"), lease_s=args.lease)
    counter = Redis.from_url(args.url)
    done_key = "{" + args.prefix + "}:test:done"
    await store.start()
    try:
        while int(await counter.get(done_key) or 0) < args.total:
            if not await store.wait_for_work(0.1):
                await store.recover_expired()
                continue
            jobs = await store.pop(BATCH, owner=args.name)
            if not jobs:
                continue
            emit(batch=[[j.id, j.attempts] for j in jobs])
            held = list(jobs)
            if args.victim is not None:
                # Finish half the batch, keep the rest leased.
                for job in jobs[: len(jobs) // 2]:
                    if await complete(store, job, args.name):
                        emit(done=job.id)
                        await counter.incr(done_key)
                    held.remove(job)
                if int(await counter.get(done_key) or 0) >= args.victim and held:
                    emit(halfway=[j.id for j in held])
                    # Hold the leases until the test kills this process.
                    await asyncio.wait_for(asyncio.Event().wait(), 120)
            for job in held:
                if await complete(store, job, args.name):
                    emit(done=job.id)
                    await counter.incr(done_key)
    finally:
        await counter.aclose()
        await store.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("prefix")
    parser.add_argument("name")
    parser.add_argument("total", type=int)
    parser.add_argument("lease", type=float)
    parser.add_argument("--victim", type=int, default=None)
    # stdout carries the JSON events; logs go to stderr.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    asyncio.run(main(parser.parse_args()))
