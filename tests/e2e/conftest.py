"""End-to-end rig: the Discord sandbox, and gouache's real bot logged into it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import discord
import pytest
import yarl

from gouache.app import App, BotSettings
from gouache.bot.service import Tier
from gouache.pool.base import Worker
from gouache.queue.dispatcher import StageTimeouts
from gouache.queue.quota import QuotaPolicy
from gouache.storage.base import Store
from gouache.storage.redis import RedisStore
from gouache.storage.sqlite import SQLiteStore
from gouache_sandbox.discord import DiscordSandbox
from gouache_sandbox.discord.members import SimulatedMember
from gouache_sandbox.discord.state import Channel, Guild, Message

from ..sandbox.conftest import sandbox  # noqa: F401  (re-exported fixture)

VIP_ROLE_NAME = "vip"


@pytest.fixture(params=["sqlite", "redis"])
async def backend_store(request: pytest.FixtureRequest) -> AsyncIterator[Store | None]:
    """None (the rig's SQLite store) or a Redis store of this test's own prefix."""
    if request.param == "sqlite":
        yield None
        return
    url = request.getfixturevalue("redis_url")
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    yield RedisStore(url, prefix=prefix, policy=QuotaPolicy("UTC", default_limit=100), lease_s=60)
    await RedisStore(url, prefix=prefix).drop()


@dataclass
class World:
    sandbox: DiscordSandbox
    app: App
    guild: Guild
    channel: Channel
    vip_role: int

    def member(self, name: str, *, vip: bool = False, locale: str = "en-US") -> SimulatedMember:
        return self.sandbox.add_member(
            self.guild, name, roles=[self.vip_role] if vip else [], locale=locale
        )

    async def wait(self, predicate: Callable[[Message], bool], timeout: float = 15) -> Message:
        return await self.sandbox.wait_for_message(self.channel.id, predicate, timeout=timeout)

    async def reply(self, interaction: Any, timeout: float = 15) -> Message:
        """The bot's answer to an interaction (ephemeral or not)."""
        return await self.wait(
            lambda m: (
                bool(m.interaction_metadata) and int(m.interaction_metadata["id"]) == interaction.id
            ),  # type: ignore[index]
            timeout,
        )


def embed_title(m: Message) -> str:
    return str(m.embeds[0].get("title", "")) if m.embeds else ""


def footer(m: Message) -> str:
    return str(m.embeds[0].get("footer", {}).get("text", "")) if m.embeds else ""


def custom_ids(m: Message) -> list[str]:
    return [
        c["custom_id"]
        for row in m.components
        for c in row.get("components", [])
        if "custom_id" in c
    ]


@pytest.fixture
async def make_world(
    sandbox: DiscordSandbox,  # noqa: F811
    tmp_path: Path,
) -> AsyncIterator[Callable[..., Any]]:
    """Build and start an App against the sandbox; restart it on demand (same database)."""
    old_base = discord.http.Route.BASE
    old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    user, token, app_id = sandbox.add_bot("gouache")
    guild = sandbox.add_guild("community")
    channel = sandbox.add_channel(guild, "art")
    vip = sandbox.add_role(guild, VIP_ROLE_NAME)
    sandbox.join(guild, user)
    apps: list[App] = []

    async def build(workers: list[Worker], *, daily_limit: int = 100, **kw: Any) -> World:
        store = kw.pop("store", None) or SQLiteStore(
            tmp_path / "gouache.db",
            policy=QuotaPolicy("UTC", default_limit=daily_limit),
            lease_s=kw.pop("lease_s", 60),
        )
        app = App.assemble(
            store=store,
            workers=workers,
            images_dir=tmp_path / "images",
            policy=QuotaPolicy("UTC", default_limit=daily_limit),
            tiers=[Tier("default"), Tier("vip", weight=3, role_ids=frozenset({vip.id}))],
            timeouts=kw.pop("timeouts", StageTimeouts(submit=10, start=10, run=10, store=10)),
            bot=BotSettings(
                token=token,
                application_id=app_id,
                guild_ids=(guild.id,),
                api_base=sandbox.api_base,
                gateway_url=sandbox.gateway_url,
                client_options={"guild_ready_timeout": 0.05},
            ),
            delivery_options={"per_message_s": 0.1},
            grace_s=kw.pop("grace_s", 5),
            **kw,
        )
        await app.start(ready_timeout=15)
        apps.append(app)
        return World(sandbox, app, guild, channel, vip.id)

    try:
        yield build
    finally:
        for app in apps:
            if app.bot is not None and not app.bot.is_closed():
                await app.stop()
        discord.http.Route.BASE = old_base  # type: ignore[misc]
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(str(old_gateway))
