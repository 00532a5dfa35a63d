"""ComfyUI API-format workflows with declared bindings.

A workflow is a ComfyUI graph in API format (``{node_id: {"class_type", "inputs"}}``)
plus a small TOML declaration, kept beside it, naming which node inputs receive
the job's values::

    [workflow]
    description = "SDXL text to image"
    base_resolution = 1024        # used to turn --ar into width/height

    [bindings]
    prompt = { node = "6", input = "text" }
    negative = { node = "7", input = "text" }
    seed = [{ node = "3", input = "seed" }]   # a list binds one value to several inputs
    width = { node = "5", input = "width" }
    height = { node = "5", input = "height" }

`Workflow.render` deep-copies the parsed graph and assigns the values to those
inputs. Nothing is ever formatted into JSON text, so a prompt containing quotes,
braces or newlines is only ever a string value: it cannot add, remove or rewire
nodes. The declaration is validated when the workflow is loaded, so a typo in a
node id fails at start-up with the file and node named, not at the first job.
"""

from __future__ import annotations

import copy
import json
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final

import structlog

from gouache.errors import ConfigError, ErrorCode, InvalidParameter

log = structlog.get_logger(__name__)

#: The names a declaration may bind.
BINDABLE: Final = (
    "prompt",
    "negative",
    "seed",
    "width",
    "height",
    "steps",
    "batch_size",
    "image",  # one LoadImage input (the uploaded name)
    "images",  # several LoadImage inputs, bound in order (blend)
    "denoise",  # a float 0..1 (img2img strength)
)
_TEXT_NAMES: Final = frozenset({"prompt", "negative", "image", "images"})
_FLOAT_NAMES: Final = frozenset({"denoise"})
_MAX_SEED: Final = 2**64 - 1
_MAX_SIDE: Final = 16384
_MAX_STEPS: Final = 10000
_MAX_BATCH: Final = 4096
_AR = re.compile(r"^\s*(\d{1,5})\s*:\s*(\d{1,5})\s*$")
#: The workflows that ship inside the package (``gouache/workflows/<name>.json``).
SHIPPED: Final = (
    "default_sdxl",
    "builtin_demo",
    "default_sdxl_img2img",
    "builtin_img2img",
    "builtin_blend",
)
#: Shipped workflows of a result's buttons (`[comfyui.actions]`): they start from the result.
SHIPPED_ACTIONS: Final = (
    "builtin_demo_upscale",
    "builtin_demo_vary_subtle",
    "builtin_demo_vary_strong",
    "builtin_demo_zoom_out",
    "builtin_demo_pan",
    "default_sdxl_upscale",
    "default_sdxl_vary_subtle",
    "default_sdxl_vary_strong",
    "default_sdxl_zoom_out",
    "default_sdxl_pan",
)


class WorkflowError(ConfigError):
    """A workflow file or its declaration is unusable; the message names file and node."""

    code = ErrorCode.WORKFLOW_INVALID


@dataclass(frozen=True, slots=True)
class Binding:
    """One node input that receives a value."""

    node: str
    input: str


@dataclass(frozen=True, slots=True)
class RenderValues:
    """The values `Workflow.render` assigns (``None`` keeps the workflow's own value)."""

    prompt: str
    negative: str | None = None
    seed: int | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    batch_size: int | None = None
    images: tuple[str, ...] = ()  # uploaded names: ``image`` takes the first, ``images`` all
    denoise: float | None = None


