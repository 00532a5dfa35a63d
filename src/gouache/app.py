"""Wiring: store → pool → dispatcher → bot → delivery, and a graceful start and stop.

No business rules live here. `App.start` brings the parts up in dependency
order; `App.stop` stops intake first (new requests are refused politely),
lets running jobs finish up to a grace period, flushes the last message edits
and releases everything. Jobs still running at the end keep their leases:
after a restart they are recovered, re-attached or failed and refunded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import discord
import structlog
import yarl

from gouache.bot.client import GouacheBot
from gouache.bot.delivery import Delivery, DiscordSender
from gouache.bot.service import Requests, Tier
from gouache.events import EventBus
from gouache.pool.base import Worker
from gouache.pool.pool import Pool
from gouache.queue.dispatcher import AdaptiveLimit, Dispatcher, StageTimeouts
from gouache.queue.quota import QuotaPolicy, system_clock
from gouache.storage.base import Store
from gouache.storage.images import ImageStore

log = structlog.get_logger(__name__)


def point_discord(api_base: str | None, gateway_url: str | None) -> None:
    """Send discord.py to another Discord-compatible server (a proxy, or the sandbox)."""
    if api_base:
        discord.http.Route.BASE = api_base.rstrip("/")
    if gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


@dataclass
class BotSettings:
    """What the member-facing bot needs."""

    token: str
    application_id: int
    owner_ids: frozenset[int] = frozenset()
    guild_ids: tuple[int, ...] = ()
    api_base: str | None = None
    gateway_url: str | None = None
    client_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class App:
    """One gouache process."""

    store: Store
    pool: Pool
    images: ImageStore
    bus: EventBus
    dispatcher: Dispatcher
    requests: Requests
    bot: GouacheBot | None = None
    delivery: Delivery | None = None
    bot_settings: BotSettings | None = None
    grace_s: float = 30.0
    _bot_task: asyncio.Task[None] | None = None

    @classmethod
    def assemble(
        cls,
        *,
        store: Store,
        workers: Iterable[Worker],
        images_dir: str | Path,
        policy: QuotaPolicy,
        tiers: list[Tier] | None = None,
        default_tier: str = "default",
        max_queued: int | None = 50,
        prompt_max_length: int = 1500,
        timeouts: StageTimeouts | None = None,
        max_batch: int = 32,
        lease_s: float = 120.0,
        max_attempts: int = 3,
        bot: BotSettings | None = None,
        grace_s: float = 30.0,
        delivery_options: dict[str, Any] | None = None,
    ) -> App:
        """Build every part from settings (config loading maps the TOML file onto this)."""
        pool = Pool(workers)
        images = ImageStore(images_dir)
        bus = EventBus()
        dispatcher = Dispatcher(
            store,
            pool,
            images,
            bus,
            timeouts=timeouts,
            max_batch=max_batch,
            lease_s=lease_s,
            max_attempts=max_attempts,
            limit=AdaptiveLimit(initial=min(8, max_batch), maximum=max(8, max_batch * 8)),
        )
        requests = Requests(
            store=store,
            policy=policy,
            tiers=tiers or [Tier(default_tier)],
            default_tier=default_tier,
            max_queued=max_queued,
            prompt_max_length=prompt_max_length,
            backends=pool.kinds,
            eta=dispatcher.eta,
            cancel_job=dispatcher.cancel,
            clock=getattr(store, "clock", system_clock),
        )
        app = cls(
            store=store,
            pool=pool,
            images=images,
            bus=bus,
            dispatcher=dispatcher,
            requests=requests,
            bot_settings=bot,
            grace_s=grace_s,
        )
        if bot is not None:
            point_discord(bot.api_base, bot.gateway_url)
            client = GouacheBot(
                requests,
                application_id=bot.application_id,
                owner_ids=bot.owner_ids,
                guild_ids=bot.guild_ids,
                pool_snapshot=pool.snapshot,
                backends=pool.kinds(),
                **bot.client_options,
            )
            app.delivery = Delivery(
                store,
                images,
                bus,
                DiscordSender(client, bot.application_id),
                eta=dispatcher.eta,
                **(delivery_options or {}),
            )
            client.delivery = app.delivery
            app.bot = client
        return app

    async def start(self, *, ready_timeout: float = 60.0) -> None:
        """Bring everything up; returns when the bot is connected (if there is one)."""
        await self.store.start()
        await self.pool.start()
        await self.dispatcher.start()
        if self.delivery is not None:
            await self.delivery.start()
        if self.bot is not None and self.bot_settings is not None:
            await self.bot.login(self.bot_settings.token)
            self._bot_task = asyncio.create_task(
                self.bot.connect(reconnect=True), name="discord-bot"
            )
            async with asyncio.timeout(ready_timeout):
                await self.bot.wait_until_ready()
        log.info("app.started", workers=len(self.pool), bot=self.bot is not None)

    async def stop(self) -> None:
        """Graceful stop: refuse new work, let running jobs finish (up to the grace period)."""
        log.info("app.stopping", in_flight=self.dispatcher.in_flight, grace_s=self.grace_s)
        if self.bot is not None:
            self.bot.accepting = False
        await self.dispatcher.drain(self.grace_s)
        if self.delivery is not None:
            await self.delivery.flush(timeout=5)
        await self.dispatcher.aclose()
        if self.delivery is not None:
            await self.delivery.aclose()
        if self.bot is not None:
            await self.bot.close()
        if self._bot_task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._bot_task, 10)
        await self.pool.aclose()
        await self.store.aclose()
        log.info("app.stopped")
