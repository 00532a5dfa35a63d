"""Pool selection, slot accounting and owner controls."""

from __future__ import annotations

import pytest

from gouache.errors import WorkerUnavailable
from gouache.jobs import Action, Job
from gouache.pool.base import Signal, WorkerState
from gouache.pool.pool import Pool
from gouache_sandbox.instant import InstantWorker


async def _sink(job: Job, signal: Signal) -> None:
    del job, signal


async def started(*workers: InstantWorker) -> Pool:
    pool = Pool(workers)
    await pool.start()
    for w in workers:
        w.behaviour.hang_next = 1000
    return pool


async def test_least_loaded_worker_is_chosen() -> None:
    a, b = InstantWorker("a", capacity=4), InstantWorker("b", capacity=2)
    pool = await started(a, b)
    placed = [(await pool.submit(Job(user_id=1, prompt="x"), _sink)).name for _ in range(6)]
    assert placed.count("a") == 4 and placed.count("b") == 2
    assert pool.free_slots() == 0
    with pytest.raises(WorkerUnavailable):
        await pool.submit(Job(user_id=1, prompt="x"), _sink)
    await pool.aclose()


async def test_follow_up_goes_to_the_parent_worker_only() -> None:
    a, b = InstantWorker("a", capacity=1), InstantWorker("b", capacity=5)
    pool = await started(a, b)
    follow = Job(
        user_id=1, prompt="x", action=Action.UPSCALE, index=2, meta={"parent": {"worker": "a"}}
    )
    assert pool.select(follow) is a
    await pool.submit(Job(user_id=1, prompt="x", meta={}), _sink)  # least loaded: a (0/1) vs b
    busy_follow = Job(
        user_id=1, prompt="x", action=Action.UPSCALE, meta={"parent": {"worker": "a"}}
    )
    if pool.free_slots_of(a) == 0:
        assert pool.select(busy_follow) is None
        assert pool.could_ever_serve(busy_follow)
    pool.disable("a")
    assert not pool.could_ever_serve(busy_follow)
    await pool.aclose()


async def test_disable_drain_enable_and_snapshot() -> None:
    a, b = InstantWorker("a", capacity=2), InstantWorker("b", capacity=2)
    pool = await started(a, b)
    job = Job(user_id=1, prompt="x")
    pool.drain("a")
    assert (await pool.submit(job, _sink)).name == "b"
    pool.disable("b", reason="owner said so")
    assert pool.free_slots() == 0
    rows = {r.name: r for r in pool.snapshot()}
    assert rows["a"].state is WorkerState.DRAINING
    assert rows["b"].state is WorkerState.DISABLED and rows["b"].reason == "owner said so"
    assert rows["b"].in_flight == 1
    pool.enable("a")
    pool.enable("b")
    assert pool.free_slots() == 3
    pool.release(job.id, succeeded=True)
    assert pool.free_slots() == 4
    assert {r.name: r.done_today for r in pool.snapshot()}["b"] == 1
    with pytest.raises(KeyError):
        pool.disable("nope")
    await pool.aclose()


async def test_unhealthy_workers_get_nothing_and_wake_on_recovery() -> None:
    a = InstantWorker("a", capacity=2)
    pool = await started(a)
    a.set_state(WorkerState.QUARANTINED)
    assert pool.free_slots() == 0 and pool.select(Job(user_id=1, prompt="x")) is None
    pool.slot_freed.clear()
    a.set_state(WorkerState.READY)
    assert pool.slot_freed.is_set()
    await pool.aclose()


async def test_failed_submit_releases_the_slot() -> None:
    a = InstantWorker("a", capacity=1)
    pool = await started(a)
    a.behaviour.refuse_submit_next = 1
    with pytest.raises(ConnectionError):
        await pool.submit(Job(user_id=1, prompt="x"), _sink)
    assert pool.free_slots() == 1 and pool.in_flight() == 0
    await pool.aclose()


async def test_a_retried_job_avoids_the_worker_that_failed_it_while_another_can_serve() -> None:
    a, b = InstantWorker("a", capacity=4), InstantWorker("b", capacity=1)
    pool = await started(a, b)
    retried = Job(user_id=1, prompt="x", meta={"avoid": ["a"]})
    assert pool.select(Job(user_id=2, prompt="y")) is a  # both idle: the first by name
    assert pool.select(retried) is b
    # With "b" disabled, "a" is the only worker left: the retry may go back to it.
    pool.disable("b", reason="maintenance")
    assert pool.select(retried) is a
    await pool.aclose()


async def test_equally_loaded_workers_take_turns() -> None:
    a, b = InstantWorker("a", capacity=2), InstantWorker("b", capacity=2)
    pool = await started(a, b)
    placed = []
    for _ in range(4):
        job = Job(user_id=1, prompt="x")
        placed.append((await pool.submit(job, _sink)).name)
        pool.release(job.id, succeeded=True)  # each finishes before the next arrives
    assert placed == ["a", "b", "a", "b"]
    await pool.aclose()
