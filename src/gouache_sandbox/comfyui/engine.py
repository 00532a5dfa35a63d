"""The ComfyUI stand-in's prompt queue, history and (simulated) graph execution.

One prompt runs at a time, like the real server's single prompt worker. The
messages it sends, their recipients and their order follow ComfyUI 0.3.64 as
captured in ``shared/fixtures/comfyui``:

* ``status`` goes to every socket whenever the queue changes (put, take, done,
  delete, clear), so a submit on an idle server yields two of them;
* ``execution_start``/``execution_cached``/``executing``/``executed``/
  ``execution_success``/``execution_error`` go to the prompt's ``client_id``
  only, and not at all when the prompt had none; ``execution_interrupted``,
  ``progress``, ``progress_state`` and previews go to the ``client_id`` or, when
  there is none, to everyone;
* a node's start and each progress tick are the only places an interrupt is
  noticed; a stale interrupt flag is cleared when the next prompt starts;
* nodes whose inputs did not change since the last prompt are cached: they are
  listed in ``execution_cached`` and only re-send their ``executed`` output.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from gouache_sandbox.comfyui.model import (
    Checkpoint,
    CrashRequested,
    Faults,
    Files,
    Hub,
    Interrupted,
    NodeFailure,
    QueueItem,
    Speed,
)
from gouache_sandbox.comfyui.nodes import NODES, NodeDef, is_link
from gouache_sandbox.comfyui.run import Run
from gouache_sandbox.comfyui.simulate import NodeRunner

log = structlog.get_logger(__name__)

Json = dict[str, Any]
_HISTORY_LIMIT = 10000

__all__ = ["Checkpoint", "Engine", "Faults", "Files", "QueueItem", "Speed"]


def _now_ms() -> int:
    return int(time.time() * 1000)


class Engine:
    """Queue, history, cache and the single prompt worker."""

    def __init__(  # noqa: PLR0913
        self,
        hub: Hub,
        files: Files,
        speed: Speed,
        faults: Faults,
        *,
        checkpoints: list[str],
        nodes: Mapping[str, NodeDef] = NODES,
        loras: list[str] | None = None,
    ) -> None:
        self.hub = hub
        self.files = files
        self.speed = speed
        self.faults = faults
        self.checkpoints = checkpoints
        self.loras = loras if loras is not None else []
        self.nodes = nodes
        self.number = 0
        self._heap: list[tuple[float, int, QueueItem]] = []
        self._seq = 0  # tie-breaker: equal numbers run in submission order
        self.running: QueueItem | None = None
        self.history: dict[str, Json] = {}
        self.client_id: str | None = None  # of the running prompt
        self.last_node_id: str | None = None
        self.interrupt_flag = False
        self._late_interrupt = False
        self._cache: dict[Any, tuple[tuple[Any, ...], Json | None]] = {}
        self._wake = asyncio.Event()
        self.crash_requested = asyncio.Event()
        self._pause_when: Callable[[Checkpoint], bool] | None = None
        self.paused_at: Checkpoint | None = None
        self._paused = asyncio.Event()
        self._release: asyncio.Event | None = None
        self.idle = asyncio.Event()
        self.idle.set()

    # -- queue -----------------------------------------------------------------

    def resolve_choices(self, key: str) -> list[str]:
        """Values of a dynamic combo (checkpoints, uploaded images)."""
        if key == "@checkpoints":
            return list(self.checkpoints)
        if key == "@loras":
            return list(self.loras)
        return self.files.input_files()

    def queue_remaining(self) -> int:
        """Pending plus running, as ComfyUI counts it."""
        return len(self._heap) + (1 if self.running is not None else 0)

    def queue_updated(self) -> None:
        """Broadcast ``status`` (ComfyUI's ``queue_updated``)."""
        self.hub.send(
            "status", {"status": {"exec_info": {"queue_remaining": self.queue_remaining()}}}, None
        )

    def put(self, item: QueueItem) -> None:
        """Queue a validated prompt."""
        self._seq += 1
        heapq.heappush(self._heap, (item.number, self._seq, item))
        self.idle.clear()
        self.queue_updated()
        self._wake.set()

    def pending(self) -> list[list[Any]]:
        """Pending rows in heap order (not run order, like the real server)."""
        return [entry[2].entry() for entry in self._heap]

    def delete(self, ids: list[str]) -> None:
        """Remove pending prompts by id (running or unknown ids are ignored)."""
        for prompt_id in ids:
            kept = [e for e in self._heap if e[2].prompt_id != prompt_id]
            if len(kept) != len(self._heap):
                self._heap = kept
                heapq.heapify(self._heap)
                self.queue_updated()

    def clear(self) -> None:
        """Drop every pending prompt."""
        self._heap = []
        self.queue_updated()

    def interrupt(self, prompt_id: str | None) -> None:
        """``POST /interrupt``: global, or only if ``prompt_id`` is the running one."""
        if prompt_id is not None and (self.running is None or self.running.prompt_id != prompt_id):
            log.info("comfyui.interrupt_ignored", prompt_id=prompt_id)
            return
        mode = self.faults.interrupt
        if mode == "ignore":
            return
        if mode == "late" and self.running is not None:
            self._late_interrupt = True
            return
        self.interrupt_flag = True

    # -- pausing (tests) ---------------------------------------------------------

    def pause_on(self, predicate: Callable[[Checkpoint], bool]) -> None:
        """Hold execution at the next checkpoint matching ``predicate`` (one shot)."""
        self._paused.clear()
        self.paused_at = None
        self._pause_when = predicate

    async def wait_paused(self, timeout: float = 10.0) -> Checkpoint:
        """Wait until execution is held; return where."""
        await asyncio.wait_for(self._paused.wait(), timeout)
        assert self.paused_at is not None
        return self.paused_at

    def resume(self) -> None:
        """Let held execution continue (a pending `pause_on` stays armed)."""
        if self._release is not None:
            self._release.set()
            self._release = None

    async def checkpoint(self, cp: Checkpoint) -> None:
        """Hold here if a `pause_on` predicate matches ``cp``."""
        if self._pause_when is None or not self._pause_when(cp):
            return
        self._pause_when = None
        release = self._release = asyncio.Event()
        self.paused_at = cp
        self._paused.set()
        try:
            await asyncio.wait_for(release.wait(), 600)
        except TimeoutError:
            log.warning("comfyui.pause_timeout", checkpoint=cp)

    # -- worker ----------------------------------------------------------------

    async def run(self) -> None:
        """The prompt worker loop; returns when a crash is requested."""
        while True:
            if not self._heap:
                self.idle.set()
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), 1.0)
                except TimeoutError:
                    continue
                continue
            _, _, item = heapq.heappop(self._heap)
            self.running = item
            self.queue_updated()
            try:
                await self._execute(item)
            except CrashRequested:
                log.warning("comfyui.crash", prompt_id=item.prompt_id)
                self.crash_requested.set()
                return

    def _plan(self, prompt: Json, outputs: list[str]) -> tuple[dict[str, Any], list[str]]:
        """Signatures of every node the outputs need, and which of them are cached."""
        signatures: dict[str, Any] = {}

        def signature(node_id: str) -> Any:
            if node_id in signatures:
                return signatures[node_id]
            signatures[node_id] = ("cycle", node_id)
            node = prompt[node_id]
            parts: list[Any] = [node["class_type"]]
            for name, value in sorted(node.get("inputs", {}).items()):
                if is_link(value):
                    parts.append((name, signature(value[0]), value[1]))
                else:
                    parts.append((name, repr(value)))
            if node["class_type"] == "SaveImageWebsocket":
                parts.append(("changed", time.monotonic_ns()))  # IS_CHANGED = time
            if node["class_type"] == "LoadImage":
                path = self.files.resolve("input", "", str(node["inputs"].get("image")))
                stat = path.stat() if path is not None and path.exists() else None
                parts.append(("file", stat.st_mtime_ns if stat else None))
            signatures[node_id] = tuple(parts)
            return signatures[node_id]

        for output in outputs:
            signature(output)
        cached = [n for n in prompt if n in signatures and signatures[n] in self._cache]
        return signatures, cached

    def _order(self, prompt: Json, outputs: list[str], cached: set[str]) -> list[str]:
        """ComfyUI's staging order: ready nodes, output nodes first (``ux_friendly_pick_node``)."""
        pending: dict[str, set[str]] = {}

        def add(node_id: str) -> None:
            if node_id in pending:
                return
            deps: set[str] = set()
            pending[node_id] = deps
            for value in prompt[node_id].get("inputs", {}).values():
                if is_link(value) and value[0] not in cached:
                    deps.add(value[0])
                    add(value[0])

        for output in outputs:
            add(output)
        order: list[str] = []

        def is_output(node_id: str) -> bool:
            return self.nodes[prompt[node_id]["class_type"]].output_node

        while pending:
            ready = [n for n, deps in pending.items() if not deps]
            if not ready:
                self.last_node_id = next(iter(pending))
                raise NodeFailure("graph.DependencyCycleError", "Dependency cycle detected")
            blocking = {n: [m for m, deps in pending.items() if n in deps] for n in ready}
            pick = next((n for n in ready if is_output(n)), None)
            if pick is None:
                pick = next((n for n in ready if any(is_output(b) for b in blocking[n])), None)
            if pick is None:
                pick = next(
                    (
                        n
                        for n in ready
                        for b in blocking[n]
                        for m, deps in pending.items()
                        if b in deps and is_output(m)
                    ),
                    ready[0],
                )
            order.append(pick)
            del pending[pick]
            for deps in pending.values():
                deps.discard(pick)
        return order

    async def _execute(self, item: QueueItem) -> None:  # noqa: PLR0915
        self.interrupt_flag = False
        run = Run(item)
        self.client_id = run.client_id
        prompt_id = item.prompt_id
        self._message(run, "execution_start", {"prompt_id": prompt_id}, broadcast=False)
        signatures, cached = self._plan(item.prompt, item.outputs)
        self._message(
            run, "execution_cached", {"nodes": cached, "prompt_id": prompt_id}, broadcast=False
        )
        new_cache: dict[Any, tuple[tuple[Any, ...], Json | None]] = {}
        for node_id in cached:
            new_cache[signatures[node_id]] = self._cache[signatures[node_id]]
            run.values[node_id] = self._cache[signatures[node_id]][0]
        status = "success"
        try:
            for node_id in self._order(item.prompt, item.outputs, set(cached)):
                sig = signatures[node_id]
                if node_id in cached:
                    outputs, ui = self._cache[sig]
                    new_cache[sig] = (outputs, ui)
                    run.values[node_id] = outputs
                    if ui is not None:
                        self._executed(run, node_id, ui)
                    self.to_client(
                        run, "progress_state", run.progress.set(node_id, 1, 1, "finished")
                    )
                    continue
                outputs, ui = await self._run_node(run, node_id)
                new_cache[sig] = (outputs, ui)
                run.values[node_id] = outputs
                run.executed.append(node_id)
                if ui is not None:
                    self._executed(run, node_id, ui)
                done = run.progress.nodes[node_id]
                self.to_client(
                    run,
                    "progress_state",
                    run.progress.set(node_id, done["max"], done["max"], "finished"),
                )
            self._message(run, "execution_success", {"prompt_id": prompt_id}, broadcast=False)
        except Interrupted as exc:
            status = "error"
            node_id = str(exc)
            self._message(
                run,
                "execution_interrupted",
                {
                    "prompt_id": prompt_id,
                    "node_id": node_id,
                    "node_type": item.prompt[node_id]["class_type"],
                    "executed": list(run.executed),
                },
                broadcast=True,
            )
        except NodeFailure as exc:
            status = "error"
            node_id = self.last_node_id or ""
            node = item.prompt[node_id]
            self._message(
                run,
                "execution_error",
                {
                    "prompt_id": prompt_id,
                    "node_id": node_id,
                    "node_type": node["class_type"],
                    "executed": list(run.executed),
                    "exception_message": f"{exc.message}\n",
                    "exception_type": exc.exc_type,
                    "traceback": self._traceback(node["class_type"]),
                    "current_inputs": {
                        k: [v] for k, v in node.get("inputs", {}).items() if not is_link(v)
                    },
                    "current_outputs": [*run.executed, node_id],
                },
                broadcast=False,
            )
        self._cache = new_cache
        self.history[prompt_id] = {
            "prompt": item.entry(),
            "outputs": run.outputs,
            "status": {
                "status_str": status,
                "completed": status == "success",
                "messages": run.messages,
            },
            "meta": run.meta,
        }
        while len(self.history) > _HISTORY_LIMIT:
            del self.history[next(iter(self.history))]
        self.running = None
        self.last_node_id = None
        if self._late_interrupt:
            self._late_interrupt = False
            self.interrupt_flag = True  # too late for this prompt; cleared by the next
        self.queue_updated()
        if run.client_id is not None:
            self.hub.send("executing", {"node": None, "prompt_id": prompt_id}, run.client_id)
        self.client_id = None

    def _traceback(self, class_type: str) -> list[str]:
        """Frames shaped like the real server's: absolute paths of its install folder."""
        home = self.files.root.resolve()
        return [
            f'  File "{home}/execution.py", line 496, in execute\n'
            "    output_data, output_ui, has_subgraph, has_pending_tasks = await get_output_data("
            "prompt_id, unique_id, obj, input_data_all)\n",
            f'  File "{home}/execution.py", line 277, in process_inputs\n'
            "    result = f(**inputs)\n             ^^^^^^^^^^^\n",
            f'  File "{home}/nodes.py", line 1877, in {class_type}\n    raise\n',
        ]

    def _message(self, run: Run, event: str, data: Json, *, broadcast: bool) -> None:
        """ComfyUI's ``add_message``: recorded in history, sent per its rules."""
        data = {**data, "timestamp": _now_ms()}
        run.messages.append([event, data])
        if run.client_id is not None or broadcast:
            self.hub.send(event, data, run.client_id)

    def to_client(self, run: Run, event: str, data: Json) -> None:
        """Progress-type messages: to the client, or to everyone if it has none."""
        self.hub.send(event, data, run.client_id)

    def _executed(self, run: Run, node_id: str, ui: Json) -> None:
        run.outputs[node_id] = ui
        run.meta[node_id] = {
            "node_id": node_id,
            "display_node": node_id,
            "parent_node": None,
            "real_node_id": node_id,
        }
        if run.client_id is not None:
            self.hub.send(
                "executed",
                {
                    "node": node_id,
                    "display_node": node_id,
                    "output": ui,
                    "prompt_id": run.item.prompt_id,
                },
                run.client_id,
            )

    async def _run_node(self, run: Run, node_id: str) -> tuple[tuple[Any, ...], Json | None]:
        node = run.item.prompt[node_id]
        class_type: str = node["class_type"]
        self.to_client(run, "progress_state", run.progress.set(node_id, 0.0, 1.0, "running"))
        self.last_node_id = node_id
        if run.client_id is not None:
            self.hub.send(
                "executing",
                {"node": node_id, "display_node": node_id, "prompt_id": run.item.prompt_id},
                run.client_id,
            )
        # ComfyUI checks the interrupt flag once as a node starts; an interrupt
        # arriving while the node runs is noticed at its next progress tick or
        # at the next node.
        if self.interrupt_flag:
            raise Interrupted(node_id)
        if self.faults.crash_on_node in (class_type, node_id):
            raise CrashRequested(node_id)
        if self.faults.drop_ws_on_node in (class_type, node_id):
            self.faults.drop_ws_on_node = None
            self.hub.drop_all()
        await self.checkpoint(Checkpoint(run.item.prompt_id, node_id, class_type, None))
        inputs: dict[str, Any] = {}
        for name, value in node.get("inputs", {}).items():
            inputs[name] = run.values[value[0]][value[1]] if is_link(value) else value
        try:
            return await NodeRunner(self, run, node_id, class_type).run(inputs)
        except (Interrupted, NodeFailure, CrashRequested):
            raise
        except Exception as exc:  # a simulation bug must fail the prompt, not the worker
            log.exception("comfyui.node_crashed", node=node_id, class_type=class_type)
            raise NodeFailure(type(exc).__name__, str(exc)) from exc
