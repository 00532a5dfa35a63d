"""The viewer's "More" panel reads as sentences, not dictionaries."""

from __future__ import annotations

from gouache_sandbox.discord.status_text import describe, more_lines


def test_gouaches_status_fields_read_as_a_person_would() -> None:
    status = {
        "process": "host-1",
        "workers": [{"name": "mj-1"}],
        "queue": {"depth": 3},
        "summary": {
            "ready": 4,
            "total": 4,
            "in_flight": 1,
            "capacity": 8,
            "queue_depth": 3,
            "jobs_today": 12,
            "errors_last_hour": 0,
        },
        "in_flight": {"this_process": 1, "all": 3},
        "jobs": {"queued": 3, "submitted": 0, "running": 1},
        "jobs_today": {"by_state": {"succeeded": 10, "failed": 2, "canceled": 0}},
        "errors_last_hour": [],
        "channels": [],
    }
    lines = dict(more_lines(status))
    assert "workers" not in lines and "queue" not in lines  # the other cards show those
    assert lines["summary"] == (
        "4 of 4 workers ready · 1 of 8 slots busy · 3 waiting · 12 jobs today"
        " · no errors in the last hour"
    )
    assert lines["in flight"] == "1 in this process, 3 in all"
    assert lines["jobs"] == "3 queued, 1 running"
    assert lines["jobs today"] == "10 succeeded, 2 failed"
    assert lines["errors last hour"] == "none"
    assert lines["channels"] == "every channel can be served"
    assert lines["process"] == "host-1"
    assert not any("{" in text or "items" in text for text in lines.values())


def test_lists_and_unknown_fields() -> None:
    assert describe("errors_last_hour", [{"message": "gpu-1 timed out"}, {}]) == (
        "2 errors; latest: gpu-1 timed out"
    )
    assert describe("channels", [{"channel_id": "1"}]) == "1 channel gouache cannot serve"
    assert describe("things", [1, 2, 3]) == "3 entries"
    assert describe("mystery", {"a": 0, "b_c": 2}) == "2 b c"
    assert describe("ratio", 0.333) == "0.33"
