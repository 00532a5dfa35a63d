"""A local Discord: REST, gateway, rate limits, faults, simulated members and a Midjourney bot."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any

import structlog
from aiohttp import web

from gouache_sandbox.discord import payloads
from gouache_sandbox.discord.control import install_control_routes
from gouache_sandbox.discord.faults import RestFault
from gouache_sandbox.discord.gateway import INTENT_GUILDS, GatewayServer
from gouache_sandbox.discord.gateway_faults import GatewayFaults
from gouache_sandbox.discord.members import SimulatedMember
from gouache_sandbox.discord.midjourney import (
    NIJI_APPLICATION_ID,
    NIJI_IMAGINE_COMMAND_ID,
    MidjourneyStandIn,
)
from gouache_sandbox.discord.permissions import DEFAULT_BOT, Overwrite
from gouache_sandbox.discord.server import RestServer
from gouache_sandbox.discord.state import (
    Channel,
    ChannelEvent,
    Guild,
    Message,
    Role,
    SandboxClock,
    SandboxState,
    User,
)
from gouache_sandbox.discord.viewer import Viewer

__all__ = ["ChannelEvent", "DiscordSandbox", "SandboxClock", "SimulatedMember"]

INTENT_GUILD_MEMBERS = 1 << 1

log = structlog.get_logger(__name__)


class DiscordSandbox:
    """The whole stand-in Discord on one aiohttp server (start it, point clients at it).

    Typical use in a test::

        async with DiscordSandbox() as sb:
            bot, token, app_id = sb.add_bot("gouache")
            guild = sb.add_guild("g")          # the Midjourney bot joins automatically
            channel = sb.add_channel(guild, "general")
            sb.join(guild, bot)
            alice = sb.add_member(guild, "alice", roles=[], locale="en-US")
            # discord.http.Route.BASE = sb.api_base
            # discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(sb.gateway_url)
            inter = alice.invoke(channel.id, "draw", {"prompt": "a fox"})
            msg = await sb.wait_for_message(channel.id, lambda m: bool(m.attachments))
    """

    def __init__(
        self,
        *,
        clock: SandboxClock | None = None,
        heartbeat_interval_ms: int = 41250,
        resume_window: float = 120.0,
        with_midjourney: bool = True,
    ) -> None:
        self.clock = clock or SandboxClock()
        self.state = SandboxState(self.clock)
        self._host = "127.0.0.1"
        self._port = 0
        self.gateway = GatewayServer(
            self.state,
            gateway_url=lambda: self.gateway_url,
            base_url=lambda: self.base_url,
            heartbeat_interval_ms=heartbeat_interval_ms,
            resume_window=resume_window,
        )
        #: Fault injection on gateway connections.
        self.gateway_faults = GatewayFaults(self.gateway)
        self.rest = RestServer(
            self.state,
            self.gateway,
            base_url=lambda: self.base_url,
            gateway_url=lambda: self.gateway_url,
        )
        self.midjourney: MidjourneyStandIn | None = (
            MidjourneyStandIn(
                self.state,
                base_url=lambda: self.base_url,
                open_modal=self.rest.interactions.open_modal,
            )
            if with_midjourney
            else None
        )
        #: The Niji bot beside it (``--niji`` models; the same accounts drive it).
        self.niji: MidjourneyStandIn | None = (
            MidjourneyStandIn(
                self.state,
                base_url=lambda: self.base_url,
                app_id=NIJI_APPLICATION_ID,
                command_id=NIJI_IMAGINE_COMMAND_ID,
                name="niji・journey Bot",
                open_modal=self.rest.interactions.open_modal,
            )
            if with_midjourney
            else None
        )
        if self.niji is not None and self.midjourney is not None:
            self.niji.settings = self.midjourney.settings  # one speed for both bots
        #: The web viewer (``viewer_url``); give it a status source with ``set_status_source``.
        self.viewer = Viewer(self)
        self._runner: web.AppRunner | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Serve on ``host:port`` (0 picks a free port)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        self.rest.install(app)
        app.router.add_get("/gateway", self.gateway.handle)
        install_control_routes(app, self)
        # ``/`` stays the gateway for WebSocket upgrades; a browser is sent to the viewer.
        self.viewer.install(app, websocket_root=self.gateway.handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self._host, self._port = host, sockets[0].getsockname()[1]
        if self.midjourney is not None:
            await self.midjourney.start()
        if self.niji is not None:
            await self.niji.start()
        log.info("sandbox.discord.started", api=self.api_base, gateway=self.gateway_url)

    async def aclose(self) -> None:
        """Stop the Midjourney stand-in, close connections and the server."""
        if self.midjourney is not None:
            await self.midjourney.aclose()
        if self.niji is not None:
            await self.niji.aclose()
        await self.viewer.aclose()
        await self.gateway.aclose()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> DiscordSandbox:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- addresses ---------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port the sandbox listens on."""
        return self._port

    @property
    def base_url(self) -> str:
        """``http://host:port`` (attachments are served from here)."""
        return f"http://{self._host}:{self._port}"

    @property
    def api_base(self) -> str:
        """The REST base, for ``discord.http.Route.BASE``."""
        return f"{self.base_url}/api/v10"

    @property
    def gateway_url(self) -> str:
        """The gateway URL (also the ``resume_gateway_url`` in READY)."""
        return f"ws://{self._host}:{self._port}/gateway"

    @property
    def viewer_url(self) -> str:
        """The web viewer's page."""
        return f"{self.base_url}/viewer/"

    # -- world building ----------------------------------------------------------------

    def add_bot(self, name: str) -> tuple[User, str, int]:
        """A bot user with its application: ``(user, token, application_id)``."""
        app, token = self.state.new_application(name)
        return app.bot, token, app.id

    def add_user_account(self, name: str) -> tuple[User, str]:
        """A user account (what a Midjourney proxy logs in as): ``(user, token)``."""
        return self.state.new_user_account(name)

    def add_guild(self, name: str, owner: User | None = None) -> Guild:
        """A guild (the Midjourney bot joins it when the stand-in is enabled)."""
        owner = owner or self.state.new_user(f"{name}-owner")
        guild = self.state.new_guild(name, owner)
        if self.midjourney is not None:
            self.state.add_member(guild, self.midjourney.bot)
        if self.niji is not None:
            self.state.add_member(guild, self.niji.bot)
        return guild

    def add_channel(self, guild: Guild, name: str, *, nsfw: bool = False) -> Channel:
        """A text channel in ``guild`` (connected bots get CHANNEL_CREATE)."""
        channel = self.state.new_channel(guild, name)
        channel.nsfw = nsfw
        self._announce(guild, "CHANNEL_CREATE", payloads.channel_payload(channel))
        return channel

    def set_nsfw(self, channel: Channel, nsfw: bool) -> None:
        """Mark the channel age-restricted (NSFW) or not (connected bots get CHANNEL_UPDATE)."""
        channel.nsfw = nsfw
        self._announce_channel(channel)

    def add_role(self, guild: Guild, name: str, permissions: int = 0) -> Role:
        """A role in ``guild``."""
        return self.state.new_role(guild, name, permissions)

    def join(
        self,
        guild: Guild,
        user: User,
        roles: list[int] | None = None,
        *,
        permissions: int | None = None,
    ) -> None:
        """Put an existing user (a bot or user account) into ``guild``.

        A bot joins as through an invite link: with its own managed role holding
        ``permissions`` (default: what gouache's invite asks for).
        """
        roles = list(roles or [])
        if user.bot:
            granted = DEFAULT_BOT if permissions is None else permissions
            roles.append(self.state.new_role(guild, user.username, granted, managed=True).id)
        elif permissions is not None:
            raise ValueError("only a bot joins with permissions of its own; give a user roles")
        self.state.add_member(guild, user, roles)

    # -- permissions at run time (each change is announced like Discord announces it) ------

    def bot_role(self, guild: Guild, user: User) -> Role:
        """The managed role ``user`` (a bot) got when it joined."""
        member = guild.members[user.id]
        for rid in member.roles:
            role = guild.roles[rid]
            if role.managed:
                return role
        raise LookupError(f"{user.username} has no managed role in {guild.name}")

    def set_role_permissions(self, guild: Guild, role_id: int, permissions: int) -> Role:
        """Change a role's guild-level bits (the @everyone role's id is the guild's id)."""
        role = guild.roles[role_id]
        role.permissions = permissions
        self._announce(
            guild,
            "GUILD_ROLE_UPDATE",
            {"guild_id": str(guild.id), "role": payloads.role_payload(role)},
        )
        return role

    def set_overwrite(
        self,
        channel: Channel,
        target_id: int,
        *,
        allow: int = 0,
        deny: int = 0,
    ) -> Overwrite:
        """Put a channel overwrite on a role or member (replacing any earlier one)."""
        ow = self.state.set_overwrite(channel, target_id, allow=allow, deny=deny)
        self._announce_channel(channel)
        return ow

    def clear_overwrite(self, channel: Channel, target_id: int) -> bool:
        """Remove a channel overwrite."""
        removed = self.state.clear_overwrite(channel, target_id)
        if removed:
            self._announce_channel(channel)
        return removed

    def set_member_roles(self, guild: Guild, user_id: int, roles: list[int]) -> None:
        """Replace a member's roles (a bot's managed role stays, as on Discord)."""
        member = guild.members[user_id]
        unknown = [r for r in roles if r not in guild.roles]
        if unknown:
            raise LookupError(f"unknown roles {unknown}")
        managed = [r for r in member.roles if guild.roles[r].managed]
        member.roles = managed + [r for r in roles if r not in managed]
        data = payloads.member_payload(member)
        data["guild_id"] = str(guild.id)
        self._announce(guild, "GUILD_MEMBER_UPDATE", data, intent=INTENT_GUILD_MEMBERS)

    def time_out(self, guild: Guild, user_id: int, seconds: float | None) -> None:
        """Time a member out for ``seconds`` of sandbox time (None lifts the timeout)."""
        member = guild.members[user_id]
        member.timed_out_until = None if seconds is None else self.clock.now() + seconds
        data = payloads.member_payload(member)
        data["guild_id"] = str(guild.id)
        self._announce(guild, "GUILD_MEMBER_UPDATE", data, intent=INTENT_GUILD_MEMBERS)

    def permissions_of(self, user_id: int, channel: Channel) -> int:
        """``user_id``'s computed bits in ``channel`` (as interactions carry them)."""
        return self.state.permissions(user_id, channel)

    def _announce_channel(self, channel: Channel) -> None:
        guild = self.state.guilds[channel.guild_id]
        self._announce(guild, "CHANNEL_UPDATE", payloads.channel_payload(channel))

    def _announce(
        self, guild: Guild, event: str, data: dict[str, Any], *, intent: int = INTENT_GUILDS
    ) -> None:
        for session in self.gateway.live_sessions():
            if (
                session.is_bot
                and session.intents & intent
                and session.user_id in guild.members
                and session.wants_guild(guild.id)
            ):
                session.dispatch(event, data)

    def add_member(
        self, guild: Guild, name: str, roles: list[int] | None = None, locale: str = "en-US"
    ) -> SimulatedMember:
        """A simulated person in ``guild`` with ``roles`` and a client ``locale``."""
        user = self.state.new_user(name)
        info = self.state.add_member(guild, user, roles, locale)
        return SimulatedMember(self, guild, info)

    # -- observing ------------------------------------------------------------------------

    def messages(self, channel_id: int) -> list[Message]:
        """Every non-ephemeral message in a channel, oldest first."""
        msgs = [m for m in self.state.messages.get(channel_id, {}).values() if m.visible_to is None]
        return sorted(msgs, key=lambda m: m.id)

    async def wait_for_message(
        self,
        channel_id: int,
        predicate: Callable[[Message], bool],
        timeout: float = 5.0,
        *,
        include_existing: bool = True,
    ) -> Message:
        """The first message in ``channel_id`` (existing or created/edited later) matching ``predicate``."""
        if include_existing:
            for msg in self.messages(channel_id):
                if predicate(msg):
                    return msg
        loop = asyncio.get_running_loop()
        found: asyncio.Future[Message] = loop.create_future()

        def check(event: ChannelEvent) -> None:
            if (
                event.channel_id == channel_id
                and event.kind != "message_delete"
                and not found.done()
                and predicate(event.message)
            ):
                found.set_result(event.message)

        unlisten = self.state.listen(check)
        try:
            return await asyncio.wait_for(found, timeout)
        finally:
            unlisten()

    @contextlib.asynccontextmanager
    async def subscribe(self, maxsize: int = 1000) -> AsyncIterator[asyncio.Queue[ChannelEvent]]:
        """A queue receiving every channel event while the context is open (oldest dropped when full)."""
        queue: asyncio.Queue[ChannelEvent] = asyncio.Queue(maxsize)

        def put(event: ChannelEvent) -> None:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)

        unlisten = self.state.listen(put)
        try:
            yield queue
        finally:
            unlisten()

    # -- fault injection (delegates, so tests need one object) -------------------------------

    def drop_connections(self, *, user_id: int | None = None, session_id: str | None = None) -> int:
        """Cut gateway connections without a close frame."""
        return self.gateway_faults.drop(user_id=user_id, session_id=session_id)

    def stop_acking(self, *, user_id: int | None = None, on: bool = True) -> int:
        """Stop (``on``) or resume acknowledging heartbeats (a zombie link)."""
        return self.gateway_faults.set_zombie(on, user_id=user_id)

    def send_reconnect(self, *, user_id: int | None = None) -> int:
        """Send op 7 RECONNECT."""
        return self.gateway_faults.send_reconnect(user_id=user_id)

    def send_invalid_session(self, resumable: bool, *, user_id: int | None = None) -> int:
        """Send op 9 INVALID_SESSION with ``d: resumable``."""
        return self.gateway_faults.send_invalid_session(resumable, user_id=user_id)

    def close_connections(self, code: int, *, user_id: int | None = None) -> int:
        """Close gateway connections with ``code``."""
        return self.gateway_faults.close(code, user_id=user_id)

    def restart_gateway(self, *, resumable: bool = True) -> int:
        """Drop every gateway connection; sessions stay resumable unless ``resumable`` is false."""
        return self.gateway_faults.restart(resumable=resumable)

    def fail_route(  # noqa: PLR0913
        self,
        method: str,
        route: str,
        status: int = 500,
        *,
        times: int | None = None,
        duration: float | None = None,
        delay: float = 0.0,
        after: bool = False,
    ) -> RestFault:
        """Answer matching REST calls with ``status`` (route is a template glob, e.g. ``/channels/*``);
        with ``after``, once the call was carried out (its answer lost on the way back)."""
        return self.rest.faults.add(
            method, route, status=status, times=times, duration=duration, delay=delay, after=after
        )

    def delay_route(
        self,
        method: str,
        route: str,
        seconds: float,
        *,
        times: int | None = None,
        duration: float | None = None,
    ) -> RestFault:
        """Delay matching REST calls by ``seconds``."""
        return self.rest.faults.add(method, route, delay=seconds, times=times, duration=duration)

    def clear_faults(self) -> None:
        """Remove every REST fault."""
        self.rest.faults.clear()
