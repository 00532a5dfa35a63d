"""What the owner's tools read and do in one process: the narrow face of the app.

`AdminServer` and `Metrics` depend on `ProcessPort`, never on `gouache.app.App`,
so they can be built before the application object and tested with any part
that provides these few things (as hikari's components depend on its traits).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol

from gouache.events import EventBus
from gouache.jobs import Job
from gouache.pool.pool import Pool
from gouache.queue.quota import QuotaPolicy
from gouache.storage.base import Store


class TierRule(Protocol):
    """A tier as the owner's tools show it."""

    @property
    def name(self) -> str: ...

    @property
    def daily_limit(self) -> int | None: ...


class MemberRules(Protocol):
    """The request rules the owner's tools read (tiers, limits, the clock)."""

    @property
    def policy(self) -> QuotaPolicy: ...

    @property
    def tiers(self) -> Sequence[TierRule]: ...

    def tier_for(self, role_ids: Iterable[int], override: str | None = None) -> TierRule: ...


class ProcessPort(Protocol):
    """One running process, as its admin API and metrics see it."""

    @property
    def process(self) -> str:
        """This process's name (the owner of its leases)."""
        ...

    @property
    def store(self) -> Store: ...

    @property
    def pool(self) -> Pool: ...

    @property
    def bus(self) -> EventBus: ...

    @property
    def rules(self) -> MemberRules: ...

    def now(self) -> datetime:
        """The clock quotas and days are counted by."""
        ...

    def in_flight(self) -> int:
        """Jobs this process runs now."""
        ...

    async def cancel(self, job_id: str, *, reason: str) -> Job:
        """Stop a job (on its worker too, when it runs here) and refund its quota."""
        ...

    def unserved_channels(self) -> list[dict[str, Any]]:
        """Channels where this process cannot deliver (a permission is missing), oldest first."""
        ...
