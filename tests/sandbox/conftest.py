"""Fixtures: a started Discord sandbox on loopback with a fast Midjourney stand-in, and a
bot with a /draw command in a guild with one member."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from gouache_sandbox.discord import DiscordSandbox


@pytest.fixture
async def sandbox() -> AsyncIterator[DiscordSandbox]:
    """A running sandbox; the Midjourney stand-in steps without delay."""
    sb = DiscordSandbox()
    assert sb.midjourney is not None
    sb.midjourney.settings.step_delay = 0.0
    sb.midjourney.settings.progress_steps = (15, 50, 93)
    sb.midjourney.settings.tile_size = 32
    await sb.start()
    try:
        yield sb
    finally:
        await sb.aclose()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def world(sandbox: DiscordSandbox, http: aiohttp.ClientSession) -> dict[str, Any]:
    """A bot (with its managed role) and a member, alice, in a guild; the bot has /draw,
    whose options cover text, user, channel, role and attachment."""
    bot, token, app_id = sandbox.add_bot("bot")
    guild = sandbox.add_guild("g")
    channel = sandbox.add_channel(guild, "general")
    sandbox.join(guild, bot)
    member = sandbox.add_member(guild, "alice")
    cmds = [
        {
            "name": "draw",
            "description": "Draw",
            "type": 1,
            "options": [
                {"type": 3, "name": "prompt", "description": "p", "required": True},
                {"type": 6, "name": "who", "description": "u"},
                {"type": 7, "name": "where", "description": "c"},
                {"type": 8, "name": "role", "description": "r"},
                {"type": 11, "name": "image", "description": "i"},
            ],
        }
    ]
    auth = {"Authorization": f"Bot {token}"}
    async with http.put(
        f"{sandbox.api_base}/applications/{app_id}/commands", json=cmds, headers=auth
    ) as resp:
        assert resp.status == 200
    return {
        "bot": bot,
        "token": token,
        "app_id": app_id,
        "guild": guild,
        "channel": channel,
        "member": member,
        "auth": auth,
        "url": f"{sandbox.api_base}/channels/{channel.id}/messages",
    }
