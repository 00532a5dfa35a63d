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
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import discord
import structlog
import yarl
from pydantic import SecretStr

from gouache.admin.metrics import Metrics
from gouache.admin.server import AdminServer
from gouache.admin.status import StatusPublisher, local_rows
from gouache.bot.client import GouacheBot
from gouache.bot.delivery import Delivery, DiscordSender
from gouache.bot.permissions import ChannelProblems
from gouache.bot.service import Requests, Tier
from gouache.channels.catalog import ModelCatalog
from gouache.channels.content import AdultWords
from gouache.channels.rules import ChannelRules
from gouache.channels.sources import comfy_sources, healthy_in_other_processes
from gouache.channels.store import ChannelStore
from gouache.config import Config
from gouache.errors import ConfigError, ErrorCode, GouacheError
from gouache.events import EventBus
from gouache.images.check import ImageLimits
from gouache.images.inputs import InputImages
from gouache.intake import (
    Intake,
    IntakeSettings,
    LimitSettings,
    ModerationSettings,
    TranslateSettings,
)
from gouache.jobs import Job
from gouache.pool.base import AlertSink, Worker, WorkerAlert
from gouache.pool.leases import WorkerLeases
from gouache.pool.pool import Pool
from gouache.pool.workflows import Workflow, WorkflowError
from gouache.queue.dispatcher import AdaptiveLimit, Dispatcher, StageTimeouts
from gouache.queue.quota import QuotaPolicy, system_clock
from gouache.runtime import tune_gc
from gouache.storage.base import Store
from gouache.storage.images import ImageStore

log = structlog.get_logger(__name__)


class BotDisconnected(GouacheError):
    """Discord ended the bot's gateway connection for good (4004, 4010–4014: never resume).

    The process cannot serve its members any more; `gouache run` exits with
    this message so its supervisor restarts it and the owner reads why.
    """

    code = ErrorCode.BOT_DISCONNECTED


class OwnerAlerts:
    """Tells the owners what needs them: a log line, and a direct message once the bot
    is connected.

    Workers are built with it before the bot exists (the bot needs the pool that
    holds them), so the bot is attached to it when it is built.
    """

    def __init__(self, owner_ids: Iterable[int] = ()) -> None:
        self.owner_ids = frozenset(owner_ids)
        self._bot: discord.Client | None = None
        self._notes: set[asyncio.Task[None]] = set()

    def attach(self, bot: discord.Client) -> None:
        """Send the owners direct messages through ``bot`` from now on."""
        self._bot = bot

    async def __call__(self, alert: WorkerAlert) -> None:
        """A worker changed state in a way the owners must hear of."""
        log.warning(
            "worker.alert", worker=alert.worker, state=alert.state.value, reason=alert.reason
        )
        await self.message(
            f"gouache: worker **{alert.worker}** is {alert.state.value}: {alert.reason}"
        )

    def notify(self, text: str) -> None:
        """Tell the owners ``text`` from synchronous code: a log line now, a direct message soon."""
        log.warning("owner.alert", message=text)
        task = asyncio.get_running_loop().create_task(self.message(text))
        self._notes.add(task)
        task.add_done_callback(self._notes.discard)

    async def message(self, text: str) -> None:
        """Send ``text`` to every owner by direct message (when the bot is connected)."""
        bot = self._bot
        if bot is None or not bot.is_ready():
            return
        for owner_id in self.owner_ids:
            try:
                user = await bot.fetch_user(owner_id)
                await user.send(text[:2000])
            except discord.HTTPException as exc:
                log.warning("worker.alert_undelivered", owner_id=owner_id, error=str(exc))

    def close(self) -> None:
        """Drop the direct messages still on their way (the app is stopping)."""
        for note in list(self._notes):
            note.cancel()


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


@dataclass(frozen=True)
class AdminSettings:
    """Where the owner's API listens, and its bearer token."""

    host: str = "127.0.0.1"
    port: int = 8765
    token: SecretStr | str | None = None


@dataclass(frozen=True)
class LocalProcess:
    """This process as its admin API and metrics see it (a `ProcessPort`)."""

    store: Store
    pool: Pool
    bus: EventBus
    dispatcher: Dispatcher
    rules: Requests

    @property
    def process(self) -> str:
        return self.dispatcher.owner

    def now(self) -> datetime:
        return self.rules.clock()

    def in_flight(self) -> int:
        return self.dispatcher.in_flight

    async def cancel(self, job_id: str, *, reason: str) -> Job:
        return await self.dispatcher.cancel(job_id, reason=reason)

    def unserved_channels(self) -> list[dict[str, Any]]:
        problems = self.rules.channel_problems
        return problems.rows() if problems is not None else []


