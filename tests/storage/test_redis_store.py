"""Redis-specific behaviour: exact tags, hash-tagged keys, wake-ups across processes, the reaper lock."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from redis.asyncio import Redis

from gouache.errors import IllegalTransition
from gouache.jobs import Action, Job, JobState
from gouache.queue.fair import Entry, FairQueue, step
from gouache.queue.quota import QuotaPolicy
from gouache.storage.redis import RedisStore

from ..conftest import ManualClock

Opener = Callable[..., Awaitable[RedisStore]]


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def open_store(redis_url: str, clock: ManualClock, raw: Redis) -> AsyncIterator[Opener]:
    """Open stores of one fresh deployment (a unique prefix); several may share it."""
    prefix = f"t-{uuid.uuid4().hex[:12]}"
    opened: list[RedisStore] = []

    async def factory(**kw: object) -> RedisStore:
        store = RedisStore(redis_url, prefix=prefix, policy=QuotaPolicy("UTC"), clock=clock, **kw)  # type: ignore[arg-type]
        await store.start()
        opened.append(store)
        return store

    yield factory
    for store in opened:
        await store.aclose()
    if opened:
        await opened[0].drop()


def job(user: int, prompt: str = "p", **kw: object) -> Job:
    return Job(user_id=user, prompt=prompt, **kw)  # type: ignore[arg-type]


def oracle_pop(reference: FairQueue, k: int) -> list[Entry]:
    """FairQueue.pop as documented: serve the smallest (tag, seq), then advance V.

    `FairQueue.pop` itself can serve out of (tag, seq) order after a user's
    queue was emptied by `remove` and refilled (its heap versions restart),
    so the oracle takes the order from `ordered()` and applies pop's updates.
    """
    out: list[Entry] = []
    for entry in list(reference.ordered())[:k]:
        reference.remove(entry.job_id, shift=False)
        start = entry.tag - step(entry.cost, entry.weight)
        reference.virtual_time = max(reference.virtual_time, start)
        reference._last_finish[entry.user] = entry.tag
        out.append(entry)
    return out


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
async def test_random_operations_follow_fair_queue_exactly(open_store: Opener, seed: int) -> None:
    """Enqueue, pop, cancel and requeue at random; order and positions match FairQueue."""
    store = await open_store()
    rng = random.Random(seed)
    reference = FairQueue()
    popped: dict[str, Entry] = {}
    weights = {u: rng.choice([1.0, 1.0, 2.0, 3.0, 0.5]) for u in range(8)}
    for _ in range(300):
        roll = rng.random()
        if roll < 0.5:
            user = rng.randrange(8)
            res = await store.enqueue(job(user, weight=weights[user]), daily_limit=10**6)
            reference.push(res.job.id, user, weight=weights[user])
            assert res.position == reference.position(res.job.id)
        elif roll < 0.7:
            k = rng.randint(1, 4)
            got = [j.id for j in await store.pop(k, owner="w")]
            want = oracle_pop(reference, k)
            assert got == [e.job_id for e in want]
            popped.update({e.job_id: e for e in want})
        elif roll < 0.85 and len(reference):
            victim = rng.choice([e.job_id for e in reference.ordered()])
            await store.cancel(victim)
            reference.remove(victim)
        elif popped:
            back = popped.pop(rng.choice(list(popped)))
            await store.transition(back.job_id, JobState.QUEUED, owner="w")
            reference.restore(back)
        if rng.random() < 0.1:
            for entry in reference.ordered():
                assert await store.position(entry.job_id) == reference.position(entry.job_id)
    assert await store.depth() == len(reference)
    assert [j.id for j in await store.pop(10**4, owner="w")] == [
        e.job_id for e in oracle_pop(reference, 10**4)
    ]


async def test_tags_stay_exact_near_two_to_the_53(open_store: Opener, raw: Redis) -> None:
    """Lua formats numbers with 14 digits by default; tags must not be rounded."""
    store = await open_store()
    vtime = 2**52 + 7
    await raw.set(f"{store.base}:vt", str(vtime))
    reference = FairQueue(virtual_time=vtime)
    for i in range(12):
        user, weight = i % 3, (1.0, 3.0, 7.0)[i % 3]
        res = await store.enqueue(job(user, weight=weight), daily_limit=100)
        entry = reference.push(res.job.id, user, weight=weight)
        assert int(await raw.hget(f"{store.base}:job:{res.job.id}", "_t")) == entry.tag
    assert [j.id for j in await store.pop(12, owner="w")] == [e.job_id for e in reference.pop(12)]
    assert int(await raw.get(f"{store.base}:vt")) == reference.virtual_time


async def test_every_key_carries_the_deployment_hash_tag(open_store: Opener, raw: Redis) -> None:
    store = await open_store()
    other = await open_store()
    assert other.base == store.base
    ids = [(await store.enqueue(job(u), daily_limit=10)).job.id for u in (1, 2, 2)]
    await store.pop(1, owner="w")
    await store.cancel(ids[2])
    await store.acquire_worker("mj-1", "p", ttl_s=30)
    await store.put_user(await store.get_user(1))
    await store.recover_expired()
    keys = [k async for k in raw.scan_iter(match="*" + store.prefix + "*")]
    assert len(keys) > 8
    assert all(k.startswith(store.base + ":") for k in keys)


async def test_a_process_waiting_for_work_wakes_when_another_enqueues(
    open_store: Opener,
) -> None:
    producer = await open_store()
    consumer = await open_store()
    assert not await consumer.wait_for_work(0.02)
    waiter = asyncio.create_task(consumer.wait_for_work(30))
    await asyncio.sleep(0)  # let the waiter block
    started = time.perf_counter()
    await producer.enqueue(job(1), daily_limit=10)
    assert await asyncio.wait_for(waiter, 5)
    assert time.perf_counter() - started < 1.0  # woken by the publish, not by a timeout
    assert (await consumer.pop(1, owner="c"))[0].user_id == 1


async def test_reaper_runs_one_pass_at_a_time(
    open_store: Opener, raw: Redis, clock: ManualClock
) -> None:
    store = await open_store()
    j = (await store.enqueue(job(1), daily_limit=10)).job
    await store.pop(1, owner="dead", lease_s=5)
    clock.advance(6)
    lock = f"{store.base}:reaper"
    await raw.set(lock, "another-process", px=30_000)
    assert await store.recover_expired() == []  # the other pass owns these jobs
    assert (await store.get(j.id)).state is JobState.SUBMITTED  # type: ignore[union-attr]
    await raw.delete(lock)
    (recovered,) = await store.recover_expired()
    assert recovered.id == j.id and recovered.state is JobState.QUEUED
    assert await raw.get(lock) is None  # released after the pass


async def test_scripts_are_reloaded_after_script_flush(open_store: Opener, raw: Redis) -> None:
    store = await open_store()
    await store.enqueue(job(1), daily_limit=10)
    await raw.script_flush()
    res = await store.enqueue(job(1), daily_limit=10)
    assert res.quota.used == 2 and await store.depth() == 2


async def test_quota_keys_expire_two_days_after_their_day(
    open_store: Opener, raw: Redis, clock: ManualClock
) -> None:
    store = await open_store()
    res = await store.enqueue(job(1), daily_limit=10)  # 12:00 UTC: 12 h left in the day
    ttl = await raw.ttl(f"{store.base}:quota:1:{res.quota.day}")
    assert 12 * 3600 + 2 * 86400 - 60 <= ttl <= 12 * 3600 + 2 * 86400


async def test_discord_sized_ids_and_unicode_round_trip(open_store: Opener) -> None:
    """Snowflakes exceed a Lua double's exact range; prompts and messages are any text."""
    store = await open_store()
    big = 1_234_567_890_123_456_789
    a = (await store.enqueue(job(big, prompt="un chat très 猫 🐈"), daily_limit=5)).job
    await store.enqueue(job(big + 1), daily_limit=5)
    assert (await store.quota(big, daily_limit=5)).used == 1
    assert await store.depth(big) == 1 and await store.depth(big + 1) == 1
    await store.pop(1, owner="w")
    done = await store.transition(
        a.id,
        JobState.FAILED,
        owner="w",
        error_code="worker_error",
        error_message="échec « net » ✗",
        results=["img/1.png"],
        meta={"nested": {"x": [1, 2]}},
    )
    got = await store.get(a.id)
    assert got == done
    assert got is not None and got.user_id == big and got.prompt == "un chat très 猫 🐈"
    assert got.error_message == "échec « net » ✗" and got.meta == {"nested": {"x": [1, 2]}}


