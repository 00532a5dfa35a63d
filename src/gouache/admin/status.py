"""Worker rows for `gouache pool status`, and their publication for every process to see.

A row is a JSON-able dict: the `WorkerSnapshot` fields (state as its string
value) plus ``process`` (the dispatcher owner running it) and gateway figures
read from the worker when it has them (``reconnects``, ``heartbeat_ms``).

With a shared store, each process runs a `StatusPublisher`: it writes its
rows with a TTL every few seconds and at once when a worker changes state, so
any process's admin API can show the whole pool, and a dead process's rows
disappear on their own. `merge_rows` picks one row per worker name.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import Any

import structlog

from gouache.pool.base import Worker, WorkerSnapshot, WorkerState
from gouache.pool.pool import Pool
from gouache.storage.base import Store

log = structlog.get_logger(__name__)

# Which row wins when several processes report the same worker: the one that
# is actually running it, before one that only knows about it.
_RANK = {
    WorkerState.READY: 0,
    WorkerState.BUSY: 0,
    WorkerState.DRAINING: 0,
    WorkerState.QUARANTINED: 1,
    WorkerState.DISABLED: 1,
    WorkerState.CONNECTING: 2,
    WorkerState.OFFLINE: 3,
}


def _number(obj: object, *paths: str) -> float | None:
    """The first numeric attribute found along dotted ``paths`` (workers differ; read defensively)."""
    for path in paths:
        value: Any = obj
        for part in path.split("."):
            value = getattr(value, part, None)
            if value is None:
                break
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def gateway_figures(worker: Worker) -> dict[str, float | None]:
    """Reconnect count and heartbeat round trip of a gateway-backed worker (None if it has none).

    A Midjourney worker keeps its `GatewayClient` in ``_gateway`` (counters in
    ``.counters``, heartbeat round trip in ``.latency_ms``); other shapes are
    read too so that a worker exposing ``reconnects`` itself is counted.
    """
    reconnects = _number(
        worker,
        "reconnects",
        "gateway.counters.reconnects",
        "_gateway.counters.reconnects",
        "gateway.reconnects",
    )
    heartbeat_ms = _number(
        worker, "heartbeat_ms", "gateway.latency_ms", "_gateway.latency_ms", "gateway.heartbeat_ms"
    )
    if heartbeat_ms is None:
        seconds = _number(worker, "gateway.latency")  # discord.py style: seconds
        heartbeat_ms = None if seconds is None else seconds * 1000
    return {"reconnects": reconnects, "heartbeat_ms": heartbeat_ms}


def worker_row(
    snapshot: WorkerSnapshot, *, process: str, worker: Worker | None = None
) -> dict[str, Any]:
    """One JSON-able row for ``snapshot``."""
    row = dataclasses.asdict(snapshot)
    row["state"] = snapshot.state.value
    row["process"] = process
    row.update(
        gateway_figures(worker)
        if worker is not None
        else {"reconnects": None, "heartbeat_ms": None}
    )
    if row["latency_ms"] is None:
        row["latency_ms"] = row["heartbeat_ms"]
    return row


def local_rows(pool: Pool, process: str) -> list[dict[str, Any]]:
    """This process's rows, with the pool's overrides (disabled, draining, busy) applied."""
    rows = []
    for snap in pool.snapshot():
        try:
            worker: Worker | None = pool.get(snap.name)
        except KeyError:
            worker = None
        rows.append(worker_row(snap, process=process, worker=worker))
    return rows


def merge_rows(local: list[dict[str, Any]], remote: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per worker name, by name: a running row beats an idle one, ties go to ``local``."""
    best: dict[str, tuple[int, int, dict[str, Any]]] = {}
    for origin, rows in ((0, local), (1, remote)):
        for row in rows:
            try:
                rank = _RANK[WorkerState(str(row.get("state")))]
            except ValueError:
                rank = len(_RANK)
            key = (rank, origin)
            name = str(row.get("name"))
            if name not in best or key < best[name][:2]:
                best[name] = (rank, origin, row)
    return [best[name][2] for name in sorted(best)]


class StatusPublisher:
    """Publishes this process's worker rows to the store, periodically and on every state change."""

    def __init__(  # noqa: PLR0913
        self,
        store: Store,
        pool: Pool,
        process: str,
        *,
        interval_s: float = 5.0,
        ttl_s: float | None = None,
        min_gap_s: float = 0.25,
    ) -> None:
        self.store = store
        self.pool = pool
        self.process = process
        self.interval_s = interval_s
        self.ttl_s = ttl_s if ttl_s is not None else 3 * interval_s
        self.min_gap_s = min_gap_s
        self.published = 0
        self._publishes = asyncio.Condition()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listening = False

    async def start(self) -> None:
        """Publish now, then keep publishing until `aclose`."""
        if not self._listening:
            # Workers cannot drop listeners; after aclose the callback is a no-op.
            for worker in self.pool.workers:
                worker.add_listener(self._on_change)
            self._listening = True
        await self.publish()
        self._task = asyncio.create_task(self._loop(), name="status-publisher")

    def _on_change(self) -> None:
        if self._task is not None:
            self._changed.set()

    async def publish(self) -> None:
        """Write the current rows once."""
        await self.store.publish_workers(
            self.process, local_rows(self.pool, self.process), self.ttl_s
        )
        async with self._publishes:
            self.published += 1
            self._publishes.notify_all()

    async def wait_published(self, count: int, timeout: float) -> None:
        """Wait until ``count`` publications have been made in all (TimeoutError after ``timeout``)."""
        async with asyncio.timeout(timeout), self._publishes:
            await self._publishes.wait_for(lambda: self.published >= count)

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):
                    await self._changed.wait()
            self._changed.clear()
            try:
                await self.publish()
            except Exception as exc:  # the store is down: say so, try again next round
                log.warning("status.publish_failed", process=self.process, error=str(exc))
            # Pacing, not waiting for a condition: a flapping worker costs at most
            # a few writes a second; the change that arrives meanwhile is kept.
            await asyncio.sleep(self.min_gap_s)

    async def aclose(self) -> None:
        """Stop publishing and withdraw this process's rows."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            await self.store.publish_workers(self.process, [], self.ttl_s)
        except Exception as exc:  # they expire by themselves anyway
            log.warning("status.withdraw_failed", process=self.process, error=str(exc))
