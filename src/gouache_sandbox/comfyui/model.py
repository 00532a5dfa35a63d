"""Shared types of the ComfyUI stand-in: settings, faults, queue items, files, errors."""

from __future__ import annotations

import os
import random
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

Json = dict[str, Any]


@dataclass
class Speed:
    """How fast simulated work runs (seconds); zero means "as fast as possible"."""

    node_delay: float = 0.0  # loaders, blur, VAE decode
    step_delay: float = 0.0  # each KSampler step, each SaveImageWebsocket image
    sleep_scale: float = 1.0  # multiplies TestSleep's ``seconds``
    max_alloc_bytes: int = 2**34  # EmptyImage beyond this fails like torch's allocator


@dataclass
class Faults:
    """Failures to inject. Every field can be changed while the server runs."""

    #: Route path (without ``/api``) → how many more requests fail with 500 (-1: all).
    http_500: dict[str, int] = field(default_factory=dict)
    #: ``normal``: honour at the next node/tick; ``ignore``: never;
    #: ``late``: the interrupt lands only after the running prompt has finished
    #: (as when it waits behind a preview backlog on the real server): that
    #: prompt succeeds and the stale flag is cleared when the next one starts.
    interrupt: Literal["normal", "ignore", "late"] = "normal"
    #: Crash the whole server when a node of this class type (or id) starts.
    crash_on_node: str | None = None
    #: Close every WebSocket abruptly when a node of this class type (or id) starts.
    drop_ws_on_node: str | None = None
    #: False: WebSocket pings go unanswered (a link that died without a FIN).
    answer_pings: bool = True
    #: True: ``/view`` streams files chunked, without Content-Length (a proxy may do that).
    view_chunked: bool = False


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A point where execution can be held by `Engine.pause_on` (for tests and demos)."""

    prompt_id: str
    node_id: str
    class_type: str
    step: int | None  # None: the node is running (start check done); n: before tick n


class Hub(Protocol):
    """Where the engine's messages go (the WebSocket side of the server)."""

    def send(self, event: str, data: Json, sid: str | None) -> None:
        """Queue a JSON message to ``sid`` (``None``: every socket)."""

    def send_progress(
        self, progress: Json, preview: tuple[bytes, str, Json] | None, sid: str | None
    ) -> None:
        """Queue a ``progress`` message and its preview ``(image, "PNG"|"JPEG", metadata)``."""

    def send_progress_text(self, node_id: str, text: str) -> None:
        """Queue a binary progress-text frame (ComfyUI broadcasts these)."""

    def drop_all(self) -> None:
        """Close every socket without a close handshake."""


class Interrupted(Exception):
    """The running prompt was interrupted at a node boundary or progress tick."""


class NodeFailure(Exception):
    """A node raised while executing (becomes ``execution_error``)."""

    def __init__(self, exc_type: str, message: str) -> None:
        super().__init__(message)
        self.exc_type = exc_type
        self.message = message


class CrashRequested(Exception):
    """The crash fault fired: the server must die now."""


@dataclass
class QueueItem:
    """One queued prompt, as ComfyUI stores it."""

    number: float
    prompt_id: str
    prompt: Json
    extra: Json
    outputs: list[str]

    def entry(self) -> list[Any]:
        """The ``[number, prompt_id, prompt, extra_data, outputs]`` row of /queue and /history."""
        return [self.number, self.prompt_id, self.prompt, self.extra, self.outputs]


class Files:
    """The server's output, temp and input folders."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dirs = {t: root / t for t in ("output", "temp", "input")}
        for d in self.dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        self.temp_prefix = "ComfyUI_temp_" + "".join(random.choices(string.ascii_lowercase, k=5))

    def resolve(self, kind: str, subfolder: str, filename: str) -> Path | None:
        """The path of a file, or ``None`` if the name escapes its folder."""
        base = self.dirs.get(kind)
        if base is None:
            return None
        path = (base / subfolder / filename).resolve()
        if not path.is_relative_to(base.resolve()):
            return None
        return path

    def next_names(self, kind: str, prefix: str, count: int) -> tuple[str, list[str]]:
        """``(subfolder, [filename...])`` continuing the folder's ``prefix_00001_.png`` counter."""
        subfolder, _, name = prefix.rpartition("/")
        folder = self.resolve(kind, subfolder, "")
        if folder is None or not name:
            raise NodeFailure("Exception", "Saving image outside the output folder is not allowed.")
        folder.mkdir(parents=True, exist_ok=True)
        pattern = re.compile(re.escape(name) + r"_(\d{5,})_\.png$")
        used = [int(m.group(1)) for f in os.listdir(folder) if (m := pattern.match(f))]
        start = max(used, default=0) + 1
        return subfolder, [f"{name}_{start + i:05d}_.png" for i in range(count)]

    def input_files(self) -> list[str]:
        """Names of the uploaded images (LoadImage's choices)."""
        return sorted(f.name for f in self.dirs["input"].iterdir() if f.is_file())
