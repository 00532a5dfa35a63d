"""The Discord gateway protocol without a socket: feed it frames and timer ticks, do what it says.

`GatewaySession` owns everything the gateway protocol decides: HELLO and the
heartbeat schedule, IDENTIFY or RESUME, READY/RESUMED, the sequence number
and duplicate dispatches, op 1/7/9/11, zombie detection and how a link's end
is judged (`gateway_rules.close_action`). It owns no socket, task or clock:
each method returns a list of effects, and `gouache.pool.gateway`'s
connection carries them out (h11's shape: a protocol is an object you feed
events and that tells you what to send).

Effects:

- `StartHeartbeats` — HELLO arrived: beat every ``interval`` s, the first after ``first``;
- `SendHeartbeat`, `SendIdentify`, `SendResume` — a frame to send (an
  IDENTIFY waits for the shared identify pacer first);
- `AwaitAck` — the heartbeat timer fired late (our own loop stalled): give
  the reader ``timeout`` s to read a pending ACK, then tick again;
- `Acked` — an ACK arrived (``stable``: the first after READY, reset the backoff);
- `Ready` — READY (``how="identified"``) or RESUMED (``how="resumed"``);
- `Deliver` — a dispatch for the handler, never twice;
- `Close` — close the socket with ``code`` (4000 keeps the session
  resumable); the link ended with ``action``, and ``delay`` (op 9's 1–5 s)
  replaces the backoff before the next attempt.

The session itself — id, last sequence, resume URL — is a frozen `Session`
value: read it from `GatewaySession.session`, save it, and give it back to a
new `GatewaySession` to RESUME instead of IDENTIFY.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import IntEnum, StrEnum
from typing import Any

import structlog
from pydantic import SecretStr

from gouache.pool.gateway_rules import CloseAction, Recovery, close_action

log = structlog.get_logger(__name__)

__all__ = [
    "Acked",
    "AwaitAck",
    "Close",
    "Deliver",
    "Effect",
    "GatewayCounters",
    "GatewaySession",
    "LinkPhase",
    "Op",
    "Ready",
    "SendHeartbeat",
    "SendIdentify",
    "SendResume",
    "Session",
    "StartHeartbeats",
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


@dataclass(frozen=True, slots=True)
class Session:
    """A Discord session that can be resumed: save it, and give it back to resume it."""

    id: str
    sequence: int | None = None  # the last dispatch sequence seen
    resume_url: str | None = None  # where to RESUME (READY's resume_gateway_url)


@dataclass
class GatewayCounters:
    """What happened on a connection since it was created.

    The session counts what it receives and decides; the connection counts
    what it actually sends (a paced IDENTIFY may never go out) and its sockets.
    """

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


# -- effects ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartHeartbeats:
    """HELLO: heartbeat every ``interval`` seconds, the first after ``first`` (jitter)."""

    interval: float
    first: float


@dataclass(frozen=True, slots=True)
class SendHeartbeat:
    """Send op 1 carrying ``sequence`` (the last sequence seen)."""

    sequence: int | None


@dataclass(frozen=True, slots=True)
class SendIdentify:
    """Send op 2 with ``d`` once the identify pacer allows (``d`` holds the token)."""

    d: Mapping[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class SendResume:
    """Send op 6 with ``d`` (it holds the token)."""

    d: Mapping[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class AwaitAck:
    """Our heartbeat timer fired late: wait up to ``timeout`` s for the reader, then tick again."""

    timeout: float


@dataclass(frozen=True, slots=True)
class Acked:
    """A heartbeat ACK arrived; ``stable``: READY plus a round trip, reset the backoff."""

    stable: bool


@dataclass(frozen=True, slots=True)
class Ready:
    """Dispatches flow: ``how`` is "identified" (a new session) or "resumed"."""

    how: str


@dataclass(frozen=True, slots=True)
class Deliver:
    """Hand dispatch ``t`` with data ``d`` to the handler."""

    t: str
    d: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Close:
    """Close the socket with ``code``; the link ended with ``action``.

    ``delay`` replaces the backoff before the next attempt (op 9); ``wait``
    bounds how long to wait for the server's close reply (a zombie never answers).
    """

    code: int
    action: CloseAction
    delay: float | None = None
    wait: float | None = None


Effect = (
    StartHeartbeats
    | SendHeartbeat
    | SendIdentify
    | SendResume
    | AwaitAck
    | Acked
    | Ready
    | Deliver
    | Close
)


class LinkPhase(StrEnum):
    """Where the current socket is in the protocol."""

    CLOSED = "closed"  # no socket
    HELLO = "hello"  # open, waiting for HELLO
    IDENTIFYING = "identifying"  # IDENTIFY due or sent, waiting for READY
    RESUMING = "resuming"  # RESUME sent, waiting for RESUMED
    READY = "ready"  # READY/RESUMED received: dispatches flow
    CLOSING = "closing"  # we decided to close it (``ending`` says why)


# The zombie verdict needs the reader a chance to catch up when our own timer ran late.
_LATE_FRACTION = 0.25


class GatewaySession:
    """The gateway protocol of one account across its sockets (see the module docstring).

    ``name`` goes into log lines; ``identify`` is the IDENTIFY payload without the token (the token is added
    to the frames only); ``rng`` draws the heartbeat jitter and op 9's delay
    from ``invalid_session_delay``.
    """

    def __init__(  # noqa: PLR0913
        self,
        *,
        name: str,
        token: SecretStr,
        identify: Mapping[str, Any],
        invalid_session_delay: tuple[float, float] = (1.0, 5.0),
        rng: random.Random | None = None,
        session: Session | None = None,
        counters: GatewayCounters | None = None,
    ) -> None:
        self.name = name
        self._token = token
        self._identify = dict(identify)
        self._invalid_session_delay = invalid_session_delay
        self._rng = rng or random.Random()
        self.session = session
        self.user: dict[str, Any] | None = None
        self.counters = counters or GatewayCounters()
        self.phase = LinkPhase.CLOSED
        #: Why we are closing the current socket (set with a `Close` effect).
        self.ending: Close | None = None
        self.interval: float | None = None
        self.acked = True
        self.stable = False
        self._graced = False

    def __repr__(self) -> str:
        return f"<GatewaySession {self.name!r} phase={self.phase.value} session={self.session!r}>"

    @property
    def sequence(self) -> int | None:
        """The last sequence seen in this session (what a heartbeat carries)."""
        return self.session.sequence if self.session is not None else None

    @property
    def resuming(self) -> bool:
        """Whether the next socket should RESUME (a session to resume exists)."""
        return self.session is not None

    # -- a socket's life ------------------------------------------------------------------

    def opened(self) -> None:
        """A new socket is open: wait for HELLO."""
        self.phase = LinkPhase.HELLO
        self.ending = None
        self.interval = None
        self.acked = True  # nothing to acknowledge before the first heartbeat
        self.stable = False
        self._graced = False

    def close(self, code: int, action: CloseAction, **kw: float | None) -> list[Effect]:
        """Close the current socket ourselves (the first reason given wins)."""
        if self.ending is not None or self.phase is LinkPhase.CLOSED:
            return []
        self.ending = Close(code, action, **kw)
        self.phase = LinkPhase.CLOSING
        return [self.ending]

    def fail(self, reason: str) -> list[Effect]:
        """The socket carried something unusable (a corrupt stream, a frame that is not JSON)."""
        return self.close(4000, CloseAction(Recovery.RESUME, reason))

    def hello_timed_out(self) -> list[Effect]:
        """The HELLO deadline passed: close unless HELLO came."""
        if self.phase is not LinkPhase.HELLO:
            return []
        return self.close(4000, CloseAction(Recovery.RESUME, "no HELLO from the gateway"))

    def ended(self, code: int | None, *, frame: bool) -> Close:
        """The socket is gone: the verdict on it, and the session updated accordingly.

        ``frame`` says whether the server sent a close frame with ``code``;
        our own reason (`ending`) wins over what the server said after it.
        """
        if self.ending is not None:
            outcome = self.ending
        else:
            outcome = Close(code or 0, close_action(code if frame else None))
        self.phase = LinkPhase.CLOSED
        self.ending = None
        self.settle(outcome.action)
        return outcome

    def settle(self, action: CloseAction) -> None:
        """Apply a recovery to the session: identify anew and disable both forget it."""
        if action.kind is not Recovery.RESUME:
            self.session = None

    # -- frames ---------------------------------------------------------------------------

    def receive(self, frame: Mapping[str, Any]) -> list[Effect]:
        """Feed one decoded frame; what to do about it."""
        if self.phase in (LinkPhase.CLOSED, LinkPhase.CLOSING):
            return []
        op = frame.get("op")
        d = frame.get("d")
        if op == Op.DISPATCH:
            return self._dispatch(frame)
        if op == Op.HEARTBEAT_ACK:
            self.acked = True
            self.counters.acks += 1
            stable = self.phase is LinkPhase.READY and not self.stable
            self.stable = self.stable or stable
            return [Acked(stable)]
        if op == Op.HEARTBEAT:
            return [SendHeartbeat(self.sequence)]
        if op == Op.HELLO:
            return self._hello(d)
        if op == Op.RECONNECT:
            log.info("gateway.op7_reconnect", gateway=self.name)
            return self.close(
                4000, CloseAction(Recovery.RESUME, "server asked to reconnect (op 7)")
            )
        if op == Op.INVALID_SESSION:
            self.counters.invalid_sessions += 1
            resumable = d is True
            log.info("gateway.invalid_session", gateway=self.name, resumable=resumable)
            if resumable:
                action = CloseAction(Recovery.RESUME, "invalid session, resumable (op 9)")
            else:
                action = CloseAction(Recovery.IDENTIFY, "invalid session (op 9)")
            return self.close(4000, action, delay=self._rng.uniform(*self._invalid_session_delay))
        log.debug("gateway.unknown_op", gateway=self.name, op=op)
        return []

    def _hello(self, d: Any) -> list[Effect]:
        if self.phase is not LinkPhase.HELLO:
            return []  # a second HELLO changes nothing
        interval = d.get("heartbeat_interval") if isinstance(d, dict) else None
        if not isinstance(interval, int | float) or isinstance(interval, bool) or interval <= 0:
            return self.fail("HELLO without heartbeat_interval")
        self.interval = interval / 1000.0
        beats = StartHeartbeats(self.interval, self.interval * self._rng.random())
        token = self._token.get_secret_value()
        if self.session is not None:
            self.phase = LinkPhase.RESUMING
            resume = {"token": token, "session_id": self.session.id, "seq": self.session.sequence}
            return [beats, SendResume(resume)]
        self.phase = LinkPhase.IDENTIFYING
        return [beats, SendIdentify({"token": token, **self._identify})]

    def _dispatch(self, frame: Mapping[str, Any]) -> list[Effect]:
        s = frame.get("s")
        session = self.session
        if isinstance(s, int) and not isinstance(s, bool):
            if session is not None and session.sequence is not None and s <= session.sequence:
                # Already delivered (a replay overlapping what we saw): never twice.
                self.counters.duplicates += 1
                return []
        else:
            s = None
        t = frame.get("t")
        if not isinstance(t, str):
            if s is not None and session is not None:
                self.session = replace(session, sequence=s)
            return []
        d = frame.get("d")
        data: dict[str, Any] = d if isinstance(d, dict) else {}
        effects: list[Effect] = []
        if t == "READY":
            sid = data.get("session_id")
            url = data.get("resume_gateway_url")
            self.session = (
                Session(sid, s, url if isinstance(url, str) and url else None)
                if isinstance(sid, str) and sid
                else None
            )
            user = data.get("user")
            self.user = user if isinstance(user, dict) else None
            self.phase = LinkPhase.READY
            effects.append(Ready("identified"))
        else:
            if s is not None and session is not None:
                self.session = replace(session, sequence=s)
            if t == "RESUMED":
                self.counters.resumed += 1
                self.phase = LinkPhase.READY
                effects.append(Ready("resumed"))
        self.counters.dispatches += 1
        effects.append(Deliver(t, data))
        return effects

    # -- the heartbeat timer --------------------------------------------------------------

    def heartbeat_due(self, *, late: float = 0.0) -> list[Effect]:
        """The heartbeat timer fired ``late`` seconds after the beat was due.

        An unacknowledged previous beat means a zombie link, unless our own
        loop stalled (``late`` by more than a quarter interval): then the reader
        gets a moment to read a pending ACK first (`AwaitAck`), once.
        """
        if self.phase in (LinkPhase.CLOSED, LinkPhase.CLOSING) or self.interval is None:
            return []
        if self.acked:
            self.acked = False
            self._graced = False
            return [SendHeartbeat(self.sequence)]
        if late > self.interval * _LATE_FRACTION and not self._graced:
            self._graced = True
            return [AwaitAck(min(self.interval, 1.0))]
        self.counters.missed_heartbeats += 1
        log.warning("gateway.zombie", gateway=self.name, interval_s=self.interval)
        return self.close(
            4000,
            CloseAction(Recovery.RESUME, "zombie connection: heartbeat not acked"),
            wait=min(1.0, self.interval),
        )
