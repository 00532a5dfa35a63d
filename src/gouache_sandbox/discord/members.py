"""Simulated guild members: invoke slash commands, click buttons, read channels."""

from __future__ import annotations

from typing import Any

from gouache_sandbox.discord import payloads
from gouache_sandbox.discord.host import SandboxHost
from gouache_sandbox.discord.messages import MESSAGE_FLAG_EPHEMERAL, custom_ids, image_size
from gouache_sandbox.discord.modals import PendingModal, check_submit, submit_rows
from gouache_sandbox.discord.permissions import P
from gouache_sandbox.discord.state import (
    Attachment,
    Channel,
    Command,
    Guild,
    Interaction,
    MemberInfo,
    Message,
    User,
)


class SimulatedMember:
    """A person in a guild, driven by tests exactly as a person would drive a bot."""

    def __init__(self, sandbox: SandboxHost, guild: Guild, info: MemberInfo) -> None:
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
        name, _, sub = command.partition(" ")
        cmd = self._find_command(name, application_id)
        self._check_can_use(channel, cmd)
        files: dict[str, Attachment] = {}
        values: dict[str, Any] = {}
        schema = _subcommand_schema(cmd, sub)
        kinds = {o["name"]: int(o["type"]) for o in schema}
        for oname, value in (options or {}).items():
            if kinds.get(oname) == 11:
                # An attachment option: the client uploads the file first.
                att = self._upload(channel, value)
                files[oname] = att
                values[oname] = str(att.id)
            else:
                values[oname] = value
        typed = payloads.options_payload(values, schema)
        data: dict[str, Any] = {
            "id": str(cmd.id),
            "name": cmd.name,
            "type": cmd.type,
            "options": [{"type": 1, "name": sub, "options": typed}] if sub else typed,
        }
        resolved = payloads.resolved_payload(
            state,
            channel,
            typed,
            list(files.values()),
            self._sandbox.base_url,
            invoker_id=self.id,
            app_user_id=state.applications[cmd.application_id].bot.id,
        )
        if resolved:
            data["resolved"] = resolved
        if cmd.guild_id is not None:
            data["guild_id"] = str(cmd.guild_id)
        inter = state.new_interaction(
            application_id=cmd.application_id, type=2, channel=channel, user=self.user, data=data
        )
        self._sandbox.rest.deliver_interaction(inter)
        return inter

    def autocomplete(
        self,
        channel_id: int,
        command: str,
        focused: str,
        typed: str,
        options: dict[str, Any] | None = None,
    ) -> Interaction:
        """Type into option ``focused`` of ``/command``: the app gets an autocomplete interaction.

        Discord sends one while the member types; the app must answer within
        3 s with callback type 8 (its ``choices`` end up on the interaction).
        """
        state = self._sandbox.state
        channel = state.get_channel(channel_id)
        name, _, sub = command.partition(" ")
        cmd = self._find_command(name, None)
        self._check_can_use(channel, cmd)
        schema = _subcommand_schema(cmd, sub)
        spec = next((o for o in schema if o["name"] == focused), None)
        if spec is None or not spec.get("autocomplete"):
            raise LookupError(f"/{command} has no autocomplete option {focused!r}")
        values = [
            {"type": int(o["type"]), "name": o["name"], "value": v}
            for o in schema
            for k, v in (options or {}).items()
            if o["name"] == k and k != focused
        ]
        values.append({"type": int(spec["type"]), "name": focused, "value": typed, "focused": True})
        data: dict[str, Any] = {
            "id": str(cmd.id),
            "name": cmd.name,
            "type": cmd.type,
            "options": [{"type": 1, "name": sub, "options": values}] if sub else values,
        }
        if cmd.guild_id is not None:
            data["guild_id"] = str(cmd.guild_id)
        inter = state.new_interaction(
            application_id=cmd.application_id, type=4, channel=channel, user=self.user, data=data
        )
        self._sandbox.rest.deliver_interaction(inter)
        return inter

    def _check_can_use(self, channel: Channel, cmd: Command) -> None:
        """What Discord's client enforces before a command can be sent at all."""
        state = self._sandbox.state
        perms = state.effective_permissions(self.id, channel)
        if not perms & P.VIEW_CHANNEL:
            raise PermissionError(f"{self.user.username} cannot see #{channel.name}")
        if not perms & P.USE_APPLICATION_COMMANDS:
            raise PermissionError(f"{self.user.username} may not use commands in #{channel.name}")
        needed = int(cmd.default_member_permissions or 0)
        if needed and not (perms & P.ADMINISTRATOR or perms & needed == needed):
            raise PermissionError(f"/{cmd.name} is not available to {self.user.username}")

    def _upload(self, channel: Channel, value: Any) -> Attachment:
        """Store a file given as ``bytes`` or ``(filename, bytes)`` for an attachment option."""
        if isinstance(value, bytes):
            name, data = "upload.png", value
        elif isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], bytes):
            name, data = str(value[0]), value[1]
        else:
            raise ValueError("an attachment option takes bytes or (filename, bytes)")
        size = image_size(data)
        return self._sandbox.state.add_attachment(
            channel.id,
            name,
            data,
            "image/png" if size else "application/octet-stream",
            width=size[0] if size else None,
            height=size[1] if size else None,
        )

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

    def modal(self, answered: Interaction) -> PendingModal | None:
        """The modal an app opened for this member in answer to ``answered``, if still open."""
        for modal in self._sandbox.state.modals.values():
            if modal.interaction_id == answered.id and modal.user_id == self.id:
                assert isinstance(modal, PendingModal)
                return modal
        return None

    def submit_modal(self, answered: Interaction, values: dict[str, str]) -> Interaction:
        """Fill in and submit the modal opened in answer to ``answered`` (type 5 to its app).

        ``values`` maps text input ids to what the member typed; inputs not named
        keep their prefilled value. Discord's client refuses an empty required
        input or a value of the wrong length: that raises `DiscordAPIError` and sends nothing.
        """
        state = self._sandbox.state
        modal = self.modal(answered)
        if modal is None:
            raise LookupError("no modal is open for that interaction")
        unknown = set(values) - {i.custom_id for i in modal.inputs}
        if unknown:
            raise LookupError(f"the modal has no input {sorted(unknown)[0]!r}")
        filled = {i.custom_id: values.get(i.custom_id, i.value) for i in modal.inputs}
        check_submit(modal, modal.custom_id, submit_rows(filled))
        del state.modals[modal.id]
        inter = state.new_interaction(
            application_id=modal.application_id,
            type=5,
            channel=state.get_channel(modal.channel_id),
            user=self.user,
            data={"custom_id": modal.custom_id, "components": submit_rows(filled)},
        )
        self._sandbox.rest.deliver_interaction(inter)
        return inter

    def close_modal(self, answered: Interaction) -> None:
        """Dismiss the modal opened in answer to ``answered``: the app is told nothing."""
        modal = self.modal(answered)
        if modal is not None:
            del self._sandbox.state.modals[modal.id]

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


def _subcommand_schema(cmd: Command, sub: str) -> list[Any]:
    """The options of ``/cmd sub`` (or of ``/cmd`` itself when ``sub`` is empty)."""
    if not sub:
        return list(cmd.options)
    for option in cmd.options:
        if int(option["type"]) == 1 and option["name"] == sub:
            return list(option.get("options") or [])
    raise LookupError(f"/{cmd.name} has no subcommand {sub!r}")
