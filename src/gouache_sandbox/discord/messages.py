"""Message bodies: validate what callers send (as Discord does) and apply it to stored messages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from gouache_sandbox.discord.permissions import P
from gouache_sandbox.discord.state import (
    JSON,
    Attachment,
    DiscordAPIError,
    Message,
    SandboxState,
    User,
    invalid_form,
    missing_permissions,
)
from gouache_sandbox.discord.upload_claims import claim

MESSAGE_FLAG_EPHEMERAL = 1 << 6
MESSAGE_FLAG_LOADING = 1 << 7
#: Flags a sender may set (suppress embeds, ephemeral, suppress notifications, components v2).
SETTABLE_FLAGS = (1 << 2) | MESSAGE_FLAG_EPHEMERAL | (1 << 12) | (1 << 15)


class Place(Protocol):
    """Where a message goes: a guild channel or a DM channel."""

    @property
    def id(self) -> int: ...

    @property
    def guild_id(self) -> int | None: ...


@dataclass(frozen=True)
class UploadedFile:
    """One ``files[n]`` part of a multipart request."""

    index: int
    filename: str
    content_type: str
    data: bytes


def image_size(data: bytes) -> tuple[int, int] | None:
    # PNG: width/height live in the IHDR chunk at a fixed offset.
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return None


def validate_embeds(embeds: Any, field: str = "embeds") -> list[JSON]:
    """Discord's embed limits: 10 embeds, title 256, description 4096, 25 fields, 6000 total."""
    if embeds is None:
        return []
    if not isinstance(embeds, list) or len(embeds) > 10:
        raise invalid_form(field, "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
    total = 0
    out: list[JSON] = []
    for i, embed in enumerate(embeds):
        if not isinstance(embed, dict):
            raise invalid_form(
                f"{field}.{i}", "MODEL_TYPE_CONVERT", "Only dictionaries may be used"
            )
        title = str(embed.get("title") or "")
        description = str(embed.get("description") or "")
        fields = embed.get("fields") or []
        if len(title) > 256:
            raise invalid_form(
                f"{field}.{i}.title", "BASE_TYPE_MAX_LENGTH", "Must be 256 or fewer in length."
            )
        if len(description) > 4096:
            raise invalid_form(
                f"{field}.{i}.description",
                "BASE_TYPE_MAX_LENGTH",
                "Must be 4096 or fewer in length.",
            )
        if not isinstance(fields, list) or len(fields) > 25:
            raise invalid_form(
                f"{field}.{i}.fields", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length."
            )
        total += len(title) + len(description)
        for f in fields:
            if not isinstance(f, dict) or "name" not in f or "value" not in f:
                raise invalid_form(
                    f"{field}.{i}.fields", "BASE_TYPE_REQUIRED", "This field is required"
                )
            total += len(str(f["name"])) + len(str(f["value"]))
        footer = embed.get("footer")
        if isinstance(footer, dict):
            total += len(str(footer.get("text") or ""))
        author = embed.get("author")
        if isinstance(author, dict):
            total += len(str(author.get("name") or ""))
        out.append({**embed, "type": embed.get("type", "rich")})
    if total > 6000:
        raise invalid_form(
            field, "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000"
        )
    return out


def validate_components(components: Any, field: str = "components") -> list[JSON]:
    """Action rows (type 1) of at most 5 buttons, at most 5 rows, custom_id ≤ 100 chars."""
    if components is None:
        return []
    if not isinstance(components, list) or len(components) > 5:
        raise invalid_form(field, "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length.")
    out: list[JSON] = []
    seen: set[str] = set()
    for r, row in enumerate(components):
        if not isinstance(row, dict) or row.get("type") != 1:
            raise invalid_form(
                f"{field}.{r}.type", "UNION_TYPE_CHOICES", "Value must be one of {1}."
            )
        children = row.get("components")
        if not isinstance(children, list) or not 1 <= len(children) <= 5:
            raise invalid_form(
                f"{field}.{r}.components",
                "BASE_TYPE_BAD_LENGTH",
                "Must be between 1 and 5 in length.",
            )
        for c, comp in enumerate(children):
            path = f"{field}.{r}.components.{c}"
            if not isinstance(comp, dict) or not isinstance(comp.get("type"), int):
                raise invalid_form(path, "MODEL_TYPE_CONVERT", "Only dictionaries may be used")
            if comp["type"] == 2 and comp.get("style") != 5:
                custom_id = comp.get("custom_id")
                if not isinstance(custom_id, str) or not 1 <= len(custom_id) <= 100:
                    raise invalid_form(
                        f"{path}.custom_id",
                        "BASE_TYPE_BAD_LENGTH",
                        "Must be between 1 and 100 in length.",
                    )
                if custom_id in seen:
                    raise invalid_form(
                        f"{path}.custom_id",
                        "COMPONENT_CUSTOM_ID_DUPLICATED",
                        "Component custom id cannot be duplicated",
                    )
                seen.add(custom_id)
        out.append({"type": 1, "components": [dict(c) for c in children]})
    return out


def custom_ids(msg: Message) -> dict[str, JSON]:
    """Every component with a custom_id on ``msg``, by custom_id."""
    out: dict[str, JSON] = {}
    for row in msg.components:
        for comp in row.get("components", []):
            if isinstance(comp, dict) and "custom_id" in comp:
                out[str(comp["custom_id"])] = comp
    return out


def _attachments(  # noqa: PLR0913
    state: SandboxState,
    channel: Place,
    payload: JSON,
    files: list[UploadedFile],
    existing: list[Attachment],
    author_id: int,
) -> list[Attachment]:
    by_index = {f.index: f for f in files}
    listed = payload.get("attachments")
    out: list[Attachment] = []
    used: set[int] = set()
    if isinstance(listed, list):
        for i, item in enumerate(listed):
            if not isinstance(item, dict) or "id" not in item:
                raise invalid_form(
                    f"attachments.{i}.id", "BASE_TYPE_REQUIRED", "This field is required"
                )
            if "uploaded_filename" in item:  # uploaded beforehand (POST …/attachments, PUT)
                out.append(claim(state, channel, author_id, item, f"attachments.{i}"))
                continue
            key = int(item["id"])
            if key in by_index:
                f = by_index[key]
                used.add(key)
                out.append(_store(state, channel, f, item.get("filename"), item.get("description")))
            else:
                kept = [a for a in existing if a.id == key]
                if not kept:
                    raise invalid_form(
                        f"attachments.{i}.id", "ATTACHMENT_NOT_FOUND", "Unknown attachment"
                    )
                out.extend(kept)
    elif existing:
        out.extend(existing)
    for f in files:
        if f.index not in used:
            out.append(_store(state, channel, f, None, None))
    return out


def _store(
    state: SandboxState, channel: Place, f: UploadedFile, name: Any, description: Any
) -> Attachment:
    size = image_size(f.data)
    return state.add_attachment(
        channel.id,
        str(name or f.filename),
        f.data,
        f.content_type,
        width=size[0] if size else None,
        height=size[1] if size else None,
        description=str(description) if description else None,
    )


def _gate(payload: JSON, files: list[UploadedFile], allowed: int | None) -> bool:
    """Check a body against the sender's bits: 403 for files or TTS they may not send.

    Returns whether embeds may stay: without EMBED_LINKS Discord accepts the
    message and drops its embeds (an embed-only message is then empty: 50006).
    """
    if allowed is None:
        return True
    if files and not allowed & P.ATTACH_FILES:
        raise missing_permissions()
    if payload.get("tts") and not allowed & P.SEND_TTS_MESSAGES:
        raise missing_permissions()
    return bool(allowed & P.EMBED_LINKS)


def new_message(  # noqa: PLR0913
    state: SandboxState,
    channel: Place,
    author: User,
    payload: JSON,
    files: list[UploadedFile],
    *,
    allow_components: bool,
    type: int = 0,
    allowed: int | None = None,
) -> Message:
    """Build a message from a create body, validating it like Discord; not yet stored.

    ``allowed`` is the sender's permission bits in the channel (None: unchecked).
    """
    keep_embeds = _gate(payload, files, allowed)
    content = payload.get("content")
    if content is not None and not isinstance(content, str):
        content = str(content)
    content = content or ""
    if len(content) > 2000:
        raise invalid_form("content", "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.")
    embeds = validate_embeds(payload.get("embeds"))
    if payload.get("embed"):
        embeds = validate_embeds([payload["embed"]])
    if not keep_embeds:
        embeds = []
    components = validate_components(payload.get("components"))
    if components and not allow_components:
        raise DiscordAPIError(
            400,
            50035,
            "Invalid Form Body",
            {
                "components": {
                    "_errors": [
                        {
                            "code": "COMPONENT_USER_FORBIDDEN",
                            "message": "Only bots may send components",
                        }
                    ]
                }
            },
        )
    flags = int(payload.get("flags") or 0) & SETTABLE_FLAGS
    nonce = payload.get("nonce")
    if nonce is not None and (isinstance(nonce, bool) or not isinstance(nonce, int | str)):
        raise invalid_form("nonce", "NONCE_TYPE_INVALID", "Nonce must be an integer or a string")
    if isinstance(nonce, str) and len(nonce) > 25:
        raise invalid_form("nonce", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
    msg = Message(
        id=state.ids.next(),
        channel_id=channel.id,
        guild_id=channel.guild_id,
        author=author,
        content=content,
        created_at=state.clock.now(),
        embeds=embeds,
        components=components,
        nonce=str(nonce) if nonce is not None else None,
        type=type,
        flags=flags,
    )
    msg.attachments = _attachments(state, channel, payload, files, [], author.id)
    ref = payload.get("message_reference")
    if isinstance(ref, dict) and ref.get("message_id"):
        msg.message_reference = {
            "type": 0,
            "message_id": str(ref["message_id"]),
            "channel_id": str(ref.get("channel_id") or channel.id),
        }
        if channel.guild_id is not None:
            msg.message_reference["guild_id"] = str(channel.guild_id)
        msg.type = 19
    if not (msg.content or msg.embeds or msg.attachments or msg.components):
        raise DiscordAPIError(400, 50006, "Cannot send an empty message")
    return msg


def apply_edit(  # noqa: PLR0913
    state: SandboxState,
    msg: Message,
    payload: JSON,
    files: list[UploadedFile],
    *,
    allowed: int | None = None,
    require_content: bool = True,
) -> None:
    """Apply an edit body to ``msg`` (only the fields present change); not yet announced.

    ``allowed`` is the editor's permission bits (None: unchecked): new files
    need ATTACH_FILES, embeds are dropped without EMBED_LINKS. An edit that
    would leave the message empty is refused (50006) and changes nothing.
    """
    keep_embeds = _gate(payload, files, allowed)
    channel = state.get_channel(msg.channel_id)
    content, embeds, components = msg.content, msg.embeds, msg.components
    flags = msg.flags
    if "content" in payload:
        text = payload["content"] or ""
        if len(str(text)) > 2000:
            raise invalid_form(
                "content", "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length."
            )
        content = str(text)
    if "embeds" in payload:
        embeds = validate_embeds(payload["embeds"])
    if "embed" in payload:
        embeds = validate_embeds([payload["embed"]] if payload["embed"] else [])
    if not keep_embeds and ("embeds" in payload or "embed" in payload):
        embeds = []
    if "components" in payload:
        components = validate_components(payload["components"])
    if "flags" in payload and payload["flags"] is not None:
        keep = msg.flags & MESSAGE_FLAG_EPHEMERAL
        flags = (int(payload["flags"]) & SETTABLE_FLAGS & ~MESSAGE_FLAG_EPHEMERAL) | keep
    attachments = msg.attachments
    if "attachments" in payload or files:
        attachments = _attachments(state, channel, payload, files, msg.attachments, msg.author.id)
    if require_content and not (content or embeds or attachments or components):
        raise DiscordAPIError(400, 50006, "Cannot send an empty message")
    msg.content, msg.embeds, msg.components = content, embeds, components
    msg.attachments = attachments
    # An edit of a deferred ("thinking") response turns it into a real message.
    msg.flags = flags & ~MESSAGE_FLAG_LOADING
