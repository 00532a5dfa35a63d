"""What `/imagine model:` can offer: Midjourney versions, ComfyUI workflows, checkpoints, LoRAs.

Midjourney models (v7, v6.1, niji) are there while some Midjourney account is
registered. ComfyUI workflows are the ones servers are configured with; their
checkpoints and LoRAs are read live from each healthy server's ``/object_info``
(``CheckpointLoaderSimple.ckpt_name`` and ``LoraLoader.lora_name``), cached and
refreshed every ``refresh_s``. Only what some healthy server has is offered.

A model is named by a value: ``v7``, ``v6.1``, ``niji``, ``workflow:<name>``,
``checkpoint:<file>`` or ``lora:<file>``; a bare name is understood when it is
unambiguous.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import structlog

from gouache.channels.errors import UnknownModel
from gouache.channels.settings import MJ_MODELS
from gouache.errors import GouacheError

log = structlog.get_logger(__name__)

Kind = Literal["midjourney", "workflow", "checkpoint", "lora"]
MAX_CHOICES: Final = 25  # Discord's limit for one autocomplete answer
_LABELS: Final = {"v7": "Midjourney v7", "v6.1": "Midjourney v6.1", "niji": "Niji (anime)"}
_NODE_INPUTS: Final = (("CheckpointLoaderSimple", "ckpt_name"), ("LoraLoader", "lora_name"))


@dataclass(frozen=True, slots=True)
class ModelChoice:
    """One model a request may name."""

    value: str
    label: str
    kind: Kind

    @property
    def backend(self) -> str:
        """The kind of worker that runs it."""
        return "midjourney" if self.kind == "midjourney" else "comfyui"

    @property
    def name(self) -> str:
        """The model's own name (the value without its kind)."""
        return self.value.split(":", 1)[1] if ":" in self.value else self.value


@dataclass(frozen=True, slots=True)
class ComfySource:
    """A healthy ComfyUI server the catalog reads models from.

    ``fetch(path)`` is the server's ``GET`` (the worker's own client, which
    holds any credentials); it raises `GouacheError` when the server fails.
    """

    name: str
    workflow: str
    fetch: Callable[[str], Awaitable[Any]]
    #: Its workflow has a checkpoint loader (else no checkpoint or LoRA can be chosen there).
    has_loader: bool = True


@dataclass
class _Seen:
    checkpoints: tuple[str, ...] = ()
    loras: tuple[str, ...] = ()
    at: float = float("-inf")


def parse_object_info(info: Mapping[str, Any], node: str, input_name: str) -> tuple[str, ...]:
    """The choices of one combo input in an ``/object_info`` answer (empty if absent)."""
    try:
        spec = info[node]["input"]
        entry = spec.get("required", {}).get(input_name) or spec.get("optional", {}).get(input_name)
        choices = entry[0]
    except (KeyError, TypeError, IndexError, AttributeError):
        return ()
    if isinstance(choices, list):
        return tuple(str(c) for c in choices if isinstance(c, str) and c)
    if choices == "COMBO" and isinstance(entry[1], dict):  # ComfyUI's newer combo form
        return tuple(str(c) for c in entry[1].get("options", ()) if isinstance(c, str) and c)
    return ()


