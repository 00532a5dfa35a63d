"""Autocomplete in the Discord sandbox: type 4 interactions held to Discord's rules."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from gouache_sandbox.discord import DiscordSandbox


@pytest.fixture
async def picker(sandbox: DiscordSandbox, http: aiohttp.ClientSession) -> dict[str, Any]:
    """A bot with ``/pick style:`` (autocomplete) and ``/opts show|set`` (subcommands)."""
    bot, token, app_id = sandbox.add_bot("bot")
    guild = sandbox.add_guild("g")
    channel = sandbox.add_channel(guild, "general")
    sandbox.join(guild, bot)
    member = sandbox.add_member(guild, "alice")
    cmds = [
        {
            "name": "pick",
            "description": "Pick",
            "options": [
                {"type": 3, "name": "prompt", "description": "p", "required": True},
                {"type": 3, "name": "style", "description": "s", "autocomplete": True},
            ],
        },
        {
            "name": "opts",
            "description": "Options",
            "options": [
                {"type": 1, "name": "show", "description": "show"},
                {
                    "type": 1,
                    "name": "set",
                    "description": "set",
                    "options": [{"type": 5, "name": "on", "description": "o"}],
                },
            ],
        },
    ]
    auth = {"Authorization": f"Bot {token}"}
    async with http.put(
        f"{sandbox.api_base}/applications/{app_id}/commands", json=cmds, headers=auth
    ) as resp:
        assert resp.status == 200
    return {"member": member, "channel": channel, "app_id": app_id}


async def post(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with http.post(url, json=body) as resp:
        return resp.status, await resp.json() if resp.status != 204 else None


async def test_autocomplete_is_answered_with_choices_only(
    sandbox: DiscordSandbox, http: aiohttp.ClientSession, picker: dict[str, Any]
) -> None:
    member, channel = picker["member"], picker["channel"]
    inter = member.autocomplete(channel.id, "pick", "style", "wat", {"prompt": "x"})
    assert inter.type == 4
    focused = [o for o in inter.data["options"] if o.get("focused")]
    assert focused == [{"type": 3, "name": "style", "value": "wat", "focused": True}]
    cb = f"{sandbox.api_base}/interactions/{inter.id}/{inter.token}/callback"
    # No message, no deferral: an autocomplete takes choices (type 8) and nothing else.
    for kind in (4, 5):
        status, body = await post(http, cb, {"type": kind, "data": {"content": "x"}})
        assert status == 400 and body["code"] == 40043
    too_many = [{"name": f"s{i}", "value": f"s{i}"} for i in range(26)]
    status, body = await post(http, cb, {"type": 8, "data": {"choices": too_many}})
    assert status == 400 and "choices" in str(body["errors"])
    choices = [{"name": "Watercolour", "value": "watercolour"}]
    status, _ = await post(http, cb, {"type": 8, "data": {"choices": choices}})
    assert status in (200, 204) and inter.choices == choices and inter.response_type == 8
    # No webhook stands behind an autocomplete answer.
    hook = f"{sandbox.api_base}/webhooks/{picker['app_id']}/{inter.token}"
    status, body = await post(http, hook, {"content": "late"})
    assert status == 404 and body["code"] == 10015


async def test_autocomplete_has_three_seconds_and_choices_answer_nothing_else(
    sandbox: DiscordSandbox, http: aiohttp.ClientSession, picker: dict[str, Any]
) -> None:
    member, channel = picker["member"], picker["channel"]
    inter = member.autocomplete(channel.id, "pick", "style", "", {"prompt": "x"})
    sandbox.clock.advance(3.5)
    cb = f"{sandbox.api_base}/interactions/{inter.id}/{inter.token}/callback"
    status, body = await post(http, cb, {"type": 8, "data": {"choices": []}})
    assert status == 404 and body["code"] == 10062 and inter.late_callbacks == 1
    command = member.invoke(channel.id, "pick", {"prompt": "x"})
    cb = f"{sandbox.api_base}/interactions/{command.id}/{command.token}/callback"
    status, body = await post(http, cb, {"type": 8, "data": {"choices": []}})
    assert status == 400 and body["code"] == 40043
    with pytest.raises(LookupError):
        member.autocomplete(channel.id, "pick", "prompt", "x")  # not an autocomplete option


async def test_subcommands_carry_their_options(picker: dict[str, Any]) -> None:
    member, channel = picker["member"], picker["channel"]
    inter = member.invoke(channel.id, "opts set", {"on": True})
    assert inter.data["options"] == [
        {"type": 1, "name": "set", "options": [{"type": 5, "name": "on", "value": True}]}
    ]
    with pytest.raises(LookupError):
        member.invoke(channel.id, "opts nope")


def test_the_viewer_box_reads_a_subcommand_first() -> None:
    from gouache_sandbox.discord.subcommands import split_subcommand
    from gouache_sandbox.discord.viewmodel import CommandLineError, parse_options

    schema = [
        {"type": 1, "name": "show", "description": "s"},
        {"type": 1, "name": "set", "description": "s", "options": [{"type": 5, "name": "on"}]},
    ]
    sub, rest, options = split_subcommand(schema, "set on:true")
    assert (sub, parse_options(rest, options)) == ("set", {"on": True})
    assert split_subcommand(schema, "show")[:2] == ("show", "")
    with pytest.raises(CommandLineError, match="set, show"):
        split_subcommand(schema, "nope")
    flat = [{"type": 3, "name": "prompt"}]
    assert split_subcommand(flat, "a fox") == ("", "a fox", flat)
