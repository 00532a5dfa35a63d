"""The ComfyUI stand-in against traces captured from a real ComfyUI 0.3.64.

Each scenario sends the fixture's requests to the stand-in and compares what
comes back — status codes, JSON shapes, WebSocket message types and their order
— with the capture, ignoring volatile values (ids, timestamps, file counters).
Timing-dependent scenarios are made deterministic by holding execution at a
checkpoint (`ComfyUISandbox.pause_on`) instead of racing the clock.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gouache_sandbox.comfyui import ComfyUISandbox, Faults, Speed

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "comfyui"
Json = dict[str, Any]


def load(name: str) -> Json:
    data: Json = json.loads((FIXTURES / name).read_text())
    return data


# -- helpers -------------------------------------------------------------------


class Recorder:
    """Reads one WebSocket in the background and keeps every frame, fixture-style."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[Json] = []
        self._changed = asyncio.Condition()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                frame: Json = {"kind": "text", "msg": json.loads(msg.data)}
            elif msg.type == aiohttp.WSMsgType.BINARY:
                event, second = struct.unpack(">II", msg.data[:8])
                frame = {"kind": "binary", "event_type": event, "format": second, "raw": msg.data}
            else:
                continue
            async with self._changed:
                self.frames.append(frame)
                self._changed.notify_all()
        async with self._changed:
            self.frames.append({"kind": "closed"})
            self._changed.notify_all()

    async def until(self, pred: Callable[[Json], bool], start: int = 0, timeout: float = 10) -> int:
        """Index of the first frame at or after ``start`` matching ``pred``."""

        def find() -> int | None:
            return next((i for i in range(start, len(self.frames)) if pred(self.frames[i])), None)

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: find() is not None), timeout)
        index = find()
        assert index is not None
        return index

    async def until_done(self, prompt_id: str, start: int = 0) -> int:
        """Index of the final ``executing {node: null}`` of ``prompt_id``."""
        return await self.until(
            lambda f: (
                is_msg(f, "executing")
                and f["msg"]["data"]["node"] is None
                and f["msg"]["data"].get("prompt_id") == prompt_id
            ),
            start,
        )

    def texts(self, start: int = 0, end: int | None = None) -> list[Json]:
        return [f["msg"] for f in self.frames[start:end] if f["kind"] == "text"]

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.wait_for(self._task, 5)


def is_msg(frame: Json, kind: str) -> bool:
    return frame.get("kind") == "text" and frame["msg"]["type"] == kind


def tokens(frames: list[Json]) -> list[tuple[Any, ...]]:
    """Fixture or recorded frames → comparable tokens (volatile values dropped).

    ``progress_state`` is left out (checked separately); runs of progress ticks of
    one node (progress + preview) collapse into one token, because their number
    depends on timing.
    """
    out: list[tuple[Any, ...]] = []
    for f in frames:
        if f["kind"] == "binary":
            tok: tuple[Any, ...] = ("binary", f["event_type"])
        elif f["kind"] == "text":
            m = f["msg"]
            data = m["data"]
            if m["type"] == "progress_state":
                continue
            node = data.get("node", data.get("node_id")) if isinstance(data, dict) else None
            tok = (m["type"], node, tuple(sorted(data)))
            if m["type"] == "executed":
                tok += (tuple(sorted(data["output"])),)
            if m["type"] == "status":
                tok = ("status", "sid" in data)
        else:
            continue
        if tok[0] in ("progress", "binary") and out and out[-1][0] == "ticks":
            continue
        if tok[0] == "progress":
            tok = ("ticks", tok[1])
        out.append(tok)
    return out


def per_node(toks: list[tuple[Any, ...]]) -> tuple[list[tuple[Any, ...]], dict[Any, list[Any]]]:
    """Split tokens into the prompt-level frame and each node's own sequence.

    ComfyUI picks among ready output nodes in an order that depends on Python's
    set iteration, so only each node's own sequence and the frame are compared.
    """
    frame: list[tuple[Any, ...]] = []
    nodes: dict[Any, list[Any]] = {}
    current: Any = None
    for tok in toks:
        kind = tok[0]
        if kind == "executing" and tok[1] is not None:
            current = tok[1]
            nodes.setdefault(current, []).append(tok)
        elif kind in ("executed", "ticks") or (kind == "binary" and current is not None):
            owner = tok[1] if kind != "binary" else current
            nodes.setdefault(owner, []).append(tok)
        else:
            current = None
            frame.append(tok)
    return frame, nodes


def assert_same_run(real: list[Json], ours: list[Json]) -> None:
    """Same frame messages in the same order, same per-node sequences and shapes."""
    real_frame, real_nodes = per_node(tokens(real))
    our_frame, our_nodes = per_node(tokens(ours))
    assert our_frame == real_frame
    assert our_nodes == real_nodes
    real_ps = [f["msg"]["data"] for f in real if is_msg(f, "progress_state")]
    our_ps = [f["msg"]["data"] for f in ours if is_msg(f, "progress_state")]
    assert bool(real_ps) == bool(our_ps)
    for data in our_ps:
        assert sorted(data) == sorted(real_ps[0])
        for entry in data["nodes"].values():
            assert sorted(entry) == sorted(next(iter(real_ps[0]["nodes"].values())))


def run_frames(frames: list[Json], prompt_id_index: int = 0) -> list[Json]:
    """The fixture frames of one prompt run: from after the open/hello to its final executing."""
    body = [f for f in frames if f["kind"] in ("text", "binary")]
    return body


