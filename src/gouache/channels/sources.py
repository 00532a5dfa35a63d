"""The ComfyUI servers the model catalog reads from: healthy ones this process runs."""

from __future__ import annotations

from collections.abc import Iterable

from gouache.channels.catalog import ComfySource
from gouache.pool.base import Worker, WorkerState

_HEALTHY = frozenset({WorkerState.READY, WorkerState.BUSY})


def comfy_sources(workers: Iterable[Worker]) -> list[ComfySource]:
    """A `ComfySource` for each healthy ComfyUI worker (its own client makes the calls)."""
    out = []
    for worker in workers:
        client = getattr(worker, "client", None)
        workflow = getattr(worker, "workflow", None)
        if worker.kind != "comfyui" or client is None or worker.state not in _HEALTHY:
            continue
        name = getattr(workflow, "name", None) or str(workflow)
        has_loader = bool(getattr(worker, "has_loader", False))
        out.append(ComfySource(worker.name, name, client.get_json, has_loader))
    return out
