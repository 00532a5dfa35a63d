"""The whole path under load and under contention: Discord's rate limits, fairness, cancel mid-run."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from gouache.jobs import JobState
from gouache_sandbox.instant import InstantWorker

from .conftest import custom_ids, embed_title


@pytest.mark.timeout(240)
async def test_500_concurrent_jobs_without_a_single_429(make_world: Callable[..., Any]) -> None:
    workers = [InstantWorker(f"instant-{n}", capacity=50) for n in range(4)]
    for worker in workers:
        worker.behaviour.steps = 3
    world = await make_world(workers)
    members = [world.member(f"m{n}") for n in range(100)]
    done: set[int] = set()
    all_done = asyncio.Event()
    total = 500

    async with world.sandbox.subscribe(maxsize=100_000) as events:

        async def count() -> None:
            while True:
                event = await events.get()
                m = event.message
                if event.kind != "message_delete" and embed_title(m) == "Done" and m.attachments:
                    done.add(m.id)
                    if len(done) >= total:
                        all_done.set()

        counter = asyncio.create_task(count())
        for round_ in range(total // len(members)):
            for n, member in enumerate(members):
                member.invoke(world.channel.id, "imagine", {"prompt": f"job {round_}-{n}"})
        try:
            await asyncio.wait_for(all_done.wait(), 200)
        finally:
            counter.cancel()

    statuses = [status for _method, _route, status in world.sandbox.rest.calls]
    assert statuses.count(429) == 0
    assert len(done) == total
    assert sum(w.done for w in workers) == total


async def test_light_user_is_served_before_a_heavy_users_backlog(
    make_world: Callable[..., Any],
) -> None:
    worker = InstantWorker("instant-1", capacity=1)
    worker.behaviour.hang_next = 1  # holds the only slot while the queue fills
    world = await make_world([worker], max_queued=60)
    heavy, light = world.member("heavy"), world.member("light")
    heavy.invoke(world.channel.id, "imagine", {"prompt": "blocker"})
    for n in range(50):
        await world.reply(heavy.invoke(world.channel.id, "imagine", {"prompt": f"heavy {n}"}))
    light_reply = await world.reply(
        light.invoke(world.channel.id, "imagine", {"prompt": "just one"})
    )
    light_job = next(i for i in custom_ids(light_reply) if i.startswith("gouache:x:")).split(":")[2]
    assert await world.app.store.depth() == 51
    # Free the slot: cancel the blocker, then everything runs one at a time.
    blocker = worker.submitted[0]
    await world.app.dispatcher.cancel(blocker)
    await world.wait(
        lambda m: bool(m.attachments) and light_job[:8] in str(m.embeds[0].get("footer", {}))
    )
    # The light user's one job ran right after the blocker, ahead of 50 heavy jobs queued before it.
    assert worker.submitted[1] == light_job


async def test_cancel_running_job_stops_the_worker_and_refunds(
    make_world: Callable[..., Any],
) -> None:
    worker = InstantWorker("instant-1", capacity=1)
    worker.behaviour.hang_next = 1
    world = await make_world([worker])
    dora = world.member("dora")
    reply = await world.reply(dora.invoke(world.channel.id, "imagine", {"prompt": "a long one"}))
    job_id = next(i for i in custom_ids(reply) if i.startswith("gouache:x:")).split(":")[2]
    await world.wait(lambda m: m.id == reply.id and embed_title(m) == "Sent to a worker")
    assert (await world.app.store.quota(dora.id, daily_limit=100)).used == 1
    dora.click(reply, f"gouache:x:{job_id}")
    await world.wait(lambda m: m.id == reply.id and embed_title(m) == "Cancelled")
    await asyncio.wait_for(worker.cancel_seen.wait(), 10)
    job = await world.app.store.get(job_id)
    assert job is not None and job.state is JobState.CANCELED
    assert (await world.app.store.quota(dora.id, daily_limit=100)).used == 0
