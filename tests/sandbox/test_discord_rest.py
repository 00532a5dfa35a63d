"""The sandbox REST API: auth, rate limits, interaction rules, uploads, faults."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from gouache_sandbox.discord import DiscordSandbox


async def test_auth_and_exact_content_type(
    sandbox: DiscordSandbox, http: aiohttp.ClientSession, world: dict[str, Any]
) -> None:
    async with http.get(f"{sandbox.api_base}/users/@me", headers=world["auth"]) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/json"
        assert (await resp.json())["id"] == str(world["bot"].id)
    for header in ({}, {"Authorization": "Bot nope"}, {"Authorization": world["token"]}):
        async with http.get(f"{sandbox.api_base}/users/@me", headers=header) as resp:
            assert resp.status == 401
            assert await resp.json() == {"message": "401: Unauthorized", "code": 0}
    _, user_token = sandbox.add_user_account("acct")
    async with http.get(
        f"{sandbox.base_url}/api/v9/users/@me", headers={"Authorization": user_token}
    ) as resp:
        assert resp.status == 200 and "bot" not in await resp.json()
    async with http.get(f"{sandbox.api_base}/gateway/bot", headers=world["auth"]) as resp:
        body = await resp.json()
        assert body["url"] == sandbox.gateway_url
        assert set(body["session_start_limit"]) == {
            "total",
            "remaining",
            "reset_after",
            "max_concurrency",
        }


async def test_rate_limit_headers_and_429_shape(
    sandbox: DiscordSandbox, http: aiohttp.ClientSession, world: dict[str, Any]
) -> None:
    url = f"{sandbox.api_base}/channels/{world['channel'].id}/messages"
    remaining = []
    for i in range(5):
        async with http.post(url, json={"content": f"m{i}"}, headers=world["auth"]) as resp:
            assert resp.status == 200
            remaining.append(resp.headers["X-RateLimit-Remaining"])
            assert resp.headers["X-RateLimit-Limit"] == "5"
            assert float(resp.headers["X-RateLimit-Reset-After"]) <= 5.0
            assert resp.headers["X-RateLimit-Bucket"]
    assert remaining == ["4", "3", "2", "1", "0"]
    async with http.post(url, json={"content": "over"}, headers=world["auth"]) as resp:
        assert resp.status == 429
        body = await resp.json()
        assert set(body) == {"message", "retry_after", "global"} and body["global"] is False
        assert 0 < body["retry_after"] <= 5
        assert resp.headers["Via"] and resp.headers["Retry-After"]
        assert resp.headers["X-RateLimit-Scope"] == "user"
    sandbox.clock.advance(5.0)
    async with http.post(url, json={"content": "later"}, headers=world["auth"]) as resp:
        assert resp.status == 200


async def test_global_limit(
    sandbox: DiscordSandbox, http: aiohttp.ClientSession, world: dict[str, Any]
) -> None:
    sandbox.rest.ratelimits.global_limit = type(sandbox.rest.ratelimits.global_limit)(3, 1.0)
    sandbox.clock.advance(1.0)  # a fresh global window (the fixture's requests counted too)
    statuses = []
    for _ in range(4):
        async with http.get(f"{sandbox.api_base}/gateway/bot", headers=world["auth"]) as resp:
            statuses.append(resp.status)
            last = resp
            body = await resp.json()
    assert statuses == [200, 200, 200, 429]
    assert body["global"] is True and last.headers["X-RateLimit-Global"] == "true"


async def test_interaction_callback_rules(
    sandbox: DiscordSandbox, http: aiohttp.ClientSession, world: dict[str, Any]
) -> None:
    inter = world["member"].invoke(world["channel"].id, "draw", {"prompt": "x"})
    cb = f"{sandbox.api_base}/interactions/{inter.id}/{inter.token}/callback"
    # Too late: the first answer must come within 3 s.
    sandbox.clock.advance(3.5)
    async with http.post(cb, json={"type": 5}) as resp:
        assert resp.status == 404 and (await resp.json())["code"] == 10062
    assert inter.late_callbacks == 1 and inter.responded_at is None  # "This interaction failed"

    inter = world["member"].invoke(world["channel"].id, "draw", {"prompt": "y"})
    cb = f"{sandbox.api_base}/interactions/{inter.id}/{inter.token}/callback"
    async with http.post(cb, json={"type": 5}, params={"with_response": "1"}) as resp:
        assert resp.status == 200
        body = await resp.json()
        assert body["interaction"]["id"] == str(inter.id)
        assert body["interaction"]["response_message_loading"] is True
        assert body["resource"]["type"] == 5 and body["resource"]["message"]["flags"] & 128
    assert inter.responded_at is not None and inter.responded_at >= inter.created_at
    async with http.post(cb, json={"type": 4, "data": {"content": "again"}}) as resp:
        assert resp.status == 400 and (await resp.json())["code"] == 40060

    hook = f"{sandbox.api_base}/webhooks/{world['app_id']}/{inter.token}"
    async with http.patch(f"{hook}/messages/@original", json={"content": "done"}) as resp:
        assert resp.status == 200 and (await resp.json())["content"] == "done"
    async with http.post(hook, json={"content": "more"}, params={"wait": "1"}) as resp:
        assert resp.status == 200
        followup = await resp.json()
    async with http.patch(f"{hook}/messages/{followup['id']}", json={"content": "more!"}) as resp:
        assert (await resp.json())["content"] == "more!"
    async with http.get(
        f"{sandbox.api_base}/webhooks/{world['app_id']}/bogus/messages/@original"
    ) as resp:
        assert resp.status == 404
    sandbox.clock.advance(15 * 60 + 1)
    async with http.patch(f"{hook}/messages/@original", json={"content": "late"}) as resp:
        assert resp.status == 401
        assert await resp.json() == {"message": "Invalid Webhook Token", "code": 50027}
    # The channel endpoint with the bot token still works after the token expired.
    url = f"{sandbox.api_base}/channels/{world['channel'].id}/messages/{inter.original_message_id}"
    async with http.patch(url, json={"content": "late but fine"}, headers=world["auth"]) as resp:
        assert resp.status == 200


async def test_multipart_upload_edit_and_download(
    sandbox: DiscordSandbox, http: aiohttp.ClientSession, world: dict[str, Any]
) -> None:
    form = aiohttp.FormData()
    form.add_field(
        "payload_json",
        json.dumps(
            {
                "content": "pic",
                "embeds": [{"title": "t", "image": {"url": "attachment://a.png"}}],
                "attachments": [{"id": 0, "filename": "a.png"}],
                "components": [
                    {
                        "type": 1,
                        "components": [{"type": 2, "style": 1, "label": "Go", "custom_id": "go"}],
                    }
                ],
            }
        ),
        content_type="application/json",
    )
    form.add_field("files[0]", b"\x89PNG\r\n\x1a\nfake", filename="a.png", content_type="image/png")
    url = f"{sandbox.api_base}/channels/{world['channel'].id}/messages"
    async with http.post(url, data=form, headers=world["auth"]) as resp:
        assert resp.status == 200
        msg = await resp.json()
    att = msg["attachments"][0]
    assert att["filename"] == "a.png" and att["size"] == 12
    assert msg["components"][0]["components"][0]["custom_id"] == "go"
    async with http.get(att["url"]) as resp:
        assert resp.status == 200 and await resp.read() == b"\x89PNG\r\n\x1a\nfake"
    # Edit: keep the old file, add a new one.
    form = aiohttp.FormData()
    form.add_field("payload_json", json.dumps({"attachments": [{"id": att["id"]}, {"id": 1}]}))
    form.add_field("files[1]", b"second", filename="b.txt", content_type="text/plain")
    async with http.patch(f"{url}/{msg['id']}", data=form, headers=world["auth"]) as resp:
        edited = await resp.json()
    assert [a["filename"] for a in edited["attachments"]] == ["a.png", "b.txt"]
    async with http.get(f"{url}?limit=10", headers=world["auth"]) as resp:
        listed = await resp.json()
    assert [m["id"] for m in listed] == [msg["id"]]
    # Signed URLs expire like Discord's CDN links.
    sandbox.clock.advance(25 * 3600)
    async with http.get(att["url"]) as resp:
        assert resp.status == 404


async def test_validation_errors(
    sandbox: DiscordSandbox, http: aiohttp.ClientSession, world: dict[str, Any]
) -> None:
    url = f"{sandbox.api_base}/channels/{world['channel'].id}/messages"
    async with http.post(url, json={}, headers=world["auth"]) as resp:
        assert resp.status == 400 and (await resp.json())["code"] == 50006
    async with http.post(
        url, json={"embeds": [{"title": "x" * 300}]}, headers=world["auth"]
    ) as resp:
        body = await resp.json()
        assert resp.status == 400 and body["code"] == 50035
        assert (
            body["errors"]["embeds"]["0"]["title"]["_errors"][0]["code"] == "BASE_TYPE_MAX_LENGTH"
        )


async def test_rest_faults(
    sandbox: DiscordSandbox, http: aiohttp.ClientSession, world: dict[str, Any]
) -> None:
    sandbox.fail_route("GET", "/users/@me", 503, times=2)
    statuses = []
    for _ in range(3):
        async with http.get(f"{sandbox.api_base}/users/@me", headers=world["auth"]) as resp:
            statuses.append(resp.status)
    assert statuses == [503, 503, 200]
    sandbox.fail_route("*", "/channels/*", 500, duration=10)
    async with http.get(
        f"{sandbox.api_base}/channels/{world['channel'].id}", headers=world["auth"]
    ) as resp:
        assert resp.status == 500
    sandbox.clock.advance(10)
    async with http.get(
        f"{sandbox.api_base}/channels/{world['channel'].id}", headers=world["auth"]
    ) as resp:
        assert resp.status == 200
    # Over HTTP too.
    async with http.post(
        f"{sandbox.base_url}/_sandbox/rest/faults",
        json={"method": "GET", "route": "/gateway", "status": 502, "times": 1},
    ) as resp:
        assert resp.status == 200
    async with http.get(f"{sandbox.api_base}/gateway") as resp:
        assert resp.status == 502


async def test_interaction_webhooks_have_per_token_buckets_outside_the_global_limit(
    sandbox: DiscordSandbox, http: aiohttp.ClientSession, world: dict[str, Any]
) -> None:
    sandbox.rest.ratelimits.global_limit = type(sandbox.rest.ratelimits.global_limit)(1, 1.0)
    inter = world["member"].invoke(world["channel"].id, "draw", {"prompt": "x"})
    async with http.post(
        f"{sandbox.api_base}/interactions/{inter.id}/{inter.token}/callback",
        json={"type": 4, "data": {"content": "hi"}},
    ) as resp:
        assert resp.status == 204
    hook = f"{sandbox.api_base}/webhooks/{world['app_id']}/{inter.token}/messages/@original"
    statuses = []
    for _ in range(5):
        async with http.get(hook) as resp:
            statuses.append(resp.status)
            last = resp
            body = await resp.json()
    # The callback used one of the token's 5 requests per 2 s; the global limit (1/s) never applies.
    assert statuses == [200, 200, 200, 200, 429]
    assert body["global"] is False and last.headers["Via"]


async def test_delete_original_and_delayed_route(
    sandbox: DiscordSandbox, http: aiohttp.ClientSession, world: dict[str, Any]
) -> None:
    inter = world["member"].invoke(world["channel"].id, "draw", {"prompt": "x"})
    cb = f"{sandbox.api_base}/interactions/{inter.id}/{inter.token}/callback"
    async with http.post(cb, json={"type": 4, "data": {"content": "bye"}}) as resp:
        assert resp.status == 204
    hook = f"{sandbox.api_base}/webhooks/{world['app_id']}/{inter.token}/messages/@original"
    async with http.delete(hook) as resp:
        assert resp.status == 204
    async with http.get(hook) as resp:
        assert resp.status == 404 and (await resp.json())["code"] == 10008
    assert sandbox.messages(world["channel"].id) == []

    sandbox.delay_route("GET", "/users/@me", 0.2, times=1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with http.get(f"{sandbox.api_base}/users/@me", headers=world["auth"]) as resp:
        assert resp.status == 200
    assert loop.time() - started >= 0.2


async def test_channel_command_index_for_user_accounts(
    sandbox: DiscordSandbox, http: aiohttp.ClientSession, world: dict[str, Any]
) -> None:
    user, token = sandbox.add_user_account("acct")
    sandbox.join(world["guild"], user)
    url = f"{sandbox.base_url}/api/v9/channels/{world['channel'].id}/application-command-index"
    async with http.get(url, headers={"Authorization": token}) as resp:
        index = await resp.json()
    names = {(c["name"], c["application_id"]) for c in index["application_commands"]}
    assert ("draw", str(world["app_id"])) in names
    assert ("imagine", "936929561302675456") in names
    assert all(c["version"] for c in index["application_commands"])
    async with http.get(url, headers=world["auth"]) as resp:
        assert resp.status == 401  # user accounts only


async def test_enforce_nonce_returns_the_earlier_message_instead_of_a_copy(
    sandbox: DiscordSandbox, http: aiohttp.ClientSession, world: dict[str, Any]
) -> None:
    """Discord: with ``enforce_nonce``, a second message by the same author with the same
    nonce in the past few minutes returns the first and creates nothing."""
    url, auth = world["url"], world["auth"]
    body = {"content": "result", "nonce": "4242", "enforce_nonce": True}
    async with http.post(url, json=body, headers=auth) as resp:
        first = await resp.json()
    async with http.post(url, json=body, headers=auth) as resp:
        again = await resp.json()
    assert resp.status == 200 and again["id"] == first["id"]
    async with http.post(url, json={**body, "enforce_nonce": False}, headers=auth) as resp:
        unenforced = await resp.json()  # without the flag a nonce is only echoed
    assert unenforced["id"] != first["id"]
    sandbox.state.clock.advance(600)  # long past "a few minutes": the nonce is forgotten
    async with http.post(url, json=body, headers=auth) as resp:
        later = await resp.json()
    assert later["id"] not in (first["id"], unenforced["id"])
    channel_id = world["channel"].id
    assert len(sandbox.state.messages[channel_id]) == 3
    async with http.post(url, json={**body, "nonce": "x" * 26}, headers=auth) as resp:
        assert resp.status == 400 and (await resp.json())["code"] == 50035


async def test_a_fault_after_the_call_carries_it_out_and_loses_the_answer(
    sandbox: DiscordSandbox, http: aiohttp.ClientSession, world: dict[str, Any]
) -> None:
    fault = sandbox.fail_route("POST", "/channels/*/messages", 502, times=1, after=True)
    async with http.post(world["url"], json={"content": "hi"}, headers=world["auth"]) as resp:
        assert resp.status == 502
    assert fault.hits == 1
    (made,) = sandbox.state.messages[world["channel"].id].values()
    assert made.content == "hi"  # Discord made it; only the answer was lost
