"""The `Worker` protocol and the signals a worker reports about a job.

A worker is one image backend endpoint: a Midjourney account (one Discord
gateway connection) or a ComfyUI server. The pool owns selection and job
bookkeeping; a worker only submits, follows and cancels, and reports what
happens through a `JobSink`. Workers never touch the store.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from gouache.jobs import ErrorCode, Job


class WorkerState(StrEnum):
    """A worker's health as the pool and the owner see it."""

    CONNECTING = "connecting"
    READY = "ready"
    BUSY = "busy"  # healthy, but every slot is taken
    DRAINING = "draining"  # finishing its jobs, taking no new ones
    QUARANTINED = "quarantined"  # needs a person (captcha, ban, subscription)
    DISABLED = "disabled"  # switched off by the owner or by a fatal error
    OFFLINE = "offline"  # cannot reach the backend; retrying


@dataclass(frozen=True, slots=True)
class WorkerSnapshot:
    """One row of `gouache pool status`."""

    name: str
    kind: str
    state: WorkerState
    capacity: int
    in_flight: int
    latency_ms: float | None = None
    done_today: int = 0
    last_error: str | None = None
    reason: str | None = None  # why quarantined/disabled
    mode: str | None = None  # e.g. Midjourney fast/relax
    owner: str | None = None  # the process holding it (scale-out)


# -- signals ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Accepted:
    """The backend took the job (Midjourney answered 204 / ComfyUI gave a prompt id)."""

    external_id: str | None = None


@dataclass(frozen=True, slots=True)
class Waiting:
    """The backend queued the job on its side ("Job queued", ComfyUI queue position)."""

    position: int | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class Progress:
    """Work is under way: percent done and, when the backend sends one, a preview."""

    percent: int
    preview: bytes | None = None
    preview_url: str | None = None
    external_id: str | None = None


@dataclass(frozen=True, slots=True)
class Generated:
    """The images exist; ``images`` are their bytes (PNG/JPEG), fetched by the worker.

    ``meta`` carries what follow-ups need (Midjourney message id and job hash,
    ComfyUI prompt id and file names).
    """

    images: list[bytes]
    external_id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Failed:
    """The job did not work out.

    ``retryable`` asks the pool to give it to another worker (the backend died,
    not the prompt); ``code`` is an `ErrorCode` and
    ``message`` is fit for the user (one short line); ``detail`` is the
    backend's whole report (server paths, traceback) for the owner's log and
    ``gouache job show``, never shown to the member.
    """

    code: ErrorCode
    message: str
    retryable: bool = False
    detail: str | None = None


Signal = Accepted | Waiting | Progress | Generated | Failed

JobSink = Callable[[Job, Signal], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class WorkerAlert:
    """Something the owner must hear about (quarantine, credits, ban)."""

    worker: str
    state: WorkerState
    reason: str
    at: datetime


AlertSink = Callable[[WorkerAlert], Awaitable[None]]


class StateListeners:
    """A mixin for workers: lets the pool hear about state changes without polling.

    A worker calls `_state_changed()` whenever its state, capacity or mode
    changes (connected, quarantined, reconnected...); the pool registers a
    listener that wakes the dispatcher.
    """

    _listeners: list[Callable[[], None]]

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (synchronously, no arguments) on every state change."""
        if not hasattr(self, "_listeners"):
            self._listeners = []
        self._listeners.append(callback)

    def _state_changed(self) -> None:
        for callback in getattr(self, "_listeners", ()):
            callback()


@runtime_checkable
class Worker(Protocol):
    """One image backend endpoint the pool can hand jobs to."""

    name: str
    kind: str  # "midjourney" | "comfyui"

    async def start(self) -> None:
        """Connect and begin reporting health; returns once connecting has begun."""

    async def aclose(self) -> None:
        """Stop: cancel background tasks and close connections."""

    @property
    def capacity(self) -> int:
        """How many jobs it may run at once."""

    @property
    def in_flight(self) -> int:
        """How many jobs it is running now."""

    @property
    def state(self) -> WorkerState:
        """Its current health."""

    def can_serve(self, job: Job) -> bool:
        """Whether this worker can take ``job`` at all (kind, parameters, follow-up ownership)."""

    def snapshot(self) -> WorkerSnapshot:
        """Its row for `gouache pool status`."""

    async def submit(self, job: Job, report: JobSink) -> None:
        """Start ``job``; returns once the backend accepted it (or raises).

        From then on every signal about the job goes to ``report``, ending with
        exactly one `Generated` or `Failed`.
        """

    async def cancel(self, job: Job) -> None:
        """Stop a job this worker is running (best effort; a `Failed` or `Generated` still follows)."""

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` on every state change (see `StateListeners`)."""
