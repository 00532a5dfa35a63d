"""What the sandbox's web viewer shows: plain JSON views of guilds, members, messages and status.

Pure functions of the sandbox state, so every rule (attachment references,
ephemeral marks, option parsing, secret scrubbing) is tested without a
browser. The viewer builds its own shapes instead of reusing the REST
payloads: the page needs resolved names and URLs, and nothing that carries a
token may reach it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from gouache_sandbox.discord.messages import MESSAGE_FLAG_EPHEMERAL, MESSAGE_FLAG_LOADING
from gouache_sandbox.discord.state import (
    JSON,
    Attachment,
    Command,
    Guild,
    MemberInfo,
    Message,
    SandboxState,
)

#: Embed keys whose ``url`` (or ``icon_url``) may be an ``attachment://name`` reference.
_EMBED_MEDIA = (
    ("image", "url"),
    ("thumbnail", "url"),
    ("author", "icon_url"),
    ("footer", "icon_url"),
)
_ATTACHMENT_SCHEME = "attachment://"
_MENTION = re.compile(r"<@!?(\d+)>")
#: Keys whose values are replaced before a status dict reaches the page.
_SECRET_KEY = re.compile(r"token|secret|password|passwd|authorization|api[_-]?key|cookie", re.I)
#: Application command option types the command box can fill in.
_STRING, _INTEGER, _BOOLEAN, _NUMBER = 3, 4, 5, 10


class CommandLineError(ValueError):
    """A ``/command`` line the viewer cannot turn into an interaction; the message says why."""


def attachment_url(att: Attachment) -> str:
    """The sandbox path an attachment is downloaded from (relative, so any host name works)."""
    return f"/attachments/{att.channel_id}/{att.id}/{quote(att.filename)}"


def _attachment_view(att: Attachment, referenced: set[str]) -> JSON:
    return {
        "id": str(att.id),
        "filename": att.filename,
        "url": attachment_url(att),
        "content_type": att.content_type,
        "size": len(att.data),
        "width": att.width,
        "height": att.height,
        "image": att.content_type.startswith("image/"),
        "in_embed": att.filename in referenced,
    }


def resolve_embed(embed: Mapping[str, Any], attachments: list[Attachment]) -> JSON:
    """A copy of ``embed`` whose ``attachment://name`` references point at the sandbox's files.

    A reference to a file the message does not carry keeps ``url: None`` and a
    ``missing`` name, which the page shows as a broken image (as Discord does).
    """
    by_name = {a.filename: a for a in attachments}
    out: JSON = dict(embed)
    for key, url_key in _EMBED_MEDIA:
        media = embed.get(key)
        if not isinstance(media, Mapping):
            continue
        copy = dict(media)
        url = copy.get(url_key)
        if isinstance(url, str) and url.startswith(_ATTACHMENT_SCHEME):
            name = url[len(_ATTACHMENT_SCHEME) :]
            att = by_name.get(name)
            if att is None:
                copy[url_key] = None
                copy["missing"] = name
            else:
                copy[url_key] = attachment_url(att)
                if key in ("image", "thumbnail") and att.width and att.height:
                    copy["width"], copy["height"] = att.width, att.height
        out[key] = copy
    return out


def _referenced_names(embeds: list[JSON]) -> set[str]:
    names: set[str] = set()
    for embed in embeds:
        for key, url_key in _EMBED_MEDIA:
            media = embed.get(key)
            if isinstance(media, Mapping):
                url = media.get(url_key)
                if isinstance(url, str) and url.startswith(_ATTACHMENT_SCHEME):
                    names.add(url[len(_ATTACHMENT_SCHEME) :])
    return names


def _components_view(rows: list[JSON]) -> list[list[JSON]]:
    out: list[list[JSON]] = []
    for row in rows:
        items: list[JSON] = []
        for comp in row.get("components", []):
            if not isinstance(comp, Mapping):
                continue
            emoji = comp.get("emoji")
            items.append(
                {
                    "type": comp.get("type"),
                    "style": comp.get("style", 2),
                    "label": comp.get("label") or "",
                    "emoji": emoji.get("name") if isinstance(emoji, Mapping) else None,
                    "custom_id": comp.get("custom_id"),
                    "url": comp.get("url"),
                    "disabled": bool(comp.get("disabled", False)),
                }
            )
        if items:
            out.append(items)
    return out


def display_name(state: SandboxState, user_id: int, guild_id: int | None = None) -> str:
    """A member's nickname, else the user's global or user name, else the raw id."""
    if guild_id is not None:
        info = state.guilds.get(guild_id, None)
        member = info.members.get(user_id) if info is not None else None
        if member is not None and member.nick:
            return member.nick
    user = state.users.get(user_id)
    if user is None:
        return str(user_id)
    return user.global_name or user.username


def _mentions(state: SandboxState, msg: Message) -> dict[str, str]:
    texts = [msg.content]
    for embed in msg.embeds:
        texts.append(str(embed.get("description") or ""))
        for f in embed.get("fields") or []:
            if isinstance(f, Mapping):
                texts.append(str(f.get("value") or ""))
    ids = {int(m) for text in texts for m in _MENTION.findall(text)}
    ids.update(u.id for u in msg.mentions)
    return {str(i): display_name(state, i, msg.guild_id) for i in sorted(ids)}


def message_view(state: SandboxState, msg: Message, seq: int = 0) -> JSON:
    """The page's view of one message (author names resolved, attachment references resolved)."""
    embeds = [resolve_embed(e, msg.attachments) for e in msg.embeds]
    referenced = _referenced_names(msg.embeds)
    author = msg.author
    interaction: JSON | None = None
    meta = msg.interaction_metadata
    if meta is not None:
        user = meta.get("user")
        user_id = int(user["id"]) if isinstance(user, Mapping) and "id" in user else None
        interaction = {
            "type": meta.get("type"),
            "name": meta.get("name"),
            "user": display_name(state, user_id, msg.guild_id) if user_id is not None else None,
            "user_id": str(user_id) if user_id is not None else None,
        }
    reference = msg.message_reference.get("message_id") if msg.message_reference else None
    ephemeral_to = None
    if msg.visible_to is not None or msg.flags & MESSAGE_FLAG_EPHEMERAL:
        who = msg.visible_to
        ephemeral_to = display_name(state, who, msg.guild_id) if who is not None else "someone"
    return {
        "id": str(msg.id),
        "seq": seq,
        "channel_id": str(msg.channel_id),
        "type": msg.type,
        "author": {
            "id": str(author.id),
            "name": display_name(state, author.id, msg.guild_id),
            "bot": author.bot,
        },
        "content": msg.content,
        "mentions": _mentions(state, msg),
        "created_at": msg.created_at,
        "edited_at": msg.edited_at,
        "embeds": embeds,
        "attachments": [_attachment_view(a, referenced) for a in msg.attachments],
        "components": _components_view(msg.components),
        "interaction": interaction,
        "reference": str(reference) if reference else None,
        "ephemeral_to": ephemeral_to,
        "loading": bool(msg.flags & MESSAGE_FLAG_LOADING),
    }


