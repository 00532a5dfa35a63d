"""Shared fixtures: a manual clock, and stores of every backend for the conformance suite."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gouache.queue.quota import QuotaPolicy
from gouache.storage.base import Store
from gouache.storage.redis import RedisStore
from gouache.storage.sqlite import SQLiteStore


class ManualClock:
    """A clock that only moves when a test says so."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
        self._start = self.now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def monotonic(self) -> float:
        """The same clock in seconds, as `time.monotonic` counts them (for spacing and budgets)."""
        return (self.now - self._start).total_seconds()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


StoreFactory = Callable[..., Awaitable[Store]]

STORE_BACKENDS = ["sqlite", "redis"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis_server(workdir: Path, *args: str) -> subprocess.Popen[str]:
    """A redis-server of the tests' own (``args`` as on its command line), once it accepts connections."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "redis-server not found: install Redis (apt-get install redis-server) "
            "or set REDIS_URL to a Redis the tests may write to"
        )
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", *args],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # the server says when it is ready (or why it stopped)
        if "Ready to accept connections" in line:
            # Keep reading its log so a full pipe never blocks the server.
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc
    pytest.fail(f"redis-server {' '.join(args)} exited with {proc.wait()}")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis: $REDIS_URL if set, else a throwaway redis-server on a free port."""
    if url := os.environ.get("REDIS_URL"):
        yield url
        return
    port = _free_port()
    proc = start_redis_server(
        tmp_path_factory.mktemp("redis"),
        *("--port", str(port), "--save", "", "--appendonly", "no"),
    )
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


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
    if request.param == "redis":  # leave nothing in a shared Redis
        await RedisStore(request.getfixturevalue("redis_url"), prefix=prefix).drop()


@pytest.fixture
async def store(make_store: StoreFactory) -> Store:
    return await make_store()
