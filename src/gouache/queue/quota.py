"""Daily quota rules (pure): which day a moment belongs to, when it resets, who may spend.

A user's day is the calendar day in the deployment's configured time zone;
the limit resets at local midnight, DST included. Quota is *reserved* when a
job is enqueued (so a user cannot queue past their limit), *committed* when
it succeeds and *refunded* when it fails, times out or is cancelled. The
counters themselves live in the store; this module is the arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from gouache.errors import QuotaExceeded

Clock = Callable[[], datetime]

DEFAULT_DAILY_LIMIT = 100


def system_clock() -> datetime:
    """The real time, timezone-aware (UTC)."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class QuotaStatus:
    """A user's standing for one local day."""

    day: str
    limit: int
    used: int
    resets_at: datetime

    @property
    def remaining(self) -> int:
        """Images the user may still request today."""
        return max(0, self.limit - self.used)


class QuotaPolicy:
    """Day boundaries in one time zone, plus the limit arithmetic."""

    def __init__(
        self, tz: str | ZoneInfo = "UTC", default_limit: int = DEFAULT_DAILY_LIMIT
    ) -> None:
        self.tz = tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)
        self.default_limit = default_limit

    def local_date(self, now: datetime) -> date:
        """The calendar date of ``now`` in the configured zone."""
        if now.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass an aware one")
        return now.astimezone(self.tz).date()

    def day_key(self, now: datetime) -> str:
        """The key of the quota day ``now`` falls in (``YYYY-MM-DD``, local)."""
        return self.local_date(now).isoformat()

    def resets_at(self, now: datetime) -> datetime:
        """The next local midnight after ``now`` (aware, in the configured zone).

        Where a DST change skips midnight, the day starts at the first local
        time that exists; normalizing through UTC gives exactly that.
        """
        tomorrow = self.local_date(now) + timedelta(days=1)
        naive_midnight = datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=self.tz)
        return naive_midnight.astimezone(UTC).astimezone(self.tz)

    def seconds_until_reset(self, now: datetime) -> float:
        """How long the current day still lasts.

        Both ends go through UTC: Python subtracts two datetimes that share a
        tzinfo as wall-clock times, which is an hour off across a DST change.
        """
        return (self.resets_at(now).astimezone(UTC) - now.astimezone(UTC)).total_seconds()

    def limit_for(self, *, tier_limit: int | None = None, user_limit: int | None = None) -> int:
        """The effective daily limit: a per-user override beats the tier, the tier beats the default."""
        if user_limit is not None:
            return user_limit
        if tier_limit is not None:
            return tier_limit
        return self.default_limit

    def check(self, *, used: int, cost: int, limit: int, now: datetime) -> None:
        """Raise `QuotaExceeded` if spending ``cost`` more would pass ``limit``."""
        if used + cost > limit:
            raise QuotaExceeded(limit=limit, used=used, resets_at=self.resets_at(now))

    def status(self, *, used: int, limit: int, now: datetime) -> QuotaStatus:
        """Build the `QuotaStatus` for a user who has ``used`` today."""
        return QuotaStatus(
            day=self.day_key(now), limit=limit, used=used, resets_at=self.resets_at(now)
        )