def deleted_view(msg: Message, seq: int) -> JSON:
    """What the page needs to remove a message."""
    return {"id": str(msg.id), "channel_id": str(msg.channel_id), "seq": seq}


# -- guilds, members, commands ---------------------------------------------------------------


def account_user_ids(state: SandboxState) -> set[int]:
    """Users who log in with a token of their own (bots and self-bot accounts): not people."""
    return {p.user.id for p in state.tokens.values()}


def playable_members(state: SandboxState, guild: Guild) -> list[MemberInfo]:
    """Members a person at the viewer may act as: not bots, not token accounts.

    The owner :meth:`DiscordSandbox.add_guild` makes up when none is given
    (named ``<guild>-owner``) is left out too: nobody plays it.
    """
    accounts = account_user_ids(state)
    out: list[MemberInfo] = []
    for info in guild.members.values():
        user = info.user
        if user.bot or user.id in accounts:
            continue
        if user.id == guild.owner_id and user.username == f"{guild.name}-owner":
            continue
        out.append(info)
    return out


def visible_commands(state: SandboxState, guild: Guild) -> list[Command]:
    """Chat commands members of ``guild`` can run: its own, then global ones of apps in it.

    Applications answered by a person (the bot under test) come before those
    the sandbox answers itself (the Midjourney stand-in), so a bare
    ``/imagine`` reaches the bot. A command that needs a file (a required
    attachment option, like /blend) cannot be typed in the viewer's text box.
    """
    found = [
        c
        for c in state.commands.values()
        if c.type == 1
        and not any(o.get("type") == 11 and o.get("required") for o in c.options)
        and c.guild_id in (None, guild.id)
        and c.application_id in state.applications
        and state.applications[c.application_id].bot.id in guild.members
    ]
    found.sort(
        key=lambda c: (
            c.application_id in state.app_handlers,
            c.guild_id is None,
            c.name,
            c.application_id,
        )
    )
    return found


