"""The `Store` protocol: jobs, the fair queue, quotas, leases and worker leases.

Two implementations (SQLite for one process, Redis for many) pass the same
conformance suite (``tests/storage/test_conformance.py``). Scheduling policy
lives in `gouache.queue.fair` and `gouache.queue.quota`; a store only makes
it durable and atomic.

Rules every store keeps:

* ``enqueue`` reserves quota, inserts the job and queues it in one atomic step.
* ``pop`` moves up to k jobs QUEUED → SUBMITTED in fair order, each with a
  lease held by ``owner`` until a deadline; ``attempts`` counts pops.
* ``transition`` checks the transition table, persists, and settles quota on a
  terminal state (commit on SUCCEEDED, refund otherwise). Going back to QUEUED
  puts the job at the *front* of its user's queue (it keeps its old tag).
* ``recover_expired`` requeues jobs whose lease ran out, or fails them (with a
  refund) once they have used ``max_attempts`` pops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, get_args, runtime_checkable

from pydantic import BaseModel

from gouache.jobs import Job, JobState
from gouache.queue.quota import QuotaStatus

# Fields of a Job that `transition`/`update` may change. Identity, ownership,
# quota bookkeeping and timestamps are the store's business.
MUTABLE_FIELDS = frozenset(
    {
        "progress",
        "worker",
        "external_id",
        "preview_url",
        "results",
        "error_code",
        "error_message",
        "error_detail",
        "message_id",
        "interaction_token",
        "interaction_at",
        "meta",
        "locale",
    }
)


# What a job back in the queue forgets of its last attempt (requeue or expired
# lease): the next attempt starts without the last one's worker, progress or preview.
FRESH_ATTEMPT: dict[str, Any] = {"worker": None, "progress": 0, "preview_url": None}


def _none_is_default(model: type[BaseModel]) -> bool:
    """True if every field of ``model`` (and of models inside it) that may be None defaults to None.

    Then a dump without its None fields parses back to an equal model.
    """
    for info in model.model_fields.values():
        kinds = get_args(info.annotation) or (info.annotation,)
        if (info.annotation is Any or type(None) in kinds) and (
            info.is_required() or info.default is not None
        ):
            return False
        nested = [k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)]
        if not all(_none_is_default(k) for k in nested):
            return False
    return True


# Stored job JSON leaves out None fields when that round-trips (it does for
# `Job` as it stands): about half the bytes to keep, send and parse.
_DROP_NONE = _none_is_default(Job)


def dump_job(job: Job) -> str:
    """The JSON both stores keep a job as (None fields left out when that round-trips)."""
    return job.model_dump_json(exclude_none=_DROP_NONE)


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    """What `Store.enqueue` hands back: the stored job, its position and the user's quota."""

    job: Job
    position: int
    quota: QuotaStatus


@dataclass(frozen=True, slots=True)
class UserRecord:
    """Per-user overrides kept by the store (owner decisions, abuse blocks)."""

    user_id: int
    tier: str | None = None
    daily_limit: int | None = None
    banned_until: datetime | None = None
    ban_reason: str | None = None
    strikes: int = 0
    # Automatic blocks from prompt intake (escalating: see gouache.intake.moderation).
    blocked_until: datetime | None = None
    block_level: int = 0

    def banned(self, now: datetime) -> bool:
        """True while a ban or block is in force."""
        return any(t is not None and t > now for t in (self.banned_until, self.blocked_until))


