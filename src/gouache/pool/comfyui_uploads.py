"""Sending images to a ComfyUI server for its LoadImage nodes.

`upload_image` is ``POST /upload/image`` (multipart: ``image``, ``type=input``,
``overwrite=true``); it returns the name LoadImage takes (``subfolder/name``
when the server put it in a subfolder). `ImageUploads` remembers, per server,
which images it already holds: the upload name is content-addressed
(``gouache-<sha256[:32]>.png``), so an image goes up once per server however
many jobs use it, and `ImageUploads.forget` makes the next `ensure` upload it
again (after the server restarted and a LoadImage run failed on a missing file).
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Final

import aiohttp

from gouache.pool.comfyui_client import ComfyUIClient, ComfyUIRejected, ComfyUIUnreachable

__all__ = ["ImageUploads", "upload_image", "upload_name"]

_MAX_NAME: Final = 255


def upload_name(data: bytes) -> str:
    """The content-addressed file name an image is uploaded under."""
    return f"gouache-{hashlib.sha256(data).hexdigest()[:32]}.png"


async def upload_image(client: ComfyUIClient, data: bytes, filename: str) -> str:
    """``POST /upload/image``; the name to put into LoadImage's ``image`` input."""
    form = aiohttp.FormData()
    form.add_field("image", data, filename=filename, content_type="image/png")
    form.add_field("type", "input")
    form.add_field("overwrite", "true")
    try:
        async with (
            asyncio.timeout(client.request_s),
            client._http().post(client.base / "upload" / "image", data=form) as resp,
        ):
            if resp.status != 200:
                raise ComfyUIRejected(
                    f"The image server {client.name} answered HTTP {resp.status} to an upload."
                )
            body = await resp.json(content_type=None)
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        raise ComfyUIUnreachable(f"The image server {client.name} did not take an image.") from exc
    name = body.get("name") if isinstance(body, dict) else None
    if not isinstance(name, str) or not name or len(name) > _MAX_NAME:
        raise ComfyUIRejected(f"The image server {client.name} did not name the uploaded image.")
    subfolder = body.get("subfolder") or ""
    return f"{subfolder}/{name}" if isinstance(subfolder, str) and subfolder else name


class ImageUploads:
    """One server's uploaded images, by content: each goes up once (`ensure`)."""

    def __init__(self, client: ComfyUIClient) -> None:
        self.client = client
        self._names: dict[str, str] = {}  # sha256 of the bytes -> LoadImage name
        self._locks: dict[str, asyncio.Lock] = {}
        self.uploads = 0  # POST /upload/image calls made

    async def ensure(self, data: bytes) -> str:
        """The LoadImage name of ``data`` on this server, uploading it the first time."""
        digest = hashlib.sha256(data).hexdigest()
        lock = self._locks.setdefault(digest, asyncio.Lock())
        async with lock:
            known = self._names.get(digest)
            if known is not None:
                return known
            name = await upload_image(self.client, data, upload_name(data))
            self.uploads += 1
            self._names[digest] = name
            return name

    def forget(self) -> None:
        """The server lost its input files (it restarted): upload everything again."""
        self._names.clear()