@dataclass
class App:
    """One gouache process: its parts, built in dependency order by `assemble`."""

    store: Store
    pool: Pool
    images: ImageStore
    bus: EventBus
    dispatcher: Dispatcher
    requests: Requests
    port: LocalProcess
    alerts: OwnerAlerts
    bot: GouacheBot | None = None
    delivery: Delivery | None = None
    bot_settings: BotSettings | None = None
    grace_s: float = 30.0
    intake: Intake | None = None
    leases: WorkerLeases | None = None
    metrics: Metrics | None = None
    admin: AdminServer | None = None
    publisher: StatusPublisher | None = None
    keep_days: float = 0.0  # history retention (see housekeep); 0 keeps everything
    catalog: ModelCatalog | None = None
    inputs: InputImages | None = None  # members' images (fetched, checked, stored)
    _bot_task: asyncio.Task[None] | None = None
    _day_task: asyncio.Task[None] | None = None

    @classmethod
    def from_config(cls, config: Config) -> App:
        """Everything `gouache run -c config.toml` runs, built from a validated config."""
        store = build_store(config)
        bot: BotSettings | None = None
        if config.discord is not None:
            d = config.discord
            bot = BotSettings(
                token=d.token.get_secret_value(),
                application_id=d.application_id,
                owner_ids=frozenset(d.owner_ids),
                guild_ids=tuple(d.guild_ids),
                api_base=d.api_base,
                gateway_url=d.gateway_url,
                client_options=(
                    {"shard_id": d.shard_id, "shard_count": d.shard_count}
                    if d.shard_id is not None
                    else {}
                ),
            )
        alerts = OwnerAlerts(bot.owner_ids if bot is not None else ())
        a = config.admin
        inputs = build_inputs(config)
        return cls.assemble(
            store=store,
            workers=build_workers(config, alert=alerts, inputs=inputs),
            inputs=inputs,
            images_dir=config.storage.images_dir,
            bot=bot,
            **queue_options(config),
            intake=build_intake(config, store),
            keep_days=config.storage.keep_days,
            adult_words_file=config.moderation.adult_words_file,
            models_refresh_s=config.comfyui.models_refresh_s,
            admin=AdminSettings(a.host, a.port, a.token) if a.enabled else None,
            # Many processes share a Redis store: each worker runs in exactly one of them.
            shared_workers=config.storage.backend == "redis",
            alerts=alerts,
            status_publisher=True,
        )

    async def status(self) -> dict[str, Any]:
        """What `gouache pool status` and the demo viewer's side panel show."""
        if self.admin is not None:
            return await self.admin.status()
        rows = local_rows(self.pool, self.dispatcher.owner)
        return {
            "workers": rows,
            "summary": {"queue_depth": await self.store.depth()},
            "channels": self.port.unserved_channels(),
        }

    @classmethod
    def assemble(  # noqa: PLR0913
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
        intake: Intake | None = None,
        keep_days: float = 0.0,
        admin: AdminSettings | None = None,
        shared_workers: bool = False,
        alerts: OwnerAlerts | None = None,
        status_publisher: bool = False,
        action_costs: dict[str, int] | None = None,
        adult_words_file: Path | None = None,
        models_refresh_s: float = 300.0,
        inputs: InputImages | None = None,
    ) -> App:
        """Build every part from settings, each after what it depends on
        (`from_config` maps the TOML file onto this)."""
        pool = Pool(workers)
        images = ImageStore(images_dir)
        inputs = inputs or InputImages.build(images, api_base=bot.api_base if bot else None)
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
        owner = dispatcher.owner
        leases = WorkerLeases(store, pool, owner, ttl_s=15) if shared_workers else None
        metrics = (
            Metrics(
                store,
                bus,
                snapshot=pool.snapshot,
                workers=lambda: {w.name: w for w in pool.workers},
                in_flight=lambda: dispatcher.in_flight,
            )
            if admin is not None
            else None
        )
        alerts = alerts or OwnerAlerts(bot.owner_ids if bot is not None else ())
        problems = ChannelProblems(notify=alerts.notify)
        catalog = ModelCatalog(
            backends=pool.kinds,
            refresh_s=models_refresh_s,
            elsewhere=(
                (lambda: healthy_in_other_processes(store.worker_rows, owner))
                if shared_workers
                else None
            ),
        )
        catalog.comfy_sources = lambda: comfy_sources(
            pool.workers, here=pool.runs_here, healthy_elsewhere=catalog.healthy_elsewhere
        )
        adult = AdultWords(adult_words_file)
        adult.load()
        requests = Requests(
            store=store,
            policy=policy,
            tiers=tiers or [Tier(default_tier)],
            default_tier=default_tier,
            max_queued=max_queued,
            prompt_max_length=prompt_max_length,
            backends=lambda: pool.kinds() - {"ollama"},
            eta=dispatcher.eta,
            cancel_job=dispatcher.cancel,
            intake=intake,
            clock=getattr(store, "clock", system_clock),
            on_refused=metrics.refused if metrics is not None else None,
            worker_running=leases.running_anywhere if leases is not None else None,
            channel_problems=problems,
            action_costs=dict(action_costs or {}),
            channels=(
                ChannelRules(store, catalog, adult) if isinstance(store, ChannelStore) else None
            ),
            images=inputs,
        )
        client: GouacheBot | None = None
        delivery: Delivery | None = None
        if bot is not None:
            point_discord(bot.api_base, bot.gateway_url)
            client = GouacheBot(
                requests,
                application_id=bot.application_id,
                owner_ids=bot.owner_ids,
                guild_ids=bot.guild_ids,
                pool_snapshot=pool.snapshot,
                backends=pool.kinds() - {"ollama"},
                **bot.client_options,
            )
            delivery = Delivery(
                store,
                images,
                bus,
                DiscordSender(client, bot.application_id),
                eta=dispatcher.eta,
                cancel=dispatcher.cancel,
                problems=problems,
                **(delivery_options or {}),
            )
            client.delivery = delivery
            alerts.attach(client)
        port = LocalProcess(store, pool, bus, dispatcher, requests)
        return cls(
            store=store,
            pool=pool,
            images=images,
            bus=bus,
            dispatcher=dispatcher,
            requests=requests,
            port=port,
            alerts=alerts,
            bot=client,
            delivery=delivery,
            bot_settings=bot,
            grace_s=grace_s,
            intake=intake,
            leases=leases,
            metrics=metrics,
            admin=(
                AdminServer(port, admin.host, admin.port, admin.token, metrics=metrics)
                if admin is not None
                else None
            ),
            publisher=StatusPublisher(store, pool, owner) if status_publisher else None,
            keep_days=keep_days,
            catalog=catalog,
            inputs=inputs,
        )

    async def start(self, *, ready_timeout: float = 60.0) -> None:
        """Bring everything up; returns when the bot is connected (if there is one)."""
        await self.store.start()
        if self.intake is not None:
            await self.intake.start()
            self.intake.follow(self.bus)
        if self.leases is not None:
            await self.leases.start()
        else:
            await self.pool.start()
        await self.dispatcher.start()
        if self.catalog is not None:
            await self.catalog.start()
        if self.delivery is not None:
            await self.delivery.start()
        if self.bot is not None and self.bot_settings is not None:
            try:
                await self.bot.login(self.bot_settings.token)
            except discord.LoginFailure:
                await self.stop()  # nothing runs yet: this only releases what started
                raise ConfigError(
                    ["discord.token: Discord refused the bot token (401 Unauthorized)"]
                ) from None
            self._bot_task = asyncio.create_task(
                self.bot.connect(reconnect=True), name="discord-bot"
            )
            async with asyncio.timeout(ready_timeout):
                await self.bot.wait_until_ready()
        if self.publisher is not None:
            await self.publisher.start()
        if self.metrics is not None:
            await self.metrics.start()
        if self.admin is not None:
            await self.admin.start()
        self._day_task = asyncio.create_task(self._new_days(), name="new-day")
        log.info("app.started", workers=len(self.pool), bot=self.bot is not None)

    async def serve(self) -> None:
        """Serve until cancelled; raise `BotDisconnected` if the bot's connection ends for good."""
        if self._bot_task is None:
            await asyncio.Event().wait()
            return
        try:
            await asyncio.shield(self._bot_task)
        except discord.ConnectionClosed as exc:
            reason = f" ({exc.reason})" if exc.reason else ""
            message = f"Discord closed the bot's gateway connection with code {exc.code}{reason}"
        except discord.ClientException as exc:  # e.g. privileged intents not enabled (4014)
            message = f"Discord closed the bot's gateway connection: {type(exc).__name__}"
        except Exception as exc:
            message = f"the bot's gateway connection failed: {type(exc).__name__}"
        else:
            message = "the bot's gateway connection ended"
        log.error("bot.disconnected", reason=message)
        raise BotDisconnected(f"{message}; not reconnecting.")

    async def stop(self) -> None:
        """Graceful stop: refuse new work, let running jobs finish (up to the grace period)."""
        log.info("app.stopping", in_flight=self.dispatcher.in_flight, grace_s=self.grace_s)
        if self._day_task is not None:
            self._day_task.cancel()
        self.alerts.close()
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
        if self.catalog is not None:
            await self.catalog.aclose()
        await self.pool.aclose()
        parts = (self.leases, self.publisher, self.admin, self.metrics, self.intake, self.inputs)
        for part in parts:  # in this order: each may still use the ones after it
            if part is not None:
                await part.aclose()
        await self.store.aclose()
        log.info("app.stopped")

    async def _new_days(self) -> None:
        """At start and each local midnight: housekeeping; at midnight workers' "done today" restart."""
        await self.housekeep()
        while True:
            await asyncio.sleep(
                self.requests.policy.seconds_until_reset(self.requests.clock()) + 0.5
            )
            self.pool.reset_daily_counts()
            log.info("app.new_day", day=self.requests.policy.day_key(self.requests.clock()))
            await self.housekeep()

    async def housekeep(self) -> None:
        """Delete finished jobs and unused images older than ``keep_days`` (0 keeps all).

        Every process may run it (on Redis they share the work: a deleted job
        is gone for all); a failure is logged and tried again the next night.
        """
        if self.keep_days <= 0:
            return
        cutoff = self.requests.clock() - timedelta(days=self.keep_days)
        try:
            jobs = await self.store.prune(finished_before=cutoff)
            images = await self.images.sweep(older_than=cutoff)
        except Exception as exc:
            log.warning("app.housekeeping_failed", error=str(exc))
            return
        log.info("app.pruned", jobs=jobs, images=images, finished_before=cutoff.isoformat())

    async def alert_owners(self, alert: WorkerAlert) -> None:
        """Tell the owners (log line, and a direct message when the bot is connected)."""
        await self.alerts(alert)


