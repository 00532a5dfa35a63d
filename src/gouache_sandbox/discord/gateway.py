"""The sandbox gateway: Discord's WebSocket protocol for bots and user accounts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import WSMsgType, web

from gouache_sandbox.discord import payloads
from gouache_sandbox.discord.state import (
    JSON,
    ChannelEvent,
    Principal,
    SandboxState,
)

log = structlog.get_logger(__name__)

# Opcodes
DISPATCH, HEARTBEAT, IDENTIFY, PRESENCE, VOICE, RESUME, RECONNECT = 0, 1, 2, 3, 4, 6, 7
REQUEST_MEMBERS, INVALID_SESSION, HELLO, HEARTBEAT_ACK = 8, 9, 10, 11
CLIENT_OPS = {HEARTBEAT, IDENTIFY, PRESENCE, VOICE, RESUME, REQUEST_MEMBERS}

# Intents the sandbox looks at.
INTENT_GUILDS = 1 << 0
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = (1 << 1) | (1 << 8) | (1 << 15)
ALL_INTENTS = (1 << 26) - 1

#: Close codes after which the session is gone (Discord: "start a new session" or "do not reconnect").
SESSION_ENDING_CODES = {1000, 1001, 4004, 4007, 4009, 4010, 4011, 4012, 4013, 4014}

SEND_LIMIT = 120
SEND_WINDOW = 60.0
IDENTIFY_WINDOW = 5.0
MAX_PAYLOAD = 4096
BUFFER_SIZE = 2000


@dataclass
class Close:
    """A queued instruction to close the connection with ``code``."""

    code: int
    reason: str


class ServedSession:
    """A session the server keeps for a client: survives disconnects (resumable) and buffers
    what it missed (the client side is `gouache.pool.gateway_session.Session`)."""

    def __init__(
        self,
        session_id: str,
        principal: Principal,
        token: str,
        *,
        intents: int,
        shard: tuple[int, int] | None,
    ) -> None:
        self.id = session_id
        self.principal = principal
        self.token = token
        self.intents = intents
        self.shard = shard
        self.seq = 0
        self.buffer: deque[JSON] = deque(maxlen=BUFFER_SIZE)
        self.conn: ServedConnection | None = None
        self.disconnected_at: float | None = None
        self.invalid = False

    @property
    def user_id(self) -> int:
        """The id of the user this session belongs to."""
        return self.principal.user.id

    @property
    def is_bot(self) -> bool:
        """Whether a bot token opened this session."""
        return self.principal.kind == "bot"

    def dispatch(self, event: str, data: JSON) -> None:
        """Number and buffer a dispatch; send it now when a connection is attached."""
        if self.invalid:
            return
        self.seq += 1
        frame: JSON = {"op": DISPATCH, "t": event, "s": self.seq, "d": data}
        self.buffer.append(frame)
        if self.conn is not None:
            self.conn.enqueue(frame)

    def wants_guild(self, guild_id: int) -> bool:
        """Whether this session's shard covers ``guild_id``."""
        if self.shard is None:
            return True
        shard_id, count = self.shard
        return (guild_id >> 22) % count == shard_id


@dataclass(eq=False)
class ServedConnection:
    """The server side of one client's WebSocket (the client side is
    `gouache.pool.gateway.GatewayConnection`); writes go through a queue so frames keep
    their order."""

    ws: web.WebSocketResponse
    transport: Any
    compressor: Any | None
    zstd_flush: int | None = None
    session: ServedSession | None = None
    zombie: bool = False
    #: A muted connection (a half-dead link) delivers nothing but close frames; dispatches stay buffered.
    mute: bool = False
    queue: asyncio.Queue[JSON | Close] = field(default_factory=asyncio.Queue)
    sends: deque[float] = field(default_factory=deque)
    heartbeats: int = 0
    acks: int = 0
    connected_at: float = field(default_factory=time.monotonic)
    last_heartbeat: float = field(default_factory=time.monotonic)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    #: The close code the server sent, when the server closed first.
    server_close: int | None = None

    def enqueue(self, item: JSON | Close) -> None:
        """Queue a frame (or a close) for the writer task."""
        if self.mute and not isinstance(item, Close):
            return
        if not self.closed.is_set():
            self.queue.put_nowait(item)

    def encode(self, frame: JSON) -> bytes | str:
        """Serialise ``frame``; compressed frames end with the Z_SYNC_FLUSH marker."""
        text = json.dumps(frame, separators=(",", ":"))
        if self.compressor is None:
            return text
        if self.zstd_flush is not None:
            return bytes(self.compressor.compress(text.encode())) + bytes(
                self.compressor.flush(self.zstd_flush)
            )
        return bytes(
            self.compressor.compress(text.encode()) + self.compressor.flush(zlib.Z_SYNC_FLUSH)
        )


