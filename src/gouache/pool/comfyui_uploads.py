"""Images into ComfyUI: ``POST /upload/image``, once per image and server.

A job that starts from an image (a button on a result, a member's input
image) has it uploaded to the server's ``input`` folder and names it in the
workflow's LoadImage node. `ImageUploads` keeps, per server, which images it
already holds: uploads are content-addressed (``gouache-<sha256[:32]>.png``,
``overwrite=true``), so the same bytes are sent once, and a server that lost
its input folder (a restart) gets them again after `forget`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import aiohttp
import structlog

from gouache.pool.comfyui_client import ComfyUIClient, ComfyUIRejected

log = structlog.get_logger(__name__)

__all__ = ["ImageUploads", "upload_image", "upload_name"]


def upload_name(data: bytes) -> str:
    """The content-addressed name an image is uploaded under."""
    return f"gouache-{hashlib.sha256(data).hexdigest()[:32]}.png"


def _loadimage_name(body: Any, fallback: str) -> str:
    """What LoadImage takes for an ``/upload/image`` answer: ``subfolder/name`` or ``name``."""
    if not isinstance(body, Mapping) or not isinstance(body.get("name"), str):
        return fallback
    sub = body.get("subfolder")
    name = str(body["name"])
    return f"{sub}/{name}" if isinstance(sub, str) and sub else name


async def upload_image(client: ComfyUIClient, data: bytes, filename: str) -> str:
    """``POST /upload/image`` (multipart ``image``, ``type=input``, ``overwrite=true``).

    Returns the name to put into LoadImage (``subfolder/name`` when the server
    filed it in a subfolder). Raises `ComfyUIUnreachable` / `ComfyUIRejected`.
    """
    form = aiohttp.FormData()
    form.add_field("image", data, filename=filename, content_type="image/png")
    form.add_field("type", "input")
    form.add_field("overwrite", "true")
    answer = await client.post_form("upload/image", form)
    if answer.status != 200:
        raise ComfyUIRejected(
            f"The image server {client.name} answered HTTP {answer.status} to an upload."
        )
    return _loadimage_name(answer.body, filename)


class ImageUploads:
    """Which images one server holds already (content-addressed; see the module docstring)."""

    def __init__(self, client: ComfyUIClient) -> None:
        self.client = client
        self._held: dict[str, str] = {}  # sha256 name -> what LoadImage takes
        self.uploads = 0

    async def ensure(self, data: bytes) -> str:
        """The LoadImage name of ``data`` on this server, uploading it the first time."""
        name = upload_name(data)
        held = self._held.get(name)
        if held is not None:
            return held
        given = await upload_image(self.client, data, name)
        self._held[name] = given
        self.uploads += 1
        log.info("comfyui.uploaded", worker=self.client.name, image=name, bytes=len(data))
        return given

    def forget(self, loadimage_name: str | None = None) -> None:
        """The server lost an image (or, with no name, everything): upload it again next time."""
        if loadimage_name is None:
            self._held.clear()
            return
        for key, value in list(self._held.items()):
            if value == loadimage_name:
                del self._held[key]