@dataclass
class ModelCatalog:
    """The models the pool can run now (see module docstring)."""

    backends: Callable[[], Collection[str]] = lambda: ()
    comfy_sources: Callable[[], Iterable[ComfySource]] = lambda: ()
    refresh_s: float = 300.0
    request_timeout_s: float = 5.0
    #: Healthy workers other processes run (many processes on Redis); read at each refresh.
    elsewhere: Callable[[], Awaitable[Collection[str]]] | None = None
    healthy_elsewhere: frozenset[str] = frozenset()
    monotonic: Callable[[], float] = time.monotonic
    _seen: dict[str, _Seen] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    _refreshing: asyncio.Task[None] | None = None
    _running: bool = False

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Read every healthy server's models once, then keep them fresh in the background."""
        self._running = True
        await self.refresh()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="model-catalog")

    async def aclose(self) -> None:
        """Stop refreshing; safe to call twice."""
        for task in (self._task, self._refreshing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._refreshing = None
        self._running = False

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            await self.refresh()

    def refresh_soon(self) -> None:
        """Start a refresh if the cache is stale (autocomplete never waits for it)."""
        stale = any(
            self.monotonic() - self._seen.get(s.name, _Seen()).at > self.refresh_s
            for s in self.comfy_sources()
        )
        if stale and self._running and (self._refreshing is None or self._refreshing.done()):
            self._refreshing = asyncio.get_running_loop().create_task(self.refresh())

    async def refresh(self) -> None:
        """Read ``/object_info`` of every healthy ComfyUI server now."""
        if self.elsewhere is not None:
            try:
                self.healthy_elsewhere = frozenset(await self.elsewhere())
            except Exception as exc:  # the store is down: keep what we knew
                log.warning("catalog.status_unreadable", error=type(exc).__name__)
        sources = list(self.comfy_sources())
        await asyncio.gather(*(self._read(s) for s in sources))

    async def _read(self, source: ComfySource) -> None:
        found: list[tuple[str, ...]] = []
        try:
            async with asyncio.timeout(self.request_timeout_s):
                for node, input_name in _NODE_INPUTS:
                    body = await source.fetch(f"object_info/{node}")
                    info = body if isinstance(body, dict) else {}
                    found.append(parse_object_info(info, node, input_name))
        except (GouacheError, TimeoutError) as exc:
            log.warning("catalog.read_failed", server=source.name, error=type(exc).__name__)
            return
        self._seen[source.name] = _Seen(found[0], found[1], self.monotonic())
        log.debug(
            "catalog.read", server=source.name, checkpoints=len(found[0]), loras=len(found[1])
        )

    # -- what there is ---------------------------------------------------------------------

    def workflows(self) -> list[str]:
        """Workflows healthy ComfyUI servers are configured with."""
        return sorted({s.workflow for s in self.comfy_sources()})

    def checkpoints(self, workflow: str | None = None) -> list[str]:
        """Checkpoints some healthy server (running ``workflow``, if given) has."""
        return self._files("checkpoints", workflow)

    def loras(self, workflow: str | None = None) -> list[str]:
        """LoRAs some healthy server (running ``workflow``, if given) has."""
        return self._files("loras", workflow)

    def _files(self, what: str, workflow: str | None) -> list[str]:
        names: set[str] = set()
        for source in self.comfy_sources():
            if source.has_loader and (workflow is None or source.workflow == workflow):
                names.update(getattr(self._seen.get(source.name, _Seen()), what))
        return sorted(names)

    def servers_with(self, *, checkpoint: str | None, loras: Collection[str]) -> set[str]:
        """Healthy servers that have ``checkpoint`` and every LoRA of ``loras``."""
        out = set()
        for source in self.comfy_sources():
            seen = self._seen.get(source.name, _Seen())
            if (
                source.has_loader
                and (checkpoint is None or checkpoint in seen.checkpoints)
                and set(loras) <= set(seen.loras)
            ):
                out.add(source.name)
        return out

    def choices(self) -> list[ModelChoice]:
        """Every model the pool can run now, Midjourney first."""
        out: list[ModelChoice] = []
        kinds = set(self.backends())
        if "midjourney" in kinds:
            out.extend(ModelChoice(m, _LABELS[m], "midjourney") for m in MJ_MODELS)
        if "comfyui" in kinds:
            out.extend(
                ModelChoice(f"workflow:{w}", f"ComfyUI workflow {w}", "workflow")
                for w in self.workflows()
            )
            out.extend(
                ModelChoice(f"checkpoint:{c}", f"Checkpoint {c}", "checkpoint")
                for c in self.checkpoints()
            )
            out.extend(ModelChoice(f"lora:{n}", f"LoRA {n}", "lora") for n in self.loras())
        return out

    def resolve(self, value: str) -> ModelChoice:
        """The model ``value`` names, or `UnknownModel` listing the valid ones."""
        wanted = value.strip()
        choices = self.choices()
        for choice in choices:
            if choice.value == wanted:
                return choice
        bare = [c for c in choices if c.name == wanted or c.label.lower() == wanted.lower()]
        if len(bare) == 1:
            return bare[0]
        listed = ", ".join(c.value for c in choices[:MAX_CHOICES]) or "none right now"
        raise UnknownModel(f"Unknown model {wanted!r}. Valid models: {listed}.")

    def suggest(
        self, typed: str, *, allowed: Callable[[ModelChoice], bool] = lambda c: True
    ) -> list[ModelChoice]:
        """At most 25 choices matching what the member typed (prefix matches first)."""
        self.refresh_soon()
        query = typed.strip().lower()
        usable = [c for c in self.choices() if allowed(c)]
        if not query:
            return usable[:MAX_CHOICES]
        first = [c for c in usable if c.name.lower().startswith(query) or c.value.startswith(query)]
        rest = [
            c
            for c in usable
            if c not in first and (query in c.value.lower() or query in c.label.lower())
        ]
        return (first + rest)[:MAX_CHOICES]
