"""SQLite-specific behaviour: group commit and the on-disk schema."""

from __future__ import annotations

import asyncio
import errno
import os
import sqlite3
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from gouache.errors import IllegalTransition, QuotaExceeded
from gouache.jobs import Job, JobState
from gouache.storage.base import dump_job
from gouache.storage.sqlite import _MIGRATIONS, SQLiteStore
from gouache.storage.sqlite_commit import _WAL_AUTOCHECKPOINT

from ..conftest import ManualClock


async def test_concurrent_operations_share_commits_and_fail_alone(
    tmp_path: Path, clock: ManualClock
) -> None:
    async with SQLiteStore(tmp_path / "g.db", clock=clock) as store:
        ids = [
            (await store.enqueue(Job(user_id=i, prompt="p"), daily_limit=10)).job.id
            for i in range(40)
        ]
        await store.pop(40, owner="w")
        calls = [store.transition(i, JobState.RUNNING, owner="w", progress=10) for i in ids]
        calls.append(
            store.transition(ids[0], JobState.SUCCEEDED, owner="w")
        )  # illegal after RUNNING
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert isinstance(results[-1], IllegalTransition)
        assert all(isinstance(r, Job) and r.state is JobState.RUNNING for r in results[:-1])
        assert (await store.count_by_state()) == {JobState.RUNNING: 40}


