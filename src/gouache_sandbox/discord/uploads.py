"""Discord's attachment upload flow, as the desktop client (and user accounts) use it.

1. ``POST /channels/{id}/attachments {files: [{id, filename, file_size}]}`` →
   ``{attachments: [{id, upload_url, upload_filename}]}`` (needs Attach Files;
   a file over the channel's limit → 400 code 40005 "Request entity too large").
2. ``PUT upload_url`` with the bytes (the sandbox serves the upload URLs; the
   byte count must match the announced ``file_size``, else 400).
3. The message or interaction that uses the file lists
   ``{id, filename, uploaded_filename}`` in its ``attachments``; an upload is
   claimed once (a second use, or a name never uploaded, is
   ``ATTACHMENT_NOT_FOUND``). Uploads nobody claimed expire after an hour.
"""

from __future__ import annotations

import uuid
from typing import Any, Final

from aiohttp import web

from gouache_sandbox.discord.payloads import ATTACHMENT_SIZE_LIMIT
from gouache_sandbox.discord.permissions import P
from gouache_sandbox.discord.restctx import Body, Ctx
from gouache_sandbox.discord.state import JSON, DiscordAPIError, SandboxState, invalid_form
from gouache_sandbox.discord.upload_claims import PendingUpload, Place

UPLOAD_TTL_S: Final = 3600.0
MAX_FILES: Final = 10


class CloudUploads:
    """The upload URLs of one sandbox (``state.uploads`` holds what is pending)."""

    def __init__(self, state: SandboxState, base_url: Any) -> None:
        self.state = state
        self._base_url = base_url
        self.puts = 0

    async def create(self, ctx: Ctx) -> Body:
        """``POST /channels/{id}/attachments``."""
        assert ctx.principal is not None
        channel = self.state.get_channel(ctx.int_param("channel_id"))
        self.state.require(ctx.principal.user.id, channel, P.SEND_MESSAGES, P.ATTACH_FILES)
        files = ctx.body().get("files")
        if not isinstance(files, list) or not files:
            raise invalid_form("files", "BASE_TYPE_REQUIRED", "This field is required")
        if len(files) > MAX_FILES:
            raise invalid_form("files", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
        self._expire()
        out: list[JSON] = []
        for i, item in enumerate(files):
            out.append(self._announce(channel, ctx.principal.user.id, i, item))
        return {"attachments": out}

    def _announce(self, channel: Place, user_id: int, i: int, item: Any) -> JSON:
        if not isinstance(item, dict) or not isinstance(item.get("filename"), str):
            raise invalid_form(
                f"files.{i}.filename", "BASE_TYPE_REQUIRED", "This field is required"
            )
        size = item.get("file_size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise invalid_form(f"files.{i}.file_size", "NUMBER_TYPE_COERCE", "Value is not int.")
        if size > ATTACHMENT_SIZE_LIMIT:
            raise DiscordAPIError(400, 40005, "Request entity too large")
        name = f"{uuid.uuid4()}/{item['filename']}"
        self.state.uploads[name] = PendingUpload(
            name, channel.id, user_id, item["filename"], size, self.state.clock.now()
        )
        return {
            "id": item.get("id", str(i)),
            "upload_url": f"{self._base_url()}/upload/{name}",
            "upload_filename": name,
        }

    async def put(self, request: web.Request) -> web.Response:
        """``PUT upload_url``: the bytes of an announced file."""
        name = request.match_info["name"]
        pending = self.state.uploads.get(name)
        if pending is None or pending.data is not None:
            return web.Response(status=404, text="No such upload.")
        data = await request.read()
        if len(data) != pending.size:
            return web.Response(status=400, text="The body does not match the announced size.")
        pending.data = data
        self.puts += 1
        return web.Response(status=200)

    def _expire(self) -> None:
        cutoff = self.state.clock.now() - UPLOAD_TTL_S
        for name in [n for n, u in self.state.uploads.items() if u.created_at < cutoff]:
            del self.state.uploads[name]