def shape(value: Any) -> Any:
    """The JSON structure without volatile leaves (keys and types, list lengths kept)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value).__name__


@pytest.fixture
async def comfy() -> AsyncIterator[ComfyUISandbox]:
    sandbox = ComfyUISandbox(speed=Speed(sleep_scale=0.02))
    await sandbox.start()
    try:
        yield sandbox
    finally:
        await sandbox.aclose()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


async def connect(
    http: aiohttp.ClientSession, comfy: ComfyUISandbox, client_id: str | None
) -> Recorder:
    rec = Recorder(await http.ws_connect(comfy.ws_url(client_id)))
    await rec.until(lambda f: is_msg(f, "status"))
    return rec


async def submit(http: aiohttp.ClientSession, comfy: ComfyUISandbox, body: Json) -> tuple[int, Any]:
    async with http.post(comfy.url + "/prompt", json=body) as resp:
        if resp.content_type == "application/json":
            return resp.status, await resp.json()
        return resp.status, await resp.text()


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
        return await resp.json()


def client_frames(fixture: Json, name: str = "client") -> list[Json]:
    ws = fixture["ws"]
    frames: list[Json] = ws[name] if isinstance(ws, dict) else ws
    return [f for f in frames if f["kind"] in ("text", "binary")]


def split_runs(frames: list[Json]) -> list[list[Json]]:
    """Split a socket's frames into per-prompt runs ending at ``executing null``."""
    runs: list[list[Json]] = [[]]
    for f in frames:
        runs[-1].append(f)
        if is_msg(f, "executing") and f["msg"]["data"]["node"] is None:
            runs.append([])
    return [r for r in runs if r]


# -- replays ----------------------------------------------------------------------


async def test_quick_and_cached_runs_match_capture(
    comfy: ComfyUISandbox, http: aiohttp.ClientSession
) -> None:
    fx = load("builtin_quick.json")
    ids = fx["client_ids"]
    client = await connect(http, comfy, ids["client"])
    ends = []
    for graph in ("quick", "quick_again"):
        status, body = await submit(
            http, comfy, {"prompt": fx["graphs"][graph], "client_id": ids["client"]}
        )
        assert status == 200
        assert sorted(body) == ["node_errors", "number", "prompt_id"]
        ends.append(await client.until_done(body["prompt_id"], ends[-1] + 1 if ends else 0))
    other = await connect(http, comfy, ids["other_client"])
    status, body = await submit(
        http, comfy, {"prompt": fx["graphs"]["quick_again"], "client_id": ids["other_client"]}
    )
    await other.until_done(body["prompt_id"])
    await client.until(lambda f: is_msg(f, "status"), ends[-1] + 3)

    real = split_runs(client_frames(fx))
    ours = split_runs(client.frames)
    assert_same_run(real[0], ours[0])  # first run: everything executes
    assert_same_run(real[1], ours[1])  # second run: cached nodes only re-send executed
    assert_same_run(client_frames(fx, "other_client"), other.frames)
    cached = [m for m in client.texts() if m["type"] == "execution_cached"]
    assert cached[0]["data"]["nodes"] == []
    assert cached[1]["data"]["nodes"] == ["1", "2", "3", "4", "6", "7"]
    # The other client's run is seen by the first socket only as status messages.
    assert {f["msg"]["type"] for f in ours[2] if f["kind"] == "text"} == {"status"}

    # History and /view, shaped like the capture.
    real_hist = next(h for h in fx["http"] if h["path"].startswith("/history/"))["body"]
    first_id = cached[0]["data"]["prompt_id"]
    hist = await get_json(http, f"{comfy.url}/history/{first_id}")
    real_entry = next(iter(real_hist.values()))
    entry = hist[first_id]
    assert sorted(entry) == sorted(real_entry)
    assert sorted(entry["outputs"]) == sorted(real_entry["outputs"])
    assert shape(entry["status"]) == shape(real_entry["status"])
    assert shape(entry["meta"]) == shape(real_entry["meta"])
    assert entry["prompt"][2] == real_entry["prompt"][2]
    assert sorted(entry["prompt"][4]) == sorted(real_entry["prompt"][4])
    image = entry["outputs"]["3"]["images"][0]
    async with http.get(
        f"{comfy.url}/view",
        params={"filename": image["filename"], "subfolder": "", "type": "output"},
    ) as resp:
        assert resp.status == 200
        assert resp.content_type == "image/png"
        assert (await resp.read())[:8] == bytes.fromhex("89504e470d0a1a0a")
    temp = entry["outputs"]["4"]["images"][0]
    async with http.get(
        f"{comfy.url}/view", params={"filename": temp["filename"], "type": "temp"}
    ) as resp:
        assert resp.status == 200
    async with http.get(
        f"{comfy.url}/view?filename={image['filename']}&type=output&preview=webp;50"
    ) as resp:
        assert resp.content_type == "image/webp"
        assert (await resp.read())[:4] == b"RIFF"
    await client.close()
    await other.close()


@pytest.mark.parametrize("fixture", ["builtin_progress_blur.json", "slow_progress.json"])
async def test_single_prompt_runs_match_capture(
    comfy: ComfyUISandbox, http: aiohttp.ClientSession, fixture: str
) -> None:
    fx = load(fixture)
    post = next(h for h in fx["http"] if h["method"] == "POST" and h["path"] == "/prompt")
    client_id = post["request"]["client_id"]
    client = await connect(http, comfy, client_id)
    status, body = await submit(http, comfy, post["request"])
    assert status == 200
    await client.until_done(body["prompt_id"])
    real = split_runs(client_frames(fx))[0]
    assert_same_run(real, client.frames[: len(client.frames)])
    await client.close()


