"""Simulated members, observers and the HTTP control API."""

from __future__ import annotations

import asyncio
import re
import sys
from typing import Any

import aiohttp
import pytest

from gouache_sandbox.discord import DiscordSandbox
from gouache_sandbox.discord.messages import new_message
from tests.sandbox.gwclient import RawGateway

INTERACTION_KEYS = {
    "id",
    "application_id",
    "type",
    "token",
    "version",
    "attachment_size_limit",
    "data",
    "member",
    "channel",
    "guild_id",
    "locale",
    "guild_locale",
    "app_permissions",
    "entitlements",
    "authorizing_integration_owners",
    "context",
}


async def connected_bot(sandbox: DiscordSandbox, http: aiohttp.ClientSession) -> tuple[Any, ...]:
    """A bot with /draw, connected over a raw gateway, in a guild with a channel."""
    bot, token, app_id = sandbox.add_bot("bot")
    guild = sandbox.add_guild("g")
    channel = sandbox.add_channel(guild, "general")
    sandbox.join(guild, bot)
    cmds = [
        {
            "name": "draw",
            "description": "Draw",
            "options": [
                {"type": 3, "name": "prompt", "description": "p", "required": True},
                {"type": 4, "name": "count", "description": "n"},
            ],
        }
    ]
    async with http.put(
        f"{sandbox.api_base}/applications/{app_id}/commands",
        json=cmds,
        headers={"Authorization": f"Bot {token}"},
    ) as resp:
        assert resp.status == 200
    gw = await RawGateway.connect(http, sandbox.gateway_url)
    await gw.recv()
    await gw.identify_bot(token, intents=1 | (1 << 9) | (1 << 15))
    return bot, token, app_id, guild, channel, gw


async def test_invoke_builds_strict_interaction(sandbox: DiscordSandbox) -> None:
    async with aiohttp.ClientSession() as http:
        _, _, app_id, guild, channel, gw = await connected_bot(sandbox, http)
        gold = sandbox.add_role(guild, "gold")
        alice = sandbox.add_member(guild, "alice", roles=[gold.id], locale="de")
        inter = alice.invoke(channel.id, "draw", {"prompt": "a fox", "count": 2})
        frame = await gw.recv_until(lambda f: f.get("t") == "INTERACTION_CREATE")
        d = frame["d"]
        assert set(d) >= INTERACTION_KEYS
        assert d["id"] == str(inter.id) and d["token"] == inter.token and d["type"] == 2
        assert d["application_id"] == str(app_id)
        assert d["data"]["name"] == "draw" and d["data"]["type"] == 1
        assert d["data"]["options"] == [
            {"type": 3, "name": "prompt", "value": "a fox"},
            {"type": 4, "name": "count", "value": 2},
        ]
        assert d["member"]["roles"] == [str(gold.id)] and d["member"]["user"]["id"] == str(alice.id)
        assert set(d["member"]) >= {"user", "roles", "joined_at", "permissions", "flags"}
        assert set(d["channel"]) >= {"id", "type", "name", "position"}
        assert d["locale"] == "de"
        # The id is a snowflake carrying the sandbox time (discord.py derives expiry from it).
        assert abs(((int(d["id"]) >> 22) + 1420070400000) / 1000 - sandbox.clock.now()) < 5
        with pytest.raises(ValueError, match="required"):
            alice.invoke(channel.id, "draw", {"count": 1})
        with pytest.raises(LookupError):
            alice.invoke(channel.id, "nope")

        # The bot answers with a button; the member clicks it.
        cb = f"{sandbox.api_base}/interactions/{inter.id}/{inter.token}/callback"
        body = {
            "type": 4,
            "data": {
                "content": "ok",
                "components": [
                    {
                        "type": 1,
                        "components": [{"type": 2, "style": 1, "label": "Go", "custom_id": "go"}],
                    }
                ],
            },
        }
        async with http.post(cb, json=body) as resp:
            assert resp.status == 204
        msg = await sandbox.wait_for_message(channel.id, lambda m: m.content == "ok")
        assert msg.interaction_metadata is not None and msg.interaction_metadata["name"] == "draw"
        assert [m.id for m in alice.read(channel.id)] == [msg.id]
        click = alice.click(msg, "go")
        frame = await gw.recv_until(lambda f: f.get("t") == "INTERACTION_CREATE")
        assert frame["d"]["type"] == 3 and frame["d"]["id"] == str(click.id)
        assert frame["d"]["data"] == {"custom_id": "go", "component_type": 2}
        assert frame["d"]["message"]["id"] == str(msg.id)
        with pytest.raises(LookupError):
            alice.click(msg, "missing")
        # A type 7 answer edits the clicked message.
        cb = f"{sandbox.api_base}/interactions/{click.id}/{click.token}/callback"
        async with http.post(
            cb, json={"type": 7, "data": {"content": "clicked", "components": []}}
        ) as resp:
            assert resp.status == 204
        edited = await sandbox.wait_for_message(channel.id, lambda m: m.content == "clicked")
        assert edited.id == msg.id and edited.components == []


async def test_subscribe_and_wait_for_message(sandbox: DiscordSandbox) -> None:
    guild = sandbox.add_guild("g")
    channel = sandbox.add_channel(guild, "c")
    author = sandbox.state.new_user("x")
    async with sandbox.subscribe() as events:
        waiter = asyncio.create_task(
            sandbox.wait_for_message(channel.id, lambda m: m.content == "two")
        )
        for text in ("one", "two"):
            sandbox.state.store_message(
                new_message(
                    sandbox.state, channel, author, {"content": text}, [], allow_components=False
                )
            )
        assert (await asyncio.wait_for(waiter, 5)).content == "two"
        kinds = [(await asyncio.wait_for(events.get(), 5)).message.content for _ in range(2)]
        assert kinds == ["one", "two"]
    with pytest.raises(TimeoutError):
        await sandbox.wait_for_message(channel.id, lambda m: m.content == "never", timeout=0.05)


async def test_http_control_routes(sandbox: DiscordSandbox) -> None:
    _, token = sandbox.add_user_account("acct")
    async with aiohttp.ClientSession() as http:
        gw = await RawGateway.connect(http, sandbox.gateway_url)
        await gw.recv()
        await gw.identify_user(token)
        async with http.get(f"{sandbox.base_url}/_sandbox/state") as resp:
            state = await resp.json()
        assert state["result"]["sessions"][0]["connected"] is True
        async with http.post(
            f"{sandbox.base_url}/_sandbox/gateway/close", json={"code": 4000}
        ) as resp:
            assert (await resp.json())["result"] == 1
        assert await gw.close_code() == 4000
        before = sandbox.clock.now()
        async with http.post(
            f"{sandbox.base_url}/_sandbox/clock/advance", json={"seconds": 60}
        ) as resp:
            assert (await resp.json())["result"] >= before + 60


async def test_entry_point_prints_urls_and_tokens() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gouache_sandbox",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(20):
            while not lines or "Ctrl-C" not in lines[-1]:
                lines.append((await proc.stdout.readline()).decode())
        text = "".join(lines)
        api = re.search(r"REST\s+(http://\S+/api/v10)", text)
        token = re.search(r"token \(raw Authorization\):\s+(\S+)", text)
        assert api is not None and token is not None and "gateway  ws://" in text
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"{api.group(1)}/users/@me", headers={"Authorization": token.group(1)}
            ) as resp,
        ):
            assert resp.status == 200
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
