"""The image a ComfyUI action starts from: a click's parent, found where it is.

A click on a ComfyUI result's button (Upscale, Vary, Zoom Out, Pan) runs a
workflow on the parent's image. The process that made the image keeps it in
its image store (content-addressed, ``parent.results``); another process (or
one whose store was swept) reads the posted result instead: the message the
bot posted it with (``GET /channels/{channel}/messages/{id}`` with the bot's
token, for a freshly signed attachment URL — stored CDN URLs expire) and then
the attachment itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp
import structlog
from pydantic import SecretStr

from gouache.errors import ErrorCode, GouacheError
from gouache.jobs import Job
from gouache.storage.images import ImageStore

log = structlog.get_logger(__name__)

DISCORD_API = "https://discord.com/api/v10"
MAX_BYTES = 64 * 2**20
_IMAGE_EXT = (".png", ".jpg", ".jpeg", ".webp", ".gif")


class ParentImageMissing(GouacheError):
    """The image a click acts on is neither stored here nor readable from its message."""

    code = ErrorCode.PARENT_UNAVAILABLE


class ParentImages:
    """Finds a click's parent image: the image store first, then the posted message."""

    def __init__(
        self,
        images: ImageStore,
        *,
        bot_token: SecretStr | None = None,
        api_base: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.images = images
        self._token = bot_token
        self.api_base = (api_base or DISCORD_API).rstrip("/")
        self.timeout_s = timeout_s
        self.downloads = 0

    async def parent_image(self, job: Job, session: aiohttp.ClientSession) -> bytes:
        """The bytes of the image ``job`` (a click) acts on; `ParentImageMissing` if gone."""
        parent = job.meta.get("parent")
        parent = parent if isinstance(parent, Mapping) else {}
        results = parent.get("results")
        key = results[0] if isinstance(results, list) and results else None
        if isinstance(key, str):
            try:
                if self.images.exists(key):
                    return await self.images.get(key)
            except (OSError, ValueError):
                pass
        data = await self._from_message(parent, session)
        if data is None:
            raise ParentImageMissing("The image this button acts on is no longer available.")
        if isinstance(key, str):
            # Keep it: the next click on the same image needs no download.
            await self.images.put(data)
        return data

    async def _from_message(
        self, parent: Mapping[str, Any], session: aiohttp.ClientSession
    ) -> bytes | None:
        channel, message = parent.get("posted_channel_id"), parent.get("posted_message_id")
        if self._token is None or not channel or not message:
            return None
        headers = {"Authorization": f"Bot {self._token.get_secret_value()}"}
        url = f"{self.api_base}/channels/{channel}/messages/{message}"
        try:
            async with asyncio.timeout(self.timeout_s):
                async with session.get(url, headers=headers) as resp:
                    if resp.status != 200:
                        log.warning("comfyui.parent_message_unreadable", status=resp.status)
                        return None
                    body = await resp.json()
                attachment = _image_url(body)
                if attachment is None:
                    return None
                async with session.get(attachment) as resp:
                    if resp.status != 200 or (resp.content_length or 0) > MAX_BYTES:
                        return None
                    data = await resp.read()
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            log.warning("comfyui.parent_download_failed", error=type(exc).__name__)
            return None
        self.downloads += 1
        return data


def _image_url(message: Any) -> str | None:
    attachments = message.get("attachments") if isinstance(message, Mapping) else None
    for att in attachments if isinstance(attachments, list) else []:
        if not isinstance(att, Mapping):
            continue
        ctype = str(att.get("content_type") or "")
        name = str(att.get("filename") or "").lower()
        url = att.get("url")
        if isinstance(url, str) and (ctype.startswith("image/") or name.endswith(_IMAGE_EXT)):
            return url
    return None