# -- from the configuration file ------------------------------------------------------


def build_store(config: Config) -> Store:
    """The store the config names (SQLite embedded, or a shared Redis)."""
    q = config.queue
    policy = QuotaPolicy(q.timezone, default_limit=q.daily_limit)
    if config.storage.backend == "redis":
        from gouache.storage.redis import RedisStore

        assert config.storage.redis_url is not None  # the config validated it
        return RedisStore(
            config.storage.redis_url.get_secret_value(),
            prefix=config.storage.redis_prefix,
            policy=policy,
            lease_s=q.lease_s,
            max_attempts=q.max_attempts,
        )
    from gouache.storage.sqlite import SQLiteStore

    config.storage.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    return SQLiteStore(
        config.storage.sqlite_path,
        policy=policy,
        lease_s=q.lease_s,
        max_attempts=q.max_attempts,
        fsync=config.storage.sqlite_fsync,
    )


def build_tiers(config: Config) -> tuple[list[Tier], str]:
    """Tiers from ``[[queue.tiers]]`` (one plain tier when none are configured)."""
    q = config.queue
    tiers = [
        Tier(
            t.name,
            weight=t.weight,
            daily_limit=t.daily_limit,
            role_ids=frozenset(t.role_ids),
            backends=frozenset(t.backends) if t.backends is not None else None,
            models=frozenset(t.models) if t.models is not None else None,
            midjourney_mode=t.midjourney_mode,
        )
        for t in q.tiers
    ]
    if not tiers:
        tiers = [Tier(q.default_tier)]
    return tiers, q.default_tier


