"""`/settings show|set`, `/preferences`, `/imagine model:` autocomplete and requester-only buttons.

Thin discord.py glue over `gouache.channels.rules.ChannelRules`: every answer
is ephemeral, and a refused change saves nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import discord
import structlog
from discord import app_commands

from gouache.bot.render import clip
from gouache.bot.service import RequestContext, Requests
from gouache.channels.catalog import ModelChoice
from gouache.channels.errors import NotAllowed
from gouache.channels.settings import SETTING_NAMES
from gouache.errors import GouacheError

if TYPE_CHECKING:
    from gouache.channels.rules import ChannelRules

log = structlog.get_logger(__name__)

_BACKENDS = [app_commands.Choice(name=b, value=b) for b in ("any", "midjourney", "comfyui")]
_RULES = [app_commands.Choice(name=r, value=r) for r in ("allow", "spoiler", "refuse", "default")]


class ChannelBot(Protocol):
    """What these commands need from the bot client."""

    requests: Requests

    def context(self, interaction: discord.Interaction[Any]) -> RequestContext: ...


def can_manage(interaction: discord.Interaction[Any], ctx: RequestContext) -> bool:
    """Manage Server in the member's computed permissions (the interaction carries them), or an owner."""
    if ctx.is_owner:
        return True
    perms = interaction.permissions
    return bool(perms.manage_guild or perms.administrator)


async def _answer(interaction: discord.Interaction[Any], text: str) -> None:
    await interaction.response.send_message(clip(text, 2000), ephemeral=True)


def _rules(bot: ChannelBot) -> ChannelRules:
    rules = bot.requests.channels
    if rules is None:  # pragma: no cover - commands are only registered with rules
        raise RuntimeError("channel rules are not configured")
    return rules


async def model_suggestions(
    bot: ChannelBot,
    interaction: discord.Interaction[Any],
    current: str,
    *,
    midjourney_only: bool = False,
) -> list[app_commands.Choice[str]]:
    """Autocomplete for a model option: what the pool runs, the channel and the tier allow."""
    rules = bot.requests.channels
    if rules is None:
        return []
    ctx = bot.context(interaction)
    settings = await rules.settings(ctx.channel_id)
    user = await bot.requests.store.get_user(ctx.user_id)
    tier = bot.requests.tier_for(ctx.role_ids, user.tier)

    def allowed(choice: ModelChoice) -> bool:
        if midjourney_only:  # a channel's `model` setting is its Midjourney default
            return choice.kind == "midjourney"
        if settings.backend not in ("any", choice.backend):
            return False
        if tier.backends is not None and choice.backend not in tier.backends:
            return False
        return tier.models is None or choice.value in tier.models

    found = rules.catalog.suggest(current, allowed=allowed)
    return [app_commands.Choice(name=clip(c.label, 100), value=c.value[:100]) for c in found]


async def requester_only_refusal(
    requests: Requests, ctx: RequestContext, op: str, job_id: str
) -> str | None:
    """Where the channel keeps result buttons to the requester, what another member is told.

    None when the click may go on (the requester, a channel without the rule,
    or cancel, which has its own rule). Nothing is charged for a refused click.
    """
    rules = requests.channels
    if rules is None or op == "x" or ctx.channel_id is None:
        return None
    settings = await rules.settings(ctx.channel_id)
    if not settings.requester_only:
        return None
    job = await requests.store.get(job_id)
    if job is None or job.user_id == ctx.user_id:
        return None
    return f"Only <@{job.user_id}> can use these buttons."


def _changes(**values: object) -> dict[str, object]:
    out = {k: v for k, v in values.items() if v is not None}
    if out.get("content") == "default":
        out["content"] = "none"
    return out


