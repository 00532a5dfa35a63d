"""Redis-specific behaviour: exact tags, hash-tagged keys, wake-ups across processes, the reaper lock."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import trustme
from redis import exceptions as redis_exceptions
from redis.asyncio import Redis

from gouache.errors import IllegalTransition, LeaseLost
from gouache.jobs import Action, Job, JobState
from gouache.queue.fair import FairQueue
from gouache.queue.quota import QuotaPolicy
from gouache.storage.redis import RedisStore

from ..conftest import ManualClock, _free_port, start_redis_server

Opener = Callable[..., Awaitable[RedisStore]]


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
    waiter = asyncio.create_task(consumer.wait_for_work(60))
    await asyncio.sleep(0)  # let the waiter block
    await producer.enqueue(job(1), daily_limit=10)
    # Woken by the publish: its own wait (60 s) cannot end within this bound.
    assert await asyncio.wait_for(waiter, 20)
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


async def keyspace(raw: Redis, store: RedisStore) -> dict[str, object]:
    """Every key of ``store``'s deployment and what it holds, to compare before and after."""
    out: dict[str, object] = {}
    async for key in raw.scan_iter(match="*" + store.prefix + "*"):
        kind = await raw.type(key)
        if kind == "string":
            out[key] = await raw.get(key)
        elif kind == "hash":
            out[key] = await raw.hgetall(key)
        elif kind == "list":
            out[key] = await raw.lrange(key, 0, -1)
        elif kind == "set":
            out[key] = await raw.smembers(key)
        elif kind == "zset":
            out[key] = await raw.zrange(key, 0, -1, withscores=True)
        else:
            out[key] = kind
    return out


async def test_bad_field_values_are_refused_before_writing(
    open_store: Opener, raw: Redis, clock: ManualClock
) -> None:
    store = await open_store()
    await store.enqueue(job(1), daily_limit=10)
    (held,) = await store.pop(1, owner="w")  # a worker's job, as updates usually find it
    before = await keyspace(raw, store)
    clock.advance(5)  # anything written now would carry a new updated_at
    with pytest.raises(ValueError, match="validation"):
        await store.update(held.id, progress=50, results="not a list of keys")
    with pytest.raises(ValueError, match="not changeable"):
        await store.update(held.id, progress=50, user_id=2)
    # Nothing was written, not even the valid change that came with the bad one.
    assert await keyspace(raw, store) == before
    other = await open_store()  # reads Redis, not this process's copy of the job
    assert await other.get(held.id) == held
    assert await store.get(held.id) == held
    # The record is whole: the next good change applies.
    assert (await store.update(held.id, progress=50)).progress == 50
    reread = await other.get(held.id)
    assert reread is not None and reread.progress == 50 and reread.updated_at == clock()


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


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_changed_jobs_equal_a_fresh_read_whether_our_copy_is_current_or_not(
    open_store: Opener, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """A change replies with the job without decoding it again when our copy was current.

    Worker process `a` pops and changes jobs; process `b` changes some of them
    in between (progress, a cancel), which makes a's copy stale. Whatever a
    change returns must equal what another process reads afterwards.
    """
    from gouache.storage import redis as redis_module

    decodes = 0
    real_decode = redis_module.decode

    def counting_decode(reply: list[str]) -> Job:
        nonlocal decodes
        decodes += 1
        return real_decode(reply)

    monkeypatch.setattr(redis_module, "decode", counting_decode)
    a, b = await open_store(), await open_store()
    rng = random.Random(seed)
    ids = [(await b.enqueue(job(u, prompt="чай ☕"), daily_limit=50)).job.id for u in range(12)]
    await a.pop(12, owner="a")
    states = dict.fromkeys(ids, JobState.SUBMITTED)
    fast = slow = 0
    for n in range(200):
        live = [i for i in ids if not states[i].terminal]
        if not live:
            break
        job_id = rng.choice(live)
        stale = rng.random() < 0.2
        if stale:  # another process changes it: a's copy is out of date
            if rng.random() < 0.2:
                await b.cancel(job_id, reason="annulé ✗")
                states[job_id] = JobState.CANCELED
            else:
                await b.update(job_id, progress=rng.randrange(100), preview_url=f"p/{n}/é.png")
            continue
        before = decodes
        following = {
            JobState.SUBMITTED: JobState.RUNNING,
            JobState.RUNNING: JobState.GENERATED,
            JobState.GENERATED: JobState.STORING,
            JobState.STORING: JobState.SUCCEEDED,
        }
        match rng.randrange(3):
            case 0:
                changed = await a.update(
                    job_id, progress=rng.randrange(100), meta={"step": (n, "é"), "k": {"x": n}}
                )
            case 1:
                target = following[states[job_id]]
                changed = await a.transition(
                    job_id, target, owner="a", results=[f"img/{n}.png"], external_id=f"ext-{n}"
                )
                states[job_id] = target
            case _:
                changed = await a.transition(
                    job_id, JobState.FAILED, owner="a", error_code="x", error_message=f"échec {n}"
                )
                states[job_id] = JobState.FAILED
        if decodes == before:
            fast += 1
        else:
            slow += 1
        assert changed == await b.get(job_id)
    # Both paths ran: our own changes mostly skip the decode; stale copies are decoded.
    assert fast > 0 and slow > 0, (fast, slow)
    # A copy of a job another process finished goes when a change of ours is refused.
    for job_id in [i for i in a._held if states[i].terminal]:
        with pytest.raises(LeaseLost):  # a cancel ends the lease
            await a.transition(job_id, JobState.GENERATED, owner="a")
    assert not {i for i in a._held if states[i].terminal}


async def test_a_lost_connection_fails_what_was_in_flight_and_the_next_operation_reconnects(
    open_store: Opener, raw: Redis
) -> None:
    """The store's connection dies with 200 operations on it: each fails, none hangs, none ran."""
    store = await open_store()
    kept = [(await store.enqueue(job(u), daily_limit=50)).job.id for u in range(5)]
    client_id = await store._command("CLIENT", "ID")
    await raw.client_pause(10_000, all=False)  # write commands (scripts) wait; the kill does not
    try:
        calls = [asyncio.ensure_future(store.enqueue(job(u), daily_limit=50)) for u in range(200)]
        await asyncio.sleep(0)  # the calls issue their operations
        await asyncio.sleep(0)  # the connection writes them (one write)
        assert await raw.client_kill_filter(_id=client_id) == 1
    finally:
        await raw.client_unpause()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, redis_exceptions.ConnectionError) for r in results), results[:3]
    # Nothing of them ran; what ran before is there; the store works again at once.
    assert await store.depth() == 5
    assert (await store.enqueue(job(9), daily_limit=50)).position == 5
    for job_id in kept:
        assert (await store.get(job_id)) is not None
    assert await store._command("CLIENT", "ID") != client_id


