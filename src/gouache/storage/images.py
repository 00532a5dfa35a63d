"""The result-image store: a content-addressed directory.

Backends hand us bytes (a Midjourney CDN URL expires, a ComfyUI server may be
wiped), so every result is copied here and referred to by its key, the
SHA-256 of its bytes plus the image type's extension.

Images age out with `sweep`: a file's modification time is the last time
any job stored it (storing an image that is already there touches it), so an
image goes once no job has stored it for the retention period.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import tempfile
from datetime import datetime
from pathlib import Path

_KEY = re.compile(r"^[0-9a-f]{64}\.(png|jpg|webp|gif)$")


def sniff_extension(data: bytes) -> str:
    """The file extension for image bytes, from their magic number."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    raise ValueError("not a PNG, JPEG, WebP or GIF image")


class ImageStore:
    """Images on disk under ``root/ab/abcdef….png``; writing the same image twice is free."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        """Where the image with ``key`` lives (ValueError for a malformed key)."""
        if not _KEY.match(key):
            raise ValueError(f"not an image key: {key!r}")
        return self.root / key[:2] / key

    async def put(self, data: bytes) -> str:
        """Store ``data`` and return its key."""
        key = f"{hashlib.sha256(data).hexdigest()}.{sniff_extension(data)}"
        await asyncio.to_thread(self._write_or_touch, self.path(key), data)
        return key

    @classmethod
    def _write_or_touch(cls, path: Path, data: bytes) -> None:
        try:
            os.utime(path)  # stored again: its age starts over (see sweep)
        except FileNotFoundError:
            cls._write(path, data)

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A name of its own per write: two jobs storing the same image at once
        # (same key) must not rename each other's half-written file away.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)  # readers never see half a file
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    async def get(self, key: str) -> bytes:
        """The bytes of a stored image (FileNotFoundError if absent)."""
        return await asyncio.to_thread(self.path(key).read_bytes)

    def exists(self, key: str) -> bool:
        """Whether the image is stored."""
        return self.path(key).exists()

    async def sweep(self, *, older_than: datetime) -> int:
        """Delete the images no job has stored since ``older_than``; returns how many."""
        return await asyncio.to_thread(self._sweep, older_than.timestamp())

    def _sweep(self, cutoff: float) -> int:
        deleted = 0
        for folder in self.root.glob("??"):
            for path in folder.iterdir():
                if not _KEY.match(path.name):
                    continue  # not ours (or a write in progress)
                try:
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        deleted += 1
                except FileNotFoundError:
                    continue  # swept by another process meanwhile
        return deleted
