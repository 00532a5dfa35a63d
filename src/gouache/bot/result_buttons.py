"""A result's own buttons under our message, and the modal a click may open first.

A result that kept its backend's buttons (``job.meta["buttons"]``, see
`gouache.actions`) is shown with them, in the backend's rows and order: U/V/🔄
as our usual ``gouache:u|v|r`` buttons, every other one as
``gouache:b:<job id>:<n>`` (``n`` = its place in the list), link buttons as
links. The state is all in the custom id, so clicks work after a restart.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import discord
import structlog

from gouache.actions import Kind, ResultButton
from gouache.bot.clicks import Click, buttons_of
from gouache.jobs import Job

log = structlog.get_logger(__name__)

TEMPLATE = r"gouache:b:(?P<job>[0-9a-f]{32}):(?P<n>\d{1,2})"
_LEGACY = {Kind.UPSCALE: "u", Kind.VARIATION: "v", Kind.REROLL: "r"}
_STYLES = {
    1: discord.ButtonStyle.primary,
    2: discord.ButtonStyle.secondary,
    3: discord.ButtonStyle.success,
    4: discord.ButtonStyle.danger,
}
#: How long a member may take to fill in a click's modal (Discord keeps it open about 15 min).
MODAL_TIMEOUT_S = 600.0


class ResultClickHandler(Protocol):
    """Who handles a click on a result's button (the bot client)."""

    async def on_result_button(
        self, interaction: discord.Interaction[Any], job_id: str, number: int
    ) -> None:
        """React to a click on the ``number``-th button of job ``job_id``'s result."""


class ResultButtonItem(discord.ui.DynamicItem[discord.ui.Button[Any]], template=TEMPLATE):
    """One of a result's own buttons; the click goes to the client's `on_result_button`."""

    def __init__(self, job_id: str, number: int, button: discord.ui.Button[Any]) -> None:
        super().__init__(button)
        self.job_id = job_id
        self.number = number

    @classmethod
    async def from_custom_id(  # type: ignore[override]
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Button[Any],
        match: re.Match[str],
        /,
    ) -> ResultButtonItem:
        """Rebuild the button from a clicked custom id."""
        return cls(match["job"], int(match["n"]), item)

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        """Hand the click to the client."""
        handler: ResultClickHandler = interaction.client
        await handler.on_result_button(interaction, self.job_id, self.number)


LegacyButton = Callable[..., discord.ui.Item[Any]]


def _button(
    job: Job, number: int, b: ResultButton, legacy_button: LegacyButton
) -> discord.ui.Item[Any]:
    label = b.label_for(job.locale)
    emoji = b.emoji_for()
    row = min(b.row, 4)
    if b.is_link:
        return discord.ui.Button(
            label=label or "Web", url=b.url, style=discord.ButtonStyle.link, emoji=emoji, row=row
        )
    legacy = _LEGACY.get(b.known)
    if legacy is not None and (b.known is Kind.REROLL or b.index):
        style = discord.ButtonStyle.primary if legacy == "r" else discord.ButtonStyle.secondary
        return legacy_button(legacy, job.id, b.index, label=label or "🔄", style=style, row=row)
    if not label and not emoji:
        label = b.custom_id.split("::")[2 if b.custom_id.count("::") > 2 else -1][:80] or "?"
    button: discord.ui.Button[Any] = discord.ui.Button(
        label=label or None,
        emoji=emoji,
        style=_STYLES.get(b.style, discord.ButtonStyle.secondary),
        custom_id=f"gouache:b:{job.id}:{number}",
        row=row,
    )
    return ResultButtonItem(job.id, number, button)


def backend_view(job: Job, legacy_button: LegacyButton) -> discord.ui.View | None:
    """The result's own buttons (at most 5 rows of 5, as Discord allows), or None if it has none.

    ``legacy_button`` makes our U/V/🔄 buttons (`gouache.bot.views.JobButton`).
    """
    buttons = buttons_of(job)
    if not buttons:
        return None
    view = discord.ui.View(timeout=None)
    per_row: dict[int, int] = {}
    for number, b in enumerate(buttons[:100]):
        row = min(b.row, 4)
        if per_row.get(row, 0) >= 5:
            continue
        per_row[row] = per_row.get(row, 0) + 1
        view.add_item(_button(job, number, b, legacy_button))
    view.stop()  # dynamic items dispatch by custom id; no view object is kept
    return view


Submit = Callable[[discord.Interaction[Any], Click, str], Awaitable[None]]

_TITLES = {
    ("custom_zoom", "en"): ("Custom Zoom", "Prompt (with --zoom 1.0 to 2.0)"),
    ("custom_zoom", "zh"): ("自定义缩放", "提示词（含 --zoom 1.0 到 2.0）"),
    ("remix", "en"): ("Remix", "New prompt"),
    ("remix", "zh"): ("重混", "新的提示词"),
}


class ClickModal(discord.ui.Modal):
    """Our modal for a click that needs the member's input (Custom Zoom, Remix)."""

    def __init__(self, click: Click, locale: str, submit: Submit) -> None:
        lang = "zh" if locale.lower().startswith("zh") else "en"
        title, label = _TITLES[(click.ask or "remix", lang)]
        # discord.py finds an open modal by its custom id alone: make each one unique.
        super().__init__(
            title=title, timeout=MODAL_TIMEOUT_S, custom_id=f"gouache:m:{secrets.token_hex(8)}"
        )
        self.click = click
        self._submit = submit
        self.value: discord.ui.TextInput[ClickModal] = discord.ui.TextInput(
            label=label,
            style=discord.TextStyle.paragraph,
            default=click.prefill[:4000],
            required=True,
            max_length=4000,
            custom_id="prompt",
        )
        self.add_item(self.value)

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        """Hand the member's value on (it is validated there)."""
        await self._submit(interaction, self.click, self.value.value)

    async def on_timeout(self) -> None:
        """Nothing was queued for this click, so there is nothing to undo."""
        log.info("click.modal_timeout", parent=self.click.parent.id, kind=self.click.button.kind)


def open_modal(click: Click, locale: str, submit: Submit) -> ClickModal:
    """The modal to show for ``click`` (its ``ask`` is set)."""
    return ClickModal(click, locale, submit)