async def test_the_database_in_the_url_is_selected(redis_url: str, raw: Redis) -> None:
    url = redis_url.rsplit("/", 1)[0] + "/3"
    store = RedisStore(url, prefix=f"db-{uuid.uuid4().hex[:8]}", policy=QuotaPolicy("UTC"))
    await store.start()
    try:
        queued = (await store.enqueue(job(1), daily_limit=5)).job
        in_db3 = Redis.from_url(url, decode_responses=True)
        try:
            assert await in_db3.exists(f"{store.base}:job:{queued.id}") == 1
        finally:
            await in_db3.aclose()
        assert await raw.exists(f"{store.base}:job:{queued.id}") == 0  # not in db 0
    finally:
        await store.aclose()
        await store.drop()


async def test_acl_credentials_in_the_url_are_used_and_a_wrong_password_is_not_shown(
    redis_url: str, raw: Redis
) -> None:
    user, password = f"gouache-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    await raw.acl_setuser(
        user,
        enabled=True,
        passwords=[f"+{password}"],
        keys=["*"],
        commands=["+@all"],
        channels=["*"],
    )
    host = redis_url.split("://", 1)[1]
    try:
        store = RedisStore(
            f"redis://{user}:{password}@{host}", prefix=f"acl-{uuid.uuid4().hex[:8]}"
        )
        await store.start()
        try:
            assert (await store.enqueue(job(1), daily_limit=5)).position == 0
        finally:
            await store.aclose()
            await store.drop()
        wrong = RedisStore(f"redis://{user}:not-{password}@{host}", prefix="acl-wrong")
        with pytest.raises(redis_exceptions.RedisError) as refused:
            await wrong.start()
        assert password not in str(refused.value) and "not-" not in str(refused.value)
        await wrong.aclose()
    finally:
        await raw.acl_deluser(user)


