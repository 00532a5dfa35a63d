"""Group commit for the SQLite store: many operations per transaction, pops first.

An *operation* is a function of a ``sqlite3.Connection`` that reads and writes
the database and has no other effect; `GroupCommit.run` queues it and resolves
with its result once it is committed (and, with ``fsync=True``, on disk).

* **Group commit.** Operations issued while a batch is on the database thread
  run together in the next transaction (`_batch_txn`): one BEGIN/COMMIT and
  one thread hop per batch instead of per operation. Each still fails alone.
* **Pops first.** Order is FIFO except for *urgent* operations (a pop): one
  goes to the front, with the enqueues that insert the jobs it takes, and its
  batch ends with it. So a pop waits for the batch already on the database
  thread and a short one of its own, not for every write queued before it.
* **Durability.** Commits use WAL with ``synchronous = NORMAL``: no fsync
  inside COMMIT. An acknowledged operation survives a crash or kill of the
  process (it is in the WAL file); a power cut or kernel crash may lose the
  last commits before the next checkpoint, never the database's consistency.
  With ``fsync=True`` it survives those too: a thread of its own fsyncs the
  WAL after each commit, and a batch is acknowledged only after an fsync that
  began after its COMMIT returned. The writer goes on with the next batch
  meanwhile, and one fsync covers every batch committed before it began. That
  is the guarantee of ``synchronous = FULL`` without the writer waiting for
  each fsync itself. Measured with benchmarks/queue.py's pop loop (``--mode
  loop``; 50,000 jobs, 2 shared cores): without fsync ~1,800-2,200 jobs/s, pop
  p99 ~3.6-4.5 ms; with ~1,500-1,800 jobs/s, p99 ~4.6-5.5 ms; ``synchronous =
  FULL`` ~1,640, 5.3 ms.
* **Checkpoints off the commit path.** Copying the WAL into the database file
  (with its own fsyncs) runs on a second connection and thread
  (`GroupCommit._checkpoints`); run by the writer at its threshold, each one
  stalled every operation behind it for milliseconds.

aiosqlite has no public hook to run a function on its thread, so this module
is the one place that calls its ``_execute`` and reads ``_conn``; the version
is pinned.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import aiosqlite
import structlog

log = structlog.get_logger(__name__)
T = TypeVar("T")

MAX_BATCH = 16  # operations per transaction: bounds how long a pop waits behind a batch
CHECKPOINT_S = 0.05  # background WAL checkpoints while there are writes
_CHECKPOINT_PASSES = 8
_WAL_AUTOCHECKPOINT = 4000  # pages; the writer's own checkpoint, should the background lag
_Outcome = tuple[bool, Any]  # (True, result) or (False, the exception it raised)
Operation = Callable[[sqlite3.Connection], Any]


@dataclass(slots=True, eq=False)  # compared by identity
class _Op:
    """One operation waiting for a group commit."""

    fn: Operation
    fut: asyncio.Future[Any]
    creates: str | None  # the job id an enqueue inserts, so a pop of it waits for it
    urgent: bool  # a pop: goes ahead of the queue and ends its batch


def _batch_txn(
    conn: sqlite3.Connection, fns: list[Operation], tidy: bool, syncer: _Syncer | None
) -> tuple[int, list[_Outcome]]:
    """Run ``fns`` in one transaction on the database thread; each fails alone.

    Returns the number of the fsync that makes the batch durable (`_Syncer`)
    with the outcomes.

    The fast path runs them back to back. When one raises, the transaction is
    rolled back and replayed with a SAVEPOINT around each operation: the ones
    before it run again (operations are functions of the database state, with
    no other effects, so they do the same again), the failed one is reported,
    and the rest of the batch keeps its savepoints. A SAVEPOINT per operation
    on the fast path would double the statements each one costs.

    With ``tidy``, first copy into the database the little a background
    checkpoint left of the WAL (see `GroupCommit._checkpoints`).
    """
    outcomes: list[_Outcome] = []
    failure: Exception | None = None
    changes = conn.total_changes
    if tidy:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    conn.execute("BEGIN IMMEDIATE")
    try:
        for fn in fns:
            try:
                outcomes.append((True, fn(conn)))
            except Exception as exc:
                failure = exc
                break
        if failure is not None:
            failed_at = len(outcomes)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.execute("BEGIN IMMEDIATE")
            outcomes = [_guarded(conn, fn) for fn in fns[:failed_at]]
            outcomes.append((False, failure))
            outcomes.extend(_guarded(conn, fn) for fn in fns[failed_at + 1 :])
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    # Asked here, on the database thread, so the fsync starts without a trip
    # through the event loop. A batch that wrote nothing waits for the
    # writes it may have read to be on disk, no more.
    if syncer is None:
        return 0, outcomes
    return syncer.committed(wrote=conn.total_changes != changes), outcomes


def _guarded(conn: sqlite3.Connection, fn: Operation) -> _Outcome:
    """Run ``fn`` inside its own SAVEPOINT: an error rolls back only its writes."""
    conn.execute("SAVEPOINT op")
    try:
        outcome: _Outcome = (True, fn(conn))
    except Exception as exc:
        conn.execute("ROLLBACK TO op")
        outcome = (False, exc)
    conn.execute("RELEASE op")
    return outcome


def _drain_wal(conn: sqlite3.Connection) -> None:
    """Copy the WAL into the database, again until it is all copied (or a few passes).

    PASSIVE checkpoints neither wait for nor block the writer. Each pass copies
    what the writer appended during the one before, so passes shrink.
    """
    before = -1
    for _ in range(_CHECKPOINT_PASSES):
        busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if busy or frames <= 0 or (frames == before and copied >= frames):
            return  # busy, restarted, or nothing was appended since the last pass
        before = frames


class _Syncer:
    """A thread that fsyncs the WAL after commits and tells the event loop how far it got.

    Commits are numbered; one fsync covers every commit numbered up to the
    count when it began, so under load fsyncs coalesce.
    """

    def __init__(
        self,
        wal: Path,
        loop: asyncio.AbstractEventLoop,
        on_synced: Callable[[int, OSError | None], None],
    ) -> None:
        self._wal = wal
        self._loop = loop
        self._on_synced = on_synced
        self._cond = threading.Condition()
        self._committed = 0
        self._requested = 0  # the commit number the last fsync began at
        self._stopping = False
        self._fd: int | None = None
        self._thread = threading.Thread(target=self._work, name="sqlite-fsync", daemon=True)
        self._thread.start()

    def committed(self, *, wrote: bool) -> int:
        """Count a commit (on the database thread); the fsync number that covers it."""
        with self._cond:
            if wrote:
                self._committed += 1
                self._cond.notify()
            return self._committed

    def stop(self) -> None:
        """Finish the fsync under way (and one for any commit left), then end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _work(self) -> None:
        while True:
            with self._cond:
                while self._requested == self._committed and not self._stopping:
                    self._cond.wait()
                if self._requested == self._committed:
                    return
                target = self._requested = self._committed
            error: OSError | None = None
            try:
                self._fsync()
            except OSError as exc:
                error = exc
            try:
                self._loop.call_soon_threadsafe(self._on_synced, target, error)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                return

    def _fsync(self) -> None:
        if self._fd is None:
            self._fd = os.open(self._wal, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
            if os.name == "posix":  # the WAL's directory entry must survive a power cut too
                folder = os.open(self._wal.parent, os.O_RDONLY)
                try:
                    os.fsync(folder)
                finally:
                    os.close(folder)
        os.fsync(self._fd)


class GroupCommit:
    """The writer of one SQLite database (WAL): queued operations, group commits, fsyncs."""

    def __init__(self, path: Path, *, fsync: bool = False, max_batch: int = MAX_BATCH) -> None:
        self.path = path
        self.fsync = fsync
        self.max_batch = max_batch
        self._db: aiosqlite.Connection | None = None
        self._pending: list[_Op] = []
        self._flusher: asyncio.Task[None] | None = None
        # Committed batches waiting for the fsync that makes them durable, by its number.
        self._unsynced: deque[tuple[int, list[_Op], list[_Outcome]]] = deque()
        self._synced = 0
        self._all_synced = asyncio.Event()
        self._all_synced.set()
        self._syncer: _Syncer | None = None
        # Set by a failed fsync. The kernel may have dropped the unwritten pages,
        # so a later fsync proves nothing: fail every operation from then on
        # (a restart recovers from what is on disk).
        self._broken: OSError | None = None
        self._ckpt_db: aiosqlite.Connection | None = None
        self._checkpointer: asyncio.Task[None] | None = None
        self._wrote = asyncio.Event()
        self._tidy_due = False
        #: Notified after each background checkpoint pass (what waits for one waits on it).
        self.checkpointed = asyncio.Condition()

    async def open(self) -> None:
        """Connect the writer and the checkpointer."""
        self._db = await aiosqlite.connect(self.path, isolation_level=None)
        # journal_mode cannot change inside a transaction; these run before any.
        await self._db.execute("PRAGMA journal_mode = WAL")
        # NORMAL: no fsync inside COMMIT; `_sync` fsyncs the WAL before any
        # operation is acknowledged (see the module docstring).
        await self._db.execute("PRAGMA synchronous = NORMAL")
        await self._db.execute("PRAGMA busy_timeout = 5000")
        await self._db.execute(f"PRAGMA wal_autocheckpoint = {_WAL_AUTOCHECKPOINT}")
        if self.fsync:
            self._syncer = _Syncer(
                self.path.with_name(self.path.name + "-wal"),
                asyncio.get_running_loop(),
                self._on_synced,
            )
        self._ckpt_db = await aiosqlite.connect(self.path, isolation_level=None)
        self._checkpointer = asyncio.create_task(self._checkpoints(), name="sqlite-checkpoint")

    async def aclose(self) -> None:
        """Finish every queued operation, then close; safe to call twice."""
        if self._flusher is not None:
            await self._flusher
        await self._all_synced.wait()
        if self._checkpointer is not None:
            self._checkpointer.cancel()
            await asyncio.gather(self._checkpointer, return_exceptions=True)
            self._checkpointer = None
        if self._syncer is not None:
            syncer, self._syncer = self._syncer, None
            await asyncio.to_thread(syncer.stop)
        if self._ckpt_db is not None:
            ckpt, self._ckpt_db = self._ckpt_db, None
            await ckpt.close()
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    async def run(
        self,
        fn: Callable[[sqlite3.Connection], T],
        *,
        creates: str | None = None,
        urgent_after: Collection[str] | None = None,
    ) -> T:
        """Run ``fn`` in a group commit; its result once committed (see the module docstring).

        ``creates`` names the job an enqueue inserts. ``urgent_after`` makes the
        operation urgent (a pop) and names the jobs it reads: it overtakes every
        waiting operation but the enqueues of those jobs, which go with it. The
        operations it overtakes are concurrent ones (their callers are still
        waiting) on other jobs, so every outcome is one that a serial order of
        those calls would give.
        """
        if self._db is None:
            raise RuntimeError("store is not started")
        if self._broken is not None:
            raise OSError(
                f"the database could not be flushed to disk ({self._broken}); restart to recover"
            ) from self._broken
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        op = _Op(fn, fut, creates, urgent_after is not None)
        pending = self._pending
        if urgent_after is None:
            pending.append(op)
        else:
            # Behind an urgent group still waiting, if any (pops hold the store's lock: none).
            front = 0
            for i in range(len(pending) - 1, -1, -1):
                if pending[i].urgent:
                    front = i + 1
                    break
            needed = [
                o for o in pending[front:] if o.creates is not None and o.creates in urgent_after
            ]
            if needed:
                pending[front:] = [o for o in pending[front:] if o not in needed]
            pending[front:front] = [*needed, op]
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="sqlite-group-commit")
        return cast(T, await fut)

    def _next_batch(self) -> list[_Op]:
        """Take the next batch: at most ``max_batch`` operations, ending at an urgent one."""
        pending = self._pending
        end = min(len(pending), self.max_batch)
        for i in range(end):
            if pending[i].urgent:
                end = i + 1
                break
        batch = pending[:end]
        del pending[:end]
        return batch

    async def _flush(self) -> None:
        while self._pending:
            batch = self._next_batch()
            db = self._db
            if db is None:
                _fail(batch, RuntimeError("store is closed"))
                continue
            conn: sqlite3.Connection = db._conn  # the raw connection lives on aiosqlite's thread
            # Not ahead of a pop: it is the one operation that waits for nothing else.
            tidy = self._tidy_due and not batch[-1].urgent
            if tidy:
                self._tidy_due = False
            try:
                sync, outcomes = await db._execute(  # type: ignore[no-untyped-call]
                    _batch_txn, conn, [op.fn for op in batch], tidy, self._syncer
                )
            except BaseException as exc:
                _fail(batch, exc if isinstance(exc, Exception) else RuntimeError("store stopped"))
                if not isinstance(exc, Exception):
                    raise
                continue
            self._wrote.set()
            if self._broken is not None:
                _fail(batch, self._broken)
            elif sync <= self._synced:
                _resolve(batch, outcomes)
            else:
                self._unsynced.append((sync, batch, outcomes))
                self._all_synced.clear()

    def _on_synced(self, sync: int, error: OSError | None) -> None:
        """On the event loop: fsync number ``sync`` is done; acknowledge what it covers."""
        if error is not None and self._broken is None:
            log.error("store.fsync_failed", backend="sqlite", error=str(error))
            self._broken = error
        if self._broken is not None:
            # Committed, but perhaps not on disk: no caller may take it as done.
            while self._unsynced:
                _fail(self._unsynced.popleft()[1], self._broken)
        else:
            self._synced = max(self._synced, sync)
            while self._unsynced and self._unsynced[0][0] <= sync:
                _, batch, outcomes = self._unsynced.popleft()
                _resolve(batch, outcomes)
        if not self._unsynced:
            self._all_synced.set()

    async def _checkpoints(self) -> None:
        """Checkpoint the WAL in the background, every ``CHECKPOINT_S`` while there are writes.

        PASSIVE checkpoints copy the WAL into the database file while the
        writer goes on. The writer then runs one short checkpoint of its own
        before its next transaction (`_batch_txn`'s ``tidy``: the few frames
        added since), because SQLite starts the WAL afresh only for a writer
        that began with the WAL fully copied, and the writer is nearly always
        inside a transaction when a background pass ends. Without that the
        WAL grew to the writer's own threshold and it copied it all.
        """
        ckpt = self._ckpt_db
        assert ckpt is not None
        conn: sqlite3.Connection = ckpt._conn  # the raw connection lives on its own thread
        while True:
            await self._wrote.wait()
            await asyncio.sleep(CHECKPOINT_S)
            self._wrote.clear()
            try:
                await ckpt._execute(_drain_wal, conn)  # type: ignore[no-untyped-call]
            except sqlite3.Error as exc:
                log.warning("store.checkpoint_failed", backend="sqlite", error=str(exc))
                continue
            self._tidy_due = True
            async with self.checkpointed:
                self.checkpointed.notify_all()


def _resolve(batch: list[_Op], outcomes: list[_Outcome]) -> None:
    for op, (ok, value) in zip(batch, outcomes, strict=True):
        if op.fut.done():
            continue
        if ok:
            op.fut.set_result(value)
        else:
            op.fut.set_exception(value)


def _fail(batch: list[_Op], exc: BaseException) -> None:
    for op in batch:
        if not op.fut.done():
            op.fut.set_exception(exc)
