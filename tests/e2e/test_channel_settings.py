"""Channel settings, model choice, requester-only buttons and content rules, end to end.

Simulated members drive the real bot (discord.py) through the Discord sandbox,
on both store backends.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import discord
import pytest
import yarl

from gouache.app import App, BotSettings
from gouache.bot.service import Tier
from gouache.jobs import JobState
from gouache.queue.dispatcher import StageTimeouts
from gouache.queue.quota import QuotaPolicy
from gouache.storage.base import Store
from gouache.storage.redis import RedisStore
from gouache.storage.sqlite import SQLiteStore
from gouache_sandbox.discord import DiscordSandbox
from gouache_sandbox.discord.members import SimulatedMember
from gouache_sandbox.discord.permissions import P
from gouache_sandbox.discord.state import Channel, Guild, Interaction, Message
from gouache_sandbox.instant import InstantWorker

from .conftest import custom_ids, embed_title

OWNER_ID = 4242


@dataclass
class Rig:
    sandbox: DiscordSandbox
    app: App
    guild: Guild
    channel: Channel
    manager_role: int
    relax_role: int
    store_kind: str
    redis_url: str | None
    prefix: str

    def member(self, name: str, *, manager: bool = False, relax: bool = False) -> SimulatedMember:
        roles = ([self.manager_role] if manager else []) + ([self.relax_role] if relax else [])
        return self.sandbox.add_member(self.guild, name, roles=roles)

    async def wait(
        self, predicate: Callable[[Message], bool], channel: Channel | None = None
    ) -> Message:
        ch = channel or self.channel
        return await self.sandbox.wait_for_message(ch.id, predicate, timeout=15)

    async def reply(self, inter: Interaction, channel: Channel | None = None) -> Message:
        return await self.wait(
            lambda m: (
                bool(m.interaction_metadata) and int(m.interaction_metadata["id"]) == inter.id
            ),  # type: ignore[index]
            channel,
        )

    async def job_of(self, reply: Message) -> Any:
        job_id = next(i for i in custom_ids(reply) if i.startswith("gouache:x:")).split(":")[2]
        return await self.app.store.get(job_id)

    async def used(self, member: SimulatedMember) -> int:
        return (await self.app.store.quota(member.id, daily_limit=100)).used


@pytest.fixture(params=["sqlite", "redis"])
async def rig(
    request: pytest.FixtureRequest, sandbox: DiscordSandbox, tmp_path: Path
) -> AsyncIterator[Rig]:
    old_base = discord.http.Route.BASE
    old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    user, token, app_id = sandbox.add_bot("gouache")
    guild = sandbox.add_guild("community")
    channel = sandbox.add_channel(guild, "art")
    manager = sandbox.add_role(guild, "mods", permissions=int(P.MANAGE_GUILD))
    relax = sandbox.add_role(guild, "members-relax")
    sandbox.join(guild, user)
    policy = QuotaPolicy("UTC", default_limit=100)
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    store: Store = (
        SQLiteStore(tmp_path / "g.db", policy=policy, lease_s=60)
        if redis_url is None
        else RedisStore(redis_url, prefix=prefix, policy=policy, lease_s=60)
    )
    app = App.assemble(
        store=store,
        workers=[
            InstantWorker("mj-1", kind="midjourney", capacity=4),
            InstantWorker("comfy-1", kind="comfyui", capacity=4),
        ],
        images_dir=tmp_path / "images",
        policy=policy,
        tiers=[
            Tier("default"),
            Tier(
                "relaxed",
                weight=1,
                role_ids=frozenset({relax.id}),
                backends=frozenset({"midjourney"}),
                models=frozenset({"v6.1", "v7"}),
                midjourney_mode="relax",
            ),
        ],
        timeouts=StageTimeouts(submit=10, start=10, run=10, store=10),
        bot=BotSettings(
            token=token,
            application_id=app_id,
            owner_ids=frozenset({OWNER_ID}),
            guild_ids=(guild.id,),
            api_base=sandbox.api_base,
            gateway_url=sandbox.gateway_url,
            client_options={"guild_ready_timeout": 0.05},
        ),
        delivery_options={"per_message_s": 0.1},
        grace_s=5,
    )
    await app.start(ready_timeout=15)
    try:
        yield Rig(
            sandbox, app, guild, channel, manager.id, relax.id, request.param, redis_url, prefix
        )
    finally:
        await app.stop()
        if redis_url is not None:
            await RedisStore(redis_url, prefix=prefix).drop()
        discord.http.Route.BASE = old_base  # type: ignore[misc]
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(str(old_gateway))


async def settings_of(rig: Rig, channel: Channel | None = None) -> Any:
    return await rig.app.store.get_channel_settings((channel or rig.channel).id)  # type: ignore[attr-defined]


async def test_a_manager_sets_and_shows_settings_and_others_cannot(rig: Rig) -> None:
    mod = rig.member("mod", manager=True)
    pleb = rig.member("pleb")
    refused = await rig.reply(
        pleb.invoke(rig.channel.id, "settings set", {"backend": "midjourney"})
    )
    assert refused.flags & 64 and "Manage Server" in refused.content
    shown = await rig.reply(pleb.invoke(rig.channel.id, "settings show"))
    assert "Manage Server" in shown.content
    assert (await settings_of(rig)).backend == "any"  # nothing saved

    saved = await rig.reply(
        mod.invoke(
            rig.channel.id,
            "settings set",
            {"backend": "midjourney", "model": "niji", "params": "--ar 2:3 --stylize 250"},
        )
    )
    assert saved.flags & 64 and "Saved" in saved.content
    current = await settings_of(rig)
    assert (current.backend, current.model, current.params) == (
        "midjourney",
        "niji",
        "--ar 2:3 --s 250",
    )
    shown = await rig.reply(mod.invoke(rig.channel.id, "settings show"))
    assert "model: niji" in shown.content and "backend: midjourney" in shown.content


async def test_bad_settings_name_each_problem_and_save_nothing(rig: Rig) -> None:
    mod = rig.member("mod", manager=True)
    reply = await rig.reply(
        mod.invoke(
            rig.channel.id,
            "settings set",
            {"backend": "midjourney", "daily_cap": "0", "model": "v9", "params": "--stylize 5000"},
        )
    )
    assert reply.flags & 64 and "Nothing was changed" in reply.content
    lines = reply.content.splitlines()
    assert any(line.startswith("daily_cap:") and "between 1 and" in line for line in lines)
    assert any(line.startswith("model:") and "v7, v6.1, niji" in line for line in lines)
    assert any(line.startswith("params:") for line in lines)
    assert (await settings_of(rig)).backend == "any"  # the valid part was not saved either


async def test_the_channel_default_model_goes_into_the_job(rig: Rig) -> None:
    mod = rig.member("mod", manager=True)
    await rig.reply(
        mod.invoke(rig.channel.id, "settings set", {"backend": "midjourney", "model": "niji"})
    )
    ann = rig.member("ann")
    reply = await rig.reply(ann.invoke(rig.channel.id, "imagine", {"prompt": "a fox"}))
    job = await rig.job_of(reply)
    assert job.backend == "midjourney" and job.params.niji == "6"
    assert job.meta["mj_app"] == "niji" and job.meta["model"] == "niji"
    # The member's own --v in the prompt beats the channel's niji.
    reply = await rig.reply(ann.invoke(rig.channel.id, "imagine", {"prompt": "a fox --v 7"}))
    job = await rig.job_of(reply)
    assert job.params.version == "7" and job.params.niji is None
    # A backend the channel does not use is refused at once, nothing charged.
    before = await rig.used(ann)
    reply = await rig.reply(
        ann.invoke(rig.channel.id, "imagine", {"prompt": "a fox", "backend": "comfyui"})
    )
    assert reply.flags & 64 and "midjourney only" in reply.content
    assert await rig.used(ann) == before


async def test_model_autocomplete_and_unknown_models(rig: Rig) -> None:
    ann = rig.member("ann")
    inter = ann.autocomplete(rig.channel.id, "imagine", "model", "v", {"prompt": "x"})
    await asyncio.wait_for(inter.responded.wait(), 5)
    assert inter.response_type == 8
    values = [c["value"] for c in inter.choices or []]
    assert values[:2] == ["v7", "v6.1"] and len(values) <= 25
    # In a ComfyUI channel, Midjourney models are not offered.
    mod = rig.member("mod", manager=True)
    await rig.reply(mod.invoke(rig.channel.id, "settings set", {"backend": "comfyui"}))
    inter = ann.autocomplete(rig.channel.id, "imagine", "model", "", {"prompt": "x"})
    await asyncio.wait_for(inter.responded.wait(), 5)
    assert not any(c["value"] in ("v7", "niji") for c in inter.choices or [])
    await rig.reply(mod.invoke(rig.channel.id, "settings set", {"backend": "any"}))
    inter = mod.autocomplete(rig.channel.id, "settings set", "model", "")
    await asyncio.wait_for(inter.responded.wait(), 5)
    assert [c["value"] for c in inter.choices or []] == ["v7", "v6.1", "niji"]
    before = await rig.used(ann)
    reply = await rig.reply(
        ann.invoke(rig.channel.id, "imagine", {"prompt": "a fox", "model": "v9"})
    )
    assert reply.flags & 64 and "Unknown model 'v9'" in reply.content and "v7" in reply.content
    assert await rig.used(ann) == before and await rig.app.store.depth() == 0
    reply = await rig.reply(
        ann.invoke(rig.channel.id, "imagine", {"prompt": "a fox", "model": "v6.1"})
    )
    job = await rig.job_of(reply)
    assert job.params.version == "6.1" and job.backend == "midjourney"


async def test_autocomplete_answers_only_with_choices(sandbox: DiscordSandbox) -> None:
    """The sandbox holds bots to Discord's rules for autocomplete."""
    from gouache_sandbox.discord.interactions import autocomplete_choices
    from gouache_sandbox.discord.state import DiscordAPIError

    with pytest.raises(DiscordAPIError) as too_many:
        autocomplete_choices({"choices": [{"name": str(i), "value": str(i)} for i in range(26)]})
    assert too_many.value.status == 400
    with pytest.raises(DiscordAPIError):
        autocomplete_choices({"choices": [{"name": "", "value": "x"}]})


