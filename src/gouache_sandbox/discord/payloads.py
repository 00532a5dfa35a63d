"""Strict factories for every JSON object the sandbox sends.

A malformed dispatch raises inside discord.py and ends ``Client.start()``, so
nothing is sent that was not built here, field by field.
"""

from __future__ import annotations

import datetime
from typing import Any

from gouache_sandbox.discord.permissions import Overwrite
from gouache_sandbox.discord.state import (
    JSON,
    Application,
    Attachment,
    Channel,
    Command,
    DMChannel,
    Guild,
    Interaction,
    MemberInfo,
    Message,
    Role,
    SandboxState,
    User,
)

#: Discord's upload limit for an unboosted guild (bytes).
ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024


def iso(ts: float) -> str:
    """An ISO-8601 timestamp with offset, as Discord writes them."""
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).isoformat()


def user_payload(user: User) -> JSON:
    """A user object."""
    out: JSON = {
        "id": str(user.id),
        "username": user.username,
        "discriminator": "0",
        "global_name": user.global_name,
        "avatar": user.avatar,
        "public_flags": 0,
        "flags": 0,
    }
    if user.bot:
        out["bot"] = True
    return out


def current_user_payload(user: User) -> JSON:
    """``GET /users/@me``: the user object plus account fields."""
    out = user_payload(user)
    out.update({"verified": True, "mfa_enabled": False, "locale": "en-US", "email": None})
    return out


def application_payload(app: Application) -> JSON:
    """``GET /applications/@me`` and ``/oauth2/applications/@me``."""
    return {
        "id": str(app.id),
        "name": app.name,
        "icon": None,
        "description": f"{app.name} (sandbox)",
        "summary": "",
        "type": None,
        "bot_public": True,
        "bot_require_code_grant": False,
        "verify_key": "0" * 64,
        "owner": user_payload(app.owner),
        "team": None,
        "flags": app.flags,
        "bot": user_payload(app.bot),
        "interactions_endpoint_url": None,
        "rpc_origins": [],
        "tags": [],
        "redirect_uris": [],
    }


def role_payload(role: Role, bot_id: int | None = None) -> JSON:
    """A role object (a bot's managed role carries ``tags.bot_id``)."""
    out: JSON = {
        "id": str(role.id),
        "name": role.name,
        "color": role.color,
        "colors": {"primary_color": role.color, "secondary_color": None, "tertiary_color": None},
        "hoist": False,
        "icon": None,
        "unicode_emoji": None,
        "position": role.position,
        "permissions": str(role.permissions),
        "managed": role.managed,
        "mentionable": False,
        "flags": 0,
    }
    if bot_id is not None:
        out["tags"] = {"bot_id": str(bot_id)}
    return out


def overwrite_payload(ow: Overwrite) -> JSON:
    """A permission overwrite object (bits as strings, as in API v8+)."""
    return {"id": str(ow.id), "type": ow.type, "allow": str(ow.allow), "deny": str(ow.deny)}


def _managed_roles(guild: Guild) -> dict[int, int]:
    """Managed role id → the bot it belongs to (the bot member holding it)."""
    out: dict[int, int] = {}
    for member in guild.members.values():
        if member.user.bot:
            for rid in member.roles:
                role = guild.roles.get(rid)
                if role is not None and role.managed:
                    out[rid] = member.user.id
    return out


def channel_payload(channel: Channel) -> JSON:
    """A guild text channel object."""
    return {
        "id": str(channel.id),
        "type": channel.type,
        "guild_id": str(channel.guild_id),
        "name": channel.name,
        "position": channel.position,
        "permission_overwrites": [overwrite_payload(o) for o in channel.overwrites.values()],
        "parent_id": None,
        "topic": channel.topic,
        "nsfw": channel.nsfw,
        "rate_limit_per_user": 0,
        "last_message_id": str(channel.last_message_id) if channel.last_message_id else None,
        "flags": 0,
    }


