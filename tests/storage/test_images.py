"""The content-addressed image store and its retention sweep."""

from __future__ import annotations

import io
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image

from gouache.storage.images import ImageStore


def png(color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 4), color).save(out, format="PNG")
    return out.getvalue()


def age(path: Path, days: float) -> None:
    """Set a file's modification time ``days`` in the past."""
    then = time.time() - days * 86400
    os.utime(path, (then, then))


async def test_put_is_content_addressed_and_get_returns_the_bytes(tmp_path: Path) -> None:
    images = ImageStore(tmp_path)
    red = png((255, 0, 0))
    key = await images.put(red)
    assert key.endswith(".png") and await images.put(red) == key
    assert await images.get(key) == red and images.exists(key)
    with pytest.raises(ValueError, match="not an image key"):
        images.path("../../etc/passwd")


async def test_sweep_deletes_images_nobody_stored_within_the_retention(tmp_path: Path) -> None:
    images = ImageStore(tmp_path)
    old, reused, fresh = [await images.put(png(c)) for c in ((1, 0, 0), (2, 0, 0), (3, 0, 0))]
    age(images.path(old), 40)
    age(images.path(reused), 40)
    await images.put(png((2, 0, 0)))  # a new job stored the same image: its age starts over
    (tmp_path / "notes.txt").write_text("not an image")  # other files are left alone
    stray = images.path(old).parent / "partial.tmp123"
    stray.write_bytes(b"half a write")
    age(stray, 40)

    assert await images.sweep(older_than=datetime.now(UTC) - timedelta(days=30)) == 1
    assert not images.exists(old)
    assert images.exists(reused) and images.exists(fresh)
    assert stray.exists() and (tmp_path / "notes.txt").exists()
    assert await images.sweep(older_than=datetime.now(UTC) - timedelta(days=30)) == 0
