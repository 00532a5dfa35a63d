"""``/channels`` in the admin API and ``gouache channel show|set``."""

from __future__ import annotations

import asyncio

import click
from click.testing import CliRunner, Result

from gouache.admin.channel_cli import channel

from .conftest import TOKEN, Admin, AdminFactory


@click.group()
def main() -> None:
    """A stand-in for the gouache command group."""


main.add_command(channel)


async def run(admin: Admin, *args: str) -> Result:
    env = {"GOUACHE_ADMIN_URL": admin.url, "GOUACHE_ADMIN_TOKEN": TOKEN}
    return await asyncio.to_thread(
        CliRunner().invoke, main, list(args), env=env, catch_exceptions=False
    )


async def test_the_api_shows_and_changes_a_channel_all_or_nothing(make_admin: AdminFactory) -> None:
    admin = await make_admin()
    cid = admin.world.channel.id
    status, body = await admin.call("GET", f"/channels/{cid}")
    assert status == 200 and body["settings"]["backend"] == "any" and body["used_today"] == 0
    status, body = await admin.call(
        "PATCH", f"/channels/{cid}", {"backend": "comfyui", "daily_cap": "0", "content": "nope"}
    )
    assert status == 400 and body["error"] == "settings_invalid"
    assert body["message"].splitlines()[0].startswith("daily_cap:")
    assert body["message"].splitlines()[1].startswith("content:")
    status, body = await admin.call("GET", f"/channels/{cid}")
    assert body["settings"]["backend"] == "any"  # nothing of the bad change was saved
    status, body = await admin.call(
        "PATCH", f"/channels/{cid}", {"daily_cap": 25, "requester_only": True}
    )
    assert status == 200 and body["settings"]["daily_cap"] == 25
    assert "requester_only: yes" in body["lines"]
    status, body = await admin.call("GET", "/channels")
    assert [c["channel_id"] for c in body["channels"]] == [str(cid)]
    status, body = await admin.call("GET", "/channels/abc")
    assert status == 400


async def test_the_cli_sets_and_shows_settings(make_admin: AdminFactory) -> None:
    admin = await make_admin()
    cid = str(admin.world.channel.id)
    result = await run(admin, "channel", "set", cid, "content=spoiler", "daily_cap=12")
    assert result.exit_code == 0, result.output
    assert "Saved." in result.output and "content: spoiler" in result.output
    result = await run(admin, "channel", "show", cid)
    assert "daily_cap: 12" in result.output and "used today: 0 of 12" in result.output
    result = await run(admin, "channel", "show")
    assert f"Channel {cid}" in result.output
    result = await run(admin, "channel", "set", cid, "backend=dalle", "daily_cap=-3")
    assert result.exit_code != 0
    assert "backend:" in result.output and "daily_cap:" in result.output
    result = await run(admin, "channel", "set", cid, "backend")
    assert result.exit_code == 2 and "NAME=VALUE" in result.output
    result = await run(admin, "channel", "show", cid, "--json")
    assert '"daily_cap": 12' in result.output
