"""Workflow templates: bindings validated at load, values set on the parsed graph only."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gouache.errors import InvalidParameter
from gouache.pool.workflows import (
    SHIPPED,
    Workflow,
    WorkflowError,
    aspect_to_size,
    load_shipped,
    load_workflow,
    parse_aspect,
)
from gouache_sandbox.comfyui import ComfyUISandbox

NASTY = [
    "",
    'a "quoted" prompt',
    "single 'quotes' and \\ backslashes \\\" too",
    '{"3": {"class_type": "EvilNode", "inputs": {}}}',
    '"}, "99": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}}, "x": {"',
    "line one\nline two\r\n\ttabbed",
    "unicode: 水彩画の狐 🦊 café — ñ \u200b zero-width \U0001f600",
    "nul \x00 and control \x1b[31m chars",
    "%date:yyyy-MM-dd% {prompt} ${HOME} {{double}}",
    "x" * 10_240,
    "🦊" * 3000,
]


def assert_only_bound_changed(
    workflow: Workflow, rendered: dict[str, Any], values: dict[str, Any]
) -> None:
    """Same nodes, classes and links; every difference is a bound input with its value."""
    template = workflow.graph
    assert list(rendered) == list(template)
    bound = {(b.node, b.input): name for name, bs in workflow.bindings.items() for b in bs}
    for node_id, node in template.items():
        got = rendered[node_id]
        assert sorted(got) == sorted(node)
        assert got["class_type"] == node["class_type"]
        assert list(got["inputs"]) == list(node["inputs"])
        for name, value in node["inputs"].items():
            key = (node_id, name)
            if key in bound and values.get(bound[key]) is not None:
                assert got["inputs"][name] == values[bound[key]]
            else:
                assert got["inputs"][name] == value
    # And it survives the trip through JSON unchanged (what goes on the wire).
    assert json.loads(json.dumps(rendered)) == rendered


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("prompt", NASTY)
def test_nasty_prompts_only_change_bound_values(name: str, prompt: str) -> None:
    workflow = load_shipped(name)
    values = {"prompt": prompt, "negative": prompt[::-1], "seed": 2**64 - 1, "steps": 3}
    rendered = workflow.render(**values)
    assert_only_bound_changed(workflow, rendered, values)


@settings(max_examples=200, deadline=None)
@given(
    name=st.sampled_from(SHIPPED),
    prompt=st.text(max_size=2000),
    negative=st.none() | st.text(max_size=200),
    seed=st.none() | st.integers(0, 2**64 - 1),
    width=st.none() | st.integers(8, 16384),
    height=st.none() | st.integers(8, 16384),
    steps=st.none() | st.integers(1, 10000),
    batch_size=st.none() | st.integers(1, 4096),
)
def test_render_property(
    name: str,
    prompt: str,
    negative: str | None,
    seed: int | None,
    width: int | None,
    height: int | None,
    steps: int | None,
    batch_size: int | None,
) -> None:
    workflow = load_shipped(name)
    values = {
        "prompt": prompt,
        "negative": negative,
        "seed": seed,
        "width": width,
        "height": height,
        "steps": steps,
        "batch_size": batch_size,
    }
    rendered = workflow.render(**values)
    assert_only_bound_changed(workflow, rendered, values)


def test_render_never_mutates_the_template() -> None:
    workflow = load_shipped("default_sdxl")
    before = copy.deepcopy(workflow.graph)
    first = workflow.render(prompt="one", seed=1)
    first["6"]["inputs"]["text"] = "tampered"
    first["3"]["inputs"]["model"][0] = "99"
    assert workflow.graph == before
    assert workflow.render(prompt="two")["6"]["inputs"]["text"] == "two"


def test_default_sdxl_bindings() -> None:
    workflow = load_shipped("default_sdxl")
    graph = workflow.render(
        prompt="a fox", negative="blurry", seed=42, width=1344, height=768, steps=30, batch_size=2
    )
    assert graph["6"]["inputs"]["text"] == "a fox"
    assert graph["7"]["inputs"]["text"] == "blurry"
    assert graph["3"]["inputs"]["seed"] == 42
    assert graph["3"]["inputs"]["steps"] == 30
    assert graph["5"]["inputs"] == {"width": 1344, "height": 768, "batch_size": 2}
    assert {n["class_type"] for n in graph.values()} == {
        "CheckpointLoaderSimple",
        "CLIPTextEncode",
        "EmptyLatentImage",
        "KSampler",
        "VAEDecode",
        "SaveImage",
    }
    assert workflow.output_nodes() == ["9"]


def test_builtin_demo_ignores_unbound_values() -> None:
    workflow = load_shipped("builtin_demo")
    assert not workflow.binds("negative")
    assert not workflow.binds("steps")
    graph = workflow.render(prompt="p", negative="ignored", steps=12, seed=9)
    assert "ignored" not in json.dumps(graph)
    assert graph["3"]["inputs"]["value"] == "p"
    assert graph["2"]["inputs"]["seed"] == 9


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"prompt": 5}, "prompt must be text"),
        ({"prompt": "x", "negative": b"bytes"}, "negative must be text"),
        ({"prompt": "x", "seed": -1}, "seed must be between"),
        ({"prompt": "x", "seed": 2**64}, "seed must be between"),
        ({"prompt": "x", "seed": True}, "seed must be a whole number"),
        ({"prompt": "x", "width": 4}, "width must be between"),
        ({"prompt": "x", "height": 1.5}, "height must be a whole number"),
        ({"prompt": "x", "steps": 0}, "steps must be between"),
        ({"prompt": "x", "batch_size": 5000}, "batch_size must be between"),
    ],
)
def test_render_rejects_bad_values(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidParameter, match=fragment):
        load_shipped("default_sdxl").render(**kwargs)


# -- declarations ------------------------------------------------------------------------

GRAPH = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0},
    },
    "2": {"class_type": "PrimitiveString", "inputs": {"value": ""}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}},
}


def write(tmp_path: Path, graph: Any, toml: str) -> Path:
    path = tmp_path / "flow.json"
    path.write_text(json.dumps(graph) if not isinstance(graph, str) else graph)
    path.with_suffix(".toml").write_text(toml)
    return path


def test_load_workflow_from_files(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        GRAPH,
        '[workflow]\nbase_resolution = 512\n[bindings]\nprompt = [{ node = "2", input = "value" }]\n'
        'width = { node = "1", input = "width" }\nheight = { node = "1", input = "height" }\n',
    )
    workflow = load_workflow(path)
    assert workflow.name == "flow"
    assert workflow.size_for("16:9") == (704, 384)
    assert workflow.render(prompt="hi", width=128, height=96)["1"]["inputs"]["width"] == 128


@pytest.mark.parametrize(
    ("graph", "toml", "fragments"),
    [
        (
            GRAPH,
            '[bindings]\nprompt = { node = "7", input = "value" }\n',
            ["node '7' does not exist"],
        ),
        (
            GRAPH,
            '[bindings]\nprompt = { node = "2", input = "text" }\n',
            ["node '2' (PrimitiveString) has no input 'text'"],
        ),
        (
            GRAPH,
            '[bindings]\nprompt = { node = "3", input = "images" }\n',
            ["input 'images' is a link"],
        ),
        (
            GRAPH,
            '[bindings]\nprompt = { node = "2", input = "value" }\nseed = { node = "2", input = "value" }\n',
            ["binding 'seed'", "expected an integer"],
        ),
        (
            GRAPH,
            '[bindings]\nprompt = { node = "1", input = "width" }\n',
            ["expected text"],
        ),
        (
            GRAPH,
            '[bindings]\nprompt = { node = "2", input = "value" }\nwidth = { node = "1", input = "width" }\n',
            ["both 'width' and 'height'"],
        ),
        (GRAPH, '[bindings]\nseed = { node = "1", input = "color" }\n', ["must bind 'prompt'"]),
        (GRAPH, '[bindings]\nprompt = "2.value"\n', ["must be { node"]),
        (
            GRAPH,
            '[bindings]\nstyle = { node = "2", input = "value" }\n',
            ["unknown binding 'style'"],
        ),
        (GRAPH, "[workflow]\n", ["missing [bindings]"]),
        (GRAPH, "[bindings\n", ["invalid TOML"]),
        ("{not json", '[bindings]\nprompt = { node = "2", input = "value" }\n', ["invalid JSON"]),
        (
            [1, 2],
            '[bindings]\nprompt = { node = "2", input = "value" }\n',
            ["non-empty JSON object"],
        ),
        (
            {"1": {"class_type": "SaveImage", "inputs": {"images": ["9", 0]}}},
            '[bindings]\nprompt = { node = "1", input = "x" }\n',
            ["links to missing node '9'"],
        ),
        (
            {"1": {"inputs": {}}},
            '[bindings]\nprompt = { node = "1", input = "x" }\n',
            ["has no class_type"],
        ),
    ],
)
def test_declaration_errors_name_file_and_node(
    tmp_path: Path, graph: Any, toml: str, fragments: list[str]
) -> None:
    path = write(tmp_path, graph, toml)
    with pytest.raises(WorkflowError) as info:
        load_workflow(path)
    message = str(info.value)
    assert "flow." in message
    for fragment in fragments:
        assert fragment in message
    assert info.value.code == "workflow_invalid"


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(WorkflowError, match="cannot read workflow"):
        load_workflow(tmp_path / "nope.json")
    (tmp_path / "only.json").write_text(json.dumps(GRAPH))
    with pytest.raises(WorkflowError, match="cannot read declaration"):
        load_workflow(tmp_path / "only.json")
    with pytest.raises(WorkflowError, match="unknown shipped workflow"):
        load_shipped("nope")


# -- aspect ratios -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("aspect", "base", "expected"),
    [
        ("1:1", 1024, (1024, 1024)),
        ("16:9", 1024, (1344, 768)),
        ("9:16", 1024, (768, 1344)),
        ("3:2", 1024, (1280, 832)),
        ("2:3", 1024, (832, 1280)),
        ((21, 9), 1024, (1536, 640)),
        ("4:3", 512, (576, 448)),
        (" 16 : 9 ", 512, (704, 384)),
    ],
)
def test_aspect_to_size(
    aspect: str | tuple[int, int], base: int, expected: tuple[int, int]
) -> None:
    assert aspect_to_size(aspect, base=base) == expected


@given(w=st.integers(1, 64), h=st.integers(1, 64), base=st.sampled_from([512, 768, 1024]))
def test_aspect_to_size_property(w: int, h: int, base: int) -> None:
    if max(w / h, h / w) > 8:
        with pytest.raises(InvalidParameter):
            aspect_to_size((w, h), base=base)
        return
    width, height = aspect_to_size((w, h), base=base)
    assert width % 64 == 0 and height % 64 == 0
    assert abs(width * height - base * base) <= 0.35 * base * base
    assert abs(width / height - w / h) <= 0.5 * (w / h) + 64 / min(width, height)


@pytest.mark.parametrize("bad", ["16x9", "0:1", "1:0", "a:b", "", "1:9"])
def test_parse_aspect_rejects(bad: str) -> None:
    with pytest.raises(InvalidParameter):
        parse_aspect(bad)


def test_aspect_multiple_of_8() -> None:
    assert aspect_to_size("16:9", base=1024, multiple=8) == (1368, 768)
    with pytest.raises(ValueError, match="multiple"):
        aspect_to_size("1:1", multiple=7)


# -- the stand-in runs what we render ----------------------------------------------------------


@pytest.mark.parametrize("name", SHIPPED)
async def test_stand_in_accepts_rendered_workflows(name: str) -> None:
    workflow = load_shipped(name)
    width, height = aspect_to_size("3:2", base=128)
    async with ComfyUISandbox() as comfy, aiohttp.ClientSession() as http:
        names: tuple[str, ...] = ()
        if workflow.image_slots:  # img2img and blend load an uploaded image
            form = aiohttp.FormData()
            form.add_field("image", _png(), filename="input.png", content_type="image/png")
            async with http.post(comfy.url + "/upload/image", data=form) as resp:
                names = ((await resp.json())["name"],)
        graph = workflow.render(
            prompt=NASTY[4] + NASTY[6],
            negative=NASTY[3],
            seed=7,
            width=width,
            height=height,
            steps=2,
            images=names,
            denoise=0.5 if names else None,
        )
        ws = await http.ws_connect(comfy.ws_url("wf"))
        async with http.post(
            comfy.url + "/prompt", json={"prompt": graph, "client_id": "wf"}
        ) as resp:
            assert resp.status == 200
            body = await resp.json()
        assert body["node_errors"] == {}
        while True:
            msg = await asyncio.wait_for(ws.receive(), 10)
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if data["type"] == "executing" and data["data"]["node"] is None:
                break
        async with http.get(f"{comfy.url}/history/{body['prompt_id']}") as resp:
            entry = (await resp.json())[body["prompt_id"]]
        assert entry["status"]["status_str"] == "success"
        (output,) = workflow.output_nodes()
        image = entry["outputs"][output]["images"][0]
        async with http.get(comfy.url + "/view", params={"filename": image["filename"]}) as resp:
            assert resp.status == 200
        # The graph came back exactly as sent: the prompt text stayed one value.
        assert entry["prompt"][2] == graph
        await ws.close()


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (48, 32), (200, 30, 40)).save(buf, format="PNG")
    return buf.getvalue()
