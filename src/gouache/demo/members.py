"""Simulated members acting through the Discord sandbox, as people would.

Everything a member does goes through Discord's wire protocol: the sandbox
turns `/imagine` and button presses into interactions the real bot receives.
`Observer` watches the channel and the app's event bus, so the demo and the
smoke scenario wait on what happened, never on a timer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gouache.events import EventBus
from gouache.jobs import JobEvent
from gouache_sandbox.discord import DiscordSandbox
from gouache_sandbox.discord.members import SimulatedMember
from gouache_sandbox.discord.state import Interaction, Message

__all__ = ["Observer", "Reply", "buttons", "job_id_of"]

BUTTON_PREFIX = "gouache:"


def buttons(message: Message) -> list[str]:
    """The custom ids of a message's buttons, in order."""
    return [
        str(c["custom_id"])
        for row in message.components
        for c in row.get("components", [])
        if "custom_id" in c
    ]


def job_id_of(message: Message) -> str | None:
    """The job a bot message is about (its buttons carry the job id)."""
    for cid in buttons(message):
        parts = cid.split(":")
        if len(parts) >= 3 and cid.startswith(BUTTON_PREFIX):
            return parts[2]
    return None


@dataclass
class Reply:
    """The bot's answer to one interaction."""

    message: Message
    job_id: str | None

    @property
    def ephemeral(self) -> bool:
        return self.message.visible_to is not None

    @property
    def text(self) -> str:
        parts = [self.message.content]
        for embed in self.message.embeds:
            parts += [str(embed.get("title", "")), str(embed.get("description", ""))]
        return "\n".join(p for p in parts if p)


@dataclass
class Observer:
    """Final job events from the app's bus, and replies from the sandbox."""

    sandbox: DiscordSandbox
    bus: EventBus
    finals: dict[str, JobEvent] = field(default_factory=dict)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        sub = self.bus.subscribe(lambda e: e.final)

        async def collect() -> None:
            with sub:
                async for event in sub:
                    async with self._changed:
                        self.finals[event.job_id] = event
                        self._changed.notify_all()

        self._task = asyncio.create_task(collect(), name="demo-observer")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def final(self, job_id: str, timeout: float) -> JobEvent:
        """Wait for ``job_id``'s final event."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: job_id in self.finals)
        return self.finals[job_id]

    async def reply(self, channel_id: int, interaction: Interaction, timeout: float = 20) -> Reply:
        """The bot's message answering ``interaction`` (a command or a button press).

        A command's answer carries the job's buttons; a button press answers
        with a new message for the follow-up job, or an ephemeral note.
        """
        message = await self.sandbox.wait_for_message(
            channel_id,
            lambda m: (
                _answers(m, interaction) and (job_id_of(m) is not None or m.visible_to is not None)
            ),
            timeout=timeout,
        )
        return Reply(message, job_id_of(message))

    async def message_where(
        self, channel_id: int, predicate: Callable[[Message], bool], timeout: float = 20
    ) -> Message:
        return await self.sandbox.wait_for_message(channel_id, predicate, timeout=timeout)


def _answers(message: Message, interaction: Interaction) -> bool:
    meta: dict[str, Any] = message.interaction_metadata or {}
    return str(meta.get("id")) == str(interaction.id)


def imagine(
    member: SimulatedMember,
    channel_id: int,
    prompt: str,
    *,
    backend: str | None = None,
    aspect: str | None = None,
) -> Interaction:
    """``/imagine prompt [backend] [aspect]`` as ``member``."""
    options: dict[str, Any] = {"prompt": prompt}
    if backend:
        options["backend"] = backend
    if aspect:
        options["aspect"] = aspect
    return member.invoke(channel_id, "imagine", options)