async def test_tier_limits_models_modes_and_preferences(rig: Rig) -> None:
    bea = rig.member("bea", relax=True)
    reply = await rig.reply(
        bea.invoke(rig.channel.id, "imagine", {"prompt": "a fox", "model": "niji"})
    )
    assert reply.flags & 64 and "tier may not use niji" in reply.content
    refused = await rig.reply(bea.invoke(rig.channel.id, "preferences", {"model": "niji"}))
    assert "Nothing was changed" in refused.content and "tier may not use" in refused.content
    assert (await rig.app.store.get_preferences(bea.id)).model is None  # type: ignore[attr-defined]
    saved = await rig.reply(
        bea.invoke(rig.channel.id, "preferences", {"model": "v6.1", "params": "--ar 3:2"})
    )
    assert "Saved" in saved.content
    reply = await rig.reply(bea.invoke(rig.channel.id, "imagine", {"prompt": "a fox"}))
    job = await rig.job_of(reply)
    assert job.backend == "midjourney" and job.params.version == "6.1"
    assert job.params.aspect == (3, 2) and job.meta["mj_mode"] == "relax"


async def test_requester_only_buttons(rig: Rig) -> None:
    mod = rig.member("mod", manager=True)
    await rig.reply(mod.invoke(rig.channel.id, "settings set", {"requester_only": True}))
    ann, bob = rig.member("ann"), rig.member("bob")
    reply = await rig.reply(ann.invoke(rig.channel.id, "imagine", {"prompt": "a fox"}))
    done = await rig.wait(lambda m: m.id == reply.id and embed_title(m) == "Done")
    reroll = next(i for i in custom_ids(done) if i.startswith("gouache:r:"))
    refused = await rig.reply(bob.click(done, reroll))
    assert refused.flags & 64 and refused.content == f"Only <@{ann.id}> can use these buttons."
    assert await rig.used(bob) == 0
    again = await rig.reply(ann.click(done, reroll))
    assert embed_title(again) in ("Queued", "Done", "Generating", "Sent to a worker")


