"""Uploaded files waiting to be used, and their use (see `gouache_sandbox.discord.uploads`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gouache_sandbox.discord.payloads import attachment_payload
from gouache_sandbox.discord.state import JSON, Attachment, SandboxState, invalid_form


class Place(Protocol):
    """Where a file is used: a channel (guild or DM)."""

    @property
    def id(self) -> int: ...


@dataclass
class PendingUpload:
    """A file announced by ``POST …/attachments``; ``data`` once it was PUT."""

    name: str  # the upload_filename
    channel_id: int
    user_id: int
    filename: str
    size: int
    created_at: float
    data: bytes | None = None


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return None


def _content_type(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


def claim(state: SandboxState, channel: Place, user_id: int, item: JSON, where: str) -> Attachment:
    """The attachment an ``{id, filename, uploaded_filename}`` entry names (used once)."""
    name = item.get("uploaded_filename")
    pending = state.uploads.get(name) if isinstance(name, str) else None
    if (
        pending is None
        or pending.data is None
        or pending.user_id != user_id
        or pending.channel_id != channel.id
    ):
        raise invalid_form(where, "ATTACHMENT_NOT_FOUND", "Unknown attachment")
    del state.uploads[pending.name]
    size = _png_size(pending.data)
    return state.add_attachment(
        channel.id,
        str(item.get("filename") or pending.filename),
        pending.data,
        _content_type(pending.data),
        width=size[0] if size else None,
        height=size[1] if size else None,
    )


def resolve_uploads(
    state: SandboxState, channel: Place, user_id: int, data: JSON, base_url: str
) -> JSON:
    """A user's command interaction with ``data.attachments``: its ``resolved.attachments``.

    Each attachment option (type 11) must name one of the listed entries by id.
    """
    listed = data.get("attachments")
    if not listed:
        return {}
    if not isinstance(listed, list):
        raise invalid_form("data.attachments", "MODEL_TYPE_CONVERT", "Only lists may be used")
    resolved: JSON = {}
    for i, item in enumerate(listed):
        if not isinstance(item, dict) or "id" not in item:
            raise invalid_form(
                f"data.attachments.{i}.id", "BASE_TYPE_REQUIRED", "This field is required"
            )
        att = claim(state, channel, user_id, item, f"data.attachments.{i}")
        resolved[str(item["id"])] = attachment_payload(att, base_url, state.clock.now())
    for option in data.get("options") or []:
        if (
            isinstance(option, dict)
            and option.get("type") == 11
            and str(option.get("value")) not in resolved
        ):
            raise invalid_form("data.options", "ATTACHMENT_NOT_FOUND", "Unknown attachment")
    return {"resolved": {"attachments": resolved}}
