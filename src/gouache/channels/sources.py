"""The ComfyUI servers the model catalog reads from: the healthy ones, in any process.

With many processes each ComfyUI server runs in one of them; the others see
its health in the rows every process publishes (`Store.worker_rows`). The
catalog reads a server's ``/object_info`` through the worker's own client
(which holds any credentials), whichever process runs it: a read changes
nothing on the server.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Any

from gouache.channels.catalog import ComfySource
from gouache.pool.base import Worker, WorkerState

_HEALTHY = frozenset({WorkerState.READY, WorkerState.BUSY})


def _fetcher(client: Any) -> Callable[[str], Awaitable[Any]]:
    async def fetch(path: str) -> Any:
        client.open()  # idempotent; a worker run by another process has not opened it
        return await client.get_json(path)

    return fetch


def comfy_sources(
    workers: Iterable[Worker],
    *,
    here: Callable[[str], bool] = lambda name: True,
    healthy_elsewhere: Collection[str] = (),
) -> list[ComfySource]:
    """A `ComfySource` for each healthy ComfyUI worker, here or in another process."""
    out = []
    for worker in workers:
        client = getattr(worker, "client", None)
        workflow = getattr(worker, "workflow", None)
        if worker.kind != "comfyui" or client is None:
            continue
        healthy = (
            worker.state in _HEALTHY if here(worker.name) else worker.name in healthy_elsewhere
        )
        if not healthy:
            continue
        name = getattr(workflow, "name", None) or str(workflow)
        has_loader = bool(getattr(worker, "has_loader", False))
        out.append(ComfySource(worker.name, name, _fetcher(client), has_loader))
    return out


async def healthy_in_other_processes(
    rows: Callable[[], Awaitable[list[dict[str, Any]]]], me: str
) -> set[str]:
    """Names of the workers other processes run and report ready or busy."""
    return {
        str(r.get("name"))
        for r in await rows()
        if r.get("process") != me and r.get("state") in ("ready", "busy")
    }
