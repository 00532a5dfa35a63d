"""The sandbox's attachment upload flow (POST …/attachments, PUT, uploaded_filename) with
Discord's errors, and the Midjourney stand-in's image inputs."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from gouache_sandbox.discord import DiscordSandbox
from gouache_sandbox.discord.midjourney_inputs import describe, load_link, split_links
from gouache_sandbox.discord.payloads import ATTACHMENT_SIZE_LIMIT
from gouache_sandbox.discord.permissions import P

from ..images.pictures import png


@pytest.fixture
def account(sandbox: DiscordSandbox) -> dict[str, Any]:
    """A user account in a guild's channel (what a Midjourney proxy uploads as)."""
    guild = sandbox.add_guild("g")
    channel = sandbox.add_channel(guild, "mj")
    user, token = sandbox.add_user_account("acct")
    sandbox.join(guild, user)
    return {"channel": channel, "auth": {"Authorization": token}, "user": user}


async def _announce(
    http: aiohttp.ClientSession, sandbox: DiscordSandbox, acct: dict[str, Any], size: int
) -> tuple[int, Any]:
    url = f"{sandbox.base_url}/api/v9/channels/{acct['channel'].id}/attachments"
    body = {"files": [{"id": "0", "filename": "a.png", "file_size": size}]}
    async with http.post(url, json=body, headers=acct["auth"]) as resp:
        return resp.status, await resp.json()


async def _post(
    http: aiohttp.ClientSession, sandbox: DiscordSandbox, acct: dict[str, Any], name: str
) -> tuple[int, Any]:
    url = f"{sandbox.base_url}/api/v9/channels/{acct['channel'].id}/messages"
    body = {"attachments": [{"id": "0", "filename": "a.png", "uploaded_filename": name}]}
    async with http.post(url, json=body, headers=acct["auth"]) as resp:
        return resp.status, await resp.json()


async def test_upload_then_post_makes_an_attachment_once(
    sandbox: DiscordSandbox, http: aiohttp.ClientSession, account: dict[str, Any]
) -> None:
    data = png()
    status, body = await _announce(http, sandbox, account, len(data))
    assert status == 200
    (entry,) = body["attachments"]
    assert entry["id"] == "0" and entry["upload_filename"].endswith("/a.png")
    async with http.put(entry["upload_url"], data=data) as resp:  # no token: the URL is enough
        assert resp.status == 200
    status, message = await _post(http, sandbox, account, entry["upload_filename"])
    assert status == 200
    (att,) = message["attachments"]
    assert att["content_type"] == "image/png" and att["size"] == len(data)
    async with http.get(att["url"]) as resp:
        assert await resp.read() == data
    # Used once: a second message naming it is refused.
    status, error = await _post(http, sandbox, account, entry["upload_filename"])
    assert status == 400 and "ATTACHMENT_NOT_FOUND" in str(error)


async def test_discords_errors(
    sandbox: DiscordSandbox, http: aiohttp.ClientSession, account: dict[str, Any]
) -> None:
    status, body = await _announce(http, sandbox, account, ATTACHMENT_SIZE_LIMIT + 1)
    assert (status, body["code"]) == (400, 40005)
    # A body of another size than announced is refused by the upload URL.
    status, body = await _announce(http, sandbox, account, 10)
    async with http.put(body["attachments"][0]["upload_url"], data=b"x" * 11) as resp:
        assert resp.status == 400
    # Never uploaded: the message cannot use it.
    status, error = await _post(http, sandbox, account, body["attachments"][0]["upload_filename"])
    assert status == 400 and "ATTACHMENT_NOT_FOUND" in str(error)
    status, error = await _post(http, sandbox, account, "made-up/name.png")
    assert status == 400
    # Without Attach Files in the channel the announcement itself is refused.
    sandbox.set_overwrite(account["channel"], account["channel"].guild_id, deny=P.ATTACH_FILES)
    status, body = await _announce(http, sandbox, account, 10)
    assert (status, body.get("code")) == (403, 50013), body


def test_midjourney_reads_links_like_midjourney(sandbox: DiscordSandbox) -> None:
    links = split_links("https://a/1.png https://b/2.png a fox --sref https://s/x.png --ar 3:2")
    assert links.prompt == ["https://a/1.png", "https://b/2.png"]
    assert links.style == ["https://s/x.png"] and links.text == "a fox --ar 3:2"
    att = sandbox.state.add_attachment(1, "x.png", png(), "image/png")
    url = f"{sandbox.base_url}/attachments/1/{att.id}/x.png?ex=1"
    assert load_link(sandbox.state, sandbox.base_url, url) == png()
    assert load_link(sandbox.state, sandbox.base_url, "https://example.com/x.png") is None
    prompts = describe(png((10, 10, 200), (90, 60)))
    assert len(prompts) == 4 and all("blue" in p and "--ar 3:2" in p for p in prompts)
