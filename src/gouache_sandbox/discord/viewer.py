"""A web viewer of the sandbox, served by the sandbox itself: watch channels live, act as members.

Routes (on the sandbox's own aiohttp app, next to REST and the gateway):

- ``GET /viewer/`` the page (plain HTML/CSS/JS under ``static/``, no build step,
  nothing fetched from outside); ``GET /`` without a WebSocket upgrade redirects
  here (with one, it is still the gateway).
- ``GET /viewer/api/state`` guilds, channels, the members a person may act as,
  the commands they can run.
- ``GET /viewer/api/channels/{id}/messages`` the channel, oldest first, with
  ephemeral replies marked (the viewer sees everything).
- ``GET /viewer/api/events`` server-sent events: ``hello``, ``message_create``,
  ``message_update``, ``message_delete``, ``status`` (about once a second) and
  ``resync`` (the page fell behind and reloads).
- ``GET /viewer/api/status`` the pool and queue as the status source reports them.
- ``POST /viewer/api/command`` ``{member_id, channel_id, text}``: ``/imagine a
  fox`` typed as that member, through :meth:`SimulatedMember.invoke`.
- ``POST /viewer/api/click`` ``{member_id, message_id, custom_id}``: a button
  pressed by that member, through :meth:`SimulatedMember.click`. When the app
  answers with a modal (within Discord's 3 s), the answer carries it
  (``modal: {title, inputs: [{custom_id, label, value}]}``).
- ``POST /viewer/api/modal`` ``{member_id, interaction_id, values}``: that modal
  submitted (``values``: input id → text), or ``{…, close: true}`` dismissed.

The status source is an async callable returning a JSON-able dict, or the URL
of gouache's admin ``GET /status`` with its bearer token. The token stays in
this process: it is sent to that URL only, never to the page, and keys that
look secret are masked in whatever the source returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from gouache_sandbox.discord.host import SandboxHost
from gouache_sandbox.discord.members import SimulatedMember
from gouache_sandbox.discord.state import (
    JSON,
    ChannelEvent,
    Command,
    DiscordAPIError,
    Guild,
    MemberInfo,
    Message,
)
from gouache_sandbox.discord.status_text import more_lines
from gouache_sandbox.discord.subcommands import split_subcommand
from gouache_sandbox.discord.viewmodel import (
    CommandLineError,
    deleted_view,
    guild_view,
    message_view,
    parse_options,
    playable_members,
    scrub,
    split_command_line,
    visible_commands,
)

log = structlog.get_logger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
#: An async callable returning the pool/queue status as a JSON-able mapping.
StatusCallable = Callable[[], Awaitable[Mapping[str, Any]]]
_MAX_BODY = 64 * 1024
_KEEPALIVE_S = 15.0
_CLIENT_QUEUE = 2000


@dataclass(frozen=True)
class StatusURL:
    """gouache's admin ``GET /status`` and the bearer token it wants (kept out of repr)."""

    url: str
    token: str | None = field(default=None, repr=False)


class _BadRequest(Exception):
    """A request the viewer refuses; the message is shown on the page."""


class _Client:
    """One open event stream: a bounded outbox, and whether it fell behind."""

    def __init__(self) -> None:
        self.outbox: asyncio.Queue[str | None] = asyncio.Queue(_CLIENT_QUEUE)

    def offer(self, frame: str) -> None:
        if self.outbox.full():
            # The page is too slow to follow: drop the backlog, tell it to reload.
            while not self.outbox.empty():
                self.outbox.get_nowait()
            self.outbox.put_nowait(sse("resync", "{}"))
            return
        self.outbox.put_nowait(frame)

    def close(self) -> None:
        while self.outbox.full():
            self.outbox.get_nowait()
        self.outbox.put_nowait(None)


def sse(event: str, data: str) -> str:
    """One server-sent event frame (``data`` is one line of JSON)."""
    return f"event: {event}\ndata: {data}\n\n"


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


