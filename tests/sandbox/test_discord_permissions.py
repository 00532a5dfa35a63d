"""Discord's permissions in the sandbox: the arithmetic, the 403s, and what clients are told."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from gouache_sandbox.discord import DiscordSandbox
from gouache_sandbox.discord.permissions import (
    ALL,
    DEFAULT_EVERYONE,
    P,
    base_permissions,
    channel_permissions,
    effective,
    everyone_permissions,
)
from gouache_sandbox.discord.state import SandboxClock, SandboxState
from gouache_sandbox.instant import tiny_png
from tests.sandbox.gwclient import RawGateway

# -- the arithmetic, as the docs' pseudocode states it ---------------------------------------


def _guild() -> tuple[SandboxState, Any, Any]:
    state = SandboxState(SandboxClock())
    owner = state.new_user("owner")
    guild = state.new_guild("g", owner)
    channel = state.new_channel(guild, "c")
    return state, guild, channel


def test_owner_and_administrator_have_every_bit_whatever_the_overwrites() -> None:
    state, guild, channel = _guild()
    admin_role = state.new_role(guild, "admin", P.ADMINISTRATOR)
    admin = state.new_user("admin")
    state.add_member(guild, admin, [admin_role.id])
    state.set_overwrite(channel, guild.id, deny=P.VIEW_CHANNEL)
    state.set_overwrite(channel, admin.id, deny=P.SEND_MESSAGES)
    assert channel_permissions(guild, channel, guild.owner_id) == ALL
    assert channel_permissions(guild, channel, admin.id) == ALL
    assert base_permissions(guild, state.new_user("stranger").id) == 0


def test_overwrites_apply_in_discords_order() -> None:
    state, guild, channel = _guild()
    a = state.new_role(guild, "a")
    b = state.new_role(guild, "b")
    user = state.new_user("u")
    state.add_member(guild, user, [a.id, b.id])
    assert channel_permissions(guild, channel, user.id) == DEFAULT_EVERYONE
    # @everyone's overwrite first…
    state.set_overwrite(channel, guild.id, deny=P.SEND_MESSAGES | P.ATTACH_FILES)
    assert not channel_permissions(guild, channel, user.id) & P.SEND_MESSAGES
    # …then the roles together: one role's allow beats another role's deny, whatever the positions.
    state.set_overwrite(channel, a.id, deny=P.EMBED_LINKS)
    state.set_overwrite(channel, b.id, allow=P.SEND_MESSAGES | P.EMBED_LINKS)
    perms = channel_permissions(guild, channel, user.id)
    assert perms & P.SEND_MESSAGES and perms & P.EMBED_LINKS and not perms & P.ATTACH_FILES
    # …then the member's own overwrite, last.
    state.set_overwrite(channel, user.id, deny=P.SEND_MESSAGES, allow=P.ATTACH_FILES)
    perms = channel_permissions(guild, channel, user.id)
    assert not perms & P.SEND_MESSAGES and perms & P.ATTACH_FILES
    # A role the member does not hold changes nothing.
    other = state.new_role(guild, "other")
    state.set_overwrite(channel, other.id, allow=P.SEND_MESSAGES)
    assert channel_permissions(guild, channel, user.id) == perms


def test_implicit_rules_mask_what_view_and_send_gate() -> None:
    no_view = DEFAULT_EVERYONE & ~P.VIEW_CHANNEL
    assert effective(no_view) == 0
    no_send = DEFAULT_EVERYONE & ~P.SEND_MESSAGES
    masked = effective(no_send)
    assert not masked & (P.ATTACH_FILES | P.EMBED_LINKS | P.MENTION_EVERYONE)
    assert masked & P.READ_MESSAGE_HISTORY and masked & P.VIEW_CHANNEL
    assert effective(ALL) == ALL


def test_everyone_permissions_are_the_role_and_its_overwrite_only() -> None:
    state, guild, channel = _guild()
    state.set_overwrite(channel, guild.id, deny=P.ATTACH_FILES)
    bot_role = state.new_role(guild, "bot", P.ATTACH_FILES)
    state.set_overwrite(channel, bot_role.id, allow=P.ATTACH_FILES)
    assert not everyone_permissions(guild, channel) & P.ATTACH_FILES
    assert everyone_permissions(guild, channel) & P.EMBED_LINKS


# -- REST: what a bot may do ------------------------------------------------------------------


def _upload(payload: dict[str, Any]) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("payload_json", json.dumps(payload), content_type="application/json")
    form.add_field("files[0]", tiny_png(1), filename="a.png", content_type="image/png")
    return form


async def _error(resp: aiohttp.ClientResponse) -> tuple[int, int]:
    return resp.status, int((await resp.json())["code"])


async def test_bot_needs_attach_files_to_upload_and_send_messages_to_post(
    sandbox: DiscordSandbox, http: aiohttp.ClientSession, world: dict[str, Any]
) -> None:
    url, auth, bot, channel = world["url"], world["auth"], world["bot"], world["channel"]
    async with http.post(url, data=_upload({"content": "pic"}), headers=auth) as resp:
        assert resp.status == 200
    # An overwrite on the bot's own role takes ATTACH_FILES away in this channel only.
    role = sandbox.bot_role(world["guild"], bot)
    sandbox.set_overwrite(channel, role.id, deny=P.ATTACH_FILES)
    async with http.post(url, data=_upload({"content": "pic"}), headers=auth) as resp:
        assert await _error(resp) == (403, 50013)
        assert (await resp.json())["message"] == "Missing Permissions"
    async with http.post(url, json={"content": "text is fine"}, headers=auth) as resp:
        assert resp.status == 200
    # Without SEND_MESSAGES, ATTACH_FILES granted explicitly does not count (implicit rule).
    sandbox.set_overwrite(channel, bot.id, deny=P.SEND_MESSAGES, allow=P.ATTACH_FILES)
    async with http.post(url, json={"content": "no"}, headers=auth) as resp:
        assert await _error(resp) == (403, 50013)
    # Without VIEW_CHANNEL the channel does not exist for the bot: 50001.
    sandbox.set_overwrite(channel, bot.id, deny=P.VIEW_CHANNEL)
    async with http.post(url, json={"content": "no"}, headers=auth) as resp:
        assert await _error(resp) == (403, 50001)
    async with http.get(f"{sandbox.api_base}/channels/{channel.id}", headers=auth) as resp:
        assert await _error(resp) == (403, 50001)
    assert sandbox.clear_overwrite(channel, bot.id)
    sandbox.clock.advance(5)  # past the channel's 5-per-5-s bucket (403s count in it too)
    async with http.post(url, json={"content": "back"}, headers=auth) as resp:
        assert resp.status == 200


async def test_embeds_are_dropped_without_embed_links(
    sandbox: DiscordSandbox, http: aiohttp.ClientSession, world: dict[str, Any]
) -> None:
    url, auth = world["url"], world["auth"]
    role = sandbox.bot_role(world["guild"], world["bot"])
    sandbox.set_role_permissions(world["guild"], role.id, role.permissions & ~P.EMBED_LINKS)
    sandbox.set_role_permissions(
        world["guild"], world["guild"].id, DEFAULT_EVERYONE & ~P.EMBED_LINKS
    )
    embed = {"title": "hello", "description": "x"}
    async with http.post(url, json={"content": "c", "embeds": [embed]}, headers=auth) as resp:
        assert resp.status == 200
        sent = await resp.json()
        assert sent["content"] == "c" and sent["embeds"] == []
    async with http.post(url, json={"embeds": [embed]}, headers=auth) as resp:
        assert await _error(resp) == (400, 50006)  # nothing is left to send
    async with http.patch(f"{url}/{sent['id']}", json={"embeds": [embed]}, headers=auth) as resp:
        assert resp.status == 200 and (await resp.json())["embeds"] == []


async def test_history_delete_and_reactions_need_their_bits(
    sandbox: DiscordSandbox, http: aiohttp.ClientSession, world: dict[str, Any]
) -> None:
    url, auth, channel = world["url"], world["auth"], world["channel"]
    theirs = sandbox.state.messages[channel.id]
    async with http.post(url, json={"content": "mine"}, headers=auth) as resp:
        mine = await resp.json()
    other_user, other_token = sandbox.add_user_account("other")
    sandbox.join(world["guild"], other_user)
    async with http.post(
        url, json={"content": "theirs"}, headers={"Authorization": other_token}
    ) as resp:
        assert resp.status == 200
        other_msg = await resp.json()
    assert len(theirs) == 2
    # Deleting someone else's message needs MANAGE_MESSAGES; one's own does not.
    async with http.delete(f"{url}/{other_msg['id']}", headers=auth) as resp:
        assert await _error(resp) == (403, 50013)
    async with http.put(
        f"{url}/{other_msg['id']}/reactions/%F0%9F%91%8D/@me", headers=auth
    ) as resp:
        assert resp.status == 204
    # Reading history: an empty list without READ_MESSAGE_HISTORY (documented), 403 for one message.
    sandbox.set_overwrite(channel, world["bot"].id, deny=P.READ_MESSAGE_HISTORY | P.ADD_REACTIONS)
    async with http.get(url, headers=auth) as resp:
        assert resp.status == 200 and await resp.json() == []
    async with http.get(f"{url}/{mine['id']}", headers=auth) as resp:
        assert await _error(resp) == (403, 50013)
    async with http.put(f"{url}/{mine['id']}/reactions/%E2%9C%85/@me", headers=auth) as resp:
        assert await _error(resp) == (403, 50013)
    reply = {"content": "re", "message_reference": {"message_id": mine["id"]}}
    async with http.post(url, json=reply, headers=auth) as resp:
        assert await _error(resp) == (403, 50013)
    sandbox.set_overwrite(channel, world["bot"].id, allow=P.MANAGE_MESSAGES)
    async with http.get(url, headers=auth) as resp:
        assert [m["id"] for m in await resp.json()] == [other_msg["id"], mine["id"]]
        assert (await resp.json())[0]["reactions"][0]["count"] == 1
    async with http.delete(f"{url}/{other_msg['id']}", headers=auth) as resp:
        assert resp.status == 204


# -- what clients are told: GUILD_CREATE and interactions ---------------------------------------


async def test_guild_create_and_interactions_carry_roles_overwrites_and_computed_bits(
    sandbox: DiscordSandbox, http: aiohttp.ClientSession, world: dict[str, Any]
) -> None:
    guild, channel, bot, alice = world["guild"], world["channel"], world["bot"], world["member"]
    gold = sandbox.add_role(guild, "gold", P.MANAGE_MESSAGES)
    sandbox.set_member_roles(guild, alice.id, [gold.id])
    sandbox.set_overwrite(channel, guild.id, deny=P.EMBED_LINKS)
    sandbox.set_overwrite(channel, bot.id, deny=P.ATTACH_FILES)
    gw = await RawGateway.connect(http, sandbox.gateway_url)
    await gw.recv()
    await gw.identify_bot(world["token"], intents=1 | (1 << 9))
    created = await gw.recv_until(lambda f: f.get("t") == "GUILD_CREATE")
    g = created["d"]
    roles = {r["id"]: r for r in g["roles"]}
    assert roles[str(guild.id)]["permissions"] == str(DEFAULT_EVERYONE)
    managed = sandbox.bot_role(guild, bot)
    assert roles[str(managed.id)]["managed"] is True
    assert roles[str(managed.id)]["tags"] == {"bot_id": str(bot.id)}
    ch = next(c for c in g["channels"] if c["id"] == str(channel.id))
    assert {(o["id"], o["type"], o["deny"]) for o in ch["permission_overwrites"]} == {
        (str(guild.id), 0, str(int(P.EMBED_LINKS))),
        (str(bot.id), 1, str(int(P.ATTACH_FILES))),
    }
    me = g["members"][0]
    assert me["user"]["id"] == str(bot.id) and me["roles"] == [str(managed.id)]

    inter = alice.invoke(channel.id, "draw", {"prompt": "x"})
    d = (await gw.recv_until(lambda f: f.get("t") == "INTERACTION_CREATE"))["d"]
    assert d["id"] == str(inter.id)
    app_perms, member_perms = int(d["app_permissions"]), int(d["member"]["permissions"])
    assert app_perms == sandbox.permissions_of(bot.id, channel)
    assert not app_perms & P.ATTACH_FILES and not app_perms & P.EMBED_LINKS
    assert app_perms & P.SEND_MESSAGES
    assert member_perms & P.MANAGE_MESSAGES and not member_perms & P.EMBED_LINKS
    # A change at run time reaches the bot as CHANNEL_UPDATE.
    sandbox.clear_overwrite(channel, bot.id)
    update = await gw.recv_until(lambda f: f.get("t") == "CHANNEL_UPDATE")
    assert [o["id"] for o in update["d"]["permission_overwrites"]] == [str(guild.id)]
    await gw.ws.close()


async def test_members_cannot_invoke_where_they_may_not(
    sandbox: DiscordSandbox, world: dict[str, Any]
) -> None:
    guild, channel, alice = world["guild"], world["channel"], world["member"]
    sandbox.set_overwrite(channel, alice.id, deny=P.USE_APPLICATION_COMMANDS)
    with pytest.raises(PermissionError, match="may not use commands"):
        alice.invoke(channel.id, "draw", {"prompt": "x"})
    sandbox.set_overwrite(channel, alice.id, deny=P.VIEW_CHANNEL)
    with pytest.raises(PermissionError, match="cannot see"):
        alice.invoke(channel.id, "draw", {"prompt": "x"})
    assert not sandbox.state.can_see(alice.id, channel.id)
    sandbox.clear_overwrite(channel, alice.id)
    assert alice.invoke(channel.id, "draw", {"prompt": "x"}).guild_id == guild.id


async def test_a_user_account_needs_view_and_commands_for_post_interactions(
    sandbox: DiscordSandbox, http: aiohttp.ClientSession, world: dict[str, Any]
) -> None:
    user, token = sandbox.add_user_account("acct")
    sandbox.join(world["guild"], user)
    gw = await RawGateway.connect(http, sandbox.gateway_url)
    await gw.recv()
    await gw.send({"op": 2, "d": {"token": token, "capabilities": 16381, "properties": {}}})
    ready = await gw.recv_until(lambda f: f.get("t") == "READY")
    cmd = next(c for c in sandbox.state.commands.values() if c.name == "draw")
    body = {
        "type": 2,
        "application_id": str(world["app_id"]),
        "guild_id": str(world["guild"].id),
        "channel_id": str(world["channel"].id),
        "session_id": ready["d"]["session_id"],
        "nonce": "1234",
        "data": {
            "id": str(cmd.id),
            "version": str(cmd.version),
            "name": "draw",
            "type": 1,
            "options": [{"type": 3, "name": "prompt", "value": "x"}],
        },
    }
    url = f"{sandbox.base_url}/api/v9/interactions"
    sandbox.set_overwrite(world["channel"], user.id, deny=P.USE_APPLICATION_COMMANDS)
    async with http.post(url, json=body, headers={"Authorization": token}) as resp:
        assert await _error(resp) == (403, 50013)
    sandbox.set_overwrite(world["channel"], user.id, deny=P.VIEW_CHANNEL)
    async with http.post(url, json=body, headers={"Authorization": token}) as resp:
        assert await _error(resp) == (403, 50001)
    sandbox.clear_overwrite(world["channel"], user.id)
    async with http.post(url, json=body, headers={"Authorization": token}) as resp:
        assert resp.status == 204
    await gw.ws.close()


# -- interaction responses: the webhook's rules, the deferred follow-up, resolved data ----------


async def test_interaction_responses_need_no_channel_bits_but_everyones_files_and_embeds(
    sandbox: DiscordSandbox, http: aiohttp.ClientSession, world: dict[str, Any]
) -> None:
    guild, channel, bot, alice = world["guild"], world["channel"], world["bot"], world["member"]
    # The bot itself may neither see nor post here: its answers go through the webhook anyway.
    sandbox.set_overwrite(channel, bot.id, deny=P.VIEW_CHANNEL | P.SEND_MESSAGES)
    inter = alice.invoke(channel.id, "draw", {"prompt": "x"})
    cb = f"{sandbox.api_base}/interactions/{inter.id}/{inter.token}/callback"
    async with http.post(cb, json={"type": 4, "data": {"content": "queued"}}) as resp:
        assert resp.status == 204
    hook = f"{sandbox.api_base}/webhooks/{world['app_id']}/{inter.token}"
    embed = {"title": "t"}
    async with http.patch(f"{hook}/messages/@original", data=_upload({"embeds": [embed]})) as resp:
        assert resp.status == 200
        done = await resp.json()
        assert len(done["attachments"]) == 1 and done["embeds"][0]["title"] == "t"
    # Files and embeds there follow @everyone's bits in the channel.
    sandbox.set_overwrite(channel, guild.id, deny=P.ATTACH_FILES | P.EMBED_LINKS)
    async with http.patch(f"{hook}/messages/@original", data=_upload({"content": "x"})) as resp:
        assert await _error(resp) == (403, 50013)
    async with http.post(hook, json={"content": "c", "embeds": [embed]}) as resp:
        assert resp.status == 200 and (await resp.json())["embeds"] == []
    # The channel route with the bot's token is closed.
    async with http.patch(
        f"{world['url']}/{done['id']}", json={"content": "y"}, headers=world["auth"]
    ) as resp:
        assert await _error(resp) == (403, 50001)


async def test_first_followup_after_a_deferral_edits_the_thinking_message(
    sandbox: DiscordSandbox, http: aiohttp.ClientSession, world: dict[str, Any]
) -> None:
    inter = world["member"].invoke(world["channel"].id, "draw", {"prompt": "x"})
    cb = f"{sandbox.api_base}/interactions/{inter.id}/{inter.token}/callback"
    async with http.post(cb, json={"type": 5, "data": {"flags": 64}}) as resp:
        assert resp.status == 204
    thinking = inter.original_message_id
    hook = f"{sandbox.api_base}/webhooks/{world['app_id']}/{inter.token}"
    async with http.post(hook, json={"content": "first", "flags": 0}, params={"wait": "1"}) as r:
        first = await r.json()
    assert first["id"] == str(thinking) and first["content"] == "first"
    assert first["flags"] & 64 and not first["flags"] & 128  # still ephemeral, no longer loading
    async with http.post(hook, json={"content": "second"}, params={"wait": "1"}) as r:
        second = await r.json()
    assert second["id"] != str(thinking)
    stored = sandbox.state.messages[world["channel"].id]
    assert stored[thinking].content == "first" and stored[int(second["id"])].content == "second"

    # After a plain (type 4) response every follow-up is a new message.
    inter = world["member"].invoke(world["channel"].id, "draw", {"prompt": "y"})
    cb = f"{sandbox.api_base}/interactions/{inter.id}/{inter.token}/callback"
    async with http.post(cb, json={"type": 4, "data": {"content": "now"}}) as resp:
        assert resp.status == 204
    hook = f"{sandbox.api_base}/webhooks/{world['app_id']}/{inter.token}"
    async with http.post(hook, json={"content": "more"}, params={"wait": "1"}) as r:
        assert (await r.json())["id"] != str(inter.original_message_id)


async def test_options_of_users_roles_channels_and_attachments_are_resolved(
    sandbox: DiscordSandbox, http: aiohttp.ClientSession, world: dict[str, Any]
) -> None:
    guild, channel, alice = world["guild"], world["channel"], world["member"]
    bob = sandbox.add_member(guild, "bob")
    gold = sandbox.add_role(guild, "gold")
    other = sandbox.add_channel(guild, "other")
    sandbox.set_overwrite(other, world["bot"].id, deny=P.SEND_MESSAGES)
    png = tiny_png(1)
    inter = alice.invoke(
        channel.id,
        "draw",
        {"prompt": "x", "who": bob.id, "where": other.id, "role": gold.id, "image": ("a.png", png)},
    )
    resolved = inter.data["resolved"]
    assert set(resolved) == {"users", "members", "roles", "channels", "attachments"}
    assert resolved["users"][str(bob.id)]["username"] == "bob"
    member = resolved["members"][str(bob.id)]
    assert "user" not in member and "deaf" not in member and "permissions" in member
    assert resolved["roles"][str(gold.id)]["name"] == "gold"
    ch = resolved["channels"][str(other.id)]
    assert ch["name"] == "other" and not int(ch["app_permissions"]) & P.SEND_MESSAGES
    assert int(ch["permissions"]) & P.SEND_MESSAGES
    option = next(o for o in inter.data["options"] if o["name"] == "image")
    att = resolved["attachments"][option["value"]]
    assert att["filename"] == "a.png" and att["size"] == len(png) and att["width"] == 8
    async with http.get(att["url"]) as resp:
        assert await resp.read() == png
    with pytest.raises(ValueError, match="no role"):
        alice.invoke(channel.id, "draw", {"prompt": "x", "role": 12345})


async def test_control_routes_change_permissions_at_run_time(
    sandbox: DiscordSandbox, http: aiohttp.ClientSession, world: dict[str, Any]
) -> None:
    channel, bot = world["channel"], world["bot"]
    base = f"{sandbox.base_url}/_sandbox"
    async with http.put(
        f"{base}/channels/{channel.id}/overwrites/{bot.id}", json={"deny": ["attach_files"]}
    ) as resp:
        assert resp.status == 200 and (await resp.json())["result"]["type"] == 1
    async with http.get(f"{base}/channels/{channel.id}/permissions/{bot.id}") as resp:
        names = (await resp.json())["result"]["names"]
        assert "SEND_MESSAGES" in names and "ATTACH_FILES" not in names
    async with http.post(world["url"], data=_upload({}), headers=world["auth"]) as resp:
        assert await _error(resp) == (403, 50013)
    async with http.delete(f"{base}/channels/{channel.id}/overwrites/{bot.id}") as resp:
        assert (await resp.json())["result"] is True
    guild = world["guild"]
    async with http.post(
        f"{base}/guilds/{guild.id}/roles/{guild.id}", json={"permissions": ["view_channel"]}
    ) as resp:
        assert (await resp.json())["result"] == str(int(P.VIEW_CHANNEL))
    async with http.put(
        f"{base}/channels/{channel.id}/overwrites/{bot.id}", json={"deny": ["no_such_bit"]}
    ) as resp:
        assert resp.status == 400 and "unknown permission" in (await resp.json())["error"]


# -- direct messages ------------------------------------------------------------------------------


async def test_direct_messages_reach_members_who_take_them(
    sandbox: DiscordSandbox, http: aiohttp.ClientSession, world: dict[str, Any]
) -> None:
    auth, alice = world["auth"], world["member"]
    async with http.get(f"{sandbox.api_base}/users/{alice.id}", headers=auth) as resp:
        assert (await resp.json())["username"] == "alice"
    opened = f"{sandbox.api_base}/users/@me/channels"
    async with http.post(opened, json={"recipient_id": str(alice.id)}, headers=auth) as resp:
        dm = await resp.json()
    assert dm["type"] == 1 and [u["id"] for u in dm["recipients"]] == [str(alice.id)]
    async with http.post(opened, json={"recipient_id": str(alice.id)}, headers=auth) as resp:
        assert (await resp.json())["id"] == dm["id"]  # one DM channel per pair
    url = f"{sandbox.api_base}/channels/{dm['id']}/messages"
    async with http.post(url, data=_upload({"content": "for you"}), headers=auth) as resp:
        assert resp.status == 200
        sent = await resp.json()
    assert "guild_id" not in sent and len(sent["attachments"]) == 1
    # Closed DMs, or no server in common: Discord's 50007.
    alice.user.dms_open = False
    async with http.post(url, json={"content": "again"}, headers=auth) as resp:
        assert await _error(resp) == (403, 50007)
    alice.user.dms_open = True
    stranger = sandbox.state.new_user("stranger")
    async with http.post(opened, json={"recipient_id": str(stranger.id)}, headers=auth) as resp:
        far = await resp.json()
    async with http.post(
        f"{sandbox.api_base}/channels/{far['id']}/messages", json={"content": "hi"}, headers=auth
    ) as resp:
        assert await _error(resp) == (403, 50007)
    # Only its two members can see a DM channel.
    _, other_token = sandbox.add_user_account("other")
    async with http.get(
        f"{sandbox.api_base}/channels/{dm['id']}", headers={"Authorization": other_token}
    ) as resp:
        assert await _error(resp) == (403, 50001)


async def test_a_timed_out_member_keeps_only_view_and_history_until_it_ends(
    sandbox: DiscordSandbox, world: dict[str, Any]
) -> None:
    guild, channel, alice = world["guild"], world["channel"], world["member"]
    sandbox.time_out(guild, alice.id, 60)
    perms = sandbox.permissions_of(alice.id, channel)
    assert perms == P.VIEW_CHANNEL | P.READ_MESSAGE_HISTORY
    with pytest.raises(PermissionError, match="may not use commands"):
        alice.invoke(channel.id, "draw", {"prompt": "x"})
    # The owner is exempt.
    sandbox.time_out(guild, guild.owner_id, 60)
    assert sandbox.permissions_of(guild.owner_id, channel) == ALL
    sandbox.clock.advance(61)
    assert sandbox.permissions_of(alice.id, channel) == DEFAULT_EVERYONE
    assert alice.invoke(channel.id, "draw", {"prompt": "x"}).user.id == alice.id