def _make_compressor(kind: str | None) -> tuple[Any | None, int | None]:
    if kind is None:
        return None, None
    if kind == "zlib-stream":
        return zlib.compressobj(), None
    if kind == "zstd-stream":
        try:
            import zstandard  # type: ignore[import-not-found]
        except ImportError:
            raise web.HTTPBadRequest(text="zstd-stream needs the zstandard package") from None
        return zstandard.ZstdCompressor().compressobj(), int(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
    raise web.HTTPBadRequest(text=f"unknown compress {kind!r}")


class GatewayServer:
    """Accepts gateway connections, owns sessions, fans dispatches out, injects faults."""

    def __init__(
        self,
        state: SandboxState,
        *,
        gateway_url: Callable[[], str],
        base_url: Callable[[], str],
        heartbeat_interval_ms: int = 41250,
        resume_window: float = 120.0,
    ) -> None:
        self.state = state
        self._gateway_url = gateway_url
        self._base_url = base_url
        self.heartbeat_interval_ms = heartbeat_interval_ms
        #: Sandbox seconds a disconnected session stays resumable.
        self.resume_window = resume_window
        self.sessions: dict[str, ServedSession] = {}
        self.connections: set[ServedConnection] = set()
        self._identify_times: dict[tuple[int, int], float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._frame_listeners: list[Callable[[ServedConnection, JSON], None]] = []
        self._unlisten = state.listen(self._on_channel_event)

    def listen_frames(
        self, callback: Callable[[ServedConnection, JSON], None]
    ) -> Callable[[], None]:
        """Call ``callback(conn, frame)`` for every decoded client frame (a wire tap for tests)."""
        self._frame_listeners.append(callback)
        return lambda: self._frame_listeners.remove(callback)

    # -- lifecycle ------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close every connection and stop listening to the state."""
        self._unlisten()
        for conn in list(self.connections):
            conn.enqueue(Close(1001, "sandbox shutting down"))
        for conn in list(self.connections):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(conn.closed.wait(), 2.0)
        for conn in list(self.connections):
            conn.transport.abort()

    # -- the connection -------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """aiohttp handler for ``GET /gateway`` upgrades."""
        encoding = request.query.get("encoding", "json")
        if encoding != "json":
            raise web.HTTPBadRequest(text="the sandbox speaks encoding=json only")
        compressor, zstd_flush = _make_compressor(request.query.get("compress"))
        ws = web.WebSocketResponse(autoping=True, max_msg_size=1 << 20)
        await ws.prepare(request)
        conn = ServedConnection(
            ws=ws, transport=request.transport, compressor=compressor, zstd_flush=zstd_flush
        )
        self.connections.add(conn)
        writer = asyncio.create_task(self._writer(conn))
        try:
            version = request.query.get("v", "10")
            if version not in ("9", "10"):
                conn.enqueue(Close(4012, "Invalid API version"))
                await self._wait_closed(conn)
            else:
                conn.enqueue(
                    {
                        "op": HELLO,
                        "d": {
                            "heartbeat_interval": self.heartbeat_interval_ms,
                            "_trace": ['["gouache-sandbox-gateway",{}]'],
                        },
                        "s": None,
                        "t": None,
                    }
                )
                await self._reader(conn)
        finally:
            # Only a client-initiated 1000/1001 ends the session; the server's own close decided already.
            self.detach(conn, ws.close_code if conn.server_close is None else None)
            conn.closed.set()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            self.connections.discard(conn)
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), 1.0)
        return ws

    async def _writer(self, conn: ServedConnection) -> None:
        while True:
            item = await conn.queue.get()
            if isinstance(item, Close):
                self._end_session_for_code(conn, item.code)
                conn.server_close = item.code
                await conn.ws.close(code=item.code, message=item.reason.encode())
                return
            data = conn.encode(item)
            try:
                if isinstance(data, str):
                    await conn.ws.send_str(data)
                else:
                    await conn.ws.send_bytes(data)
            except (ConnectionError, RuntimeError):
                return

    async def _reader(self, conn: ServedConnection) -> None:
        interval = self.heartbeat_interval_ms / 1000.0
        while not conn.closed.is_set():
            # Discord allows some slack beyond one interval before it gives up on a client.
            deadline = conn.last_heartbeat + interval * 1.75
            timeout = max(0.01, deadline - time.monotonic())
            try:
                msg = await conn.ws.receive(timeout=timeout)
            except TimeoutError:
                # Discord ends a session whose client stopped heartbeating.
                conn.enqueue(Close(4009, "Session timed out"))
                await self._wait_closed(conn)
                return
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return
            raw = msg.data if msg.type == WSMsgType.TEXT else None
            if msg.type == WSMsgType.BINARY:
                try:
                    raw = bytes(msg.data).decode()
                except UnicodeDecodeError:
                    raw = None
            if not self._count_send(conn):
                conn.enqueue(Close(4008, "Rate limited."))
                await self._wait_closed(conn)
                return
            frame = self._decode(raw)
            if frame is None:
                conn.enqueue(Close(4002, "Error while decoding payload."))
                await self._wait_closed(conn)
                return
            close = self._handle_frame(conn, frame)
            if close is not None:
                conn.enqueue(close)
                await self._wait_closed(conn)
                return

    async def _wait_closed(self, conn: ServedConnection) -> None:
        # The writer closes the socket; keep reading so aiohttp sees the peer's close frame.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                while not conn.ws.closed:
                    msg = await conn.ws.receive()
                    if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR):
                        break

    def _count_send(self, conn: ServedConnection) -> bool:
        now = self.state.clock.now()
        while conn.sends and conn.sends[0] <= now - SEND_WINDOW:
            conn.sends.popleft()
        conn.sends.append(now)
        return len(conn.sends) <= SEND_LIMIT

    @staticmethod
    def _decode(raw: str | None) -> JSON | None:
        if raw is None or len(raw) > MAX_PAYLOAD:
            return None
        try:
            frame = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(frame, dict) or not isinstance(frame.get("op"), int):
            return None
        return frame

    def _handle_frame(self, conn: ServedConnection, frame: JSON) -> Close | None:
        for listener in list(self._frame_listeners):
            listener(conn, frame)
        op = frame["op"]
        data = frame.get("d")
        if op not in CLIENT_OPS:
            return Close(4001, "Unknown opcode.")
        if op == HEARTBEAT:
            conn.heartbeats += 1
            conn.last_heartbeat = time.monotonic()
            if not conn.zombie:
                conn.acks += 1
                conn.enqueue({"op": HEARTBEAT_ACK, "d": None, "s": None, "t": None})
            return None
        if op == IDENTIFY:
            if conn.session is not None:
                return Close(4005, "Already authenticated.")
            return self._identify(conn, data)
        if op == RESUME:
            if conn.session is not None:
                return Close(4005, "Already authenticated.")
            return self._resume(conn, data)
        if conn.session is None:
            return Close(4003, "Not authenticated.")
        # Presence, voice state and member requests are accepted and otherwise ignored.
        return None

    # -- identify / resume ----------------------------------------------------------------

    def _identify(self, conn: ServedConnection, data: Any) -> Close | None:  # noqa: C901, PLR0912
        if not isinstance(data, dict) or not isinstance(data.get("token"), str):
            return Close(4002, "Error while decoding payload.")
        if not isinstance(data.get("properties"), dict):
            return Close(4002, "Error while decoding payload.")
        token = data["token"]
        if token.startswith("Bot "):
            token = token[4:]
        principal = self.state.tokens.get(token)
        if principal is None:
            return Close(4004, "Authentication failed.")
        intents = 0
        shard: tuple[int, int] | None = None
        if principal.kind == "bot":
            app = principal.application
            assert app is not None
            raw_intents = data.get("intents")
            if not isinstance(raw_intents, int) or raw_intents < 0 or raw_intents & ~ALL_INTENTS:
                return Close(4013, "Invalid intent(s).")
            if raw_intents & PRIVILEGED_INTENTS & ~app.privileged_intents:
                return Close(4014, "Disallowed intent(s).")
            intents = raw_intents
            raw_shard = data.get("shard")
            if raw_shard is not None:
                ok = (
                    isinstance(raw_shard, list)
                    and len(raw_shard) == 2
                    and all(isinstance(x, int) for x in raw_shard)
                    and 0 <= raw_shard[0] < raw_shard[1]
                )
                if not ok:
                    return Close(4010, "Invalid shard.")
                shard = (raw_shard[0], raw_shard[1])
            if (shard[1] if shard else 1) < app.min_shards:
                return Close(4011, "Sharding required.")
            now = self.state.clock.now()
            bucket = (app.id, (shard[0] if shard else 0) % app.max_concurrency)
            last = self._identify_times.get(bucket)
            if (
                last is not None and now - last < IDENTIFY_WINDOW
            ) or app.session_start_remaining <= 0:
                # Discord answers an identify over the concurrency limit with op 9.
                conn.enqueue({"op": INVALID_SESSION, "d": False, "s": None, "t": None})
                return None
            self._identify_times[bucket] = now
            app.session_start_remaining -= 1
        elif "capabilities" in data and not isinstance(data["capabilities"], int):
            return Close(4002, "Error while decoding payload.")
        session = ServedSession(
            secrets.token_hex(16), principal, token, intents=intents, shard=shard
        )
        self.sessions[session.id] = session
        session.conn = conn
        conn.session = session
        log.debug("sandbox.gateway.identify", user=principal.user.id, session=session.id)
        session.dispatch("READY", self._ready_payload(session))
        if session.is_bot and intents & INTENT_GUILDS:
            for guild in self.state.guilds_of(session.user_id):
                if session.wants_guild(guild.id):
                    session.dispatch(
                        "GUILD_CREATE", payloads.guild_payload(guild, me=principal.user)
                    )
        return None

    def _ready_payload(self, session: ServedSession) -> JSON:
        user = session.principal.user
        guilds = [g for g in self.state.guilds_of(user.id) if session.wants_guild(g.id)]
        data: JSON = {
            "v": 10,
            "user": payloads.current_user_payload(user),
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": self._gateway_url(),
            "private_channels": [],
            "presences": [],
            "relationships": [],
            "_trace": ['["gouache-sandbox-gateway",{}]'],
        }
        if session.is_bot:
            app = session.principal.application
            assert app is not None
            data["guilds"] = [{"id": str(g.id), "unavailable": True} for g in guilds]
            data["application"] = {"id": str(app.id), "flags": app.flags}
            if session.shard is not None:
                data["shard"] = list(session.shard)
        else:
            data["guilds"] = [payloads.guild_payload(g) for g in guilds]
            data["user_settings"] = {"locale": "en-US", "status": "online"}
            data["sessions"] = [{"session_id": session.id, "status": "online", "activities": []}]
            data["country_code"] = "US"
        return data

    def _resume(self, conn: ServedConnection, data: Any) -> Close | None:
        if not isinstance(data, dict) or not isinstance(data.get("token"), str):
            return Close(4002, "Error while decoding payload.")
        if not isinstance(data.get("session_id"), str):
            return Close(4002, "Error while decoding payload.")
        token = data["token"].removeprefix("Bot ")
        if token not in self.state.tokens:
            return Close(4004, "Authentication failed.")
        session = self.sessions.get(data["session_id"])
        if session is not None and self._expired(session):
            self.invalidate(session)
            session = None
        if session is None or session.token != token:
            # Discord's answer to a RESUME of a dead session: op 9 d:false on this connection.
            conn.enqueue({"op": INVALID_SESSION, "d": False, "s": None, "t": None})
            return None
        seq = data.get("seq")
        seq = 0 if seq is None else seq
        if not isinstance(seq, int) or seq > session.seq or seq < 0:
            return Close(4007, "Invalid seq.")
        oldest = session.buffer[0]["s"] if session.buffer else session.seq + 1
        if seq + 1 < oldest:
            conn.enqueue({"op": INVALID_SESSION, "d": False, "s": None, "t": None})
            self.invalidate(session)
            return None
        if session.conn is not None and session.conn is not conn:
            # The old connection is superseded; Discord kills it.
            old = session.conn
            old.session = None
            old.enqueue(Close(4000, "Session resumed elsewhere"))
        session.conn = conn
        session.disconnected_at = None
        conn.session = session
        for frame in list(session.buffer):
            if frame["s"] > seq:
                conn.enqueue(frame)
        session.dispatch("RESUMED", {"_trace": ['["gouache-sandbox-gateway",{}]']})
        log.debug("sandbox.gateway.resumed", session=session.id, replayed=session.seq - seq - 1)
        return None

    def _expired(self, session: ServedSession) -> bool:
        if session.invalid:
            return True
        if session.disconnected_at is None:
            return False
        return self.state.clock.now() - session.disconnected_at > self.resume_window

    def invalidate(self, session: ServedSession) -> None:
        """End ``session``: it can no longer be resumed."""
        session.invalid = True
        self.sessions.pop(session.id, None)

    def detach(self, conn: ServedConnection, close_code: int | None) -> None:
        """Unhook ``conn`` from its session (a client 1000/1001 close ends the session)."""
        session = conn.session
        conn.session = None
        if session is None or session.conn is not conn:
            return
        session.conn = None
        session.disconnected_at = self.state.clock.now()
        if close_code in (1000, 1001):
            # A client that closes normally ends its session (Discord's rule).
            self.invalidate(session)

    def _end_session_for_code(self, conn: ServedConnection, code: int) -> None:
        if conn.session is not None and code in SESSION_ENDING_CODES - {1000, 1001}:
            self.invalidate(conn.session)

    # -- dispatch fan-out -------------------------------------------------------------

    def live_sessions(self, user_id: int | None = None) -> list[ServedSession]:
        """Valid (connected or resumable) sessions, optionally of one user."""
        return [
            s
            for s in self.sessions.values()
            if not s.invalid and (user_id is None or s.user_id == user_id)
        ]

    def dispatch_to_user(
        self, user_id: int, event: str, data: JSON, guild_id: int | None = None
    ) -> int:
        """Dispatch to every session of ``user_id`` (shard-filtered); returns how many got it."""
        count = 0
        for session in self.live_sessions(user_id):
            if guild_id is None or session.wants_guild(guild_id):
                session.dispatch(event, data)
                count += 1
        return count

    def _on_channel_event(self, event: ChannelEvent) -> None:
        msg = event.message
        base = self._base_url()
        name = {
            "message_create": "MESSAGE_CREATE",
            "message_update": "MESSAGE_UPDATE",
            "message_delete": "MESSAGE_DELETE",
        }[event.kind]
        full: JSON | None = None
        for session in self.live_sessions():
            uid = session.user_id
            if msg.visible_to is not None and msg.visible_to != uid:
                continue
            if not self.state.can_see(uid, msg.channel_id):
                continue
            if event.guild_id is not None and not session.wants_guild(event.guild_id):
                continue
            if session.is_bot and not session.intents & INTENT_GUILD_MESSAGES:
                continue
            if event.kind == "message_delete":
                data: JSON = {"id": str(msg.id), "channel_id": str(msg.channel_id)}
                if msg.guild_id is not None:
                    data["guild_id"] = str(msg.guild_id)
                session.dispatch(name, data)
                continue
            if full is None:
                full = payloads.message_payload(msg, self.state, base)
            data = full
            hidden = (
                session.is_bot
                and not session.intents & INTENT_MESSAGE_CONTENT
                and msg.author.id != uid
                and all(u.id != uid for u in msg.mentions)
            )
            if hidden:
                # Without MESSAGE_CONTENT a bot sees no content of others' messages.
                data = dict(full, content="", embeds=[], attachments=[], components=[])
            session.dispatch(name, data)