async def test_adult_prompts_follow_the_content_rule(rig: Rig) -> None:
    ann = rig.member("ann")
    reply = await rig.reply(ann.invoke(rig.channel.id, "imagine", {"prompt": "a nude portrait"}))
    assert reply.flags & 64 and "adult prompts" in reply.content and "NSFW" in reply.content
    assert await rig.used(ann) == 0
    after_dark = rig.sandbox.add_channel(rig.guild, "after-dark", nsfw=True)
    reply = await rig.reply(
        ann.invoke(after_dark.id, "imagine", {"prompt": "a nude portrait"}), after_dark
    )
    assert embed_title(reply) != "" and not reply.flags & 64
    mod = rig.member("mod", manager=True)
    await rig.reply(mod.invoke(rig.channel.id, "settings set", {"content": "spoiler"}))
    reply = await rig.reply(ann.invoke(rig.channel.id, "imagine", {"prompt": "a nude portrait"}))
    done = await rig.wait(lambda m: m.id == reply.id and bool(m.attachments))
    assert done.attachments[0].filename.startswith("SPOILER_")
    assert not (done.embeds and done.embeds[0].get("image"))  # not shown unblurred in the embed


async def test_channel_daily_cap_is_given_back_on_cancel_and_failure(rig: Rig) -> None:
    mod = rig.member("mod", manager=True)
    await rig.reply(mod.invoke(rig.channel.id, "settings set", {"daily_cap": "1"}))
    mj = rig.app.pool.get("mj-1")
    comfy = rig.app.pool.get("comfy-1")
    assert isinstance(mj, InstantWorker) and isinstance(comfy, InstantWorker)
    comfy.behaviour.hang_next = 1
    ann, bob = rig.member("ann"), rig.member("bob")
    first = await rig.reply(
        ann.invoke(rig.channel.id, "imagine", {"prompt": "one", "backend": "comfyui"})
    )
    refused = await rig.reply(bob.invoke(rig.channel.id, "imagine", {"prompt": "two"}))
    assert refused.flags & 64 and "1 images for today" in refused.content
    assert await rig.used(bob) == 0
    job = await rig.job_of(first)
    ann.click(first, f"gouache:x:{job.id}")
    await rig.wait(lambda m: m.id == first.id and embed_title(m) == "Cancelled")
    assert await rig.app.store.channel_used(rig.channel.id) == 0  # type: ignore[attr-defined]
    # The cap came back: bob gets the channel's one image now; a failure gives it back too.
    mj.behaviour.fail_next = 1
    second = await rig.reply(
        bob.invoke(rig.channel.id, "imagine", {"prompt": "two", "backend": "midjourney"})
    )
    await rig.wait(lambda m: m.id == second.id and embed_title(m) == "Failed")
    (failed,) = await rig.app.store.list_jobs(user_id=bob.id)
    assert failed.state is JobState.FAILED
    assert await rig.app.store.channel_used(rig.channel.id) == 0  # type: ignore[attr-defined]
    third = await rig.reply(bob.invoke(rig.channel.id, "imagine", {"prompt": "three"}))
    assert not third.flags & 64


