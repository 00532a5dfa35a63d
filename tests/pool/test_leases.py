"""Worker leases: with many processes on one store, each worker runs in exactly one of them."""

from __future__ import annotations

from gouache.pool.base import WorkerState
from gouache.pool.leases import WorkerLeases
from gouache.pool.pool import Pool
from gouache_sandbox.instant import InstantWorker
from tests.conftest import ManualClock, StoreFactory


def process(store: object, owner: str) -> tuple[Pool, WorkerLeases]:
    """One process's view: the same workers from the same config, its own owner id."""
    pool = Pool([InstantWorker("mj-1", capacity=3), InstantWorker("comfy-1", capacity=1)])
    return pool, WorkerLeases(store, pool, owner, ttl_s=30)  # type: ignore[arg-type]


async def test_each_worker_runs_in_one_process_and_moves_when_its_holder_dies(
    make_store: StoreFactory, clock: ManualClock
) -> None:
    store = await make_store()
    pool_a, leases_a = process(store, "proc-a")
    pool_b, leases_b = process(store, "proc-b")
    await leases_a.start()
    await leases_b.start()
    assert leases_a.held == {"mj-1", "comfy-1"} and leases_b.held == set()
    # Only the holder connects; the other process neither places jobs there nor shows a row.
    assert all(w.state is WorkerState.READY for w in pool_a.workers)
    assert all(w.state is WorkerState.CONNECTING for w in pool_b.workers)
    assert pool_b.free_slots() == 0 and pool_b.snapshot() == []
    assert pool_a.free_slots() == 4
    # What each process's dispatcher pops for: pinned follow-ups go to the holder's process.
    assert pool_a.names_here() == {"mj-1", "comfy-1"} and pool_b.names_here() == set()
    assert Pool([InstantWorker("solo")]).names_here() is None  # one process: no filter

    # Process A dies: it stops renewing and never releases. After the TTL, B takes over.
    await leases_a.aclose(release=False)
    await leases_b.round()
    assert leases_b.held == set()  # still within A's lease
    clock.advance(31)
    await leases_b.round()
    assert leases_b.held == {"mj-1", "comfy-1"}
    assert all(w.state is WorkerState.READY for w in pool_b.workers)
    assert pool_b.free_slots() == 4
    assert await store.worker_owner("mj-1") == "proc-b"
    await leases_b.aclose()
    assert await store.worker_owner("mj-1") is None  # released on a clean stop


async def test_a_stalled_process_that_lost_its_lease_stops_the_worker(
    make_store: StoreFactory, clock: ManualClock
) -> None:
    store = await make_store()
    pool_a, leases_a = process(store, "proc-a")
    await leases_a.start()
    clock.advance(31)  # A stalls past its TTL...
    _pool_b, leases_b = process(store, "proc-b")
    await leases_b.start()  # ...and B takes everything over
    assert leases_b.held == {"mj-1", "comfy-1"}
    await leases_a.round()  # A wakes up: its renewals fail
    assert leases_a.held == set() and leases_a.lost == {"mj-1", "comfy-1"}
    assert all(w.state is WorkerState.OFFLINE for w in pool_a.workers)  # closed here
    assert pool_a.free_slots() == 0
    clock.advance(31)
    await leases_a.round()  # it does not grab them back, even once B's leases lapse
    assert leases_a.held == set()
    await leases_a.aclose()
    await leases_b.aclose()


async def test_running_anywhere_follows_the_leases_of_every_process(
    make_store: StoreFactory, clock: ManualClock
) -> None:
    store = await make_store()
    _, leases_a = process(store, "proc-a")
    pool_b = Pool([InstantWorker("comfy-1", capacity=1)])  # B's config has no mj-1
    leases_b = WorkerLeases(store, pool_b, "proc-b", ttl_s=30)  # type: ignore[arg-type]
    await leases_b.start()
    assert await leases_b.running_anywhere("comfy-1")  # B's own
    assert not await leases_b.running_anywhere("mj-1")  # nobody runs it
    await leases_a.start()  # A finds comfy-1 taken and mj-1 free
    assert await leases_b.running_anywhere("mj-1")  # A took it
    await leases_a.aclose(release=False)  # A dies
    clock.advance(31)
    assert not await leases_b.running_anywhere("mj-1")  # its lease lapsed
    await leases_b.aclose()
