"""The embedded store: SQLite (WAL) through aiosqlite, for one process.

The database is the source of truth; the fair queue is mirrored in memory
(`FairQueue`) and rebuilt from it at start, so `pop` and `position` need no
scan. Every job's virtual finish tag is persisted, so a restart keeps every
queued job's place.

Each operation is one function run on aiosqlite's database thread (one
thread hop, ~0.1 ms) instead of a chain of awaited statements (one hop each);
concurrent operations share a transaction and pops go first
(`gouache.storage.sqlite_commit`, which also says what survives a crash and
what ``fsync=True`` adds). Every function given to `_run` must be a function
of the database alone, with no other effect: a batch may run it twice.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import structlog

from gouache.channels.errors import ChannelCapReached
from gouache.errors import JobNotFound, LeaseLost, QueueLimitExceeded, QuotaExceeded
from gouache.jobs import ErrorCode, Job, JobState, check_transition
from gouache.queue.fair import Entry, FairQueue, step
from gouache.queue.quota import Clock, QuotaPolicy, QuotaStatus, system_clock
from gouache.storage.base import (
    FRESH_ATTEMPT,
    MUTABLE_FIELDS,
    EnqueueResult,
    UserRecord,
    dump_job,
    user_from_json,
    user_to_json,
    wait_for_queued,
)
from gouache.storage.channels_sqlite import (
    MIGRATION as CHANNELS_MIGRATION,
)
from gouache.storage.channels_sqlite import (
    SQLiteChannels,
    refund_channel,
    reserve_channel,
)
from gouache.storage.sqlite_commit import GroupCommit

log = structlog.get_logger(__name__)
T = TypeVar("T")

_MIGRATIONS: list[str] = [
    # 1: initial schema
    """
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL UNIQUE,
        user_id INTEGER NOT NULL,
        state TEXT NOT NULL,
        tag REAL NOT NULL,
        cost REAL NOT NULL,
        weight REAL NOT NULL,
        lease_owner TEXT,
        lease_until REAL,
        data TEXT NOT NULL
    );
    CREATE INDEX jobs_state ON jobs(state);
    CREATE INDEX jobs_user ON jobs(user_id, seq);
    CREATE INDEX jobs_lease ON jobs(lease_until) WHERE lease_until IS NOT NULL;
    CREATE TABLE quotas (
        user_id INTEGER NOT NULL,
        day TEXT NOT NULL,
        used INTEGER NOT NULL DEFAULT 0,
        committed INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (user_id, day)
    );
    CREATE TABLE users (user_id INTEGER PRIMARY KEY, data TEXT NOT NULL);
    CREATE TABLE workers (name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires REAL NOT NULL);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 2: worker rows each process publishes for `gouache pool status`
    """
    CREATE TABLE worker_status (owner TEXT PRIMARY KEY, rows TEXT NOT NULL, expires REAL NOT NULL);
    """,
    # 3: when a finished job finished (Unix seconds), for history retention (`prune`)
    """
    ALTER TABLE jobs ADD COLUMN finished REAL;
    UPDATE jobs SET finished = (julianday(COALESCE(json_extract(data, '$.finished_at'),
        json_extract(data, '$.updated_at'))) - 2440587.5) * 86400.0
        WHERE state IN ('succeeded', 'failed', 'timed_out', 'canceled');
    CREATE INDEX jobs_finished ON jobs(finished) WHERE finished IS NOT NULL;
    """,
    # 4: channel settings, member preferences, channel daily caps (gouache.channels)
    CHANNELS_MIGRATION,
]

# The worker a queued job is pinned to (`Job.pinned_worker`), read from its JSON.
_PIN = (
    "CASE WHEN json_extract(data, '$.action') != 'imagine' "
    "THEN json_extract(data, '$.meta.parent.worker') END"
)