def command_view(state: SandboxState, cmd: Command) -> JSON:
    """A command as the command box's suggestions list shows it."""
    return {
        "name": cmd.name,
        "description": cmd.description,
        "application_id": str(cmd.application_id),
        "application": state.applications[cmd.application_id].name,
        "options": [
            {
                "name": str(o.get("name")),
                "type": o.get("type"),
                "required": bool(o.get("required", False)),
                "description": str(o.get("description") or ""),
            }
            for o in cmd.options
        ],
    }


def member_view(state: SandboxState, guild: Guild, info: MemberInfo) -> JSON:
    """A member for the "act as" dropdown."""
    return {
        "id": str(info.user.id),
        "name": display_name(state, info.user.id, guild.id),
        "roles": [guild.roles[r].name for r in info.roles if r in guild.roles and r != guild.id],
        "locale": info.locale,
    }


def guild_view(state: SandboxState, guild: Guild) -> JSON:
    """A guild with its channels, playable members and runnable commands."""
    channels = sorted(guild.channels.values(), key=lambda c: (c.position, c.id))
    return {
        "id": str(guild.id),
        "name": guild.name,
        "channels": [
            {"id": str(c.id), "name": c.name, "topic": c.topic, "type": c.type} for c in channels
        ],
        "members": [member_view(state, guild, m) for m in playable_members(state, guild)],
        "commands": [command_view(state, c) for c in visible_commands(state, guild)],
    }


# -- the command box -----------------------------------------------------------------------------


def split_command_line(text: str) -> tuple[str, str]:
    """``"/imagine a fox"`` → ``("imagine", "a fox")``."""
    text = text.strip()
    if not text.startswith("/"):
        raise CommandLineError("type a slash command, e.g. /imagine a red fox")
    name, _, rest = text[1:].partition(" ")
    name = name.strip().lower()
    if not name:
        raise CommandLineError("the command name is missing after /")
    return name, rest.strip()


def _convert(spec: Mapping[str, Any], raw: str) -> Any:
    kind = int(spec.get("type", _STRING))
    name = spec.get("name")
    if kind == _INTEGER:
        try:
            return int(raw)
        except ValueError:
            raise CommandLineError(f"option {name} must be a whole number, not {raw!r}") from None
    if kind == _NUMBER:
        try:
            return float(raw)
        except ValueError:
            raise CommandLineError(f"option {name} must be a number, not {raw!r}") from None
    if kind == _BOOLEAN:
        lowered = raw.lower()
        if lowered in ("true", "yes", "1", "on"):
            return True
        if lowered in ("false", "no", "0", "off"):
            return False
        raise CommandLineError(f"option {name} must be true or false, not {raw!r}")
    return raw


def parse_options(rest: str, schema: list[JSON]) -> dict[str, Any]:
    """The options of a command line, the way a person types them in Discord's box.

    Two forms: ``/imagine a red fox --ar 16:9`` (everything goes to the first
    required text option), or Discord's ``/imagine prompt:a red fox seed:42``
    (used only when the text starts with ``<option>:``, so a prompt such as
    ``"a sign saying seed: 4"`` stays whole).
    """
    by_name = {str(o.get("name")): o for o in schema}
    if not rest:
        return {}
    names = sorted(by_name, key=len, reverse=True)
    keyed = (
        re.compile(r"(?:^|\s)(" + "|".join(re.escape(n) for n in names) + r"):") if names else None
    )
    if keyed is not None and rest.startswith(tuple(f"{n}:" for n in names)):
        out: dict[str, Any] = {}
        matches = list(keyed.finditer(rest))
        for i, m in enumerate(matches):
            end = matches[i + 1].start() if i + 1 < len(matches) else len(rest)
            value = rest[m.end() : end].strip()
            name = m.group(1)
            if name in out:
                raise CommandLineError(f"option {name} is given twice")
            out[name] = _convert(by_name[name], value)
        return out
    text_options = [o for o in schema if int(o.get("type", 0)) == _STRING]
    target = next((o for o in text_options if o.get("required")), None) or next(
        iter(text_options), None
    )
    if target is None:
        raise CommandLineError("this command takes no text; use name:value options")
    return {str(target["name"]): rest}


# -- status -----------------------------------------------------------------------------------------


def scrub(value: Any) -> Any:
    """A JSON-able copy of ``value`` with secret-looking keys masked (belt and braces)."""
    if isinstance(value, Mapping):
        return {
            str(k): ("***" if _SECRET_KEY.search(str(k)) else scrub(v)) for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [scrub(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
