"""A running app on the Discord sandbox with its admin API listening on a free loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from gouache.admin.server import AdminServer
from gouache.app import AdminSettings
from gouache.jobs import Job, JobState
from gouache_sandbox.instant import InstantWorker

from ..e2e.conftest import World, embed_title, make_world  # noqa: F401  (fixture)
from ..sandbox.conftest import sandbox  # noqa: F401  (fixture)

TOKEN = "adm1n-t0ken-" + "q" * 24


@dataclass
class Admin:
    world: World
    server: AdminServer
    workers: dict[str, InstantWorker]
    http: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return self.server.url

    async def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        token: str | None = TOKEN,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """One request; (status, decoded JSON or text)."""
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        kwargs: dict[str, Any] = {"headers": sent}
        if method in ("POST", "PATCH"):
            kwargs["json"] = body or {}
        async with self.http.request(method, self.url + path, **kwargs) as response:
            if response.content_type == "application/json":
                return response.status, await response.json()
            return response.status, await response.text()

    async def ok(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        status, data = await self.call(method, path, body)
        assert status == 200, data
        return data

    async def wait_state(self, job_id: str, state: JobState, timeout: float = 10) -> Job:
        """Wait (on the event bus) until the job is in ``state``."""
        store = self.world.app.store
        with self.world.app.bus.subscribe(lambda e: e.job_id == job_id) as sub:
            job = await store.get(job_id)
            while job is None or job.state is not state:
                await sub.get(timeout=timeout)
                job = await store.get(job_id)
        return job

    async def imagine(self, member: Any, prompt: str) -> Any:
        """Invoke /imagine and return the bot's reply message."""
        return await self.world.reply(
            member.invoke(self.world.channel.id, "imagine", {"prompt": prompt})
        )

    async def imagine_job(self, member: Any, prompt: str) -> Job:
        """Invoke /imagine and return the job it queued."""
        reply = await self.imagine(member, prompt)
        assert embed_title(reply) in ("Queued", "Running", "Done"), reply.content
        # Requests are made one at a time: the member's newest job is this one.
        (job,) = await self.world.app.store.list_jobs(user_id=member.id, limit=1)
        assert prompt.startswith(job.prompt)
        return job


AdminFactory = Callable[..., Awaitable[Admin]]


@pytest.fixture
async def make_admin(make_world: Callable[..., Any]) -> AsyncIterator[AdminFactory]:  # noqa: F811
    """Start an app with InstantWorkers and its admin API (token ``TOKEN`` unless told)."""
    sessions: list[aiohttp.ClientSession] = []

    async def build(
        workers: dict[str, int] | None = None, *, token: str | None = TOKEN, **kw: Any
    ) -> Admin:
        made = {
            name: InstantWorker(name, capacity=cap)
            for name, cap in (workers or {"instant-a": 2}).items()
        }
        kw.setdefault("grace_s", 0.5)
        world = await make_world(
            list(made.values()), admin=AdminSettings("127.0.0.1", 0, token), **kw
        )
        assert world.app.admin is not None  # started (and stopped) with the app
        http = aiohttp.ClientSession()
        sessions.append(http)
        return Admin(world, world.app.admin, made, http)

    try:
        yield build
    finally:
        for http in sessions:
            await http.close()
