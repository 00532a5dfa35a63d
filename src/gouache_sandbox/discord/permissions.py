"""Discord's permission arithmetic, as its developer documentation states it.

* **Base permissions** (guild level): the guild owner has every bit; else the
  @everyone role (whose id is the guild's id) OR every role the member holds;
  ADMINISTRATOR then means every bit.
* **Overwrites** (channel level), in the documented order: the @everyone
  overwrite (deny, then allow); all of the member's role overwrites combined
  (deny all, then allow all); the member's own overwrite (deny, then allow).
  ADMINISTRATOR in the base skips overwrites.
* **Implicit permissions** (applied when an action is checked, not in the
  computed bits, which is also what interactions carry): without VIEW_CHANNEL
  nothing else in the channel counts; without SEND_MESSAGES neither do
  MENTION_EVERYONE, SEND_TTS_MESSAGES, ATTACH_FILES and EMBED_LINKS.
* **Interaction responses** (callback, follow-ups, webhook edits) are sent by
  the interaction webhook, not by the bot user: they need neither VIEW_CHANNEL
  nor SEND_MESSAGES. Discord's change log (June 2022) says ATTACH_FILES and
  EMBED_LINKS there are still taken from @everyone in the channel; the bot's
  own bits count only for MENTION_EVERYONE, SEND_TTS_MESSAGES and
  USE_EXTERNAL_EMOJIS.

* **Timed-out members** keep only VIEW_CHANNEL and READ_MESSAGE_HISTORY until
  the timeout ends (the owner and administrators are exempt).

The sandbox has no threads, categories or voice channels, so their rules
(SEND_MESSAGES_IN_THREADS, permission syncing, CONNECT) do not arise.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import IntFlag
from typing import Literal, Protocol


class P(IntFlag):
    """The permission bits the sandbox checks (Discord's values)."""

    CREATE_INSTANT_INVITE = 1 << 0
    KICK_MEMBERS = 1 << 1
    BAN_MEMBERS = 1 << 2
    ADMINISTRATOR = 1 << 3
    MANAGE_CHANNELS = 1 << 4
    MANAGE_GUILD = 1 << 5
    ADD_REACTIONS = 1 << 6
    VIEW_AUDIT_LOG = 1 << 7
    STREAM = 1 << 9
    VIEW_CHANNEL = 1 << 10
    SEND_MESSAGES = 1 << 11
    SEND_TTS_MESSAGES = 1 << 12
    MANAGE_MESSAGES = 1 << 13
    EMBED_LINKS = 1 << 14
    ATTACH_FILES = 1 << 15
    READ_MESSAGE_HISTORY = 1 << 16
    MENTION_EVERYONE = 1 << 17
    USE_EXTERNAL_EMOJIS = 1 << 18
    CONNECT = 1 << 20
    SPEAK = 1 << 21
    USE_VAD = 1 << 25
    CHANGE_NICKNAME = 1 << 26
    MANAGE_ROLES = 1 << 28
    MANAGE_WEBHOOKS = 1 << 29
    USE_APPLICATION_COMMANDS = 1 << 31
    MANAGE_THREADS = 1 << 34
    SEND_MESSAGES_IN_THREADS = 1 << 38


#: Every permission bit Discord defines today (through USE_EXTERNAL_APPS, 1 << 50).
ALL = (1 << 51) - 1
#: What a new guild's @everyone role allows (Discord's long-standing default, 104324673,
#: plus USE_APPLICATION_COMMANDS, which Discord added to it).
DEFAULT_EVERYONE = 104324673 | P.USE_APPLICATION_COMMANDS
#: What gouache's invite link asks for; the sandbox gives a bot a managed role with these.
DEFAULT_BOT = (
    P.VIEW_CHANNEL
    | P.SEND_MESSAGES
    | P.EMBED_LINKS
    | P.ATTACH_FILES
    | P.READ_MESSAGE_HISTORY
    | P.ADD_REACTIONS
    | P.USE_APPLICATION_COMMANDS
)
#: Bits SEND_MESSAGES implicitly gates.
_NEEDS_SEND = P.MENTION_EVERYONE | P.SEND_TTS_MESSAGES | P.ATTACH_FILES | P.EMBED_LINKS

OverwriteType = Literal[0, 1]  # 0 role, 1 member


@dataclass
class Overwrite:
    """A channel permission overwrite for a role (type 0) or a member (type 1)."""

    id: int
    type: OverwriteType
    allow: int = 0
    deny: int = 0


class _Role(Protocol):
    @property
    def permissions(self) -> int: ...


class _Member(Protocol):
    @property
    def roles(self) -> Collection[int]: ...

    @property
    def timed_out_until(self) -> float | None: ...


class Guild(Protocol):
    """What the computation reads of a guild (`state.Guild` has it)."""

    @property
    def id(self) -> int: ...

    @property
    def owner_id(self) -> int | None: ...

    @property
    def members(self) -> Mapping[int, _Member]: ...

    @property
    def roles(self) -> Mapping[int, _Role]: ...


class Channel(Protocol):
    """What the computation reads of a channel (`state.Channel` has it)."""

    @property
    def overwrites(self) -> Mapping[int, Overwrite]: ...


def name_of(bit: int) -> str:
    """``ATTACH_FILES`` for 1 << 15 (the raw number for a bit the sandbox does not name)."""
    try:
        return P(bit).name or str(bit)
    except ValueError:
        return str(bit)


def base_permissions(guild: Guild, user_id: int) -> int:
    """Guild-level permissions of ``user_id`` (0 when not a member)."""
    if user_id == guild.owner_id:
        return ALL
    member = guild.members.get(user_id)
    if member is None:
        return 0
    everyone = guild.roles.get(guild.id)
    perms = everyone.permissions if everyone is not None else 0
    for role_id in member.roles:
        role = guild.roles.get(role_id)
        if role is not None:
            perms |= role.permissions
    if perms & P.ADMINISTRATOR:
        return ALL
    return perms


def channel_permissions(
    guild: Guild, channel: Channel, user_id: int, now: float | None = None
) -> int:
    """``user_id``'s computed permissions in ``channel`` (explicit bits, no implicit masking);
    ``now`` (Unix seconds) decides whether a timeout is still running."""
    base = base_permissions(guild, user_id)
    if base & P.ADMINISTRATOR:
        return ALL
    member = guild.members.get(user_id)
    if member is None:
        return 0
    timed_out = (
        now is not None and member.timed_out_until is not None and now < member.timed_out_until
    )
    perms = base
    everyone = channel.overwrites.get(guild.id)
    if everyone is not None:
        perms &= ~everyone.deny
        perms |= everyone.allow
    allow = deny = 0
    for role_id in member.roles:
        ow = channel.overwrites.get(role_id)
        if ow is not None and ow.type == 0:
            allow |= ow.allow
            deny |= ow.deny
    perms &= ~deny
    perms |= allow
    own = channel.overwrites.get(user_id)
    if own is not None and own.type == 1:
        perms &= ~own.deny
        perms |= own.allow
    if timed_out:
        perms &= P.VIEW_CHANNEL | P.READ_MESSAGE_HISTORY
    return perms


def effective(perms: int) -> int:
    """``perms`` with Discord's implicit rules applied (what an action is checked against)."""
    if perms & P.ADMINISTRATOR:
        return perms
    if not perms & P.VIEW_CHANNEL:
        return 0
    if not perms & P.SEND_MESSAGES:
        perms &= ~_NEEDS_SEND
    return perms


def everyone_permissions(guild: Guild, channel: Channel) -> int:
    """@everyone's bits in ``channel`` (the role, then its overwrite): what webhooks get."""
    everyone = guild.roles.get(guild.id)
    perms = everyone.permissions if everyone is not None else 0
    if perms & P.ADMINISTRATOR:
        return ALL
    ow = channel.overwrites.get(guild.id)
    if ow is not None:
        perms &= ~ow.deny
        perms |= ow.allow
    return perms
