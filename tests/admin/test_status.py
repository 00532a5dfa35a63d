"""Worker rows of every process: the store's publish/read, merging, the publisher, gateway figures."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest

from gouache.admin.metrics import Metrics, sample
from gouache.admin.server import AdminServer, start_of_day
from gouache.admin.status import StatusPublisher, merge_rows, worker_row
from gouache.app import App
from gouache.events import EventBus
from gouache.pool.base import WorkerState
from gouache.pool.gateway import Backoff
from gouache.pool.midjourney import MidjourneyWorker
from gouache.pool.pool import Pool
from gouache.queue.quota import QuotaPolicy
from gouache.storage.redis import RedisStore
from gouache.storage.sqlite import SQLiteStore
from gouache_sandbox.discord import DiscordSandbox
from gouache_sandbox.instant import InstantWorker

from ..conftest import ManualClock, StoreFactory
from .conftest import TOKEN


async def test_published_rows_are_shared_replaced_and_expire(
    make_store: StoreFactory, clock: ManualClock
) -> None:
    one = await make_store()
    other = await make_store()  # another process on the same data
    await one.publish_workers("p1", [{"name": "a", "state": "ready"}], ttl_s=10)
    await other.publish_workers(
        "p2", [{"name": "b", "state": "busy"}, {"name": "c", "state": "offline"}], ttl_s=30
    )
    rows = await one.worker_rows()
    assert sorted((r["process"], r["name"], r["state"]) for r in rows) == [
        ("p1", "a", "ready"),
        ("p2", "b", "busy"),
        ("p2", "c", "offline"),
    ]
    await one.publish_workers("p1", [{"name": "a", "state": "disabled"}], ttl_s=10)
    assert {r["name"]: r["state"] for r in await other.worker_rows()}["a"] == "disabled"

    clock.advance(11)  # p1 stopped publishing: its rows lapse
    assert sorted(r["name"] for r in await other.worker_rows()) == ["b", "c"]
    await other.publish_workers("p2", [], ttl_s=30)  # withdrawn at once
    assert await one.worker_rows() == []


def test_merge_prefers_the_process_running_the_worker() -> None:
    local = [
        {"name": "mj-1", "state": "offline", "process": "here"},
        {"name": "mj-2", "state": "ready", "process": "here"},
    ]
    remote = [
        {"name": "mj-1", "state": "busy", "process": "there"},
        {"name": "mj-2", "state": "ready", "process": "there"},
        {"name": "comfy", "state": "weird", "process": "there"},
    ]
    merged = merge_rows(local, remote)
    assert [(r["name"], r["process"]) for r in merged] == [
        ("comfy", "there"),  # an unknown state still shows
        ("mj-1", "there"),  # it holds the gateway; here it only waits
        ("mj-2", "here"),  # a tie goes to this process
    ]


class GatewayWorker(InstantWorker):
    """An InstantWorker dressed like a gateway-backed one."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.reconnects = 3
        self.rate_limited = 2
        self.gateway = SimpleNamespace(latency=0.042)


async def test_gateway_figures_reach_rows_and_metrics(tmp_path: Path) -> None:
    worker = GatewayWorker("mj-like")
    pool = Pool([worker, InstantWorker("plain")])
    await pool.start()
    store = SQLiteStore(tmp_path / "g.db")
    await store.start()
    try:
        snap = pool.snapshot()[0]
        row = worker_row(snap, process="p", worker=worker)
        assert row["reconnects"] == 3 and row["heartbeat_ms"] == pytest.approx(42)
        assert row["state"] == "ready" and row["process"] == "p"
        metrics = Metrics(
            store,
            EventBus(),
            snapshot=pool.snapshot,
            workers=lambda: {w.name: w for w in pool.workers},
        )
        text = (await metrics.render()).decode()
        labels = {"worker": "mj-like"}
        assert sample(metrics, "gouache_gateway_reconnects_total", labels) == 3
        assert sample(metrics, "gouache_gateway_heartbeat_seconds", labels) == pytest.approx(0.042)
        assert sample(metrics, "gouache_worker_rate_limited_total", labels) == 2
        assert 'gouache_gateway_reconnects_total{worker="plain"}' not in text  # it has none
    finally:
        await store.aclose()
        await pool.aclose()


# -- several processes on one Redis --------------------------------------------------


AppFactory = Callable[[str], Awaitable[tuple[App, InstantWorker]]]


@pytest.fixture
async def redis_apps(redis_url: str, tmp_path: Path) -> AsyncIterator[AppFactory]:
    """Apps (no Discord bot) sharing one Redis deployment, as separate processes would."""
    prefix = f"admin-{uuid.uuid4().hex[:10]}"
    apps: list[App] = []

    async def build(worker_name: str) -> tuple[App, InstantWorker]:
        worker = InstantWorker(worker_name)
        app = App.assemble(
            store=RedisStore(redis_url, prefix=prefix, lease_s=30),
            workers=[worker],
            images_dir=tmp_path / "images",
            policy=QuotaPolicy("UTC"),
            grace_s=0.5,
        )
        await app.start()
        apps.append(app)
        return app, worker

    try:
        yield build
    finally:
        for app in apps:
            await app.stop()
        await RedisStore(redis_url, prefix=prefix).drop()


