"""Embeds for a job's live message: stage, progress bar, position, ETA, preview, result.

Pure functions of a `Job` and a few numbers, so every state is tested without
Discord. Everything echoed back respects Discord's limits (title 256,
description 4096, field value 1024, 6000 characters per embed in total, 2000
per content).
"""

from __future__ import annotations

from dataclasses import dataclass

import discord

from gouache.bot.describe_view import described_text
from gouache.bot.i18n import t
from gouache.jobs import Action, ErrorCode, Job, JobState
from gouache.params import ParsedPrompt

PROMPT_ECHO_LIMIT = 1000
CONTENT_LIMIT = 2000
EMBED_TOTAL_LIMIT = 6000

_COLORS = {
    JobState.QUEUED: 0x95A5A6,
    JobState.SUBMITTED: 0x3498DB,
    JobState.RUNNING: 0x3498DB,
    JobState.GENERATED: 0x1ABC9C,
    JobState.STORING: 0x1ABC9C,
    JobState.SUCCEEDED: 0x2ECC71,
    JobState.FAILED: 0xE74C3C,
    JobState.TIMED_OUT: 0xE67E22,
    JobState.CANCELED: 0x7F8C8D,
}


@dataclass(frozen=True, slots=True)
class LiveInfo:
    """What the message shows besides the job itself."""

    position: int | None = None
    eta_s: float | None = None
    quota_remaining: int | None = None
    quota_limit: int | None = None
    preview_name: str | None = None  # attachment name of the preview, if one is attached
    result_name: str | None = None  # attachment name of the final image
    waiting_note: bool = False  # the backend said "Job queued"


def clip(text: str, limit: int) -> str:
    """Shorten ``text`` to at most ``limit`` characters, marking the cut."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def progress_bar(percent: int, width: int = 16) -> str:
    """A text progress bar such as ``▰▰▰▰▱▱▱▱ 50%``."""
    percent = max(0, min(100, percent))
    filled = round(width * percent / 100)
    return "▰" * filled + "▱" * (width - filled) + f" {percent}%"


def format_eta(locale: str, seconds: float | None) -> str:
    """``~40 s`` / ``~3 min`` in the member's language."""
    if seconds is None:
        return "—"
    if seconds < 90:
        return t(locale, "seconds", n=max(1, round(seconds)))
    return t(locale, "minutes", n=round(seconds / 60))


def _description(job: Job, info: LiveInfo) -> str:
    """The embed's description: progress, position, notes, the reason it ended, or prompts."""
    loc = job.locale
    state = job.state
    if state in (JobState.SUBMITTED, JobState.RUNNING):
        description = progress_bar(job.progress)
    elif state is JobState.QUEUED and info.position is not None:
        description = f"#{info.position + 1}"
    else:
        description = ""
    if info.waiting_note and not state.terminal:
        description = f"{description}\n{t(loc, 'worker_queue')}".strip()
    if job.meta.get("translation") == "unavailable" and not state.terminal:
        description = f"{description}\n{t(loc, 'translation_unavailable')}".strip()
    if state in (JobState.FAILED, JobState.TIMED_OUT, JobState.CANCELED):
        reason = job.error_message or ""
        description = f"{clip(reason, 1500)}\n{t(loc, 'refunded')}".strip()
    elif state is JobState.SUCCEEDED and job.action is Action.DESCRIBE:
        description = described_text(job)
    return description


def job_embed(job: Job, info: LiveInfo) -> discord.Embed:
    """The embed of ``job``'s message for its current state."""
    loc = job.locale
    state = job.state
    title = t(loc, state.value)
    description = _description(job, info)
    embed = discord.Embed(
        title=clip(title, 256), description=clip(description, 4096) or None, color=_COLORS[state]
    )
    # The member's prompt as typed; after a translation, also what the worker gets.
    sent = ParsedPrompt(text=job.prompt, params=job.params).render()
    original = job.meta.get("original_prompt")
    typed = original if isinstance(original, str) and original.strip() else sent
    embed.add_field(name=t(loc, "prompt"), value=clip(typed, PROMPT_ECHO_LIMIT), inline=False)
    if typed != sent:
        embed.add_field(
            name=t(loc, "translated"), value=clip(sent, PROMPT_ECHO_LIMIT), inline=False
        )
    if state is JobState.QUEUED:
        if info.position is not None:
            embed.add_field(name=t(loc, "position"), value=f"#{info.position + 1}")
        embed.add_field(name=t(loc, "eta"), value=format_eta(loc, info.eta_s))
    if info.quota_remaining is not None and info.quota_limit is not None and not state.terminal:
        embed.add_field(
            name=t(loc, "quota"),
            value=t(loc, "quota_left", remaining=info.quota_remaining, limit=info.quota_limit),
        )
    if state is JobState.SUCCEEDED and info.result_name:
        embed.set_image(url=f"attachment://{info.result_name}")
    elif info.preview_name and not state.terminal:
        embed.set_image(url=f"attachment://{info.preview_name}")
    embed.set_footer(text=f"{job.button_kind or job.action.value} · {job.id[:8]}")
    assert len(embed) <= EMBED_TOTAL_LIMIT
    return embed


def failure_reason(job: Job) -> str:
    """A one-line reason for a job that did not succeed."""
    if job.error_code == ErrorCode.CANCELED:
        return t(job.locale, "canceled")
    return job.error_message or t(job.locale, job.state.value)
