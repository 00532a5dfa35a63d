"""gouache where Discord's permissions stand in its way: refused up front, never lost mid-job."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import discord

from gouache.jobs import Job, JobState
from gouache.pool.base import Accepted, Generated, JobSink, Progress
from gouache_sandbox.discord.messages import MESSAGE_FLAG_EPHEMERAL
from gouache_sandbox.discord.permissions import P
from gouache_sandbox.discord.state import Message
from gouache_sandbox.instant import InstantWorker, tiny_png

from .conftest import custom_ids, embed_title


class GatedWorker(InstantWorker):
    """Accepts a job, waits for ``gate``, reports progress, waits for ``finish``, then the result."""

    def __init__(self, name: str, *, steps: int = 1) -> None:
        super().__init__(name, capacity=2)
        self.gate = asyncio.Event()
        self.finish = asyncio.Event()
        self.accepted = asyncio.Event()
        self.steps = steps

    async def _run(self, job: Job, report: JobSink) -> None:
        await report(job, Accepted(external_id=f"{self.name}-{job.id[:8]}"))
        self.accepted.set()
        await self.gate.wait()
        for step in range(1, self.steps + 1):
            await report(job, Progress(percent=50, preview=tiny_png(step)))
        await self.finish.wait()
        await report(job, Generated(images=[tiny_png(7)], meta={"hash": job.id, "grid": True}))


async def test_imagine_where_the_bot_cannot_deliver_is_refused_before_any_quota(
    make_world: Callable[..., Any],
) -> None:
    world = await make_world([InstantWorker("instant-1")])
    sandbox, channel = world.sandbox, world.channel
    bot = world.app.bot.user
    told: list[str] = []
    problems = world.app.requests.channel_problems
    assert problems is not None
    notify = problems.notify
    assert notify is not None

    def spy(text: str) -> None:
        told.append(text)
        notify(text)

    problems.notify = spy
    alice = world.member("alice")
    sandbox.set_overwrite(channel, bot.id, deny=P.ATTACH_FILES)
    reply = await world.reply(alice.invoke(channel.id, "imagine", {"prompt": "a fox"}))
    assert reply.flags & MESSAGE_FLAG_EPHEMERAL and reply.visible_to == alice.id
    assert "Attach Files" in reply.content and "Send Messages" not in reply.content
    assert await world.app.store.depth() == 0
    assert (await world.app.store.quota(alice.id, daily_limit=100)).used == 0
    # Implicit rule: Attach Files granted explicitly is worth nothing without Send Messages.
    sandbox.set_overwrite(channel, bot.id, deny=P.SEND_MESSAGES, allow=P.ATTACH_FILES)
    reply = await world.reply(alice.invoke(channel.id, "imagine", {"prompt": "a fox"}))
    assert "Send Messages" in reply.content and "Attach Files" not in reply.content
    reply = await world.reply(alice.invoke(channel.id, "imagine", {"prompt": "again"}))
    assert "Send Messages" in reply.content
    # The owner was told once per problem (the second refusal for the same reason is counted).
    assert len(told) == 2 and "Attach Files" in told[0] and "Send Messages" in told[1]
    status = await world.app.status()
    rows = status["channels"]
    assert [(r["channel_id"], r["missing"], r["refused"]) for r in rows] == [
        (channel.id, ["Send Messages"], 2)
    ]
    # Granted again: the next request is served and the channel leaves the list.
    sandbox.clear_overwrite(channel, bot.id)
    alice.invoke(channel.id, "imagine", {"prompt": "a fox at last"})
    done = await world.wait(lambda m: embed_title(m) == "Done" and bool(m.attachments))
    assert custom_ids(done) and problems.rows() == []
    assert (await world.app.store.quota(alice.id, daily_limit=100)).used == 1


async def test_buttons_are_refused_the_same_way(make_world: Callable[..., Any]) -> None:
    world = await make_world([InstantWorker("instant-1")])
    alice = world.member("alice")
    alice.invoke(world.channel.id, "imagine", {"prompt": "a fox"})
    done = await world.wait(lambda m: embed_title(m) == "Done" and bool(m.attachments))
    world.sandbox.set_overwrite(world.channel, world.app.bot.user.id, deny=P.EMBED_LINKS)
    upscale = next(i for i in custom_ids(done) if i.startswith("gouache:u:"))
    reply = await world.reply(alice.click(done, upscale))
    assert reply.flags & MESSAGE_FLAG_EPHEMERAL and "Embed Links" in reply.content
    assert (await world.app.store.quota(alice.id, daily_limit=100)).used == 1


async def test_a_permission_taken_away_mid_job_leaves_the_webhook_route(
    make_world: Callable[..., Any],
) -> None:
    worker = GatedWorker("instant-1")
    world = await make_world([worker])
    alice = world.member("alice")
    inter = alice.invoke(world.channel.id, "imagine", {"prompt": "a fox"})
    await asyncio.wait_for(worker.accepted.wait(), 10)
    # The bot itself may no longer upload or post here; the interaction webhook still may.
    world.sandbox.set_overwrite(
        world.channel, world.app.bot.user.id, deny=P.ATTACH_FILES | P.SEND_MESSAGES
    )
    worker.gate.set()
    worker.finish.set()
    done = await world.wait(lambda m: embed_title(m) == "Done" and bool(m.attachments))
    assert done.id == inter.original_message_id
    assert world.app.delivery is not None and world.app.delivery.refusals == 0
    assert (await world.app.store.quota(alice.id, daily_limit=100)).used == 1


async def test_no_route_left_mid_job_cancels_refunds_and_says_so(
    make_world: Callable[..., Any],
) -> None:
    worker = GatedWorker("instant-1")
    world = await make_world([worker])
    sandbox, guild, channel = world.sandbox, world.guild, world.channel
    alice = world.member("alice")
    inter = alice.invoke(channel.id, "imagine", {"prompt": "a fox"})
    await asyncio.wait_for(worker.accepted.wait(), 10)
    # Nobody may upload here any more: not the bot, not the webhook (which goes by @everyone).
    sandbox.set_overwrite(channel, guild.id, deny=P.ATTACH_FILES)
    sandbox.set_overwrite(channel, world.app.bot.user.id, deny=P.ATTACH_FILES)
    worker.gate.set()  # its preview cannot be shown: the job is stopped before it is charged
    msg = await world.wait(
        lambda m: m.id == inter.original_message_id and embed_title(m) == "Cancelled"
    )
    assert "Attach Files" in str(msg.embeds[0].get("description"))
    job_id = worker.submitted[0]
    job = await world.app.store.get(job_id)
    assert job is not None and job.state is JobState.CANCELED
    assert (
        worker.cancelled == [job_id]
    )  # stopped on the worker too    assert (await world.app.store.quota(alice.id, daily_limit=100)).used == 0
    rows = world.app.requests.channel_problems.rows()
    assert rows and rows[0]["source"] == "delivery" and rows[0]["channel_id"] == channel.id


async def test_a_finished_image_that_cannot_be_posted_goes_to_its_member_directly(
    make_world: Callable[..., Any],
) -> None:
    worker = GatedWorker("instant-1", steps=0)
    world = await make_world([worker])
    sandbox, guild, channel = world.sandbox, world.guild, world.channel
    alice, bob = world.member("alice"), world.member("bob")
    bob.user.dms_open = False  # bob takes no direct messages from server members
    bot_user = sandbox.state.users[world.app.bot.user.id]
    asks = {
        m.id: m.invoke(channel.id, "imagine", {"prompt": f"a fox for {m.user.username}"})
        for m in (alice, bob)
    }
    await asyncio.wait_for(worker.accepted.wait(), 10)
    sandbox.set_overwrite(channel, guild.id, deny=P.ATTACH_FILES)
    sandbox.set_overwrite(channel, bot_user.id, deny=P.ATTACH_FILES)
    worker.gate.set()
    worker.finish.set()
    # alice gets the image in a direct message, and a private note where she asked.
    dm = sandbox.state.open_dm(bot_user, alice.user)
    direct = await world.sandbox.wait_for_message(dm.id, lambda m: bool(m.attachments), 15)
    assert direct.guild_id is None and f"<#{channel.id}>" in direct.content
    assert direct.embeds and direct.embeds[0]["title"] == "Done"
    notes: dict[int, Message] = {}

    def private_note(m: Message) -> None:
        if m.visible_to in asks and m.id != asks[m.visible_to].original_message_id:
            notes[m.visible_to] = m

    # Ephemeral notes are not listed as channel history: look at what is stored, then listen.
    async with sandbox.subscribe() as events:
        for m in list(sandbox.state.messages[channel.id].values()):
            private_note(m)
        while len(notes) < 2:
            private_note((await asyncio.wait_for(events.get(), 15)).message)
    for member, needle in ((alice, "direct message"), (bob, "Ask a server admin")):
        note = notes[member.id]
        assert note.flags & MESSAGE_FLAG_EPHEMERAL and needle in note.content
        assert "Attach Files" in note.content
    assert not [m for m in sandbox.state.messages[sandbox.state.open_dm(bot_user, bob.user).id]]


async def test_after_the_token_expired_the_member_is_told_in_the_channel_in_plain_text(
    make_world: Callable[..., Any],
) -> None:
    worker = GatedWorker("instant-1", steps=0)
    world = await make_world([worker])
    sandbox, guild, channel = world.sandbox, world.guild, world.channel
    alice = world.member("alice")
    inter = alice.invoke(channel.id, "imagine", {"prompt": "a fox"})
    await asyncio.wait_for(worker.accepted.wait(), 10)
    await world.wait(lambda m: m.id == inter.original_message_id and bool(m.embeds))
    sandbox.clock.advance(16 * 60)  # Discord no longer takes the interaction's token
    sandbox.set_overwrite(channel, guild.id, deny=P.ATTACH_FILES)
    sandbox.set_overwrite(channel, world.app.bot.user.id, deny=P.ATTACH_FILES)
    worker.gate.set()
    worker.finish.set()
    msg = await world.wait(
        lambda m: m.id == inter.original_message_id and "Attach Files" in m.content
    )
    assert msg.content.startswith(f"<@{alice.id}>") and msg.embeds == []


async def test_discordpy_sees_the_overwrites_the_sandbox_announces(
    make_world: Callable[..., Any],
) -> None:
    world = await make_world([InstantWorker("instant-1")])
    bot = world.app.bot
    assert bot is not None and bot.user is not None
    cached = bot.get_channel(world.channel.id)
    assert isinstance(cached, discord.TextChannel)
    assert cached.permissions_for(cached.guild.me).attach_files
    updated = asyncio.ensure_future(bot.wait_for("guild_channel_update", timeout=10))
    world.sandbox.set_overwrite(world.channel, bot.user.id, deny=P.ATTACH_FILES)
    _, after = await updated
    perms = after.permissions_for(after.guild.me)
    assert not perms.attach_files and perms.send_messages and perms.embed_links
