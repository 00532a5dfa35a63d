"""Discord-style REST rate limits: per-route buckets, the global limit, interaction tokens."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass

#: Route params that split a route into separate buckets (Discord's "major parameters").
MAJOR_PARAMS = ("channel_id", "guild_id", "webhook_id", "webhook_token", "interaction_token")


@dataclass(frozen=True)
class Limit:
    """At most ``limit`` requests per ``window`` seconds."""

    limit: int
    window: float


@dataclass
class _Window:
    started: float
    count: int


@dataclass(frozen=True)
class Decision:
    """What a rate-limit check decided, plus the headers to send."""

    allowed: bool
    headers: dict[str, str]
    retry_after: float = 0.0
    is_global: bool = False
    scope: str = "user"


# Per-route limits modelled on what Discord reports (its exact numbers vary by route).
DEFAULT_ROUTE_LIMITS: dict[tuple[str, str], Limit] = {
    ("POST", "/channels/{channel_id}/messages"): Limit(5, 5.0),
    ("PATCH", "/channels/{channel_id}/messages/{message_id}"): Limit(5, 5.0),
    ("DELETE", "/channels/{channel_id}/messages/{message_id}"): Limit(5, 1.0),
    ("GET", "/channels/{channel_id}/messages"): Limit(5, 1.0),
    ("PUT", "/applications/{application_id}/commands"): Limit(5, 20.0),
    ("PUT", "/applications/{application_id}/guilds/{guild_id}/commands"): Limit(5, 20.0),
    ("POST", "/interactions"): Limit(5, 5.0),
}
DEFAULT_LIMIT = Limit(5, 1.0)
#: Interaction webhook tokens: their own bucket, exempt from the global limit.
INTERACTION_TOKEN_LIMIT = Limit(5, 2.0)


class RateLimiter:
    """Fixed-window counters keyed by bucket, driven by the sandbox clock."""

    def __init__(self, now: Callable[[], float], *, global_per_second: int = 50) -> None:
        self._now = now
        self.global_limit = Limit(global_per_second, 1.0)
        self.route_limits: dict[tuple[str, str], Limit] = dict(DEFAULT_ROUTE_LIMITS)
        self.token_limit = INTERACTION_TOKEN_LIMIT
        self._windows: dict[str, _Window] = {}

    def set_route_limit(self, method: str, route: str, limit: int, window: float) -> None:
        """Change one route's bucket (tests use it to hit 429s quickly)."""
        self.route_limits[(method.upper(), route)] = Limit(limit, window)

    def reset(self) -> None:
        """Forget every counter."""
        self._windows.clear()

    def _hit(self, key: str, limit: Limit) -> tuple[bool, int, float]:
        now = self._now()
        win = self._windows.get(key)
        if win is None or now >= win.started + limit.window:
            win = _Window(started=now, count=0)
            self._windows[key] = win
        reset_after = max(0.0, win.started + limit.window - now)
        if win.count >= limit.limit:
            return False, 0, reset_after
        win.count += 1
        return True, limit.limit - win.count, reset_after

    def check(
        self,
        *,
        method: str,
        route: str,
        params: dict[str, str],
        principal_id: int | None,
        interaction_token: str | None = None,
    ) -> Decision:
        """Count one request; say whether it may proceed and which headers describe it."""
        if interaction_token is None and principal_id is not None:
            ok, _, reset_after = self._hit(f"global:{principal_id}", self.global_limit)
            if not ok:
                retry = round(max(reset_after, 0.001), 3)
                headers = {
                    "X-RateLimit-Global": "true",
                    "X-RateLimit-Scope": "global",
                    "Retry-After": str(math.ceil(retry)),
                }
                return Decision(False, headers, retry, is_global=True, scope="global")
        if interaction_token is not None:
            limit = self.token_limit
            major = f"token:{interaction_token}"
        else:
            limit = self.route_limits.get((method.upper(), route), DEFAULT_LIMIT)
            major = ":".join(params.get(p, "") for p in MAJOR_PARAMS)
        # Every route reached through one interaction token shares that token's bucket.
        key = "interaction-token" if interaction_token is not None else f"{method} {route}"
        bucket = hashlib.sha1(key.encode()).hexdigest()[:32]
        ok, remaining, reset_after = self._hit(f"{bucket}:{major}:{principal_id}", limit)
        headers = {
            "X-RateLimit-Limit": str(limit.limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": f"{self._now() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": bucket,
        }
        if ok:
            return Decision(True, headers)
        retry = round(max(reset_after, 0.001), 3)
        headers["X-RateLimit-Scope"] = "user"
        headers["Retry-After"] = str(math.ceil(retry))
        return Decision(False, headers, retry)
