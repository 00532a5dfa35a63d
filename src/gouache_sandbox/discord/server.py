"""The sandbox REST API (``/api/v10`` and ``/api/v9``), with auth, rate limits and faults."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections import Counter, deque
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import BodyPartReader, web

from gouache_sandbox.discord import payloads
from gouache_sandbox.discord.commands import CommandRoutes
from gouache_sandbox.discord.faults import RestFaults
from gouache_sandbox.discord.gateway import GatewayServer
from gouache_sandbox.discord.interactions import InteractionRoutes
from gouache_sandbox.discord.messages import (
    MESSAGE_FLAG_EPHEMERAL,
    UploadedFile,
    apply_edit,
    new_message,
)
from gouache_sandbox.discord.permissions import P
from gouache_sandbox.discord.ratelimit import RateLimiter
from gouache_sandbox.discord.restctx import Auth, Body, Ctx, Handler, json_response
from gouache_sandbox.discord.state import (
    Channel,
    DiscordAPIError,
    DMChannel,
    Interaction,
    Principal,
    SandboxState,
    invalid_form,
)
from gouache_sandbox.discord.uploads import CloudUploads

__all__ = ["Ctx", "RestServer", "json_response"]

#: How long Discord remembers a nonce for ``enforce_nonce`` ("the past few minutes").
NONCE_WINDOW_S = 120.0

log = structlog.get_logger(__name__)


class RestServer:
    """Routes, auth, rate limits, faults and the handlers behind Discord's REST API."""

    def __init__(
        self,
        state: SandboxState,
        gateway: GatewayServer,
        *,
        base_url: Callable[[], str],
        gateway_url: Callable[[], str],
    ) -> None:
        self.state = state
        self.gateway = gateway
        self._base_url = base_url
        self._gateway_url = gateway_url
        self.ratelimits = RateLimiter(state.clock.now)
        self.faults = RestFaults(state.clock.now)
        self.commands = CommandRoutes(state, gateway, base_url)
        self.interactions = InteractionRoutes(state, gateway, base_url)
        self.uploads = CloudUploads(state, base_url)
        #: Every REST request seen: (method, route template, status).
        self.calls: deque[tuple[str, str, int]] = deque(maxlen=10_000)
        #: Responses by status since the start (429s are counted here however many calls there were).
        self.statuses: Counter[int] = Counter()

    # -- routing ----------------------------------------------------------------------

    def install(self, app: web.Application) -> None:
        """Add every route to ``app`` under /api/v10 and /api/v9."""
        r = self._add
        routes: list[tuple[str, str, Auth, Handler]] = [
            ("GET", "/gateway", "none", self.get_gateway),
            ("GET", "/gateway/bot", "bot", self.get_gateway_bot),
            ("GET", "/users/@me", "any", self.get_me),
            ("GET", "/applications/@me", "bot", self.get_application),
            ("GET", "/oauth2/applications/@me", "bot", self.get_application),
            ("GET", "/applications/{application_id}/commands", "bot", self.commands.list_commands),
            ("PUT", "/applications/{application_id}/commands", "bot", self.commands.put_commands),
            ("POST", "/applications/{application_id}/commands", "bot", self.commands.post_command),
            (
                "GET",
                "/applications/{application_id}/guilds/{guild_id}/commands",
                "bot",
                self.commands.list_commands,
            ),
            (
                "PUT",
                "/applications/{application_id}/guilds/{guild_id}/commands",
                "bot",
                self.commands.put_commands,
            ),
            (
                "POST",
                "/applications/{application_id}/guilds/{guild_id}/commands",
                "bot",
                self.commands.post_command,
            ),
            (
                "DELETE",
                "/applications/{application_id}/commands/{command_id}",
                "bot",
                self.commands.delete_command,
            ),
            (
                "GET",
                "/guilds/{guild_id}/application-command-index",
                "user",
                self.commands.command_index,
            ),
            (
                "GET",
                "/channels/{channel_id}/application-command-index",
                "user",
                self.commands.command_index,
            ),
            (
                "POST",
                "/interactions/{interaction_id}/{interaction_token}/callback",
                "token",
                self.interactions.callback,
            ),
            (
                "GET",
                "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}",
                "token",
                self.interactions.webhook_get,
            ),
            (
                "PATCH",
                "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}",
                "token",
                self.interactions.webhook_edit,
            ),
            (
                "DELETE",
                "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}",
                "token",
                self.interactions.webhook_delete,
            ),
            (
                "POST",
                "/webhooks/{webhook_id}/{webhook_token}",
                "token",
                self.interactions.webhook_followup,
            ),
            ("POST", "/users/@me/channels", "any", self.open_dm),
            ("GET", "/users/{user_id}", "bot", self.get_user),
            ("GET", "/channels/{channel_id}", "any", self.get_channel),
            ("GET", "/channels/{channel_id}/messages", "any", self.list_messages),
            ("POST", "/channels/{channel_id}/messages", "any", self.create_message),
            ("GET", "/channels/{channel_id}/messages/{message_id}", "any", self.get_message),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", "any", self.edit_message),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}", "any", self.delete_message),
            (
                "PUT",
                "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
                "any",
                self.add_reaction,
            ),
            (
                "DELETE",
                "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
                "any",
                self.remove_own_reaction,
            ),
            ("POST", "/interactions", "user", self.interactions.user_interaction),
            ("POST", "/channels/{channel_id}/attachments", "any", self.uploads.create),
        ]
        for prefix in ("/api/v10", "/api/v9"):
            for method, template, auth, handler in routes:
                app.router.add_route(method, prefix + template, r(method, template, auth, handler))
        app.router.add_get("/attachments/{channel_id}/{attachment_id}/{filename}", self.download)
        app.router.add_put("/upload/{name:.+}", self.uploads.put)

    def _add(
        self, method: str, template: str, auth: Auth, handler: Handler
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def endpoint(request: web.Request) -> web.StreamResponse:
            response = await self._serve(request, method, template, auth, handler)
            self.calls.append((method, template, response.status))
            self.statuses[response.status] += 1
            return response

        return endpoint

    async def _serve(
        self, request: web.Request, method: str, template: str, auth: Auth, handler: Handler
    ) -> web.StreamResponse:
        fault = self.faults.take(method, template)
        if fault is not None and fault.after:
            await self._handle(request, method, template, auth, handler)
            fault = dataclasses.replace(fault, after=False)
        if fault is not None:
            if fault.delay > 0:
                await asyncio.sleep(fault.delay)
            if fault.status == 429:
                body = {
                    "message": "You are being rate limited.",
                    "retry_after": 0.05,
                    "global": False,
                }
                return json_response(body, 429, {"Retry-After": "1", "X-RateLimit-Scope": "user"})
            if fault.status is not None:
                body = fault.body or {"message": f"{fault.status}: sandbox fault", "code": 0}
                return json_response(body, fault.status)
        return await self._handle(request, method, template, auth, handler)

    async def _handle(
        self, request: web.Request, method: str, template: str, auth: Auth, handler: Handler
    ) -> web.StreamResponse:
        params = dict(request.match_info)
        try:
            principal = self._authenticate(request, auth)
        except DiscordAPIError as exc:
            return json_response(exc.body(), exc.status)
        token = params.get("interaction_token") or params.get("webhook_token")
        decision = self.ratelimits.check(
            method=method,
            route=template,
            params=params,
            principal_id=principal.user.id if principal else None,
            interaction_token=token if auth == "token" else None,
        )
        if not decision.allowed:
            body = {
                "message": "You are being rate limited.",
                "retry_after": decision.retry_after,
                "global": decision.is_global,
            }
            return json_response(body, 429, decision.headers)
        ctx = Ctx(request=request, params=params, principal=principal)
        try:
            await self._read_body(ctx)
            result = await handler(ctx)
        except DiscordAPIError as exc:
            return json_response(exc.body(), exc.status, decision.headers)
        if result is None:
            return web.Response(status=204, headers={"Via": "1.1 google", **decision.headers})
        return json_response(result, ctx.status, decision.headers)

    def _authenticate(self, request: web.Request, auth: Auth) -> Principal | None:
        if auth in ("none", "token"):
            return None
        header = request.headers.get("Authorization", "")
        unauthorized = DiscordAPIError(401, 0, "401: Unauthorized")
        if header.startswith("Bot "):
            principal = self.state.tokens.get(header[4:])
            if principal is None or principal.kind != "bot":
                raise unauthorized
        else:
            principal = self.state.tokens.get(header)
            if principal is None or principal.kind != "user":
                raise unauthorized
        if auth == "bot" and principal.kind != "bot":
            raise unauthorized
        if auth == "user" and principal.kind != "user":
            raise unauthorized
        return principal

    @staticmethod
    async def _read_body(ctx: Ctx) -> None:
        request = ctx.request
        if not request.can_read_body:
            return
        ctype = request.content_type
        if ctype == "multipart/form-data":
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, BodyPartReader):
                    continue
                name = part.name or ""
                data = await part.read(decode=False)
                if name == "payload_json":
                    ctx.json = json.loads(bytes(data))
                elif m := re.fullmatch(r"files\[(\d+)\]", name):
                    ctx.files.append(
                        UploadedFile(
                            index=int(m.group(1)),
                            filename=part.filename or f"file{m.group(1)}",
                            content_type=part.headers.get(
                                "Content-Type", "application/octet-stream"
                            ),
                            data=bytes(data),
                        )
                    )
            return
        raw = await request.read()
        if not raw:
            return
        try:
            ctx.json = json.loads(raw)
        except ValueError:
            raise DiscordAPIError(400, 50109, "The request body contains invalid JSON.") from None

    # -- identity ---------------------------------------------------------------------------

    async def get_gateway(self, ctx: Ctx) -> Body:
        """``GET /gateway``."""
        return {"url": self._gateway_url()}

    async def get_gateway_bot(self, ctx: Ctx) -> Body:
        """``GET /gateway/bot`` with the application's session start limit."""
        assert ctx.principal is not None
        assert ctx.principal.application is not None
        app = ctx.principal.application
        return {
            "url": self._gateway_url(),
            "shards": max(1, app.min_shards),
            "session_start_limit": {
                "total": app.session_start_total,
                "remaining": app.session_start_remaining,
                "reset_after": 86_400_000,
                "max_concurrency": app.max_concurrency,
            },
        }

    async def get_me(self, ctx: Ctx) -> Body:
        """``GET /users/@me``."""
        assert ctx.principal is not None
        return payloads.current_user_payload(ctx.principal.user)

    async def get_application(self, ctx: Ctx) -> Body:
        """``GET /applications/@me``."""
        assert ctx.principal is not None
        assert ctx.principal.application is not None
        return payloads.application_payload(ctx.principal.application)

    def deliver_interaction(self, inter: Interaction) -> None:
        """Hand ``inter`` to its application (see :meth:`InteractionRoutes.deliver_interaction`)."""
        self.interactions.deliver_interaction(inter)

    # -- channels and messages -------------------------------------------------------------

    def _visible_channel(self, ctx: Ctx, *bits: int) -> Channel:
        """The route's channel, if the caller may view it and holds ``bits`` there."""
        assert ctx.principal is not None
        channel = self.state.get_channel(ctx.int_param("channel_id"))
        self.state.require(ctx.principal.user.id, channel, *bits)
        return channel

    def _allowed(self, ctx: Ctx, channel: Channel) -> int:
        assert ctx.principal is not None
        return self.state.effective_permissions(ctx.principal.user.id, channel)

    async def get_channel(self, ctx: Ctx) -> Body:
        """``GET /channels/{id}`` (a guild channel, or a DM of the caller's)."""
        assert ctx.principal is not None
        dm = self.state.dm_channels.get(ctx.int_param("channel_id"))
        if dm is not None:
            if ctx.principal.user.id not in dm.recipients:
                raise DiscordAPIError(403, 50001, "Missing Access")
            return payloads.dm_channel_payload(dm, self.state, ctx.principal.user.id)
        return payloads.channel_payload(self._visible_channel(ctx))

    async def get_user(self, ctx: Ctx) -> Body:
        """``GET /users/{id}``."""
        user = self.state.users.get(ctx.int_param("user_id"))
        if user is None:
            raise DiscordAPIError(404, 10013, "Unknown User")
        return payloads.user_payload(user)

    async def open_dm(self, ctx: Ctx) -> Body:
        """``POST /users/@me/channels {recipient_id}``: the DM channel with that user.

        Opening always works; whether a message may be sent is decided when it is
        sent (403 50007 when the user shares no server or has closed DMs).
        """
        assert ctx.principal is not None
        try:
            other = self.state.users[int(ctx.body()["recipient_id"])]
        except (KeyError, ValueError, TypeError):
            raise invalid_form(
                "recipient_id", "BASE_TYPE_REQUIRED", "This field is required"
            ) from None
        dm = self.state.open_dm(ctx.principal.user, other)
        return payloads.dm_channel_payload(dm, self.state, ctx.principal.user.id)

    async def _create_dm_message(self, ctx: Ctx, dm: DMChannel) -> Body:
        assert ctx.principal is not None
        self.state.check_can_dm(ctx.principal.user, dm)
        msg = new_message(
            self.state,
            dm,
            ctx.principal.user,
            ctx.body(),
            ctx.files,
            allow_components=ctx.principal.kind == "bot",
        )
        msg.flags &= ~MESSAGE_FLAG_EPHEMERAL
        self.state.store_message(msg)
        return payloads.message_payload(msg, self.state, self._base_url())

    async def list_messages(self, ctx: Ctx) -> Body:
        """``GET /channels/{id}/messages`` newest first, with limit/before/after.

        Discord: without READ_MESSAGE_HISTORY the answer is an empty list.
        """
        assert ctx.principal is not None
        channel = self._visible_channel(ctx)
        q = ctx.request.query
        try:
            limit = max(1, min(100, int(q.get("limit", "50"))))
            before = int(q["before"]) if "before" in q else None
            after = int(q["after"]) if "after" in q else None
        except ValueError:
            raise invalid_form("limit", "NUMBER_TYPE_COERCE", "Value is not int.") from None
        if not self._allowed(ctx, channel) & P.READ_MESSAGE_HISTORY:
            return []
        uid = ctx.principal.user.id
        msgs = [
            m
            for m in self.state.messages[channel.id].values()
            if (m.visible_to is None or m.visible_to == uid)
            and (before is None or m.id < before)
            and (after is None or m.id > after)
        ]
        msgs.sort(key=lambda m: m.id, reverse=True)
        if after is not None and before is None:
            msgs = sorted(msgs, key=lambda m: m.id)[:limit][::-1]
        base = self._base_url()
        return [payloads.message_payload(m, self.state, base) for m in msgs[:limit]]

    async def create_message(self, ctx: Ctx) -> Body:
        """``POST /channels/{id}/messages`` (JSON or multipart with files).

        SEND_MESSAGES to post, ATTACH_FILES for files, SEND_TTS_MESSAGES for tts,
        READ_MESSAGE_HISTORY for a reply; embeds are dropped without EMBED_LINKS.
        """
        assert ctx.principal is not None
        dm = self.state.dm_channels.get(ctx.int_param("channel_id"))
        if dm is not None:
            return await self._create_dm_message(ctx, dm)
        channel = self._visible_channel(ctx, P.SEND_MESSAGES)
        body = ctx.body()
        ref = body.get("message_reference")
        if isinstance(ref, dict) and ref.get("message_id"):
            self.state.require(ctx.principal.user.id, channel, P.READ_MESSAGE_HISTORY)
        msg = new_message(
            self.state,
            channel,
            ctx.principal.user,
            body,
            ctx.files,
            allow_components=ctx.principal.kind == "bot",
            allowed=self._allowed(ctx, channel),
        )
        if body.get("enforce_nonce") and msg.nonce is not None:
            # "If another message was created by the same author with the same nonce,
            # that message will be returned and no new message will be created" (for
            # "the past few minutes": we keep the shorter reading).
            earlier = self.state.message_by_nonce(
                channel.id, ctx.principal.user.id, msg.nonce, within=NONCE_WINDOW_S
            )
            if earlier is not None:
                return payloads.message_payload(earlier, self.state, self._base_url())
        if ctx.principal.application is not None:
            msg.application_id = None
        msg.flags &= ~MESSAGE_FLAG_EPHEMERAL
        self.state.store_message(msg)
        return payloads.message_payload(msg, self.state, self._base_url())

    async def get_message(self, ctx: Ctx) -> Body:
        """``GET /channels/{id}/messages/{mid}`` (VIEW_CHANNEL and READ_MESSAGE_HISTORY)."""
        channel = self._visible_channel(ctx, P.READ_MESSAGE_HISTORY)
        msg = self.state.get_message(channel.id, ctx.int_param("message_id"))
        return payloads.message_payload(msg, self.state, self._base_url())

    async def edit_message(self, ctx: Ctx) -> Body:
        """``PATCH /channels/{id}/messages/{mid}``: only the author may edit.

        New files need ATTACH_FILES; embeds are dropped without EMBED_LINKS.
        """
        assert ctx.principal is not None
        channel = self._visible_channel(ctx)
        msg = self.state.get_message(channel.id, ctx.int_param("message_id"))
        if msg.author.id != ctx.principal.user.id:
            raise DiscordAPIError(403, 50005, "Cannot edit a message authored by another user")
        apply_edit(self.state, msg, ctx.body(), ctx.files, allowed=self._allowed(ctx, channel))
        self.state.announce_update(msg)
        return payloads.message_payload(msg, self.state, self._base_url())

    async def delete_message(self, ctx: Ctx) -> Body:
        """``DELETE /channels/{id}/messages/{mid}``: others' messages need MANAGE_MESSAGES."""
        assert ctx.principal is not None
        channel = self._visible_channel(ctx)
        msg = self.state.get_message(channel.id, ctx.int_param("message_id"))
        if msg.author.id != ctx.principal.user.id:
            self.state.require(ctx.principal.user.id, channel, P.MANAGE_MESSAGES)
        self.state.delete_message(msg)
        return None

    async def add_reaction(self, ctx: Ctx) -> Body:
        """``PUT …/reactions/{emoji}/@me``: READ_MESSAGE_HISTORY; a new emoji also ADD_REACTIONS."""
        assert ctx.principal is not None
        channel = self._visible_channel(ctx, P.READ_MESSAGE_HISTORY)
        msg = self.state.get_message(channel.id, ctx.int_param("message_id"))
        emoji = ctx.params["emoji"]
        users = msg.reactions.get(emoji)
        if not users:
            self.state.require(ctx.principal.user.id, channel, P.ADD_REACTIONS)
        users = msg.reactions.setdefault(emoji, [])
        if ctx.principal.user.id not in users:
            users.append(ctx.principal.user.id)
            self.state.announce_update(msg)
        return None

    async def remove_own_reaction(self, ctx: Ctx) -> Body:
        """``DELETE …/reactions/{emoji}/@me``."""
        assert ctx.principal is not None
        channel = self._visible_channel(ctx)
        msg = self.state.get_message(channel.id, ctx.int_param("message_id"))
        users = msg.reactions.get(ctx.params["emoji"], [])
        if ctx.principal.user.id in users:
            users.remove(ctx.principal.user.id)
            if not users:
                del msg.reactions[ctx.params["emoji"]]
            self.state.announce_update(msg)
        return None

    async def download(self, request: web.Request) -> web.StreamResponse:
        """Serve an attachment; expired signed URLs answer 404 like Discord's CDN."""
        try:
            att = self.state.attachments[int(request.match_info["attachment_id"])]
        except (KeyError, ValueError):
            raise web.HTTPNotFound(text="This content is no longer available.") from None
        expires = request.query.get("ex")
        if expires is not None:
            try:
                if int(expires, 16) < self.state.clock.now():
                    raise web.HTTPNotFound(text="This content is no longer available.")
            except ValueError:
                raise web.HTTPNotFound(text="This content is no longer available.") from None
        return web.Response(body=att.data, headers={"Content-Type": att.content_type})
