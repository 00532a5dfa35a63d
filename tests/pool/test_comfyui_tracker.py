"""`RunTracker` fed message scripts captured from a real ComfyUI 0.3.64, checked effect by effect.

Each table row is one frame of a capture (``tests/fixtures/comfyui``) and the
effects the tracker returns for it, written ``kind`` or ``kind detail``:
``heard``, ``started``, ``progress <percent>`` (``+preview`` with an image),
``finished <number of files>``, ``ended``, ``failed <member's line>``,
``interrupted``, ``queue``, ``unknown``. The prompts tracked are those the
capture's client submitted (``POST /prompt`` answered 200), with their graphs'
nodes. Like the worker, the harness ends a prompt once it has finished,
failed or been interrupted (what follows about it is ignored), and between
two sockets it tells the tracker the link was lost.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from gouache.jobs import ErrorCode
from gouache.pool.comfyui_tracker import (
    Effect,
    Ended,
    Errored,
    Finished,
    Heard,
    Interrupted,
    Progressed,
    QueueChanged,
    RunTracker,
    Started,
    Unknown,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "comfyui"
Json = dict[str, Any]
Frame = Json | bytes
Row = tuple[str, str]


def load(name: str) -> Json:
    data: Json = json.loads((FIXTURES / name).read_text())
    return data


def submitted(fixture: Json) -> list[tuple[str, frozenset[str]]]:
    """The prompts the capture's client got queued: (prompt id, graph node ids)."""
    return [
        (call["body"]["prompt_id"], frozenset(call["request"]["prompt"]))
        for call in fixture["http"]
        if call["path"] == "/prompt" and call["status"] == 200
    ]


def frames(fixture: Json, socket: str | None) -> list[Frame]:
    """A socket's text messages and binary frames, in order.

    Frames captured whole (``full_hex``) are used as they are; for the others
    only the head was kept, and the rest is padded to the captured length.
    """
    ws = fixture["ws"]
    out: list[Frame] = []
    for frame in ws[socket] if socket is not None else ws:
        if frame["kind"] == "text":
            out.append(frame["msg"])
        elif frame["kind"] == "binary":
            if "full_hex" in frame:
                out.append(bytes.fromhex(frame["full_hex"]))
            else:
                head = bytes.fromhex(frame["head_hex"])
                out.append(head + bytes(frame["len"] - len(head)))
    return out


def label(frame: Frame) -> str:
    if isinstance(frame, bytes):
        return f"binary {struct.unpack_from('>I', frame)[0]}"
    kind, data = frame["type"], frame["data"]
    if kind == "executing":
        return f"executing {data.get('node')}" + ("" if "prompt_id" in data else " (bare)")
    if kind == "progress":
        return f"progress {data['value']}/{data['max']}"
    return str(kind)


def show(effect: Effect) -> str:
    match effect:
        case Heard():
            return "heard"
        case Started():
            return "started"
        case Progressed(percent=percent, preview=preview):
            return f"progress {percent}" + (" +preview" if preview else "")
        case Finished(files=files):
            return f"finished {len(files)}"
        case Ended():
            return "ended"
        case Errored(failed=failed):
            return f"failed {failed.message}"
        case Interrupted():
            return "interrupted"
        case QueueChanged():
            return "queue"
        case Unknown():
            return "unknown"
    raise AssertionError(effect)


def feed(tracker: RunTracker, frame: object) -> list[Effect]:
    """One frame in; its effects out, ending the prompt on a terminal one as the worker does."""
    effects = tracker.receive_binary(frame) if isinstance(frame, bytes) else tracker.receive(frame)
    for effect in effects:
        if isinstance(effect, Finished | Errored | Interrupted):
            tracker.end(effect.prompt_id)
    return effects


def play(name: str, sockets: list[str | None], *, track: bool = True) -> list[Row]:
    fixture = load(name)
    tracker = RunTracker()
    if track:
        for prompt_id, nodes in submitted(fixture):
            tracker.track(prompt_id, nodes, gap=False)
    rows: list[Row] = []
    for i, socket in enumerate(sockets):
        if i:
            tracker.disconnected()
        for frame in frames(fixture, socket):
            rows.append((label(frame), ", ".join(show(e) for e in feed(tracker, frame))))
    return rows


# -- the scripts ---------------------------------------------------------------------------------

