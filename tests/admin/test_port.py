"""The admin API serves any `ProcessPort`: it needs no `App`, only what the port offers."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from gouache.admin.server import AdminServer
from gouache.bot.service import Tier
from gouache.events import EventBus
from gouache.jobs import Job, JobState
from gouache.pool.pool import Pool
from gouache.queue.quota import QuotaPolicy
from gouache.storage.sqlite import SQLiteStore
from gouache_sandbox.instant import InstantWorker

from ..conftest import ManualClock
from .conftest import TOKEN


@dataclass
class Rules:
    policy: QuotaPolicy
    tiers: list[Tier] = field(default_factory=lambda: [Tier("default"), Tier("vip", 3.0, 500)])

    def tier_for(self, role_ids: Iterable[int], override: str | None = None) -> Tier:
        return next((t for t in self.tiers if t.name == override), self.tiers[0])


@dataclass
class Port:
    """A process with no bot, no dispatcher and no app object."""

    store: SQLiteStore
    pool: Pool
    bus: EventBus
    rules: Rules
    clock: ManualClock
    process: str = "port-test"
    cancelled: list[str] = field(default_factory=list)

    def now(self) -> datetime:
        return self.clock()

    def in_flight(self) -> int:
        return 7

    async def cancel(self, job_id: str, *, reason: str) -> Job:
        self.cancelled.append(job_id)
        return await self.store.cancel(job_id, reason=reason)

    def unserved_channels(self) -> list[dict[str, Any]]:
        return [{"channel_id": 42, "missing": ["Attach Files"]}]


async def test_the_admin_api_runs_on_a_port_without_an_app(
    tmp_path: Path, clock: ManualClock
) -> None:
    policy = QuotaPolicy("UTC", default_limit=100)
    store = SQLiteStore(tmp_path / "g.db", policy=policy, clock=clock)
    await store.start()
    pool = Pool([InstantWorker("solo", capacity=3)])
    port = Port(store, pool, EventBus(), Rules(policy), clock)
    server = AdminServer(port, "127.0.0.1", 0, TOKEN)
    await server.start()
    queued = await store.enqueue(Job(user_id=5, prompt="a fox"), daily_limit=100)
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            async with http.get(server.url + "/status") as r:
                status = await r.json()
            assert status["process"] == "port-test"
            assert status["in_flight"]["this_process"] == 7
            assert [w["name"] for w in status["workers"]] == ["solo"]
            assert status["summary"]["queue_depth"] == 1
            assert status["channels"] == [{"channel_id": 42, "missing": ["Attach Files"]}]
            async with http.post(server.url + f"/jobs/{queued.job.id}/cancel", json={}) as r:
                assert r.status == 200
                assert (await r.json())["refunded"] is True
            async with http.patch(server.url + "/users/5", json={"tier": "vip"}) as r:
                assert (await r.json())["effective_limit"] == 500
        assert port.cancelled == [queued.job.id]
        assert (await store.get(queued.job.id)).state is JobState.CANCELED  # type: ignore[union-attr]
    finally:
        await server.aclose()
        await store.aclose()
