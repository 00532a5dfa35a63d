"""The shared store: Redis, for many processes on many machines.

Every multi-key change is one operation of a Lua script (``storage/lua/``:
``_common.lua``, one file per operation, ``_batch.lua``, put together by
`gouache.storage.redis_records`; loaded once with SCRIPT LOAD and called by
SHA), so each operation is atomic across all processes. The operations compute the same virtual finish tags as
`gouache.queue.fair.FairQueue`: one sorted set holds every queued job scored by
its tag, with a member of zero-padded ``seq`` + id so that equal tags sort by
``seq``. The global (tag, seq) order is exactly FairQueue's pop order (each
user's jobs are sorted, so the smallest head is the smallest job), which makes
``pop(k)`` a ZPOPMIN and ``position`` a ZRANK. Per-user sorted sets give each
user's tail tag, depth and the jobs that move up when one is cancelled.

All keys share the hash tag ``{prefix}``, so they live in one Redis Cluster
slot and the scripts would run there unchanged (the connection itself goes
to one server: the node holding that slot, or a proxy in front of the
cluster); the prefix lets several deployments share one Redis.

Commands issued concurrently are sent together (group commit) on one
connection (`gouache.storage.redis_pipe`), in issue order, so an operation
always sees the effects of every operation issued before it. A run of
consecutive operations goes out as one script call (up to ``_OPS_PER_CALL``)
that runs them in turn, each isolated: one failing operation gets its own
error and the others still run.

Per operation, the cost inside Redis is mostly the number of ``redis.call``
it makes, so the hot operations read a job's fields in one HMGET, write them
in one HSET, batch per-pop writes, and count state changes once per call.

Times that tests control (quota days, lease and worker deadlines) come from
the injected clock and are passed to the scripts; Redis TIME is never used.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from gouache.channels.errors import ChannelCapReached
from gouache.errors import (
    IllegalTransition,
    JobNotFound,
    LeaseLost,
    QueueLimitExceeded,
)
from gouache.jobs import ErrorCode, Job, JobState, check_transition
from gouache.queue.fair import step
from gouache.queue.quota import Clock, QuotaPolicy, QuotaStatus, system_clock
from gouache.storage.base import (
    FRESH_ATTEMPT,
    EnqueueResult,
    UserRecord,
    dump_job,
    user_from_json,
    user_to_json,
    wait_for_queued,
)
from gouache.storage.channels_redis import RedisChannels
from gouache.storage.redis_pipe import RedisPipe, bulk, size
from gouache.storage.redis_records import (
    Patch,
    decode,
    evolve,
    script_source,
    transition_head,
    words,
)

log = structlog.get_logger(__name__)

_MAX_HELD = 4096  # jobs a process keeps a copy of (see RedisStore._changed)
_OPS_PER_CALL = 16  # operations per script call: small calls keep replies flowing back
_PRUNE_BATCH = 500  # finished jobs deleted per script call
# A finishing job whose stored patches are longer than this (bytes: a few dozen
# progress updates) is stored whole instead: finished jobs are kept for days.
_WHOLE_AFTER = 1024
_RECOVER_BATCH = 500  # expired leases handled per script call (keeps Redis responsive)
_REAPER_LOCK_MS = 30_000
_QUOTA_GRACE = timedelta(days=2)  # quota keys outlive their day (refunds of late jobs)
_WORKER_GC_S = 3600.0  # a dead worker-lease key lingers this long past its deadline
_RECOVER_MESSAGE = "The worker stopped answering; the image was refunded."


class RedisStore(RedisChannels):
    """`Store` on Redis, shared by any number of processes (see module docstring)."""

    def __init__(  # noqa: PLR0913
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "gouache",
        policy: QuotaPolicy | None = None,
        clock: Clock = system_clock,
        lease_s: float = 300.0,
        max_attempts: int = 3,
    ) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError("the prefix becomes a hash tag; it cannot contain braces")
        self.url = url
        self.prefix = prefix
        self.base = "{" + prefix + "}"
        self.policy = policy or QuotaPolicy()
        self.clock = clock
        self.lease_s = lease_s
        self.max_attempts = max_attempts
        self._redis: Redis | None = None
        self._pipe: RedisPipe | None = None
        self._day: tuple[datetime, datetime, str, datetime] | None = None  # see _quota_day
        self._work = asyncio.Event()
        self._more = False  # the last pop left jobs queued
        self._pubsub: PubSub | None = None
        self._listener: asyncio.Task[None] | None = None
        self._token = uuid.uuid4().hex  # identifies this process's reaper lock
        # The jobs this process works on (active states), as last seen, with the
        # byte length of their stored patches: see _changed.
        self._held: dict[str, tuple[Job, int]] = {}

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Connect, load the scripts, subscribe to wake-ups and recover expired leases."""
        self._redis = Redis.from_url(self.url, decode_responses=True)
        # Commands and operations, in issue order; it reconnects by itself.
        self._pipe = RedisPipe(
            self.url, base=self.base, script=script_source(), ops_per_call=_OPS_PER_CALL
        )
        await self._pipe.connect()
        self._pubsub = self._redis.pubsub()
        # Subscribed before anyone waits: a wake-up published later cannot be missed.
        await self._pubsub.subscribe(self.base + ":wake")
        self._listener = asyncio.create_task(self._listen(self._pubsub), name="redis-wake")
        recovered = await self.recover_expired()
        log.info(
            "store.started",
            backend="redis",
            prefix=self.prefix,
            queued=await self.depth(),
            recovered=len(recovered),
        )

    async def drop(self) -> int:
        """Delete every key of this deployment (its prefix); for benchmarks and tests. Returns the count."""
        client = Redis.from_url(self.url)
        deleted = 0
        try:
            batch: list[bytes] = []
            async for key in client.scan_iter(match=self.base + "*", count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    deleted += await client.delete(*batch)
                    batch = []
            if batch:
                deleted += await client.delete(*batch)
        finally:
            await client.aclose()
        return deleted

    async def aclose(self) -> None:
        """Stop listening, flush pending commands and disconnect; safe to call twice."""
        if self._listener is not None:
            listener, self._listener = self._listener, None
            listener.cancel()
            await asyncio.wait([listener])
        if self._pubsub is not None:
            pubsub, self._pubsub = self._pubsub, None
            await pubsub.aclose()  # type: ignore[no-untyped-call]
        if self._pipe is not None:
            pipe, self._pipe = self._pipe, None
            await pipe.aclose()
        if self._redis is not None:
            client, self._redis = self._redis, None
            await client.aclose()

    async def __aenter__(self) -> RedisStore:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _listen(self, pubsub: PubSub) -> None:
        """Turn wake-up messages into the local event; resubscribe after a lost connection."""
        while True:
            try:
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._work.set()
            except RedisError as exc:
                # Waiters re-check the queue themselves; wake them so nobody
                # sleeps through the outage, then reconnect.
                self._work.set()
                log.warning("store.wake_listener_lost", error=str(exc))
                await asyncio.sleep(1.0)
                try:
                    await pubsub.subscribe(self.base + ":wake")
                except RedisError:
                    continue
                # A wake-up published while we were away was lost: waiters
                # look at the queue again now that new ones will reach us.
                self._work.set()
                log.info("store.wake_listener_back")

    # -- commands ---------------------------------------------------------

    async def _command(self, *args: Any) -> Any:
        """Run one Redis command through the shared connection."""
        return await self._connection().call(*(a if isinstance(a, str) else str(a) for a in args))

    async def _op(self, name: str, *args: str) -> Any:
        """Run one operation of our script (see _batch.lua) through the shared connection."""
        return await self._connection().op(name, *args)

    def _connection(self) -> RedisPipe:
        if self._pipe is None:
            raise RuntimeError("store is not started")
        return self._pipe

    # -- jobs and the queue -----------------------------------------------

    async def enqueue(
        self,
        job: Job,
        *,
        daily_limit: int,
        max_queued: int | None = None,
        channel_cap: int | None = None,
    ) -> EnqueueResult:
        """Reserve quota (and the channel's cap), store ``job`` as QUEUED and queue it, atomically."""
        now = self.clock()
        day, ttl, resets_at = self._quota_day(now)
        stored = evolve(
            job,
            {
                "state": JobState.QUEUED,
                "quota_day": day,
                "created_at": now,
                "updated_at": now,
                "attempts": 0,
            },
        )
        reply = await self._op(
            "enqueue",
            stored.id,
            str(stored.user_id),
            day,
            str(stored.cost),
            str(daily_limit),
            "-1" if max_queued is None else str(max_queued),
            str(step(stored.cost, stored.weight)),
            str(ttl),
            dump_job(stored),
            stored.pinned_worker or "",
            str(job.channel_id) if channel_cap is not None and job.channel_id is not None else "",
            str(channel_cap or 0),
        )
        match reply[0]:
            case "ok":
                used, position = int(reply[1]), int(reply[2])
            case "quota":
                self.policy.check(used=int(reply[1]), cost=job.cost, limit=daily_limit, now=now)
                raise AssertionError("quota refused by the script but not by the policy")
            case "queue":
                raise QueueLimitExceeded(limit=cast(int, max_queued))
            case "channel":
                raise ChannelCapReached(limit=cast(int, channel_cap))
            case _:
                raise ValueError(f"job {job.id} already exists")
        self._work.set()
        return EnqueueResult(
            job=stored,
            position=position,
            quota=QuotaStatus(day=day, limit=daily_limit, used=used, resets_at=resets_at),
        )

    def _quota_day(self, now: datetime) -> tuple[str, int, datetime]:
        """The quota day of ``now``, its keys' TTL in seconds and when it resets.

        The day stays the same from the first time seen until its reset, so
        the time-zone arithmetic runs once a day, not once per enqueue.
        """
        cached = self._day
        if cached is None or not cached[0] <= now < cached[1]:
            resets_at = self.policy.resets_at(now)
            cached = self._day = (
                now,
                resets_at.astimezone(UTC),
                self.policy.day_key(now),
                resets_at,
            )
        left = (cached[1] - now).total_seconds()
        return cached[2], math.ceil(left + _QUOTA_GRACE.total_seconds()), cached[3]

    async def get(self, job_id: str) -> Job | None:
        """The job with that id, or None."""
        reply = await self._op("get", job_id)
        return decode(reply) if reply else None

    async def pop(
        self,
        k: int,
        *,
        owner: str,
        lease_s: float | None = None,
        workers: Collection[str] | None = None,
    ) -> list[Job]:
        """Take up to ``k`` jobs in fair order, QUEUED → SUBMITTED, leased to ``owner``."""
        if k <= 0:
            return []
        now = self.clock()
        until = now.timestamp() + (self.lease_s if lease_s is None else lease_s)
        stamp = now.isoformat()
        args = [str(k), owner, repr(until), f',"updated_at":"{stamp}","started_at":"{stamp}"']
        if workers is not None:
            args.append(" ".join(sorted(workers)))
        left, rows = await self._op("pop", *args)
        self._more = int(left) > 0  # see wait_for_work
        return [self._hold(decode(row), size(row[3])) for row in rows]

    async def transition(
        self, job_id: str, state: JobState, *, owner: str | None = None, **changes: Any
    ) -> Job:
        """Move a job to ``state`` and persist ``changes`` (see `Store.transition`)."""
        return await self._transition(job_id, state, owner, changes, cancel=False)

    async def _transition(
        self,
        job_id: str,
        state: JobState,
        owner: str | None,
        changes: dict[str, Any],
        *,
        cancel: bool,
    ) -> Job:
        """Run the transition operation (see transition.lua) and return the job it leaves."""
        if state is JobState.QUEUED:
            changes = {**changes, **FRESH_ATTEMPT}
        head, stamps = transition_head(state, cancel)
        now = self.clock()
        patch = Patch(changes).stamp(now, *stamps)
        patch.values["state"] = state
        held = self._held.get(job_id)
        known, final, whole = "", None, ""
        if held is not None:
            known = str(held[1])
            if state.terminal and held[1] > _WHOLE_AFTER:
                # Its last write, after many changes: the script may store it whole.
                final = evolve(held[0], patch.values)
                whole = dump_job(final)
        tail = bulk((job_id, owner or "", patch.fragment, known, repr(now.timestamp()), whole))
        reply = await self._connection().submit(head + tail, 10)
        match reply[0]:
            case "ok":
                if state is JobState.QUEUED:
                    self._work.set()
                return self._changed(job_id, reply[1], held, patch, final)
            case "missing":
                self._held.pop(job_id, None)
                raise JobNotFound(f"No job {job_id}.")
            case "lease":
                self._held.pop(job_id, None)
                raise LeaseLost(f"Job {job_id} is no longer leased to {owner}.")
            case _:
                self._held.pop(job_id, None)
                check_transition(JobState(reply[1]), state)
                raise IllegalTransition(f"job cannot go from {reply[1]} to {state}")

    def _changed(
        self,
        job_id: str,
        reply: Any,
        held: tuple[Job, int] | None,
        patch: Patch,
        final: Job | None = None,
    ) -> Job:
        """The job a change left: decoded from the reply, or built from this process's copy.

        A script replies with the stored patches' new length alone when the copy
        we hold was current (see changed_reply in _common.lua). The job is then
        the copy with our patch applied, or the copy itself if the length did
        not move (a cancel that found the job already finished). Decoding a
        whole job for each of the four or five changes of its life is what the
        copy saves, on both sides of the connection. ``final`` is that copy
        with the patch applied, when the caller built it already.
        """
        if isinstance(reply, int):
            if held is None:
                raise RuntimeError(f"the store answered job {job_id} as held, but it is not")
            job, known = held
            if reply != known:
                job = final if final is not None else evolve(job, patch.values)
            return self._hold(job, reply)
        return self._hold(decode(reply), size(reply[3]))

    def _hold(self, job: Job, patches: int) -> Job:
        """Keep a copy of an active job (one that a worker of this process may change next)."""
        held = self._held
        if job.state.active:
            held[job.id] = (job, patches)
            if len(held) > _MAX_HELD:
                del held[next(iter(held))]  # the longest-held: likely finished elsewhere
        else:
            held.pop(job.id, None)
        return job

    async def update(self, job_id: str, **changes: Any) -> Job:
        """Persist non-state ``changes`` (progress, preview, message id...)."""
        patch = Patch(changes).stamp(self.clock(), "updated_at")
        held = self._held.get(job_id)
        reply = await self._op(
            "update", job_id, patch.fragment, "" if held is None else str(held[1])
        )
        if reply[0] != "ok":
            self._held.pop(job_id, None)
            raise JobNotFound(f"No job {job_id}.")
        return self._changed(job_id, reply[1], held, patch)

    async def cancel(self, job_id: str, *, reason: str = "Cancelled.") -> Job:
        """Cancel a non-terminal job (refunding its quota); a terminal job is returned unchanged."""
        changes = {"error_code": ErrorCode.CANCELED.value, "error_message": reason}
        return await self._transition(job_id, JobState.CANCELED, None, changes, cancel=True)

    async def renew(
        self, job_ids: Sequence[str], *, owner: str, lease_s: float | None = None
    ) -> list[str]:
        """Extend the leases ``owner`` still holds; returns the ids that were renewed."""
        if not job_ids:
            return []
        until = self.clock().timestamp() + (self.lease_s if lease_s is None else lease_s)
        return list(await self._op("renew", owner, repr(until), *job_ids))

    async def recover_expired(self, *, max_attempts: int | None = None) -> list[Job]:
        """Requeue (or fail and refund) every job whose lease has expired.

        One process at a time runs a pass (a SET NX PX lock); another process
        calling meanwhile gets an empty list, since that pass handles its jobs.
        """
        limit = self.max_attempts if max_attempts is None else max_attempts
        lock = self.base + ":reaper"
        if not await self._command("SET", lock, self._token, "NX", "PX", _REAPER_LOCK_MS):
            return []
        jobs: list[Job] = []
        try:
            now = self.clock()
            args = [
                repr(now.timestamp()),
                str(limit),
                str(_RECOVER_BATCH),
                Patch(FRESH_ATTEMPT).stamp(now, "updated_at").fragment,
                *(
                    Patch()
                    .change({"error_code": code.value, "error_message": _RECOVER_MESSAGE})
                    .stamp(now, "updated_at", "finished_at")
                    .fragment
                    for code in (ErrorCode.ATTEMPTS_EXHAUSTED, ErrorCode.LEASE_EXPIRED)
                ),
            ]
            while True:
                rows = await self._op("recover", *args)
                jobs += [self._hold(decode(row), size(row[3])) for row in rows]
                if len(rows) < _RECOVER_BATCH:
                    break
        finally:
            # Delete the lock only if it is still ours (it may have timed out).
            await self._command(
                "EVAL",
                "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end",
                1,
                lock,
                self._token,
            )
        if any(j.state is JobState.QUEUED for j in jobs):
            self._work.set()
        for job in jobs:
            log.warning(
                "job.lease_expired", job_id=job.id, state=job.state.value, attempts=job.attempts
            )
        return jobs

    async def position(self, job_id: str) -> int | None:
        """Jobs that will be popped before this queued job (0 = next)."""
        rank = await self._op("position", job_id)
        return None if rank is None else int(rank)

    async def depth(self, user_id: int | None = None) -> int:
        """Queued jobs in total or for one user."""
        key = self.base + (":queue" if user_id is None else f":uq:{user_id}")
        return int(await self._command("ZCARD", key))

    async def list_jobs(
        self,
        *,
        user_id: int | None = None,
        states: Collection[JobState] | None = None,
        limit: int = 50,
    ) -> list[Job]:
        """Jobs newest first, optionally filtered by user and states.

        With a state filter the script walks the (user's) history newest first
        until it has ``limit`` matches: meant for admin views, not hot paths.
        """
        if limit <= 0:
            return []
        rows = await self._op(
            "list",
            "" if user_id is None else str(user_id),
            "" if states is None else words(states),
            str(limit),
        )
        return [decode(row) for row in rows]

    async def count_by_state(self) -> dict[JobState, int]:
        """How many jobs are in each state."""
        # The scripts count jobs per edge ("from>to", "" for a new job or a
        # pruned one): a state holds what came in minus what went out.
        flat = _flatten(await self._command("HGETALL", self.base + ":moves"))
        counts: dict[JobState, int] = {}
        for edge, n in zip(flat[::2], flat[1::2], strict=True):
            source, _, target = edge.partition(">")
            if target:  # '' = deleted (prune)
                counts[JobState(target)] = counts.get(JobState(target), 0) + int(n)
            if source:
                counts[JobState(source)] = counts.get(JobState(source), 0) - int(n)
        return {s: n for s, n in counts.items() if n}

    async def prune(self, *, finished_before: datetime) -> int:
        """Delete the jobs that finished before ``finished_before``, a batch per script call."""
        cutoff = repr(finished_before.timestamp())
        count = 0
        while True:
            seen, deleted = await self._op("prune", cutoff, str(_PRUNE_BATCH))
            count += int(deleted)
            if int(seen) < _PRUNE_BATCH:
                return count

    # -- quotas and users ---------------------------------------------------

    async def quota(self, user_id: int, *, daily_limit: int) -> QuotaStatus:
        """The user's quota for the current local day."""
        now = self.clock()
        key = f"{self.base}:quota:{user_id}:{self.policy.day_key(now)}"
        used = await self._command("HGET", key, "used")
        return self.policy.status(used=int(used or 0), limit=daily_limit, now=now)

    async def get_user(self, user_id: int) -> UserRecord:
        """The user's overrides (a blank record if none were set)."""
        data = await self._command("GET", f"{self.base}:user:{user_id}")
        return user_from_json(user_id, data) if data else UserRecord(user_id=user_id)

    async def put_user(self, record: UserRecord) -> None:
        """Replace the user's overrides."""
        await self._command("SET", f"{self.base}:user:{record.user_id}", user_to_json(record))

    # -- worker leases ------------------------------------------------------

    async def _worker(self, op: str, name: str, owner: str, ttl_s: float) -> Any:
        now = self.clock().timestamp()
        gc_ms = math.ceil((ttl_s + _WORKER_GC_S) * 1000)
        return await self._op("worker", op, name, owner, repr(now), repr(now + ttl_s), str(gc_ms))

    async def acquire_worker(self, name: str, owner: str, ttl_s: float) -> bool:
        """Take (or keep) the lease on a worker; False if another live owner holds it."""
        return bool(await self._worker("acquire", name, owner, ttl_s))

    async def renew_worker(self, name: str, owner: str, ttl_s: float) -> bool:
        """Extend a worker lease ``owner`` holds; False if it was lost."""
        return bool(await self._worker("renew", name, owner, ttl_s))

    async def release_worker(self, name: str, owner: str) -> bool:
        """Give up a worker lease ``owner`` holds."""
        return bool(await self._worker("release", name, owner, 0.0))

    async def worker_owner(self, name: str) -> str | None:
        """Who holds the worker's lease now, if anyone."""
        owner = await self._worker("owner", name, "", 0.0)
        return None if owner is None else str(owner)

    # -- worker status ----------------------------------------------------------

    async def publish_workers(self, owner: str, rows: list[dict[str, Any]], ttl_s: float) -> None:
        """Replace the worker rows ``owner`` shows; they vanish after ``ttl_s``.

        One key per process holds its rows and deadline (judged by the injected
        clock, like worker leases); the key itself expires a while later, and a
        set lists the processes so a reader needs no SCAN.
        """
        key = f"{self.base}:status:{owner}"
        owners = self.base + ":status-owners"
        if not rows:
            await self._command("DEL", key)
            await self._command("SREM", owners, owner)
            return
        expires = self.clock().timestamp() + ttl_s
        value = json.dumps({"expires": expires, "rows": rows})
        await self._command("SET", key, value, "PX", math.ceil((ttl_s + _WORKER_GC_S) * 1000))
        await self._command("SADD", owners, owner)

    async def worker_rows(self) -> list[dict[str, Any]]:
        """Every live process's published rows, each with ``process`` set to its owner."""
        owners_key = self.base + ":status-owners"
        owners = sorted(await self._command("SMEMBERS", owners_key) or [])
        if not owners:
            return []
        values = await self._command("MGET", *(f"{self.base}:status:{o}" for o in owners))
        now = self.clock().timestamp()
        out: list[dict[str, Any]] = []
        for owner, value in zip(owners, values, strict=True):
            if value is None:
                await self._command("SREM", owners_key, owner)
                continue
            data = json.loads(value)
            if float(data["expires"]) > now:
                out += [{**row, "process": owner} for row in data["rows"]]
        return out

    # -- wake-ups -------------------------------------------------------------

    async def wait_for_work(self, timeout: float) -> bool:
        """Block until the queue is non-empty (True) or ``timeout`` passes (False).

        Enqueue scripts publish on the deployment's wake channel when the queue
        goes from empty to non-empty; this process's subscriber turns that into
        an event (see `wait_for_queued`).
        """
        if self._more:
            # The last pop left jobs behind: pop again without asking first
            # (if another process took them, that pop comes back empty).
            self._more = False
            return True

        async def queued() -> bool:
            return await self.depth() > 0

        return await wait_for_queued(self._work, queued, timeout)


def _flatten(reply: Any) -> list[str]:
    """A hash reply as a flat list (redis-py turns HGETALL into a dict, scripts do not)."""
    if isinstance(reply, dict):
        return [x for pair in reply.items() for x in pair]
    return list(reply or [])
