"""The Midjourney stand-in, driven through a user account exactly as a proxy drives it."""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from PIL import Image

from gouache_sandbox.discord import DiscordSandbox
from gouache_sandbox.discord.midjourney import (
    APPLICATION_ID,
    ERRORS,
    IMAGINE_COMMAND_ID,
    QUEUED_COLOR,
    RED,
)
from tests.sandbox.gwclient import RawGateway

V9 = "/api/v9"


class Account:
    """A user account with a live gateway session, posting interactions like a proxy."""

    def __init__(
        self,
        sandbox: DiscordSandbox,
        http: aiohttp.ClientSession,
        gw: RawGateway,
        token: str,
        session_id: str,
        guild_id: int,
        channel_id: int,
        user_id: int,
    ) -> None:
        self.sandbox, self.http, self.gw, self.token = sandbox, http, gw, token
        self.session_id, self.guild_id, self.channel_id, self.user_id = (
            session_id,
            guild_id,
            channel_id,
            user_id,
        )
        self.nonce = 1_300_000_000_000_000_000

    def next_nonce(self) -> str:
        """A fresh snowflake-shaped nonce."""
        self.nonce += 1
        return str(self.nonce)

    async def command_version(self) -> str:
        """Look the /imagine version up in the guild's application-command index."""
        url = f"{self.sandbox.base_url}{V9}/guilds/{self.guild_id}/application-command-index"
        async with self.http.get(url, headers={"Authorization": self.token}) as resp:
            assert resp.status == 200
            index = await resp.json()
        cmd = next(c for c in index["application_commands"] if c["name"] == "imagine")
        assert cmd["id"] == str(IMAGINE_COMMAND_ID) and cmd["application_id"] == str(APPLICATION_ID)
        return str(cmd["version"])

    async def post(self, body: dict[str, Any]) -> tuple[int, Any]:
        """``POST /api/v9/interactions``; the status and JSON body (None for 204)."""
        url = f"{self.sandbox.base_url}{V9}/interactions"
        async with self.http.post(url, json=body, headers={"Authorization": self.token}) as resp:
            return resp.status, (await resp.json() if resp.status != 204 else None)

    async def imagine(self, prompt: str, version: str | None = None) -> str:
        """Send /imagine; returns the nonce."""
        nonce = self.next_nonce()
        status, body = await self.post(
            {
                "type": 2,
                "application_id": str(APPLICATION_ID),
                "guild_id": str(self.guild_id),
                "channel_id": str(self.channel_id),
                "session_id": self.session_id,
                "nonce": nonce,
                "data": {
                    "version": version or await self.command_version(),
                    "id": str(IMAGINE_COMMAND_ID),
                    "name": "imagine",
                    "type": 1,
                    "options": [{"type": 3, "name": "prompt", "value": prompt}],
                },
            }
        )
        assert status == 204, body
        return nonce

    async def button(self, message_id: str, custom_id: str) -> str:
        """Press a button; returns the nonce."""
        nonce = self.next_nonce()
        status, body = await self.post(
            {
                "type": 3,
                "application_id": str(APPLICATION_ID),
                "guild_id": str(self.guild_id),
                "channel_id": str(self.channel_id),
                "message_id": message_id,
                "session_id": self.session_id,
                "nonce": nonce,
                "message_flags": 0,
                "data": {"component_type": 2, "custom_id": custom_id},
            }
        )
        assert status == 204, body
        return nonce

    async def messages(self) -> dict[str, Any]:
        """The next MESSAGE_* dispatch."""
        return await self.gw.recv_until(lambda f: str(f.get("t", "")).startswith("MESSAGE_"))


@pytest.fixture
async def account(sandbox: DiscordSandbox) -> AsyncIterator[Account]:
    """A connected user account in a guild with the Midjourney bot."""
    user, token = sandbox.add_user_account("mjuser")
    guild = sandbox.add_guild("art")
    channel = sandbox.add_channel(guild, "imagine")
    sandbox.join(guild, user)
    async with aiohttp.ClientSession() as http:
        gw = await RawGateway.connect(http, sandbox.gateway_url, compress=True)
        await gw.recv()
        ready = await gw.identify_user(token)
        yield Account(
            sandbox, http, gw, token, ready["d"]["session_id"], guild.id, channel.id, user.id
        )


async def download(http: aiohttp.ClientSession, url: str) -> Image.Image:
    """Fetch an attachment URL as an image."""
    async with http.get(url) as resp:
        assert resp.status == 200
        return Image.open(io.BytesIO(await resp.read()))