async def test_every_acknowledged_write_is_on_disk(tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / "g.db"
    async with SQLiteStore(path, clock=clock) as store:
        job = (await store.enqueue(Job(user_id=1, prompt="p"), daily_limit=10)).job
        await store.update(job.id, progress=55)
        # A second, independent connection sees the committed state at once.
        with sqlite3.connect(path) as conn:
            (data,) = conn.execute("SELECT data FROM jobs WHERE id = ?", (job.id,)).fetchone()
            assert Job.model_validate_json(data).progress == 55
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("PRAGMA user_version").fetchone()[0] == len(_MIGRATIONS)


async def test_store_refuses_use_before_start(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "g.db")
    with pytest.raises(RuntimeError, match="not started"):
        await store.get("x")


async def test_a_pop_racing_the_enqueues_of_its_jobs_loses_none(
    tmp_path: Path, clock: ManualClock
) -> None:
    # Enqueues put jobs in the in-memory queue before their INSERT commits; a pop
    # goes ahead of waiting writes, so it must take those INSERTs along with it.
    async with SQLiteStore(tmp_path / "g.db", clock=clock) as store:
        enqueues = [
            asyncio.ensure_future(store.enqueue(Job(user_id=i % 7, prompt="p"), daily_limit=99))
            for i in range(60)
        ]
        await asyncio.sleep(0)  # every enqueue is now queued in memory, none committed
        popped = await store.pop(25, owner="w")
        results = await asyncio.gather(*enqueues)
        assert len(popped) == 25
        assert all(j.state is JobState.SUBMITTED and j.attempts == 1 for j in popped)
        assert {j.id for j in popped} <= {r.job.id for r in results}
        assert await store.count_by_state() == {JobState.SUBMITTED: 25, JobState.QUEUED: 35}
        assert await store.depth() == 35
        rest = await store.pop(100, owner="w")
        assert {j.id for j in popped + rest} == {r.job.id for r in results}


async def test_a_failure_replays_the_batch_without_repeating_effects(
    tmp_path: Path, clock: ManualClock
) -> None:
    # One failing operation rolls its batch back and runs the others again: the
    # requeue in the same batch must still put its job back in the queue once.
    async with SQLiteStore(tmp_path / "g.db", clock=clock) as store:
        ids = [
            (await store.enqueue(Job(user_id=i, prompt="p"), daily_limit=10)).job.id
            for i in range(3)
        ]
        await store.pop(3, owner="w")
        results = await asyncio.gather(
            store.transition(ids[0], JobState.RUNNING, owner="w"),
            store.transition(ids[1], JobState.QUEUED, owner="w"),
            store.transition(ids[2], JobState.SUCCEEDED, owner="w"),  # illegal from SUBMITTED
            store.transition(ids[0], JobState.GENERATED, owner="w"),
            return_exceptions=True,
        )
        assert isinstance(results[2], IllegalTransition)
        assert [r.state for r in results if isinstance(r, Job)] == [
            JobState.RUNNING,
            JobState.QUEUED,
            JobState.GENERATED,
        ]
        assert await store.depth() == 1 and await store.position(ids[1]) == 0
        assert [j.id for j in await store.pop(5, owner="w")] == [ids[1]]
        assert (await store.quota(2, daily_limit=10)).used == 1  # nothing settled twice


async def test_refused_quota_in_a_shared_batch_writes_nothing(
    tmp_path: Path, clock: ManualClock
) -> None:
    async with SQLiteStore(tmp_path / "g.db", clock=clock) as store:
        results = await asyncio.gather(
            *(store.enqueue(Job(user_id=1, prompt=f"p{i}"), daily_limit=3) for i in range(5)),
            return_exceptions=True,
        )
        refused = [r for r in results if isinstance(r, QuotaExceeded)]
        assert len(refused) == 2 and all(r.used == 3 for r in refused)
        assert (await store.quota(1, daily_limit=3)).used == 3
        assert await store.count_by_state() == {JobState.QUEUED: 3}
        assert await store.depth() == 3


def test_stored_job_json_round_trips_without_its_none_fields() -> None:
    job = Job(user_id=1, prompt="p", meta={"parent": {"worker": None}}, message_id=None)
    assert len(dump_job(job)) < len(job.model_dump_json())
    assert Job.model_validate_json(dump_job(job)) == job


async def test_with_fsync_nothing_is_acknowledged_before_the_wal_is_on_disk(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "g.db"
    wal = f"{path}-wal"
    reached, release = threading.Event(), threading.Event()
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if os.path.exists(wal) and os.path.samestat(os.fstat(fd), os.stat(wal)):
            reached.set()
            release.wait(10)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    release.set()
    async with SQLiteStore(path, clock=clock, fsync=True) as store:
        release.clear()
        reached.clear()
        enqueue = asyncio.ensure_future(store.enqueue(Job(user_id=1, prompt="p"), daily_limit=9))
        assert await asyncio.to_thread(reached.wait, 10)
        # Committed (another connection sees it), yet not acknowledged while the fsync
        # is held. The writer's flush task has finished with the batch once it ends:
        # a wrong answer would have been given by then (it resolves the caller's future
        # before it ends), a right one parks the batch until the fsync returns.
        with sqlite3.connect(path) as conn:
            (job_id,) = conn.execute("SELECT id FROM jobs").fetchone()
        writer = store._writer
        assert writer._flusher is not None
        await asyncio.wait_for(asyncio.shield(writer._flusher), 10)
        assert [[op.fut.done() for op in batch] for _, batch, _ in writer._unsynced] == [[False]]
        assert not enqueue.done()
        release.set()
        assert (await asyncio.wait_for(enqueue, 10)).job.id == job_id


async def test_a_failed_fsync_fails_the_write_and_every_later_one(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "g.db"
    wal = f"{path}-wal"
    fail = threading.Event()
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if fail.is_set() and os.path.samestat(os.fstat(fd), os.stat(wal)):
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    async with SQLiteStore(path, clock=clock, fsync=True) as store:
        await store.enqueue(Job(user_id=1, prompt="kept"), daily_limit=9)
        fail.set()
        with pytest.raises(OSError, match="Input/output"):
            await store.enqueue(Job(user_id=1, prompt="lost"), daily_limit=9)
        fail.clear()  # a later fsync proves nothing about pages the kernel dropped
        with pytest.raises(OSError, match="restart"):
            await store.get("anything")
    async with SQLiteStore(path, clock=clock, fsync=True) as store:
        assert [j.prompt for j in await store.list_jobs()][-1] == "kept"


async def test_checkpoints_run_in_the_background(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    async with SQLiteStore(path) as store:
        await asyncio.gather(
            *(
                store.enqueue(Job(user_id=i % 50, prompt="p" * 200), daily_limit=99)
                for i in range(300)
            )
        )
        with sqlite3.connect(path) as conn:
            (pages,) = conn.execute("PRAGMA page_count").fetchone()
        # Far fewer WAL frames than the writer's own checkpoint threshold: only the
        # background checkpointer copies the jobs into the database file.
        assert pages < _WAL_AUTOCHECKPOINT // 4

        # Each background pass is announced: look at the database file after each one
        # until it holds every page the writer committed.
        checkpointed = store._writer.checkpointed
        async with asyncio.timeout(10), checkpointed:
            await checkpointed.wait_for(lambda: os.stat(path).st_size >= pages * 4096)
        assert (await store.count_by_state()) == {JobState.QUEUED: 300}


async def test_a_database_from_before_retention_learns_when_its_jobs_finished(
    tmp_path: Path, clock: ManualClock
) -> None:
    """Schema 3 adds `finished`; jobs that finished under schema 2 get it from their JSON."""
    path = tmp_path / "g.db"
    async with SQLiteStore(path, clock=clock) as store:
        done = (await store.enqueue(Job(user_id=1, prompt="old"), daily_limit=10)).job
        kept = (await store.enqueue(Job(user_id=2, prompt="queued"), daily_limit=10)).job
        await store.cancel(done.id)
    with sqlite3.connect(path) as conn:  # back to schema 2, as an older gouache left it
        for table in ("channel_settings", "member_prefs", "channel_usage"):  # schema 4
            conn.execute(f"DROP TABLE {table}")
        conn.execute("ALTER TABLE jobs DROP COLUMN chcap")
        conn.execute("DROP INDEX jobs_finished")
        conn.execute("ALTER TABLE jobs DROP COLUMN finished")
        conn.execute("PRAGMA user_version = 2")
    clock.advance(86400)
    async with SQLiteStore(path, clock=clock) as store:
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == len(_MIGRATIONS)
            rows = dict(conn.execute("SELECT id, finished FROM jobs").fetchall())
        assert rows[kept.id] is None
        assert rows[done.id] == pytest.approx((clock() - timedelta(days=1)).timestamp(), abs=0.01)
        assert await store.prune(finished_before=clock()) == 1
        assert await store.get(done.id) is None and await store.get(kept.id) is not None