async def test_an_unreachable_redis_is_a_clear_error_at_start() -> None:
    store = RedisStore(f"redis://127.0.0.1:{_free_port()}/0", prefix="nowhere")  # nobody there
    with pytest.raises(redis_exceptions.ConnectionError, match="cannot reach Redis"):
        await store.start()
    await store.aclose()


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A redis-server that speaks only TLS, with a certificate from a test CA; (url, CA file)."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    port = _free_port()
    proc = start_redis_server(
        tmp_path,
        "--port", "0", "--tls-port", str(port),
        "--tls-cert-file", str(cert_file), "--tls-key-file", str(key_file),
        "--tls-ca-cert-file", str(ca_file), "--tls-auth-clients", "no",
        "--save", "", "--appendonly", "no",
    )  # fmt: skip
    try:
        yield f"rediss://127.0.0.1:{port}/0", ca_file
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_the_store_carries_on_when_redis_restarts(tmp_path: Path) -> None:
    """Redis goes away and comes back (same port, its data in an append-only file)."""
    port = _free_port()
    server = ("--port", str(port), "--save", "", "--appendonly", "yes", "--appendfsync", "always")
    proc = start_redis_server(tmp_path, *server)
    url = f"redis://127.0.0.1:{port}/0"
    worker = RedisStore(url, prefix="restart", policy=QuotaPolicy("UTC"))
    bot = RedisStore(url, prefix="restart", policy=QuotaPolicy("UTC"))
    await worker.start()
    await bot.start()
    try:
        kept = (await bot.enqueue(job(1), daily_limit=9)).job
        proc.terminate()
        proc.wait(timeout=10)
        with pytest.raises(redis_exceptions.ConnectionError):  # down: an error, not a hang
            await worker.get(kept.id)
        proc = start_redis_server(tmp_path, *server)
        (popped,) = await worker.pop(1, owner="w")  # reconnected, script loaded again
        assert popped.id == kept.id
        # A worker waiting for work learns of the next job within its listener's
        # retry (a second), not at the end of its wait, whether the wake-up
        # is published before or after the listener is back.
        waiter = asyncio.create_task(worker.wait_for_work(30))
        await asyncio.sleep(0)
        started = time.perf_counter()
        await bot.enqueue(job(2), daily_limit=9)
        assert await asyncio.wait_for(waiter, 10)
        assert time.perf_counter() - started < 5.0
    finally:
        await worker.aclose()
        await bot.aclose()
        proc.terminate()
        proc.wait(timeout=10)


async def test_rediss_urls_connect_over_tls_and_check_the_certificate(
    tls_redis: tuple[str, Path],
) -> None:
    url, ca_file = tls_redis
    store = RedisStore(f"{url}?ssl_ca_certs={ca_file}", prefix="tls", policy=QuotaPolicy("UTC"))
    await store.start()
    try:
        queued = (await store.enqueue(job(1), daily_limit=5)).job
        (popped,) = await store.pop(1, owner="w")
        assert popped.id == queued.id
    finally:
        await store.aclose()
    # Without our CA the server's certificate is not trusted: a clear refusal.
    untrusted = RedisStore(url, prefix="tls")
    with pytest.raises(redis_exceptions.ConnectionError, match="cannot reach Redis"):
        await untrusted.start()
    await untrusted.aclose()


async def test_prune_shortens_the_history_lists_up_to_a_job_still_there(
    open_store: Opener, raw: Redis, clock: ManualClock
) -> None:
    """The history lists (oldest first) lose the ids of deleted jobs, so Redis memory stays bounded."""
    store = await open_store()
    ids = [(await store.enqueue(job(1, f"p{i}"), daily_limit=50)).job.id for i in range(10)]
    await store.pop(10, owner="w")
    for job_id in ids[1:]:
        await store.transition(job_id, JobState.FAILED, owner="w")
    await store.transition(ids[0], JobState.RUNNING, owner="w")  # the oldest is still running
    clock.advance(1)
    lists = (f"{store.base}:jobs", f"{store.base}:ujobs:1")
    assert await store.prune(finished_before=clock()) == 9
    assert [await raw.llen(key) for key in lists] == [10, 10]  # held back by the running job
    assert [j.id for j in await store.list_jobs(user_id=1)] == [ids[0]]
    await store.transition(ids[0], JobState.FAILED, owner="w")
    clock.advance(1)
    assert await store.prune(finished_before=clock()) == 1
    assert [await raw.llen(key) for key in lists] == [0, 0]
    assert await raw.zcard(f"{store.base}:finished") == 0


async def test_a_job_finished_by_the_process_holding_it_is_stored_whole(
    open_store: Opener, raw: Redis
) -> None:
    """A finished job is kept for days: its patches are folded into one JSON when that is safe."""
    a, b = await open_store(), await open_store()
    first = (await a.enqueue(job(1), daily_limit=9)).job
    second = (await a.enqueue(job(2), daily_limit=9)).job
    await a.pop(2, owner="a")
    for job_id in (first.id, second.id):
        for _ in range(20):
            await a.update(job_id, progress=50, preview_url="https://cdn.example/p.png")
    await b.update(second.id, progress=60)  # a's copy of the second job is now stale
    done = [
        await a.transition(j, JobState.FAILED, owner="a", error_code="x", results=["r.png"])
        for j in (first.id, second.id)
    ]
    whole, patched = [await raw.hget(f"{a.base}:job:{j}", "o") for j in (first.id, second.id)]
    assert whole == ""  # folded: one JSON, no patches
    assert patched is not None and len(patched) > 1000  # not folded: a's copy was out of date
    for job_id, returned in zip((first.id, second.id), done, strict=True):
        assert returned == await b.get(job_id)
    assert done[1].progress == 60 and done[0].results == ["r.png"]
