"""The content-addressed image store and its retention sweep."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gouache.storage.images import ImageStore
from gouache_sandbox.instant import tiny_png


def age(path: Path, days: float) -> None:
    """Set a file's modification time ``days`` in the past."""
    then = time.time() - days * 86400
    os.utime(path, (then, then))


async def test_put_is_content_addressed_and_get_returns_the_bytes(tmp_path: Path) -> None:
    images = ImageStore(tmp_path)
    image = tiny_png(1)
    key = await images.put(image)
    assert key.endswith(".png") and await images.put(image) == key
    assert await images.get(key) == image and images.exists(key)
    with pytest.raises(ValueError, match="not an image key"):
        images.path("../../etc/passwd")


async def test_sweep_deletes_images_nobody_stored_within_the_retention(tmp_path: Path) -> None:
    images = ImageStore(tmp_path)
    old, reused, fresh = [await images.put(tiny_png(seed)) for seed in (1, 2, 3)]
    age(images.path(old), 40)
    age(images.path(reused), 40)
    await images.put(tiny_png(2))  # a new job stored the same image: its age starts over
    (tmp_path / "notes.txt").write_text("not an image")  # other files are left alone
    stray = images.path(old).parent / "partial.tmp123"
    stray.write_bytes(b"half a write")
    age(stray, 40)

    assert await images.sweep(older_than=datetime.now(UTC) - timedelta(days=30)) == 1
    assert not images.exists(old)
    assert images.exists(reused) and images.exists(fresh)
    assert stray.exists() and (tmp_path / "notes.txt").exists()
    assert await images.sweep(older_than=datetime.now(UTC) - timedelta(days=30)) == 0


async def test_the_same_image_stored_by_many_jobs_at_once_is_stored_once(tmp_path: Path) -> None:
    """Jobs that finish together with identical bytes race on one key; every put succeeds."""
    store = ImageStore(tmp_path)
    for round_ in range(5):
        # Large enough that writing it takes a while: the writers overlap.
        data = tiny_png(seed=round_) + os.urandom(4 << 20)
        keys = await asyncio.gather(*(store.put(data) for _ in range(32)))
        assert len(set(keys)) == 1
        assert await store.get(keys[0]) == data
    stored = await asyncio.to_thread(lambda: sorted(p.name for p in tmp_path.rglob("*.*")))
    assert [name.rsplit(".", 1)[1] for name in stored] == ["png"] * 5  # no temporary files left
