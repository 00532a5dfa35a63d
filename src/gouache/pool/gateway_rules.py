"""The gateway's rules as plain objects: close-code policy, backoff, identify pacing, send budget, zlib-stream.

No sockets here: `gouache.pool.gateway` drives these, and tests check them
exhaustively without a network.
"""

from __future__ import annotations

import asyncio
import random
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "Backoff",
    "CloseAction",
    "IdentifyPacer",
    "Recovery",
    "SendBudget",
    "ZlibStream",
    "close_action",
]

ZLIB_SUFFIX = b"\x00\x00\xff\xff"


# -- the close-code policy (pure) ------------------------------------------------------------


class Recovery(StrEnum):
    """What to do after a connection ended."""

    RESUME = "resume"  # reconnect and RESUME the session
    IDENTIFY = "identify"  # the session is gone: reconnect and IDENTIFY anew
    DISABLE = "disable"  # never reconnect; the owner must fix something


@dataclass(frozen=True, slots=True)
class CloseAction:
    """The verdict on a lost connection: what to do and why (``reason`` is fit for the owner)."""

    kind: Recovery
    reason: str


_CLOSE_CODES: dict[int, tuple[Recovery, str]] = {
    4000: (Recovery.RESUME, "unknown error"),
    4001: (Recovery.RESUME, "unknown opcode sent"),
    4002: (Recovery.RESUME, "undecodable payload sent"),
    4003: (Recovery.IDENTIFY, "not authenticated"),
    4004: (Recovery.DISABLE, "invalid token (authentication failed)"),
    4005: (Recovery.RESUME, "already authenticated"),
    # Not in Discord's current table; it used to mean "session no longer valid".
    4006: (Recovery.IDENTIFY, "session no longer valid"),
    4007: (Recovery.IDENTIFY, "invalid sequence number on resume"),
    4008: (Recovery.RESUME, "rate limited (too many gateway sends)"),
    4009: (Recovery.IDENTIFY, "session timed out"),
    4010: (Recovery.DISABLE, "invalid shard"),
    4011: (Recovery.DISABLE, "sharding required"),
    4012: (Recovery.DISABLE, "invalid gateway API version"),
    4013: (Recovery.DISABLE, "invalid intents"),
    4014: (Recovery.DISABLE, "disallowed intents (enable them in the developer portal)"),
}


def close_action(code: int | None) -> CloseAction:
    """gouache's policy for a connection the server closed with ``code`` (None: no close frame).

    Resume on 4000–4002, 4005, 4008, any 1xxx and a drop; identify anew on 4003,
    4006, 4007, 4009; disable on 4004 and 4010–4014. An unknown code is treated
    as recoverable: a RESUME of a dead session is answered with op 9 ``d:false``,
    which turns into a fresh IDENTIFY, so guessing "resume" costs one round trip.
    """
    if code is None:
        return CloseAction(Recovery.RESUME, "connection lost without a close frame")
    known = _CLOSE_CODES.get(code)
    if known is not None:
        kind, text = known
        return CloseAction(kind, f"{text} (close code {code})")
    if 1000 <= code <= 1999:
        return CloseAction(Recovery.RESUME, f"closed by the server (close code {code})")
    return CloseAction(Recovery.RESUME, f"unknown close code {code}")


# -- pacing and limits (pure apart from sleeping) ------------------------------------------------


class Backoff:
    """Exponential backoff with jitter: the n-th delay is drawn from ``[(1 - jitter)·c, c]``.

    ``c = min(cap, base·factorⁿ)``. The default ``jitter=1.0`` is full jitter
    (``uniform(0, c)``, the gateway's choice); ``0.5`` keeps at least half of
    the ceiling (ComfyUI reconnects).
    """

    def __init__(
        self,
        base: float = 1.0,
        cap: float = 60.0,
        factor: float = 2.0,
        rng: random.Random | None = None,
        *,
        jitter: float = 1.0,
    ) -> None:
        if base <= 0 or cap < base or factor < 1 or not 0.0 <= jitter <= 1.0:
            raise ValueError("backoff needs 0 < base <= cap, factor >= 1 and 0 <= jitter <= 1")
        self.base = base
        self.cap = cap
        self.factor = factor
        self.jitter = jitter
        self.attempts = 0
        self._rng = rng or random.Random()

    def ceiling(self, attempt: int) -> float:
        """The largest delay the ``attempt``-th retry (from 0) may wait."""
        # Compare exponents before computing the power, so a long outage cannot overflow.
        if attempt * max(self.factor - 1.0, 0.0) > 64:
            return self.cap
        return min(self.cap, self.base * self.factor**attempt)

    def next_delay(self) -> float:
        """The next delay (and count the attempt)."""
        ceiling = self.ceiling(self.attempts)
        delay = self._rng.uniform(ceiling * (1.0 - self.jitter), ceiling)
        self.attempts += 1
        return delay

    def reset(self) -> None:
        """Start over from the smallest ceiling (after a stable connection)."""
        self.attempts = 0


