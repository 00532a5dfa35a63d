"""Persistent buttons: U1–U4, V1–V4, re-roll and cancel.

Every button is a `discord.ui.DynamicItem` whose state lives in its
``custom_id`` (``gouache:<op>:<job id>[:<n>]``), so a click is understood after
a restart without any stored view. Views are stopped before they are sent, so
discord.py does not keep one object per message in memory for ever.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

import discord

from gouache.bot.describe_view import describe_view
from gouache.bot.i18n import t
from gouache.bot.result_buttons import backend_view
from gouache.jobs import Action, Job

TEMPLATE = r"gouache:(?P<op>[uvrx]):(?P<job>[0-9a-f]{32})(?::(?P<n>[1-4]))?"
_PATTERN = re.compile(TEMPLATE)

OPS: dict[str, Action | None] = {
    "u": Action.UPSCALE,
    "v": Action.VARIATION,
    "r": Action.REROLL,
    "x": None,
}


class ButtonHandler(Protocol):
    """Who handles a click (the bot client)."""

    async def on_job_button(
        self, interaction: discord.Interaction[Any], op: str, job_id: str, index: int | None
    ) -> None:
        """React to a click on one of our buttons."""


def custom_id(op: str, job_id: str, index: int | None = None) -> str:
    """The custom id of a button (at most 100 characters, as Discord requires)."""
    value = f"gouache:{op}:{job_id}" + (f":{index}" if index else "")
    assert _PATTERN.fullmatch(value)
    assert len(value) <= 100
    return value


class JobButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=TEMPLATE):
    """One of our buttons; the click goes to the client's `on_job_button`."""

    def __init__(  # noqa: PLR0913
        self,
        op: str,
        job_id: str,
        index: int | None = None,
        *,
        label: str = "",
        style: discord.ButtonStyle = discord.ButtonStyle.secondary,
        row: int | None = None,
    ) -> None:
        super().__init__(
            discord.ui.Button(
                label=label or op, style=style, custom_id=custom_id(op, job_id, index), row=row
            )
        )
        self.op = op
        self.job_id = job_id
        self.index = index

    @classmethod
    async def from_custom_id(  # type: ignore[override]
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Button[Any],
        match: re.Match[str],
        /,
    ) -> JobButton:
        """Rebuild the button from a clicked custom id."""
        n = match["n"]
        label = item.label if isinstance(item, discord.ui.Button) else None
        return cls(match["op"], match["job"], int(n) if n else None, label=label or "")

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        """Hand the click to the client."""
        handler: ButtonHandler = interaction.client
        await handler.on_job_button(interaction, self.op, self.job_id, self.index)


def _finished(view: discord.ui.View) -> discord.ui.View:
    view.stop()  # dynamic items dispatch by custom id; no need to keep the view object
    return view


def result_view(job: Job) -> discord.ui.View | None:
    """Buttons under a finished image: U/V for a 2×2 grid, re-roll for anything we imagined.

    Only backends that make grids (Midjourney) report ``meta["grid"]``; a
    ComfyUI image gets the re-roll button alone.
    """
    if isinstance(job.meta.get("buttons"), list):
        return backend_view(job, JobButton)  # the backend's own buttons (gouache.actions)
    if job.action is Action.UPSCALE:
        return None
    if job.action is Action.DESCRIBE:
        return describe_view(job)
    view = discord.ui.View(timeout=None)
    if job.meta.get("grid") is True:
        for n in range(1, 5):
            view.add_item(JobButton("u", job.id, n, label=f"U{n}", row=0))
        for n in range(1, 5):
            view.add_item(JobButton("v", job.id, n, label=f"V{n}", row=1))
    view.add_item(JobButton("r", job.id, label="🔄", style=discord.ButtonStyle.primary, row=0))
    return _finished(view)


def progress_view(job: Job) -> discord.ui.View:
    """A cancel button under a job that is still waiting or running."""
    view = discord.ui.View(timeout=None)
    view.add_item(
        JobButton("x", job.id, label=t(job.locale, "cancel"), style=discord.ButtonStyle.danger)
    )
    return _finished(view)