def dm_channel_payload(dm: DMChannel, state: SandboxState, viewer_id: int) -> JSON:
    """A DM channel object as its member ``viewer_id`` sees it (recipients: the other one)."""
    return {
        "id": str(dm.id),
        "type": dm.type,
        "last_message_id": str(dm.last_message_id) if dm.last_message_id else None,
        "recipients": [user_payload(state.users[u]) for u in dm.recipients if u != viewer_id],
        "flags": 0,
    }


def partial_channel_payload(channel: Channel) -> JSON:
    """The channel object inside an interaction: the guild channel object, as Discord sends it."""
    return channel_payload(channel)


def member_payload(member: MemberInfo, *, with_user: bool = True, perms: int | None = None) -> JSON:
    """A guild member object (``perms`` adds the interaction-only ``permissions``)."""
    out: JSON = {
        "roles": [str(r) for r in member.roles],
        "joined_at": iso(member.joined_at),
        "nick": member.nick,
        "avatar": None,
        "premium_since": None,
        "deaf": False,
        "mute": False,
        "pending": False,
        "flags": 0,
        "communication_disabled_until": (
            iso(member.timed_out_until) if member.timed_out_until is not None else None
        ),
    }
    if with_user:
        out["user"] = user_payload(member.user)
    if perms is not None:
        out["permissions"] = str(perms)
    return out


def guild_payload(guild: Guild, *, me: User | None = None) -> JSON:
    """A full guild object as in GUILD_CREATE (members limited to ``me``)."""
    members = [
        member_payload(m) for m in guild.members.values() if me is None or m.user.id == me.id
    ]
    managed = _managed_roles(guild)
    return {
        "id": str(guild.id),
        "name": guild.name,
        "icon": None,
        "splash": None,
        "discovery_splash": None,
        "banner": None,
        "description": None,
        "owner_id": str(guild.owner_id),
        "afk_channel_id": None,
        "afk_timeout": 300,
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "mfa_level": 0,
        "nsfw_level": 0,
        "premium_tier": 0,
        "premium_subscription_count": 0,
        "premium_progress_bar_enabled": False,
        "preferred_locale": guild.preferred_locale,
        "system_channel_id": None,
        "system_channel_flags": 0,
        "rules_channel_id": None,
        "public_updates_channel_id": None,
        "safety_alerts_channel_id": None,
        "vanity_url_code": None,
        "features": [],
        "roles": [role_payload(r, managed.get(r.id)) for r in guild.roles.values()],
        "emojis": [],
        "stickers": [],
        "channels": [channel_payload(c) for c in guild.channels.values()],
        "threads": [],
        "members": members,
        "member_count": len(guild.members),
        "presences": [],
        "voice_states": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
        "large": False,
        "unavailable": False,
        "joined_at": iso(guild.members[me.id].joined_at) if me and me.id in guild.members else None,
        "lazy": True,
        "application_id": None,
        "max_members": 500000,
        "max_video_channel_users": 25,
    }


def attachment_payload(att: Attachment, base_url: str, now: float) -> JSON:
    """An attachment object with a signed-looking, sandbox-served URL."""
    expires = int(now) + 24 * 3600
    query = f"?ex={expires:x}&is={int(now):x}&hm={att.id:x}"
    url = f"{base_url}/attachments/{att.channel_id}/{att.id}/{att.filename}{query}"
    out: JSON = {
        "id": str(att.id),
        "filename": att.filename,
        "size": len(att.data),
        "url": url,
        "proxy_url": url,
        "content_type": att.content_type,
    }
    if att.width is not None and att.height is not None:
        out["width"] = att.width
        out["height"] = att.height
    if att.description is not None:
        out["description"] = att.description
    return out