async def test_preview_metadata_frames(comfy: ComfyUISandbox, http: aiohttp.ClientSession) -> None:
    fx = load("builtin_preview_metadata.json")
    cid = fx["client_ids"]["client"]
    ws = await http.ws_connect(comfy.ws_url(cid))
    await ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
    client = Recorder(ws)
    await client.until(lambda f: is_msg(f, "feature_flags"))
    assert client.texts()[1]["data"] == next(
        f["msg"]["data"] for f in client_frames(fx) if is_msg(f, "feature_flags")
    )
    _, body = await submit(http, comfy, {"prompt": fx["graphs"]["quick"], "client_id": cid})
    await client.until_done(body["prompt_id"])
    assert_same_run(split_runs(client_frames(fx))[0], split_runs(client.frames)[0])
    order = [
        "preview" if f["kind"] == "binary" else f["msg"]["type"]
        for f in client.frames
        if (f["kind"] == "binary" and f["event_type"] == 4) or is_msg(f, "progress")
    ]
    real_order = [
        "preview" if f["kind"] == "binary" else f["msg"]["type"]
        for f in client_frames(fx)
        if (f["kind"] == "binary" and f["event_type"] == 4) or is_msg(f, "progress")
    ]
    assert order == real_order == ["preview", "progress"] * 2
    previews = [f for f in client.frames if f["kind"] == "binary" and f["event_type"] == 4]
    real = [f for f in client_frames(fx) if f["kind"] == "binary" and f["event_type"] == 4]
    assert len(previews) == len(real) == 2
    raw = previews[0]["raw"]
    (length,) = struct.unpack(">I", raw[4:8])
    meta = json.loads(raw[8 : 8 + length])
    assert sorted(meta) == sorted(real[0]["metadata"])
    assert meta["node_id"] == "5"
    assert raw[8 + length : 16 + length] == bytes.fromhex("89504e470d0a1a0a")
    text_frames = [f for f in client.frames if f["kind"] == "binary" and f["event_type"] == 3]
    assert text_frames[0]["raw"][8:] == b"6width: 64, height: 48\n batch size: 2"
    await client.close()


async def test_no_client_id_broadcasts_progress_only(
    comfy: ComfyUISandbox, http: aiohttp.ClientSession
) -> None:
    fx = load("builtin_no_client_id.json")
    observer = await connect(http, comfy, fx["client_ids"]["observer"])
    post = fx["http"][0]
    status, body = await submit(http, comfy, post["request"])
    assert status == 200
    await comfy.wait_idle()
    await observer.until(
        lambda f: (
            is_msg(f, "status") and f["msg"]["data"]["status"]["exec_info"]["queue_remaining"] == 0
        ),
        1,
    )
    assert tokens(observer.frames) == tokens(client_frames(fx, "observer"))
    hist = await get_json(http, f"{comfy.url}/history/{body['prompt_id']}")
    entry = hist[body["prompt_id"]]
    assert entry["prompt"][3] == {}
    assert entry["status"]["status_str"] == "success"
    await observer.close()


async def test_validation_errors_match_capture(
    comfy: ComfyUISandbox, http: aiohttp.ClientSession
) -> None:
    fx = load("builtin_errors.json")
    for case in fx["http"]:
        if case["method"] != "POST" or case["path"] != "/prompt":
            continue
        name = case["case"]
        if name == "missing_model_file":
            continue  # the stand-in has that checkpoint: see the test below
        if name == "bad_json_body":
            async with http.post(comfy.url + "/prompt", data="{not json") as resp:
                assert resp.status == 500, name
                assert await resp.text() == case["body"]["_text"]
            continue
        if name == "origin_mismatch":
            async with http.post(
                comfy.url + "/prompt",
                json=case["request"],
                headers={"Origin": "http://evil.example"},
            ) as resp:
                assert resp.status == 403
            continue
        status, body = await submit(http, comfy, case["request"])
        assert status == case["status"], name
        if status == 500:
            assert body == case["body"]["_text"]
            continue
        if status == 200:
            assert sorted(body) == sorted(case["body"]), name
            assert normalise_errors(body["node_errors"]) == normalise_errors(
                case["body"]["node_errors"]
            ), name
            continue
        assert body["error"]["type"] == case["body"]["error"]["type"], name
        assert body["error"]["message"] == case["body"]["error"]["message"], name
        assert body["error"]["details"] == case["body"]["error"]["details"], name
        assert normalise_errors(body["node_errors"]) == normalise_errors(
            case["body"]["node_errors"]
        ), name


def normalise_errors(node_errors: Json) -> Json:
    """Node errors with per-node error lists sorted (the real order is set-random)."""
    out: Json = {}
    for node_id, entry in node_errors.items():
        errors = []
        for err in entry["errors"]:
            err = dict(err)
            if err["type"] == "exception_during_validation":
                err["extra_info"] = sorted(err["extra_info"])
            errors.append(err)
        out[node_id] = {**entry, "errors": sorted(errors, key=lambda e: json.dumps(e))}
    return out


async def test_missing_checkpoint_is_value_not_in_list(http: aiohttp.ClientSession) -> None:
    async with ComfyUISandbox(checkpoints=()) as comfy:
        case = next(
            h for h in load("builtin_errors.json")["http"] if h.get("case") == "missing_model_file"
        )
        status, body = await submit(http, comfy, case["request"])
        assert status == 400
        assert body == case["body"]


