"""One Discord gateway connection (a user account or a bot), spoken on aiohttp.

A `GatewayConnection` keeps one Discord session alive for as long as it can:

- HELLO → heartbeats (the first after ``interval × random()``, then every
  interval); a heartbeat that finds the previous one unacknowledged means a
  zombie link: close it with 4000 (not 1000, which would end the session) and
  RESUME;
- IDENTIFY (a browser-like user-account payload with ``capabilities``, or a bot
  payload with ``intents``), paced by a shared `IdentifyPacer`; READY gives the
  session id and the resume URL;
- RESUME on the resume URL after any recoverable loss; the server replays what
  was missed, then sends RESUMED. Dispatches are deduplicated by sequence, so a
  replay never delivers an event twice;
- op 7 → resume; op 9 → wait 1–5 s, then resume (``d: true``) or identify anew;
- a closed connection is judged by `close_action` (a pure table): resume,
  identify anew, or give up and mark the account DISABLED with a reason;
- reconnects wait for `Backoff` (exponential, full jitter), reset once a
  connection has been READY long enough to get a heartbeat acknowledged;
- every send goes through a `SendBudget` (Discord's 120 frames per 60 s, a few
  kept back so heartbeats always fit);
- ``compress=True`` asks for zlib-stream transport compression (`ZlibStream`).

Dispatches go to ``on_dispatch(t, d)`` from one delivery task, in order, and
survive reconnects; a handler that raises is logged and the connection goes on.
The token is held in a pydantic `SecretStr` and never reaches a log line, an exception or a
repr.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any

import aiohttp
import structlog
import yarl
from pydantic import SecretStr

from gouache.errors import ErrorCode, GouacheError
from gouache.pool.gateway_rules import (
    Backoff,
    CloseAction,
    IdentifyPacer,
    Recovery,
    SendBudget,
    ZlibStream,
    close_action,
)

log = structlog.get_logger(__name__)

__all__ = [
    "Backoff",
    "CloseAction",
    "GatewayClosed",
    "GatewayConnection",
    "GatewayCounters",
    "GatewayDisabled",
    "GatewayError",
    "GatewayNotReady",
    "GatewayStatus",
    "IdentifyPacer",
    "Op",
    "Recovery",
    "SendBudget",
    "ZlibStream",
    "close_action",
]


class Op(IntEnum):
    """Gateway opcodes."""

    DISPATCH = 0
    HEARTBEAT = 1
    IDENTIFY = 2
    PRESENCE_UPDATE = 3
    VOICE_STATE_UPDATE = 4
    RESUME = 6
    RECONNECT = 7
    REQUEST_GUILD_MEMBERS = 8
    INVALID_SESSION = 9
    HELLO = 10
    HEARTBEAT_ACK = 11


#: Ops the connection sends itself; `GatewayConnection.send` refuses them.
MANAGED_OPS = frozenset({Op.HEARTBEAT, Op.IDENTIFY, Op.RESUME})
#: What Midjourney proxies send as a user account's ``capabilities``.
USER_CAPABILITIES = 16381
#: Discord rejects (4002) a client payload larger than this many bytes.
MAX_PAYLOAD = 4096

#: A desktop Chrome's identify ``properties`` (what a user account's web client sends).
USER_PROPERTIES: Mapping[str, Any] = {
    "os": "Windows",
    "browser": "Chrome",
    "device": "",
    "system_locale": "en-US",
    "browser_user_agent": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
    ),
    "browser_version": "124.0.0.0",
    "os_version": "10",
    "referrer": "",
    "referring_domain": "",
    "referrer_current": "",
    "referring_domain_current": "",
    "release_channel": "stable",
    "client_build_number": 291963,
    "client_event_source": None,
}
BOT_PROPERTIES: Mapping[str, Any] = {"os": sys.platform, "browser": "gouache", "device": "gouache"}


# -- errors ------------------------------------------------------------------------------


class GatewayError(GouacheError):
    """A gateway connection cannot do what was asked."""

    code = ErrorCode.GATEWAY_ERROR


class GatewayNotReady(GatewayError):
    """The connection is not READY (connecting, resuming or backing off)."""

    code = ErrorCode.GATEWAY_NOT_READY


class GatewayDisabled(GatewayError):
    """The account was disabled by a fatal close code; ``reason`` says why."""

    code = ErrorCode.GATEWAY_DISABLED

    def __init__(self, name: str, reason: str | None) -> None:
        super().__init__(f"gateway {name} is disabled: {reason or 'unknown reason'}")
        self.reason = reason


class GatewayClosed(GatewayError):
    """The connection was closed with `GatewayConnection.aclose`."""

    code = ErrorCode.GATEWAY_CLOSED


# -- the connection -----------------------------------------------------------------------------


class GatewayStatus(StrEnum):
    """Where a connection is in its life."""

    CONNECTING = "connecting"  # opening a socket to IDENTIFY
    READY = "ready"  # READY or RESUMED received; dispatches flow
    RESUMING = "resuming"  # opening a socket to RESUME
    BACKOFF = "backoff"  # waiting before the next attempt
    DISABLED = "disabled"  # gave up (see ``disabled_reason``); no more attempts
    CLOSED = "closed"  # aclose() was called


@dataclass
class GatewayCounters:
    """What happened on a connection since it was created."""

    identifies: int = 0  # IDENTIFY frames sent
    resumes: int = 0  # RESUME frames sent
    resumed: int = 0  # RESUMED received
    reconnects: int = 0  # sockets opened after the first
    missed_heartbeats: int = 0  # zombie detections (a heartbeat found the last one unacked)
    heartbeats: int = 0  # heartbeats sent
    acks: int = 0  # heartbeat ACKs received
    dispatches: int = 0  # dispatches queued for the handler
    duplicates: int = 0  # dispatches dropped because their sequence was already seen
    invalid_sessions: int = 0  # op 9 received


def _scrub(secret: SecretStr, text: str) -> str:
    """``text`` with any occurrence of the secret masked."""
    value = secret.get_secret_value()
    return text.replace(value, "***") if value else text


@dataclass(frozen=True, slots=True)
class _Outcome:
    """How a connection ended; ``delay`` replaces the backoff (the 1–5 s wait after op 9)."""

    action: CloseAction
    delay: float | None = None


class _Link:
    """The per-socket state of one connection attempt."""

    __slots__ = (
        "acked",
        "beat_sent_at",
        "budget",
        "done",
        "hello",
        "local",
        "ready",
        "stable",
        "stream",
        "tasks",
        "tg",
        "ws",
    )

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, stream: ZlibStream | None) -> None:
        self.ws = ws
        self.stream = stream
        self.budget = SendBudget()
        self.tg: asyncio.TaskGroup | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.hello = False
        self.ready = False
        self.stable = False
        self.acked = asyncio.Event()
        self.acked.set()  # nothing to acknowledge before the first heartbeat
        self.beat_sent_at: float | None = None
        #: Set when we closed the socket ourselves (zombie, op 7/9, aclose): why.
        self.local: _Outcome | None = None
        self.done = asyncio.Event()


DispatchHandler = Callable[[str, dict[str, Any]], Awaitable[None]]
StatusHandler = Callable[[GatewayStatus, str | None], None]


class GatewayConnection:
    """One Discord gateway session, kept alive across drops (see the module docstring).

    ``start()`` returns at once; ``wait_ready()`` waits for READY/RESUMED. Give
    many connections one ``session`` (an ``aiohttp.ClientSession`` whose
    connector has no connection limit: each socket stays open) and one
    ``identify_pacer``. ``on_status(status, reason)`` hears every status change
    (READY comes with reason "identified" — a new session — or "resumed");
    ``on_dispatch(t, d)`` every dispatch, READY and RESUMED included, from a
    delivery task of its own (a slow handler never delays heartbeats; do not
    await ``aclose()`` from it, since closing cancels that task).
    """

    def __init__(
        self,
        *,
        name: str,
        token: str,
        gateway_url: str,
        on_dispatch: DispatchHandler,
        bot: bool = False,
        intents: int = 0,
        capabilities: int = USER_CAPABILITIES,
        on_status: StatusHandler | None = None,
        compress: bool = True,
        session: aiohttp.ClientSession | None = None,
        identify_pacer: IdentifyPacer | None = None,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        api_version: int = 10,
        properties: Mapping[str, Any] | None = None,
        shard: tuple[int, int] | None = None,
        invalid_session_delay: tuple[float, float] = (1.0, 5.0),
        connect_timeout: float = 15.0,
        hello_timeout: float = 20.0,
        close_timeout: float = 5.0,
    ) -> None:
        if not token:
            raise ValueError(f"gateway {name}: empty token")
        low, high = invalid_session_delay
        if not 0 <= low <= high:
            raise ValueError(f"gateway {name}: invalid_session_delay must be 0 <= low <= high")
        if shard is not None and not 0 <= shard[0] < shard[1]:
            raise ValueError(f"gateway {name}: shard must be (id, count) with 0 <= id < count")
        url = yarl.URL(gateway_url)
        if url.scheme not in ("ws", "wss"):
            raise ValueError(f"gateway {name}: gateway_url must be ws:// or wss://")
        self.name = name
        self._token = SecretStr(token)
        self._gateway_url = url
        self._on_dispatch = on_dispatch
        self._on_status = on_status
        self.bot = bot
        self.intents = intents
        self.capabilities = capabilities
        self.compress = compress
        self.api_version = api_version
        self._properties = dict(properties or (BOT_PROPERTIES if bot else USER_PROPERTIES))
        self._shard = shard
        self._session = session
        self._owns_session = session is None
        self._rng = rng or random.Random()
        self._pacer = identify_pacer or IdentifyPacer()
        self._backoff = backoff or Backoff(rng=self._rng)
        self._invalid_session_delay = (low, high)
        self._connect_timeout = connect_timeout
        self._hello_timeout = hello_timeout
        self._close_timeout = close_timeout

        self.status = GatewayStatus.CONNECTING
        self.status_reason: str | None = None
        self.disabled_reason: str | None = None
        self.session_id: str | None = None
        self.user: dict[str, Any] | None = None
        self.sequence: int | None = None
        self.latency_ms: float | None = None
        self.counters = GatewayCounters()
        self._resume_url: yarl.URL | None = None
        self._connect_failures = 0
        self._link: _Link | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._closed = False
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self._changed: asyncio.Event | None = None

    def __repr__(self) -> str:
        return (
            f"<GatewayConnection {self.name!r} status={self.status.value} "
            f"session={self.session_id!r} seq={self.sequence}>"
        )

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Begin connecting in a background task; returns at once."""
        if self._closed:
            raise GatewayClosed(f"gateway {self.name} is closed")
        if self._task is not None:
            raise RuntimeError(f"gateway {self.name} already started")
        if self._session is None:
            self._session = aiohttp.ClientSession()
        self._task = asyncio.create_task(self._main(), name=f"gateway:{self.name}")

    async def aclose(self) -> None:
        """End the session (close 1000), stop every task, close an owned HTTP session."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        link = self._link
        if link is not None:
            self._request_close(link, 1000, _Outcome(CloseAction(Recovery.RESUME, "closing")))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._close_timeout + 1.0):
                    await link.done.wait()
        if self._task is not None:
            self._task.cancel()
            # asyncio.wait neither raises the task's cancellation nor swallows our own.
            await asyncio.wait({self._task})
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._set_status(GatewayStatus.CLOSED, "closed")

    async def __aenter__(self) -> GatewayConnection:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- waiting -----------------------------------------------------------------------------

    async def wait_for(
        self, predicate: Callable[[GatewayConnection], bool], timeout: float
    ) -> None:
        """Wait until ``predicate(self)`` holds; re-checked on every status change, ACK and dispatch."""
        async with asyncio.timeout(timeout):
            while not predicate(self):
                if self._changed is None:
                    self._changed = asyncio.Event()
                await self._changed.wait()

    async def wait_ready(self, timeout: float) -> None:
        """Wait for READY (or RESUMED); raises `GatewayDisabled`/`GatewayClosed` if that cannot come."""
        ends = (GatewayStatus.READY, GatewayStatus.DISABLED, GatewayStatus.CLOSED)
        await self.wait_for(lambda c: c.status in ends, timeout)
        if self.status is GatewayStatus.DISABLED:
            raise GatewayDisabled(self.name, self.disabled_reason)
        if self.status is GatewayStatus.CLOSED:
            raise GatewayClosed(f"gateway {self.name} is closed")

    def _notify(self) -> None:
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()

    def _set_status(self, status: GatewayStatus, reason: str | None) -> None:
        if status is self.status and reason == self.status_reason:
            return
        self.status = status
        self.status_reason = reason
        if status is GatewayStatus.DISABLED:
            self.disabled_reason = reason
        log.debug("gateway.status", gateway=self.name, status=status.value, reason=reason)
        if self._on_status is not None:
            try:
                self._on_status(status, reason)
            except Exception:
                log.exception("gateway.status_handler_failed", gateway=self.name)
        self._notify()

    # -- sending -----------------------------------------------------------------------------

    @property
    def is_ready(self) -> bool:
        """Whether the connection is READY and a send would go out now (budget permitting)."""
        link = self._link
        return link is not None and link.ready and self.status is GatewayStatus.READY

    async def send(self, op: int, d: Any) -> None:
        """Send a frame, waiting for room in the send budget (heartbeats keep a reserve).

        Raises `GatewayNotReady` when there is no READY connection (or it is lost
        while waiting), ``ValueError`` for ops the connection manages itself or a
        payload Discord would reject.
        """
        if op in MANAGED_OPS:
            raise ValueError(f"op {op} is sent by the gateway connection itself")
        data = json.dumps({"op": op, "d": d}, separators=(",", ":"))
        if len(data.encode()) > MAX_PAYLOAD:
            raise ValueError(f"gateway payload of op {op} exceeds {MAX_PAYLOAD} bytes")
        link = self._link
        if link is None or not link.ready:
            raise GatewayNotReady(f"gateway {self.name} is not ready ({self.status.value})")
        if not await self._send_raw(link, data, priority=False):
            raise GatewayNotReady(f"gateway {self.name} lost its connection while sending")

    @staticmethod
    async def _take_budget(link: _Link, *, priority: bool) -> bool:
        """Wait for room in ``link``'s send budget and take it; False once the socket is gone."""
        while (wait := link.budget.delay(priority=priority)) > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await link.done.wait()
            if link.done.is_set():
                return False
        link.budget.record()
        return not link.ws.closed and link.local is None

    async def _send_raw(self, link: _Link, data: str, *, priority: bool) -> bool:
        if not await self._take_budget(link, priority=priority):
            return False
        try:
            await link.ws.send_str(data)
        except (ConnectionError, aiohttp.ClientError, RuntimeError):
            return False
        return True

    async def _send_frame(self, link: _Link, op: Op, d: Any) -> bool:
        return await self._send_raw(
            link, json.dumps({"op": int(op), "d": d}, separators=(",", ":")), priority=True
        )

    # -- the supervisor: connect, judge the end, back off, again ------------------------------------

    async def _main(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                deliver = tg.create_task(self._deliver())
                await self._supervise()
                if self._closing.is_set():
                    deliver.cancel()
                # Disabled: keep delivering what arrived until aclose() cancels us.
        except Exception as exc:
            # A bug, not a network problem; stop instead of spinning on it.
            log.exception("gateway.crashed", gateway=self.name)
            self._set_status(
                GatewayStatus.DISABLED, f"internal error: {_scrub(self._token, repr(exc))}"
            )

    async def _supervise(self) -> None:
        first = True
        while not self._closing.is_set():
            resume = self.session_id is not None
            if not first:
                self.counters.reconnects += 1
            first = False
            try:
                outcome = await self._connect_once(resume)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self._connect_failures += 1
                detail = _scrub(self._token, f"{type(exc).__name__}: {exc}")
                log.warning("gateway.connect_failed", gateway=self.name, error=detail)
                outcome = _Outcome(CloseAction(Recovery.RESUME, f"connection failed: {detail}"))
            except Exception as exc:
                # Not the network: log it loudly, but keep the account alive (with backoff).
                self._connect_failures += 1
                detail = _scrub(self._token, f"{type(exc).__name__}: {exc}")
                log.exception("gateway.unexpected_error", gateway=self.name, error=detail)
                outcome = _Outcome(CloseAction(Recovery.RESUME, f"unexpected error: {detail}"))
            if self._closing.is_set():
                return
            action = outcome.action
            if action.kind is Recovery.DISABLE:
                self._forget_session()
                log.error("gateway.disabled", gateway=self.name, reason=action.reason)
                self._set_status(GatewayStatus.DISABLED, action.reason)
                return
            if action.kind is Recovery.IDENTIFY:
                self._forget_session()
            delay = outcome.delay if outcome.delay is not None else self._backoff.next_delay()
            log.info(
                "gateway.reconnecting",
                gateway=self.name,
                recovery=action.kind.value,
                reason=action.reason,
                delay_s=round(delay, 3),
            )
            self._set_status(GatewayStatus.BACKOFF, action.reason)
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that arrives just as the inner wait completes.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._closing.wait()

    def _forget_session(self) -> None:
        self.session_id = None
        self.sequence = None
        self._resume_url = None

    def _url(self, resume: bool) -> yarl.URL:
        # A resume URL that keeps failing to connect may be gone: fall back to the main one.
        base = self._gateway_url
        if resume and self._resume_url is not None and self._connect_failures < 3:
            base = self._resume_url
        query = dict(base.query)
        query.update(v=str(self.api_version), encoding="json")
        if self.compress:
            query["compress"] = "zlib-stream"
        else:
            query.pop("compress", None)
        return base.with_query(query)

    async def _connect_once(self, resume: bool) -> _Outcome:
        self._set_status(GatewayStatus.RESUMING if resume else GatewayStatus.CONNECTING, None)
        assert self._session is not None
        async with asyncio.timeout(self._connect_timeout):
            ws = await self._session.ws_connect(
                self._url(resume),
                autoclose=True,
                autoping=True,
                max_msg_size=0,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=self._close_timeout),
            )
        link = _Link(ws, ZlibStream() if self.compress else None)
        self._link = link
        try:
            async with asyncio.TaskGroup() as tg:
                link.tg = tg
                link.tasks.append(tg.create_task(self._hello_watchdog(link)))
                try:
                    return await self._read(link, resume)
                finally:
                    link.tg = None
                    for task in link.tasks:
                        task.cancel()
        finally:
            self._link = None
            if not ws.closed:
                # 1000 ends the session (aclose); anything else keeps it resumable.
                code = 1000 if self._closing.is_set() else 4000
                with contextlib.suppress(Exception):
                    await ws.close(code=code)
            link.done.set()

    def _request_close(
        self, link: _Link, code: int, outcome: _Outcome, wait: float | None = None
    ) -> None:
        """Close ``link`` from outside the reader (the reader sees CLOSING and returns ``outcome``).

        ``wait`` bounds how long to wait for the server's close reply before
        dropping the socket (a zombie link will never answer).
        """
        if link.local is not None or link.tg is None:
            return
        link.local = outcome
        link.tg.create_task(self._close_ws(link.ws, code, wait or self._close_timeout))

    @staticmethod
    async def _close_ws(ws: aiohttp.ClientWebSocketResponse, code: int, wait: float) -> None:
        # On timeout aiohttp aborts the transport; the close frame is already out.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(wait):
                await ws.close(code=code)

    async def _close_self(self, link: _Link, outcome: _Outcome) -> _Outcome:
        """Close ``link`` from the reader itself with 4000 (the session stays resumable)."""
        link.local = outcome
        with contextlib.suppress(Exception):
            await link.ws.close(code=4000)
        return outcome

    async def _hello_watchdog(self, link: _Link) -> None:
        await asyncio.sleep(self._hello_timeout)
        if not link.hello:
            self._request_close(
                link, 4000, _Outcome(CloseAction(Recovery.RESUME, "no HELLO from the gateway"))
            )

    # -- reading ----------------------------------------------------------------------------

    async def _read(self, link: _Link, resume: bool) -> _Outcome:
        ws = link.ws
        while True:
            msg = await ws.receive()
            raw: str | bytes | None
            if msg.type is aiohttp.WSMsgType.TEXT:
                raw = msg.data
            elif msg.type is aiohttp.WSMsgType.BINARY:
                raw = msg.data
                if link.stream is not None:
                    try:
                        raw = link.stream.feed(msg.data)
                    except zlib.error:
                        return await self._close_self(
                            link, _Outcome(CloseAction(Recovery.RESUME, "corrupt zlib stream"))
                        )
                    if raw is None:
                        continue
            else:
                if link.local is not None:
                    return link.local
                if msg.type is aiohttp.WSMsgType.CLOSE:
                    action = close_action(int(msg.data))
                    log.info(
                        "gateway.closed_by_server",
                        gateway=self.name,
                        code=int(msg.data),
                        message=str(msg.extra or "")[:200],
                        recovery=action.kind.value,
                    )
                    return _Outcome(action)
                return _Outcome(close_action(None))
            try:
                frame = json.loads(raw)
            except ValueError:
                frame = None
            if not isinstance(frame, dict):
                return await self._close_self(
                    link, _Outcome(CloseAction(Recovery.RESUME, "undecodable frame from gateway"))
                )
            outcome = await self._handle(link, frame, resume)
            if outcome is not None:
                return outcome

    async def _handle(self, link: _Link, frame: dict[str, Any], resume: bool) -> _Outcome | None:
        op = frame.get("op")
        d = frame.get("d")
        if op == Op.DISPATCH:
            self._dispatch(link, frame)
        elif op == Op.HEARTBEAT_ACK:
            link.acked.set()
            self.counters.acks += 1
            if link.beat_sent_at is not None:
                self.latency_ms = (time.monotonic() - link.beat_sent_at) * 1000.0
            if link.ready and not link.stable:
                # READY and a full heartbeat round trip: this connection is not flapping.
                link.stable = True
                self._backoff.reset()
            self._notify()
        elif op == Op.HEARTBEAT:
            await self._beat(link)
        elif op == Op.HELLO:
            if link.hello:
                return None
            interval = d.get("heartbeat_interval") if isinstance(d, dict) else None
            if not isinstance(interval, int | float) or isinstance(interval, bool) or interval <= 0:
                return await self._close_self(
                    link, _Outcome(CloseAction(Recovery.RESUME, "HELLO without heartbeat_interval"))
                )
            link.hello = True
            assert link.tg is not None
            link.tasks.append(link.tg.create_task(self._heartbeat(link, interval / 1000.0)))
            if resume:
                await self._send_resume(link)
            else:
                # Paced where the server counts it; the reader goes on meanwhile (ACKs, op 9...).
                link.tasks.append(link.tg.create_task(self._identify_when_allowed(link)))
        elif op == Op.RECONNECT:
            log.info("gateway.op7_reconnect", gateway=self.name)
            return await self._close_self(
                link, _Outcome(CloseAction(Recovery.RESUME, "server asked to reconnect (op 7)"))
            )
        elif op == Op.INVALID_SESSION:
            self.counters.invalid_sessions += 1
            delay = self._rng.uniform(*self._invalid_session_delay)
            resumable = d is True
            log.info("gateway.invalid_session", gateway=self.name, resumable=resumable)
            if resumable:
                action = CloseAction(Recovery.RESUME, "invalid session, resumable (op 9)")
            else:
                action = CloseAction(Recovery.IDENTIFY, "invalid session (op 9)")
            return await self._close_self(link, _Outcome(action, delay))
        else:
            log.debug("gateway.unknown_op", gateway=self.name, op=op)
        return None

    def _dispatch(self, link: _Link, frame: dict[str, Any]) -> None:
        s = frame.get("s")
        if isinstance(s, int):
            if self.sequence is not None and s <= self.sequence:
                # Already delivered (a replay overlapping what we saw): never twice.
                self.counters.duplicates += 1
                return
            self.sequence = s
        t = frame.get("t")
        if not isinstance(t, str):
            return
        d = frame.get("d")
        data: dict[str, Any] = d if isinstance(d, dict) else {}
        if t == "READY":
            sid = data.get("session_id")
            self.session_id = sid if isinstance(sid, str) and sid else None
            url = data.get("resume_gateway_url")
            self._resume_url = yarl.URL(url) if isinstance(url, str) and url else None
            user = data.get("user")
            self.user = user if isinstance(user, dict) else None
            self._became_ready(link, "identified")
        elif t == "RESUMED":
            self.counters.resumed += 1
            self._became_ready(link, "resumed")
        self.counters.dispatches += 1
        self._queue.put_nowait((t, data))
        self._notify()

    def _became_ready(self, link: _Link, how: str) -> None:
        link.ready = True
        self._connect_failures = 0
        log.info("gateway.ready", gateway=self.name, how=how, session=self.session_id)
        self._set_status(GatewayStatus.READY, how)

    async def _deliver(self) -> None:
        while True:
            t, d = await self._queue.get()
            try:
                await self._on_dispatch(t, d)
            except Exception:
                log.exception("gateway.dispatch_handler_failed", gateway=self.name, dispatch=t)

    # -- heartbeats, identify, resume ----------------------------------------------------------------

    async def _heartbeat(self, link: _Link, interval: float) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time() + interval * self._rng.random()
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            if not link.acked.is_set() and loop.time() - next_at > interval * 0.25:
                # Our own loop stalled (not the link): the ACK may be waiting unread. Let the
                # reader catch up before judging the link.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(interval, 1.0)):
                        await link.acked.wait()
            if not link.acked.is_set():
                self.counters.missed_heartbeats += 1
                log.warning("gateway.zombie", gateway=self.name, interval_s=interval)
                self._request_close(
                    link,
                    4000,
                    _Outcome(
                        CloseAction(Recovery.RESUME, "zombie connection: heartbeat not acked")
                    ),
                    wait=min(1.0, interval),
                )
                self._notify()
                return
            link.acked.clear()
            await self._beat(link)
            next_at = max(next_at + interval, loop.time())

    async def _beat(self, link: _Link) -> None:
        if not await self._take_budget(link, priority=True):
            return
        link.beat_sent_at = time.monotonic()
        try:
            await link.ws.send_str(f'{{"op":1,"d":{json.dumps(self.sequence)}}}')
        except (ConnectionError, aiohttp.ClientError, RuntimeError):
            return  # the reader sees the socket go
        self.counters.heartbeats += 1

    async def _identify_when_allowed(self, link: _Link) -> None:
        await self._pacer.acquire()
        if link.ws.closed or link.local is not None:
            return
        await self._send_identify(link)

    async def _send_identify(self, link: _Link) -> None:
        self._forget_session()
        d: dict[str, Any] = {
            "token": self._token.get_secret_value(),
            "properties": self._properties,
            "compress": False,
        }
        if self.bot:
            d["intents"] = self.intents
            d["large_threshold"] = 250
            if self._shard is not None:
                d["shard"] = list(self._shard)
        else:
            d["capabilities"] = self.capabilities
            d["presence"] = {"status": "online", "since": 0, "activities": [], "afk": False}
            d["client_state"] = {"guild_versions": {}}
        self.counters.identifies += 1
        log.info("gateway.identify", gateway=self.name, bot=self.bot)
        await self._send_frame(link, Op.IDENTIFY, d)

    async def _send_resume(self, link: _Link) -> None:
        d = {
            "token": self._token.get_secret_value(),
            "session_id": self.session_id,
            "seq": self.sequence,
        }
        self.counters.resumes += 1
        log.info("gateway.resume", gateway=self.name, session=self.session_id, seq=self.sequence)
        await self._send_frame(link, Op.RESUME, d)
