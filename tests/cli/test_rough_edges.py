"""What a newcomer meets first: a busy demo port and a missing config path, said plainly."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"


def gouache(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC), "GOUACHE_ADMIN_URL": "", "GOUACHE_ADMIN_TOKEN": ""}
    return subprocess.run(
        [sys.executable, "-m", "gouache", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=90,
    )


@pytest.mark.parametrize(
    ("option", "what"), [("--port", "Discord sandbox"), ("--admin-port", "admin API")]
)
def test_demo_on_a_busy_port_says_which_and_how_to_pick_another(
    tmp_path: Path, option: str, what: str
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        other = "--admin-port" if option == "--port" else "--port"
        out = gouache("demo", "--scenario", "smoke", option, str(port), other, "0", cwd=tmp_path)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    line = out.stderr.strip().splitlines()[-1]
    assert f"port {port}" in line and what in line and f"{option} N" in line


def test_pool_status_with_a_missing_config_names_the_path_once(tmp_path: Path) -> None:
    out = gouache("pool", "status", "-c", "missing.toml", cwd=tmp_path)
    assert out.returncode != 0
    assert out.stderr.count("missing.toml") == 1, out.stderr
    assert "Traceback" not in out.stderr
