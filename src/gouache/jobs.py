"""The vocabulary everything else speaks: `Job`, `JobState`, `JobEvent`, error codes.

Job states (DESIGN.md)::

    QUEUED → SUBMITTED → RUNNING → GENERATED → STORING → SUCCEEDED
    any non-terminal state → FAILED | TIMED_OUT | CANCELED

plus one edge DESIGN.md leaves implicit: a job whose lease expired, or whose
worker died before producing an image, goes *back* to QUEUED (SUBMITTED/RUNNING
→ QUEUED) to be retried, at most ``max_attempts`` times. Anything else raises
`IllegalTransition`: it is a bug, never a user error.

Quota is reserved at enqueue, committed at SUCCEEDED and refunded on every
other terminal state.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gouache.errors import ErrorCode as ErrorCode  # re-exported: the vocabulary of job failures
from gouache.errors import IllegalTransition
from gouache.params import Params


class JobState(StrEnum):
    """Where a job is in its life."""

    QUEUED = "queued"
    SUBMITTED = "submitted"
    RUNNING = "running"
    GENERATED = "generated"
    STORING = "storing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        """True for states a job never leaves."""
        return self in TERMINAL_STATES

    @property
    def active(self) -> bool:
        """True while a worker holds the job (popped, not yet finished)."""
        return self in ACTIVE_STATES


TERMINAL_STATES = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.TIMED_OUT, JobState.CANCELED}
)
ACTIVE_STATES = frozenset(
    {JobState.SUBMITTED, JobState.RUNNING, JobState.GENERATED, JobState.STORING}
)
_ENDINGS = frozenset({JobState.FAILED, JobState.TIMED_OUT, JobState.CANCELED})

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.SUBMITTED}) | _ENDINGS,
    JobState.SUBMITTED: frozenset({JobState.RUNNING, JobState.GENERATED, JobState.QUEUED})
    | _ENDINGS,
    JobState.RUNNING: frozenset({JobState.GENERATED, JobState.QUEUED}) | _ENDINGS,
    JobState.GENERATED: frozenset({JobState.STORING}) | _ENDINGS,
    JobState.STORING: frozenset({JobState.SUCCEEDED}) | _ENDINGS,
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.TIMED_OUT: frozenset(),
    JobState.CANCELED: frozenset(),
}


def check_transition(current: JobState, target: JobState) -> None:
    """Raise `IllegalTransition` unless ``current → target`` is in the table."""
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(f"job cannot go from {current} to {target}")


class Action(StrEnum):
    """What a job asks a worker to do."""

    IMAGINE = "imagine"
    UPSCALE = "upscale"
    VARIATION = "variation"
    REROLL = "reroll"
    BLEND = "blend"  # 2-5 input images into one
    DESCRIBE = "describe"  # one input image into four prompts
    #: A click on any other button of a result (see `gouache.actions`): ``Job.button``
    #: holds Midjourney's ``custom_id`` verbatim, or the ComfyUI action's name.
    BUTTON = "button"

    @property
    def follow_up(self) -> bool:
        """Follow-ups act on a parent job's result and must go to the same worker."""
        return self not in _NEW_WORK


_NEW_WORK = frozenset({Action.IMAGINE, Action.BLEND, Action.DESCRIBE})


class InputRole(StrEnum):
    """What an input image is for."""

    PROMPT = "prompt"  # an image prompt (Midjourney) / the img2img source (ComfyUI)
    STYLE = "style"  # --sref
    CHARACTER = "character"  # --cref
    BLEND = "blend"  # one of a /blend's images
    DESCRIBE = "describe"  # the image to /describe


class InputImage(BaseModel):
    """An image a member sent in, as stored: its image-store key and where it came from.

    ``url`` is where it was fetched (a Discord attachment URL, or the link the
    member typed): a process whose image store lacks ``key`` fetches it again.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: InputRole
    key: str
    url: str | None = None
    width: int | None = None
    height: int | None = None


def new_job_id() -> str:
    """A fresh job id: 32 hex characters, unguessable (ids appear in button custom ids).

    128 random bits, as uuid4 has 122, at a quarter of its cost: every request makes one.
    """
    return secrets.token_hex(16)


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class Job(BaseModel):
    """One image request and everything known about it.

    A `Job` is a value: stores return fresh copies, and changes go through
    the store so that every transition is persisted before it is announced.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=False)

    id: str = Field(default_factory=new_job_id)
    user_id: int
    guild_id: int | None = None
    channel_id: int | None = None
    action: Action = Action.IMAGINE
    prompt: str
    params: Params = Field(default_factory=Params)
    parent_id: str | None = None
    index: int | None = None  # 1–4 for upscale/variation of a grid image
    button: str | None = None  # Action.BUTTON: Midjourney custom_id / ComfyUI action name
    button_kind: str | None = None  # its kind (gouache.actions.Kind value, "unknown" if new)
    button_input: str | None = None  # what the member typed in the button's modal, if any
    backend: str | None = None  # requested backend kind ("midjourney", "comfyui") or None
    tier: str = "default"
    weight: float = 1.0
    cost: int = 1
    state: JobState = JobState.QUEUED
    progress: int = 0
    worker: str | None = None
    external_id: str | None = None  # Midjourney job hash / ComfyUI prompt id
    preview_url: str | None = None
    results: list[str] = Field(default_factory=list)  # image keys in our image store
    error_code: str | None = None
    error_message: str | None = None  # what the member reads: one short line
    error_detail: str | None = None  # the backend's whole report, for the owner only
    attempts: int = 0
    quota_day: str | None = None  # the local date the quota was reserved against
    locale: str = "en-US"
    # Where progress is shown: the interaction that created it, and the reply message.
    interaction_token: str | None = None
    interaction_at: datetime | None = None
    message_id: int | None = None
    meta: dict[str, Any] = Field(default_factory=dict)
    input_images: list[InputImage] = Field(default_factory=list)  # see `inputs`
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def pinned_worker(self) -> str | None:
        """The one worker that may run this job: a follow-up runs where its parent did."""
        if not self.action.follow_up:
            return None
        parent = self.meta.get("parent")
        worker = parent.get("worker") if isinstance(parent, dict) else None
        return worker if isinstance(worker, str) else None

    def inputs(self, role: InputRole | None = None) -> tuple[InputImage, ...]:
        """The images the member sent in (those of one ``role`` if given), in order."""
        return tuple(i for i in self.input_images if role is None or i.role is role)

    def describe(self) -> str:
        """A short human label for logs and tables."""
        return f"{self.action}:{self.id[:8]}"


class JobEventKind(StrEnum):
    """What a `JobEvent` reports."""

    STATE = "state"
    PROGRESS = "progress"
    POSITION = "position"


@dataclass(frozen=True, slots=True)
class JobEvent:
    """Something delivery should show about a job: a state change, progress or position.

    Events are announcements of what the store already holds; delivery may
    drop intermediate ones (latest state wins).
    """

    job_id: str
    kind: JobEventKind
    state: JobState
    progress: int = 0
    preview: bytes | None = None
    preview_url: str | None = None
    position: int | None = None
    eta_s: float | None = None
    message: str | None = None
    at: datetime = field(default_factory=utcnow)

    @property
    def final(self) -> bool:
        """True when this event announces a terminal state."""
        return self.kind is JobEventKind.STATE and self.state.terminal