def message_payload(msg: Message, state: SandboxState, base_url: str) -> JSON:
    """A message object (also the body of MESSAGE_CREATE/UPDATE, with ``guild_id``)."""
    out: JSON = {
        "id": str(msg.id),
        "type": msg.type,
        "channel_id": str(msg.channel_id),
        "author": user_payload(msg.author),
        "content": msg.content,
        "timestamp": iso(msg.created_at),
        "edited_timestamp": iso(msg.edited_at) if msg.edited_at is not None else None,
        "tts": False,
        "mention_everyone": False,
        "mentions": [user_payload(u) for u in msg.mentions],
        "mention_roles": [],
        "attachments": [
            attachment_payload(a, base_url, state.clock.now()) for a in msg.attachments
        ],
        "embeds": [dict(e) for e in msg.embeds],
        "components": [dict(c) for c in msg.components],
        "pinned": False,
        "flags": msg.flags,
    }
    if msg.guild_id is not None:
        out["guild_id"] = str(msg.guild_id)
        guild = state.guilds.get(msg.guild_id)
        if guild is not None and msg.author.id in guild.members and msg.webhook_id is None:
            out["member"] = member_payload(guild.members[msg.author.id], with_user=False)
    if msg.reactions:
        out["reactions"] = [_reaction_payload(e, users) for e, users in msg.reactions.items()]
    if msg.nonce is not None:
        out["nonce"] = msg.nonce
    if msg.webhook_id is not None:
        out["webhook_id"] = str(msg.webhook_id)
    if msg.application_id is not None:
        out["application_id"] = str(msg.application_id)
    if msg.interaction_metadata is not None:
        out["interaction_metadata"] = dict(msg.interaction_metadata)
    if msg.message_reference is not None:
        out["message_reference"] = dict(msg.message_reference)
    return out


def _reaction_payload(emoji: str, users: list[int]) -> JSON:
    name, _, eid = emoji.partition(":")
    return {
        "count": len(users),
        "count_details": {"burst": 0, "normal": len(users)},
        "me": False,
        "me_burst": False,
        "burst_colors": [],
        "emoji": {"id": eid or None, "name": name},
    }


def interaction_metadata(inter: Interaction, *, name: str | None = None) -> JSON:
    """``interaction_metadata`` for a message that answers ``inter``."""
    out: JSON = {
        "id": str(inter.id),
        "type": inter.type,
        "user": user_payload(inter.user),
        "authorizing_integration_owners": {"0": str(inter.guild_id or 0)},
    }
    if name is not None:
        out["name"] = name
    if inter.message_id is not None:
        out["interacted_message_id"] = str(inter.message_id)
    return out


def command_payload(cmd: Command) -> JSON:
    """An application command object."""
    out: JSON = {
        "id": str(cmd.id),
        "application_id": str(cmd.application_id),
        "version": str(cmd.version),
        "type": cmd.type,
        "name": cmd.name,
        "description": cmd.description,
        "options": [dict(o) for o in cmd.options],
        "default_member_permissions": cmd.default_member_permissions,
        "dm_permission": True,
        "nsfw": cmd.nsfw,
        "integration_types": [0],
        "contexts": None,
    }
    if cmd.guild_id is not None:
        out["guild_id"] = str(cmd.guild_id)
    for key in ("name_localizations", "description_localizations"):
        if key in cmd.extra:
            out[key] = cmd.extra[key]
    return out


def interaction_payload(  # noqa: PLR0913
    inter: Interaction,
    state: SandboxState,
    base_url: str,
    *,
    guild_locale: str,
    member: MemberInfo,
    channel: Channel,
    app_user_id: int,
) -> JSON:
    """INTERACTION_CREATE for a bot, carrying every field discord.py 2.7 reads.

    ``member.permissions`` and ``app_permissions`` are the computed bits in the
    channel, overwrites included and implicit rules not applied (as Discord
    documents for resolved channels): a client applies those itself.
    """
    out: JSON = {
        "id": str(inter.id),
        "application_id": str(inter.application_id),
        "type": inter.type,
        "token": inter.token,
        "version": 1,
        "attachment_size_limit": ATTACHMENT_SIZE_LIMIT,
        "data": dict(inter.data),
        "guild_id": str(channel.guild_id),
        "guild": {"id": str(channel.guild_id), "locale": guild_locale, "features": []},
        "channel_id": str(channel.id),
        "channel": partial_channel_payload(channel),
        "member": member_payload(member, perms=state.permissions(member.user.id, channel)),
        "locale": member.locale,
        "guild_locale": guild_locale,
        "app_permissions": str(state.permissions(app_user_id, channel)),
        "entitlements": [],
        "entitlement_sku_ids": [],
        "authorizing_integration_owners": {"0": str(channel.guild_id)},
        "context": 0,
    }
    if inter.message_id is not None:
        msg = state.get_message(inter.channel_id, inter.message_id)
        out["message"] = message_payload(msg, state, base_url)
    return out


