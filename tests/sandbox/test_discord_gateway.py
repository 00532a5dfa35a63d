"""The sandbox gateway, driven by a raw aiohttp WebSocket client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from gouache_sandbox.discord import DiscordSandbox
from tests.sandbox.gwclient import RawGateway

GUILD_MESSAGES = 1 << 9
MESSAGE_CONTENT = 1 << 15


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def world(sandbox: DiscordSandbox) -> dict[str, Any]:
    """A guild with a channel, a bot and a user account in it."""
    bot, bot_token, app_id = sandbox.add_bot("bot")
    account, account_token = sandbox.add_user_account("acct")
    guild = sandbox.add_guild("g")
    channel = sandbox.add_channel(guild, "general")
    sandbox.join(guild, bot)
    sandbox.join(guild, account)
    return {
        "bot": bot,
        "bot_token": bot_token,
        "app_id": app_id,
        "account": account,
        "account_token": account_token,
        "guild": guild,
        "channel": channel,
    }


def post(sandbox: DiscordSandbox, channel_id: int, content: str) -> None:
    """A message from a simulated person, through the state (fans out to the gateway)."""
    from gouache_sandbox.discord.messages import new_message

    author = sandbox.state.new_user("someone")
    msg = new_message(
        sandbox.state,
        sandbox.state.get_channel(channel_id),
        author,
        {"content": content},
        [],
        allow_components=False,
    )
    sandbox.state.store_message(msg)


async def test_zlib_stream_hello_ready_guilds_and_heartbeat(
    sandbox: DiscordSandbox, http: aiohttp.ClientSession, world: dict[str, Any]
) -> None:
    gw = await RawGateway.connect(http, sandbox.gateway_url, compress=True)
    hello = await gw.recv()
    assert hello["op"] == 10 and hello["d"]["heartbeat_interval"] == 41250
    ready = await gw.identify_bot(world["bot_token"], intents=GUILD_MESSAGES | 1, shard=[0, 1])
    d = ready["d"]
    assert ready["s"] == 1
    assert d["session_id"] and d["resume_gateway_url"] == sandbox.gateway_url
    assert d["user"]["id"] == str(world["bot"].id) and d["user"]["bot"] is True
    assert d["guilds"] == [{"id": str(world["guild"].id), "unavailable": True}]
    assert d["application"]["id"] == str(world["app_id"])
    assert d["shard"] == [0, 1]
    guild_create = await gw.recv()
    assert guild_create["t"] == "GUILD_CREATE" and guild_create["s"] == 2
    assert [c["name"] for c in guild_create["d"]["channels"]] == ["general"]
    await gw.send({"op": 1, "d": 2})
    assert (await gw.recv())["op"] == 11
    # One inflate context for the whole connection, every message flushed with Z_SYNC_FLUSH.
    assert len(gw.raw_frames) == 4
    assert all(f.endswith(b"\x00\x00\xff\xff") for f in gw.raw_frames)
    sandbox.gateway_faults.request_heartbeat()
    assert (await gw.recv())["op"] == 1
    await gw.ws.close(code=4000)


async def test_user_account_ready_and_message_fanout(
    sandbox: DiscordSandbox, http: aiohttp.ClientSession, world: dict[str, Any]
) -> None:
    user_gw = await RawGateway.connect(http, sandbox.gateway_url)
    await user_gw.recv()
    ready = await user_gw.identify_user(world["account_token"])
    assert ready["d"]["user"]["id"] == str(world["account"].id)
    assert ready["d"]["guilds"][0]["channels"][0]["id"] == str(world["channel"].id)
    bot_gw = await RawGateway.connect(http, sandbox.gateway_url)
    await bot_gw.recv()
    await bot_gw.identify_bot(world["bot_token"], intents=GUILD_MESSAGES | 1)
    post(sandbox, world["channel"].id, "hello there")
    seen_user = await user_gw.recv_until(lambda f: f.get("t") == "MESSAGE_CREATE")
    seen_bot = await bot_gw.recv_until(lambda f: f.get("t") == "MESSAGE_CREATE")
    assert seen_user["d"]["content"] == "hello there"
    assert seen_user["d"]["guild_id"] == str(world["guild"].id)
    # Without the MESSAGE_CONTENT intent a bot sees the message but not its content.
    assert seen_bot["d"]["content"] == "" and seen_bot["d"]["id"] == seen_user["d"]["id"]
    msg = sandbox.state.get_message(world["channel"].id, int(seen_user["d"]["id"]))
    msg.content = "edited"
    sandbox.state.announce_update(msg)
    upd = await user_gw.recv_until(lambda f: f.get("t") == "MESSAGE_UPDATE")
    assert upd["d"]["content"] == "edited" and upd["d"]["edited_timestamp"]
    sandbox.state.delete_message(msg)
    dele = await user_gw.recv_until(lambda f: f.get("t") == "MESSAGE_DELETE")
    assert dele["d"] == {
        "id": str(msg.id),
        "channel_id": str(msg.channel_id),
        "guild_id": str(msg.guild_id),
    }


async def test_resume_replays_missed_dispatches(
    sandbox: DiscordSandbox, http: aiohttp.ClientSession, world: dict[str, Any]
) -> None:
    gw = await RawGateway.connect(http, sandbox.gateway_url)
    await gw.recv()
    ready = await gw.identify_user(world["account_token"])
    session_id = ready["d"]["session_id"]
    post(sandbox, world["channel"].id, "one")
    first = await gw.recv_until(lambda f: f.get("t") == "MESSAGE_CREATE")
    assert sandbox.drop_connections(user_id=world["account"].id) == 1
    with pytest.raises(ConnectionError):
        await gw.recv()
    post(sandbox, world["channel"].id, "two")
    post(sandbox, world["channel"].id, "three")
    gw2 = await RawGateway.connect(http, sandbox.gateway_url)
    await gw2.recv()
    await gw2.send(
        {
            "op": 6,
            "d": {"token": world["account_token"], "session_id": session_id, "seq": first["s"]},
        }
    )
    replay = [await gw2.recv() for _ in range(3)]
    assert [f["d"].get("content") for f in replay[:2]] == ["two", "three"]
    assert [f["s"] for f in replay] == [first["s"] + 1, first["s"] + 2, first["s"] + 3]
    assert replay[2]["t"] == "RESUMED"


async def test_resume_of_dead_session_gets_op9_false(
    sandbox: DiscordSandbox, http: aiohttp.ClientSession, world: dict[str, Any]
) -> None:
    gw = await RawGateway.connect(http, sandbox.gateway_url)
    await gw.recv()
    await gw.send({"op": 6, "d": {"token": world["account_token"], "session_id": "nope", "seq": 3}})
    assert await gw.recv() == {"op": 9, "d": False, "s": None, "t": None}
    # The connection stays usable for a fresh IDENTIFY.
    ready = await gw.identify_user(world["account_token"])
    session_id = ready["d"]["session_id"]
    sandbox.drop_connections()
    sandbox.clock.advance(sandbox.gateway.resume_window + 1)
    gw2 = await RawGateway.connect(http, sandbox.gateway_url)
    await gw2.recv()
    await gw2.send(
        {"op": 6, "d": {"token": world["account_token"], "session_id": session_id, "seq": 1}}
    )
    assert (await gw2.recv())["op"] == 9


async def test_resume_with_future_seq_closes_4007(
    sandbox: DiscordSandbox, http: aiohttp.ClientSession, world: dict[str, Any]
) -> None:
    gw = await RawGateway.connect(http, sandbox.gateway_url)
    await gw.recv()
    ready = await gw.identify_user(world["account_token"])
    sandbox.drop_connections()
    gw2 = await RawGateway.connect(http, sandbox.gateway_url)
    await gw2.recv()
    await gw2.send(
        {
            "op": 6,
            "d": {
                "token": world["account_token"],
                "session_id": ready["d"]["session_id"],
                "seq": 999,
            },
        }
    )
    assert await gw2.close_code() == 4007


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        (["{not json"], 4002),
        ([{"op": 42, "d": None}], 4001),
        ([{"op": 3, "d": {"status": "online"}}], 4003),
        ([{"op": 2, "d": {"token": "bad", "intents": 0, "properties": {}}}], 4004),
        ([{"op": 2, "d": {"token": "BOT", "intents": -1, "properties": {}}}], 4013),
        ([{"op": 2, "d": {"token": "BOT", "intents": 1 << 1, "properties": {}}}], 4014),
        ([{"op": 2, "d": {"token": "BOT", "intents": 0, "properties": {}, "shard": [2, 1]}}], 4010),
        (
            [
                {"op": 2, "d": {"token": "BOT", "intents": 0, "properties": {}}},
                {"op": 2, "d": {"token": "BOT", "intents": 0, "properties": {}}},
            ],
            4005,
        ),
    ],
)
async def test_close_codes(
    sandbox: DiscordSandbox,
    http: aiohttp.ClientSession,
    world: dict[str, Any],
    frames: list[Any],
    code: int,
) -> None:
    world["bot"]
    app = sandbox.state.applications[world["app_id"]]
    app.privileged_intents = 0
    gw = await RawGateway.connect(http, sandbox.gateway_url)
    await gw.recv()
    for frame in frames:
        if isinstance(frame, str):
            await gw.ws.send_str(frame)
        else:
            if isinstance(frame["d"], dict) and frame["d"].get("token") == "BOT":
                frame["d"]["token"] = world["bot_token"]
            await gw.send(frame)
    assert await gw.close_code() == code


async def test_sharding_required_and_bad_version(
    sandbox: DiscordSandbox, http: aiohttp.ClientSession, world: dict[str, Any]
) -> None:
    sandbox.state.applications[world["app_id"]].min_shards = 2
    gw = await RawGateway.connect(http, sandbox.gateway_url)
    await gw.recv()
    await gw.send({"op": 2, "d": {"token": world["bot_token"], "intents": 0, "properties": {}}})
    assert await gw.close_code() == 4011
    gw2 = await RawGateway.connect(http, sandbox.gateway_url, v=5)
    assert await gw2.close_code() == 4012


async def test_121_sends_close_4008(
    sandbox: DiscordSandbox, http: aiohttp.ClientSession, world: dict[str, Any]
) -> None:
    gw = await RawGateway.connect(http, sandbox.gateway_url)
    await gw.recv()
    for _ in range(121):
        await gw.send({"op": 1, "d": None})
    acks = 0
    while True:
        try:
            frame = await gw.recv()
        except ConnectionError:
            break
        acks += frame["op"] == 11
    assert acks == 120
    assert gw.ws.close_code == 4008


async def test_identify_concurrency_answers_op9(
    sandbox: DiscordSandbox, http: aiohttp.ClientSession, world: dict[str, Any]
) -> None:
    gw = await RawGateway.connect(http, sandbox.gateway_url)
    await gw.recv()
    await gw.identify_bot(world["bot_token"])
    gw2 = await RawGateway.connect(http, sandbox.gateway_url)
    await gw2.recv()
    await gw2.send({"op": 2, "d": {"token": world["bot_token"], "intents": 0, "properties": {}}})
    assert await gw2.recv() == {"op": 9, "d": False, "s": None, "t": None}
    sandbox.clock.advance(5.0)
    assert (await gw2.identify_bot(world["bot_token"]))["t"] == "READY"


async def test_zombie_stops_acks(
    sandbox: DiscordSandbox, http: aiohttp.ClientSession, world: dict[str, Any]
) -> None:
    gw = await RawGateway.connect(http, sandbox.gateway_url)
    await gw.recv()
    await gw.identify_user(world["account_token"])
    await gw.send({"op": 1, "d": 1})
    assert (await gw.recv())["op"] == 11
    assert sandbox.stop_acking(user_id=world["account"].id) == 1
    await gw.send({"op": 1, "d": 1})
    sandbox.gateway_faults.request_heartbeat()
    # Frames are ordered: the server's op 1 arrives with no ACK before it.
    assert (await gw.recv())["op"] == 1
    conn = next(iter(sandbox.gateway.connections))
    assert conn.heartbeats == 2 and conn.acks == 1


async def test_server_ends_silent_session_with_4009(http: aiohttp.ClientSession) -> None:
    async with DiscordSandbox(heartbeat_interval_ms=100, with_midjourney=False) as sandbox:
        _, token = sandbox.add_user_account("quiet")
        gw = await RawGateway.connect(http, sandbox.gateway_url)
        assert (await gw.recv())["d"]["heartbeat_interval"] == 100
        ready = await gw.identify_user(token)
        assert await gw.close_code() == 4009
        assert ready["d"]["session_id"] not in sandbox.gateway.sessions


async def test_op7_op9_close_and_restart_faults(
    sandbox: DiscordSandbox, http: aiohttp.ClientSession, world: dict[str, Any]
) -> None:
    gw = await RawGateway.connect(http, sandbox.gateway_url)
    await gw.recv()
    ready = await gw.identify_user(world["account_token"])
    sid = ready["d"]["session_id"]
    sandbox.send_reconnect()
    assert (await gw.recv())["op"] == 7
    sandbox.send_invalid_session(True)
    assert await gw.recv() == {"op": 9, "d": True, "s": None, "t": None}
    assert sid in sandbox.gateway.sessions
    sandbox.close_connections(4000)
    assert await gw.close_code() == 4000
    assert sid in sandbox.gateway.sessions  # 4000 keeps the session resumable

    gw2 = await RawGateway.connect(http, sandbox.gateway_url)
    await gw2.recv()
    await gw2.send({"op": 6, "d": {"token": world["account_token"], "session_id": sid, "seq": 1}})
    assert (await gw2.recv_until(lambda f: f.get("t") == "RESUMED"))["t"] == "RESUMED"
    assert sandbox.restart_gateway(resumable=False) == 1
    with pytest.raises(ConnectionError):
        await gw2.recv()
    assert sid not in sandbox.gateway.sessions

    gw3 = await RawGateway.connect(http, sandbox.gateway_url)
    await gw3.recv()
    ready3 = await gw3.identify_user(world["account_token"])
    sandbox.send_invalid_session(False)
    assert (await gw3.recv())["d"] is False
    assert ready3["d"]["session_id"] not in sandbox.gateway.sessions
