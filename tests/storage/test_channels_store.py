"""Channel settings, preferences and the channel daily cap: the same on both stores."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gouache.channels.errors import ChannelCapReached
from gouache.channels.settings import ChannelSettings, MemberPreferences
from gouache.jobs import Job, JobState
from gouache.storage.base import Store
from gouache.storage.sqlite import _MIGRATIONS, SQLiteStore

from ..conftest import ManualClock, StoreFactory

CHANNEL = 555


def job(user: int, channel: int | None = CHANNEL) -> Job:
    return Job(user_id=user, prompt="a cat", channel_id=channel, guild_id=1)


async def test_settings_and_preferences_round_trip(store: Store) -> None:
    assert await store.get_channel_settings(CHANNEL) == ChannelSettings()  # type: ignore[attr-defined]
    settings = ChannelSettings(backend="midjourney", model="niji", daily_cap=5, loras=())
    await store.put_channel_settings(CHANNEL, settings)  # type: ignore[attr-defined]
    assert await store.get_channel_settings(CHANNEL) == settings  # type: ignore[attr-defined]
    assert await store.all_channel_settings() == {CHANNEL: settings}  # type: ignore[attr-defined]
    prefs = MemberPreferences(model="v6.1", params="--ar 3:2")
    await store.put_preferences(7, prefs)  # type: ignore[attr-defined]
    assert await store.get_preferences(7) == prefs  # type: ignore[attr-defined]
    assert await store.get_preferences(8) == MemberPreferences()  # type: ignore[attr-defined]


async def test_two_stores_on_one_deployment_see_a_change_at_once(
    make_store: StoreFactory,
) -> None:
    a, b = await make_store(), await make_store()
    await a.put_channel_settings(CHANNEL, ChannelSettings(enabled=False))  # type: ignore[attr-defined]
    assert (await b.get_channel_settings(CHANNEL)).enabled is False  # type: ignore[attr-defined]


async def test_channel_cap_is_reserved_with_the_quota_and_refused_whole(store: Store) -> None:
    await store.enqueue(job(1), daily_limit=10, channel_cap=2)
    await store.enqueue(job(2), daily_limit=10, channel_cap=2)
    with pytest.raises(ChannelCapReached) as refused:
        await store.enqueue(job(3), daily_limit=10, channel_cap=2)
    assert "2 images" in str(refused.value)
    # Nothing of the refused request was kept: no job, no quota taken.
    assert (await store.quota(3, daily_limit=10)).used == 0
    assert await store.depth() == 2
    assert await store.channel_used(CHANNEL) == 2  # type: ignore[attr-defined]
    # Another channel, and requests without a cap, are not counted.
    await store.enqueue(job(3, channel=777), daily_limit=10, channel_cap=2)
    await store.enqueue(job(3), daily_limit=10)
    assert await store.channel_used(CHANNEL) == 2  # type: ignore[attr-defined]


async def test_a_cancelled_or_failed_job_gives_its_channel_cap_back(store: Store) -> None:
    first = (await store.enqueue(job(1), daily_limit=10, channel_cap=2)).job
    second = (await store.enqueue(job(2), daily_limit=10, channel_cap=2)).job
    await store.cancel(first.id)
    assert await store.channel_used(CHANNEL) == 1  # type: ignore[attr-defined]
    (popped,) = await store.pop(1, owner="w")
    assert popped.id == second.id
    await store.transition(second.id, JobState.FAILED, owner="w", error_code="worker_error")
    assert await store.channel_used(CHANNEL) == 0  # type: ignore[attr-defined]
    # Refunded once only: cancelling a finished job again changes nothing.
    await store.cancel(second.id)
    third = (await store.enqueue(job(3), daily_limit=10, channel_cap=2)).job
    assert await store.channel_used(CHANNEL) == 1  # type: ignore[attr-defined]
    (popped,) = await store.pop(1, owner="w")
    for state in (JobState.RUNNING, JobState.GENERATED, JobState.STORING, JobState.SUCCEEDED):
        await store.transition(third.id, state, owner="w")
    assert await store.channel_used(CHANNEL) == 1  # type: ignore[attr-defined]  # kept


async def test_an_expired_lease_that_fails_gives_the_cap_back(
    make_store: StoreFactory, clock: ManualClock
) -> None:
    store = await make_store(lease_s=10, max_attempts=1)
    await store.enqueue(job(1), daily_limit=10, channel_cap=1)
    await store.pop(1, owner="w")
    clock.advance(11)
    (failed,) = await store.recover_expired(max_attempts=1)
    assert failed.state is JobState.FAILED
    assert await store.channel_used(CHANNEL) == 0  # type: ignore[attr-defined]
    assert (await store.quota(1, daily_limit=10)).used == 0


async def test_sqlite_schema_4_migrates_a_schema_3_database(
    tmp_path: Path, clock: ManualClock
) -> None:
    path = tmp_path / "g.db"
    async with SQLiteStore(path, clock=clock) as store:
        kept = (await store.enqueue(Job(user_id=2, prompt="queued"), daily_limit=10)).job
    with sqlite3.connect(path) as conn:  # back to schema 3, as an older gouache left it
        for table in ("channel_settings", "member_prefs", "channel_usage"):
            conn.execute(f"DROP TABLE {table}")
        conn.execute("ALTER TABLE jobs DROP COLUMN chcap")
        conn.execute("PRAGMA user_version = 3")
    async with SQLiteStore(path, clock=clock) as store:
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == len(_MIGRATIONS) == 4
        assert await store.get(kept.id) is not None
        await store.put_channel_settings(CHANNEL, ChannelSettings(daily_cap=3))
        assert (await store.get_channel_settings(CHANNEL)).daily_cap == 3


async def test_a_database_that_cannot_be_migrated_is_closed_again(
    tmp_path: Path, clock: ManualClock
) -> None:
    """Its connection threads would otherwise keep the process from exiting."""
    import threading

    path = tmp_path / "g.db"
    with sqlite3.connect(path) as conn:  # a table migration 4 creates, in a schema-3 database
        conn.execute("CREATE TABLE channel_settings (x INTEGER)")

    def sqlite_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if "_connection_worker_thread" in t.name]

    before = set(sqlite_threads())
    store = SQLiteStore(path, clock=clock)
    with pytest.raises(sqlite3.OperationalError, match="already exists"):
        await store.start()
    for thread in set(sqlite_threads()) - before:
        thread.join(timeout=5)  # closed connections end their thread soon after
        assert not thread.is_alive()
