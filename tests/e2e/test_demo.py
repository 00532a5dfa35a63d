"""`gouache demo --scenario smoke` runs headless and passes, as CI and a newcomer run it."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.timeout(240)
def test_smoke_scenario_exits_zero_with_every_step_as_expected() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gouache", "demo", "--scenario", "smoke", "--port", "0", "--admin-port", "0"],
        capture_output=True,
        text=True,
        timeout=200,
        env={"COLUMNS": "160", "PATH": "/usr/bin:/bin", "HOME": "/tmp"},
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "10/10 steps as expected: PASS" in out.stdout
    assert "Traceback" not in out.stderr
