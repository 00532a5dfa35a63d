"""Application command endpoints: registration (bots) and the command index (user accounts)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from gouache_sandbox.discord import payloads
from gouache_sandbox.discord.gateway import GatewayServer
from gouache_sandbox.discord.restctx import Body, Ctx
from gouache_sandbox.discord.state import (
    Command,
    DiscordAPIError,
    SandboxState,
    invalid_form,
)

COMMAND_NAME = re.compile(r"^[-_\w]{1,32}$")


class CommandRoutes:
    """``/applications/{id}/commands`` (and guild variants) and ``application-command-index``."""

    def __init__(
        self, state: SandboxState, gateway: GatewayServer, base_url: Callable[[], str]
    ) -> None:
        self.state = state
        self.gateway = gateway
        self._base_url = base_url

    def _own_app(self, ctx: Ctx) -> int:
        assert ctx.principal is not None
        assert ctx.principal.application is not None
        app_id = ctx.int_param("application_id")
        if app_id != ctx.principal.application.id:
            raise DiscordAPIError(403, 50001, "Missing Access")
        if "guild_id" in ctx.params:
            guild = self.state.guilds.get(ctx.int_param("guild_id"))
            if guild is None or ctx.principal.user.id not in guild.members:
                raise DiscordAPIError(403, 50001, "Missing Access")
        return app_id

    def _scope(self, ctx: Ctx) -> int | None:
        return ctx.int_param("guild_id") if "guild_id" in ctx.params else None

    async def list_commands(self, ctx: Ctx) -> Body:
        """List global (or guild) commands."""
        app_id, guild_id = self._own_app(ctx), self._scope(ctx)
        return [
            payloads.command_payload(c)
            for c in self.state.commands.values()
            if c.application_id == app_id and c.guild_id == guild_id
        ]

    def _upsert(self, app_id: int, guild_id: int | None, raw: Any, index: int) -> Command:
        if not isinstance(raw, dict):
            raise invalid_form(f"{index}", "MODEL_TYPE_CONVERT", "Only dictionaries may be used")
        name = raw.get("name")
        ctype = int(raw.get("type") or 1)
        if (
            not isinstance(name, str)
            or not COMMAND_NAME.match(name)
            or (ctype == 1 and name != name.lower())
        ):
            raise invalid_form(
                f"{index}.name", "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid"
            )
        description = str(raw.get("description") or "")
        if ctype == 1 and not 1 <= len(description) <= 100:
            raise invalid_form(
                f"{index}.description",
                "BASE_TYPE_BAD_LENGTH",
                "Must be between 1 and 100 in length.",
            )
        options = raw.get("options") or []
        if not isinstance(options, list) or len(options) > 25:
            raise invalid_form(
                f"{index}.options", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length."
            )
        existing = next(
            (
                c
                for c in self.state.commands.values()
                if c.application_id == app_id
                and c.guild_id == guild_id
                and c.name == name
                and c.type == ctype
            ),
            None,
        )
        extra = {k: raw[k] for k in ("name_localizations", "description_localizations") if k in raw}
        perms = raw.get("default_member_permissions")
        if existing is None:
            existing = Command(
                id=self.state.ids.next(),
                application_id=app_id,
                name=name,
                description=description,
                type=ctype,
                guild_id=guild_id,
            )
            self.state.commands[existing.id] = existing
        changed = (existing.description, existing.options, existing.extra) != (
            description,
            options,
            extra,
        )
        if changed or existing.version == 0:
            existing.version = self.state.ids.next()
        existing.description, existing.options, existing.extra = description, list(options), extra
        existing.default_member_permissions = str(perms) if perms is not None else None
        existing.nsfw = bool(raw.get("nsfw", False))
        return existing

    async def put_commands(self, ctx: Ctx) -> Body:
        """Bulk overwrite: commands not listed are deleted, same-name ones keep their ids."""
        app_id, guild_id = self._own_app(ctx), self._scope(ctx)
        body = ctx.json
        if not isinstance(body, list):
            raise invalid_form("_root", "MODEL_TYPE_CONVERT", "Only iterables may be used")
        kept = [self._upsert(app_id, guild_id, raw, i) for i, raw in enumerate(body)]
        ids = {c.id for c in kept}
        for cid, cmd in list(self.state.commands.items()):
            if cmd.application_id == app_id and cmd.guild_id == guild_id and cid not in ids:
                del self.state.commands[cid]
        return [payloads.command_payload(c) for c in kept]

    async def post_command(self, ctx: Ctx) -> Body:
        """Create or update one command."""
        app_id, guild_id = self._own_app(ctx), self._scope(ctx)
        ctx.status = 201
        return payloads.command_payload(self._upsert(app_id, guild_id, ctx.body(), 0))

    async def delete_command(self, ctx: Ctx) -> Body:
        """Delete one global command."""
        app_id = self._own_app(ctx)
        cmd = self.state.commands.get(ctx.int_param("command_id"))
        if cmd is None or cmd.application_id != app_id:
            raise DiscordAPIError(404, 10063, "Unknown application command")
        del self.state.commands[cmd.id]
        return None

    async def command_index(self, ctx: Ctx) -> Body:
        """The commands a user account can invoke in a guild, with ids and versions."""
        assert ctx.principal is not None
        if "channel_id" in ctx.params:
            channel = self.state.get_channel(ctx.int_param("channel_id"))
            guild_id = channel.guild_id
        else:
            guild_id = ctx.int_param("guild_id")
        guild = self.state.guilds.get(guild_id)
        if guild is None or ctx.principal.user.id not in guild.members:
            raise DiscordAPIError(403, 50001, "Missing Access")
        apps = [a for a in self.state.applications.values() if a.bot.id in guild.members]
        app_ids = {a.id for a in apps}
        commands = [
            payloads.command_payload(c)
            for c in self.state.commands.values()
            if c.application_id in app_ids and c.guild_id in (None, guild_id)
        ]
        return {
            "applications": [
                {
                    "id": str(a.id),
                    "name": a.name,
                    "description": "",
                    "icon": None,
                    "bot_id": str(a.bot.id),
                    "flags": a.flags,
                }
                for a in apps
            ],
            "application_commands": commands,
            "version": str(max((int(c["version"]) for c in commands), default=0)),
        }
