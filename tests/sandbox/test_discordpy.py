"""discord.py 2.7, unmodified, against the sandbox: login, sync, slash command, files, buttons, resume."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import discord
import pytest
import yarl
from discord import app_commands

from gouache_sandbox.discord import DiscordSandbox

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f"
    b"\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7V\xbd\xfa\x00\x00"
    b"\x00\x00IEND\xaeB`\x82"
)


@pytest.fixture
def pointed(sandbox: DiscordSandbox) -> Iterator[None]:
    """Point discord.py at the sandbox (the only two assignments allowed), then restore."""
    old_base = discord.http.Route.BASE
    old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = sandbox.api_base  # type: ignore[misc]
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(sandbox.gateway_url)
    try:
        yield
    finally:
        discord.http.Route.BASE = old_base  # type: ignore[misc]
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway


class Again(discord.ui.View):
    """A persistent view with one button."""

    def __init__(self, events: asyncio.Queue[tuple[str, Any]]) -> None:
        super().__init__(timeout=None)
        self.events = events

    @discord.ui.button(label="Again", custom_id="gouache:again", style=discord.ButtonStyle.primary)
    async def again(self, interaction: discord.Interaction, button: discord.ui.Button[Any]) -> None:
        await interaction.response.send_message("again!", ephemeral=True)
        await self.events.put(("click", interaction.user.id))


@pytest.fixture
async def bot(
    sandbox: DiscordSandbox, pointed: None
) -> AsyncIterator[
    tuple[discord.Client, app_commands.CommandTree[Any], asyncio.Queue[tuple[str, Any]], Any]
]:
    """A logged-in, connected discord.py client with a /draw command."""
    user, token, _ = sandbox.add_bot("gouache")
    guild = sandbox.add_guild("g")
    channel = sandbox.add_channel(guild, "general")
    sandbox.join(guild, user)
    events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    client = discord.Client(intents=discord.Intents.default(), guild_ready_timeout=0.05)
    tree = app_commands.CommandTree(client)

    @tree.command(name="draw", description="Draw a picture")
    async def draw(interaction: discord.Interaction, prompt: str) -> None:
        await interaction.response.defer(thinking=True)
        embed = discord.Embed(title="Queued", description=prompt)
        await interaction.edit_original_response(embed=embed, view=Again(events))
        await interaction.followup.send(file=discord.File(io.BytesIO(PNG), "result.png"))
        await events.put(("draw", (prompt, interaction.locale.value, interaction.user.id)))

    @client.event
    async def on_ready() -> None:
        await events.put(("ready", None))

    @client.event
    async def on_resumed() -> None:
        await events.put(("resumed", None))

    async def setup_hook() -> None:
        client.add_view(Again(events))

    client.setup_hook = setup_hook  # type: ignore[method-assign]
    await client.login(token)
    task = asyncio.create_task(client.connect())
    try:
        assert await asyncio.wait_for(events.get(), 10) == ("ready", None)
        yield client, tree, events, (guild, channel)
    finally:
        await client.close()
        await asyncio.wait_for(task, 10)


async def next_event(events: asyncio.Queue[tuple[str, Any]], kind: str) -> Any:
    """The next event of ``kind`` (others are skipped), within 10 s."""
    while True:
        name, value = await asyncio.wait_for(events.get(), 10)
        if name == kind:
            return value


async def test_full_flow(sandbox: DiscordSandbox, bot: Any) -> None:
    client, tree, events, (guild, channel) = bot
    synced = await tree.sync()
    assert [c.name for c in synced] == ["draw"]
    assert synced[0].id > 0

    alice = sandbox.add_member(guild, "alice", locale="fr")
    inter = alice.invoke(channel.id, "draw", {"prompt": "a red fox"})
    assert await next_event(events, "draw") == ("a red fox", "fr", alice.id)
    assert inter.acknowledged and inter.response_type == 5

    original = sandbox.state.get_message(channel.id, inter.original_message_id or 0)
    assert original.embeds[0]["title"] == "Queued"
    assert original.embeds[0]["description"] == "a red fox"
    assert not original.flags & 128  # no longer "thinking"
    followup = await sandbox.wait_for_message(channel.id, lambda m: bool(m.attachments))
    assert followup.attachments[0].filename == "result.png"
    assert followup.interaction_metadata is not None
    async with aiohttp.ClientSession() as http:
        url = f"{sandbox.base_url}/attachments/{channel.id}/{followup.attachments[0].id}/result.png"
        async with http.get(url) as resp:
            assert resp.status == 200
            assert await resp.read() == PNG

    # The persistent view answers a click on the edited original response.
    click = alice.click(original, "gouache:again")
    assert await next_event(events, "click") == alice.id
    assert click.response_type == 4

    # Cut the connection without a close frame: discord.py resumes and keeps working.
    session = sandbox.gateway.live_sessions(client.user.id)[0]
    assert sandbox.drop_connections(user_id=client.user.id) == 1
    await next_event(events, "resumed")
    assert sandbox.gateway.live_sessions(client.user.id)[0].id == session.id
    alice.invoke(channel.id, "draw", {"prompt": "after resume"})
    assert (await next_event(events, "draw"))[0] == "after resume"


async def test_reconnect_and_invalid_session(sandbox: DiscordSandbox, bot: Any) -> None:
    client, tree, events, (guild, channel) = bot
    await tree.sync()
    sandbox.send_reconnect(user_id=client.user.id)
    await next_event(events, "resumed")
    # op 9 d:false: discord.py identifies anew (new session id) and becomes ready again.
    old = sandbox.gateway.live_sessions(client.user.id)[0].id
    sandbox.clock.advance(6)  # past the identify concurrency window
    sandbox.send_invalid_session(False, user_id=client.user.id)
    await next_event(events, "ready")
    new = sandbox.gateway.live_sessions(client.user.id)[0].id
    assert new != old
    alice = sandbox.add_member(guild, "bob")
    alice.invoke(channel.id, "draw", {"prompt": "x"})
    assert (await next_event(events, "draw"))[0] == "x"


async def test_rate_limits_are_honoured_by_discordpy(sandbox: DiscordSandbox, bot: Any) -> None:
    client, _, _, (_, channel) = bot
    target = client.get_channel(channel.id)
    assert isinstance(target, discord.TextChannel)
    # A forced 429 (JSON body, Retry-After, Via) is retried by discord.py, not raised.
    sandbox.fail_route("POST", "/channels/{channel_id}/messages", 429, times=1)
    sent = await asyncio.wait_for(target.send("through a 429"), 10)
    assert sent.content == "through a 429"
    assert [s for m, r, s in sandbox.rest.calls if r == "/channels/{channel_id}/messages"] == [
        429,
        200,
    ]
    # A bucket of 1 per 0.3 s: discord.py reads X-RateLimit-Remaining: 0 and waits for the reset.
    sandbox.rest.ratelimits.set_route_limit("POST", "/channels/{channel_id}/messages", 1, 0.3)
    sandbox.rest.ratelimits.reset()
    for i in range(3):
        await asyncio.wait_for(target.send(f"m{i}"), 10)
    assert [m.content for m in sandbox.messages(channel.id)][-3:] == ["m0", "m1", "m2"]


async def test_autosharded_client_uses_gateway_bot_and_shards(
    sandbox: DiscordSandbox, pointed: None
) -> None:
    user, token, _ = sandbox.add_bot("sharded")
    guild = sandbox.add_guild("g")
    sandbox.join(guild, user)
    ready = asyncio.Event()
    client = discord.AutoShardedClient(intents=discord.Intents.default(), guild_ready_timeout=0.05)

    @client.event
    async def on_ready() -> None:
        ready.set()

    await client.login(token)
    task = asyncio.create_task(client.connect())
    try:
        await asyncio.wait_for(ready.wait(), 10)
        assert client.shard_count == 1
        assert [s.shard for s in sandbox.gateway.live_sessions(user.id)] == [(0, 1)]
        assert client.get_guild(guild.id) is not None
    finally:
        await client.close()
        await asyncio.wait_for(task, 10)
