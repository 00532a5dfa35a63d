"""Shared fixtures: a manual clock, and stores of every backend for the conformance suite."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gouache.queue.quota import QuotaPolicy
from gouache.storage.base import Store
from gouache.storage.sqlite import SQLiteStore


class ManualClock:
    """A clock that only moves when a test says so."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


StoreFactory = Callable[..., Awaitable[Store]]

STORE_BACKENDS = ["sqlite"]


@pytest.fixture(params=STORE_BACKENDS)
async def make_store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> AsyncIterator[StoreFactory]:
    """Open (and reopen, for restart tests) a store of one backend over the same data."""
    opened: list[Store] = []

    async def factory(tz: str = "UTC", lease_s: float = 60.0, max_attempts: int = 3) -> Store:
        policy = QuotaPolicy(tz)
        if request.param == "sqlite":
            store: Store = SQLiteStore(
                tmp_path / "gouache.db",
                policy=policy,
                clock=clock,
                lease_s=lease_s,
                max_attempts=max_attempts,
            )
        else:  # pragma: no cover - other backends register themselves here
            raise AssertionError(request.param)
        await store.start()
        opened.append(store)
        return store

    yield factory
    for store in opened:
        await store.aclose()


@pytest.fixture
async def store(make_store: StoreFactory) -> Store:
    return await make_store()