async def test_imagine_progress_grid_then_u2(sandbox: DiscordSandbox, account: Account) -> None:
    nonce = await account.imagine("a lighthouse   at dusk —ar 3:2")
    ack = await account.gw.recv_until(lambda f: f.get("t") == "INTERACTION_SUCCESS")
    assert ack["d"]["nonce"] == nonce
    mention = f"<@{account.user_id}>"
    prompt = "a lighthouse at dusk --ar 3:2"  # spacing collapsed, em dash rewritten

    first = await account.messages()
    assert first["t"] == "MESSAGE_CREATE"
    d = first["d"]
    assert d["nonce"] == nonce
    assert d["author"]["id"] == str(APPLICATION_ID)
    assert d["content"] == f"**{prompt}** - {mention} (Waiting to start)"
    assert d["interaction_metadata"]["user"]["id"] == str(account.user_id)
    progress_id = d["id"]

    for percent in (15, 50, 93):
        upd = await account.messages()
        assert upd["t"] == "MESSAGE_UPDATE" and upd["d"]["id"] == progress_id
        assert upd["d"]["content"] == f"**{prompt}** - {mention} ({percent}%) (fast)"
        assert len(upd["d"]["attachments"]) == 1

    final = await account.messages()
    assert final["t"] == "MESSAGE_CREATE" and final["d"]["id"] != progress_id
    fd = final["d"]
    assert "nonce" not in fd
    assert fd["content"] == f"**{prompt}** - {mention} (fast)"
    assert not re.search(r"\(\d+%\)", fd["content"])
    (att,) = fd["attachments"]
    m = re.search(r"_([0-9a-f-]{36})\.png$", att["filename"])
    assert m is not None
    job_hash = m.group(1)
    rows = [[c["custom_id"] for c in row["components"]] for row in fd["components"]]
    assert rows == [
        [f"MJ::JOB::upsample::{n}::{job_hash}" for n in range(1, 5)]
        + [f"MJ::JOB::reroll::0::{job_hash}::SOLO"],
        [f"MJ::JOB::variation::{n}::{job_hash}" for n in range(1, 5)],
    ]
    grid = await download(account.http, att["url"])
    assert grid.size == (64, 64)  # 2×2 tiles of 32 px
    deleted = await account.messages()
    assert deleted["t"] == "MESSAGE_DELETE" and deleted["d"]["id"] == progress_id

    u_nonce = await account.button(fd["id"], f"MJ::JOB::upsample::2::{job_hash}")
    up = await account.messages()
    ud = up["d"]
    assert up["t"] == "MESSAGE_CREATE" and ud["nonce"] == u_nonce
    assert ud["content"] == f"**{prompt}** - Image #2 {mention}"
    assert ud["message_reference"]["message_id"] == fd["id"]
    (uatt,) = ud["attachments"]
    assert uatt["filename"].endswith(".png") and job_hash not in uatt["filename"]
    assert (await download(account.http, uatt["url"])).size == (64, 64)
    up_ids = [c["custom_id"] for c in ud["components"][0]["components"]]
    assert all(cid.startswith(("MJ::JOB::", "MJ::Inpaint::")) for cid in up_ids)
    assert all(cid.endswith(f"{job_hash_of(up_ids[0])}::SOLO") for cid in up_ids)


def job_hash_of(custom_id: str) -> str:
    return custom_id.split("::")[-2]


async def test_variation_and_reroll_make_new_grids(
    sandbox: DiscordSandbox, account: Account
) -> None:
    await account.imagine("a cat")
    final = await account.gw.recv_until(
        lambda f: f.get("t") == "MESSAGE_CREATE" and f["d"]["components"]
    )
    job_hash = final["d"]["attachments"][0]["filename"][-40:-4]
    await account.button(final["d"]["id"], f"MJ::JOB::variation::3::{job_hash}")
    first = await account.gw.recv_until(lambda f: f.get("t") == "MESSAGE_CREATE")
    assert "Variations (Strong) by" in first["d"]["content"] and first["d"]["nonce"]
    grid = await account.gw.recv_until(
        lambda f: f.get("t") == "MESSAGE_CREATE" and f["d"]["components"]
    )
    assert grid["d"]["message_reference"]["message_id"] == final["d"]["id"]
    await account.button(final["d"]["id"], f"MJ::JOB::reroll::0::{job_hash}::SOLO")
    again = await account.gw.recv_until(
        lambda f: f.get("t") == "MESSAGE_CREATE" and f["d"]["components"]
    )
    assert again["d"]["attachments"][0]["filename"][-40:-4] not in (
        job_hash,
        grid["d"]["attachments"][0]["filename"][-40:-4],
    )


async def test_job_queued_then_runs_and_queue_full(
    sandbox: DiscordSandbox, account: Account
) -> None:
    mj = sandbox.midjourney
    assert mj is not None
    mj.settings.max_concurrent = 1
    mj.settings.max_queued = 1
    mj.pause()
    await account.imagine("first")
    first = await account.messages()
    assert first["d"]["content"].endswith("(Waiting to start)")
    n2 = await account.imagine("second")
    queued = await account.messages()
    assert queued["d"]["nonce"] == n2
    assert queued["d"]["embeds"][0]["title"] == "Job queued"
    assert queued["d"]["embeds"][0]["color"] == QUEUED_COLOR
    await account.imagine("third")
    full = await account.messages()
    assert (
        full["d"]["embeds"][0]["title"] == "Queue full" and full["d"]["embeds"][0]["color"] == RED
    )
    mj.resume()
    started = await account.gw.recv_until(
        lambda f: f.get("t") == "MESSAGE_CREATE" and "second" in f["d"]["content"]
    )
    assert started["d"]["content"].endswith("(Waiting to start)")
    assert "nonce" not in started["d"]  # the queued notice carried it
    assert started["d"]["interaction_metadata"]["id"] == queued["d"]["interaction_metadata"]["id"]


