"""ComfyUI's wire format, read without I/O: answers, messages, frames, progress.

Everything here is a pure function (or a small value class) over the JSON and
binary shapes a real ComfyUI 0.3.x sends — the shapes captured in
``shared/fixtures/comfyui`` — so the driver in `gouache.pool.comfyui` stays
thin and this part is tested exhaustively against the captures.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

#: Binary WebSocket event types: a preview image (4-byte format: 1 JPEG, 2 PNG),
#: and the same with a JSON metadata header (sent to clients that ask for it).
PREVIEW_IMAGE: Final = 1
PREVIEW_IMAGE_WITH_METADATA: Final = 4
MAX_REASON: Final = 600
MAX_DETAIL: Final = 8000  # an execution error's full text, as stored on the job


def as_float(value: object) -> float:
    """A JSON number as a float (0.0 for anything else)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return 0.0


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def clip(text: str, limit: int = MAX_REASON) -> str:
    """``text`` cut to ``limit`` characters (with an ellipsis)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe_rejection(body: object) -> str:
    """A readable reason from the 400 body of ``POST /prompt`` (``{error, node_errors}``)."""
    head = "ComfyUI rejected the workflow"
    node_parts: list[str] = []
    details = ""
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping):
            if message := _text(error.get("message")):
                head += f": {message}"
            details = _text(error.get("details"))
        elif message := _text(error):
            head += f": {message}"
        node_errors = body.get("node_errors")
        if isinstance(node_errors, Mapping):
            for node_id, entry in node_errors.items():
                if not isinstance(entry, Mapping):
                    continue
                class_type = _text(entry.get("class_type")) or "?"
                for err in entry.get("errors") or ():
                    if not isinstance(err, Mapping):
                        continue
                    what = _text(err.get("message")) or _text(err.get("type")) or "invalid"
                    more = _text(err.get("details"))
                    node_parts.append(
                        f"node {node_id} ({class_type}): {what}" + (f" - {more}" if more else "")
                    )
    if node_parts:
        return clip(f"{head} — " + "; ".join(node_parts))
    return clip(f"{head} ({details})" if details else head)


def _label(value: object) -> str:
    """A class or node type name fit for a member: one line, no paths, no odd characters."""
    text = _text(value).splitlines()[0] if _text(value) else ""
    text = re.sub(r"[^\w .()+|-]", "", text.rpartition("/")[2].rpartition("\\")[2]).strip()
    return clip(text, 60)


def execution_error_summary(data: Mapping[str, Any]) -> str:
    """What a member reads about an ``execution_error``: one short line, no paths.

    The node's type and the exception's type (its last dotted part) only: the
    message and the traceback name the server's files and the member's inputs,
    and belong to `execution_error_detail`.
    """
    node_type = _label(data.get("node_type")) or "a node"
    exc_type = _label(_text(data.get("exception_type")).rpartition(".")[2])
    message = _text(data.get("exception_message")).lower()
    if (
        "outofmemory" in exc_type.lower()
        or "out of memory" in message
        or ("allocate memory" in message)
    ):
        return f"The image server ran out of memory in {node_type}."
    return f"The image server failed in {node_type}" + (f" ({exc_type})." if exc_type else ".")


def execution_error_detail(data: Mapping[str, Any]) -> str:
    """The whole ``execution_error`` for the owner (log, ``gouache job show``): message and traceback."""
    node = _text(str(data.get("node_id") or "")) or "?"
    node_type = _text(data.get("node_type")) or "?"
    exc_type = _text(data.get("exception_type"))
    message = _text(data.get("exception_message"))
    cause = ": ".join(p for p in (exc_type, message) if p) or "unknown error"
    frames = [f for f in data.get("traceback") or () if isinstance(f, str)]
    trace = "".join(frames).rstrip()
    text = f"ComfyUI failed at node {node} ({node_type}): {cause}"
    return clip(f"{text}\nTraceback:\n{trace}" if trace else text, MAX_DETAIL)


def parse_preview(frame: bytes) -> tuple[bytes, str | None] | None:
    """The image in a binary preview frame and the prompt id it names (type 4 only).

    Other binary event types (progress text, unknown ones) give ``None``.
    """
    if len(frame) < 8:
        return None
    event, second = struct.unpack_from(">II", frame)
    if event == PREVIEW_IMAGE:
        image = frame[8:]
        return (image, None) if image else None
    if event == PREVIEW_IMAGE_WITH_METADATA:
        end = 8 + second
        if end > len(frame):
            return None
        try:
            meta = json.loads(frame[8:end])
        except ValueError:
            return None
        prompt_id = meta.get("prompt_id") if isinstance(meta, dict) else None
        image = frame[end:]
        return (image, str(prompt_id) if prompt_id else None) if image else None
    return None


def output_files(outputs: Mapping[str, Any]) -> list[dict[str, str]]:
    """The image files in a run's outputs (``executed`` messages or ``/history``), in order.

    Saved (``output``) images win; ``temp`` previews only when nothing was saved.
    """
    saved: list[dict[str, str]] = []
    temp: list[dict[str, str]] = []
    for out in outputs.values():
        if not isinstance(out, Mapping):
            continue
        for image in out.get("images") or ():
            if not isinstance(image, Mapping) or not isinstance(image.get("filename"), str):
                continue
            ref = {
                "filename": image["filename"],
                "subfolder": str(image.get("subfolder") or ""),
                "type": str(image.get("type") or "output"),
            }
            (saved if ref["type"] == "output" else temp).append(ref)
    return saved or temp


def _number(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return float("inf")


def queue_place(queue: Mapping[str, Any], prompt_id: str) -> tuple[str, int]:
    """Where ``prompt_id`` is in a ``GET /queue`` answer.

    ``("running", 0)``, ``("pending", prompts ahead of it)`` or ``("absent", 0)``.
    Pending rows are not in run order on the real server: ``number`` decides.
    """

    def rows(key: str) -> list[list[Any]]:
        raw = queue.get(key)
        if not isinstance(raw, list):
            return []
        return [r for r in raw if isinstance(r, list) and len(r) >= 2]

    running = rows("queue_running")
    if any(str(r[1]) == prompt_id for r in running):
        return "running", 0
    pending = rows("queue_pending")
    mine = next((r for r in pending if str(r[1]) == prompt_id), None)
    if mine is None:
        return "absent", 0
    number = _number(mine[0])
    return "pending", len(running) + sum(1 for r in pending if _number(r[0]) < number)


def history_outcome(entry: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    """``("success" | "error" | "interrupted", message data)`` of a ``/history`` entry."""
    status = entry.get("status")
    status = status if isinstance(status, Mapping) else {}
    for item in status.get("messages") or ():
        if isinstance(item, list) and len(item) == 2 and isinstance(item[1], Mapping):
            if item[0] == "execution_error":
                return "error", item[1]
            if item[0] == "execution_interrupted":
                return "interrupted", item[1]
    if status.get("status_str") == "error":
        return "error", {}
    return "success", {}


@dataclass
class RunProgress:
    """One prompt's progress over its whole graph, from ``executing``/``progress`` messages.

    Each node weighs 1, except a node that reports ticks (a sampler), which
    weighs its tick count; cached nodes do not run and do not count. The
    percentage never goes back and stays below 100 until the images exist.
    """

    nodes: frozenset[str]
    cached: set[str] = field(default_factory=set)
    finished: set[str] = field(default_factory=set)
    current: str | None = None
    value: float = 0.0
    weights: dict[str, float] = field(default_factory=dict)
    percent: int = 0

    def node_started(self, node: str) -> int:
        """``executing {node}``: the previous node is done."""
        if self.current is not None and self.current != node:
            self.finished.add(self.current)
        self.current = node
        self.value = 0.0
        return self.update()

    def tick(self, node: str, value: float, maximum: float) -> int:
        """``progress {node, value, max}``."""
        if node != self.current:
            self.node_started(node)
        if maximum > 0:
            self.weights[node] = max(self.weights.get(node, 1.0), maximum)
            self.value = max(0.0, min(value, maximum))
        return self.update()

    def update(self) -> int:
        """Recompute and return the percentage."""
        running = {self.current} if self.current is not None else set()
        expected = (set(self.nodes) - self.cached) | self.finished | running
        total = sum(self.weights.get(n, 1.0) for n in expected)
        done = sum(self.weights.get(n, 1.0) for n in self.finished) + self.value
        if total > 0:
            self.percent = max(self.percent, min(99, int(100 * done / total)))
        return self.percent