@runtime_checkable
class Store(Protocol):
    """Durable jobs, fair queue, quotas and leases (see module docstring for the rules)."""

    async def start(self) -> None:
        """Open, migrate, rebuild in-memory state and recover expired leases."""

    async def aclose(self) -> None:
        """Close connections; safe to call twice."""

    # -- jobs and the queue ------------------------------------------------

    async def enqueue(
        self,
        job: Job,
        *,
        daily_limit: int,
        max_queued: int | None = None,
        channel_cap: int | None = None,
    ) -> EnqueueResult:
        """Reserve quota, store ``job`` as QUEUED and queue it, atomically.

        With ``channel_cap``, the job's channel may reserve at most that many
        images a day; what a job reserved is given back like its quota when it
        does not succeed. Raises `QuotaExceeded`, `QueueLimitExceeded` or
        `ChannelCapReached`, changing nothing.
        """

    async def get(self, job_id: str) -> Job | None:
        """The job with that id, or None."""

    async def pop(
        self,
        k: int,
        *,
        owner: str,
        lease_s: float | None = None,
        workers: Collection[str] | None = None,
    ) -> list[Job]:
        """Take up to ``k`` jobs in fair order, QUEUED → SUBMITTED, leased to ``owner``.

        ``workers`` names the workers the caller runs (several processes): a
        member whose next job is pinned to another worker (`Job.pinned_worker`)
        is passed over, keeping their place for the process that runs it.
        """

    async def transition(
        self, job_id: str, state: JobState, *, owner: str | None = None, **changes: Any
    ) -> Job:
        """Move a job to ``state`` (checked against the table) and persist ``changes``.

        With ``owner``, the caller must still hold the job's lease (else `LeaseLost`).
        Raises `JobNotFound`, `IllegalTransition`.
        """

    async def update(self, job_id: str, **changes: Any) -> Job:
        """Persist non-state ``changes`` (progress, preview, message id...)."""

    async def cancel(self, job_id: str, *, reason: str = "Cancelled.") -> Job:
        """Cancel a non-terminal job (refunding its quota); a terminal job is returned unchanged."""

    async def renew(
        self, job_ids: Sequence[str], *, owner: str, lease_s: float | None = None
    ) -> list[str]:
        """Extend the leases ``owner`` still holds; returns the ids that were renewed."""

    async def recover_expired(self, *, max_attempts: int | None = None) -> list[Job]:
        """Requeue (or fail and refund) every job whose lease has expired; returns them."""

    async def position(self, job_id: str) -> int | None:
        """Jobs that will be popped before this queued job (0 = next), None if not queued."""

    async def depth(self, user_id: int | None = None) -> int:
        """Queued jobs in total or for one user."""

    async def list_jobs(
        self,
        *,
        user_id: int | None = None,
        states: Collection[JobState] | None = None,
        limit: int = 50,
    ) -> list[Job]:
        """Jobs newest first, optionally filtered by user and states."""

    async def count_by_state(self) -> dict[JobState, int]:
        """How many jobs are in each state."""

    async def prune(self, *, finished_before: datetime) -> int:
        """Delete the jobs that finished before ``finished_before`` (history retention).

        Queued and running jobs are never touched, nor are quotas. Returns how
        many were deleted. (Images age out of the `ImageStore` on their own.)
        """

    # -- quotas and users --------------------------------------------------

    async def quota(self, user_id: int, *, daily_limit: int) -> QuotaStatus:
        """The user's quota for the current local day."""

    async def get_user(self, user_id: int) -> UserRecord:
        """The user's overrides (a blank record if none were set)."""

    async def put_user(self, record: UserRecord) -> None:
        """Replace the user's overrides."""

    # -- worker leases -----------------------------------------------------

    async def acquire_worker(self, name: str, owner: str, ttl_s: float) -> bool:
        """Take (or keep) the lease on a worker; False if another live owner holds it."""

    async def renew_worker(self, name: str, owner: str, ttl_s: float) -> bool:
        """Extend a worker lease ``owner`` holds; False if it was lost."""

    async def release_worker(self, name: str, owner: str) -> bool:
        """Give up a worker lease ``owner`` holds."""

    async def worker_owner(self, name: str) -> str | None:
        """Who holds the worker's lease now, if anyone."""

    # -- worker status of every process (`gouache pool status`) -------------

    async def publish_workers(self, owner: str, rows: list[dict[str, Any]], ttl_s: float) -> None:
        """Replace the worker rows process ``owner`` shows; they vanish after ``ttl_s``.

        Rows are JSON-able dicts (see `gouache.admin.status`); an empty list
        withdraws the process's rows at once.
        """

    async def worker_rows(self) -> list[dict[str, Any]]:
        """Every live process's published rows, each with ``process`` set to its owner."""

    # -- wake-ups ------------------------------------------------------------

    async def wait_for_work(self, timeout: float) -> bool:
        """Block until the queue is non-empty (True) or ``timeout`` passes (False)."""


async def wait_for_queued(
    wake: asyncio.Event, queued: Callable[[], Awaitable[bool]], timeout: float
) -> bool:
    """`Store.wait_for_work` over a store's wake-up event and its "anything queued?" check.

    A wake-up is a hint, not a promise: its job may be gone (another process
    popped it, it was cancelled) or it may carry no job at all (a reconnected
    listener wakes everyone). So the check decides, and a wake that finds the
    queue empty waits again for what is left of ``timeout``. Clearing the event
    *before* the check closes the race with an enqueue that lands in between.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        wake.clear()
        if await queued():
            return True
        left = deadline - loop.time()
        if left <= 0:
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), left)


def user_to_json(record: UserRecord) -> str:
    """A user record as the stores keep it (JSON)."""
    return json.dumps(
        {
            "tier": record.tier,
            "daily_limit": record.daily_limit,
            "banned_until": record.banned_until.isoformat() if record.banned_until else None,
            "ban_reason": record.ban_reason,
            "strikes": record.strikes,
            "blocked_until": record.blocked_until.isoformat() if record.blocked_until else None,
            "block_level": record.block_level,
        }
    )


def user_from_json(user_id: int, data: str) -> UserRecord:
    """The user record `user_to_json` wrote."""
    raw = json.loads(data)
    until = raw.get("banned_until")
    return UserRecord(
        user_id=user_id,
        tier=raw.get("tier"),
        daily_limit=raw.get("daily_limit"),
        banned_until=datetime.fromisoformat(until) if until else None,
        ban_reason=raw.get("ban_reason"),
        strikes=int(raw.get("strikes", 0)),
        blocked_until=datetime.fromisoformat(b) if (b := raw.get("blocked_until")) else None,
        block_level=int(raw.get("block_level", 0)),
    )
