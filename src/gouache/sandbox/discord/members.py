"""Simulated guild members: invoke slash commands, click buttons, read channels."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gouache.sandbox.discord import payloads
from gouache.sandbox.discord.messages import MESSAGE_FLAG_EPHEMERAL, custom_ids
from gouache.sandbox.discord.state import Command, Guild, Interaction, MemberInfo, Message, User

if TYPE_CHECKING:
    from gouache.sandbox.discord import DiscordSandbox


class SimulatedMember:
    """A person in a guild, driven by tests exactly as a person would drive a bot."""

    def __init__(self, sandbox: DiscordSandbox, guild: Guild, info: MemberInfo) -> None:
        self._sandbox = sandbox
        self.guild = guild
        self.info = info

    @property
    def user(self) -> User:
        """The member's user."""
        return self.info.user

    @property
    def id(self) -> int:
        """The member's user id."""
        return self.info.user.id

    @property
    def roles(self) -> list[int]:
        """Role ids the member holds."""
        return self.info.roles

    @property
    def locale(self) -> str:
        """The member's client locale."""
        return self.info.locale

    def set_roles(self, roles: list[int]) -> None:
        """Replace the member's roles (tier changes)."""
        self.info.roles = list(roles)

    def _find_command(self, name: str, application_id: int | None) -> Command:
        state = self._sandbox.state
        found = [
            c
            for c in state.commands.values()
            if c.name == name
            and c.type == 1
            and c.guild_id in (None, self.guild.id)
            and (application_id is None or c.application_id == application_id)
            and state.applications[c.application_id].bot.id in self.guild.members
        ]
        if not found:
            raise LookupError(f"no command /{name} is registered for this guild")
        # A guild command shadows a global one of the same name.
        found.sort(key=lambda c: c.guild_id is None)
        return found[0]

    def invoke(
        self,
        channel_id: int,
        command: str,
        options: dict[str, Any] | None = None,
        *,
        application_id: int | None = None,
    ) -> Interaction:
        """Run ``/command`` with ``options`` in a channel; the bot gets INTERACTION_CREATE."""
        state = self._sandbox.state
        channel = state.get_channel(channel_id)
        if channel.guild_id != self.guild.id:
            raise ValueError("that channel is in another guild")
        cmd = self._find_command(command, application_id)
        data = {
            "id": str(cmd.id),
            "name": cmd.name,
            "type": cmd.type,
            "options": payloads.options_payload(options or {}, cmd.options),
        }
        if cmd.guild_id is not None:
            data["guild_id"] = str(cmd.guild_id)
        inter = state.new_interaction(
            application_id=cmd.application_id, type=2, channel=channel, user=self.user, data=data
        )
        self._sandbox.rest.deliver_interaction(inter)
        return inter

    def click(
        self, message: Message | int, custom_id: str, *, channel_id: int | None = None
    ) -> Interaction:
        """Press the button ``custom_id`` on ``message``; its application gets a type 3 interaction."""
        state = self._sandbox.state
        if isinstance(message, int):
            found = (
                state.get_message(channel_id, message)
                if channel_id is not None
                else state.find_message(message)
            )
            if found is None:
                raise LookupError(f"no message {message}")
            message = found
        if custom_id not in custom_ids(message):
            raise LookupError(f"message {message.id} has no component {custom_id!r}")
        app_id = message.application_id
        if app_id is None:
            app = state.app_by_bot.get(message.author.id)
            if app is None:
                raise LookupError("message was not sent by an application")
            app_id = app.id
        channel = state.get_channel(message.channel_id)
        inter = state.new_interaction(
            application_id=app_id,
            type=3,
            channel=channel,
            user=self.user,
            data={"custom_id": custom_id, "component_type": 2},
            message_id=message.id,
        )
        self._sandbox.rest.deliver_interaction(inter)
        return inter

    def read(self, channel_id: int, limit: int = 50) -> list[Message]:
        """The channel's latest messages this member can see, oldest first."""
        msgs = [
            m
            for m in self._sandbox.state.messages.get(channel_id, {}).values()
            if m.visible_to is None
            or m.visible_to == self.id
            or not m.flags & MESSAGE_FLAG_EPHEMERAL
        ]
        msgs.sort(key=lambda m: m.id)
        return msgs[-limit:]