async def test_runtime_error_and_misc_endpoints(
    comfy: ComfyUISandbox, http: aiohttp.ClientSession
) -> None:
    fx = load("builtin_errors.json")
    cid = fx["client_ids"]["client"]
    client = await connect(http, comfy, cid)
    case = next(h for h in fx["http"] if h.get("case") == "runtime_error")
    _, body = await submit(http, comfy, case["request"])
    await client.until_done(body["prompt_id"])
    real_err = next(f["msg"] for f in client_frames(fx) if is_msg(f, "execution_error"))
    err = next(m for m in client.texts() if m["type"] == "execution_error")
    assert sorted(err["data"]) == sorted(real_err["data"])
    assert err["data"]["exception_message"] == real_err["data"]["exception_message"]
    assert err["data"]["current_inputs"] == real_err["data"]["current_inputs"]
    hist = (await get_json(http, f"{comfy.url}/history/{body['prompt_id']}"))[body["prompt_id"]]
    real_hist = next(h for h in fx["http"] if h["path"] == f"/history/{case['body']['prompt_id']}")
    real_entry = real_hist["body"][case["body"]["prompt_id"]]
    assert hist["status"]["status_str"] == "error"
    assert [m[0] for m in hist["status"]["messages"]] == [
        m[0] for m in real_entry["status"]["messages"]
    ]
    assert hist["outputs"] == {}

    assert await get_json(http, f"{comfy.url}/history/does-not-exist") == {}
    assert await get_json(http, f"{comfy.url}/object_info/NoSuchNode") == {}
    for query, code in [
        ("?filename=nope.png&type=output", 404),
        ("?filename=../../etc/passwd&type=output", 400),
        ("?filename=x.png&type=bogus", 400),
        ("", 404),
    ]:
        async with http.get(comfy.url + "/view" + query) as resp:
            assert resp.status == code, query
    async with http.post(comfy.url + "/queue", data="nope") as resp:
        assert resp.status == 500
    async with http.post(comfy.url + "/queue", json={"delete": ["no-such-prompt"]}) as resp:
        assert resp.status == 200
    async with http.post(comfy.url + "/interrupt", json={"prompt_id": "no-such"}) as resp:
        assert resp.status == 200

    # A client-chosen prompt_id, used twice: the second run overwrites history.
    reuse = [h for h in fx["http"] if h.get("case", "").startswith("client_chosen_prompt_id")]
    numbers = []
    for req in reuse:
        start = len(client.frames)
        status, body = await submit(http, comfy, req["request"])
        assert status == 200
        assert body["prompt_id"] == "my-own-id-1"
        numbers.append(body["number"])
        await client.until_done("my-own-id-1", start)
    assert numbers[1] == numbers[0] + 1
    hist = await get_json(http, f"{comfy.url}/history/my-own-id-1")
    assert hist["my-own-id-1"]["prompt"][0] == numbers[1]
    assert list(await get_json(http, f"{comfy.url}/history")).count("my-own-id-1") == 1
    await client.close()


async def test_server_info_endpoints(comfy: ComfyUISandbox, http: aiohttp.ClientSession) -> None:
    fx = load("server_info.json")
    for case in fx["http"]:
        path = case["path"]
        if path == "/object_info":
            body = await get_json(http, comfy.url + path)
            assert {"EmptyImage", "SaveImage", "KSampler", "CheckpointLoaderSimple"} <= set(body)
            outputs = {k for k, v in body.items() if v["output_node"]}
            assert outputs <= set(case["summary"]["output_nodes"])
            continue
        body = await get_json(http, comfy.url + path)
        real = case["body"]
        if path in ("/object_info/EmptyImage", "/object_info/SaveImageWebsocket"):
            assert body == real
        elif path.startswith("/object_info/") and real:
            name = path.rsplit("/", 1)[1]
            ours, theirs = body[name], real[name]
            assert list(ours["input"]["required"]) == list(theirs["input"]["required"])
            assert ours["output"] == theirs["output"]
            assert ours["output_node"] == theirs["output_node"]
        elif path == "/models/checkpoints":
            assert body == ["sd_xl_base_1.0.safetensors"]
        elif "system_stats" in path:
            assert sorted(body["system"]) == sorted(real["system"])
            assert sorted(body["devices"][0]) == sorted(real["devices"][0])
        else:
            assert body == real, path
    single = load("object_info_EmptyImage.json")
    assert await get_json(http, comfy.url + single["path"]) == single["body"]
    stats = load("system_stats.json")["body"]
    ours = await get_json(http, comfy.url + "/system_stats")
    assert sorted(ours["system"]) == sorted(stats["system"])
    assert sorted(ours["devices"][0]) == sorted(stats["devices"][0])
    anon = await connect(http, comfy, None)
    hello = anon.texts()[0]
    assert sorted(hello["data"]) == ["sid", "status"]
    assert len(hello["data"]["sid"]) == 32
    await anon.close()


async def test_upload_and_load_image(comfy: ComfyUISandbox, http: aiohttp.ClientSession) -> None:
    from PIL import Image

    from gouache_sandbox.comfyui.images import encode

    fx = load("builtin_upload.json")
    first = encode(Image.new("RGB", (40, 30), (10, 20, 30)))
    second = encode(Image.new("RGB", (40, 30), (200, 20, 30)))

    async def upload(data: bytes, overwrite: bool = False) -> Json:
        form = aiohttp.FormData()
        form.add_field("image", data, filename="gouache_upload.png", content_type="image/png")
        form.add_field("type", "input")
        if overwrite:
            form.add_field("overwrite", "true")
        async with http.post(comfy.url + "/upload/image", data=form) as resp:
            assert resp.status == 200
            result: Json = await resp.json()
            return result

    got = [
        await upload(first),
        await upload(first),
        await upload(second),
        await upload(second, True),
    ]
    assert got == [h["body"] for h in fx["http"][:4]]
    async with http.get(comfy.url + "/view?filename=gouache_upload.png&type=input") as resp:
        assert await resp.read() == second
    cid = fx["client_ids"]["client"]
    client = await connect(http, comfy, cid)
    _, body = await submit(http, comfy, {"prompt": fx["graphs"]["load_uploaded"], "client_id": cid})
    await client.until_done(body["prompt_id"])
    assert_same_run(split_runs(client_frames(fx))[0], client.frames)
    await client.close()


# -- queue, interrupts, reconnects -------------------------------------------------------


def at(node: str, step: int | None = None) -> Callable[[Any], bool]:
    return lambda cp: cp.node_id == node and cp.step == step


