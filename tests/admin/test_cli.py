"""The owner commands through click's CliRunner against a live admin API.

The server runs on the test's event loop; each command runs in a thread
(`asyncio.to_thread`), as a separate `gouache` process would.
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from rich.console import Console

from gouache.admin import cli as admin_cli
from gouache.admin.server import job_view
from gouache.jobs import Job, JobState
from gouache_sandbox.discord.permissions import P

from .conftest import TOKEN, Admin, AdminFactory


@click.group()
def main() -> None:
    """A stand-in for the gouache command group."""


admin_cli.register(main)


async def run(admin: Admin | None, *args: str, env: dict[str, str] | None = None) -> Result:
    """``gouache ARGS`` pointed at ``admin`` (URL and token from the environment by default)."""
    environment = {"GOUACHE_ADMIN_URL": "", "GOUACHE_ADMIN_TOKEN": ""}
    if admin is not None:
        environment = {"GOUACHE_ADMIN_URL": admin.url, "GOUACHE_ADMIN_TOKEN": TOKEN}
    environment.update(env or {})
    runner = CliRunner()
    return await asyncio.to_thread(
        runner.invoke, main, list(args), env=environment, catch_exceptions=False
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_pool_status_table_json_and_watch(make_admin: AdminFactory) -> None:
    admin = await make_admin({"instant-a": 2, "instant-b": 1})
    job = await admin.imagine_job(admin.world.member("kim"), "status please")
    await admin.wait_state(job.id, JobState.SUCCEEDED)

    result = await run(admin, "pool", "status")
    assert result.exit_code == 0, result.output
    assert "instant-a" in result.output and "instant-b" in result.output
    assert (
        "2/2 workers ready · 0/3 slots busy · queue 0 · 1 jobs today (1 succeeded)" in result.output
    )

    result = await run(admin, "pool", "status", "--json")
    data = json.loads(result.stdout)
    assert [w["name"] for w in data["workers"]] == ["instant-a", "instant-b"]
    assert data["summary"]["jobs_today"] == 1

    await admin.ok("POST", "/workers/instant-b/disable", {"reason": "testing"})
    result = await run(admin, "pool", "status", "--watch", "--interval", "0.2", "--refreshes", "2")
    assert result.exit_code == 0, result.output
    assert "disabled (testing)" in result.output and "updated" in result.output

    result = await run(admin, "pool", "status", "--watch", "--json")
    assert result.exit_code == 2 and "--watch and --json" in result.output


async def test_pool_switches(make_admin: AdminFactory) -> None:
    admin = await make_admin({"instant-a": 1, "instant-b": 1})
    result = await run(admin, "pool", "disable", "instant-a", "--reason", "new GPU")
    assert result.exit_code == 0 and "instant-a: disabled (new GPU)" in result.output
    assert admin.world.app.pool.snapshot()[0].state.value == "disabled"
    result = await run(admin, "pool", "drain", "instant-b")
    assert result.exit_code == 0 and "draining" in result.output
    result = await run(admin, "pool", "enable", "instant-a")
    assert result.exit_code == 0 and "enabled, now ready" in result.output
    states = [s.state.value for s in admin.world.app.pool.snapshot()]
    assert states == ["ready", "draining"]

    result = await run(admin, "pool", "disable", "ghost")
    assert result.exit_code == 1
    assert result.stderr.strip() == "Error: No worker named 'ghost' (known: instant-a, instant-b)."


async def test_users_jobs_and_queue(make_admin: AdminFactory) -> None:
    admin = await make_admin({"instant-a": 1})
    worker = admin.workers["instant-a"]
    lee = admin.world.member("lee")

    result = await run(admin, "user", "limit", str(lee.id), "5")
    assert result.exit_code == 0 and "daily limit 5" in result.output
    result = await run(admin, "user", "tier", str(lee.id), "vip")
    assert result.exit_code == 0 and "tier vip" in result.output
    result = await run(admin, "user", "tier", str(lee.id), "platinum")
    assert result.exit_code == 1 and "Unknown tier 'platinum'" in result.stderr
    result = await run(admin, "user", "limit", str(lee.id))
    assert result.exit_code == 2 and "LIMIT or --reset" in result.output
    result = await run(admin, "user", "ban", str(lee.id), "--hours", "1", "--reason", "flood")
    assert result.exit_code == 0 and "banned until" in result.output
    result = await run(admin, "user", "show", str(lee.id))
    assert result.exit_code == 0
    for text in ("vip (override)", "5 (override)", "flood"):
        assert text in result.output
    shown = json.loads((await run(admin, "user", "show", str(lee.id), "--json")).stdout)
    assert shown["banned"] is True and shown["effective_limit"] == 5
    result = await run(admin, "user", "unban", str(lee.id))
    assert result.exit_code == 0 and "not banned" in result.output
    result = await run(admin, "user", "limit", str(lee.id), "--reset")
    assert result.exit_code == 0 and "daily limit 100" in result.output

    worker.behaviour.hang_next = 1
    running = await admin.imagine_job(lee, "stuck")
    await admin.wait_state(running.id, JobState.SUBMITTED)
    waiting = await admin.imagine_job(lee, "behind it")
    result = await run(admin, "queue")
    assert result.exit_code == 0 and "Queue: 1 waiting" in result.output
    assert running.id in result.output and waiting.id in result.output
    data = json.loads((await run(admin, "queue", "--user", str(lee.id), "--json")).stdout)
    assert [j["id"] for j in data["jobs"]] == [running.id, waiting.id]

    result = await run(admin, "job", "show", running.id[:8])
    assert result.exit_code == 0 and running.id in result.output and "stuck" in result.output
    result = await run(admin, "job", "cancel", running.id)
    assert result.exit_code == 0 and "canceled; quota refunded" in result.output
    await admin.wait_state(waiting.id, JobState.SUCCEEDED)
    result = await run(admin, "job", "retry", running.id)
    assert result.exit_code == 0 and f"as a retry of {running.id}" in result.output
    result = await run(admin, "job", "show", "0" * 32)
    assert result.exit_code == 1 and "No job" in result.stderr


async def test_clear_errors_when_not_running_or_unauthorized(make_admin: AdminFactory) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    result = await run(None, "pool", "status", "--admin-url", dead)
    assert result.exit_code == 3
    assert result.stderr.strip() == (
        f"Error: gouache is not running or its admin API is off: nothing answers at {dead} "
        "(connection refused)."
    )

    admin = await make_admin()
    result = await run(admin, "pool", "status", "--token", "wrong-token")
    assert result.exit_code == 4 and "the token was refused" in result.stderr
    assert "wrong-token" not in result.output
    result = await run(admin, "pool", "status", env={"GOUACHE_ADMIN_TOKEN": ""})
    assert result.exit_code == 4 and "no token was given" in result.stderr
    result = await run(None, "queue", "--admin-url", "ftp://x")
    assert result.exit_code == 1 and "must look like http://" in result.stderr


async def test_config_file_names_the_api(
    make_admin: AdminFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = await make_admin()
    config = tmp_path / "gouache.toml"
    config.write_text(
        "[discord]\n"
        'token = "${T_BOT_TOKEN}"\n'
        "application_id = 1\n"
        "[admin]\n"
        f'listen = "0.0.0.0:{admin.server.port}"\n'
        'token = "${T_ADMIN_TOKEN}"\n'
    )
    monkeypatch.setenv("T_BOT_TOKEN", "not-used-here")
    monkeypatch.setenv("T_ADMIN_TOKEN", TOKEN)
    # The file beats the environment; the command line beats the file.
    env = {"GOUACHE_ADMIN_URL": "http://127.0.0.1:1", "GOUACHE_ADMIN_TOKEN": "stale"}
    result = await run(None, "pool", "status", "-c", str(config), env=env)
    assert result.exit_code == 0, result.output
    assert "instant-a" in result.output
    result = await run(None, "pool", "status", "-c", str(config), "--token", "override", env=env)
    assert result.exit_code == 4

    result = await run(None, "pool", "status", "-c", str(tmp_path / "missing.toml"))
    assert result.exit_code == 1 and "file not found" in result.stderr


async def test_pool_status_lists_channels_gouache_cannot_serve(make_admin: AdminFactory) -> None:
    admin = await make_admin({"instant-a": 1})
    world = admin.world
    assert world.app.bot is not None and world.app.bot.user is not None
    world.sandbox.set_overwrite(world.channel, world.app.bot.user.id, deny=P.EMBED_LINKS)
    reply = await admin.world.reply(
        world.member("ned").invoke(world.channel.id, "imagine", {"prompt": "x"})
    )
    assert "Embed Links" in reply.content
    result = await run(admin, "pool", "status")
    assert result.exit_code == 0, result.output
    assert "Channels gouache cannot serve" in result.output
    assert str(world.channel.id) in result.output and "Embed Links" in result.output
    data = json.loads((await run(admin, "pool", "status", "--json")).stdout)
    assert [(c["channel_id"], c["missing"]) for c in data["channels"]] == [
        (world.channel.id, ["Embed Links"])
    ]


def test_job_show_prints_the_backends_whole_error_for_the_owner() -> None:
    job = Job(
        user_id=1,
        prompt="p",
        state=JobState.FAILED,
        error_code="worker_error",
        error_message="The image server failed in KSampler (RuntimeError).",
        error_detail='RuntimeError: boom\nTraceback:\n  File "/srv/ComfyUI/execution.py"',
    )
    console = Console(width=200, record=True)
    console.print(admin_cli.job_table(job_view(job)))
    shown = console.export_text()
    assert "failed in KSampler (RuntimeError)" in shown
    assert "/srv/ComfyUI/execution.py" in shown