def _is_link(value: object) -> bool:
    """A ComfyUI input link is ``[node_id, output_index]``."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    )


def _check_graph(graph: object, source: str) -> dict[str, dict[str, Any]]:
    """Check the API-format structure: node ids to ``{class_type, inputs}``, links resolvable."""
    if not isinstance(graph, dict) or not graph:
        raise WorkflowError([f"{source}: expected a non-empty JSON object of nodes (API format)"])
    problems: list[str] = []
    for node_id, node in graph.items():
        if not isinstance(node, dict):
            problems.append(f"{source}: node {node_id!r} is not an object")
            continue
        if not isinstance(node.get("class_type"), str):
            problems.append(f"{source}: node {node_id!r} has no class_type")
        inputs = node.get("inputs")
        if not isinstance(inputs, dict):
            problems.append(f"{source}: node {node_id!r} has no inputs object")
            continue
        for name, value in inputs.items():
            if _is_link(value) and value[0] not in graph:
                problems.append(
                    f"{source}: node {node_id!r} input {name!r} links to missing node {value[0]!r}"
                )
    if problems:
        raise WorkflowError(problems)
    return graph


def _parse_bindings(  # noqa: PLR0912
    raw: object, graph: Mapping[str, Mapping[str, Any]], source: str
) -> dict[str, tuple[Binding, ...]]:
    """Validate the ``[bindings]`` table against the graph."""
    if not isinstance(raw, Mapping):
        raise WorkflowError([f"{source}: [bindings] must be a table"])
    problems: list[str] = []
    result: dict[str, tuple[Binding, ...]] = {}
    for name, spec in raw.items():
        if name not in BINDABLE:
            problems.append(f"{source}: unknown binding {name!r} (known: {', '.join(BINDABLE)})")
            continue
        specs = spec if isinstance(spec, list) else [spec]
        bound: list[Binding] = []
        for item in specs:
            if (
                not isinstance(item, Mapping)
                or not isinstance(item.get("node"), str)
                or not isinstance(item.get("input"), str)
            ):
                problems.append(
                    f'{source}: binding {name!r} must be {{ node = "<id>", input = "<name>" }}'
                )
                continue
            node_id, input_name = item["node"], item["input"]
            node = graph.get(node_id)
            if node is None:
                problems.append(f"{source}: binding {name!r}: node {node_id!r} does not exist")
                continue
            inputs = node["inputs"]
            where = f"node {node_id!r} ({node['class_type']})"
            if input_name not in inputs:
                problems.append(f"{source}: binding {name!r}: {where} has no input {input_name!r}")
                continue
            current = inputs[input_name]
            if _is_link(current):
                problems.append(
                    f"{source}: binding {name!r}: {where} input {input_name!r} is a link, "
                    "not a value"
                )
                continue
            problem = _type_problem(name, current)
            if problem is not None:
                problems.append(
                    f"{source}: binding {name!r}: {where} input {input_name!r} holds "
                    f"{type(current).__name__}, expected {problem}"
                )
                continue
            bound.append(Binding(node_id, input_name))
        if bound:
            result[name] = tuple(bound)
    if "prompt" not in result and not any("prompt" in p for p in problems):
        problems.append(f"{source}: the declaration must bind 'prompt'")
    if ("width" in result) != ("height" in result):
        problems.append(f"{source}: bind both 'width' and 'height' or neither")
    if problems:
        raise WorkflowError(problems)
    return result


def _type_problem(name: str, current: object) -> str | None:
    """What kind of value binding ``name`` needs, if ``current`` is not one (else None)."""
    if name in _FLOAT_NAMES:
        ok = not isinstance(current, bool) and isinstance(current, int | float)
        return None if ok else "a number"
    if name in _TEXT_NAMES:
        return None if isinstance(current, str) else "text"
    ok = not isinstance(current, bool) and isinstance(current, int)
    return None if ok else "an integer"


class Workflow:
    """A parsed ComfyUI workflow and the inputs its job values go into."""

    def __init__(  # noqa: PLR0913
        self,
        name: str,
        graph: Mapping[str, Any],
        bindings: Mapping[str, Any],
        *,
        source: str | None = None,
        description: str = "",
        base_resolution: int = 1024,
    ) -> None:
        self.source = source or name
        self.name = name
        self.description = description
        self._graph = _check_graph(copy.deepcopy(dict(graph)), self.source)
        self._bindings = _parse_bindings(bindings, self._graph, self.source)
        if not isinstance(base_resolution, int) or not 64 <= base_resolution <= _MAX_SIDE:
            raise WorkflowError([f"{self.source}: base_resolution must be 64..{_MAX_SIDE}"])
        self.base_resolution = base_resolution

    @property
    def graph(self) -> dict[str, Any]:
        """A deep copy of the template graph (the workflow's own values)."""
        return copy.deepcopy(self._graph)

    @property
    def bindings(self) -> dict[str, tuple[Binding, ...]]:
        """The validated bindings, by value name."""
        return dict(self._bindings)

    def binds(self, name: str) -> bool:
        """Whether the declaration has an input for value ``name``."""
        return name in self._bindings

    def output_nodes(self) -> list[str]:
        """Ids of SaveImage nodes (the images a worker should collect)."""
        return [k for k, v in self._graph.items() if v["class_type"] == "SaveImage"]

    def render(  # noqa: PLR0913
        self,
        *,
        prompt: str,
        negative: str | None = None,
        seed: int | None = None,
        width: int | None = None,
        height: int | None = None,
        steps: int | None = None,
        batch_size: int | None = None,
        images: tuple[str, ...] = (),
        denoise: float | None = None,
    ) -> dict[str, Any]:
        """Return a new graph with the values set on their bound inputs.

        ``None`` keeps the workflow's own value; a value the declaration does not
        bind (e.g. ``negative`` on a workflow without a negative prompt) is ignored.
        Raises `InvalidParameter` for a value of the wrong type or range.
        """
        values: dict[str, str | int | float | None] = {
            "prompt": _text("prompt", prompt),
            "negative": None if negative is None else _text("negative", negative),
            "seed": _integer("seed", seed, 0, _MAX_SEED),
            "width": _integer("width", width, 8, _MAX_SIDE),
            "height": _integer("height", height, 8, _MAX_SIDE),
            "steps": _integer("steps", steps, 1, _MAX_STEPS),
            "batch_size": _integer("batch_size", batch_size, 1, _MAX_BATCH),
            "image": _text("image", images[0]) if images else None,
            "denoise": _fraction("denoise", denoise),
        }
        graph = copy.deepcopy(self._graph)
        self._bind_images(graph, images)
        for name, value in values.items():
            if value is None:
                continue
            targets = self._bindings.get(name)
            if targets is None:
                log.debug("workflow.value_unbound", workflow=self.name, value=name)
                continue
            for target in targets:
                # Assignment into the parsed structure: the value stays one JSON
                # string/number whatever characters it holds.
                graph[target.node]["inputs"][target.input] = value
        return graph

    def _bind_images(self, graph: dict[str, Any], images: tuple[str, ...]) -> None:
        """``images``: one per bound input, in order; fewer images than inputs are reused in turn."""
        targets = self._bindings.get("images")
        if not images or targets is None:
            return
        for i, target in enumerate(targets):
            graph[target.node]["inputs"][target.input] = _text("images", images[i % len(images)])

    @property
    def image_slots(self) -> int:
        """How many images the workflow loads (``image`` and ``images`` bindings)."""
        return len(self._bindings.get("images", ())) or (1 if "image" in self._bindings else 0)

    def render_values(self, values: RenderValues) -> dict[str, Any]:
        """`render` from a `RenderValues`."""
        return self.render(
            prompt=values.prompt,
            negative=values.negative,
            seed=values.seed,
            width=values.width,
            height=values.height,
            steps=values.steps,
            batch_size=values.batch_size,
            images=values.images,
            denoise=values.denoise,
        )

    def size_for(self, aspect: str | tuple[int, int] | None) -> tuple[int, int]:
        """Width/height for an aspect ratio at this workflow's base resolution."""
        return aspect_to_size(aspect or (1, 1), base=self.base_resolution)

    def __repr__(self) -> str:
        return f"Workflow({self.name!r}, nodes={len(self._graph)}, binds={sorted(self._bindings)})"


def _text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidParameter(f"{name} must be text")
    return value


def _fraction(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidParameter(f"{name} must be a number")
    if not 0.0 <= float(value) <= 1.0:
        raise InvalidParameter(f"{name} must be between 0 and 1")
    return float(value)


def _integer(name: str, value: object, low: int, high: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidParameter(f"{name} must be a whole number")
    if not low <= value <= high:
        raise InvalidParameter(f"{name} must be between {low} and {high}")
    return value


def parse_aspect(aspect: str | tuple[int, int]) -> tuple[int, int]:
    """Parse ``"16:9"`` (or pass a tuple through) into two positive integers."""
    if isinstance(aspect, tuple):
        w, h = aspect
    else:
        match = _AR.match(aspect)
        if match is None:
            raise InvalidParameter(f"aspect ratio {aspect!r} must look like 16:9")
        w, h = int(match.group(1)), int(match.group(2))
    if w <= 0 or h <= 0:
        raise InvalidParameter("aspect ratio sides must be positive")
    if max(w / h, h / w) > 8:
        raise InvalidParameter("aspect ratio must be between 1:8 and 8:1")
    return w, h


def aspect_to_size(
    aspect: str | tuple[int, int], *, base: int = 1024, multiple: int = 64
) -> tuple[int, int]:
    """Width and height with about ``base``² pixels, the given ratio, multiples of ``multiple``.

    ``aspect_to_size("16:9")`` is ``(1344, 768)``, the usual SDXL bucket.
    """
    if multiple not in (8, 16, 32, 64):
        raise ValueError("multiple must be 8, 16, 32 or 64")
    w, h = parse_aspect(aspect)
    area = base * base
    width = math.sqrt(area * w / h)
    height = width * h / w

    def snap(x: float) -> int:
        return max(multiple, min(_MAX_SIDE, round(x / multiple) * multiple))

    return snap(width), snap(height)


def load_workflow(path: str | Path, declaration: str | Path | None = None) -> Workflow:
    """Load ``<name>.json`` and its declaration (default ``<name>.toml`` beside it)."""
    path = Path(path)
    decl_path = Path(declaration) if declaration is not None else path.with_suffix(".toml")
    try:
        graph_text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WorkflowError([f"{path}: cannot read workflow ({exc.strerror})"]) from exc
    try:
        decl_text = decl_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WorkflowError([f"{decl_path}: cannot read declaration ({exc.strerror})"]) from exc
    return _from_texts(path.stem, graph_text, decl_text, str(path), str(decl_path))


def load_shipped(name: str) -> Workflow:
    """Load one of the workflows that ship with gouache (`SHIPPED`, `SHIPPED_ACTIONS`)."""
    if name not in SHIPPED and name not in SHIPPED_ACTIONS:
        have = ", ".join(SHIPPED + SHIPPED_ACTIONS)
        raise WorkflowError([f"unknown shipped workflow {name!r} (have: {have})"])
    folder = resources.files("gouache.workflows")
    graph_text = folder.joinpath(f"{name}.json").read_text(encoding="utf-8")
    decl_text = folder.joinpath(f"{name}.toml").read_text(encoding="utf-8")
    return _from_texts(name, graph_text, decl_text, f"{name}.json", f"{name}.toml")


def _from_texts(
    name: str, graph_text: str, decl_text: str, graph_src: str, decl_src: str
) -> Workflow:
    try:
        graph = json.loads(graph_text)
    except json.JSONDecodeError as exc:
        raise WorkflowError([f"{graph_src}: invalid JSON: {exc}"]) from exc
    try:
        decl = tomllib.loads(decl_text)
    except tomllib.TOMLDecodeError as exc:
        raise WorkflowError([f"{decl_src}: invalid TOML: {exc}"]) from exc
    meta = decl.get("workflow", {})
    if not isinstance(meta, dict):
        raise WorkflowError([f"{decl_src}: [workflow] must be a table"])
    if "bindings" not in decl:
        raise WorkflowError([f"{decl_src}: missing [bindings] table"])
    description = meta.get("description", "")
    base = meta.get("base_resolution", 1024)
    if not isinstance(description, str):
        raise WorkflowError([f"{decl_src}: workflow.description must be text"])
    # Node problems are reported against the workflow file, binding problems
    # against the declaration; both names appear in the message.
    return Workflow(
        str(meta.get("name", name)),
        _check_graph(graph, graph_src),
        decl["bindings"],
        source=f"{decl_src} (for {graph_src})",
        description=description,
        base_resolution=base,
    )