async def test_concurrent_operations_fail_alone(open_store: Opener) -> None:
    store = await open_store()
    ids = [(await store.enqueue(job(i), daily_limit=10)).job.id for i in range(30)]
    await store.pop(30, owner="w")
    calls = [store.transition(i, JobState.RUNNING, owner="w", progress=10) for i in ids]
    calls.append(store.transition(ids[0], JobState.SUCCEEDED, owner="w"))
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(results[-1], IllegalTransition)
    assert all(isinstance(r, Job) and r.state is JobState.RUNNING for r in results[:-1])
    assert await store.count_by_state() == {JobState.RUNNING: 30}


async def test_bad_field_values_are_refused_before_writing(open_store: Opener) -> None:
    store = await open_store()
    j = (await store.enqueue(job(1), daily_limit=10)).job
    with pytest.raises(ValueError, match="validation"):
        await store.update(j.id, results="not a list of keys")
    assert (await store.get(j.id)) is not None


async def test_store_refuses_use_before_start(redis_url: str) -> None:
    store = RedisStore(redis_url, prefix="never-started")
    with pytest.raises(RuntimeError, match="not started"):
        await store.get("x")


async def test_the_pinned_index_holds_exactly_the_queued_pinned_jobs(
    open_store: Opener, raw: Redis
) -> None:
    """Pops take the plain ZPOPMIN path whenever no pinned job is queued."""
    store = await open_store()
    pinned_key = f"{store.base}:pinned"

    def follow_up(user: int) -> Job:
        return job(user, "U1", action=Action.UPSCALE, index=1, meta={"parent": {"worker": "mj-2"}})

    kept = (await store.enqueue(follow_up(1), daily_limit=9)).job
    cancelled = (await store.enqueue(follow_up(2), daily_limit=9)).job
    await store.enqueue(job(3), daily_limit=9)
    assert await raw.scard(pinned_key) == 2
    await store.cancel(cancelled.id)
    assert await raw.scard(pinned_key) == 1
    (taken,) = await store.pop(5, owner="p", workers={"mj-1"})  # only the plain job
    assert taken.user_id == 3 and await raw.scard(pinned_key) == 1
    assert [j.id for j in await store.pop(5, owner="p")] == [kept.id]  # no filter: taken anyway
    assert await raw.scard(pinned_key) == 0
    await store.transition(kept.id, JobState.QUEUED, owner="p")  # a retry is pinned again
    assert await raw.scard(pinned_key) == 1