async def test_a_closed_channel_takes_no_requests_and_other_processes_see_it(rig: Rig) -> None:
    mod = rig.member("mod", manager=True)
    await rig.reply(mod.invoke(rig.channel.id, "settings set", {"enabled": False}))
    if rig.redis_url is not None:  # another process on the same Redis sees it at once
        other = RedisStore(rig.redis_url, prefix=rig.prefix)
        await other.start()
        try:
            assert (await other.get_channel_settings(rig.channel.id)).enabled is False
        finally:
            await other.aclose()
    ann = rig.member("ann")
    reply = await rig.reply(ann.invoke(rig.channel.id, "imagine", {"prompt": "a fox"}))
    assert reply.flags & 64 and "does not take image requests" in reply.content
    assert await rig.used(ann) == 0
    owner = rig.sandbox.state.new_user("owner", user_id=OWNER_ID)
    rig.sandbox.state.add_member(rig.guild, owner, [], "en-US")
    boss = SimulatedMember(rig.sandbox, rig.guild, rig.guild.members[OWNER_ID])
    saved = await rig.reply(boss.invoke(rig.channel.id, "settings set", {"enabled": True}))
    assert "Saved" in saved.content  # owners may, without Manage Server


async def test_a_channel_marked_nsfw_later_allows_adult_prompts(rig: Rig) -> None:
    ann = rig.member("ann")
    rig.sandbox.set_nsfw(rig.channel, True)  # the bot hears CHANNEL_UPDATE first
    reply = await rig.reply(ann.invoke(rig.channel.id, "imagine", {"prompt": "a nude portrait"}))
    assert not reply.flags & 64
    mod = rig.member("mod", manager=True)
    await rig.reply(mod.invoke(rig.channel.id, "settings set", {"content": "refuse"}))
    reply = await rig.reply(ann.invoke(rig.channel.id, "imagine", {"prompt": "a nude portrait"}))
    assert reply.flags & 64 and "does not take adult prompts." in reply.content
    assert "NSFW" not in reply.content  # it is an NSFW channel: the rule itself refuses