async def test_delete_pending_and_interrupt_at_next_node(
    comfy: ComfyUISandbox, http: aiohttp.ClientSession
) -> None:
    fx = load("builtin_interrupt_delete.json")
    cid = fx["client_ids"]["client"]
    client = await connect(http, comfy, cid)
    comfy.pause_on(at("11"))
    ids = []
    for graph in ("A", "B", "C"):
        _, body = await submit(http, comfy, {"prompt": fx["graphs"][graph], "client_id": cid})
        ids.append(body["prompt_id"])
    await comfy.wait_paused()
    queue = await get_json(http, comfy.url + "/queue")
    real_queue = fx["http"][3]["body"]
    assert shape(queue["queue_running"]) == shape(real_queue["queue_running"])
    assert sorted(e[1] for e in queue["queue_pending"]) == sorted(ids[1:])
    async with http.post(comfy.url + "/queue", json={"delete": [ids[1]]}) as resp:
        assert resp.status == 200
    assert [e[1] for e in (await get_json(http, comfy.url + "/queue"))["queue_pending"]] == [ids[2]]
    async with http.post(comfy.url + "/interrupt", json={"prompt_id": ids[1]}) as resp:
        assert resp.status == 200  # not running: ignored
    async with http.post(comfy.url + "/interrupt", json={"prompt_id": ids[0]}) as resp:
        assert resp.status == 200
    comfy.resume()
    end_c = await client.until_done(ids[2])
    interrupted = next(m for m in client.texts() if m["type"] == "execution_interrupted")
    real_int = next(f["msg"] for f in client_frames(fx) if is_msg(f, "execution_interrupted"))
    assert sorted(interrupted["data"]) == sorted(real_int["data"])
    assert interrupted["data"]["node_id"] == real_int["data"]["node_id"] == "12"
    assert interrupted["data"]["executed"] == real_int["data"]["executed"] == ["1", "10", "11"]
    assert await get_json(http, f"{comfy.url}/history/{ids[1]}") == {}
    hist_a = (await get_json(http, f"{comfy.url}/history/{ids[0]}"))[ids[0]]
    real_a = fx["http"][-3]["body"][fx["http"][0]["body"]["prompt_id"]]
    assert hist_a["status"]["status_str"] == real_a["status"]["status_str"] == "error"
    assert [m[0] for m in hist_a["status"]["messages"]] == [
        m[0] for m in real_a["status"]["messages"]
    ]
    runs = split_runs(client.frames[: end_c + 1])
    real_runs = split_runs(client_frames(fx))
    assert_same_run(real_runs[1], runs[1])  # C after the interrupted A
    await client.close()


async def test_interrupt_during_progress(
    comfy: ComfyUISandbox, http: aiohttp.ClientSession
) -> None:
    fx = load("builtin_interrupt_progress.json")
    cid = fx["client_ids"]["client"]
    client = await connect(http, comfy, cid)
    graph = fx["graphs"]["paced"]
    graph["1"]["inputs"].update(width=64, height=64, batch_size=20)
    comfy.pause_on(at("2", 2))
    _, body = await submit(http, comfy, {"prompt": graph, "client_id": cid})
    await comfy.wait_paused()
    async with http.post(comfy.url + "/interrupt") as resp:
        assert resp.status == 200
    comfy.resume()
    await client.until_done(body["prompt_id"])
    assert tokens(client.frames) == tokens(client_frames(fx))
    msg = next(m for m in client.texts() if m["type"] == "execution_interrupted")
    assert msg["data"]["node_id"] == "2"
    assert msg["data"]["executed"] == ["1"]
    progress = [m["data"]["value"] for m in client.texts() if m["type"] == "progress"]
    assert progress == [0, 1]
    await client.close()


async def test_interrupt_during_last_node_is_ignored(
    comfy: ComfyUISandbox, http: aiohttp.ClientSession
) -> None:
    fx = load("builtin_interrupt_last_node.json")
    cid = fx["client_ids"]["client"]
    client = await connect(http, comfy, cid)
    graph = fx["http"][0]["request"]["prompt"]
    graph["1"]["inputs"].update(width=32, height=32, batch_size=3)
    comfy.pause_on(at("2"))
    _, body = await submit(http, comfy, {"prompt": graph, "client_id": cid})
    await comfy.wait_paused()
    assert await get_json(http, f"{comfy.url}/history/{body['prompt_id']}") == {}
    async with http.post(comfy.url + "/interrupt", json={"prompt_id": body["prompt_id"]}) as resp:
        assert resp.status == 200
    comfy.resume()
    await client.until_done(body["prompt_id"])
    assert tokens(client.frames) == tokens(client_frames(fx))
    hist = (await get_json(http, f"{comfy.url}/history/{body['prompt_id']}"))[body["prompt_id"]]
    assert hist["status"]["status_str"] == "success"
    assert len(hist["outputs"]["2"]["images"]) == 3
    await client.close()


async def test_stale_interrupt_flag_is_cleared_by_next_prompt(
    comfy: ComfyUISandbox, http: aiohttp.ClientSession
) -> None:
    cid = "stale"
    client = await connect(http, comfy, cid)
    graph = load("builtin_quick.json")["graphs"]["quick"]
    async with http.post(comfy.url + "/interrupt") as resp:  # nothing runs
        assert resp.status == 200
    _, body = await submit(http, comfy, {"prompt": graph, "client_id": cid})
    await client.until_done(body["prompt_id"])
    assert "execution_success" in [m["type"] for m in client.texts()]
    await client.close()


