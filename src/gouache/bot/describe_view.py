"""A /describe result: its four prompts, and the buttons that imagine them.

The buttons are `DescribeButton`s (``gouache:d:<job id>:<n>`` imagines prompt
``n``, ``gouache:a:<job id>`` all four), dynamic items like `JobButton`: the
click is understood from its custom id alone, after a restart too. Each
imagine is an ordinary request, queued and charged as any /imagine.
"""

from __future__ import annotations

import re
from typing import Any, Final, Protocol

import discord

from gouache.jobs import Job

TEMPLATE: Final = r"gouache:(?P<op>[da]):(?P<job>[0-9a-f]{32})(?::(?P<n>[1-4]))?"
PROMPTS: Final = "prompts"
_NUMBERS: Final = ("1️⃣", "2️⃣", "3️⃣", "4️⃣")


class DescribeHandler(Protocol):
    """Who handles a click on a describe button (the bot client)."""

    async def on_describe_button(
        self, interaction: discord.Interaction[Any], job_id: str, index: int | None
    ) -> None:
        """Imagine prompt ``index`` of the description (all four when None)."""


def prompts_of(job: Job) -> list[str]:
    """The described prompts a job carries (empty for anything else)."""
    prompts = job.meta.get(PROMPTS)
    return [str(p) for p in prompts] if isinstance(prompts, list) else []


def described_text(job: Job) -> str:
    """The four prompts, numbered as Midjourney numbers them."""
    lines = [
        f"{_NUMBERS[i]} {p if len(p) <= 900 else p[:899] + '…'}"
        for i, p in enumerate(prompts_of(job)[:4])
    ]
    return "\n\n".join(lines)


class DescribeButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=TEMPLATE):
    """1-4 (one prompt) or "Imagine all"."""

    def __init__(self, job_id: str, index: int | None = None, *, label: str = "") -> None:
        op = "d" if index else "a"
        value = f"gouache:{op}:{job_id}" + (f":{index}" if index else "")
        style = discord.ButtonStyle.secondary if index else discord.ButtonStyle.primary
        super().__init__(
            discord.ui.Button(label=label or str(index or "all"), style=style, custom_id=value)
        )
        self.job_id = job_id
        self.index = index

    @classmethod
    async def from_custom_id(  # type: ignore[override]
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Button[Any],
        match: re.Match[str],
        /,
    ) -> DescribeButton:
        """Rebuild the button from a clicked custom id."""
        n = match["n"]
        label = item.label if isinstance(item, discord.ui.Button) else None
        return cls(match["job"], int(n) if match["op"] == "d" and n else None, label=label or "")

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        """Hand the click to the client."""
        handler: DescribeHandler = interaction.client
        await handler.on_describe_button(interaction, self.job_id, self.index)


def describe_view(job: Job) -> discord.ui.View | None:
    """Buttons 1-4 and "Imagine all" under a finished description."""
    count = min(4, len(prompts_of(job)))
    if not count:
        return None
    view = discord.ui.View(timeout=None)
    for n in range(1, count + 1):
        view.add_item(DescribeButton(job.id, n, label=str(n)))
    view.add_item(DescribeButton(job.id, None, label="Imagine all"))
    view.stop()  # dynamic items dispatch by custom id
    return view