async def test_stale_version_fails_with_50035(sandbox: DiscordSandbox, account: Account) -> None:
    old = await account.command_version()
    assert sandbox.midjourney is not None
    new = sandbox.midjourney.republish()
    status, body = await account.post(
        {
            "type": 2,
            "application_id": str(APPLICATION_ID),
            "guild_id": str(account.guild_id),
            "channel_id": str(account.channel_id),
            "session_id": account.session_id,
            "nonce": account.next_nonce(),
            "data": {
                "version": old,
                "id": str(IMAGINE_COMMAND_ID),
                "name": "imagine",
                "type": 1,
                "options": [{"type": 3, "name": "prompt", "value": "x"}],
            },
        }
    )
    assert status == 400
    assert body["code"] == 50035
    assert (
        body["errors"]["data"]["_errors"][0]["code"]
        == "INTERACTION_APPLICATION_COMMAND_INVALID_VERSION"
    )
    assert await account.command_version() == str(new)
    await account.imagine("works again")


async def test_body_validation(sandbox: DiscordSandbox, account: Account) -> None:
    base = {
        "application_id": str(APPLICATION_ID),
        "guild_id": str(account.guild_id),
        "channel_id": str(account.channel_id),
        "session_id": account.session_id,
        "nonce": "1",
    }
    status, body = await account.post(
        {**base, "type": 2, "session_id": "not-mine", "data": {"id": str(IMAGINE_COMMAND_ID)}}
    )
    assert status == 400 and body["code"] == 50035
    status, body = await account.post(
        {**base, "type": 3, "message_id": "123", "data": {"component_type": 2, "custom_id": "x"}}
    )
    assert status == 404 and body["code"] == 10008
    status, _ = await account.post({**base, "type": 7, "data": {}})
    assert status == 400
    async with account.http.post(f"{sandbox.base_url}{V9}/interactions", json=base) as resp:
        assert resp.status == 401


@pytest.mark.parametrize("kind", sorted(ERRORS))
async def test_error_embeds_by_marker_and_account_fault(
    sandbox: DiscordSandbox, account: Account, kind: str
) -> None:
    title = ERRORS[kind][0]
    nonce = await account.imagine(f"a dog mjfault:{kind}")
    msg = await account.messages()
    assert msg["d"]["nonce"] == nonce
    assert msg["d"]["embeds"][0]["title"] == title and msg["d"]["embeds"][0]["color"] == RED
    assert sandbox.midjourney is not None
    sandbox.midjourney.fail_next(account.user_id, kind)
    await account.imagine("a fine dog")
    assert (await account.messages())["d"]["embeds"][0]["title"] == title
    sandbox.midjourney.set_account_fault(account.user_id, kind)
    for _ in range(2):
        await account.imagine("another dog")
        assert (await account.messages())["d"]["embeds"][0]["title"] == title
    sandbox.midjourney.set_account_fault(account.user_id, None)
    await account.imagine("a dog at last")
    assert (await account.messages())["d"]["content"].endswith("(Waiting to start)")


@pytest.mark.parametrize(
    ("prompt", "title", "detail"),
    [
        ("a bannedword here", "Banned prompt detected", "community standards"),
        ("a cat --ar 0:1", "Invalid parameter", "Invalid aspect ratio"),
        ("a cat --ar 9:1", "Invalid parameter", "out of range"),
        ("a cat --foo 3", "Invalid parameter", "--foo"),
        ("a cat --v 99", "Invalid parameter", "--v"),
    ],
)
async def test_prompt_checks(
    sandbox: DiscordSandbox, account: Account, prompt: str, title: str, detail: str
) -> None:
    await account.imagine(prompt)
    embed = (await account.messages())["d"]["embeds"][0]
    assert embed["title"] == title and detail in embed["description"]


async def test_a_running_job_stopped_by_the_output_filter(
    sandbox: DiscordSandbox, account: Account
) -> None:
    """Progress starts, then the progress message goes and a red embed answers the request."""
    assert sandbox.midjourney is not None
    sandbox.midjourney.fail_next_run(account.user_id)
    nonce = await account.imagine("a lighthouse")
    first = await account.messages()
    assert first["d"]["nonce"] == nonce and first["d"]["content"].endswith("(Waiting to start)")
    assert (await account.messages())["t"] == "MESSAGE_UPDATE"  # the first progress step
    gone = await account.messages()
    assert gone["t"] == "MESSAGE_DELETE" and gone["d"]["id"] == first["d"]["id"]
    error = await account.messages()
    assert error["t"] == "MESSAGE_CREATE" and "nonce" not in error["d"]
    assert error["d"]["embeds"][0]["title"] == ERRORS["output_filtered"][0]
    assert error["d"]["interaction_metadata"] == first["d"]["interaction_metadata"]
    # Only the next run is stopped.
    await account.imagine("another lighthouse")
    while (msg := await account.messages())["t"] != "MESSAGE_DELETE":
        assert not msg["d"].get("embeds"), msg