@pytest.mark.parametrize("mode", ["ignore", "late"])
async def test_interrupt_faults(http: aiohttp.ClientSession, mode: str) -> None:
    """builtin_interrupt_late.json: an interrupt that lands too late (or never) does nothing."""
    async with ComfyUISandbox(faults=Faults(interrupt=mode)) as comfy:  # type: ignore[arg-type]
        client = await connect(http, comfy, "c")
        graph = load("builtin_interrupt_progress.json")["graphs"]["paced"]
        graph["1"]["inputs"].update(width=32, height=32, batch_size=4)
        comfy.pause_on(at("2", 1))
        _, body = await submit(http, comfy, {"prompt": graph, "client_id": "c"})
        await comfy.wait_paused()
        async with http.post(comfy.url + "/interrupt") as resp:
            assert resp.status == 200
        comfy.resume()
        end = await client.until_done(body["prompt_id"])
        types = [m["type"] for m in client.texts()]
        assert "execution_success" in types
        assert "execution_interrupted" not in types
        # The flag is stale after a late interrupt; the next prompt clears it and runs.
        assert comfy.engine.interrupt_flag is (mode == "late")
        graph["1"]["inputs"]["color"] = 1
        _, second = await submit(http, comfy, {"prompt": graph, "client_id": "c"})
        await client.until_done(second["prompt_id"], end + 1)
        assert [m["type"] for m in client.texts(end + 1)].count("execution_success") == 1
        assert not comfy.engine.interrupt_flag
        await client.close()


async def test_front_and_clear(comfy: ComfyUISandbox, http: aiohttp.ClientSession) -> None:
    fx = load("builtin_queue_front_clear.json")
    cid = fx["client_ids"]["client"]
    client = await connect(http, comfy, cid)
    comfy.pause_on(at("10"))
    ids, numbers = [], []
    for name in ("P0", "P1", "P2", "P3"):
        req: Json = {"prompt": fx["graphs"][name], "client_id": cid}
        if name == "P3":
            req["front"] = True
        _, body = await submit(http, comfy, req)
        ids.append(body["prompt_id"])
        numbers.append(body["number"])
    await comfy.wait_paused()
    assert numbers[3] < 0
    assert numbers[3] == -(numbers[2] + 1)
    queue = await get_json(http, comfy.url + "/queue")
    pending = [e[1] for e in queue["queue_pending"]]
    real_pending = [e[0] for e in fx["http"][4]["body"]["queue_pending"]]
    # Heap order, like the capture: the front prompt first, then *not* sorted.
    assert pending == [ids[3], ids[2], ids[1]]
    assert real_pending == sorted(real_pending, key=lambda n: (n >= 0, -n))
    comfy.pause_on(lambda cp: cp.prompt_id == ids[3] and cp.node_id == "10")
    comfy.resume()
    await comfy.wait_paused()
    assert (await get_json(http, comfy.url + "/queue"))["queue_running"][0][1] == ids[3]
    async with http.post(comfy.url + "/queue", json={"clear": True}) as resp:
        assert resp.status == 200
    assert (await get_json(http, comfy.url + "/queue"))["queue_pending"] == []
    comfy.resume()
    await client.until_done(ids[3])
    for pid in ids[1:3]:
        assert await get_json(http, f"{comfy.url}/history/{pid}") == {}
    started = [m["data"]["prompt_id"] for m in client.texts() if m["type"] == "execution_start"]
    assert started == [ids[0], ids[3]]
    await client.close()


async def test_rapid_submissions_and_history_max_items(
    comfy: ComfyUISandbox, http: aiohttp.ClientSession
) -> None:
    fx = load("builtin_rapid3.json")
    cid = fx["client_ids"]["client"]
    client = await connect(http, comfy, cid)
    observer = await connect(http, comfy, fx["client_ids"]["observer"])
    ids = []
    for h in fx["http"][:3]:
        _, body = await submit(http, comfy, h["request"])
        ids.append(body["prompt_id"])
    await client.until_done(ids[2])
    assert [m["data"]["prompt_id"] for m in client.texts() if m["type"] == "execution_start"] == ids
    await comfy.wait_idle()
    await observer.until(
        lambda f: (
            is_msg(f, "status") and f["msg"]["data"]["status"]["exec_info"]["queue_remaining"] == 0
        ),
        2,
    )
    assert {m["type"] for m in observer.texts()} == {"status"}
    last_two = await get_json(http, comfy.url + "/history?max_items=2")
    assert list(last_two) == ids[1:]
    assert await get_json(http, comfy.url + "/prompt") == {"exec_info": {"queue_remaining": 0}}
    await client.close()
    await observer.close()


async def test_reconnect_with_same_client_id(
    comfy: ComfyUISandbox, http: aiohttp.ClientSession
) -> None:
    fx = load("builtin_reconnect.json")
    cid = (
        fx["client_ids"]["first"]
        if "first" in fx["client_ids"]
        else next(iter(fx["client_ids"].values()))
    )
    first = await connect(http, comfy, cid)
    comfy.pause_on(at("10"))
    _, p1 = await submit(http, comfy, {"prompt": fx["graphs"]["P1"], "client_id": cid})
    await comfy.wait_paused()
    await first.until(lambda f: is_msg(f, "executing") and f["msg"]["data"]["node"] == "10")
    seen_by_first = len(first.frames)
    second = await connect(http, comfy, cid)
    await second.until(lambda f: is_msg(f, "executing"))
    assert tokens(second.frames[:2]) == tokens(client_frames(fx, "second")[:2])
    assert second.texts()[1]["data"] == {"node": "10"}
    comfy.pause_on(at("11"))
    comfy.resume()
    await comfy.wait_paused()
    await second.until(lambda f: is_msg(f, "executing") and f["msg"]["data"].get("node") == "11")
    await second.close()  # unregisters the id: the rest of P1 is lost
    comfy.resume()
    await comfy.wait_idle()
    third = await connect(http, comfy, cid)
    assert third.texts()[0]["data"]["status"]["exec_info"]["queue_remaining"] == 0
    hist = await get_json(http, f"{comfy.url}/history/{p1['prompt_id']}")
    assert hist[p1["prompt_id"]]["status"]["status_str"] == "success"
    await first.close()  # the stale socket closes: the server forgets the id again
    observer = await connect(http, comfy, "observer")
    _, p2 = await submit(http, comfy, {"prompt": fx["graphs"]["P2"], "client_id": cid})
    await comfy.wait_idle()
    await observer.until(
        lambda f: (
            is_msg(f, "status") and f["msg"]["data"]["status"]["exec_info"]["queue_remaining"] == 0
        ),
        2,
    )
    assert len(first.frames) == seen_by_first + 1  # nothing after the takeover but "closed"
    assert [m["type"] for m in third.texts()] == ["status"]  # nothing for P2
    hist = await get_json(http, f"{comfy.url}/history/{p2['prompt_id']}")
    assert hist[p2["prompt_id"]]["status"]["status_str"] == "success"
    await third.close()
    await observer.close()