# A runtime error in node 2 of 3: one line for the member; `executing None` comes after
# the prompt was ended, so nothing more happens.
ERRORS = [
    ("status", "queue"),
    ("status", "queue"),
    ("status", "queue"),
    ("execution_start", "heard, started, progress 0"),
    ("execution_cached", "heard"),
    ("progress_state", "heard"),
    ("executing 1", "heard, progress 0"),
    ("progress_state", "heard"),
    ("progress_state", "heard"),
    ("executing 2", "heard, progress 33"),
    ("execution_error", "heard, failed The image server failed in TestSyncError (RuntimeError)."),
    ("status", "queue"),
    ("executing None", ""),
]

# Two runs of a 4-node graph: the first runs every node (25 % a node; the sampler-like
# node 4 reports 2 ticks, so it weighs 2 and the percentage holds at 75 until it moves);
# the second finds nodes 1-3 cached, so node 4 alone is the whole job.
QUICK_AND_CACHED = [
    ("status", "queue"),
    ("status", "queue"),
    ("status", "queue"),
    ("execution_start", "heard, started, progress 0"),
    ("execution_cached", "heard"),
    ("progress_state", "heard"),
    ("executing 1", "heard, progress 0"),
    ("progress_state", "heard"),
    ("progress_state", "heard"),
    ("executing 2", "heard, progress 25"),
    ("progress_state", "heard"),
    ("progress_state", "heard"),
    ("executing 3", "heard, progress 50"),
    ("executed", "heard"),
    ("progress_state", "heard"),
    ("progress_state", "heard"),
    ("executing 4", "heard, progress 75"),
    ("progress_state", "heard"),
    ("progress 0/2", "heard, progress 75"),
    ("binary 1", "heard, progress 75 +preview"),
    ("progress_state", "heard"),
    ("progress 1/2", "heard, progress 80"),
    ("binary 1", "heard, progress 80 +preview"),
    ("progress_state", "heard"),
    ("execution_success", "heard, finished 2"),
    ("status", "queue"),
    ("executing None", ""),
    ("status", "queue"),
    ("status", "queue"),
    ("execution_start", "heard, started, progress 0"),
    ("execution_cached", "heard"),
    ("executed", "heard"),
    ("progress_state", "heard"),
    ("progress_state", "heard"),
    ("executing 4", "heard, progress 0"),
    ("progress_state", "heard"),
    ("progress 0/2", "heard, progress 0"),
    ("binary 1", "heard, progress 0 +preview"),
    ("progress_state", "heard"),
    ("progress 1/2", "heard, progress 50"),
    ("binary 1", "heard, progress 50 +preview"),
    ("progress_state", "heard"),
    ("execution_success", "heard, finished 2"),
    ("status", "queue"),
    ("executing None", ""),
]

# A second socket with our client id takes over during node 10 (a bare `executing`
# without prompt id is all it says about the past: nobody is known to run after a
# gap, so it is ignored); a third opens after the prompt ended and hears nothing.
RECONNECT = [
    ("status", "queue"),
    ("status", "queue"),
    ("status", "queue"),
    ("execution_start", "heard, started, progress 0"),
    ("execution_cached", "heard"),
    ("progress_state", "heard"),
    ("executing 1", "heard, progress 0"),
    ("progress_state", "heard"),
    ("progress_state", "heard"),
    ("executing 10", "heard, progress 20"),
    # disconnected
    ("status", "queue"),
    ("executing 10 (bare)", ""),
    ("progress_state", "heard"),
    ("progress_state", "heard"),
    ("executing 11", "heard, progress 40"),
    # disconnected
    ("status", "queue"),
]

# Previews with metadata (event type 4) name their prompt; a progress-text frame
# (event type 3) is not a preview. 7 nodes; node 5 reports 2 ticks.
PREVIEW_METADATA = [
    ("status", "queue"),
    ("feature_flags", ""),
    ("status", "queue"),
    ("status", "queue"),
    ("execution_start", "heard, started, progress 0"),
    ("execution_cached", "heard"),
    ("progress_state", "heard"),
    ("executing 1", "heard, progress 0"),
    ("progress_state", "heard"),
    ("progress_state", "heard"),
    ("executing 2", "heard, progress 14"),
    ("progress_state", "heard"),
    ("progress_state", "heard"),
    ("executing 3", "heard, progress 28"),
    ("executed", "heard"),
    ("progress_state", "heard"),
    ("progress_state", "heard"),
    ("executing 5", "heard, progress 42"),
    ("progress_state", "heard"),
    ("binary 4", "heard, progress 42 +preview"),
    ("progress 0/2", "heard, progress 42"),
    ("progress_state", "heard"),
    ("binary 4", "heard, progress 42 +preview"),
    ("progress 1/2", "heard, progress 50"),
    ("progress_state", "heard"),
    ("progress_state", "heard"),
    ("executing 4", "heard, progress 62"),
    ("executed", "heard"),
    ("progress_state", "heard"),
    ("progress_state", "heard"),
    ("executing 6", "heard, progress 75"),
    ("binary 3", ""),
    ("progress_state", "heard"),
    ("progress_state", "heard"),
    ("executing 7", "heard, progress 87"),
    ("executed", "heard"),
    ("progress_state", "heard"),
    ("execution_success", "heard, finished 2"),
    ("status", "queue"),
    ("executing None", ""),
]

