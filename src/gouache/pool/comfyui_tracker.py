"""ComfyUI's WebSocket messages turned into what happened to our prompts, without a socket.

`RunTracker` is fed the decoded JSON messages and binary frames of one
server's socket, and knows the prompt ids we submitted. It owns each prompt's
protocol state — started, progress over the graph, the outputs announced by
``executed``, whether it lived through a gap in the socket — and which prompt
the server runs now. It owns no socket, clock or job: each call returns a list
of effects, and `gouache.pool.comfyui.ComfyUIWorker` carries them out
(throttling, reporting, asking ``/history``), as the gateway's
`gouache.pool.gateway_session.GatewaySession` does for Discord.

Effects:

- `Heard` — news about a prompt of ours (the worker's silence timer starts over);
- `Started` — the prompt began to run (once);
- `Progressed` — its percentage (never going back, below 100) and a preview image, if one came;
- `Finished` — ``execution_success`` with the outputs seen over an unbroken
  socket: fetch ``files``;
- `Ended` — ``executing`` with no node: the prompt is done and its outcome is
  in ``/history`` (used when `Finished` could not be trusted);
- `Errored` — ``execution_error``: the job fails with ``failed``;
- `Interrupted` — ``execution_interrupted`` (a cancel of ours, or someone else's);
- `QueueChanged` — a ``status`` broadcast: positions in the queue may have moved;
- `Unknown` — a message about a prompt we do not track (another client's, or
  one we gave up on).

A prompt the worker has `ended <RunTracker.end>` gets no further effects.
Unknown message types (``progress_state``, ``feature_flags`` …) and binary
frames that are not previews give no effects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gouache.jobs import ErrorCode
from gouache.pool.base import Failed
from gouache.pool.comfyui_wire import (
    RunProgress,
    as_float,
    execution_error_detail,
    execution_error_summary,
    output_files,
    parse_preview,
)

__all__ = [
    "Effect",
    "Ended",
    "Errored",
    "Finished",
    "Heard",
    "Interrupted",
    "Progressed",
    "QueueChanged",
    "RunTracker",
    "Started",
    "Unknown",
    "execution_failure",
]


# -- effects ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Heard:
    """A message about ``prompt_id`` arrived: it is alive on the server."""

    prompt_id: str


@dataclass(frozen=True, slots=True)
class Started:
    """``prompt_id`` began to run (it left the server's queue)."""

    prompt_id: str


@dataclass(frozen=True, slots=True)
class Progressed:
    """``prompt_id`` is at ``percent``; ``preview`` is a new preview image (or None)."""

    prompt_id: str
    percent: int
    preview: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Finished:
    """``prompt_id`` succeeded; ``files`` are its result images (may be empty)."""

    prompt_id: str
    files: list[dict[str, str]]


@dataclass(frozen=True, slots=True)
class Ended:
    """``prompt_id`` is done (``executing`` with no node): its outcome is in ``/history``."""

    prompt_id: str


@dataclass(frozen=True, slots=True)
class Errored:
    """``prompt_id`` failed on the server; ``failed`` is the job's failure."""

    prompt_id: str
    failed: Failed


@dataclass(frozen=True, slots=True)
class Interrupted:
    """``prompt_id`` was interrupted."""

    prompt_id: str


@dataclass(frozen=True, slots=True)
class QueueChanged:
    """The server's queue changed (``status``)."""


@dataclass(frozen=True, slots=True)
class Unknown:
    """A message named ``prompt_id``, which we do not track."""

    prompt_id: str


Effect = (
    Heard | Started | Progressed | Finished | Ended | Errored | Interrupted | QueueChanged | Unknown
)


def execution_failure(
    data: Mapping[str, Any], redact: Callable[[str], str] = lambda text: text
) -> Failed:
    """An ``execution_error``'s data as a job failure: one line for the member, the rest as detail."""
    return Failed(
        ErrorCode.WORKER_ERROR,
        execution_error_summary(data),
        detail=redact(execution_error_detail(data)),
    )


# -- the tracker ---------------------------------------------------------------------------


@dataclass(eq=False)
class _Prompt:
    progress: RunProgress
    gap: bool  # lived through a socket gap: messages may have been lost
    started: bool = False
    ended: bool = False  # the worker is ending it: ignore what follows
    outputs: dict[str, Any] = field(default_factory=dict)


class RunTracker:
    """The prompts of one server and what its WebSocket says about them (module docstring).

    ``redact`` is applied to the detail of execution errors (it may name a secret).
    """

    def __init__(self, redact: Callable[[str], str] = lambda text: text) -> None:
        self._redact = redact
        self._prompts: dict[str, _Prompt] = {}
        #: The prompt the server runs now, as far as the messages tell.
        self.current: str | None = None

    def __contains__(self, prompt_id: object) -> bool:
        return prompt_id in self._prompts

    # -- what the worker tells it ------------------------------------------------------------

    def track(self, prompt_id: str, nodes: frozenset[str], *, gap: bool) -> None:
        """A prompt of ours with these graph ``nodes``; ``gap``: no socket is open now."""
        self._prompts[prompt_id] = _Prompt(RunProgress(nodes), gap)

    def rename(self, old: str, new: str) -> None:
        """The server chose its own id for a prompt we submitted as ``old``."""
        prompt = self._prompts.pop(old, None)
        if prompt is not None:
            self._prompts[new] = prompt

    def end(self, prompt_id: str) -> None:
        """The worker is ending this prompt: what follows about it is ignored."""
        prompt = self._prompts.get(prompt_id)
        if prompt is not None:
            prompt.ended = True

    def forget(self, prompt_id: str) -> None:
        """The prompt is no longer ours (messages about it are `Unknown` from now on)."""
        self._prompts.pop(prompt_id, None)

    def disconnected(self) -> None:
        """The socket is gone: every prompt lived through a gap; nobody is known to run."""
        self.current = None
        for prompt in self._prompts.values():
            prompt.gap = True

    def in_gap(self, prompt_id: str) -> bool:
        """Whether messages about the prompt may have been lost (trust only ``/history``)."""
        prompt = self._prompts.get(prompt_id)
        return prompt is not None and prompt.gap

    # -- what the socket says -----------------------------------------------------------------

    def receive(self, message: object) -> list[Effect]:  # noqa: C901, PLR0912
        """Feed one decoded JSON message; what it means for our prompts."""
        if not isinstance(message, Mapping):
            return []
        kind = message.get("type")
        data = message.get("data")
        if not isinstance(data, Mapping):
            return []
        if kind == "status":
            return [QueueChanged()]
        if kind == "executing" and "prompt_id" not in data and self.current is not None:
            data = {**data, "prompt_id": self.current}  # the bare message after a reconnect
        if kind in ("execution_start", "executing", "progress"):
            self.current = str(data["prompt_id"]) if data.get("prompt_id") else None
        prompt_id = data.get("prompt_id")
        if prompt_id is None:
            return []
        prompt_id = str(prompt_id)
        prompt = self._prompts.get(prompt_id)
        if prompt is None:
            return [Unknown(prompt_id)]
        if prompt.ended:
            return []
        effects: list[Effect] = [Heard(prompt_id)]
        if kind == "execution_start":
            effects += self._start(prompt_id, prompt)
            effects.append(Progressed(prompt_id, prompt.progress.percent))
        elif kind == "execution_cached":
            prompt.progress.cached.update(str(n) for n in data.get("nodes") or ())
        elif kind == "executing":
            node = data.get("node")
            if node is None:
                self.current = None
                effects.append(Ended(prompt_id))
            else:
                effects += self._start(prompt_id, prompt)
                effects.append(Progressed(prompt_id, prompt.progress.node_started(str(node))))
        elif kind == "progress":
            effects += self._start(prompt_id, prompt)
            percent = prompt.progress.tick(
                str(data.get("node")), as_float(data.get("value")), as_float(data.get("max"))
            )
            effects.append(Progressed(prompt_id, percent))
        elif kind == "executed":
            output = data.get("output")
            if isinstance(output, dict):
                prompt.outputs[str(data.get("node"))] = output
        elif kind == "execution_success":
            # After a gap some `executed` may be missing: then wait for `executing`
            # with no node and read /history instead.
            if not prompt.gap and prompt.outputs:
                effects.append(Finished(prompt_id, output_files(prompt.outputs)))
        elif kind == "execution_error":
            effects.append(Errored(prompt_id, execution_failure(data, self._redact)))
        elif kind == "execution_interrupted":
            effects.append(Interrupted(prompt_id))
        return effects

    def receive_binary(self, frame: bytes) -> list[Effect]:
        """Feed one binary frame: a preview of the prompt it names (or of the running one)."""
        parsed = parse_preview(frame)
        if parsed is None:
            return []
        image, named = parsed
        prompt_id = named or self.current
        if prompt_id is None:
            return []
        prompt = self._prompts.get(prompt_id)
        if prompt is None:
            return [Unknown(prompt_id)]
        if prompt.ended:
            return []
        return [Heard(prompt_id), Progressed(prompt_id, prompt.progress.percent, image)]

    @staticmethod
    def _start(prompt_id: str, prompt: _Prompt) -> list[Effect]:
        if prompt.started:
            return []
        prompt.started = True
        return [Started(prompt_id)]