# -- faults -----------------------------------------------------------------------


async def test_http_500_fault(comfy: ComfyUISandbox, http: aiohttp.ClientSession) -> None:
    comfy.faults.http_500["/prompt"] = 1
    comfy.faults.http_500["/system_stats"] = -1
    graph = load("builtin_quick.json")["graphs"]["quick"]
    status, _ = await submit(http, comfy, {"prompt": graph})
    assert status == 500
    status, _ = await submit(http, comfy, {"prompt": graph})
    assert status == 200
    for path in ("/system_stats", "/api/system_stats", "/system_stats"):
        async with http.get(comfy.url + path) as resp:
            assert resp.status == 500
    comfy.faults.http_500.clear()
    async with http.get(comfy.url + "/system_stats") as resp:
        assert resp.status == 200


async def test_websocket_drop(comfy: ComfyUISandbox, http: aiohttp.ClientSession) -> None:
    client = await connect(http, comfy, "dropme")
    comfy.drop_websockets()
    await client.until(lambda f: f["kind"] == "closed")
    # A fresh connection works; the history is intact.
    again = await connect(http, comfy, "dropme")
    _, body = await submit(
        http,
        comfy,
        {"prompt": load("builtin_quick.json")["graphs"]["quick"], "client_id": "dropme"},
    )
    await again.until_done(body["prompt_id"])
    await again.close()


async def test_drop_on_node_then_history_reconciles(
    comfy: ComfyUISandbox, http: aiohttp.ClientSession
) -> None:
    comfy.faults.drop_ws_on_node = "SaveImage"
    client = await connect(http, comfy, "gap")
    _, body = await submit(
        http, comfy, {"prompt": load("builtin_quick.json")["graphs"]["quick"], "client_id": "gap"}
    )
    await client.until(lambda f: f["kind"] == "closed")
    await comfy.wait_idle()
    hist = await get_json(http, f"{comfy.url}/history/{body['prompt_id']}")
    assert hist[body["prompt_id"]]["status"]["status_str"] == "success"
    assert not any(is_msg(f, "execution_success") for f in client.frames)


async def test_crash_mid_job_loses_queue_and_history(http: aiohttp.ClientSession) -> None:
    async with ComfyUISandbox(faults=Faults(crash_on_node="KSampler")) as comfy:
        from gouache.pool.workflows import load_shipped

        client = await connect(http, comfy, "crashy")
        demo = load_shipped("builtin_demo").render(prompt="first", seed=1, width=64, height=64)
        _, done = await submit(http, comfy, {"prompt": demo, "client_id": "crashy"})
        await client.until_done(done["prompt_id"])
        sdxl = load_shipped("default_sdxl").render(
            prompt="boom", seed=1, steps=3, width=64, height=64
        )
        _, body = await submit(http, comfy, {"prompt": sdxl, "client_id": "crashy"})
        await asyncio.wait_for(comfy.crashed.wait(), 10)
        await client.until(lambda f: f["kind"] == "closed")
        with pytest.raises(aiohttp.ClientConnectionError):
            async with http.get(comfy.url + "/queue"):
                pass
        port = comfy.url
        comfy.faults.crash_on_node = None
        await comfy.restart()
        assert comfy.url == port
        assert await get_json(http, comfy.url + "/queue") == {
            "queue_running": [],
            "queue_pending": [],
        }
        assert await get_json(http, comfy.url + "/history") == {}
        assert await get_json(http, f"{comfy.url}/history/{body['prompt_id']}") == {}
        # The output files on disk survive, like a real server's output folder.
        async with http.get(comfy.url + "/view?filename=gouache_demo_00001_.png") as resp:
            assert resp.status == 200
        again = await connect(http, comfy, "crashy")
        _, body = await submit(http, comfy, {"prompt": sdxl, "client_id": "crashy"})
        assert body["number"] == 0  # the counter restarted too
        await again.until_done(body["prompt_id"])
        await again.close()


async def test_a_crash_answers_nothing_from_its_first_instant(http: aiohttp.ClientSession) -> None:
    """Like a killed process: no new connection is accepted and open ones drop at once."""
    async with ComfyUISandbox() as comfy:
        client = await connect(http, comfy, "watcher")
        async with http.get(comfy.url + "/system_stats") as resp:  # a kept-alive connection
            assert resp.status == 200
        port = int(comfy.url.rsplit(":", 1)[1])
        crashing = asyncio.create_task(comfy.crash())
        await asyncio.sleep(0)  # the crash has begun, not finished
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
        await client.until(lambda f: f["kind"] == "closed")
        await crashing
        with pytest.raises(aiohttp.ClientConnectionError):
            async with http.get(comfy.url + "/system_stats"):
                pass