# A prompt submitted without client id: the server broadcasts only progress,
# progress_state and binary frames. The first `progress` starts it.
NO_CLIENT_ID = [
    ("status", "queue"),
    ("status", "queue"),
    ("status", "queue"),
    ("progress_state", "heard"),
    ("progress_state", "heard"),
    ("progress_state", "heard"),
    ("progress_state", "heard"),
    ("progress_state", "heard"),
    ("progress_state", "heard"),
    ("progress_state", "heard"),
    ("progress_state", "heard"),
    ("progress 0/2", "heard, started, progress 0"),
    ("binary 1", "heard, progress 0 +preview"),
    ("progress_state", "heard"),
    ("progress 1/2", "heard, progress 12"),
    ("binary 1", "heard, progress 12 +preview"),
    ("progress_state", "heard"),
    ("progress_state", "heard"),
    ("progress_state", "heard"),
    ("progress_state", "heard"),
    ("binary 3", ""),
    ("progress_state", "heard"),
    ("progress_state", "heard"),
    ("progress_state", "heard"),
    ("status", "queue"),
]


@pytest.mark.parametrize(
    ("name", "sockets", "expected"),
    [
        ("errors.json", [None], ERRORS),
        ("quick_and_cached.json", [None], QUICK_AND_CACHED),
        ("builtin_reconnect.json", ["first", "second", "third"], RECONNECT),
        ("builtin_preview_metadata.json", ["client"], PREVIEW_METADATA),
        ("builtin_no_client_id.json", ["observer"], NO_CLIENT_ID),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_captured_script(name: str, sockets: list[str | None], expected: list[Row]) -> None:
    rows = play(name, sockets)
    assert len(rows) == len(expected)
    for i, (got, want) in enumerate(zip(rows, expected, strict=True)):
        assert got == want, f"frame {i}"


def test_prompts_of_others_are_unknown() -> None:
    """The same broadcast seen by a client that submitted nothing: every prompt is someone else's."""
    rows = play("builtin_no_client_id.json", ["observer"], track=False)
    named = [want for (_, want) in NO_CLIENT_ID if want.startswith("heard")]
    unknown = [got for (_, got) in rows if got == "unknown"]
    assert len(unknown) == len(named) > 0
    assert {got for (_, got) in rows} == {"queue", "unknown", ""}


# -- cases the captures do not show ----------------------------------------------------------

P = "prompt-1"
IMAGE = {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]}
PREVIEW = struct.pack(">II", 1, 2) + b"\x89PNG"


def msg(kind: str, **data: Any) -> Json:
    return {"type": kind, "data": data}


#: name → (tracked with a gap?, steps). A step is a frame and the effects it gives, or a
#: call on the tracker ("disconnected", "end", "forget", "rename") and "".
EDGE_CASES: dict[str, tuple[bool, list[tuple[object, str]]]] = {
    "after a gap success waits for /history (executed may be missing)": (
        True,
        [
            (msg("executed", node="9", output=IMAGE, prompt_id=P), "heard"),
            (msg("execution_success", prompt_id=P), "heard"),
            (msg("executing", node=None, prompt_id=P), "heard, ended"),
        ],
    ),
    "a gap while it runs: the same": (
        False,
        [
            (msg("execution_start", prompt_id=P), "heard, started, progress 0"),
            (msg("executed", node="9", output=IMAGE, prompt_id=P), "heard"),
            ("disconnected", ""),
            (msg("execution_success", prompt_id=P), "heard"),
        ],
    ),
    "success with nothing executed over the socket waits for /history": (
        False,
        [(msg("execution_success", prompt_id=P), "heard")],
    ),
    "outputs without images finish with no files (the worker fails the job)": (
        False,
        [
            (msg("executed", node="7", output={"text": ["64"]}, prompt_id=P), "heard"),
            (msg("execution_success", prompt_id=P), "heard, finished 0"),
        ],
    ),
    "interrupted, then silence about it": (
        False,
        [
            (msg("execution_start", prompt_id=P), "heard, started, progress 0"),
            (msg("execution_interrupted", prompt_id=P, node_id="9"), "heard, interrupted"),
            (msg("progress", value=1, max=2, node="9", prompt_id=P), ""),
            (PREVIEW, ""),
        ],
    ),
    "started once; a bare executing belongs to the running prompt": (
        False,
        [
            (msg("execution_start", prompt_id=P), "heard, started, progress 0"),
            (msg("executing", node="9", prompt_id=P), "heard, progress 0"),
            (msg("executing", node="10"), "heard, progress 50"),
            (PREVIEW, "heard, progress 50 +preview"),
        ],
    ),
    "after a disconnect nobody is known to run": (
        False,
        [
            (msg("executing", node="9", prompt_id=P), "heard, started, progress 0"),
            ("disconnected", ""),
            (msg("executing", node="10"), ""),
            (PREVIEW, ""),
        ],
    ),
    "ended, then forgotten": (
        False,
        [
            ("end", ""),
            (msg("executing", node="9", prompt_id=P), ""),
            ("forget", ""),
            (msg("executing", node="9", prompt_id=P), "unknown"),
            (PREVIEW, "unknown"),  # the current prompt is still that one
        ],
    ),
    "the server chose another prompt id": (
        False,
        [
            ("rename", ""),
            (msg("execution_start", prompt_id=P + "-server"), "heard, started, progress 0"),
            (msg("execution_start", prompt_id=P), "unknown"),
        ],
    ),
    "what is not about a prompt": (
        False,
        [
            (msg("status", status={"exec_info": {"queue_remaining": 2}}), "queue"),
            ({"type": "status", "data": None}, ""),
            ([1, 2], ""),
            ("text", ""),
            (msg("feature_flags", supports_preview_metadata=True), ""),
            (msg("executed", node="1", output=IMAGE), ""),
            (struct.pack(">II", 3, 1) + b"9width: 64", ""),  # progress text, not a preview
            (PREVIEW, ""),  # a preview while nothing runs
            (b"\x00\x00", ""),
        ],
    ),
}


@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_edge_case(case: str) -> None:
    gap, steps = EDGE_CASES[case]
    tracker = RunTracker()
    tracker.track(P, frozenset({"9", "10"}), gap=gap)
    for i, (step, want) in enumerate(steps):
        if step == "disconnected":
            tracker.disconnected()
        elif step == "end":
            tracker.end(P)
        elif step == "forget":
            tracker.forget(P)
            assert P not in tracker
        elif step == "rename":
            tracker.rename(P, P + "-server")
            assert P not in tracker and P + "-server" in tracker
        else:
            effects = feed(tracker, step)
            assert ", ".join(show(e) for e in effects) == want, f"step {i}"
            continue
        assert want == "", f"step {i}"


def test_an_execution_error_is_one_line_for_the_member_and_redacted_detail() -> None:
    fixture = load("errors.json")
    error = next(
        f["msg"]
        for f in fixture["ws"]
        if f["kind"] == "text" and f["msg"]["type"] == "execution_error"
    )
    prompt_id = error["data"]["prompt_id"]
    tracker = RunTracker(redact=lambda text: text.replace("/srv/ComfyUI", "***"))
    tracker.track(prompt_id, frozenset({"1", "2", "3"}), gap=False)
    effects = tracker.receive(error)
    assert [type(e) for e in effects] == [Heard, Errored]
    failed = effects[1].failed  # type: ignore[union-attr]
    assert failed.code == ErrorCode.WORKER_ERROR and not failed.retryable
    assert failed.message == "The image server failed in TestSyncError (RuntimeError)."
    assert failed.detail is not None and "Intentional sync execution error" in failed.detail
    assert "***/execution.py" in failed.detail and "/srv/ComfyUI" not in failed.detail


def test_a_forgotten_prompt_after_a_gap_is_not_in_gap() -> None:
    tracker = RunTracker()
    tracker.track(P, frozenset({"1"}), gap=False)
    assert not tracker.in_gap(P)
    tracker.disconnected()
    assert tracker.in_gap(P)
    tracker.forget(P)
    assert not tracker.in_gap(P) and not tracker.in_gap("never")
