"""Each worker runs in exactly one process: the one holding its lease in the shared store.

With many gouache processes on one Redis, every process builds the same pool
from the same config, but a Midjourney account must have one gateway
connection and a ComfyUI server one accounting of its slots. `WorkerLeases`
starts only the workers this process holds a lease on, renews them, and takes
over a worker whose holder stopped renewing (it died). A worker whose lease is
lost (this process stalled past the TTL and another took over) is stopped here
at once; it stays with its new holder. A worker switched off in this
process's config is never taken here, so each process's config can name the
workers it should run.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from gouache.pool.base import WorkerState
from gouache.pool.pool import Pool
from gouache.storage.base import Store

__all__ = ["WorkerLeases"]

log = structlog.get_logger(__name__)


class WorkerLeases:
    """Acquire, renew and release the leases of a pool's workers."""

    def __init__(self, store: Store, pool: Pool, owner: str, *, ttl_s: float = 30.0) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        self.store = store
        self.pool = pool
        self.owner = owner
        self.ttl_s = ttl_s
        self.held: set[str] = set()
        self.lost: set[str] = set()  # stopped here for good (another process holds them)
        self.rounds = 0
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Take what is free now, then keep renewing and watching for orphans."""
        self.pool.shared = True
        for worker in self.pool.workers:
            self.pool.set_elsewhere(worker.name, True)
        await self.round()
        self._task = asyncio.create_task(self._loop(), name="worker-leases")

    async def round(self) -> None:
        """One pass: renew what we hold, try to take what nobody holds."""
        for worker in self.pool.workers:
            name = worker.name
            if name in self.lost:
                continue
            if name in self.held:
                if not await self.store.renew_worker(name, self.owner, self.ttl_s):
                    await self._lose(name)
                continue
            if worker.state is WorkerState.DISABLED:
                continue  # switched off in this process's config: another process may run it
            if await self.store.acquire_worker(name, self.owner, self.ttl_s):
                self.held.add(name)
                try:
                    await worker.start()
                except Exception as exc:
                    log.error("worker.start_failed", worker=name, error=str(exc))
                self.pool.set_elsewhere(name, False)
                log.info("worker.lease_acquired", worker=name, owner=self.owner)
        async with self._changed:
            self.rounds += 1
            self._changed.notify_all()

    async def _lose(self, name: str) -> None:
        self.held.discard(name)
        self.lost.add(name)
        self.pool.set_elsewhere(name, True)
        holder = await self.store.worker_owner(name)
        log.warning("worker.lease_lost", worker=name, owner=self.owner, now_held_by=holder)
        with contextlib.suppress(Exception):
            await self.pool.get(name).aclose()

    async def running_anywhere(self, name: str) -> bool:
        """Whether some process (this one included) holds the lease of worker ``name`` now."""
        if name in self.held:
            return True
        return await self.store.worker_owner(name) is not None

    async def wait_rounds(self, count: int, timeout: float) -> None:
        """Wait until ``count`` rounds have run in all (tests; TimeoutError after ``timeout``)."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.rounds >= count)

    async def _loop(self) -> None:
        interval = self.ttl_s / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self.round()
            except Exception as exc:  # the store may be briefly unreachable; the next round retries
                log.error("worker.lease_round_failed", error=str(exc))

    async def aclose(self, *, release: bool = True) -> None:
        """Stop renewing; with ``release`` give the leases back so others take over at once."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if release:
            for name in sorted(self.held):
                with contextlib.suppress(Exception):
                    await self.store.release_worker(name, self.owner)
        self.held.clear()