def queue_options(config: Config) -> dict[str, Any]:
    """The `App.assemble` settings ``[queue]`` gives: quotas, tiers, timeouts and the dispatcher's.

    `App.from_config` builds with them, and so do the benchmarks, so that they
    measure the queue and dispatcher `gouache run` has.
    """
    q = config.queue
    tiers, default_tier = build_tiers(config)
    return {
        "policy": QuotaPolicy(q.timezone, default_limit=q.daily_limit),
        "tiers": tiers,
        "default_tier": default_tier,
        "max_queued": q.max_queued_per_user,
        "prompt_max_length": q.max_prompt_chars,
        "timeouts": StageTimeouts(
            submit=q.timeouts.submit,
            start=q.timeouts.start,
            run=q.timeouts.run,
            store=q.timeouts.store,
        ),
        "max_batch": q.max_batch,
        "lease_s": q.lease_s,
        "max_attempts": q.max_attempts,
        "grace_s": q.grace_s,
        "action_costs": dict(q.action_costs),
    }


def build_inputs(config: Config) -> InputImages:
    """The intake of members' images from ``[images]``, stored beside the results."""
    i = config.images
    return InputImages.build(
        ImageStore(config.storage.images_dir),
        api_base=config.discord.api_base if config.discord is not None else None,
        limits=ImageLimits(max_bytes=i.max_bytes, max_pixels=i.max_pixels),
        timeout_s=i.fetch_timeout_s,
    )


