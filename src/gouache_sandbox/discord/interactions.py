"""Interaction endpoints: callbacks, interaction webhooks, and user accounts' ``POST /interactions``."""

from __future__ import annotations

from collections.abc import Callable

import structlog

from gouache_sandbox.discord import payloads
from gouache_sandbox.discord.gateway import GatewayServer
from gouache_sandbox.discord.messages import (
    MESSAGE_FLAG_EPHEMERAL,
    MESSAGE_FLAG_LOADING,
    apply_edit,
    custom_ids,
    new_message,
)
from gouache_sandbox.discord.modals import (
    PendingModal,
    check_submit,
    modal_from_callback,
    submit_rows,
    unknown_modal,
)
from gouache_sandbox.discord.permissions import P
from gouache_sandbox.discord.restctx import Body, Ctx
from gouache_sandbox.discord.state import (
    INTERACTION_ACK_DEADLINE,
    JSON,
    Command,
    DiscordAPIError,
    Interaction,
    Message,
    SandboxState,
    invalid_form,
)
from gouache_sandbox.discord.upload_claims import resolve_uploads

log = structlog.get_logger(__name__)

INVALID_VERSION = "INTERACTION_APPLICATION_COMMAND_INVALID_VERSION"


MAX_CHOICES = 25


def autocomplete_choices(data: JSON) -> list[JSON]:
    """Discord's checks on an autocomplete answer: at most 25 choices, names 1-100 characters."""
    choices = data.get("choices")
    if not isinstance(choices, list):
        raise invalid_form("data.choices", "BASE_TYPE_REQUIRED", "This field is required")
    if len(choices) > MAX_CHOICES:
        raise invalid_form(
            "data.choices", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CHOICES} or fewer in length."
        )
    for i, choice in enumerate(choices):
        name = choice.get("name") if isinstance(choice, dict) else None
        value = choice.get("value") if isinstance(choice, dict) else None
        if not isinstance(name, str) or not 1 <= len(name) <= 100:
            raise invalid_form(
                f"data.choices.{i}.name",
                "BASE_TYPE_BAD_LENGTH",
                "Must be between 1 and 100 in length.",
            )
        if isinstance(value, str) and not 1 <= len(value) <= 100:
            raise invalid_form(
                f"data.choices.{i}.value",
                "BASE_TYPE_BAD_LENGTH",
                "Must be between 1 and 100 in length.",
            )
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise invalid_form(f"data.choices.{i}.value", "BASE_TYPE_REQUIRED", "Invalid value")
    return list(choices)


def _check_autocomplete(inter: Interaction, kind: object, data: JSON) -> None:
    """Autocomplete is answered with choices (8) and nothing else; 8 answers nothing else."""
    if (inter.type == 4) != (kind == 8):
        raise DiscordAPIError(
            400, 40043, "Interaction callback type is invalid for this interaction"
        )
    if kind == 8:
        inter.choices = autocomplete_choices(data)


