"""SQLite-specific behaviour: group commit and the on-disk schema."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from gouache.errors import IllegalTransition
from gouache.jobs import Job, JobState
from gouache.storage.sqlite import _MIGRATIONS, SQLiteStore

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