def _load_workflow(name: str, where: str) -> Workflow:
    from gouache.pool.workflows import SHIPPED, SHIPPED_ACTIONS, load_shipped, load_workflow

    try:
        shipped = name in SHIPPED or name in SHIPPED_ACTIONS
        return load_shipped(name) if shipped else load_workflow(name)
    except WorkflowError as exc:
        raise ConfigError([f"{where}: {p}" for p in exc.problems]) from None


def build_workers(
    config: Config, alert: AlertSink | None = None, inputs: InputImages | None = None
) -> list[Worker]:
    """One worker per configured Midjourney account and ComfyUI server (disabled ones too,
    so they show in `gouache pool status`)."""
    from gouache.pool.comfyui import ComfyUIWorker
    from gouache.pool.comfyui_parents import ParentImages
    from gouache.pool.midjourney import MidjourneyTimeouts, MidjourneyWorker

    q = config.queue
    workers: list[Worker] = []
    mj = config.midjourney
    for account in mj.accounts:
        workers.append(
            MidjourneyWorker(
                account.name,
                account.token.get_secret_value(),
                account.guild_id,
                account.channel_id,
                api_base=mj.api_base,
                gateway_url=mj.gateway_url,
                concurrency=account.concurrency,
                mode=account.mode,
                pause_s=account.pause_s,
                daily_cap=account.daily_cap,
                enabled=account.enabled,
                remix=account.remix,
                timeouts=MidjourneyTimeouts(
                    request=q.timeouts.submit, start=q.timeouts.start, progress=q.timeouts.run
                ),
                alert=alert,
                inputs=inputs.load if inputs is not None else None,
            )
        )
    bot = config.discord
    # A click's parent image: this process's image store, else the message it was posted with.
    parents = ParentImages(
        ImageStore(config.storage.images_dir),
        bot_token=bot.token if bot is not None else None,
        api_base=bot.api_base if bot is not None else None,
    )
    for server in config.comfyui.servers:
        where = f"comfyui.servers.{server.name}"
        workflow = _load_workflow(server.workflow, f"{where}.workflow")
        actions = {
            action: _load_workflow(name, f"{where}.actions.{action}")
            for action, name in config.comfyui.actions_for(server).items()
        }
        workers.append(
            ComfyUIWorker(
                server.name,
                server.url,
                workflow=workflow,
                concurrency=server.concurrency,
                enabled=server.enabled,
                actions=actions,
                inputs=inputs.load if inputs is not None else None,
                parents=parents,
            )
        )
    d = config.describe
    if d.enabled and not config.midjourney.accounts and inputs is not None:
        # No Midjourney to describe images: an Ollama vision model does it.
        from gouache.pool.describer import OllamaDescriber

        workers.append(
            OllamaDescriber(
                "describe", d.ollama_url, model=d.model, inputs=inputs.load, timeout_s=d.timeout_s
            )
        )
    return workers


def build_intake(config: Config, store: Store) -> Intake:
    """Prompt intake from ``[translate]``, ``[moderation]`` and the queue's prompt limit."""
    t, m = config.translate, config.moderation
    settings = IntakeSettings(
        translate=TranslateSettings(
            enabled=t.enabled,
            ollama_url=t.ollama_url,
            model=t.model,
            timeout_s=t.timeout_s,
            cache_size=t.cache_size,
            languages=tuple(t.languages),
        ),
        moderation=ModerationSettings(
            banned_words_file=m.banned_words_file,
            refusals_to_block=m.refusals_to_block,
            banned_results_to_block=m.banned_results_to_block,
            strike_window_s=m.refusal_window_s,
            block_steps_h=tuple(m.block_hours),
        ),
        limits=LimitSettings(
            max_prompt_chars=config.queue.max_prompt_chars,
            rate_burst=m.rate_burst,
            rate_per_minute=m.rate_per_minute,
        ),
    )
    return Intake(settings, store, clock=getattr(store, "clock", system_clock))


async def run_forever(config: Config) -> None:
    """`gouache run`: start from ``config`` and serve until cancelled (Ctrl-C), then stop gracefully."""
    app = App.from_config(config)
    await app.start()
    tune_gc()  # after startup: what it built stays out of the collector's way
    try:
        await app.serve()
    finally:
        await app.stop()
