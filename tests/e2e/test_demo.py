"""`gouache demo --scenario smoke` runs headless and passes, as CI and a newcomer run it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest


def _env(**extra: str) -> dict[str, str]:
    """A bare environment, keeping PYTHONPATH so the code under test is the one that runs."""
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", **extra}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def run_smoke(*extra: str) -> subprocess.CompletedProcess[str]:
    """`gouache demo --scenario smoke` on free ports, as a newcomer's shell runs it."""
    command = ["demo", "--scenario", "smoke", *extra, "--port", "0", "--admin-port", "0"]
    return subprocess.run(
        [sys.executable, "-m", "gouache", *command],
        capture_output=True,
        text=True,
        timeout=200,
        env=_env(COLUMNS="160"),
    )


@pytest.mark.timeout(240)
def test_smoke_scenario_exits_zero_with_every_step_as_expected() -> None:
    out = run_smoke()
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert f"{len(SMOKE_STEPS)}/{len(SMOKE_STEPS)} steps as expected: PASS" in out.stdout
    assert "missing permission" in out.stdout
    assert "Traceback" not in out.stderr


SMOKE_STEPS = [
    "imagine on Midjourney",
    "U2 upscale",
    "V1 variation",
    "Chinese prompt on ComfyUI",
    "cancel",
    "imagine 1/3 of the daily limit",
    "imagine 2/3 of the daily limit",
    "imagine 3/3 of the daily limit",
    "over the daily limit",
    "missing permission",
    "VIP imagine",
    "image prompt on Midjourney",
    "blend on Midjourney",
    "describe on Midjourney",
    "comfyui img2img",
    "bad image refused",
    "channel default (#niji: Midjourney, niji)",
    "model autocomplete",
    "requester only (#niji buttons)",
    "nsfw prompt outside an NSFW channel",
    "nsfw channel (#after-dark) allows it",
    "vary strong",
    "upscale creative",
    "zoom out 2x",
    "custom zoom",
    "pan left",
    "custom zoom out of range",
    "make square",
    "remix",
    "comfyui upscale",
    "comfyui zoom out",
]


@pytest.mark.timeout(240)
def test_smoke_scenario_json_prints_one_object_per_step_and_nothing_else() -> None:
    out = run_smoke("--json")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    steps = [json.loads(line) for line in out.stdout.splitlines()]
    assert [s["step"] for s in steps] == SMOKE_STEPS
    for step in steps:
        assert set(step) == {"step", "member", "expected", "got", "ok", "detail"}
        assert step["ok"] is True and step["got"] == step["expected"], step
    refused = next(s for s in steps if s["step"] == "missing permission")
    assert refused["member"] == "erin" and "Attach Files" in refused["detail"]


@pytest.mark.timeout(120)
def test_crowd_demo_prints_where_to_look_serves_the_crowd_and_stops_on_ctrl_c(
    tmp_path: object,
) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gouache",
            "demo",
            "--port",
            "0",
            "--admin-port",
            "0",
            "--rate",
            "120",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(COLUMNS="200"),
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        for line in proc.stdout:  # blocks until the demo prints; the timeout mark bounds it
            lines.append(line)
            if "Ctrl-C stops it." in line:
                break
        text = "".join(lines)
        assert "/viewer/" in text and "gouache pool status --watch -c " in text
        config = next(w for w in text.split() if w.endswith("config.toml"))
        # The owner's view of the running demo: the crowd's jobs run and end, and show up
        # in the pool's counters. Each look is a `gouache pool status` run, as the owner's.
        deadline = time.monotonic() + 80
        while True:
            status = json.loads(
                subprocess.run(
                    [sys.executable, "-m", "gouache", "pool", "status", "--json", "-c", config],
                    capture_output=True,
                    text=True,
                    timeout=30,
                    check=True,
                ).stdout
            )
            succeeded = status["jobs_today"]["by_state"].get("succeeded", 0)
            done = sum(int(w["done_today"]) for w in status["workers"])
            if (succeeded >= 3 and done >= 3) or time.monotonic() > deadline:
                break
        assert succeeded >= 3 and done >= 3, status
        assert {w["name"] for w in status["workers"]} >= {"mj-1", "comfy-2"}
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, "".join(lines) + rest
    assert "Traceback" not in rest
