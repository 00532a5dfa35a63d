"""The sandbox's world: clock, users, applications, guilds, channels, messages, interactions."""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from gouache_sandbox.discord.permissions import (
    DEFAULT_EVERYONE,
    Overwrite,
    OverwriteType,
    P,
    channel_permissions,
    effective,
    everyone_permissions,
)
from gouache_sandbox.discord.snowflake import SnowflakeFactory

JSON = dict[str, Any]

#: How long an interaction token may be used (Discord: 15 minutes).
INTERACTION_TOKEN_TTL = 15 * 60.0
#: How long the first callback may take (Discord: 3 seconds).
INTERACTION_ACK_DEADLINE = 3.0


class SandboxClock:
    """Wall time plus an offset that tests advance instead of sleeping."""

    def __init__(self, start: float | None = None) -> None:
        self._base = time.time() if start is None else start
        self._mono = time.monotonic()
        self._offset = 0.0

    def now(self) -> float:
        """Sandbox time in Unix seconds."""
        return self._base + (time.monotonic() - self._mono) + self._offset

    def advance(self, seconds: float) -> None:
        """Jump sandbox time forward by ``seconds`` (never backwards)."""
        if seconds < 0:
            raise ValueError("the sandbox clock only moves forward")
        self._offset += seconds


class DiscordAPIError(Exception):
    """An error answered to a REST caller with Discord's JSON error body."""

    def __init__(self, status: int, code: int, message: str, errors: JSON | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors

    def body(self) -> JSON:
        """Discord's error body ``{message, code, errors?}``."""
        out: JSON = {"message": self.message, "code": self.code}
        if self.errors is not None:
            out["errors"] = self.errors
        return out


def missing_permissions() -> DiscordAPIError:
    """Discord's 403 50013, worded exactly as Discord words it (it never names the bit)."""
    return DiscordAPIError(403, 50013, "Missing Permissions")


def invalid_form(field_path: str, code: str, message: str) -> DiscordAPIError:
    """A 400 50035 "Invalid Form Body" naming one failing field (Discord's nested shape)."""
    node: JSON = {"_errors": [{"code": code, "message": message}]}
    for part in reversed(field_path.split(".")):
        node = {part: node}
    return DiscordAPIError(400, 50035, "Invalid Form Body", node)


@dataclass
class User:
    """A Discord user: a bot, a user account (self-bot) or a simulated member."""

    id: int
    username: str
    bot: bool = False
    global_name: str | None = None
    avatar: str | None = None
    #: Whether members of a shared server may message this user directly (a privacy setting).
    dms_open: bool = True


@dataclass
class Application:
    """A bot's application; owns its commands and receives their interactions."""

    id: int
    name: str
    bot: User
    owner: User
    flags: int = 0
    #: Privileged intents the application may ask for (Discord's portal toggles).
    privileged_intents: int = (1 << 1) | (1 << 8) | (1 << 15)
    max_concurrency: int = 1
    session_start_total: int = 1000
    session_start_remaining: int = 1000
    #: When set, IDENTIFY without a shard (or with too few) closes with 4011.
    min_shards: int = 1


@dataclass
class Command:
    """A registered application command (global when ``guild_id`` is None)."""

    id: int
    application_id: int
    name: str
    description: str
    type: int = 1
    options: list[JSON] = field(default_factory=list)
    guild_id: int | None = None
    version: int = 0
    default_member_permissions: str | None = None
    nsfw: bool = False
    extra: JSON = field(default_factory=dict)


@dataclass
class Role:
    """A guild role; members carry role ids (gouache maps them to tiers)."""

    id: int
    name: str
    position: int = 0
    permissions: int = 0
    color: int = 0
    #: A bot's own role, made when it joins with permissions (Discord's integration role).
    managed: bool = False


@dataclass
class Channel:
    """A guild text channel."""

    id: int
    guild_id: int
    name: str
    position: int = 0
    type: int = 0
    topic: str | None = None
    last_message_id: int | None = None
    #: Permission overwrites by role or user id.
    overwrites: dict[int, Overwrite] = field(default_factory=dict)
    #: Discord's age-restricted (NSFW) flag.
    nsfw: bool = False


@dataclass
class DMChannel:
    """A direct-message channel between two users (type 1; no guild, no permissions)."""

    id: int
    recipients: tuple[int, int]
    type: int = 1
    last_message_id: int | None = None

    @property
    def guild_id(self) -> int | None:
        """Always None: a DM belongs to no guild."""
        return None


@dataclass
class MemberInfo:
    """A user's membership of a guild."""

    user: User
    roles: list[int]
    joined_at: float
    locale: str = "en-US"
    nick: str | None = None
    #: A moderator's timeout (Unix seconds): until then only View Channel and Read History.
    timed_out_until: float | None = None


@dataclass
class Guild:
    """A guild with its roles, channels and members."""

    id: int
    name: str
    owner_id: int
    roles: dict[int, Role] = field(default_factory=dict)
    channels: dict[int, Channel] = field(default_factory=dict)
    members: dict[int, MemberInfo] = field(default_factory=dict)
    preferred_locale: str = "en-US"


@dataclass
class Attachment:
    """A stored file, downloadable from the sandbox's own attachment URL."""

    id: int
    channel_id: int
    filename: str
    data: bytes
    content_type: str
    width: int | None = None
    height: int | None = None
    description: str | None = None


@dataclass
class Message:
    """A channel message as the sandbox stores it."""

    id: int
    channel_id: int
    guild_id: int | None
    author: User
    content: str = ""
    created_at: float = 0.0
    edited_at: float | None = None
    embeds: list[JSON] = field(default_factory=list)
    components: list[JSON] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    nonce: str | None = None
    type: int = 0
    flags: int = 0
    webhook_id: int | None = None
    application_id: int | None = None
    interaction_metadata: JSON | None = None
    message_reference: JSON | None = None
    mentions: list[User] = field(default_factory=list)
    #: Reactions: emoji (unicode, or ``name:id``) → ids of the users who reacted, in order.
    reactions: dict[str, list[int]] = field(default_factory=dict)
    #: Ephemeral messages are seen only by this user.
    visible_to: int | None = None


@dataclass
class Interaction:
    """An interaction the sandbox created, with Discord's token rules attached."""

    id: int
    token: str
    application_id: int
    type: int
    channel_id: int
    guild_id: int | None
    user: User
    created_at: float
    data: JSON
    message_id: int | None = None
    acknowledged: bool = False
    response_type: int | None = None
    #: The message ``@original`` refers to (response message, or the clicked message).
    original_message_id: int | None = None
    nonce: str | None = None
    responded: asyncio.Event = field(default_factory=asyncio.Event)
    #: Follow-ups sent so far (the first after a deferral edits the "thinking" message).
    followups: int = 0
    #: When the first callback was accepted (sandbox clock), for answer-time measurements.
    responded_at: float | None = None
    #: Callbacks refused for coming after the 3 s deadline ("This interaction failed").
    late_callbacks: int = 0
    #: An autocomplete interaction's answer (callback type 8): the choices offered.
    choices: list[JSON] | None = None


ChannelEventKind = Literal["message_create", "message_update", "message_delete"]


@dataclass(frozen=True)
class ChannelEvent:
    """Something observers of a channel see: a message created, edited or deleted."""

    kind: ChannelEventKind
    channel_id: int
    guild_id: int | None
    message: Message


TokenKind = Literal["bot", "user"]


@dataclass
class Principal:
    """Who a token belongs to."""

    user: User
    kind: TokenKind
    application: Application | None = None


def make_token(user_id: int) -> str:
    """A token shaped like Discord's: base64(user id).timestamp.hmac."""
    head = base64.urlsafe_b64encode(str(user_id).encode()).decode().rstrip("=")
    return f"{head}.{secrets.token_urlsafe(5)}.{secrets.token_urlsafe(27)}"


class SandboxState:
    """Every object in the sandbox, indexed the ways the REST and gateway code look them up."""

    def __init__(self, clock: SandboxClock) -> None:
        self.clock = clock
        self.ids = SnowflakeFactory(clock.now)
        self.users: dict[int, User] = {}
        self.applications: dict[int, Application] = {}
        self.app_by_bot: dict[int, Application] = {}
        self.tokens: dict[str, Principal] = {}
        self.guilds: dict[int, Guild] = {}
        self.channels: dict[int, Channel] = {}
        self.messages: dict[int, dict[int, Message]] = {}
        self.attachments: dict[int, Attachment] = {}
        self.commands: dict[int, Command] = {}
        self.interactions: dict[int, Interaction] = {}
        self.interactions_by_token: dict[str, Interaction] = {}
        self.dm_channels: dict[int, DMChannel] = {}
        self._dm_by_pair: dict[frozenset[int], DMChannel] = {}
        self._listeners: list[Callable[[ChannelEvent], None]] = []
        #: Applications answered inside the sandbox (the Midjourney stand-in), by id.
        self.app_handlers: dict[int, Callable[[Interaction], None]] = {}
        #: Files announced through ``POST /channels/{id}/attachments`` (see ``uploads``).
        self.uploads: dict[str, Any] = {}
        #: Modals open in front of a person, by modal id: `gouache_sandbox.discord.modals.PendingModal`
        #: (typed loosely here: that module builds on this one).
        self.modals: dict[int, Any] = {}

    # -- users and applications -------------------------------------------------

    def new_user(self, name: str, *, bot: bool = False, user_id: int | None = None) -> User:
        """Create and register a user."""
        user = User(id=user_id or self.ids.next(), username=name, bot=bot, global_name=name)
        self.users[user.id] = user
        return user

    def new_application(
        self, name: str, *, app_id: int | None = None, bot_user_id: int | None = None
    ) -> tuple[Application, str]:
        """Create a bot user with its application; returns it and the bot token."""
        bot = self.new_user(name, bot=True, user_id=bot_user_id or app_id)
        owner = self.new_user(f"{name}-owner")
        app = Application(id=app_id or bot.id, name=name, bot=bot, owner=owner)
        self.applications[app.id] = app
        self.app_by_bot[bot.id] = app
        token = make_token(bot.id)
        self.tokens[token] = Principal(user=bot, kind="bot", application=app)
        return app, token

    def new_user_account(self, name: str) -> tuple[User, str]:
        """Create a user account (the kind Midjourney proxies drive) and its token."""
        user = self.new_user(name)
        token = make_token(user.id)
        self.tokens[token] = Principal(user=user, kind="user")
        return user, token

    # -- guilds -------------------------------------------------------------------

    def new_guild(self, name: str, owner: User) -> Guild:
        """Create a guild whose @everyone role has the guild's id."""
        gid = self.ids.next()
        guild = Guild(id=gid, name=name, owner_id=owner.id)
        guild.roles[gid] = Role(id=gid, name="@everyone", permissions=DEFAULT_EVERYONE)
        self.guilds[gid] = guild
        self.add_member(guild, owner)
        return guild

    def new_channel(self, guild: Guild, name: str) -> Channel:
        """Create a text channel in ``guild``."""
        channel = Channel(
            id=self.ids.next(), guild_id=guild.id, name=name, position=len(guild.channels)
        )
        guild.channels[channel.id] = channel
        self.channels[channel.id] = channel
        self.messages[channel.id] = {}
        return channel

    def new_role(
        self, guild: Guild, name: str, permissions: int = 0, *, managed: bool = False
    ) -> Role:
        """Create a role in ``guild``."""
        role = Role(
            id=self.ids.next(),
            name=name,
            position=len(guild.roles),
            permissions=permissions,
            managed=managed,
        )
        guild.roles[role.id] = role
        return role

    def add_member(
        self, guild: Guild, user: User, roles: list[int] | None = None, locale: str = "en-US"
    ) -> MemberInfo:
        """Make ``user`` a member of ``guild`` (idempotent; updates roles/locale)."""
        info = MemberInfo(
            user=user, roles=list(roles or []), joined_at=self.clock.now(), locale=locale
        )
        guild.members[user.id] = info
        return info

    def open_dm(self, a: User, b: User) -> DMChannel:
        """The DM channel between ``a`` and ``b`` (the same one every time)."""
        pair = frozenset((a.id, b.id))
        dm = self._dm_by_pair.get(pair)
        if dm is None:
            dm = DMChannel(id=self.ids.next(), recipients=(a.id, b.id))
            self._dm_by_pair[pair] = dm
            self.dm_channels[dm.id] = dm
            self.messages[dm.id] = {}
        return dm

    def check_can_dm(self, sender: User, dm: DMChannel) -> User:
        """The recipient, if ``sender`` may message them (403 50007 as Discord answers, else)."""
        if sender.id not in dm.recipients:
            raise DiscordAPIError(403, 50001, "Missing Access")
        other = self.users[dm.recipients[1] if dm.recipients[0] == sender.id else dm.recipients[0]]
        shared = any(other.id in g.members for g in self.guilds_of(sender.id))
        if other.bot or not other.dms_open or not shared:
            raise DiscordAPIError(403, 50007, "Cannot send messages to this user")
        return other

    def guilds_of(self, user_id: int) -> list[Guild]:
        """Guilds ``user_id`` is a member of."""
        return [g for g in self.guilds.values() if user_id in g.members]

    def can_see(self, user_id: int, channel_id: int) -> bool:
        """Whether ``user_id`` is a member who may view ``channel_id`` (VIEW_CHANNEL)."""
        channel = self.channels.get(channel_id)
        if channel is None:
            return False
        return bool(self.effective_permissions(user_id, channel) & P.VIEW_CHANNEL)

    def permissions(self, user_id: int, channel: Channel) -> int:
        """``user_id``'s computed bits in ``channel`` (what interactions carry)."""
        guild = self.guilds[channel.guild_id]
        return channel_permissions(guild, channel, user_id, self.clock.now())

    def effective_permissions(self, user_id: int, channel: Channel) -> int:
        """The computed bits with the implicit rules applied (what actions are checked against)."""
        return effective(self.permissions(user_id, channel))

    def webhook_permissions(self, channel: Channel) -> int:
        """What interaction responses may use in ``channel``: @everyone's bits there."""
        return everyone_permissions(self.guilds[channel.guild_id], channel)

    def require(self, user_id: int, channel: Channel, *bits: int) -> None:
        """403 50001 when ``user_id`` cannot view ``channel``; 403 50013 when a bit is missing."""
        have = self.effective_permissions(user_id, channel)
        if not have & P.VIEW_CHANNEL:
            raise DiscordAPIError(403, 50001, "Missing Access")
        if any(not have & b for b in bits):
            raise missing_permissions()

    # -- roles and overwrites (runtime changes, for tests and the demo) -------------------

    def set_overwrite(
        self,
        channel: Channel,
        target_id: int,
        *,
        allow: int = 0,
        deny: int = 0,
        type: OverwriteType | None = None,
    ) -> Overwrite:
        """Put an overwrite on ``channel`` for a role or member (type guessed from the id)."""
        guild = self.guilds[channel.guild_id]
        if type is None:
            if target_id in guild.roles:
                type = 0
            elif target_id in guild.members:
                type = 1
            else:
                raise LookupError(f"{target_id} is neither a role nor a member of the guild")
        if allow & deny:
            raise ValueError("a bit cannot be both allowed and denied")
        ow = Overwrite(id=target_id, type=type, allow=allow, deny=deny)
        channel.overwrites[target_id] = ow
        return ow

    def clear_overwrite(self, channel: Channel, target_id: int) -> bool:
        """Remove an overwrite; whether there was one."""
        return channel.overwrites.pop(target_id, None) is not None

    # -- messages -------------------------------------------------------------------

    def get_channel(self, channel_id: int) -> Channel:
        """The channel or Discord's 404 10003."""
        channel = self.channels.get(channel_id)
        if channel is None:
            raise DiscordAPIError(404, 10003, "Unknown Channel")
        return channel

    def get_message(self, channel_id: int, message_id: int) -> Message:
        """The message or Discord's 404 10008."""
        msg = self.messages.get(channel_id, {}).get(message_id)
        if msg is None:
            raise DiscordAPIError(404, 10008, "Unknown Message")
        return msg

    def find_message(self, message_id: int) -> Message | None:
        """Look a message up by id in any channel."""
        for msgs in self.messages.values():
            if message_id in msgs:
                return msgs[message_id]
        return None

    def listen(self, callback: Callable[[ChannelEvent], None]) -> Callable[[], None]:
        """Call ``callback`` for every channel event; returns an unsubscribe function."""
        self._listeners.append(callback)

        def remove() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)

        return remove

    def emit(self, event: ChannelEvent) -> None:
        """Tell every listener (gateway fan-out, waiters, observers) about ``event``."""
        for callback in list(self._listeners):
            callback(event)

    def message_by_nonce(
        self, channel_id: int, author_id: int, nonce: str, *, within: float
    ) -> Message | None:
        """The message ``author_id`` created in the channel with ``nonce`` in the last
        ``within`` seconds (what Discord's ``enforce_nonce`` returns instead of a copy)."""
        since = self.clock.now() - within
        for msg in reversed(self.messages.get(channel_id, {}).values()):
            if msg.created_at < since:
                return None
            if msg.nonce == nonce and msg.author.id == author_id:
                return msg
        return None

    def store_message(self, msg: Message) -> None:
        """Store a new message and announce it."""
        self.messages.setdefault(msg.channel_id, {})[msg.id] = msg
        channel = self.channels.get(msg.channel_id) or self.dm_channels.get(msg.channel_id)
        if channel is not None and msg.visible_to is None:
            channel.last_message_id = msg.id
        self.emit(ChannelEvent("message_create", msg.channel_id, msg.guild_id, msg))

    def announce_update(self, msg: Message) -> None:
        """Mark ``msg`` edited now and announce it."""
        msg.edited_at = self.clock.now()
        self.emit(ChannelEvent("message_update", msg.channel_id, msg.guild_id, msg))

    def delete_message(self, msg: Message) -> None:
        """Remove ``msg`` and announce it."""
        self.messages.get(msg.channel_id, {}).pop(msg.id, None)
        self.emit(ChannelEvent("message_delete", msg.channel_id, msg.guild_id, msg))

    def add_attachment(  # noqa: PLR0913
        self,
        channel_id: int,
        filename: str,
        data: bytes,
        content_type: str,
        *,
        width: int | None = None,
        height: int | None = None,
        description: str | None = None,
    ) -> Attachment:
        """Store a file so it can be served at its attachment URL."""
        att = Attachment(
            id=self.ids.next(),
            channel_id=channel_id,
            filename=filename,
            data=data,
            content_type=content_type,
            width=width,
            height=height,
            description=description,
        )
        self.attachments[att.id] = att
        return att

    # -- interactions -------------------------------------------------------------------

    def new_interaction(  # noqa: PLR0913
        self,
        *,
        application_id: int,
        type: int,
        channel: Channel,
        user: User,
        data: JSON,
        message_id: int | None = None,
        nonce: str | None = None,
    ) -> Interaction:
        """Create an interaction with a fresh id and token."""
        iid = self.ids.next()
        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(48)
        inter = Interaction(
            id=iid,
            token=token,
            application_id=application_id,
            type=type,
            channel_id=channel.id,
            guild_id=channel.guild_id,
            user=user,
            created_at=self.clock.now(),
            data=data,
            message_id=message_id,
            nonce=nonce,
        )
        self.interactions[iid] = inter
        self.interactions_by_token[token] = inter
        return inter

    def interaction_for_webhook(self, application_id: int, token: str) -> Interaction:
        """The interaction behind a webhook token, enforcing Discord's token rules."""
        inter = self.interactions_by_token.get(token)
        if inter is None or inter.application_id != application_id or inter.type == 4:
            # An autocomplete answer is its callback alone: no webhook behind it.
            raise DiscordAPIError(404, 10015, "Unknown Webhook")
        if self.clock.now() - inter.created_at > INTERACTION_TOKEN_TTL:
            raise DiscordAPIError(401, 50027, "Invalid Webhook Token")
        return inter