def resolved_payload(  # noqa: PLR0913
    state: SandboxState,
    channel: Channel,
    options: list[JSON],
    attachments: list[Attachment],
    base_url: str,
    *,
    invoker_id: int,
    app_user_id: int,
) -> JSON:
    """``data.resolved`` for user (6), channel (7), role (8), mentionable (9) and
    attachment (11) options, in Discord's shapes: users with their partial members
    (no ``user``, ``deaf``, ``mute``; with ``permissions`` in the channel), roles,
    partial channels with ``permissions`` and ``app_permissions``, attachments."""
    guild = state.guilds[channel.guild_id]
    out: dict[str, dict[str, JSON]] = {}

    def add_user(uid: int) -> bool:
        user = state.users.get(uid)
        if user is None:
            return False
        out.setdefault("users", {})[str(uid)] = user_payload(user)
        member = guild.members.get(uid)
        if member is not None:
            partial = member_payload(member, with_user=False, perms=state.permissions(uid, channel))
            partial.pop("deaf", None)
            partial.pop("mute", None)
            out.setdefault("members", {})[str(uid)] = partial
        return True

    def add_role(rid: int) -> bool:
        role = guild.roles.get(rid)
        if role is None:
            return False
        out.setdefault("roles", {})[str(rid)] = role_payload(role)
        return True

    for opt in options:
        kind, value = int(opt["type"]), opt.get("value")
        if kind == 6 and not add_user(int(str(value))):
            raise ValueError(f"option {opt['name']!r}: no user {value}")
        if kind == 8 and not add_role(int(str(value))):
            raise ValueError(f"option {opt['name']!r}: no role {value} in the guild")
        if kind == 9 and not (add_user(int(str(value))) or add_role(int(str(value)))):
            raise ValueError(f"option {opt['name']!r}: {value} is neither a user nor a role")
        if kind == 7:
            target = state.channels.get(int(str(value)))
            if target is None or target.guild_id != guild.id:
                raise ValueError(f"option {opt['name']!r}: no channel {value} in the guild")
            part = {
                k: v
                for k, v in partial_channel_payload(target).items()
                if k != "permission_overwrites"
            }
            part["permissions"] = str(state.permissions(invoker_id, target))
            part["app_permissions"] = str(state.permissions(app_user_id, target))
            out.setdefault("channels", {})[str(target.id)] = part
    for att in attachments:
        out.setdefault("attachments", {})[str(att.id)] = attachment_payload(
            att, base_url, state.clock.now()
        )
    return dict(out)


def options_payload(options: dict[str, Any], schema: list[JSON]) -> list[JSON]:
    """Typed interaction options for ``options`` following the command's ``schema``."""
    by_name = {o["name"]: o for o in schema}
    out: list[JSON] = []
    for name, value in options.items():
        spec = by_name.get(name)
        if spec is None:
            raise ValueError(f"command has no option {name!r}")
        kind = int(spec["type"])
        if kind in (6, 7, 8, 9):
            # users, channels, roles, mentionables are sent as snowflake strings
            value = str(value)
        out.append({"type": kind, "name": name, "value": value})
    for spec in schema:
        if spec.get("required") and spec["name"] not in options:
            raise ValueError(f"required option {spec['name']!r} missing")
    return out
