"""The image commands: /blend and /describe, and the buttons under a description.

Thin like the rest of the bot layer: attachment options become `Source`s, the
rules are `Requests.blend`, `Requests.describe` and `Requests.imagine_described`.
"""

from __future__ import annotations

from typing import Any, Protocol

import discord
import structlog
from discord import app_commands

from gouache.bot.i18n import t
from gouache.bot.image_requests import Shape, source
from gouache.bot.service import Receipt, RequestContext, Requests
from gouache.errors import GouacheError
from gouache.images.inputs import Source
from gouache.jobs import InputRole

log = structlog.get_logger(__name__)

_SHAPES = [app_commands.Choice(name=s.value, value=s.value) for s in Shape]


class ImageBot(Protocol):
    """What the commands need of the bot client."""

    requests: Requests
    accepting: bool

    def context(self, interaction: discord.Interaction[Any]) -> RequestContext: ...

    async def _refuse(self, interaction: discord.Interaction[Any], message: str) -> None: ...

    async def _answer_receipt(
        self, interaction: discord.Interaction[Any], receipt: Receipt
    ) -> None: ...


def attached(
    image: discord.Attachment | None,
    style_ref: discord.Attachment | None,
    character_ref: discord.Attachment | None,
) -> list[Source]:
    """/imagine's attachment options as sources (image prompt, style, character)."""
    roles = ((image, InputRole.PROMPT), (style_ref, InputRole.STYLE))
    pairs = (*roles, (character_ref, InputRole.CHARACTER))
    return [source(role, a.url, a.size) for a, role in pairs if a is not None]


async def _run(bot: ImageBot, interaction: discord.Interaction[Any], request: Any) -> None:
    """Answer with the receipt of ``request`` (an awaitable), or refuse with its error."""
    ctx = bot.context(interaction)
    if not bot.accepting:
        request.close()
        await bot._refuse(interaction, t(ctx.locale, "shutting_down"))
        return
    try:
        receipt = await request
    except GouacheError as exc:
        await bot._refuse(interaction, str(exc))
        return
    await bot._answer_receipt(interaction, receipt)


def commands(
    bot: ImageBot, backend_choices: list[app_commands.Choice[str]]
) -> list[app_commands.Command[Any, Any, Any]]:
    """/blend and /describe, bound to ``bot``."""

    @app_commands.command(name="blend", description="Blend 2 to 5 images into one")
    @app_commands.describe(
        image1="The first image",
        image2="The second image",
        image3="A third image",
        image4="A fourth image",
        image5="A fifth image",
        dimensions="The shape of the result",
        backend="Which kind of worker to use",
    )
    @app_commands.choices(dimensions=_SHAPES, backend=backend_choices)
    async def blend(  # noqa: PLR0913
        interaction: discord.Interaction[Any],
        image1: discord.Attachment,
        image2: discord.Attachment,
        image3: discord.Attachment | None = None,
        image4: discord.Attachment | None = None,
        image5: discord.Attachment | None = None,
        dimensions: str = Shape.SQUARE.value,
        backend: str | None = None,
    ) -> None:
        given = [a for a in (image1, image2, image3, image4, image5) if a is not None]
        images = [source(InputRole.BLEND, a.url, a.size, n) for n, a in enumerate(given, 1)]
        ctx = bot.context(interaction)
        await _run(bot, interaction, bot.requests.blend(ctx, images, Shape(dimensions), backend))

    @app_commands.command(name="describe", description="Four prompts that would draw an image")
    @app_commands.describe(image="The image to describe", backend="Which kind of worker to use")
    @app_commands.choices(backend=backend_choices)
    async def describe(
        interaction: discord.Interaction[Any],
        image: discord.Attachment,
        backend: str | None = None,
    ) -> None:
        ctx = bot.context(interaction)
        picture = source(InputRole.DESCRIBE, image.url, image.size)
        await _run(bot, interaction, bot.requests.describe(ctx, picture, backend))

    return [blend, describe]


async def on_describe_button(
    bot: ImageBot, interaction: discord.Interaction[Any], job_id: str, index: int | None
) -> None:
    """Imagine prompt ``index`` of a description, or all four ("Imagine all")."""
    ctx = bot.context(interaction)
    if index is not None:
        await _run(bot, interaction, bot.requests.imagine_described(ctx, job_id, index))
        return
    if not bot.accepting:
        await bot._refuse(interaction, t(ctx.locale, "shutting_down"))
        return
    try:
        first = await bot.requests.imagine_described(ctx, job_id, 1)
    except GouacheError as exc:
        await bot._refuse(interaction, str(exc))
        return
    await bot._answer_receipt(interaction, first)
    for n in (2, 3, 4):
        try:
            receipt = await bot.requests.imagine_described(ctx, job_id, n, first=False)
        except GouacheError as exc:
            await interaction.followup.send(str(exc)[:2000], ephemeral=True)
            return
        track = getattr(bot, "delivery", None)
        if track is not None:
            track.track(receipt.job.id)
            track.mark(receipt.job.id)
