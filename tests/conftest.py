"""Shared fixtures: a manual clock, and stores of every backend for the conformance suite."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

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

STORE_BACKENDS = ["sqlite", "redis"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis: $REDIS_URL if set, else a throwaway redis-server on a free port."""
    if url := os.environ.get("REDIS_URL"):
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "redis-server not found: install Redis (apt-get install redis-server) "
            "or set REDIS_URL to a Redis the tests may write to"
        )
    port = _free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        # PING retries until the server accepts connections (bounded by the retry count).
        for _ in range(500):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None:
                    pytest.fail(f"redis-server exited with {proc.returncode}")
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.01)
        else:
            pytest.fail("redis-server did not start accepting connections")
        yield url
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


def _drop_prefix(url: str, prefix: str) -> None:
    """Delete every key of one test's deployment (when tests share an external Redis)."""
    with redis.Redis.from_url(url) as client:
        keys = list(client.scan_iter(match="{" + prefix + "}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])


@pytest.fixture(params=STORE_BACKENDS)
async def make_store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> AsyncIterator[StoreFactory]:
    """Open (and reopen, for restart tests) a store of one backend over the same data."""
    opened: list[Store] = []
    # One deployment per test (reopened stores share it): tests never see each other's keys.
    prefix = f"test-{uuid.uuid4().hex[:12]}"

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
        elif request.param == "redis":
            from gouache.storage.redis import RedisStore

            store = RedisStore(
                request.getfixturevalue("redis_url"),
                prefix=prefix,
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
    if request.param == "redis" and opened:
        await opened[0].drop()  # type: ignore[attr-defined]  # leave nothing in a shared Redis
    if request.param == "redis":
        _drop_prefix(request.getfixturevalue("redis_url"), prefix)


@pytest.fixture
async def store(make_store: StoreFactory) -> Store:
    return await make_store()
