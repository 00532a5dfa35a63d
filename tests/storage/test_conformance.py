"""The behaviour every `Store` must share (runs once per backend)."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime, timedelta

import pytest

from gouache.errors import (
    IllegalTransition,
    JobNotFound,
    LeaseLost,
    QueueLimitExceeded,
    QuotaExceeded,
)
from gouache.jobs import Action, ErrorCode, Job, JobState
from gouache.queue.fair import Entry, FairQueue
from gouache.storage.base import Store, UserRecord

from ..conftest import ManualClock, StoreFactory


def job(user: int, prompt: str = "a cat", **kw: object) -> Job:
    return Job(user_id=user, prompt=prompt, **kw)  # type: ignore[arg-type]


async def finish(store: Store, job_id: str, owner: str = "w") -> Job:
    for state in (JobState.RUNNING, JobState.GENERATED, JobState.STORING, JobState.SUCCEEDED):
        j = await store.transition(job_id, state, owner=owner)
    return j


async def test_enqueue_pop_complete_round_trip(store: Store) -> None:
    res = await store.enqueue(job(1), daily_limit=100)
    assert res.position == 0
    assert res.quota.used == 1 and res.quota.remaining == 99
    assert (await store.get(res.job.id)).state is JobState.QUEUED  # type: ignore[union-attr]
    (popped,) = await store.pop(5, owner="w")
    assert popped.id == res.job.id
    assert popped.state is JobState.SUBMITTED and popped.attempts == 1
    done = await finish(store, popped.id)
    assert done.state is JobState.SUCCEEDED and done.finished_at is not None
    assert (await store.quota(1, daily_limit=100)).used == 1
    assert await store.depth() == 0


async def test_pop_follows_the_fair_scheduler(store: Store) -> None:
    reference = FairQueue()
    for i in range(30):
        await store.enqueue(job(1, f"heavy {i}"), daily_limit=100)
        reference.push(f"h{i}", 1)
    assert [j.user_id for j in await store.pop(2, owner="w")] == [e.user for e in reference.pop(2)]
    light = [await store.enqueue(job(2, f"light {i}"), daily_limit=100) for i in range(3)]
    for i in range(3):
        reference.push(f"l{i}", 2)
    for i in range(6):
        await store.enqueue(job(3, f"vip {i}", weight=3.0), daily_limit=100)
        reference.push(f"v{i}", 3, weight=3.0)
    assert light[0].position == 0  # a light user behind a heavy backlog is next
    users = [j.user_id for j in await store.pop(12, owner="w")]
    assert users == [e.user for e in reference.pop(12)]
    # VIP jobs (weight 3) are due at +1/3, +2/3, +1 of a job; the light user at +1
    assert users[:2] == [3, 3]
    assert 2 in users[2:4]
    assert users.count(3) > users.count(2)


async def test_positions_match_pop_order(store: Store) -> None:
    ids = []
    for i in range(20):
        r = await store.enqueue(job(i % 4, weight=1.0 + (i % 2)), daily_limit=100)
        ids.append(r.job.id)
    positions = {i: await store.position(i) for i in ids}
    order = [j.id for j in await store.pop(20, owner="w")]
    assert all(order.index(i) == p for i, p in positions.items())
    assert await store.position(ids[0]) is None


async def test_quota_refused_changes_nothing(store: Store) -> None:
    for _ in range(3):
        await store.enqueue(job(7), daily_limit=3)
    with pytest.raises(QuotaExceeded) as err:
        await store.enqueue(job(7), daily_limit=3)
    assert err.value.remaining == 0
    assert err.value.resets_at == datetime(2026, 6, 2, tzinfo=UTC)
    assert await store.depth(7) == 3
    assert len(await store.list_jobs(user_id=7)) == 3


async def test_failure_and_cancel_refund_success_commits(store: Store) -> None:
    a, _b, _c = [(await store.enqueue(job(1), daily_limit=3)).job for _ in range(3)]
    await store.cancel(a.id)
    assert (await store.quota(1, daily_limit=3)).used == 2
    popped = await store.pop(2, owner="w")
    await store.transition(
        popped[0].id, JobState.FAILED, error_code="worker_error", error_message="x"
    )
    await finish(store, popped[1].id)
    q = await store.quota(1, daily_limit=3)
    assert q.used == 1 and q.remaining == 2
    # the refunded slots can be spent again
    await store.enqueue(job(1), daily_limit=3)
    await store.enqueue(job(1), daily_limit=3)
    with pytest.raises(QuotaExceeded):
        await store.enqueue(job(1), daily_limit=3)


async def test_quota_resets_at_local_midnight(make_store: StoreFactory, clock: ManualClock) -> None:
    store = await make_store(tz="Asia/Shanghai")
    clock.now = datetime(2026, 6, 1, 15, 58, tzinfo=UTC)  # 23:58 in Shanghai
    await store.enqueue(job(1), daily_limit=1)
    with pytest.raises(QuotaExceeded):
        await store.enqueue(job(1), daily_limit=1)
    clock.advance(120)  # 00:00 local
    res = await store.enqueue(job(1), daily_limit=1)
    assert res.quota.day == "2026-06-02" and res.quota.remaining == 0


async def test_refund_goes_to_the_day_it_was_reserved_on(store: Store, clock: ManualClock) -> None:
    clock.now = datetime(2026, 6, 1, 23, 59, tzinfo=UTC)
    old = (await store.enqueue(job(1), daily_limit=1)).job
    clock.advance(120)
    await store.enqueue(job(1), daily_limit=1)
    await store.cancel(old.id)
    assert (await store.quota(1, daily_limit=1)).used == 1


async def test_queue_limit_per_user(store: Store) -> None:
    for _ in range(2):
        await store.enqueue(job(1), daily_limit=100, max_queued=2)
    with pytest.raises(QueueLimitExceeded):
        await store.enqueue(job(1), daily_limit=100, max_queued=2)
    await store.enqueue(job(2), daily_limit=100, max_queued=2)
    await store.pop(1, owner="w")
    await store.enqueue(job(1), daily_limit=100, max_queued=2)
    assert (await store.quota(1, daily_limit=100)).used == 3


async def test_cancel_queued_job_removes_it_and_moves_others_up(store: Store) -> None:
    ids = [(await store.enqueue(job(1 + i % 2), daily_limit=100)).job.id for i in range(6)]
    canceled = await store.cancel(ids[0], reason="by user")
    assert canceled.state is JobState.CANCELED
    assert canceled.error_code == ErrorCode.CANCELED
    assert await store.position(ids[0]) is None
    assert await store.depth() == 5
    again = await store.cancel(ids[0])
    assert again.state is JobState.CANCELED
    positions = {i: await store.position(i) for i in ids[1:]}
    order = [j.id for j in await store.pop(10, owner="w")]
    assert ids[0] not in order
    assert all(order.index(i) == p for i, p in positions.items())


async def test_cancel_running_job_and_unknown_job(store: Store) -> None:
    j = (await store.enqueue(job(1), daily_limit=100)).job
    await store.pop(1, owner="w")
    await store.transition(j.id, JobState.RUNNING, owner="w", progress=40)
    out = await store.cancel(j.id)
    assert out.state is JobState.CANCELED and out.progress == 40
    with pytest.raises(JobNotFound):
        await store.cancel("nope")
    with pytest.raises(JobNotFound):
        await store.transition("nope", JobState.FAILED)
    assert await store.get("nope") is None


async def test_illegal_transition_raises_and_changes_nothing(store: Store) -> None:
    j = (await store.enqueue(job(1), daily_limit=100)).job
    with pytest.raises(IllegalTransition):
        await store.transition(j.id, JobState.SUCCEEDED)
    assert (await store.get(j.id)).state is JobState.QUEUED  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="not changeable"):
        await store.update(j.id, user_id=5)


async def test_lease_owner_is_checked(store: Store) -> None:
    j = (await store.enqueue(job(1), daily_limit=100)).job
    await store.pop(1, owner="proc-a")
    with pytest.raises(LeaseLost):
        await store.transition(j.id, JobState.RUNNING, owner="proc-b")
    await store.transition(j.id, JobState.RUNNING, owner="proc-a", worker="mj-1", external_id="abc")
    got = await store.get(j.id)
    assert got is not None and got.worker == "mj-1" and got.external_id == "abc"


async def test_expired_lease_returns_job_to_front_of_its_users_queue(
    store: Store, clock: ManualClock
) -> None:
    first = (await store.enqueue(job(1, "first"), daily_limit=100)).job
    second = (await store.enqueue(job(1, "second"), daily_limit=100)).job
    await store.enqueue(job(2, "other"), daily_limit=100)
    (popped,) = await store.pop(1, owner="dead", lease_s=30)
    assert popped.id == first.id
    clock.advance(10)
    assert await store.recover_expired() == []
    clock.advance(25)
    (recovered,) = await store.recover_expired()
    assert recovered.id == first.id and recovered.state is JobState.QUEUED
    assert await store.position(first.id) == 0
    assert await store.position(second.id) is not None
    assert (await store.pop(1, owner="alive"))[0].id == first.id
    with pytest.raises(LeaseLost):
        await store.transition(first.id, JobState.RUNNING, owner="dead")


async def test_renew_keeps_the_lease(store: Store, clock: ManualClock) -> None:
    j = (await store.enqueue(job(1), daily_limit=100)).job
    await store.pop(1, owner="w", lease_s=30)
    for _ in range(5):
        clock.advance(20)
        assert await store.renew([j.id, "unknown"], owner="w", lease_s=30) == [j.id]
    assert await store.recover_expired() == []
    assert await store.renew([j.id], owner="intruder", lease_s=30) == []


async def test_attempts_exhausted_fails_and_refunds(
    make_store: StoreFactory, clock: ManualClock
) -> None:
    store = await make_store(max_attempts=2)
    j = (await store.enqueue(job(1), daily_limit=100)).job
    for attempt in (1, 2):
        (popped,) = await store.pop(1, owner="w", lease_s=5)
        assert popped.attempts == attempt
        clock.advance(6)
        (recovered,) = await store.recover_expired()
    assert recovered.state is JobState.FAILED
    assert recovered.error_code == ErrorCode.ATTEMPTS_EXHAUSTED
    assert (await store.quota(1, daily_limit=100)).used == 0
    assert await store.depth() == 0
    assert (await store.get(j.id)).state is JobState.FAILED  # type: ignore[union-attr]


async def test_requeue_transition_puts_job_back(store: Store) -> None:
    a = (await store.enqueue(job(1, "a"), daily_limit=100)).job
    await store.enqueue(job(1, "b"), daily_limit=100)
    await store.pop(1, owner="w")
    back = await store.transition(a.id, JobState.QUEUED, owner="w")
    assert back.state is JobState.QUEUED and back.worker is None
    assert await store.position(a.id) == 0
    assert (await store.quota(1, daily_limit=100)).used == 2


async def test_a_job_back_in_the_queue_starts_its_next_attempt_clean(
    store: Store, clock: ManualClock
) -> None:
    """Requeued or recovered: no worker, progress or preview of the attempt before."""
    last_attempt = {"worker": "mj-1", "progress": 60, "preview_url": "https://cdn/p.png"}
    a = (await store.enqueue(job(1, "a"), daily_limit=100)).job
    b = (await store.enqueue(job(2, "b"), daily_limit=100)).job
    await store.pop(2, owner="w", lease_s=30)
    for j in (a, b):
        await store.transition(j.id, JobState.RUNNING, owner="w", **last_attempt)
    requeued = await store.transition(a.id, JobState.QUEUED, owner="w")
    clock.advance(31)
    (recovered,) = await store.recover_expired()
    assert recovered.id == b.id
    for back in (requeued, recovered, await store.get(a.id), await store.get(b.id)):
        assert back is not None and back.state is JobState.QUEUED
        assert (back.worker, back.progress, back.preview_url) == (None, 0, None)


async def test_restart_keeps_queue_positions_and_recovers(
    make_store: StoreFactory, clock: ManualClock
) -> None:
    store = await make_store()
    ids = [
        (await store.enqueue(job(i % 3, weight=1.0 + i % 2), daily_limit=100)).job.id
        for i in range(15)
    ]
    await store.pop(4, owner="old-process", lease_s=10)
    positions = {i: await store.position(i) for i in ids}
    await store.aclose()
    clock.advance(11)
    reopened = await make_store()
    # every queued job keeps its order; the 4 recovered jobs go first (front of their users' queues)
    for i, p in positions.items():
        if p is not None:
            assert await reopened.position(i) == p + 4
    assert await reopened.depth() == 15  # 11 still queued + 4 recovered from the dead lease
    # a newcomer after restart is still served within one round (virtual time survived):
    # behind the 4 recovered jobs and at most floor(w/1) + 1 jobs of each of the 3 users.
    late = (await reopened.enqueue(job(99), daily_limit=100)).job
    assert (await reopened.position(late.id) or 0) <= 4 + 3 * 3


async def test_list_jobs_and_counts(store: Store) -> None:
    for i in range(5):
        await store.enqueue(job(1, f"p{i}"), daily_limit=100)
    await store.enqueue(job(2), daily_limit=100)
    mine = await store.list_jobs(user_id=1, limit=3)
    assert [j.prompt for j in mine] == ["p4", "p3", "p2"]
    await store.pop(2, owner="w")
    counts = await store.count_by_state()
    assert counts[JobState.QUEUED] == 4 and counts[JobState.SUBMITTED] == 2
    queued = await store.list_jobs(states=[JobState.QUEUED])
    assert len(queued) == 4


async def test_update_persists_fields(store: Store) -> None:
    j = (await store.enqueue(job(1), daily_limit=100)).job
    await store.update(j.id, message_id=123, interaction_token="tok", meta={"k": 1})
    got = await store.get(j.id)
    assert got is not None and got.message_id == 123 and got.meta == {"k": 1}


async def test_user_records(store: Store) -> None:
    assert await store.get_user(5) == UserRecord(user_id=5)
    rec = UserRecord(
        user_id=5,
        tier="vip",
        daily_limit=300,
        banned_until=datetime(2026, 7, 1, tzinfo=UTC),
        ban_reason="spam",
        strikes=2,
        blocked_until=datetime(2026, 6, 1, 13, 30, tzinfo=UTC),
        block_level=2,
    )
    await store.put_user(rec)
    assert await store.get_user(5) == rec
    assert (await store.get_user(5)).banned(datetime(2026, 6, 1, 13, tzinfo=UTC))
    cleared = UserRecord(user_id=5, blocked_until=datetime(2026, 6, 1, 13, 30, tzinfo=UTC))
    await store.put_user(cleared)
    got = await store.get_user(5)
    assert got == cleared and got.banned_until is None and got.block_level == 0
    assert got.banned(datetime(2026, 6, 1, 13, tzinfo=UTC))
    assert not got.banned(datetime(2026, 6, 1, 13, 31, tzinfo=UTC))


async def test_worker_leases(store: Store, clock: ManualClock) -> None:
    assert await store.acquire_worker("mj-1", "proc-a", ttl_s=30)
    assert await store.acquire_worker("mj-1", "proc-a", ttl_s=30)
    assert not await store.acquire_worker("mj-1", "proc-b", ttl_s=30)
    assert await store.worker_owner("mj-1") == "proc-a"
    clock.advance(20)
    assert await store.renew_worker("mj-1", "proc-a", ttl_s=30)
    assert not await store.renew_worker("mj-1", "proc-b", ttl_s=30)
    clock.advance(31)  # proc-a died
    assert await store.worker_owner("mj-1") is None
    assert not await store.renew_worker("mj-1", "proc-a", ttl_s=30)
    assert await store.acquire_worker("mj-1", "proc-b", ttl_s=30)
    assert not await store.release_worker("mj-1", "proc-a")
    assert await store.release_worker("mj-1", "proc-b")
    assert await store.worker_owner("mj-1") is None


async def test_wait_for_work_wakes_on_enqueue(store: Store) -> None:
    assert not await store.wait_for_work(0.05)
    waiter = asyncio.create_task(store.wait_for_work(10))
    await asyncio.sleep(0)
    assert not waiter.done()
    await store.enqueue(job(1), daily_limit=100)
    assert await asyncio.wait_for(waiter, 5)
    assert await store.wait_for_work(0)


async def test_a_wake_with_nothing_queued_does_not_end_the_wait_early(store: Store) -> None:
    """False means the timeout passed: a wake-up whose job is gone keeps the waiter waiting."""
    loop = asyncio.get_running_loop()
    timeout = 0.5
    started = loop.time()
    waiter = asyncio.create_task(store.wait_for_work(timeout))
    await asyncio.sleep(0)
    assert not waiter.done()
    # The enqueue wakes the waiter, but the pop issued right behind it takes the
    # job first: by the time the waiter looks, the queue is empty again.
    enqueued, popped = await asyncio.gather(
        store.enqueue(job(1), daily_limit=100), store.pop(1, owner="elsewhere")
    )
    assert [j.id for j in popped] == [enqueued.job.id]
    assert not await asyncio.wait_for(waiter, 10)
    # Timers may fire up to the loop's clock resolution early.
    resolution = time.get_clock_info("monotonic").resolution
    assert loop.time() - started >= timeout - resolution


def follow_up(user: int, worker: str) -> Job:
    """A U2 of a result ``worker`` made: only ``worker`` may run it."""
    return job(user, "U2", action=Action.UPSCALE, index=2, meta={"parent": {"worker": worker}})


async def test_pinned_jobs_wait_for_the_process_running_their_worker(
    make_store: StoreFactory, clock: ManualClock
) -> None:
    store = await make_store(lease_s=10)
    a1 = (await store.enqueue(job(1), daily_limit=100)).job
    b1 = (await store.enqueue(follow_up(2, "mj-2"), daily_limit=100)).job
    b2 = (await store.enqueue(job(2), daily_limit=100)).job
    c1 = (await store.enqueue(job(3), daily_limit=100)).job
    assert b1.pinned_worker == "mj-2" and a1.pinned_worker is None
    # A process running mj-1 only: bob's follow-up is not its to take, nor bob's later job.
    taken = await store.pop(10, owner="proc-1", workers={"mj-1", "comfy-1"})
    assert [j.id for j in taken] == [a1.id, c1.id]
    assert await store.depth() == 2
    # The process running mj-2 gets it, then bob's next job, in order.
    assert [j.id for j in await store.pop(1, owner="proc-2", workers={"mj-2"})] == [b1.id]
    assert [j.id for j in await store.pop(5, owner="proc-2", workers={"mj-2"})] == [b2.id]

    # The pin survives a retry and a restart: the requeued follow-up stays mj-2's.
    await store.transition(b1.id, JobState.QUEUED, owner="proc-2")
    await store.aclose()
    clock.advance(1)
    reopened = await make_store(lease_s=10)
    assert await reopened.pop(5, owner="proc-1", workers={"mj-1"}) == []
    assert [j.id for j in await reopened.pop(5, owner="proc-2", workers={"mj-2"})] == [b1.id]
    # Without a worker list (one process runs everything) nothing is held back.
    b3 = (await reopened.enqueue(follow_up(2, "mj-9"), daily_limit=100)).job
    assert [j.id for j in await reopened.pop(5, owner="solo")] == [b3.id]


async def test_prune_deletes_only_jobs_that_finished_before_the_cutoff(
    store: Store, clock: ManualClock
) -> None:
    """History retention: old finished jobs go; nothing else moves."""
    old_done = (await store.enqueue(job(1, "old done"), daily_limit=50)).job
    old_failed = (await store.enqueue(job(2, "old failed"), daily_limit=50)).job
    old_cancelled = (await store.enqueue(job(1, "old cancelled"), daily_limit=50)).job
    await store.pop(2, owner="w")
    await store.transition(old_done.id, JobState.RUNNING, owner="w")
    await store.transition(old_done.id, JobState.GENERATED, owner="w", results=["a.png", "b.png"])
    await store.transition(old_done.id, JobState.STORING, owner="w")
    await store.transition(old_done.id, JobState.SUCCEEDED, owner="w")
    await store.transition(old_failed.id, JobState.FAILED, owner="w", error_code="x")
    await store.cancel(old_cancelled.id)  # still queued when cancelled
    cutoff = clock() + timedelta(seconds=1)
    clock.advance(3600)
    recent = (await store.enqueue(job(1, "recent"), daily_limit=50)).job
    running = (await store.enqueue(job(3, "running"), daily_limit=50)).job
    assert {j.id for j in await store.pop(5, owner="w")} == {recent.id, running.id}
    queued = (await store.enqueue(job(1, "queued"), daily_limit=50)).job
    await finish(store, recent.id)
    await store.transition(running.id, JobState.RUNNING, owner="w")
    quota_before = (await store.quota(1, daily_limit=50)).used
    counts_before = await store.count_by_state()

    result = await store.prune(finished_before=cutoff)

    assert result == 3
    for gone in (old_done, old_failed, old_cancelled):
        assert await store.get(gone.id) is None
    for kept in (recent, running, queued):
        assert await store.get(kept.id) is not None
    assert {j.id for j in await store.list_jobs()} == {recent.id, running.id, queued.id}
    assert [j.id for j in await store.list_jobs(user_id=1)] == [queued.id, recent.id]
    counts = await store.count_by_state()
    assert counts.get(JobState.SUCCEEDED) == counts_before[JobState.SUCCEEDED] - 1 == 1
    assert JobState.FAILED not in counts and JobState.CANCELED not in counts
    assert counts[JobState.QUEUED] == 1 and counts[JobState.RUNNING] == 1
    assert (await store.quota(1, daily_limit=50)).used == quota_before
    assert await store.position(queued.id) == 0
    # Again: nothing more to delete; later the recent job goes too.
    assert await store.prune(finished_before=cutoff) == 0
    clock.advance(60)
    assert await store.prune(finished_before=clock()) == 1
    assert await store.get(recent.id) is None and await store.get(running.id) is not None


async def test_prune_works_through_more_jobs_than_one_batch(
    store: Store, clock: ManualClock
) -> None:
    ids = [(await store.enqueue(job(u % 7), daily_limit=2000)).job.id for u in range(1203)]
    popped = await store.pop(2000, owner="w")
    assert len(popped) == 1203
    for job_id in ids:
        await store.transition(job_id, JobState.FAILED, owner="w", results=[f"{job_id}.png"])
    clock.advance(1)
    assert await store.prune(finished_before=clock()) == 1203
    assert await store.list_jobs(limit=10) == [] and await store.count_by_state() == {}


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
async def test_random_operations_follow_fair_queue_exactly(
    make_store: StoreFactory, seed: int
) -> None:
    """Enqueue, pop (some by a process running one worker), cancel, requeue and
    restart at random: every pop and position matches `FairQueue` itself."""
    store = await make_store()
    rng = random.Random(seed)
    reference = FairQueue()
    popped: dict[str, Entry] = {}
    weights = {u: rng.choice([1.0, 1.0, 2.0, 3.0, 0.5]) for u in range(8)}
    for _ in range(300):
        roll = rng.random()
        if roll < 0.5:
            user = rng.randrange(8)
            pin = rng.choice([None, None, None, "w1", "w2"])
            extra: dict[str, object] = {}
            if pin:  # a follow-up runs where its parent ran
                extra = {"action": Action.UPSCALE, "meta": {"parent": {"worker": pin}}}
            res = await store.enqueue(job(user, weight=weights[user], **extra), daily_limit=10**6)
            reference.push(res.job.id, user, weight=weights[user], pin=pin)
            assert res.position == reference.position(res.job.id)
        elif roll < 0.7:
            k = rng.randint(1, 4)
            workers = rng.choice([None, {"w1"}, set()])
            got = [j.id for j in await store.pop(k, owner="w", workers=workers)]
            want = reference.pop(k, workers=workers)
            assert got == [e.job_id for e in want]
            popped.update({e.job_id: e for e in want})
        elif roll < 0.85 and len(reference):
            victim = rng.choice([e.job_id for e in reference.ordered()])
            await store.cancel(victim)
            reference.remove(victim)
        elif roll < 0.98 and popped:
            back = popped.pop(rng.choice(list(popped)))
            await store.transition(back.job_id, JobState.QUEUED, owner="w")
            reference.restore(back)
        else:  # a restart keeps every job's place
            await store.aclose()
            store = await make_store()
        if rng.random() < 0.1:
            for entry in reference.ordered():
                assert await store.position(entry.job_id) == reference.position(entry.job_id)
    assert await store.depth() == len(reference)
    assert [j.id for j in await store.pop(10**4, owner="w")] == [
        e.job_id for e in reference.pop(10**4)
    ]
