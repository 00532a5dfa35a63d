"""The sandbox's web viewer over HTTP: page, snapshots, server-sent events, member actions, status."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gouache_sandbox.discord import DiscordSandbox
from gouache_sandbox.discord.members import SimulatedMember
from gouache_sandbox.discord.midjourney import APPLICATION_ID as MJ_APP_ID
from gouache_sandbox.discord.state import Channel, Guild, Message
from gouache_sandbox.discord.viewmodel import (
    CommandLineError,
    message_view,
    parse_options,
    resolve_embed,
    scrub,
    split_command_line,
)
from gouache_sandbox.instant import tiny_png

IMAGINE_SCHEMA: list[dict[str, Any]] = [
    {"type": 3, "name": "prompt", "required": True},
    {"type": 3, "name": "aspect"},
    {"type": 4, "name": "seed"},
    {"type": 5, "name": "fast"},
    {"type": 10, "name": "weight"},
]


# -- pure parts ----------------------------------------------------------------------------------


def test_command_line_forms() -> None:
    assert split_command_line("  /Imagine a red fox  ") == ("imagine", "a red fox")
    assert split_command_line("/queue") == ("queue", "")
    for bad in ("imagine a fox", "", "/", "/ fox"):
        with pytest.raises(CommandLineError):
            split_command_line(bad)
    # the whole text goes to the first required text option
    assert parse_options("a fox --ar 16:9", IMAGINE_SCHEMA) == {"prompt": "a fox --ar 16:9"}
    # a prompt that merely contains "seed:" is not split
    assert parse_options("a sign saying seed: 4", IMAGINE_SCHEMA) == {
        "prompt": "a sign saying seed: 4"
    }
    # Discord's name:value form, converted to the option types
    assert parse_options(
        "prompt:a fox at dawn seed:42 fast:yes weight:0.5 aspect:16:9", IMAGINE_SCHEMA
    ) == {"prompt": "a fox at dawn", "seed": 42, "fast": True, "weight": 0.5, "aspect": "16:9"}
    assert parse_options("", IMAGINE_SCHEMA) == {}
    for bad in ("prompt:x seed:many", "prompt:x fast:maybe", "prompt:x prompt:y", "seed:1.5"):
        with pytest.raises(CommandLineError):
            parse_options(bad, IMAGINE_SCHEMA)
    with pytest.raises(CommandLineError, match="takes no text"):
        parse_options("something", [{"type": 4, "name": "n"}])


def test_embed_attachment_references_and_scrub(sandbox: DiscordSandbox) -> None:
    att = sandbox.state.add_attachment(1, "result.png", tiny_png(3), "image/png", width=8, height=8)
    embed = {
        "title": "Done",
        "image": {"url": "attachment://result.png"},
        "thumbnail": {"url": "attachment://gone.png"},
        "footer": {"text": "imagine", "icon_url": "https://example.invalid/i.png"},
    }
    out = resolve_embed(embed, [att])
    assert out["image"] == {"url": f"/attachments/1/{att.id}/result.png", "width": 8, "height": 8}
    assert out["thumbnail"] == {"url": None, "missing": "gone.png"}
    assert out["footer"]["icon_url"] == "https://example.invalid/i.png"
    assert embed["image"] == {"url": "attachment://result.png"}  # the stored embed is untouched
    assert scrub(
        {"workers": [{"name": "a", "token": "x"}], "Authorization": "Bearer y", "n": 1}
    ) == {
        "workers": [{"name": "a", "token": "***"}],
        "Authorization": "***",
        "n": 1,
    }


# -- a world with members, a bot application and the Midjourney stand-in ------------------------


@dataclass
class World:
    sandbox: DiscordSandbox
    http: aiohttp.ClientSession
    guild: Guild
    channel: Channel
    alice: SimulatedMember
    bob: SimulatedMember
    bot_token: str
    bot_app_id: int

    @property
    def api(self) -> str:
        return f"{self.sandbox.base_url}/viewer/api"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bot {self.bot_token}"}

    async def post(self, path: str, body: Any) -> tuple[int, dict[str, Any]]:
        async with self.http.post(f"{self.api}{path}", json=body) as resp:
            return resp.status, await resp.json()

    async def get(self, path: str) -> Any:
        async with self.http.get(f"{self.api}{path}") as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()


@pytest.fixture
async def world(sandbox: DiscordSandbox) -> AsyncIterator[World]:
    bot, token, app_id = sandbox.add_bot("gouache")
    guild = sandbox.add_guild("community")
    channel = sandbox.add_channel(guild, "art")
    sandbox.add_channel(guild, "general")
    vip = sandbox.add_role(guild, "vip")
    sandbox.join(guild, bot)
    account, _ = sandbox.add_user_account("mj-account")
    sandbox.join(guild, account)
    alice = sandbox.add_member(guild, "alice")
    bob = sandbox.add_member(guild, "bob", roles=[vip.id], locale="zh-CN")
    async with aiohttp.ClientSession() as http:
        yield World(sandbox, http, guild, channel, alice, bob, token, app_id)


class EventStream:
    """Reads the viewer's server-sent events."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self.raw: list[str] = []

    async def next(self, *kinds: str, timeout: float = 5.0) -> tuple[str, Any]:
        """The next event of one of ``kinds`` (any when empty); others are skipped."""
        async with asyncio.timeout(timeout):
            while True:
                event, data = "message", ""
                while True:
                    line = (await self.resp.content.readline()).decode()
                    if not line:
                        raise ConnectionError("the event stream ended")
                    self.raw.append(line)
                    line = line.rstrip("\n")
                    if not line:
                        break
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        data += line[6:]
                if data and (not kinds or event in kinds):
                    return event, json.loads(data)

    async def until(self, kind: str, predicate: Any, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            _, data = await self.next(kind, timeout=max(0.01, deadline - time.monotonic()))
            if predicate(data):
                return dict(data)


@pytest.fixture
async def events(world: World) -> AsyncIterator[EventStream]:
    async with world.http.get(f"{world.api}/events") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        stream = EventStream(resp)
        _, hello = await stream.next("hello")
        assert isinstance(hello["seq"], int)
        yield stream


# -- page and snapshots ------------------------------------------------------------------------


async def test_page_static_files_and_root(world: World) -> None:
    base = world.sandbox.base_url
    assert world.sandbox.viewer_url == f"{base}/viewer/"
    async with world.http.get(world.sandbox.viewer_url) as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        page = await resp.text()
        assert "/viewer/static/viewer.js" in page and "/viewer/static/viewer.css" in page
        # offline: nothing is loaded from another host
        assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", page)
    for name, kind in (("viewer.js", "javascript"), ("viewer.css", "text/css")):
        async with world.http.get(f"{base}/viewer/static/{name}") as resp:
            assert resp.status == 200 and kind in resp.content_type
            assert "https://" not in await resp.text()
    async with world.http.get(f"{base}/", allow_redirects=False) as resp:
        assert resp.status == 302 and resp.headers["Location"] == "/viewer/"
    # "/" is still the gateway for a WebSocket client
    async with world.http.ws_connect(f"ws://127.0.0.1:{world.sandbox.port}/?v=10") as ws:
        hello = await ws.receive_json(timeout=5)
        assert hello["op"] == 10


async def test_state_lists_people_and_runnable_commands(world: World) -> None:
    state = await world.get("/state")
    [guild] = state["guilds"]
    assert [c["name"] for c in guild["channels"]] == ["art", "general"]
    # no bots, no token accounts, no made-up guild owner
    assert [(m["name"], m["roles"], m["locale"]) for m in guild["members"]] == [
        ("alice", [], "en-US"),
        ("bob", ["vip"], "zh-CN"),
    ]
    assert [(c["name"], c["application"]) for c in guild["commands"]] == [
        ("imagine", "Midjourney Bot"),
        ("imagine", "niji・journey Bot"),
        ("settings", "Midjourney Bot"),
        ("settings", "niji・journey Bot"),
    ]
    assert state["status_configured"] is False
    # the bot registers its own guild /imagine: it comes first, the stand-in's after
    url = (
        f"{world.sandbox.api_base}/applications/{world.bot_app_id}/guilds/{world.guild.id}/commands"
    )
    body = [
        {
            "name": "imagine",
            "description": "Create images",
            "options": [{"type": 3, "name": "prompt", "description": "p", "required": True}],
        }
    ]
    async with world.http.put(url, json=body, headers=world.auth) as resp:
        assert resp.status == 200, await resp.text()
    guild = (await world.get("/state"))["guilds"][0]
    assert [c["application"] for c in guild["commands"]] == [
        "gouache",
        "Midjourney Bot",
        "niji・journey Bot",
        "Midjourney Bot",
        "niji・journey Bot",
    ]
    status, out = await world.post(
        "/command",
        {
            "member_id": str(world.alice.id),
            "channel_id": str(world.channel.id),
            "text": "/imagine a fox",
        },
    )
    assert status == 200 and out["application"] == "gouache"
    inter = world.sandbox.state.interactions[int(out["interaction_id"])]
    assert inter.application_id == world.bot_app_id and inter.user.id == world.alice.id
    assert inter.data["options"] == [{"type": 3, "name": "prompt", "value": "a fox"}]
    # asking for the stand-in by application id reaches it instead
    status, out = await world.post(
        "/command",
        {
            "member_id": world.alice.id,
            "channel_id": world.channel.id,
            "text": "/imagine a fox",
            "application_id": str(MJ_APP_ID),
        },
    )
    assert status == 200 and out["application"] == "Midjourney Bot"


async def test_events_follow_create_edit_delete_with_resolved_attachments(
    world: World, events: EventStream
) -> None:
    url = f"{world.sandbox.api_base}/channels/{world.channel.id}/messages"
    png = tiny_png(0x3366CC)
    form = aiohttp.FormData()
    form.add_field(
        "payload_json",
        json.dumps(
            {
                "content": f"for <@{world.alice.id}>",
                "embeds": [
                    {
                        "title": "Generating",
                        "description": "▰▰▰▰▱▱▱▱ 50%",
                        "color": 0x3498DB,
                        "image": {"url": "attachment://preview.png"},
                    }
                ],
                "attachments": [{"id": 0, "filename": "preview.png"}],
            }
        ),
        content_type="application/json",
    )
    form.add_field("files[0]", png, filename="preview.png", content_type="image/png")
    async with world.http.post(url, data=form, headers=world.auth) as resp:
        assert resp.status == 200, await resp.text()
        message_id = (await resp.json())["id"]
    created = await events.until("message_create", lambda m: m["id"] == message_id)
    assert created["author"]["name"] == "gouache" and created["author"]["bot"] is True
    assert created["mentions"] == {str(world.alice.id): "alice"}
    [att] = created["attachments"]
    assert att["in_embed"] and att["image"] and (att["width"], att["height"]) == (8, 8)
    image = created["embeds"][0]["image"]
    assert image["url"] == att["url"] and image["url"].startswith("/attachments/")
    async with world.http.get(world.sandbox.base_url + image["url"]) as resp:
        assert resp.status == 200 and await resp.read() == png
    # an edit arrives as an update with a later seq
    async with world.http.patch(
        f"{url}/{message_id}",
        json={"embeds": [{"title": "Done", "description": "▰▰▰▰▰▰▰▰ 100%"}]},
        headers=world.auth,
    ) as resp:
        assert resp.status == 200
    updated = await events.until("message_update", lambda m: m["id"] == message_id)
    assert updated["seq"] > created["seq"] and updated["embeds"][0]["title"] == "Done"
    assert updated["edited_at"] is not None
    snapshot = await world.get(f"/channels/{world.channel.id}/messages")
    [listed] = [m for m in snapshot["messages"] if m["id"] == message_id]
    assert listed["seq"] == updated["seq"] and listed["embeds"][0]["title"] == "Done"
    async with world.http.delete(f"{url}/{message_id}", headers=world.auth) as resp:
        assert resp.status == 204
    deleted = await events.until("message_delete", lambda m: m["id"] == message_id)
    assert deleted == {"id": message_id, "channel_id": str(world.channel.id), "seq": deleted["seq"]}
    assert deleted["seq"] > updated["seq"]
    snapshot = await world.get(f"/channels/{world.channel.id}/messages")
    assert all(m["id"] != message_id for m in snapshot["messages"])


async def test_members_imagine_and_click_through_the_viewer(
    world: World, events: EventStream
) -> None:
    status, out = await world.post(
        "/command",
        {
            "member_id": str(world.alice.id),
            "channel_id": str(world.channel.id),
            "text": "/imagine a lighthouse in a storm --ar 16:9",
        },
    )
    assert status == 200, out
    assert out["command"] == "imagine" and out["options"] == {
        "prompt": "a lighthouse in a storm --ar 16:9"
    }
    # the stand-in's progress message, live
    progress = await events.until("message_update", lambda m: "%)" in m["content"])
    assert progress["interaction"] == {
        "type": 2,
        "name": "imagine",
        "user": "alice",
        "user_id": str(world.alice.id),
    }
    assert progress["attachments"][0]["image"] and not progress["attachments"][0]["in_embed"]
    grid = await events.until("message_create", lambda m: bool(m["components"]))
    labels = [b["label"] for row in grid["components"] for b in row]
    assert labels[:4] == ["U1", "U2", "U3", "U4"] and "V4" in labels
    u1 = next(b["custom_id"] for row in grid["components"] for b in row if b["label"] == "U1")
    # bob presses U1 on alice's grid: a component interaction from bob
    status, out = await world.post(
        "/click", {"member_id": str(world.bob.id), "message_id": grid["id"], "custom_id": u1}
    )
    assert status == 200, out
    inter = world.sandbox.state.interactions[int(out["interaction_id"])]
    assert inter.type == 3 and inter.user.id == world.bob.id and inter.message_id == int(grid["id"])
    upscale = await events.until("message_create", lambda m: "Image #1" in m["content"])
    assert upscale["reference"] == grid["id"]
    assert upscale["mentions"][str(world.bob.id)] == "bob"


async def test_bad_requests_are_refused_and_create_nothing(world: World) -> None:
    state = world.sandbox.state
    assert world.sandbox.midjourney is not None
    posted = Message(
        id=state.ids.next(),
        channel_id=world.channel.id,
        guild_id=world.guild.id,
        author=world.sandbox.midjourney.bot,
        content="has a button",
        components=[{"type": 1, "components": [{"type": 2, "style": 1, "custom_id": "ok"}]}],
    )
    state.store_message(posted)
    before = len(state.interactions)
    alice, chan = str(world.alice.id), str(world.channel.id)
    bot_id = str(next(a.bot.id for a in state.applications.values() if a.name == "gouache"))
    cases: list[tuple[str, Any, str]] = [
        ("/command", {"member_id": alice, "channel_id": chan, "text": "imagine a fox"}, "slash"),
        ("/command", {"member_id": alice, "channel_id": chan, "text": "/nope x"}, "/nope"),
        ("/command", {"member_id": alice, "channel_id": chan, "text": "/imagine"}, "prompt"),
        ("/command", {"member_id": alice, "channel_id": chan, "text": 5}, "text"),
        ("/command", {"member_id": bot_id, "channel_id": chan, "text": "/imagine x"}, "act as"),
        ("/command", {"member_id": "12", "channel_id": chan, "text": "/imagine x"}, "act as"),
        ("/command", {"member_id": alice, "text": "/imagine x"}, "channel_id is required"),
        ("/command", {"member_id": alice, "channel_id": "x", "text": "/imagine x"}, "number"),
        ("/command", {"member_id": alice, "channel_id": "99", "text": "/imagine x"}, "Unknown"),
        ("/command", [1, 2], "JSON object"),
        (
            "/click",
            {"member_id": alice, "message_id": str(posted.id), "custom_id": "no"},
            "no component",
        ),
        ("/click", {"member_id": alice, "message_id": "1", "custom_id": "ok"}, "no longer"),
        ("/click", {"member_id": alice, "message_id": str(posted.id)}, "custom_id"),
    ]
    for path, body, expected in cases:
        status, out = await world.post(path, body)
        assert status in (400, 404), (body, out)
        assert expected in out["error"], (body, out)
    async with world.http.post(
        f"{world.api}/command", data=b"{not json", headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 400 and "not JSON" in (await resp.json())["error"]
    async with world.http.get(f"{world.api}/channels/999/messages") as resp:
        assert resp.status == 404
    assert len(state.interactions) == before
    # and a good click still works afterwards
    status, _ = await world.post(
        "/click", {"member_id": alice, "message_id": str(posted.id), "custom_id": "ok"}
    )
    assert status == 200 and len(state.interactions) == before + 1


# -- status -----------------------------------------------------------------------------------------


async def test_status_from_a_callable_is_pushed_and_masked(world: World) -> None:
    viewer = world.sandbox.viewer
    viewer.status_interval = 0.05
    calls = 0

    async def source() -> Mapping[str, Any]:
        nonlocal calls
        calls += 1
        return {
            "workers": [
                {
                    "name": "mj-1",
                    "kind": "midjourney",
                    "state": "ready",
                    "capacity": 2,
                    "in_flight": calls % 3,
                    "latency_ms": 80.5,
                    "token": "tok-123",
                }
            ],
            "queue_depth": calls,
        }

    assert await world.get("/status") == {"configured": False}
    viewer.set_status_source(source)
    first = await world.get("/status")
    assert first["ok"] and first["status"]["workers"][0]["token"] == "***"
    async with world.http.get(f"{world.api}/events") as resp:
        stream = EventStream(resp)
        _, a = await stream.next("status")
        _, b = await stream.next("status")
        assert b["status"]["queue_depth"] > a["status"]["queue_depth"]  # polled again
        assert "tok-123" not in "".join(stream.raw)

    async def broken() -> Mapping[str, Any]:
        raise RuntimeError("store is down")

    viewer.set_status_source(broken)
    assert await world.get("/status") == {
        "configured": True,
        "ok": False,
        "error": "RuntimeError: store is down",
    }

    async def slow() -> Mapping[str, Any]:
        await asyncio.Event().wait()
        return {}

    viewer.status_timeout = 0.1
    viewer.set_status_source(slow)
    assert "did not answer" in (await world.get("/status"))["error"]
    with pytest.raises(ValueError, match="token"):
        viewer.set_status_source(source, token="x")


async def test_status_from_the_admin_url_with_a_bearer_token(world: World) -> None:
    secret = "admin-s3cret-token"

    async def status(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {secret}":
            return web.json_response({"error": "unauthorized"}, status=401)
        return web.json_response({"workers": [], "queue": {"depth": 4, "by_tier": {"vip": 1}}})

    admin = web.Application()
    admin.router.add_get("/status", status)
    server = TestServer(admin)
    await server.start_server()
    try:
        url = str(server.make_url("/status"))
        world.sandbox.viewer.set_status_source(url, token=secret)
        good = await world.get("/status")
        assert good["ok"] and good["status"]["queue"] == {"depth": 4, "by_tier": {"vip": 1}}
        world.sandbox.viewer.set_status_source(url, token="wrong-" + secret)
        bad = await world.get("/status")
        assert bad["ok"] is False and "HTTP 401" in bad["error"]
        pages = [json.dumps(good), json.dumps(bad), json.dumps(await world.get("/state"))]
        assert not any(secret in p for p in pages)
        assert secret not in repr(world.sandbox.viewer._status_source)
    finally:
        await server.close()


async def test_no_token_reaches_the_page(world: World, events: EventStream) -> None:
    sb = world.sandbox
    status, _ = await world.post(
        "/command",
        {"member_id": world.alice.id, "channel_id": world.channel.id, "text": "/imagine a cat"},
    )
    assert status == 200
    await events.until("message_create", lambda m: bool(m["components"]), timeout=10)
    secrets = [t for t in sb.state.tokens] + [i.token for i in sb.state.interactions.values()]
    assert secrets
    texts = ["".join(events.raw)]
    for path in ("/state", f"/channels/{world.channel.id}/messages", "/status"):
        texts.append(json.dumps(await world.get(path)))
    async with world.http.get(sb.viewer_url) as resp:
        texts.append(await resp.text())
    for secret in secrets:
        assert not any(secret in text for text in texts)


async def test_ephemeral_replies_are_marked(world: World) -> None:
    state = world.sandbox.state
    msg = Message(
        id=state.ids.next(),
        channel_id=world.channel.id,
        guild_id=world.guild.id,
        author=state.users[world.bot_app_id],
        content="You have used your 3 images today.",
        flags=64,
        visible_to=world.bob.id,
    )
    state.store_message(msg)
    view = message_view(state, msg)
    assert view["ephemeral_to"] == "bob" and view["author"]["bot"] is True
    snapshot = await world.get(f"/channels/{world.channel.id}/messages")
    assert [m["ephemeral_to"] for m in snapshot["messages"]] == ["bob"]


async def test_closing_the_sandbox_ends_open_streams() -> None:
    sb = DiscordSandbox(with_midjourney=False)
    await sb.start()
    async with aiohttp.ClientSession() as http:
        resp = await http.get(f"{sb.base_url}/viewer/api/events")
        stream = EventStream(resp)
        await stream.next("hello")
        assert sb.viewer.clients == 1
        started = time.monotonic()
        await asyncio.wait_for(sb.aclose(), 5)
        assert time.monotonic() - started < 3
        with pytest.raises((ConnectionError, aiohttp.ClientError)):
            await stream.next("never", timeout=2)
        resp.release()
    assert sb.viewer.clients == 0