_IN_CHUNK = 500  # ids per `IN (...)`, well under SQLite's limit on bound variables
_SAVE = "UPDATE jobs SET state = ?, lease_owner = ?, lease_until = ?, data = ? WHERE id = ?"
_SAVE_FINISHED = (
    "UPDATE jobs SET state = ?, lease_owner = NULL, lease_until = NULL, data = ?, finished = ? "
    "WHERE id = ?"
)
_PRUNE_BATCH = 500  # finished jobs deleted per transaction (keeps other writers flowing)


_ACTIVE = tuple(s.value for s in JobState if s.active)
_REQUEUEABLE = frozenset({JobState.SUBMITTED, JobState.RUNNING})


def _apply(job: Job, changes: dict[str, Any]) -> Job:
    bad = set(changes) - MUTABLE_FIELDS
    if bad:
        raise ValueError(f"fields not changeable through the store: {sorted(bad)}")
    return job.model_copy(update=changes) if changes else job


class SQLiteStore(SQLiteChannels):
    """`Store` on one SQLite file (see module docstring)."""

    def __init__(  # noqa: PLR0913
        self,
        path: str | Path,
        *,
        policy: QuotaPolicy | None = None,
        clock: Clock = system_clock,
        lease_s: float = 300.0,
        max_attempts: int = 3,
        fsync: bool = False,
    ) -> None:
        self.path = Path(path)
        self.policy = policy or QuotaPolicy()
        self.clock = clock
        self.lease_s = lease_s
        self.max_attempts = max_attempts
        # fsync: acknowledge a write only once the WAL is fsynced, so it survives a
        # power cut too, not only a crash of the process (see sqlite_commit).
        self._writer = GroupCommit(self.path, fsync=fsync)
        self._queue = FairQueue()
        self._lock = asyncio.Lock()
        self._work = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Open the database, migrate it, rebuild the queue and recover expired leases."""
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        await self._writer.open()
        try:
            await self._run(self._migrate)
        except BaseException:
            # A database gouache cannot migrate: close it, or its threads outlive the process.
            await self._writer.aclose()
            raise
        queue = await self._run(self._load_queue)
        self._queue = queue
        if len(queue):
            self._work.set()
        recovered = await self.recover_expired()
        log.info(
            "store.started",
            backend="sqlite",
            path=str(self.path),
            queued=len(queue),
            recovered=len(recovered),
        )

    async def aclose(self) -> None:
        """Close the database; safe to call twice."""
        await self._writer.aclose()

    async def __aenter__(self) -> SQLiteStore:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _run(
        self,
        fn: Callable[[sqlite3.Connection], T],
        *,
        creates: str | None = None,
        urgent_after: Collection[str] | None = None,
    ) -> T:
        """Run ``fn`` as one operation of a group commit (see `GroupCommit.run`)."""
        return await self._writer.run(fn, creates=creates, urgent_after=urgent_after)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
            for statement in script.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")

    def _load_queue(self, conn: sqlite3.Connection) -> FairQueue:
        row = conn.execute("SELECT value FROM meta WHERE key = 'virtual_time'").fetchone()
        queue = FairQueue(virtual_time=float(row[0]) if row else 0.0)
        rows = conn.execute(
            f"SELECT id, user_id, tag, seq, cost, weight, {_PIN} FROM jobs WHERE state = ? "
            "ORDER BY tag, seq",
            (JobState.QUEUED.value,),
        )
        for job_id, user_id, tag, seq, cost, weight, pin in rows:
            queue.restore(Entry(job_id, user_id, tag, seq, cost, weight, pin))
        for user_id, finish in conn.execute(
            # Jobs that were served (popped at least once), not those cancelled in the queue.
            "SELECT user_id, MAX(tag) FROM jobs WHERE state != ? AND tag > ? "
            "AND json_extract(data, '$.attempts') > 0 GROUP BY user_id",
            (JobState.QUEUED.value, queue.virtual_time),
        ):
            queue.remember_finish(user_id, finish)
        (max_seq,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM jobs").fetchone()
        queue.restore_seq(max_seq)
        return queue

    # -- helpers on the database thread -----------------------------------

    @staticmethod
    def _load(conn: sqlite3.Connection, job_id: str) -> tuple[Job, str | None, float | None]:
        row = conn.execute(
            "SELECT data, lease_owner, lease_until FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        if row is None:
            raise JobNotFound(f"No job {job_id}.")
        return Job.model_validate_json(row[0]), row[1], row[2]

    @staticmethod
    def _save(
        conn: sqlite3.Connection,
        job: Job,
        *,
        lease_owner: str | None = None,
        lease_until: float | None = None,
    ) -> None:
        if job.state.terminal:
            finished = (job.finished_at or job.updated_at).timestamp()
            conn.execute(_SAVE_FINISHED, (job.state.value, dump_job(job), finished, job.id))
        else:
            conn.execute(_SAVE, (job.state.value, lease_owner, lease_until, dump_job(job), job.id))

    @staticmethod
    def _settle(conn: sqlite3.Connection, job: Job) -> None:
        """Commit or refund the quota a finished job reserved."""
        if job.quota_day is None:
            return
        if job.state is JobState.SUCCEEDED:
            conn.execute(
                "UPDATE quotas SET committed = committed + ? WHERE user_id = ? AND day = ?",
                (job.cost, job.user_id, job.quota_day),
            )
        else:
            conn.execute(
                "UPDATE quotas SET used = MAX(0, used - ?) WHERE user_id = ? AND day = ?",
                (job.cost, job.user_id, job.quota_day),
            )
            refund_channel(conn, job.id, job.quota_day, job.cost)

    # -- jobs and the queue -----------------------------------------------

    async def enqueue(
        self,
        job: Job,
        *,
        daily_limit: int,
        max_queued: int | None = None,
        channel_cap: int | None = None,
    ) -> EnqueueResult:
        """Reserve quota (and the channel's cap), store ``job`` as QUEUED and queue it, atomically.

        The job enters the in-memory queue first (taking its tag and seq) and
        leaves it again if the write fails, so concurrent enqueues need no lock
        and share group commits. A pop that races a failed write skips the job.
        """
        now = self.clock()
        if max_queued is not None and self._queue.depth(job.user_id) >= max_queued:
            raise QueueLimitExceeded(limit=max_queued)
        day = self.policy.day_key(now)
        stored = job.model_copy(
            update={
                "state": JobState.QUEUED,
                "quota_day": day,
                "created_at": now,
                "updated_at": now,
                "attempts": 0,
            }
        )
        entry = self._queue.push(
            stored.id,
            stored.user_id,
            cost=stored.cost,
            weight=stored.weight,
            pin=stored.pinned_worker,
        )

        def txn(conn: sqlite3.Connection) -> int:
            self.policy.check(used=0, cost=job.cost, limit=daily_limit, now=now)
            # Reserve only if it fits: one statement where a SELECT then an UPSERT took two.
            row = conn.execute(
                "INSERT INTO quotas(user_id, day, used) VALUES (?, ?, ?) "
                "ON CONFLICT(user_id, day) DO UPDATE SET used = used + excluded.used "
                "WHERE used + excluded.used <= ? RETURNING used",
                (job.user_id, day, job.cost, daily_limit),
            ).fetchone()
            if row is None:  # refused: nothing was written
                (used,) = conn.execute(
                    "SELECT used FROM quotas WHERE user_id = ? AND day = ?", (job.user_id, day)
                ).fetchone()
                raise QuotaExceeded(
                    limit=daily_limit, used=used, resets_at=self.policy.resets_at(now)
                )
            conn.execute(
                "INSERT INTO jobs(id, seq, user_id, state, tag, cost, weight, data) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    stored.id,
                    entry.seq,
                    stored.user_id,
                    stored.state.value,
                    entry.tag,
                    stored.cost,
                    stored.weight,
                    dump_job(stored),
                ),
            )
            if channel_cap is not None and job.channel_id is not None:
                cap = reserve_channel(conn, job.channel_id, day, job.cost, channel_cap, stored.id)
                if cap is None:  # the savepoint rolls back the quota and the job too
                    raise ChannelCapReached(limit=channel_cap)
            return int(row[0])

        try:
            used = await self._run(txn, creates=stored.id)
        except BaseException:
            self._queue.remove(stored.id, shift=False)
            raise
        self._work.set()
        position = self._queue.position(stored.id)
        return EnqueueResult(
            job=stored,
            position=position if position is not None else 0,
            quota=self.policy.status(used=used, limit=daily_limit, now=now),
        )

    async def get(self, job_id: str) -> Job | None:
        """The job with that id, or None."""

        def read(conn: sqlite3.Connection) -> Job | None:
            row = conn.execute("SELECT data FROM jobs WHERE id = ?", (job_id,)).fetchone()
            return Job.model_validate_json(row[0]) if row else None

        return await self._run(read)

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
        async with self._lock:
            entries = self._queue.pop(k, workers=workers)
            if not entries:
                return []
            now = self.clock()
            until = now.timestamp() + (self.lease_s if lease_s is None else lease_s)
            vtime = self._queue.virtual_time

            ids = [entry.job_id for entry in entries]

            def txn(conn: sqlite3.Connection) -> list[Job]:
                data: dict[str, str] = {}
                for at in range(0, len(ids), _IN_CHUNK):
                    chunk = ids[at : at + _IN_CHUNK]
                    data.update(
                        conn.execute(
                            f"SELECT id, data FROM jobs WHERE id IN ({','.join('?' * len(chunk))})",
                            chunk,
                        ).fetchall()
                    )
                jobs: list[Job] = []
                for job_id in ids:
                    if job_id not in data:
                        continue  # its enqueue failed after the pop took it from memory
                    job = Job.model_validate_json(data[job_id])
                    check_transition(job.state, JobState.SUBMITTED)
                    jobs.append(
                        job.model_copy(
                            update={
                                "state": JobState.SUBMITTED,
                                "attempts": job.attempts + 1,
                                "updated_at": now,
                                "started_at": now,
                            }
                        )
                    )
                conn.executemany(
                    _SAVE,
                    [(j.state.value, owner, until, dump_job(j), j.id) for j in jobs],
                )
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES ('virtual_time', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (repr(vtime),),
                )
                return jobs

            try:
                # Ahead of the other waiting writes, but after the INSERTs of these jobs.
                return await self._run(txn, urgent_after=frozenset(ids))
            except BaseException:
                for entry in entries:
                    self._queue.restore(entry)
                raise

    async def transition(
        self, job_id: str, state: JobState, *, owner: str | None = None, **changes: Any
    ) -> Job:
        """Move a job to ``state`` and persist ``changes`` (see `Store.transition`)."""
        if state is JobState.QUEUED or job_id in self._queue:
            # Touches the in-memory queue: serialize with enqueue/pop/cancel.
            async with self._lock:
                return await self._transition(job_id, state, owner=owner, changes=changes)
        # Active-state changes of popped jobs: no queue involved, so concurrent ones
        # share a group commit. A job popped meanwhile is already SUBMITTED in FIFO order.
        return await self._transition(job_id, state, owner=owner, changes=changes)

    async def _transition(
        self, job_id: str, state: JobState, *, owner: str | None, changes: dict[str, Any]
    ) -> Job:
        now = self.clock()
        bad = set(changes) - MUTABLE_FIELDS
        if bad:
            raise ValueError(f"fields not changeable through the store: {sorted(bad)}")
        update = {**changes, "state": state, "updated_at": now}
        if state.terminal:
            update["finished_at"] = now
        elif state is JobState.QUEUED:
            update.update(FRESH_ATTEMPT)

        # A function of the database alone (no side effects): a batch may replay it.
        def txn(conn: sqlite3.Connection) -> tuple[Job, JobState, Entry | None]:
            job, lease_owner, lease_until = self._load(conn, job_id)
            if owner is not None and lease_owner != owner:
                raise LeaseLost(f"Job {job_id} is no longer leased to {owner}.")
            before = job.state
            check_transition(before, state)
            job = job.model_copy(update=update)
            if state.terminal:
                self._settle(conn, job)
                self._save(conn, job)
                if before is JobState.QUEUED:
                    self._unqueue_shift(conn, job_id)
            elif state is JobState.QUEUED:
                self._save(conn, job)
                return job, before, self._entry_of(conn, job_id)
            else:
                self._save(conn, job, lease_owner=lease_owner, lease_until=lease_until)
            return job, before, None

        job, before, requeued = await self._run(txn)
        if before is JobState.QUEUED and state.terminal:
            self._queue.remove(job_id)
        if requeued is not None:
            self._queue.restore(requeued)
            self._work.set()
        return job

    @staticmethod
    def _entry_of(conn: sqlite3.Connection, job_id: str) -> Entry:
        user_id, tag, seq, cost, weight, pin = conn.execute(
            f"SELECT user_id, tag, seq, cost, weight, {_PIN} FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        return Entry(job_id, user_id, tag, seq, cost, weight, pin)

    def _unqueue_shift(self, conn: sqlite3.Connection, job_id: str) -> None:
        """Mirror `FairQueue.remove`: the user's later queued jobs move up by one job's share."""
        entry = self._queue.get(job_id)
        if entry is None:
            return
        conn.execute(
            "UPDATE jobs SET tag = tag - ? WHERE user_id = ? AND state = ? AND (tag, seq) > (?, ?)",
            (
                step(entry.cost, entry.weight),
                entry.user,
                JobState.QUEUED.value,
                entry.tag,
                entry.seq,
            ),
        )

    async def update(self, job_id: str, **changes: Any) -> Job:
        """Persist non-state ``changes`` (progress, preview, message id...)."""
        now = self.clock()

        def txn(conn: sqlite3.Connection) -> Job:
            job, lease_owner, lease_until = self._load(conn, job_id)
            job = _apply(job, changes).model_copy(update={"updated_at": now})
            self._save(conn, job, lease_owner=lease_owner, lease_until=lease_until)
            return job

        return await self._run(txn)

    async def cancel(self, job_id: str, *, reason: str = "Cancelled.") -> Job:
        """Cancel a non-terminal job (refunding its quota); a terminal job is returned unchanged."""
        async with self._lock:
            job = await self.get(job_id)
            if job is None:
                raise JobNotFound(f"No job {job_id}.")
            if job.state.terminal:
                return job
            return await self._transition(
                job_id,
                JobState.CANCELED,
                owner=None,
                changes={"error_code": ErrorCode.CANCELED.value, "error_message": reason},
            )

    async def renew(
        self, job_ids: Sequence[str], *, owner: str, lease_s: float | None = None
    ) -> list[str]:
        """Extend the leases ``owner`` still holds; returns the ids that were renewed."""
        if not job_ids:
            return []
        until = self.clock().timestamp() + (self.lease_s if lease_s is None else lease_s)
        marks = ",".join("?" * len(job_ids))
        active = ",".join("?" * len(_ACTIVE))

        def txn(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                f"UPDATE jobs SET lease_until = ? WHERE id IN ({marks}) AND lease_owner = ? "
                f"AND state IN ({active}) RETURNING id",
                (until, *job_ids, owner, *_ACTIVE),
            ).fetchall()
            return [r[0] for r in rows]

        return await self._run(txn)

    async def recover_expired(self, *, max_attempts: int | None = None) -> list[Job]:
        """Requeue (or fail and refund) every job whose lease has expired."""
        limit = self.max_attempts if max_attempts is None else max_attempts
        async with self._lock:
            now = self.clock()

            # A function of the database alone (no side effects): a batch may replay it.
            def txn(conn: sqlite3.Connection) -> tuple[list[Job], list[Entry]]:
                active = ",".join("?" * len(_ACTIVE))
                ids = [
                    r[0]
                    for r in conn.execute(
                        f"SELECT id FROM jobs WHERE lease_until < ? AND state IN ({active})",
                        (now.timestamp(), *_ACTIVE),
                    )
                ]
                out: list[Job] = []
                requeue: list[Entry] = []
                for job_id in ids:
                    job, _, _ = self._load(conn, job_id)
                    if job.state in _REQUEUEABLE and job.attempts < limit:
                        job = job.model_copy(
                            update={
                                "state": JobState.QUEUED,
                                **FRESH_ATTEMPT,
                                "updated_at": now,
                            }
                        )
                        self._save(conn, job)
                        requeue.append(self._entry_of(conn, job_id))
                    else:
                        code = (
                            ErrorCode.ATTEMPTS_EXHAUSTED
                            if job.state in _REQUEUEABLE
                            else ErrorCode.LEASE_EXPIRED
                        )
                        job = job.model_copy(
                            update={
                                "state": JobState.FAILED,
                                "error_code": code.value,
                                "error_message": "The worker stopped answering; the image was refunded.",
                                "updated_at": now,
                                "finished_at": now,
                            }
                        )
                        self._settle(conn, job)
                        self._save(conn, job)
                    out.append(job)
                return out, requeue

            jobs, requeue = await self._run(txn)
            for entry in requeue:
                self._queue.restore(entry)
            if requeue:
                self._work.set()
            for job in jobs:
                log.warning(
                    "job.lease_expired", job_id=job.id, state=job.state.value, attempts=job.attempts
                )
            return jobs

    async def position(self, job_id: str) -> int | None:
        """Jobs that will be popped before this queued job (0 = next)."""
        return self._queue.position(job_id)

    async def depth(self, user_id: int | None = None) -> int:
        """Queued jobs in total or for one user."""
        return self._queue.depth(user_id)

    async def list_jobs(
        self,
        *,
        user_id: int | None = None,
        states: Collection[JobState] | None = None,
        limit: int = 50,
    ) -> list[Job]:
        """Jobs newest first, optionally filtered by user and states."""
        where: list[str] = []
        args: list[Any] = []
        if user_id is not None:
            where.append("user_id = ?")
            args.append(user_id)
        if states is not None:
            where.append(f"state IN ({','.join('?' * len(states))})")
            args.extend(s.value for s in states)
        sql = "SELECT data FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(limit)

        def read(conn: sqlite3.Connection) -> list[Job]:
            return [Job.model_validate_json(r[0]) for r in conn.execute(sql, args)]

        return await self._run(read)

    async def count_by_state(self) -> dict[JobState, int]:
        """How many jobs are in each state."""

        def read(conn: sqlite3.Connection) -> dict[JobState, int]:
            rows = conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")
            return {JobState(s): n for s, n in rows}

        return await self._run(read)

    async def prune(self, *, finished_before: datetime) -> int:
        """Delete the jobs that finished before ``finished_before``, a batch per transaction."""
        cutoff = finished_before.timestamp()

        def txn(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE finished < ? LIMIT ?)",
                (cutoff, _PRUNE_BATCH),
            )
            return cursor.rowcount

        count = 0
        while True:
            deleted = await self._run(txn)
            count += deleted
            if deleted < _PRUNE_BATCH:
                return count

    # -- quotas and users ---------------------------------------------------

    async def quota(self, user_id: int, *, daily_limit: int) -> QuotaStatus:
        """The user's quota for the current local day."""
        now = self.clock()
        day = self.policy.day_key(now)

        def read(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT used FROM quotas WHERE user_id = ? AND day = ?", (user_id, day)
            ).fetchone()
            return int(row[0]) if row else 0

        used = await self._run(read)
        return self.policy.status(used=used, limit=daily_limit, now=now)

    async def get_user(self, user_id: int) -> UserRecord:
        """The user's overrides (a blank record if none were set)."""

        def read(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT data FROM users WHERE user_id = ?", (user_id,)).fetchone()
            return row[0] if row else None

        data = await self._run(read)
        return user_from_json(user_id, data) if data else UserRecord(user_id=user_id)

    async def put_user(self, record: UserRecord) -> None:
        """Replace the user's overrides."""
        data = user_to_json(record)

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO users(user_id, data) VALUES (?, ?) "
                "ON CONFLICT(user_id) DO UPDATE SET data = excluded.data",
                (record.user_id, data),
            )

        await self._run(write)

    # -- worker leases ------------------------------------------------------

    async def acquire_worker(self, name: str, owner: str, ttl_s: float) -> bool:
        """Take (or keep) the lease on a worker; False if another live owner holds it."""
        now = self.clock().timestamp()

        def txn(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT owner, expires FROM workers WHERE name = ?", (name,)
            ).fetchone()
            if row is not None and row[0] != owner and row[1] > now:
                return False
            conn.execute(
                "INSERT INTO workers(name, owner, expires) VALUES (?, ?, ?) ON CONFLICT(name) "
                "DO UPDATE SET owner = excluded.owner, expires = excluded.expires",
                (name, owner, now + ttl_s),
            )
            return True

        return await self._run(txn)

    async def renew_worker(self, name: str, owner: str, ttl_s: float) -> bool:
        """Extend a worker lease ``owner`` holds; False if it was lost."""
        now = self.clock().timestamp()

        def txn(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE workers SET expires = ? WHERE name = ? AND owner = ? AND expires > ?",
                (now + ttl_s, name, owner, now),
            )
            return cur.rowcount == 1

        return await self._run(txn)

    async def release_worker(self, name: str, owner: str) -> bool:
        """Give up a worker lease ``owner`` holds."""

        def txn(conn: sqlite3.Connection) -> bool:
            cur = conn.execute("DELETE FROM workers WHERE name = ? AND owner = ?", (name, owner))
            return cur.rowcount == 1

        return await self._run(txn)

    async def worker_owner(self, name: str) -> str | None:
        """Who holds the worker's lease now, if anyone."""
        now = self.clock().timestamp()

        def read(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT owner FROM workers WHERE name = ? AND expires > ?", (name, now)
            ).fetchone()
            return str(row[0]) if row else None

        return await self._run(read)

    # -- worker status ----------------------------------------------------------

    async def publish_workers(self, owner: str, rows: list[dict[str, Any]], ttl_s: float) -> None:
        """Replace the worker rows ``owner`` shows; they vanish after ``ttl_s``."""
        expires = self.clock().timestamp() + ttl_s
        data = json.dumps(rows)

        def write(conn: sqlite3.Connection) -> None:
            if not rows:
                conn.execute("DELETE FROM worker_status WHERE owner = ?", (owner,))
                return
            conn.execute(
                "INSERT INTO worker_status(owner, rows, expires) VALUES (?, ?, ?) "
                "ON CONFLICT(owner) DO UPDATE SET rows = excluded.rows, expires = excluded.expires",
                (owner, data, expires),
            )

        await self._run(write)

    async def worker_rows(self) -> list[dict[str, Any]]:
        """Every live process's published rows, each with ``process`` set to its owner."""
        now = self.clock().timestamp()

        def read(conn: sqlite3.Connection) -> list[tuple[str, str]]:
            conn.execute("DELETE FROM worker_status WHERE expires <= ?", (now,))
            return list(conn.execute("SELECT owner, rows FROM worker_status ORDER BY owner"))

        return [
            {**row, "process": owner}
            for owner, data in await self._run(read)
            for row in json.loads(data)
        ]

    # -- wake-ups -------------------------------------------------------------

    async def wait_for_work(self, timeout: float) -> bool:
        """Block until the queue is non-empty (True) or ``timeout`` passes (False)."""

        async def queued() -> bool:
            return len(self._queue) > 0

        return await wait_for_queued(self._work, queued, timeout)
