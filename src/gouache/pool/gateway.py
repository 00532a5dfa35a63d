"""One Discord gateway connection (a user account or a bot): sockets, tasks and timers.

The protocol — HELLO, heartbeats and zombie detection, IDENTIFY or RESUME,
READY/RESUMED, op 1/7/9/11, sequence numbers and duplicate dispatches, the
verdict on a closed socket — lives in `gateway_session.GatewaySession`, which
owns no socket. A `GatewayConnection` opens the sockets, runs the timers and
carries out the effects the session returns:

- HELLO → a heartbeat task (the first beat after ``interval × random()``,
  then every interval); a heartbeat that finds the previous one
  unacknowledged closes the zombie link with 4000 (not 1000, which would end
  the session) and RESUMEs;
- IDENTIFY (a browser-like user-account payload with ``capabilities``, or a
  bot payload with ``intents``) waits for a shared `IdentifyPacer`; READY
  gives the session (id, sequence, resume URL: a frozen `Session` value that
  can be saved and given back with ``resume=``);
- RESUME goes to the resume URL after any recoverable loss; the server
  replays what was missed, then sends RESUMED, and a replay never delivers a
  dispatch twice;
- op 7 → resume; op 9 → wait 1–5 s, then resume (``d: true``) or identify anew;
- a closed socket is judged by `close_action` (a pure table): resume,
  identify anew, or give up and mark the account DISABLED with a reason;
- reconnects wait for `Backoff` (exponential, full jitter), reset once a
  connection has been READY long enough to get a heartbeat acknowledged;
- every send goes through a `SendBudget` (Discord's 120 frames per 60 s, a few
  kept back so heartbeats always fit);
- ``compress=True`` asks for zlib-stream transport compression (`ZlibStream`).

Its configuration is one frozen `GatewaySettings`. Dispatches go to
``on_dispatch(t, d)`` from one delivery task, in order, and survive
reconnects; a handler that raises is logged and the connection goes on. The
token is held in a pydantic `SecretStr` and never reaches a log line, an
exception or a repr.
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
from enum import StrEnum
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
from gouache.pool.gateway_session import (
    Acked,
    AwaitAck,
    Close,
    Deliver,
    Effect,
    GatewayCounters,
    GatewaySession,
    LinkPhase,
    Op,
    Ready,
    SendHeartbeat,
    SendIdentify,
    SendResume,
    Session,
    StartHeartbeats,
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
    "GatewaySettings",
    "GatewayStatus",
    "IdentifyPacer",
    "Op",
    "Recovery",
    "SendBudget",
    "Session",
    "ZlibStream",
    "close_action",
    "identify_payload",
]

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


# -- settings --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """Everything that configures one connection (checked when built; the token stays secret).

    ``properties`` defaults to a browser's (user accounts) or gouache's (bots);
    ``shard`` is ``(id, count)`` for bots; ``invalid_session_delay`` bounds
    op 9's random wait; the timeouts are in seconds.
    """

    name: str
    token: SecretStr
    gateway_url: str
    bot: bool = False
    intents: int = 0
    capabilities: int = USER_CAPABILITIES
    compress: bool = True
    api_version: int = 10
    properties: Mapping[str, Any] | None = None
    shard: tuple[int, int] | None = None
    invalid_session_delay: tuple[float, float] = (1.0, 5.0)
    connect_timeout: float = 15.0
    hello_timeout: float = 20.0
    close_timeout: float = 5.0

    def __post_init__(self) -> None:
        name = self.name
        if not self.token.get_secret_value():
            raise ValueError(f"gateway {name}: empty token")
        low, high = self.invalid_session_delay
        if not 0 <= low <= high:
            raise ValueError(f"gateway {name}: invalid_session_delay must be 0 <= low <= high")
        if self.shard is not None and not 0 <= self.shard[0] < self.shard[1]:
            raise ValueError(f"gateway {name}: shard must be (id, count) with 0 <= id < count")
        if yarl.URL(self.gateway_url).scheme not in ("ws", "wss"):
            raise ValueError(f"gateway {name}: gateway_url must be ws:// or wss://")


def identify_payload(settings: GatewaySettings) -> dict[str, Any]:
    """The IDENTIFY ``d`` for ``settings``, without the token (the session adds it)."""
    properties = settings.properties or (BOT_PROPERTIES if settings.bot else USER_PROPERTIES)
    d: dict[str, Any] = {"properties": dict(properties), "compress": False}
    if settings.bot:
        d["intents"] = settings.intents
        d["large_threshold"] = 250
        if settings.shard is not None:
            d["shard"] = list(settings.shard)
    else:
        d["capabilities"] = settings.capabilities
        d["presence"] = {"status": "online", "since": 0, "activities": [], "afk": False}
        d["client_state"] = {"guild_versions": {}}
    return d


# -- the connection -----------------------------------------------------------------------------


class GatewayStatus(StrEnum):
    """Where a connection is in its life."""

    CONNECTING = "connecting"  # opening a socket to IDENTIFY
    READY = "ready"  # READY or RESUMED received; dispatches flow
    RESUMING = "resuming"  # opening a socket to RESUME
    BACKOFF = "backoff"  # waiting before the next attempt
    DISABLED = "disabled"  # gave up (see ``disabled_reason``); no more attempts
    CLOSED = "closed"  # aclose() was called


def _scrub(secret: SecretStr, text: str) -> str:
    """``text`` with any occurrence of the secret masked."""
    value = secret.get_secret_value()
    return text.replace(value, "***") if value else text


class _Link:
    """The socket, tasks and timers of one connection attempt."""

    __slots__ = (
        "acked",
        "beat_sent_at",
        "budget",
        "done",
        "local",
        "stream",
        "tasks",
        "tg",
        "ws",
    )

    def __init__(
        self, ws: aiohttp.ClientWebSocketResponse, stream: ZlibStream | None, budget: SendBudget
    ) -> None:
        self.ws = ws
        self.stream = stream
        self.budget = budget
        self.tg: asyncio.TaskGroup | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.acked = asyncio.Event()
        self.acked.set()  # nothing to acknowledge before the first heartbeat
        self.beat_sent_at: float | None = None
        #: Set when we close the socket ourselves (zombie, op 7/9, aclose): why.
        self.local: Close | None = None
        self.done = asyncio.Event()


DispatchHandler = Callable[[str, dict[str, Any]], Awaitable[None]]
StatusHandler = Callable[[GatewayStatus, str | None], None]


class GatewayConnection:
    """One Discord gateway session, kept alive across drops (see the module docstring).

    ``start()`` returns at once; ``wait_ready()`` waits for READY/RESUMED. Give
    many connections one ``http`` session (an ``aiohttp.ClientSession`` whose
    connector has no connection limit: each socket stays open) and one
    ``identify_pacer``. ``on_status(status, reason)`` hears every status change
    (READY comes with reason "identified" — a new session — or "resumed");
    ``on_dispatch(t, d)`` every dispatch, READY and RESUMED included, from a
    delivery task of its own (a slow handler never delays heartbeats; do not
    await ``aclose()`` from it, since closing cancels that task). ``resume``
    gives back a saved `Session`: the first socket RESUMEs it. ``send_budget()``
    makes each socket's `SendBudget` (a test gives it a clock).
    """

    def __init__(  # noqa: PLR0913
        self,
        settings: GatewaySettings,
        *,
        on_dispatch: DispatchHandler,
        on_status: StatusHandler | None = None,
        http: aiohttp.ClientSession | None = None,
        identify_pacer: IdentifyPacer | None = None,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        resume: Session | None = None,
        send_budget: Callable[[], SendBudget] = SendBudget,
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self._on_dispatch = on_dispatch
        self._on_status = on_status
        self._http = http
        self._owns_http = http is None
        self._rng = rng or random.Random()
        self._pacer = identify_pacer or IdentifyPacer()
        self._backoff = backoff or Backoff(rng=self._rng)
        self._send_budget = send_budget
        self.protocol = GatewaySession(
            name=settings.name,
            token=settings.token,
            identify=identify_payload(settings),
            invalid_session_delay=settings.invalid_session_delay,
            rng=self._rng,
            session=resume,
        )

        self.status = GatewayStatus.CONNECTING
        self.status_reason: str | None = None
        self.disabled_reason: str | None = None
        self.latency_ms: float | None = None
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

    # -- what the protocol knows -------------------------------------------------------------

    @property
    def session(self) -> Session | None:
        """The session to resume (a frozen value: save it, give it back with ``resume=``)."""
        return self.protocol.session

    @property
    def session_id(self) -> str | None:
        """The current session's id (None before READY and after it was lost for good)."""
        session = self.protocol.session
        return session.id if session is not None else None

    @property
    def sequence(self) -> int | None:
        """The last dispatch sequence seen in this session."""
        return self.protocol.sequence

    @property
    def user(self) -> dict[str, Any] | None:
        """READY's ``user`` object."""
        return self.protocol.user

    @property
    def counters(self) -> GatewayCounters:
        """What happened on this connection since it was created."""
        return self.protocol.counters

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Begin connecting in a background task; returns at once."""
        if self._closed:
            raise GatewayClosed(f"gateway {self.name} is closed")
        if self._task is not None:
            raise RuntimeError(f"gateway {self.name} already started")
        if self._http is None:
            self._http = aiohttp.ClientSession()
        self._task = asyncio.create_task(self._main(), name=f"gateway:{self.name}")

    async def aclose(self) -> None:
        """End the session (close 1000), stop every task, close an owned HTTP session."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        link = self._link
        if link is not None:
            for effect in self.protocol.close(1000, CloseAction(Recovery.RESUME, "closing")):
                if isinstance(effect, Close):
                    self._request_close(link, effect)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.close_timeout + 1.0):
                    await link.done.wait()
        if self._task is not None:
            self._task.cancel()
            # asyncio.wait neither raises the task's cancellation nor swallows our own.
            await asyncio.wait({self._task})
        if self._owns_http and self._http is not None:
            await self._http.close()
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
        return (
            self._link is not None
            and self.protocol.phase is LinkPhase.READY
            and self.status is GatewayStatus.READY
        )

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
        if link is None or self.protocol.phase is not LinkPhase.READY:
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
                GatewayStatus.DISABLED, f"internal error: {_scrub(self.settings.token, repr(exc))}"
            )

    async def _supervise(self) -> None:
        first = True
        while not self._closing.is_set():
            resume = self.protocol.resuming
            if not first:
                self.counters.reconnects += 1
            first = False
            try:
                outcome = await self._connect_once(resume)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self._connect_failures += 1
                detail = _scrub(self.settings.token, f"{type(exc).__name__}: {exc}")
                log.warning("gateway.connect_failed", gateway=self.name, error=detail)
                outcome = Close(0, CloseAction(Recovery.RESUME, f"connection failed: {detail}"))
            except Exception as exc:
                # Not the network: log it loudly, but keep the account alive (with backoff).
                self._connect_failures += 1
                detail = _scrub(self.settings.token, f"{type(exc).__name__}: {exc}")
                log.exception("gateway.unexpected_error", gateway=self.name, error=detail)
                outcome = Close(0, CloseAction(Recovery.RESUME, f"unexpected error: {detail}"))
            if self._closing.is_set():
                return
            action = outcome.action
            self.protocol.settle(action)
            if action.kind is Recovery.DISABLE:
                log.error("gateway.disabled", gateway=self.name, reason=action.reason)
                self._set_status(GatewayStatus.DISABLED, action.reason)
                return
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

    def _url(self, resume: bool) -> yarl.URL:
        # A resume URL that keeps failing to connect may be gone: fall back to the main one.
        base = yarl.URL(self.settings.gateway_url)
        session = self.protocol.session
        if resume and session is not None and session.resume_url and self._connect_failures < 3:
            base = yarl.URL(session.resume_url)
        query = dict(base.query)
        query.update(v=str(self.settings.api_version), encoding="json")
        if self.settings.compress:
            query["compress"] = "zlib-stream"
        else:
            query.pop("compress", None)
        return base.with_query(query)

    async def _connect_once(self, resume: bool) -> Close:
        self._set_status(GatewayStatus.RESUMING if resume else GatewayStatus.CONNECTING, None)
        assert self._http is not None
        async with asyncio.timeout(self.settings.connect_timeout):
            ws = await self._http.ws_connect(
                self._url(resume),
                autoclose=True,
                autoping=True,
                max_msg_size=0,
                timeout=aiohttp.ClientWSTimeout(
                    ws_receive=None, ws_close=self.settings.close_timeout
                ),
            )
        link = _Link(ws, ZlibStream() if self.settings.compress else None, self._send_budget())
        self._link = link
        self.protocol.opened()
        try:
            async with asyncio.TaskGroup() as tg:
                link.tg = tg
                link.tasks.append(tg.create_task(self._hello_watchdog(link)))
                try:
                    return await self._read(link)
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

    def _request_close(self, link: _Link, close: Close) -> None:
        """Close ``link`` from outside the reader (the reader sees CLOSING and returns ``close``).

        ``close.wait`` bounds how long to wait for the server's close reply
        before dropping the socket (a zombie link will never answer).
        """
        if link.local is not None or link.tg is None:
            return
        link.local = close
        link.tg.create_task(
            self._close_ws(link.ws, close.code, close.wait or self.settings.close_timeout)
        )

    @staticmethod
    async def _close_ws(ws: aiohttp.ClientWebSocketResponse, code: int, wait: float) -> None:
        # On timeout aiohttp aborts the transport; the close frame is already out.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(wait):
                await ws.close(code=code)

    async def _hello_watchdog(self, link: _Link) -> None:
        await asyncio.sleep(self.settings.hello_timeout)
        for effect in self.protocol.hello_timed_out():
            if isinstance(effect, Close):
                self._request_close(link, effect)

    # -- reading ----------------------------------------------------------------------------

    async def _read(self, link: _Link) -> Close:  # noqa: PLR0912
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
                        outcome = await self._apply(link, self.protocol.fail("corrupt zlib stream"))
                        if outcome is not None:
                            return outcome
                        continue
                    if raw is None:
                        continue
            else:
                if msg.type is aiohttp.WSMsgType.CLOSE:
                    code = int(msg.data)
                    outcome = self.protocol.ended(code, frame=True)
                    if link.local is None:
                        log.info(
                            "gateway.closed_by_server",
                            gateway=self.name,
                            code=code,
                            message=str(msg.extra or "")[:200],
                            recovery=outcome.action.kind.value,
                        )
                    return outcome
                return self.protocol.ended(None, frame=False)
            try:
                frame = json.loads(raw)
            except ValueError:
                frame = None
            if isinstance(frame, dict):
                effects = self.protocol.receive(frame)
            else:
                effects = self.protocol.fail("undecodable frame from gateway")
            if effects:
                outcome = await self._apply(link, effects)
                if outcome is not None:
                    return outcome

    async def _apply(self, link: _Link, effects: list[Effect]) -> Close | None:
        """Carry out what the protocol said about a frame; the link's end if it closed it."""
        for effect in effects:
            if isinstance(effect, Deliver):
                self._queue.put_nowait((effect.t, effect.d))
                self._notify()
            elif isinstance(effect, SendHeartbeat):
                await self._beat(link, effect.sequence)
            elif isinstance(effect, Acked):
                link.acked.set()
                if link.beat_sent_at is not None:
                    self.latency_ms = (time.monotonic() - link.beat_sent_at) * 1000.0
                if effect.stable:
                    # READY and a full heartbeat round trip: this connection is not flapping.
                    self._backoff.reset()
                self._notify()
            elif isinstance(effect, Ready):
                self._connect_failures = 0
                log.info(
                    "gateway.ready", gateway=self.name, how=effect.how, session=self.session_id
                )
                self._set_status(GatewayStatus.READY, effect.how)
            elif isinstance(effect, StartHeartbeats):
                assert link.tg is not None
                link.tasks.append(link.tg.create_task(self._heartbeat(link, effect)))
            elif isinstance(effect, SendIdentify):
                # Paced where the server counts it; the reader goes on meanwhile (ACKs, op 9...).
                assert link.tg is not None
                link.tasks.append(link.tg.create_task(self._identify_when_allowed(link, effect)))
            elif isinstance(effect, SendResume):
                self.counters.resumes += 1
                log.info(
                    "gateway.resume", gateway=self.name, session=self.session_id, seq=self.sequence
                )
                await self._send_frame(link, Op.RESUME, effect.d)
            elif isinstance(effect, Close):
                # Closed from the reader itself: the session stays resumable (not 1000).
                link.local = effect
                with contextlib.suppress(Exception):
                    await link.ws.close(code=effect.code)
                return self.protocol.ended(None, frame=False)
            elif isinstance(effect, AwaitAck):  # only the heartbeat timer asks for this
                raise AssertionError("AwaitAck outside the heartbeat timer")
        return None

    async def _deliver(self) -> None:
        while True:
            t, d = await self._queue.get()
            try:
                await self._on_dispatch(t, d)
            except Exception:
                log.exception("gateway.dispatch_handler_failed", gateway=self.name, dispatch=t)

    # -- timers and sends ----------------------------------------------------------------------

    async def _heartbeat(self, link: _Link, start: StartHeartbeats) -> None:
        loop = asyncio.get_running_loop()
        interval = start.interval
        next_at = loop.time() + start.first
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            effects = self.protocol.heartbeat_due(late=loop.time() - next_at)
            while effects and isinstance(effects[0], AwaitAck):
                # Our own loop stalled (not the link): the ACK may be waiting unread. Let the
                # reader catch up before judging the link.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(effects[0].timeout):
                        await link.acked.wait()
                effects = self.protocol.heartbeat_due()
            if not effects:
                return
            for effect in effects:
                if isinstance(effect, SendHeartbeat):
                    link.acked.clear()
                    await self._beat(link, effect.sequence)
                elif isinstance(effect, Close):
                    self._request_close(link, effect)
                    self._notify()
                    return
            next_at = max(next_at + interval, loop.time())

    async def _beat(self, link: _Link, sequence: int | None) -> None:
        if not await self._take_budget(link, priority=True):
            return
        link.beat_sent_at = time.monotonic()
        try:
            await link.ws.send_str(f'{{"op":1,"d":{json.dumps(sequence)}}}')
        except (ConnectionError, aiohttp.ClientError, RuntimeError):
            return  # the reader sees the socket go
        self.counters.heartbeats += 1

    async def _identify_when_allowed(self, link: _Link, identify: SendIdentify) -> None:
        await self._pacer.acquire()
        if link.ws.closed or link.local is not None:
            return
        self.counters.identifies += 1
        log.info("gateway.identify", gateway=self.name, bot=self.settings.bot)
        await self._send_frame(link, Op.IDENTIFY, identify.d)
