"""The smoke scenario's channel steps: channel defaults, model autocomplete,
requester-only buttons and content rules in the demo guild's themed channels."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Protocol

from gouache.bot.service import RequestContext
from gouache.demo.members import Observer, Reply, buttons, imagine
from gouache.demo.world import DemoWorld
from gouache_sandbox.discord.members import SimulatedMember
from gouache_sandbox.discord.state import Message

Action = Callable[[], Awaitable[tuple[str, str]]]

#: What #imagine's model autocomplete must offer with the demo's pool.
EXPECTED_MODELS = ("v7", "v6.1", "niji", "workflow:builtin_demo")
ADULT_PROMPT = "a nude figure study in charcoal"


class Script(Protocol):
    """What the steps need of the smoke script (`gouache.demo.smoke._Script`)."""

    async def step(
        self, name: str, member: SimulatedMember, expected: str, action: Action
    ) -> str: ...

    async def outcome(self, reply: Reply, channel_id: int | None = None) -> tuple[str, str]: ...


class _Steps:
    """The five steps, sharing the world, the observer and the #niji result."""

    def __init__(self, script: Script, world: DemoWorld, observer: Observer) -> None:
        assert world.app is not None
        assert world.themed is not None
        assert world.channel is not None
        self.script, self.world, self.observer = script, world, observer
        self.app, self.themed, self.ch = world.app, world.themed, world.channel.id
        self.niji: Reply | None = None

    async def used(self, member: SimulatedMember) -> int:
        return (await self.app.requests.quota(RequestContext(user_id=member.id))).used

    async def niji_default(self, member: SimulatedMember) -> tuple[str, str]:
        channel = self.themed.niji.id
        inter = imagine(member, channel, "a lantern festival at dusk")
        self.niji = reply = await self.observer.reply(channel, inter)
        state, detail = await self.script.outcome(reply, channel)
        job = await self.app.store.get(reply.job_id) if reply.job_id else None
        if job is None or job.meta.get("model") != "niji" or job.params.niji is None:
            return "not niji", detail
        if not (job.worker or "").startswith("mj-"):
            return "not midjourney", detail
        niji_bot = self.world.sandbox.niji if self.world.sandbox is not None else None
        if niji_bot is None or not any("lantern" in j.prompt for j in niji_bot.jobs.values()):
            return "not the Niji bot", detail
        return state, f"{detail} · --niji {job.params.niji}"

    async def autocomplete(self, member: SimulatedMember) -> tuple[str, str]:
        inter = member.autocomplete(self.ch, "imagine", "model", "", {"prompt": "x"})
        await asyncio.wait_for(inter.responded.wait(), 10)
        values = [str(c["value"]) for c in inter.choices or []]
        missing = [m for m in EXPECTED_MODELS if m not in values]
        if inter.response_type != 8 or missing or len(values) > 25:
            return "missing", f"offered {values}; missing {missing}"
        return "offered", ", ".join(values)

    async def requester_only(self, member: SimulatedMember) -> tuple[str, str]:
        niji, channel = self.niji, self.themed.niji.id
        if niji is None or niji.job_id is None:
            return "skipped", "no #niji image"

        def result_buttons(m: Message) -> list[str]:
            return [
                b for b in buttons(m) if b.startswith("gouache:") and not b.startswith("gouache:x:")
            ]

        # Wait for the result's own buttons (the cancel button goes with them).
        message = await self.observer.message_where(
            channel, lambda m: m.id == niji.message.id and bool(result_buttons(m))
        )
        before = await self.used(member)
        target = result_buttons(message)[0]
        reply = await self.observer.reply(channel, member.click(message, target))
        return await self._refused(member, reply, before)

    async def _refused(self, member: SimulatedMember, reply: Reply, before: int) -> tuple[str, str]:
        if not reply.ephemeral or reply.job_id is not None:
            return "accepted", reply.text[:80]
        if await self.used(member) != before:
            return "charged", reply.text[:80]
        return "refused", reply.text[:80]

    async def nsfw_outside(self, member: SimulatedMember) -> tuple[str, str]:
        before = await self.used(member)
        reply = await self.observer.reply(self.ch, imagine(member, self.ch, ADULT_PROMPT))
        return await self._refused(member, reply, before)

    async def nsfw_inside(self, member: SimulatedMember) -> tuple[str, str]:
        dark = self.themed.after_dark.id
        reply = await self.observer.reply(dark, imagine(member, dark, ADULT_PROMPT))
        return await self.script.outcome(reply, dark)


async def run_channel_steps(script: Script, world: DemoWorld, observer: Observer) -> None:
    """Run the five channel steps after the others (names are fixed: tests look them up)."""
    steps = _Steps(script, world, observer)
    nia, max_, olga, pat = (world.add_member(n) for n in ("nia", "max", "olga", "pat"))
    plan: list[
        tuple[str, SimulatedMember, str, Callable[[SimulatedMember], Awaitable[tuple[str, str]]]]
    ] = [
        ("channel default (#niji: Midjourney, niji)", nia, "succeeded", steps.niji_default),
        ("model autocomplete", max_, "offered", steps.autocomplete),
        ("requester only (#niji buttons)", olga, "refused", steps.requester_only),
        ("nsfw prompt outside an NSFW channel", pat, "refused", steps.nsfw_outside),
        ("nsfw channel (#after-dark) allows it", pat, "succeeded", steps.nsfw_inside),
    ]
    for name, member, expected, run in plan:
        await script.step(name, member, expected, functools.partial(run, member))
