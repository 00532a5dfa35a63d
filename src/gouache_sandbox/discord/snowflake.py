"""Discord snowflake ids: 42 bits of milliseconds since 2015, worker, process, increment."""

from __future__ import annotations

from collections.abc import Callable

DISCORD_EPOCH_MS = 1_420_070_400_000


def snowflake_time(snowflake: int) -> float:
    """Unix time (seconds) encoded in ``snowflake``."""
    return ((snowflake >> 22) + DISCORD_EPOCH_MS) / 1000.0


def snowflake_at(unix_seconds: float, low_bits: int = 0) -> int:
    """A snowflake for ``unix_seconds`` with ``low_bits`` (22 bits) in the tail."""
    ms = int(unix_seconds * 1000) - DISCORD_EPOCH_MS
    return (ms << 22) | (low_bits & 0x3FFFFF)


class SnowflakeFactory:
    """Makes unique, time-ordered snowflakes from an injected clock.

    discord.py derives an interaction's 15-minute expiry from its id, so ids
    carry the sandbox clock's time, and they never repeat even when the clock
    stands still.
    """

    def __init__(self, now: Callable[[], float], worker: int = 1) -> None:
        self._now = now
        self._worker = worker & 0x1F
        self._last = 0

    def next(self) -> int:
        """The next id; strictly greater than every id made before."""
        candidate = snowflake_at(self._now(), self._worker << 17)
        if candidate <= self._last:
            candidate = self._last + 1
        self._last = candidate
        return candidate
