"""Simulated members drive the real bot (discord.py) through the sandbox."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from gouache.jobs import JobState
from gouache_sandbox.instant import InstantWorker

from .conftest import custom_ids, embed_title, footer


async def test_imagine_progress_result_buttons_and_upscale(make_world: Callable[..., Any]) -> None:
    worker = InstantWorker("instant-1", capacity=2)
    worker.behaviour.steps = 3
    world = await make_world([worker])
    alice = world.member("alice")
    inter = alice.invoke(world.channel.id, "imagine", {"prompt": "a red fox --ar 16:9"})
    done = await world.wait(lambda m: embed_title(m) == "Done" and bool(m.attachments))
    assert done.id == inter.original_message_id  # the reply itself was edited, not a new message
    ids = custom_ids(done)
    assert len(ids) == 9 and any(i.endswith(":2") and i.startswith("gouache:u:") for i in ids)
    assert done.attachments[0].filename.endswith(".png")
    job_id = ids[0].split(":")[2]
    job = await world.app.store.get(job_id)
    assert job is not None and job.state is JobState.SUCCEEDED and job.params.aspect == (16, 9)
    # U2 is a new job with the parent, through the same queue and quota
    click = alice.click(
        done, next(i for i in ids if i.startswith("gouache:u:") and i.endswith(":2"))
    )
    upscaled = await world.wait(
        lambda m: footer(m).startswith("upscale") and embed_title(m) == "Done"
    )
    assert upscaled.id == click.original_message_id
    assert custom_ids(upscaled) == []  # an upscale has no further U/V buttons
    quota = await world.app.store.quota(alice.id, daily_limit=100)
    assert quota.used == 2


async def test_daily_limit_and_bad_parameters_are_refused_ephemerally(
    make_world: Callable[..., Any],
) -> None:
    world = await make_world([InstantWorker("instant-1")], daily_limit=1)
    bob = world.member("bob", locale="zh-CN")
    bob.invoke(world.channel.id, "imagine", {"prompt": "cat"})
    await world.wait(lambda m: embed_title(m) == "完成")
    reply = await world.reply(bob.invoke(world.channel.id, "imagine", {"prompt": "another cat"}))
    assert reply.flags & 64  # ephemeral
    assert "1" in reply.content and "limit" in reply.content
    bad_reply = await world.reply(
        bob.invoke(world.channel.id, "imagine", {"prompt": "cat --ar 16x9"})
    )
    assert "--ar must look like 16:9" in bad_reply.content
    assert await world.app.store.depth() == 0


async def test_cancel_queued_job_refunds(make_world: Callable[..., Any]) -> None:
    worker = InstantWorker("instant-1", capacity=1)
    worker.behaviour.hang_next = 1
    world = await make_world([worker])
    carol = world.member("carol")
    carol.invoke(world.channel.id, "imagine", {"prompt": "first"})
    queued = await world.reply(carol.invoke(world.channel.id, "imagine", {"prompt": "second"}))
    assert embed_title(queued) == "Queued"
    cancel_id = next(i for i in custom_ids(queued) if i.startswith("gouache:x:"))
    carol.click(queued, cancel_id)
    await world.wait(lambda m: m.id == queued.id and embed_title(m) == "Cancelled")
    assert (await world.app.store.quota(carol.id, daily_limit=100)).used == 1


async def test_a_request_whose_answer_discord_refused_is_withdrawn_and_refunded(
    make_world: Callable[..., Any],
) -> None:
    """The member saw "This interaction failed": nothing may run or be charged for it."""
    worker = InstantWorker("instant-1", capacity=1)
    worker.behaviour.hang_next = 1  # held, so the job is still waiting when the answer fails
    world = await make_world([worker])
    dana = world.member("dana")
    # What Discord answers a callback that came too late (after its 3 s).
    world.sandbox.rest.faults.add(
        "POST",
        "/interactions/*",
        status=404,
        times=1,
        body={"message": "Unknown interaction", "code": 10062},
    )
    with world.app.bus.subscribe(lambda e: e.final) as finals:
        inter = dana.invoke(world.channel.id, "imagine", {"prompt": "a quiet harbour"})
        async with asyncio.timeout(10):
            final = await anext(aiter(finals))
    jobs = world.app.store
    mine = await jobs.list_jobs(user_id=dana.id)
    assert [j.id for j in mine] == [final.job_id]
    assert mine[0].state is JobState.CANCELED
    assert inter.responded_at is None  # Discord never took an answer
    assert (await jobs.quota(dana.id, daily_limit=100)).used == 0


async def test_a_job_done_before_discord_refused_its_answer_is_posted_in_the_channel(
    make_world: Callable[..., Any],
) -> None:
    """The image exists and was charged: the member gets it, though the reply never came."""
    world = await make_world([InstantWorker("instant-1")])
    erin = world.member("erin")
    # The answer is slow and then refused (too late): the instant job finishes first.
    world.sandbox.rest.faults.add(
        "POST",
        "/interactions/*",
        status=404,
        delay=1.0,
        times=1,
        body={"message": "Unknown interaction", "code": 10062},
    )
    inter = erin.invoke(world.channel.id, "imagine", {"prompt": "a lantern"})
    posted = await world.wait(lambda m: embed_title(m) == "Done" and bool(m.attachments))
    assert inter.responded_at is None
    assert posted.interaction_metadata is None  # a channel message, not the interaction's reply
    (job,) = await world.app.store.list_jobs(user_id=erin.id)
    assert job.state is JobState.SUCCEEDED
    assert footer(posted).endswith(job.id[:8])
    assert (await world.app.store.quota(erin.id, daily_limit=100)).used == 1


async def test_a_channel_post_whose_answer_was_lost_is_not_posted_twice(
    make_world: Callable[..., Any],
) -> None:
    """Discord made the message but its answer was lost (a 503 from the edge, which discord.py does not retry): the
    retry carries the same nonce, so Discord hands back that message, not a copy."""
    world = await make_world([InstantWorker("instant-1")])
    erin = world.member("erin")
    world.sandbox.rest.faults.add(
        "POST",
        "/interactions/*",
        status=404,
        delay=1.0,
        times=1,
        body={"message": "Unknown interaction", "code": 10062},
    )
    lost = world.sandbox.rest.faults.add(
        "POST", "/channels/*/messages", status=503, times=1, after=True
    )
    erin.invoke(world.channel.id, "imagine", {"prompt": "a lantern"})
    posted = await world.wait(lambda m: embed_title(m) == "Done" and bool(m.attachments))
    assert world.app.delivery is not None
    assert await world.app.delivery.flush(15)  # the retry went out and was recorded
    assert lost.hits == 1
    (job,) = await world.app.store.list_jobs(user_id=erin.id)
    assert job.message_id == posted.id
    done = [
        m
        for m in world.sandbox.state.messages[world.channel.id].values()
        if embed_title(m) == "Done"
    ]
    assert [m.id for m in done] == [posted.id]