class IdentifyPacer:
    """At most ``max_concurrency`` IDENTIFYs per ``window`` seconds, shared by the connections given it.

    Give one pacer to every connection of a process so that a restart does not
    identify hundreds of accounts in the same instant. Waiters go in FIFO order.
    """

    def __init__(
        self,
        max_concurrency: int = 1,
        window: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_concurrency < 1 or window <= 0:
            raise ValueError("identify pacing needs max_concurrency >= 1 and window > 0")
        self.max_concurrency = max_concurrency
        self.window = window
        self._clock = clock
        self._starts: deque[float] = deque()
        self._lock = asyncio.Lock()

    def delay(self) -> float:
        """Seconds until one more IDENTIFY is allowed (0: now)."""
        now = self._clock()
        while self._starts and self._starts[0] <= now - self.window:
            self._starts.popleft()
        if len(self._starts) < self.max_concurrency:
            return 0.0
        return self._starts[0] + self.window - now

    def record(self) -> None:
        """Count an IDENTIFY made now."""
        self._starts.append(self._clock())

    async def acquire(self) -> None:
        """Wait for a free identify slot and take it."""
        async with self._lock:
            # Sleep exactly until the oldest identify leaves the window (nothing to wake us early).
            while True:
                wait = self.delay()
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            self.record()


class SendBudget:
    """Discord's send limit for one connection: ``limit`` frames in any ``window`` seconds.

    A sliding window, not a token bucket: the server counts the frames of the
    last 60 s, and a bucket refilling while full would let up to twice the limit
    through in one window. Ordinary sends leave ``reserved`` frames unused so
    that heartbeats, IDENTIFY and RESUME (``priority``) always fit.
    """

    def __init__(
        self,
        limit: int = 120,
        window: float = 60.0,
        reserved: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or not 0 <= reserved < limit or window <= 0:
            raise ValueError("send budget needs limit >= 1, 0 <= reserved < limit, window > 0")
        self.limit = limit
        self.window = window
        self.reserved = reserved
        self._clock = clock
        self._sent: deque[float] = deque()

    def _prune(self, now: float) -> None:
        while self._sent and self._sent[0] <= now - self.window:
            self._sent.popleft()

    def available(self, *, priority: bool = False) -> int:
        """How many frames may be sent right now."""
        self._prune(self._clock())
        cap = self.limit if priority else self.limit - self.reserved
        return max(0, cap - len(self._sent))

    def delay(self, *, priority: bool = False) -> float:
        """Seconds until one more frame may be sent (0: now)."""
        now = self._clock()
        self._prune(now)
        cap = self.limit if priority else self.limit - self.reserved
        if len(self._sent) < cap:
            return 0.0
        # The frame that has to leave the window to make room for one more.
        return self._sent[len(self._sent) - cap] + self.window - now

    def record(self) -> None:
        """Count a frame sent now."""
        self._sent.append(self._clock())


class ZlibStream:
    """Decoder for zlib-stream transport compression: one inflate context per connection.

    A message may span several WebSocket frames; it is complete when the
    buffered bytes end with the Z_SYNC_FLUSH marker ``00 00 ff ff``.
    """

    def __init__(self) -> None:
        self._inflator = zlib.decompressobj()
        self._buffer = bytearray()

    def feed(self, data: bytes) -> bytes | None:
        """Add one frame's bytes; the decompressed message once complete, else None.

        Raises ``zlib.error`` on a corrupt stream (the connection must be replaced).
        """
        self._buffer.extend(data)
        if len(self._buffer) < 4 or self._buffer[-4:] != ZLIB_SUFFIX:
            return None
        out = self._inflator.decompress(self._buffer)
        self._buffer.clear()
        return out