async def test_status_covers_every_process_on_redis(redis_apps: AppFactory) -> None:
    app1, _ = await redis_apps("r-1")
    app2, w2 = await redis_apps("r-2")
    server = AdminServer(app1.port, "127.0.0.1", 0, TOKEN)
    publisher = StatusPublisher(app2.store, app2.pool, app2.dispatcher.owner, interval_s=60)
    await server.start()
    await publisher.start()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with aiohttp.ClientSession(headers=headers) as http:

            async def status() -> dict[str, dict[str, object]]:
                async with http.get(server.url + "/status") as r:
                    assert r.status == 200
                    return {w["name"]: w for w in (await r.json())["workers"]}

            rows = await status()
            assert rows["r-1"]["process"] == app1.dispatcher.owner
            assert rows["r-2"]["process"] == app2.dispatcher.owner
            assert rows["r-2"]["state"] == "ready"

            # A state change is published at once, not at the next interval (60 s).
            w2.set_state(WorkerState.QUARANTINED)
            await publisher.wait_published(2, timeout=5)
            assert (await status())["r-2"]["state"] == "quarantined"

            async with http.post(server.url + "/workers/r-2/disable", json={}) as r:
                body = await r.json()
                assert r.status == 409 and app2.dispatcher.owner in body["message"]

            await publisher.aclose()  # the process stops: its rows go with it
            assert list(await status()) == ["r-1"]
    finally:
        await publisher.aclose()
        await server.aclose()


async def test_a_real_gateway_worker_reports_reconnects_and_heartbeat(tmp_path: Path) -> None:
    sb = DiscordSandbox(heartbeat_interval_ms=100)
    await sb.start()
    user, token = sb.add_user_account("painter")
    guild = sb.add_guild("art")
    channel = sb.add_channel(guild, "imagine")
    sb.join(guild, user)
    worker = MidjourneyWorker(
        "mj-1",
        token,
        guild.id,
        channel.id,
        api_base=f"{sb.base_url}/api/v9",
        gateway_url=sb.gateway_url,
        gateway_backoff=Backoff(base=0.02, cap=0.1),
    )
    pool = Pool([worker])
    store = SQLiteStore(tmp_path / "g.db")
    await store.start()
    await pool.start()
    try:
        await worker.wait_ready(5)
        gateway = worker._gateway
        assert gateway is not None
        await gateway.wait_for(lambda g: g.latency_ms is not None, 5)
        assert sb.drop_connections(user_id=user.id) == 1
        await gateway.wait_for(lambda g: g.counters.reconnects >= 1, 5)
        await gateway.wait_ready(5)

        row = worker_row(pool.snapshot()[0], process="p", worker=worker)
        assert row["reconnects"] == 1 and row["heartbeat_ms"] is not None
        metrics = Metrics(
            store, EventBus(), snapshot=pool.snapshot, workers=lambda: {"mj-1": worker}
        )
        await metrics.render()
        labels = {"worker": "mj-1"}
        assert sample(metrics, "gouache_gateway_reconnects_total", labels) == 1
        heartbeat = sample(metrics, "gouache_gateway_heartbeat_seconds", labels)
        assert heartbeat is not None and 0 <= heartbeat < 1
        assert (
            sample(
                metrics, "gouache_worker_state", {**labels, "kind": "midjourney", "state": "ready"}
            )
            == 1
        )
    finally:
        await pool.aclose()
        await store.aclose()
        await sb.aclose()


@pytest.mark.parametrize(
    ("tz", "now", "start"),
    [
        ("UTC", "2026-06-01T12:00:00+00:00", "2026-06-01T00:00:00+00:00"),
        # Shanghai: UTC+8, so 20:00 UTC is already the next local day.
        ("Asia/Shanghai", "2026-06-01T20:00:00+00:00", "2026-06-01T16:00:00+00:00"),
        # A 25-hour day (Berlin, clocks back on 25 Oct 2026), late in the day.
        ("Europe/Berlin", "2026-10-25T22:30:00+00:00", "2026-10-24T22:00:00+00:00"),
        # A 23-hour day (clocks forward on 29 Mar 2026), early in the day.
        ("Europe/Berlin", "2026-03-28T23:30:00+00:00", "2026-03-28T23:00:00+00:00"),
        # Santiago skips midnight itself (6 Sep 2026: 00:00 → 01:00): the day starts at 01:00.
        ("America/Santiago", "2026-09-06T12:00:00+00:00", "2026-09-06T04:00:00+00:00"),
    ],
)
def test_start_of_day(tz: str, now: str, start: str) -> None:
    got = start_of_day(QuotaPolicy(tz), datetime.fromisoformat(now))
    assert got == datetime.fromisoformat(start)
