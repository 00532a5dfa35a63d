"""Abuse limits: a per-member request rate (token bucket) and the prompt length.

The rate limit is in-process: each bot process limits the members whose
interactions it receives (Discord routes a guild to one shard, so a member is
usually seen by one process). The per-member cap on *queued* jobs is not here:
the store enforces it atomically at enqueue (`Store.enqueue(max_queued=…)`).
"""

from __future__ import annotations

from dataclasses import dataclass

from gouache.errors import ErrorCode, GouacheError


class RateLimited(GouacheError):
    """The member sent requests faster than allowed."""

    code = ErrorCode.RATE_LIMITED

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(slots=True)
class TokenBucket:
    """``burst`` requests at once, refilled at ``rate_per_s``."""

    burst: float
    rate_per_s: float
    tokens: float
    stamp: float

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.stamp)
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate_per_s)
        self.stamp = max(self.stamp, now)

    def take(self, now: float) -> float:
        """Spend one token; returns 0 if that worked, else the seconds until one is back."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate_per_s

    def full(self, now: float) -> bool:
        """True when the bucket has refilled completely (the member can be forgotten)."""
        self._refill(now)
        return self.tokens >= self.burst


class RateLimiter:
    """One token bucket per member, kept only while it is not full."""

    def __init__(self, *, burst: int, per_minute: float, max_tracked: int = 10_000) -> None:
        self.burst = float(burst)
        self.rate_per_s = per_minute / 60.0
        self.max_tracked = max_tracked
        self._buckets: dict[int, TokenBucket] = {}

    def take(self, user_id: int, now: float) -> float:
        """Spend one request for ``user_id`` at time ``now`` (seconds); 0 or the wait needed."""
        bucket = self._buckets.get(user_id)
        if bucket is None:
            if len(self._buckets) >= self.max_tracked:
                self._forget_full(now)
            bucket = TokenBucket(self.burst, self.rate_per_s, self.burst, now)
            self._buckets[user_id] = bucket
        return bucket.take(now)

    def _forget_full(self, now: float) -> None:
        for user_id in [u for u, b in self._buckets.items() if b.full(now)]:
            del self._buckets[user_id]

    def __len__(self) -> int:
        return len(self._buckets)
