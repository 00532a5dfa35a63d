"""One executing prompt as the stand-in's engine and node simulations see it."""

from __future__ import annotations

from typing import Any

from gouache_sandbox.comfyui.model import QueueItem

Json = dict[str, Any]


class Progress:
    """The per-prompt ``progress_state`` map."""

    def __init__(self, prompt_id: str) -> None:
        self.prompt_id = prompt_id
        self.nodes: dict[str, Json] = {}

    def set(self, node_id: str, value: float, maximum: float, state: str) -> Json:
        """Update one node; return the whole ``progress_state`` message data."""
        self.nodes[node_id] = {
            "value": value,
            "max": maximum,
            "state": state,
            "node_id": node_id,
            "prompt_id": self.prompt_id,
            "display_node_id": node_id,
            "parent_node_id": None,
            "real_node_id": node_id,
        }
        return {"prompt_id": self.prompt_id, "nodes": {k: dict(v) for k, v in self.nodes.items()}}


class Run:
    """The state of one executing prompt."""

    def __init__(self, item: QueueItem) -> None:
        self.item = item
        self.client_id: str | None = item.extra.get("client_id")
        self.messages: list[list[Any]] = []
        self.progress = Progress(item.prompt_id)
        self.executed: list[str] = []
        self.outputs: Json = {}
        self.meta: Json = {}
        self.values: dict[str, tuple[Any, ...]] = {}
        caption_parts = [
            str(n["inputs"].get("value", ""))
            for n in item.prompt.values()
            if n.get("class_type") == "PrimitiveString"
        ]
        self.caption = " ".join(p for p in caption_parts if p)
