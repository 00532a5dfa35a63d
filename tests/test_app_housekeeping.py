"""History retention as `gouache run` applies it: old finished jobs and unused images go."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gouache.app import App
from gouache.jobs import Job
from gouache.queue.quota import QuotaPolicy
from gouache.storage.sqlite import SQLiteStore
from gouache_sandbox.instant import tiny_png

from .conftest import ManualClock


async def test_housekeeping_deletes_what_is_older_than_keep_days(tmp_path: Path) -> None:
    now = datetime.now(UTC)  # image ages come from the file system's clock
    clock = ManualClock(now - timedelta(days=40))
    store = SQLiteStore(tmp_path / "g.db", clock=clock)
    app = App.assemble(
        store=store, workers=[], images_dir=tmp_path / "images", policy=QuotaPolicy("UTC")
    )
    await store.start()
    try:
        old = (await store.enqueue(Job(user_id=1, prompt="old"), daily_limit=9)).job
        await store.cancel(old.id)
        clock.now = now - timedelta(days=1)
        recent = (await store.enqueue(Job(user_id=1, prompt="recent"), daily_limit=9)).job
        await store.cancel(recent.id)
        clock.now = now
        waiting = (await store.enqueue(Job(user_id=2, prompt="waiting"), daily_limit=9)).job
        stale, fresh = await app.images.put(tiny_png(1)), await app.images.put(tiny_png(2))
        then = time.time() - 40 * 86400
        os.utime(app.images.path(stale), (then, then))

        app.keep_days = 0  # keep everything
        await app.housekeep()
        assert await store.get(old.id) is not None and app.images.exists(stale)

        app.keep_days = 30
        await app.housekeep()
        assert await store.get(old.id) is None and not app.images.exists(stale)
        assert await store.get(recent.id) is not None and await store.get(waiting.id) is not None
        assert app.images.exists(fresh)
    finally:
        await store.aclose()