def build_commands(
    bot: ChannelBot,
) -> list[app_commands.Command[Any, Any, Any] | app_commands.Group]:
    """The `/settings` group and `/preferences`."""
    settings = app_commands.Group(
        name="settings", description="This channel's image settings (Manage Server)"
    )

    @settings.command(name="show", description="Show this channel's image settings")
    async def show(interaction: discord.Interaction[Any]) -> None:
        ctx = bot.context(interaction)
        if not can_manage(interaction, ctx):
            await _answer(interaction, str(_not_manager()))
            return
        current = await _rules(bot).settings(ctx.channel_id)
        used = (
            await bot.requests.store.channel_used(ctx.channel_id)  # type: ignore[attr-defined]
            if ctx.channel_id is not None and current.daily_cap
            else None
        )
        lines = current.lines()
        if used is not None:
            lines.append(f"used today: {used} of {current.daily_cap}")
        await _answer(interaction, "**Channel settings**\n" + "\n".join(lines))

    @settings.command(name="set", description="Change this channel's image settings")
    @app_commands.describe(**{k: v[:100] for k, v in SETTING_NAMES.items()})
    @app_commands.choices(backend=_BACKENDS, content=_RULES)
    async def set_(  # noqa: PLR0913
        interaction: discord.Interaction[Any],
        enabled: bool | None = None,
        backend: str | None = None,
        model: str | None = None,
        params: str | None = None,
        workflow: str | None = None,
        checkpoint: str | None = None,
        loras: str | None = None,
        content: str | None = None,
        requester_only: bool | None = None,
        daily_cap: str | None = None,
    ) -> None:
        ctx = bot.context(interaction)
        if not can_manage(interaction, ctx) or ctx.channel_id is None:
            await _answer(interaction, str(_not_manager()))
            return
        changes = _changes(
            enabled=enabled,
            backend=backend,
            model=model,
            params=params,
            workflow=workflow,
            checkpoint=checkpoint,
            loras=loras,
            content=content,
            requester_only=requester_only,
            daily_cap=daily_cap,
        )
        try:
            new = await _rules(bot).change(ctx.channel_id, changes)
        except GouacheError as exc:
            await _answer(interaction, f"Nothing was changed:\n{exc}")
            return
        log.info("channel.settings_set", channel_id=ctx.channel_id, by=ctx.user_id)
        await _answer(interaction, "**Saved.** Channel settings now:\n" + "\n".join(new.lines()))

    @app_commands.command(name="preferences", description="Your own default model and parameters")
    @app_commands.describe(
        model="Your default model (where the channel allows it); none to clear",
        params="Your default --parameters, e.g. --ar 2:3; none to clear",
    )
    async def preferences(
        interaction: discord.Interaction[Any], model: str | None = None, params: str | None = None
    ) -> None:
        ctx = bot.context(interaction)
        rules = _rules(bot)
        changes = _changes(model=model, params=params)
        try:
            if changes:
                user = await bot.requests.store.get_user(ctx.user_id)
                tier = bot.requests.tier_for(ctx.role_ids, user.tier)
                prefs = await rules.change_preferences(ctx.user_id, changes, tier)
            else:
                prefs = await rules.store.get_preferences(ctx.user_id)
        except GouacheError as exc:
            await _answer(interaction, f"Nothing was changed:\n{exc}")
            return
        head = "**Saved.** " if changes else ""
        await _answer(
            interaction,
            f"{head}Your defaults: model {prefs.model or 'none'}, params {prefs.params or 'none'}",
        )

    async def suggest(
        interaction: discord.Interaction[Any], current: str
    ) -> list[app_commands.Choice[str]]:
        return await model_suggestions(bot, interaction, current)

    async def suggest_midjourney(
        interaction: discord.Interaction[Any], current: str
    ) -> list[app_commands.Choice[str]]:
        return await model_suggestions(bot, interaction, current, midjourney_only=True)

    set_.autocomplete("model")(suggest_midjourney)
    preferences.autocomplete("model")(suggest)
    return [settings, preferences]


def _not_manager() -> NotAllowed:
    return NotAllowed("Only members with Manage Server (or the bot's owners) can use /settings.")