async def test_ksampler_progress_and_previews(http: aiohttp.ClientSession) -> None:
    from gouache.pool.workflows import load_shipped

    async with ComfyUISandbox(speed=Speed(step_delay=0.001)) as comfy:
        client = await connect(http, comfy, "k")
        graph = load_shipped("default_sdxl").render(
            prompt="a red fox", seed=7, steps=5, width=128, height=96
        )
        _, body = await submit(http, comfy, {"prompt": graph, "client_id": "k"})
        end = await client.until_done(body["prompt_id"])
        frames = client.frames[: end + 1]
        progress = [f["msg"]["data"] for f in frames if is_msg(f, "progress")]
        assert [(p["value"], p["max"], p["node"]) for p in progress] == [
            (i, 5, "3") for i in range(1, 6)
        ]
        previews = [f for f in frames if f["kind"] == "binary"]
        assert [(p["event_type"], p["format"]) for p in previews] == [(1, 1)] * 5
        assert all(p["raw"][8:10] == b"\xff\xd8" for p in previews)  # JPEG
        executing = [m["data"]["node"] for m in client.texts() if m["type"] == "executing"]
        assert executing[-1] is None
        assert set(executing[:-1]) == {"3", "4", "5", "6", "7", "8", "9"}
        hist = (await get_json(http, f"{comfy.url}/history/{body['prompt_id']}"))[body["prompt_id"]]
        image = hist["outputs"]["9"]["images"][0]
        async with http.get(comfy.url + "/view", params={"filename": image["filename"]}) as resp:
            first = await resp.read()
        # Same prompt and seed → same pixels (the cache is bypassed by a new seed and back).
        for seed in (8, 7):
            graph["3"]["inputs"]["seed"] = seed
            _, again = await submit(http, comfy, {"prompt": graph, "client_id": "k"})
            await client.until_done(again["prompt_id"], end)
        hist = (await get_json(http, f"{comfy.url}/history/{again['prompt_id']}"))[
            again["prompt_id"]
        ]
        async with http.get(
            comfy.url + "/view", params={"filename": hist["outputs"]["9"]["images"][0]["filename"]}
        ) as resp:
            assert await resp.read() == first
        await client.close()


@pytest.mark.parametrize("fixture", ["quick_and_cached.json", "errors.json"])
async def test_first_capture_replays(
    comfy: ComfyUISandbox, http: aiohttp.ClientSession, fixture: str
) -> None:
    """The first capture (TestSleep/TestSyncError era): every request, in order."""
    fx = load(fixture)
    client = await connect(http, comfy, fx["client_id"])
    ids: dict[str, str] = {}  # the capture's prompt ids -> ours
    for case in fx["http"]:
        path = case["path"]
        if case["method"] == "POST":
            if case["request"] is None:
                async with http.post(comfy.url + path, data="{not json") as resp:
                    assert resp.status == case["status"] == 500
                continue
            start = len(client.frames)
            status, body = await submit(http, comfy, case["request"])
            assert status == case["status"], case["request"]
            if status == 200:
                ids[case["body"]["prompt_id"]] = body["prompt_id"]
                await client.until_done(body["prompt_id"], start)
            else:
                assert body["error"] == case["body"]["error"]
                assert normalise_errors(body["node_errors"]) == normalise_errors(
                    case["body"]["node_errors"]
                )
            continue
        if path.startswith("/history/"):
            real_id = path.rsplit("/", 1)[1]
            ours = await get_json(http, f"{comfy.url}/history/{ids.get(real_id, real_id)}")
            if not case["body"]:
                assert ours == {}
                continue
            entry, real = ours[ids[real_id]], case["body"][real_id]
            assert sorted(entry) == sorted(real)
            assert entry["status"]["status_str"] == real["status"]["status_str"]
            assert [m[0] for m in entry["status"]["messages"]] == [
                m[0] for m in real["status"]["messages"]
            ]
            assert shape(entry["outputs"]) == shape(real["outputs"])
            continue
        async with http.get(comfy.url + path) as resp:
            assert resp.status == case["status"], path
    real_runs = split_runs(client_frames(fx))
    our_runs = split_runs(client.frames)
    assert len(our_runs) >= len(real_runs)
    for real, ours in zip(real_runs, our_runs, strict=False):
        assert_same_run(real, ours)
    await client.close()


async def test_interrupt_sleeping_node_and_delete_pending(
    comfy: ComfyUISandbox, http: aiohttp.ClientSession
) -> None:
    """queue_interrupt_delete.json: TestSleep interrupted mid-progress, a pending one deleted."""
    fx = load("queue_interrupt_delete.json")
    client = await connect(http, comfy, fx["client_id"])
    posts = [h for h in fx["http"] if h["method"] == "POST" and h["path"] == "/prompt"]
    comfy.pause_on(at("2", 5))
    ids = []
    for post in posts:
        _, body = await submit(http, comfy, post["request"])
        ids.append(body["prompt_id"])
    await comfy.wait_paused()
    queue = await get_json(http, comfy.url + "/queue")
    # Values are converted like ComfyUI does: TestSleep's seconds 4 becomes 4.0.
    assert queue["queue_running"][0][2]["2"]["inputs"]["seconds"] == 4.0
    async with http.post(comfy.url + "/queue", json={"delete": [ids[1]]}) as resp:
        assert resp.status == 200
    async with http.post(comfy.url + "/interrupt", json={}) as resp:
        assert resp.status == 200
    comfy.resume()
    await client.until_done(ids[2])
    real_runs = split_runs(client_frames(fx))
    our_runs = split_runs(client.frames)
    assert_same_run(real_runs[0], our_runs[0])
    assert_same_run(real_runs[1], our_runs[1])
    assert await get_json(http, f"{comfy.url}/history/{ids[1]}") == {}
    await client.close()


async def test_dependency_cycle_fails_at_run_time(
    comfy: ComfyUISandbox, http: aiohttp.ClientSession
) -> None:
    client = await connect(http, comfy, "cycle")
    graph = {
        "1": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "c"}},
    }
    status, body = await submit(http, comfy, {"prompt": graph, "client_id": "cycle"})
    assert status == 200
    await client.until_done(body["prompt_id"])
    error = next(m["data"] for m in client.texts() if m["type"] == "execution_error")
    assert error["exception_type"] == "graph.DependencyCycleError"
    assert error["node_id"] in graph
    await client.close()