class Viewer:
    """The sandbox's web viewer; :class:`~gouache_sandbox.discord.DiscordSandbox` makes one and mounts it on start."""

    def __init__(
        self,
        sandbox: SandboxHost,
        *,
        status_source: StatusCallable | StatusURL | str | None = None,
        status_token: str | None = None,
        status_interval: float = 1.0,
        status_timeout: float = 2.0,
    ) -> None:
        self._sandbox = sandbox
        self.status_interval = status_interval
        self.status_timeout = status_timeout
        self._status_source: StatusCallable | StatusURL | None = None
        self.set_status_source(status_source, token=status_token)
        self._clients: set[_Client] = set()
        self._seq = 0
        self._msg_seq: dict[int, int] = {}
        self._unlisten: Callable[[], None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closing = False

    # -- configuration ---------------------------------------------------------------------

    def set_status_source(
        self, source: StatusCallable | StatusURL | str | None, *, token: str | None = None
    ) -> None:
        """Where the side panel's pool and queue come from (None: the panel says "not connected")."""
        if isinstance(source, str):
            source = StatusURL(source, token)
        elif token is not None:
            raise ValueError("a token goes with a status URL, not with a callable")
        self._status_source = source

    # -- lifecycle ---------------------------------------------------------------------------

    def install(
        self,
        app: web.Application,
        *,
        websocket_root: Callable[[web.Request], Awaitable[web.StreamResponse]] | None = None,
    ) -> None:
        """Add the viewer's routes to ``app``; ``websocket_root`` keeps serving upgrades at ``/``."""
        self._closing = False
        if self._unlisten is None:
            self._unlisten = self._sandbox.state.listen(self._on_event)

        async def root(request: web.Request) -> web.StreamResponse:
            upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
            if upgrade and websocket_root is not None:
                return await websocket_root(request)
            raise web.HTTPFound("/viewer/")

        r = app.router
        r.add_get("/", root)
        r.add_get("/viewer", self._redirect)
        r.add_get("/viewer/", self._index)
        r.add_static("/viewer/static/", STATIC_DIR, append_version=False)
        r.add_get("/viewer/api/state", self._state)
        r.add_get("/viewer/api/channels/{channel_id}/messages", self._messages)
        r.add_get("/viewer/api/events", self._events)
        r.add_get("/viewer/api/status", self._status)
        r.add_post("/viewer/api/command", self._command)
        r.add_post("/viewer/api/click", self._click)
        r.add_post("/viewer/api/modal", self._modal)

    async def aclose(self) -> None:
        """End every event stream (so the server can stop at once) and the status client."""
        self._closing = True
        for client in list(self._clients):
            client.close()
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def clients(self) -> int:
        """How many event streams are open."""
        return len(self._clients)

    # -- live events ----------------------------------------------------------------------------

    def _on_event(self, event: ChannelEvent) -> None:
        self._seq += 1
        msg = event.message
        if event.kind == "message_delete":
            self._msg_seq.pop(msg.id, None)
        else:
            self._msg_seq[msg.id] = self._seq
        if not self._clients:
            return
        try:
            view = (
                deleted_view(msg, self._seq)
                if event.kind == "message_delete"
                else message_view(self._sandbox.state, msg, self._seq)
            )
            frame = sse(event.kind, _dumps(view))
        except Exception:
            # Called inside the REST handler that changed the message: a viewer
            # bug must not fail the caller's request. The page reloads instead.
            log.exception("sandbox.viewer.view_failed", message=msg.id)
            frame = sse("resync", "{}")
        for client in self._clients:
            client.offer(frame)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await resp.prepare(request)
        client = _Client()
        self._clients.add(client)
        # Registered before "hello": the page loads its snapshot after hello and
        # applies every event it gets from here on, keeping the newest seq.
        client.offer("retry: 1000\n" + sse("hello", _dumps({"seq": self._seq})))
        status_task = asyncio.create_task(self._status_loop(client), name="viewer-status")
        try:
            while not self._closing:
                try:
                    frame = await asyncio.wait_for(client.outbox.get(), _KEEPALIVE_S)
                except TimeoutError:
                    frame = ": keepalive\n\n"
                if frame is None:
                    break
                await resp.write(frame.encode())
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            pass  # the page went away
        finally:
            self._clients.discard(client)
            status_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await status_task
        return resp

    async def _status_loop(self, client: _Client) -> None:
        while True:
            client.offer(sse("status", _dumps(await self.status())))
            await asyncio.sleep(
                self.status_interval
            )  # a polling period, not a wait for a condition

    # -- status ------------------------------------------------------------------------------------

    async def status(self) -> JSON:
        """``{configured, ok, status | error}`` from the status source, secrets masked."""
        source = self._status_source
        if source is None:
            return {"configured": False}
        try:
            async with asyncio.timeout(self.status_timeout):
                if isinstance(source, StatusURL):
                    data = await self._fetch_status(source)
                else:
                    data = await source()
        except TimeoutError:
            return {"configured": True, "ok": False, "error": "the status source did not answer"}
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            if isinstance(source, StatusURL) and source.token:
                message = message.replace(source.token, "***")
            log.debug("sandbox.viewer.status_failed", error=message)
            return {"configured": True, "ok": False, "error": message}
        if not isinstance(data, Mapping):
            return {"configured": True, "ok": False, "error": "the status source gave no object"}
        clean = scrub(data)
        return {
            "configured": True,
            "ok": True,
            "at": self._sandbox.clock.now(),
            "status": clean,
            "more": more_lines(clean),
        }

    async def _fetch_status(self, source: StatusURL) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = {"Authorization": f"Bearer {source.token}"} if source.token else {}
        async with self._session.get(source.url, headers=headers) as resp:
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status} from the status URL")
            return await resp.json(content_type=None)

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(await self.status(), dumps=_dumps)

    # -- pages and snapshots ---------------------------------------------------------------------

    async def _redirect(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/viewer/")

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    async def _state(self, request: web.Request) -> web.Response:
        state = self._sandbox.state
        guilds = [guild_view(state, g) for g in state.guilds.values() if g.channels]
        return web.json_response(
            {
                "guilds": guilds,
                "seq": self._seq,
                "status_configured": self._status_source is not None,
            },
            dumps=_dumps,
        )

    async def _messages(self, request: web.Request) -> web.Response:
        state = self._sandbox.state
        try:
            channel_id = int(request.match_info["channel_id"])
            limit = max(1, min(1000, int(request.query.get("limit", "200"))))
        except ValueError:
            return _error("channel id and limit must be numbers")
        if channel_id not in state.channels:
            return _error("unknown channel", 404)
        msgs = sorted(state.messages.get(channel_id, {}).values(), key=lambda m: m.id)[-limit:]
        return web.json_response(
            {
                "seq": self._seq,
                "messages": [message_view(state, m, self._msg_seq.get(m.id, 0)) for m in msgs],
            },
            dumps=_dumps,
        )

    # -- acting as a member ---------------------------------------------------------------------------

    async def _command(self, request: web.Request) -> web.Response:
        try:
            body = await _json_body(request)
            state = self._sandbox.state
            channel = state.get_channel(_int(body, "channel_id"))
            guild = state.guilds[channel.guild_id]
            info = self._member(guild, body)
            text = body.get("text")
            if not isinstance(text, str):
                raise _BadRequest("text must be a string such as /imagine a red fox")
            name, rest = split_command_line(text)
            cmd = self._pick_command(guild, name, body.get("application_id"))
            sub, rest, schema = split_subcommand(cmd.options, rest)
            options = parse_options(rest, schema)
            member = SimulatedMember(self._sandbox, guild, info)
            full = f"{name} {sub}" if sub else name
            inter = member.invoke(channel.id, full, options, application_id=cmd.application_id)
        except (_BadRequest, CommandLineError, LookupError, ValueError) as exc:
            return _error(str(exc))
        except DiscordAPIError as exc:
            return _error(exc.message, exc.status)
        log.info("sandbox.viewer.command", command=name, member=info.user.id, interaction=inter.id)
        return web.json_response(
            {
                "interaction_id": str(inter.id),
                "command": name,
                "application": state.applications[cmd.application_id].name,
                "options": options,
            },
            dumps=_dumps,
        )

    async def _click(self, request: web.Request) -> web.Response:
        try:
            body = await _json_body(request)
            state = self._sandbox.state
            found = state.find_message(_int(body, "message_id"))
            if found is None:
                raise _BadRequest("that message no longer exists")
            msg: Message = found
            if msg.guild_id is None or msg.guild_id not in state.guilds:
                raise _BadRequest("that message is not in a guild")
            guild = state.guilds[msg.guild_id]
            info = self._member(guild, body)
            custom_id = body.get("custom_id")
            if not isinstance(custom_id, str) or not custom_id:
                raise _BadRequest("custom_id must be a non-empty string")
            member = SimulatedMember(self._sandbox, guild, info)
            inter = member.click(msg, custom_id)
        except (_BadRequest, LookupError, ValueError) as exc:
            return _error(str(exc))
        except DiscordAPIError as exc:
            return _error(exc.message, exc.status)
        log.info("sandbox.viewer.click", custom_id=custom_id, member=info.user.id)
        answer: JSON = {"interaction_id": str(inter.id)}
        # Discord gives the app 3 s; a modal answer is shown to the person at once.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3.5):
                await inter.responded.wait()
        modal = member.modal(inter)
        if modal is not None:
            answer["modal"] = {
                "title": modal.title,
                "inputs": [
                    {"custom_id": i.custom_id, "label": i.label, "value": i.value}
                    for i in modal.inputs
                ],
            }
        return web.json_response(answer)

    async def _modal(self, request: web.Request) -> web.Response:
        """Submit (or close) the modal an app opened in answer to a viewer click."""
        try:
            body = await _json_body(request)
            state = self._sandbox.state
            inter = state.interactions.get(_int(body, "interaction_id"))
            if inter is None or inter.guild_id is None or inter.guild_id not in state.guilds:
                raise _BadRequest("no such interaction")
            info = self._member(state.guilds[inter.guild_id], body)
            member = SimulatedMember(self._sandbox, state.guilds[inter.guild_id], info)
            if body.get("close") is True:
                member.close_modal(inter)
                return web.json_response({"closed": True})
            values = body.get("values")
            if not isinstance(values, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in values.items()
            ):
                raise _BadRequest("values must map input ids to text")
            submitted = member.submit_modal(inter, values)
        except (_BadRequest, LookupError, ValueError) as exc:
            return _error(str(exc))
        except DiscordAPIError as exc:
            return _error(exc.message, exc.status)
        return web.json_response({"interaction_id": str(submitted.id)})

    def _member(self, guild: Guild, body: Mapping[str, Any]) -> MemberInfo:
        member_id = _int(body, "member_id")
        for info in playable_members(self._sandbox.state, guild):
            if info.user.id == member_id:
                return info
        raise _BadRequest(f"{member_id} is not a member of {guild.name} you can act as")

    def _pick_command(self, guild: Guild, name: str, application_id: Any) -> Command:
        candidates = [c for c in visible_commands(self._sandbox.state, guild) if c.name == name]
        if application_id not in (None, ""):
            try:
                wanted = int(application_id)
            except (TypeError, ValueError):
                raise _BadRequest("application_id must be a number") from None
            candidates = [c for c in candidates if c.application_id == wanted]
        if not candidates:
            raise _BadRequest(f"no command /{name} is registered in {guild.name}")
        return candidates[0]


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > _MAX_BODY:
        raise _BadRequest("request body too large")
    raw = await request.read()
    if len(raw) > _MAX_BODY:
        raise _BadRequest("request body too large")
    try:
        body = json.loads(raw or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _BadRequest("the body is not JSON") from None
    if not isinstance(body, dict):
        raise _BadRequest("the body must be a JSON object")
    return body


def _int(body: Mapping[str, Any], key: str) -> int:
    value = body.get(key)
    if isinstance(value, bool) or value is None:
        raise _BadRequest(f"{key} is required")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _BadRequest(f"{key} must be a number") from None


def _error(message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": message}, status=status)
