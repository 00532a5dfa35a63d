"""Binding a chosen checkpoint and LoRAs into a ComfyUI workflow, structurally.

The checkpoint is assigned to ``ckpt_name`` of the workflow's
``CheckpointLoaderSimple``; each LoRA becomes a ``LoraLoader`` node chained
after it, and every node that took the loader's MODEL or CLIP output takes the
last LoRA's instead. Names are only ever values in the parsed graph: nothing
is formatted into JSON text, so a name cannot add or rewire other nodes.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from gouache.errors import InvalidParameter

LOADER = "CheckpointLoaderSimple"
LORA = "LoraLoader"


def loader_of(graph: Mapping[str, Any]) -> str | None:
    """The id of the workflow's checkpoint loader (None if it has none)."""
    for node_id, node in graph.items():
        if isinstance(node, dict) and node.get("class_type") == LOADER:
            return str(node_id)
    return None


def _free_ids(graph: Mapping[str, Any], count: int) -> list[str]:
    numbers = [int(k) for k in graph if str(k).isdigit()]
    start = max(numbers, default=0) + 1
    return [str(start + i) for i in range(count)]


def _rewire(graph: dict[str, Any], source: str, output: int, target: str, skip: set[str]) -> None:
    for node_id, node in graph.items():
        if node_id in skip:
            continue
        for name, value in node.get("inputs", {}).items():
            if isinstance(value, list) and value == [source, output]:
                node["inputs"][name] = [target, output]


def bind_models(
    graph: Mapping[str, Any], *, checkpoint: str | None, loras: Sequence[str] = ()
) -> dict[str, Any]:
    """A copy of ``graph`` running ``checkpoint`` with ``loras`` (see module docstring)."""
    out = copy.deepcopy(dict(graph))
    if checkpoint is None and not loras:
        return out
    loader = loader_of(out)
    if loader is None:
        raise InvalidParameter("This workflow has no checkpoint loader to choose a model for.")
    if checkpoint is not None:
        out[loader]["inputs"]["ckpt_name"] = str(checkpoint)
    previous = loader
    added = _free_ids(out, len(loras))
    for node_id, name in zip(added, loras, strict=True):
        out[node_id] = {
            "class_type": LORA,
            "inputs": {
                "model": [previous, 0],
                "clip": [previous, 1],
                "lora_name": str(name),
                "strength_model": 1.0,
                "strength_clip": 1.0,
            },
        }
        previous = node_id
    if loras:
        _rewire(out, loader, 0, previous, set(added))
        _rewire(out, loader, 1, previous, set(added))
    return out


def comfy_fits(meta: Mapping[str, Any], *, server: str, workflow: str, has_loader: bool) -> bool:
    """Whether a ComfyUI server can run a job with this meta (its workflow, models, server list)."""
    wanted = meta.get("workflow")
    if wanted and wanted != workflow:
        return False
    if (meta.get("checkpoint") or meta.get("loras")) and not has_loader:
        return False
    servers = meta.get("comfy_servers")
    return servers is None or server in servers