class InteractionRoutes:
    """Discord's interaction rules: the 3 s first answer, one callback, 15-minute tokens."""

    def __init__(
        self, state: SandboxState, gateway: GatewayServer, base_url: Callable[[], str]
    ) -> None:
        self.state = state
        self.gateway = gateway
        self._base_url = base_url

    def deliver_interaction(self, inter: Interaction) -> None:
        """Hand ``inter`` to its application: an in-sandbox handler or the bot's gateway sessions."""
        handler = self.state.app_handlers.get(inter.application_id)
        if handler is not None:
            handler(inter)
            return
        app = self.state.applications[inter.application_id]
        channel = self.state.get_channel(inter.channel_id)
        guild = self.state.guilds[channel.guild_id]
        member = guild.members[inter.user.id]
        data = payloads.interaction_payload(
            inter,
            self.state,
            self._base_url(),
            guild_locale=guild.preferred_locale,
            member=member,
            channel=channel,
            app_user_id=app.bot.id,
        )
        if not self.gateway.dispatch_to_user(
            app.bot.id, "INTERACTION_CREATE", data, guild_id=guild.id
        ):
            # Discord would show "The application did not respond"; say why in the log.
            log.warning("sandbox.interaction.undelivered", application=app.id, interaction=inter.id)

    def _interaction(self, ctx: Ctx) -> Interaction:
        inter = self.state.interactions.get(ctx.int_param("interaction_id"))
        if inter is None or inter.token != ctx.params["interaction_token"]:
            raise DiscordAPIError(404, 10062, "Unknown interaction")
        return inter

    async def callback(self, ctx: Ctx) -> Body:
        """``POST /interactions/{id}/{token}/callback`` with Discord's 3 s and once-only rules."""
        inter = self._interaction(ctx)
        if inter.acknowledged:
            raise DiscordAPIError(400, 40060, "Interaction has already been acknowledged.")
        if self.state.clock.now() - inter.created_at > INTERACTION_ACK_DEADLINE:
            inter.late_callbacks += 1
            raise DiscordAPIError(404, 10062, "Unknown interaction")
        body = ctx.body()
        kind = body.get("type")
        data = body.get("data") or {}
        if not isinstance(data, dict):
            raise invalid_form("data", "MODEL_TYPE_CONVERT", "Only dictionaries may be used")
        _check_autocomplete(inter, kind, data)
        app = self.state.applications[inter.application_id]
        channel = self.state.get_channel(inter.channel_id)
        # Responses go out through the interaction webhook: no VIEW/SEND needed, and
        # files and embeds follow @everyone's bits in the channel (see permissions.py).
        allowed = self.state.webhook_permissions(channel)
        message: Message | None = None
        if kind in (4, 5):
            flags = int(data.get("flags") or 0)
            if kind == 5:
                msg = new_message(
                    self.state, channel, app.bot, {"content": "\u200b"}, [], allow_components=True
                )
                msg.content = ""
                msg.flags = MESSAGE_FLAG_LOADING | (flags & MESSAGE_FLAG_EPHEMERAL)
            else:
                msg = new_message(
                    self.state,
                    channel,
                    app.bot,
                    data,
                    ctx.files,
                    allow_components=True,
                    allowed=allowed,
                )
            message = self._as_response(msg, inter, 20 if inter.type == 2 else 0)
            self.state.store_message(message)
            inter.original_message_id = message.id
        elif kind in (6, 7):
            message = self._update(inter, kind, data, ctx, allowed)
        elif kind == 9:
            self._open_modal(inter, data)
        elif kind != 8:
            raise invalid_form(
                "type", "BASE_TYPE_CHOICES", "Value must be one of {4, 5, 6, 7, 8, 9}."
            )
        inter.acknowledged = True
        inter.responded_at = self.state.clock.now()
        inter.response_type = int(kind)
        inter.responded.set()
        if ctx.request.query.get("with_response") not in ("1", "true", "True"):
            return None
        info: JSON = {
            "id": str(inter.id),
            "type": inter.type,
            "response_message_loading": kind == 5,
            "response_message_ephemeral": bool(message and message.flags & MESSAGE_FLAG_EPHEMERAL),
        }
        resource: JSON = {"type": kind}
        if inter.original_message_id is not None:
            info["response_message_id"] = str(inter.original_message_id)
        if message is not None:
            resource["message"] = payloads.message_payload(message, self.state, self._base_url())
        return {"interaction": info, "resource": resource}

    def _update(
        self, inter: Interaction, kind: int, data: JSON, ctx: Ctx, allowed: int
    ) -> Message | None:
        """Callback 6 (deferred update) or 7 (update the clicked message): components only."""
        if inter.type != 3 or inter.message_id is None:
            raise DiscordAPIError(
                400, 40043, "Interaction callback type is invalid for this interaction"
            )
        inter.original_message_id = inter.message_id
        if kind != 7:
            return None
        message = self.state.get_message(inter.channel_id, inter.message_id)
        apply_edit(self.state, message, data, ctx.files, allowed=allowed)
        self.state.announce_update(message)
        return message

    def _as_response(self, msg: Message, inter: Interaction, mtype: int) -> Message:
        msg.type = mtype
        msg.webhook_id = inter.application_id
        msg.application_id = inter.application_id
        name = inter.data.get("name") if inter.type == 2 else None
        msg.interaction_metadata = payloads.interaction_metadata(inter, name=name)
        if msg.flags & MESSAGE_FLAG_EPHEMERAL:
            msg.visible_to = inter.user.id
        return msg

    def _webhook_message(self, ctx: Ctx) -> tuple[Interaction, Message]:
        inter = self.state.interaction_for_webhook(
            ctx.int_param("webhook_id"), ctx.params["webhook_token"]
        )
        mid = ctx.params["message_id"]
        if mid == "@original":
            if inter.original_message_id is None:
                raise DiscordAPIError(404, 10008, "Unknown Message")
            return inter, self.state.get_message(inter.channel_id, inter.original_message_id)
        msg = self.state.get_message(inter.channel_id, ctx.int_param("message_id"))
        meta = msg.interaction_metadata or {}
        if msg.id != inter.original_message_id and meta.get("id") != str(inter.id):
            raise DiscordAPIError(404, 10008, "Unknown Message")
        return inter, msg

    async def webhook_get(self, ctx: Ctx) -> Body:
        """``GET /webhooks/{app}/{token}/messages/{id|@original}``."""
        _, msg = self._webhook_message(ctx)
        return payloads.message_payload(msg, self.state, self._base_url())

    async def webhook_edit(self, ctx: Ctx) -> Body:
        """``PATCH /webhooks/{app}/{token}/messages/{id|@original}``."""
        _, msg = self._webhook_message(ctx)
        channel = self.state.get_channel(msg.channel_id)
        allowed = self.state.webhook_permissions(channel)
        apply_edit(self.state, msg, ctx.body(), ctx.files, allowed=allowed)
        self.state.announce_update(msg)
        return payloads.message_payload(msg, self.state, self._base_url())

    async def webhook_delete(self, ctx: Ctx) -> Body:
        """``DELETE /webhooks/{app}/{token}/messages/{id|@original}``."""
        inter, msg = self._webhook_message(ctx)
        self.state.delete_message(msg)
        if msg.id == inter.original_message_id and inter.response_type in (4, 5):
            inter.original_message_id = None
        return None

    async def webhook_followup(self, ctx: Ctx) -> Body:
        """``POST /webhooks/{app}/{token}``: a follow-up message (always answered with it).

        Discord: the first follow-up after a deferred response (type 5) edits the
        "thinking" message instead of posting a new one, keeping its ephemeral
        state; later follow-ups are new messages.
        """
        inter = self.state.interaction_for_webhook(
            ctx.int_param("webhook_id"), ctx.params["webhook_token"]
        )
        if not inter.acknowledged:
            raise DiscordAPIError(404, 10015, "Unknown Webhook")
        app = self.state.applications[inter.application_id]
        channel = self.state.get_channel(inter.channel_id)
        allowed = self.state.webhook_permissions(channel)
        body = ctx.body()
        thinking = self._thinking_message(inter)
        if thinking is not None:
            edit = {k: v for k, v in body.items() if k != "flags"}
            apply_edit(self.state, thinking, edit, ctx.files, allowed=allowed)
            inter.followups += 1
            self.state.announce_update(thinking)
            msg = thinking
        else:
            msg = new_message(
                self.state,
                channel,
                app.bot,
                body,
                ctx.files,
                allow_components=True,
                allowed=allowed,
            )
            self._as_response(msg, inter, 0 if msg.type == 0 else msg.type)
            inter.followups += 1
            self.state.store_message(msg)
        # Discord: for interaction follow-ups ``wait`` is always true.
        return payloads.message_payload(msg, self.state, self._base_url())

    def _thinking_message(self, inter: Interaction) -> Message | None:
        """The deferred response a first follow-up turns into (None if it is not that case)."""
        if inter.response_type != 5 or inter.followups or inter.original_message_id is None:
            return None
        msg = self.state.messages.get(inter.channel_id, {}).get(inter.original_message_id)
        if msg is None or not msg.flags & MESSAGE_FLAG_LOADING:
            return None
        return msg

    def _open_modal(self, inter: Interaction, data: JSON) -> None:
        """Callback type 9: a modal in front of the person who interacted (Discord's rules)."""
        if inter.type in (4, 5):
            raise DiscordAPIError(
                400, 40043, "Interaction callback type is invalid for this interaction"
            )
        modal = modal_from_callback(
            data,
            modal_id=self.state.ids.next(),
            application_id=inter.application_id,
            user_id=inter.user.id,
            channel_id=inter.channel_id,
            inter_id=inter.id,
        )
        self.state.modals[modal.id] = modal

    def open_modal(self, inter: Interaction, modal: PendingModal) -> None:
        """An in-sandbox app answers ``inter`` with a modal: ``INTERACTION_MODAL_CREATE`` to the user."""
        modal.interaction_id = inter.id
        self.state.modals[modal.id] = modal
        inter.acknowledged = True
        inter.response_type = 9
        inter.responded_at = self.state.clock.now()
        inter.responded.set()
        payload = modal.payload()
        payload["nonce"] = inter.nonce
        self.gateway.dispatch_to_user(inter.user.id, "INTERACTION_MODAL_CREATE", payload)

    def _modal_submit(self, user_id: int, app_id: int, channel_id: int, data: JSON) -> JSON:
        """A user account's modal submit: the open modal it names, and its values checked."""
        try:
            modal = self.state.modals[int(str(data.get("id")))]
        except (ValueError, KeyError):
            raise unknown_modal() from None
        if (modal.user_id, modal.application_id, modal.channel_id) != (user_id, app_id, channel_id):
            raise unknown_modal()
        values = check_submit(modal, data.get("custom_id"), data.get("components"))
        del self.state.modals[modal.id]
        return {"custom_id": modal.custom_id, "components": submit_rows(values)}

    def _button_data(
        self, app_id: int, bot_id: int, channel_id: int, body: JSON, data: JSON
    ) -> tuple[JSON, int]:
        """A button press by a user account: the message and the component it names, checked."""
        mid = body.get("message_id")
        if not isinstance(mid, str) or not mid.isdigit():
            raise invalid_form("message_id", "BASE_TYPE_REQUIRED", "This field is required")
        msg = self.state.get_message(channel_id, int(mid))
        custom_id = data.get("custom_id")
        if data.get("component_type") != 2 or not isinstance(custom_id, str):
            raise invalid_form("data.custom_id", "BASE_TYPE_REQUIRED", "This field is required")
        if msg.application_id != app_id and msg.author.id != bot_id:
            raise invalid_form(
                "message_id", "INTERACTION_INVALID_MESSAGE", "Unknown message for this app"
            )
        if custom_id not in custom_ids(msg):
            raise invalid_form(
                "data.custom_id", "COMPONENT_VALIDATION_FAILED", "Component validation failed"
            )
        return {"component_type": 2, "custom_id": custom_id}, msg.id

    async def user_interaction(self, ctx: Ctx) -> Body:
        """``POST /interactions`` from a user account: validated, then handed to the app (204)."""
        assert ctx.principal is not None
        body = ctx.body()
        user = ctx.principal.user
        kind = body.get("type")
        if kind not in (2, 3, 5):
            raise invalid_form("type", "BASE_TYPE_CHOICES", "Value must be one of {2, 3, 5}.")
        for key in ("application_id", "channel_id", "session_id"):
            if not isinstance(body.get(key), str) or not body.get(key):
                raise invalid_form(key, "BASE_TYPE_REQUIRED", "This field is required")
        session = self.gateway.sessions.get(body["session_id"])
        if session is None or session.user_id != user.id:
            raise invalid_form("session_id", "INTERACTION_INVALID_SESSION", "Invalid session")
        nonce = body.get("nonce")
        if nonce is not None and (
            not isinstance(nonce, str) or not nonce.isdigit() or len(nonce) > 25
        ):
            raise invalid_form("nonce", "NONCE_TYPE_INVALID", "Nonce must be a snowflake")
        try:
            app = self.state.applications[int(body["application_id"])]
            channel = self.state.get_channel(int(body["channel_id"]))
        except (ValueError, KeyError):
            raise DiscordAPIError(404, 10002, "Unknown Application") from None
        if app.bot.id not in self.state.guilds[channel.guild_id].members:
            raise DiscordAPIError(403, 50001, "Missing Access")
        # A person (or a user account) needs to see the channel and use commands there.
        self.state.require(user.id, channel, P.USE_APPLICATION_COMMANDS)
        if body.get("guild_id") is not None and str(body["guild_id"]) != str(channel.guild_id):
            raise invalid_form("guild_id", "BASE_TYPE_INVALID", "Guild does not match the channel")
        data = body.get("data")
        if not isinstance(data, dict):
            raise invalid_form("data", "BASE_TYPE_REQUIRED", "This field is required")
        message_id: int | None = None
        if kind == 2:
            cmd = self._resolve_command(app.id, channel.guild_id, data)
            clean = {
                "id": str(cmd.id),
                "name": cmd.name,
                "type": cmd.type,
                "version": str(cmd.version),
                "options": list(data.get("options") or []),
            }
            clean.update(resolve_uploads(self.state, channel, user.id, data, self._base_url()))
        elif kind == 5:
            clean = self._modal_submit(user.id, app.id, channel.id, data)
        else:
            clean, message_id = self._button_data(app.id, app.bot.id, channel.id, body, data)
        inter = self.state.new_interaction(
            application_id=app.id,
            type=int(kind),
            channel=channel,
            user=user,
            data=clean,
            message_id=message_id,
            nonce=nonce,
        )
        # What Discord tells the invoking client's sessions.
        ack = {"id": str(inter.id), "nonce": nonce}
        self.gateway.dispatch_to_user(user.id, "INTERACTION_CREATE", ack)
        self.gateway.dispatch_to_user(user.id, "INTERACTION_SUCCESS", ack)
        self.deliver_interaction(inter)
        return None

    def _resolve_command(self, app_id: int, guild_id: int, data: JSON) -> Command:
        try:
            cmd = self.state.commands[int(str(data.get("id")))]
        except (ValueError, KeyError):
            raise DiscordAPIError(404, 10063, "Unknown application command") from None
        if cmd.application_id != app_id or cmd.guild_id not in (None, guild_id):
            raise DiscordAPIError(404, 10063, "Unknown application command")
        if str(data.get("version")) != str(cmd.version):
            raise DiscordAPIError(
                400,
                50035,
                "Invalid Form Body",
                {
                    "data": {
                        "_errors": [
                            {
                                "code": INVALID_VERSION,
                                "message": "This command is outdated, please try again in a few minutes",
                            }
                        ]
                    }
                },
            )
        if data.get("name") != cmd.name:
            raise invalid_form(
                "data.name", "INTERACTION_APPLICATION_COMMAND_INVALID", "Invalid command name"
            )
        options = data.get("options", [])
        if not isinstance(options, list) or any(
            not isinstance(o, dict) or "name" not in o or "type" not in o for o in options
        ):
            raise invalid_form("data.options", "MODEL_TYPE_CONVERT", "Invalid options")
        known = {o["name"]: o for o in cmd.options}
        for o in options:
            spec = known.get(o["name"])
            if spec is None or int(spec["type"]) != int(o["type"]):
                raise invalid_form(
                    "data.options",
                    "INTERACTION_APPLICATION_COMMAND_OPTION_INVALID",
                    "Invalid option",
                )
        for spec in cmd.options:
            if spec.get("required") and spec["name"] not in {o["name"] for o in options}:
                raise invalid_form(
                    "data.options", "BASE_TYPE_REQUIRED", f"Option {spec['name']} is required"
                )
        return cmd
