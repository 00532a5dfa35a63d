"""`gouache check-config` and `gouache --version`, run as the owner runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from gouache import __version__
from gouache.cli import main

ROOT = Path(__file__).resolve().parents[2]
ENV = {
    "DISCORD_BOT_TOKEN": "bot-token-value-123",
    "MJ_TOKEN_1": "user-token-one-456",
    "MJ_TOKEN_2": "user-token-two-789",
    "GOUACHE_ADMIN_TOKEN": "admin-token-000",
}


def test_example_config_passes_and_hides_secrets() -> None:
    result = CliRunner().invoke(main, ["check-config", str(ROOT / "config.example.toml")], env=ENV)
    assert result.exit_code == 0, result.output
    assert result.output.rstrip().endswith("config.example.toml: OK")
    assert "midjourney mj-1: token ***" in result.output
    for secret in ENV.values():
        assert secret not in result.output


def test_bad_config_exits_nonzero_with_one_line_per_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[discord]\ntoken = "${NOT_SET_ANYWHERE}"\napplication_id = 5\n'
        '[[midjourney.accounts]]\nname = "a"\ntoken = "t"\nguild_id = 1\nchannel_id = 1\n'
        '[[midjourney.accounts]]\nname = "b"\ntoken = "t"\nguild_id = 1\nchannel_id = 1\nconcurrency = 0\n',
        encoding="utf-8",
    )
    result = CliRunner().invoke(main, ["check-config", str(path)], env={"NOT_SET_ANYWHERE": None})
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        f"{path}: 2 problem(s)",
        "  discord.token: environment variable NOT_SET_ANYWHERE is not set",
        "  midjourney.accounts[1].concurrency: must be ≥ 1",
    ]


def test_installed_console_script_reports_its_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gouache", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **ENV},
        check=True,
    )
    assert out.stdout.strip() == f"gouache, version {__version__}"
