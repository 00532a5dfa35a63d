"""ComfyUI wire parsing against traces captured from a real ComfyUI 0.3.64."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gouache.pool.comfyui_wire import (
    MAX_REASON,
    RunProgress,
    describe_rejection,
    execution_error_detail,
    execution_error_summary,
    history_outcome,
    output_files,
    parse_preview,
    queue_place,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "comfyui"
Json = dict[str, Any]


def load(name: str) -> Json:
    data: Json = json.loads((FIXTURES / name).read_text())
    return data


def ws_frames(fixture: Json) -> list[Json]:
    ws = fixture["ws"]
    sockets = ws.values() if isinstance(ws, dict) else [ws]
    return [frame for frames in sockets for frame in frames]


def rejections() -> list[Json]:
    bodies = []
    for name in ("errors.json", "builtin_errors.json"):
        for call in load(name)["http"]:
            if call["path"] == "/prompt" and call["status"] == 400:
                bodies.append(call["body"])
    return bodies


def histories(name: str) -> list[Json]:
    entries = []
    for call in load(name)["http"]:
        if call["path"].startswith("/history/") and call["body"]:
            entries.extend(call["body"].values())
    return entries


# -- POST /prompt rejections and execution errors -------------------------------------------------


@pytest.mark.parametrize("body", rejections(), ids=lambda b: b["error"]["type"])
def test_every_captured_rejection_reads_well(body: Json) -> None:
    reason = describe_rejection(body)
    assert reason.startswith("ComfyUI rejected the workflow: ")
    assert body["error"]["message"] in reason
    for node_id, entry in body["node_errors"].items():
        assert f"node {node_id} ({entry['class_type']})" in reason
    assert "Traceback" not in reason and 'File "' not in reason
    assert len(reason) <= MAX_REASON


def test_rejection_names_the_input_and_value() -> None:
    body = next(
        b
        for b in rejections()
        if b["node_errors"].get("1", {}).get("class_type") == "CheckpointLoaderSimple"
    )
    assert describe_rejection(body) == (
        "ComfyUI rejected the workflow: Prompt outputs failed validation — node 1 "
        "(CheckpointLoaderSimple): Value not in list - ckpt_name: "
        "'sd_xl_base_1.0.safetensors' not in []"
    )
    unknown = next(b for b in rejections() if "NoSuchNode" in b["error"]["message"])
    assert describe_rejection(unknown) == (
        "ComfyUI rejected the workflow: Cannot execute because node NoSuchNode does not exist. "
        "(Node ID '#1')"
    )


@pytest.mark.parametrize("body", [None, "text", [], {"error": 5}, {"node_errors": {"1": 3}}])
def test_odd_rejections_still_give_a_reason(body: object) -> None:
    assert describe_rejection(body).startswith("ComfyUI rejected the workflow")


def test_huge_rejection_is_clipped() -> None:
    errors = [{"message": "bad", "details": "x" * 200}] * 50
    body = {"error": {"message": "m"}, "node_errors": {"1": {"class_type": "A", "errors": errors}}}
    reason = describe_rejection(body)
    assert len(reason) == MAX_REASON and reason.endswith("…")


def captured_execution_errors() -> list[Json]:
    return [
        f["msg"]["data"]
        for name in ("errors.json", "builtin_errors.json")
        for f in ws_frames(load(name))
        if f.get("kind") == "text" and f["msg"]["type"] == "execution_error"
    ]


def test_execution_errors_give_members_one_short_line_and_owners_everything() -> None:
    captured = captured_execution_errors()
    assert len(captured) == 2
    for data in captured:
        assert data["traceback"] and "/srv/ComfyUI" in "".join(data["traceback"])
        summary = execution_error_summary(data)
        assert "\n" not in summary and "/" not in summary and len(summary) <= 100
        assert data["node_type"] in summary
        detail = execution_error_detail(data)
        assert data["exception_message"].strip() in detail
        assert data["traceback"][-1].strip() in detail  # the server's paths, for the owner
    sync_error, out_of_memory = captured
    assert execution_error_summary(sync_error) == (
        "The image server failed in TestSyncError (RuntimeError)."
    )
    assert execution_error_summary(out_of_memory) == (
        "The image server ran out of memory in EmptyImage."
    )
    assert execution_error_summary({}) == "The image server failed in a node."
    assert execution_error_detail({}) == "ComfyUI failed at node ? (?): unknown error"


def test_execution_error_summary_keeps_paths_and_lines_out_of_odd_names() -> None:
    data = {
        "node_type": "/home/me/custom_nodes/Evil\nNode",
        "exception_type": "torch.cuda.CudaError",
        "exception_message": "CUDA error: /usr/lib/x.so\nmore",
    }
    assert execution_error_summary(data) == "The image server failed in Evil (CudaError)."


# -- binary frames ---------------------------------------------------------------------------------


def captured_binary(name: str) -> list[Json]:
    return [f for f in ws_frames(load(name)) if f.get("kind") == "binary" and "full_hex" in f]


def test_captured_preview_frames_give_their_png() -> None:
    legacy = [f for f in captured_binary("builtin_quick.json") if f["event_type"] == 1]
    assert legacy
    for frame in legacy:
        parsed = parse_preview(bytes.fromhex(frame["full_hex"]))
        assert parsed is not None
        image, prompt_id = parsed
        assert image.startswith(b"\x89PNG\r\n\x1a\n") and prompt_id is None
        assert len(image) == frame["image"]["bytes"]


def test_captured_metadata_frames_name_their_prompt() -> None:
    frames = [f for f in captured_binary("builtin_preview_metadata.json") if f["event_type"] == 4]
    assert frames
    for frame in frames:
        parsed = parse_preview(bytes.fromhex(frame["full_hex"]))
        assert parsed is not None
        image, prompt_id = parsed
        assert prompt_id == frame["metadata"]["prompt_id"]
        assert image.startswith(b"\x89PNG") and len(image) == frame["image"]["bytes"]


def test_progress_text_and_unknown_frames_are_ignored() -> None:
    text = [f for f in captured_binary("builtin_quick.json") if f["event_type"] == 3]
    assert text and all(parse_preview(bytes.fromhex(f["full_hex"])) is None for f in text)
    assert parse_preview(b"") is None
    assert parse_preview(struct.pack(">II", 1, 2)) is None  # no image bytes
    assert parse_preview(struct.pack(">II", 9, 2) + b"data") is None
    assert parse_preview(struct.pack(">II", 4, 999) + b"{}") is None  # header longer than frame
    assert parse_preview(struct.pack(">II", 4, 3) + b"{{{img") is None  # broken JSON


@given(st.binary(max_size=64))
def test_parse_preview_never_raises(frame: bytes) -> None:
    parse_preview(frame)


# -- /queue and /history ---------------------------------------------------------------------------


def test_queue_place_on_captured_snapshots() -> None:
    snapshots = [c["body"] for c in load("builtin_rapid3.json")["http"] if c["path"] == "/queue"]
    first = snapshots[0]
    running_id = first["queue_running"][0][1]
    pending_ids = [row[1] for row in sorted(first["queue_pending"], key=lambda r: r[0])]
    assert queue_place(first, running_id) == ("running", 0)
    assert queue_place(first, pending_ids[0]) == ("pending", 1)
    assert queue_place(first, pending_ids[1]) == ("pending", 2)
    assert queue_place(snapshots[-1], running_id) == ("absent", 0)


def test_queue_place_orders_pending_by_number_not_by_list_order() -> None:
    queue = {
        "queue_running": [],
        "queue_pending": [[7, "c", {}, {}, []], [-3, "front", {}, {}, []], [5, "b", {}, {}, []]],
    }
    assert queue_place(queue, "front") == ("pending", 0)
    assert queue_place(queue, "b") == ("pending", 1)
    assert queue_place(queue, "c") == ("pending", 2)
    assert queue_place({"queue_running": "junk", "queue_pending": [[1]]}, "x") == ("absent", 0)


def test_history_outcomes_of_captured_runs() -> None:
    success = histories("builtin_quick.json")[0]
    assert history_outcome(success)[0] == "success"
    interrupted = next(
        e
        for e in histories("builtin_interrupt_delete.json")
        if e["status"]["status_str"] == "error"
    )
    kind, data = history_outcome(interrupted)
    assert kind == "interrupted" and data["node_id"] == "12"
    kind, data = history_outcome(histories("errors.json")[0])
    assert kind == "error" and data["node_type"] == "TestSyncError"
    assert history_outcome({"status": {"status_str": "error", "messages": []}})[0] == "error"
    assert history_outcome({"outputs": {}})[0] == "success"  # servers older than `status`


def test_output_files_prefer_saved_images_over_temp_previews() -> None:
    outputs = histories("builtin_quick.json")[0]["outputs"]
    files = output_files(outputs)
    assert files == [
        {"filename": "builtin_quick_00001_.png", "subfolder": "", "type": "output"},
        {"filename": "builtin_quick_00002_.png", "subfolder": "", "type": "output"},
    ]
    only_temp = {"4": outputs["4"], "7": outputs["7"]}
    assert [f["type"] for f in output_files(only_temp)] == ["temp", "temp"]
    assert output_files({"7": {"text": ["64"]}, "x": "junk", "y": {"images": [5, {}]}}) == []


# -- progress over a graph -------------------------------------------------------------------------


def test_progress_weighs_sampler_steps_and_skips_cached_nodes() -> None:
    progress = RunProgress(frozenset({"1", "2", "3", "4"}))
    progress.cached.add("1")
    assert progress.node_started("2") == 0
    assert progress.node_started("3") == 33  # node 2 done: 1 of 3 running nodes
    for step in range(1, 11):
        progress.tick("3", step, 10)  # node 3 now weighs 10
    assert progress.percent == 91  # (1 + 10) / (1 + 10 + 1)
    assert progress.node_started("4") == 91
    assert progress.tick("4", 1, 1) == 99  # never 100 before the images exist


@given(
    st.lists(
        st.tuples(st.sampled_from("abcde"), st.integers(0, 30), st.integers(0, 30)), max_size=60
    )
)
def test_progress_never_goes_back_and_stays_below_100(events: list[tuple[str, int, int]]) -> None:
    progress = RunProgress(frozenset("abc"))
    last = 0
    for node, value, maximum in events:
        percent = progress.tick(node, value, maximum) if maximum else progress.node_started(node)
        assert last <= percent <= 99
        last = percent
