"""The smoke scenario's steps for a result's buttons (Midjourney's and ComfyUI's).

Members press what they would see under a Midjourney upscale — Vary (Strong),
Upscale (Creative), Zoom Out 2x, Custom Zoom (and one out of range), ⬅️, Make
Square, a Remix — and ComfyUI's configured actions, each through the sandbox
as a person would (modals included), each checked to end as expected.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from gouache.bot.service import RequestContext
from gouache.demo.members import Observer, Reply, buttons, imagine
from gouache.demo.world import DemoWorld
from gouache_sandbox.discord.members import SimulatedMember
from gouache_sandbox.discord.state import Interaction, Message

JOB_TIMEOUT_S = 60.0
Action = Callable[[], Awaitable[tuple[str, str]]]


class Script(Protocol):
    """What the smoke script offers its steps (`gouache.demo.smoke._Script`)."""

    world: DemoWorld
    channel_id: int
    observer: Observer

    async def step(
        self, name: str, member: SimulatedMember, expected: str, action: Action
    ) -> str: ...

    async def outcome(self, reply: Reply) -> tuple[str, str]: ...


class StepFailed(Exception):
    """A step's setup did not end as it should (the step reports it)."""


def button_id(message: Message, label: str) -> str | None:
    """The custom id of the button labelled (or with the emoji) ``label``."""
    for row in message.components:
        for c in row.get("components", []):
            emoji = (c.get("emoji") or {}).get("name")
            if (c.get("label") == label or emoji == label) and "custom_id" in c:
                return str(c["custom_id"])
    return None


class _Buttons:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.world = script.world
        self.ch = script.channel_id
        self.obs = script.observer
        self.made: dict[str, Message] = {}

    async def used(self, member: SimulatedMember) -> int:
        assert self.world.app is not None
        return (await self.world.app.requests.quota(RequestContext(user_id=member.id))).used

    async def finished(self, reply: Reply) -> Message:
        """The reply's message once its job succeeded (else `StepFailed`)."""
        state, detail = await self.script.outcome(reply)
        if state != "succeeded":
            raise StepFailed(f"{state}: {detail}")
        # The message shows the result once it has the image and no Cancel button any more.
        return await self.obs.message_where(
            self.ch,
            lambda m: (
                m.id == reply.message.id
                and bool(m.attachments)
                and not any(c.startswith("gouache:x:") for c in buttons(m))
            ),
            timeout=15,
        )

    async def upscaled(self, member: SimulatedMember, prompt: str, backend: str) -> Message:
        """/imagine, then U1 (Midjourney) — the upscale's finished message."""
        grid = await self.finished(
            await self.obs.reply(self.ch, imagine(member, self.ch, prompt, backend=backend))
        )
        return await self.press_plain(member, grid, "U1")

    async def upscaled_on(self, member: SimulatedMember, prompt: str, account: str) -> Message:
        """`upscaled` on one Midjourney account: the other ones are taken out meanwhile."""
        assert self.world.app is not None
        pool = self.world.app.pool
        others = [w.name for w in pool.workers if w.kind == "midjourney" and w.name != account]
        for name in others:
            pool.disable(name, "the smoke scenario needs another account for a moment")
        try:
            return await self.upscaled(member, prompt, "midjourney")
        finally:
            for name in others:
                pool.enable(name)

    async def press_plain(self, member: SimulatedMember, message: Message, label: str) -> Message:
        cid = button_id(message, label)
        if cid is None:
            have = [c.get("label") for row in message.components for c in row.get("components", [])]
            raise StepFailed(f"no {label} button (have {have})")
        return await self.finished(await self.obs.reply(self.ch, member.click(message, cid)))

    async def press(self, member: SimulatedMember, key: str, label: str) -> tuple[str, str]:
        message = self.made.get(key)
        if message is None:
            return "skipped", f"no {key} image"
        cid = button_id(message, label)
        if cid is None:
            return "missing", f"no {label} button"
        reply = await self.obs.reply(self.ch, member.click(message, cid))
        state, detail = await self.script.outcome(reply)
        if state == "succeeded":
            self.made[label] = await self.finished(reply)
        return state, detail

    async def modal(self, member: SimulatedMember, click: Interaction) -> Any:
        async with asyncio.timeout(10):
            await click.responded.wait()
        modal = member.modal(click)
        if modal is None:
            raise StepFailed("no modal was shown")
        return modal

    async def press_with(
        self, member: SimulatedMember, key: str, label: str, value: Callable[[str], str]
    ) -> tuple[Reply, str]:
        """Press a button that asks first; type ``value(prefill)``; the reply to the submit."""
        message = self.made.get(key)
        cid = button_id(message, label) if message is not None else None
        if message is None or cid is None:
            raise StepFailed(f"no {label} button on {key}")
        click = member.click(message, cid)
        modal = await self.modal(member, click)
        field = modal.inputs[0]
        typed = value(field.value)
        submit = member.submit_modal(click, {field.custom_id: typed})
        return await self.obs.reply(self.ch, submit), field.value


async def run_button_steps(script: Script) -> None:
    """The Midjourney button steps, then the ComfyUI ones (see the module docstring)."""
    b = _Buttons(script)
    await _midjourney_steps(script, b)
    await _comfyui_steps(script, b)


async def _midjourney_steps(script: Script, b: _Buttons) -> None:
    world = script.world
    frank, gina = world.add_member("frank"), world.add_member("gina")
    hank, ivy = world.add_member("hank"), world.add_member("ivy")
    jack = world.add_member("jack")

    async def vary_strong() -> tuple[str, str]:
        # These steps press the buttons of mj-1's results (mj-2 has Remix on: see "remix").
        b.made["upscale"] = await b.upscaled_on(frank, "a red fox in fresh snow", "mj-1")
        return await b.press(gina, "upscale", "Vary (Strong)")

    await script.step("vary strong", gina, "succeeded", vary_strong)
    await script.step(
        "upscale creative",
        gina,
        "succeeded",
        lambda: b.press(gina, "upscale", "Upscale (Creative)"),
    )
    await script.step(
        "zoom out 2x", hank, "succeeded", lambda: b.press(hank, "upscale", "Zoom Out 2x")
    )

    async def custom_zoom() -> tuple[str, str]:
        reply, prefill = await b.press_with(
            hank, "upscale", "Custom Zoom", lambda v: v.replace("--zoom 2", "--zoom 1.5")
        )
        if not prefill.endswith("--zoom 2"):
            return "not prefilled", prefill
        return await script.outcome(reply)

    await script.step("custom zoom", hank, "succeeded", custom_zoom)
    await script.step("pan left", hank, "succeeded", lambda: b.press(hank, "upscale", "⬅️"))

    async def zoom_out_of_range() -> tuple[str, str]:
        before = await b.used(ivy)
        reply, _ = await b.press_with(
            ivy, "upscale", "Custom Zoom", lambda v: v.replace("--zoom 2", "--zoom 3")
        )
        after = await b.used(ivy)
        if not reply.ephemeral or reply.job_id is not None:
            return "queued", reply.text[:80]
        if after != before:
            return "charged", f"used {before} → {after}"
        return "refused", reply.text[:80]

    await script.step("custom zoom out of range", ivy, "refused", zoom_out_of_range)

    async def make_square() -> tuple[str, str]:
        panned = b.made.get("⬅️")
        if panned is None:
            return "skipped", "no panned image"
        b.made["wide"] = await b.press_plain(ivy, panned, "U1")
        return await b.press(ivy, "wide", "Make Square")

    await script.step("make square", ivy, "succeeded", make_square)

    async def remix() -> tuple[str, str]:
        b.made["remix"] = await b.upscaled_on(jack, "a castle on a hill", "mj-2")
        reply, prefill = await b.press_with(
            jack, "remix", "Vary (Strong)", lambda v: f"{v} at night"
        )
        if prefill != "a castle on a hill":
            return "not prefilled", prefill
        state, detail = await script.outcome(reply)
        assert world.app is not None
        job = await world.app.store.get(reply.job_id or "")
        if state == "succeeded" and (
            job is None or job.button_input != "a castle on a hill at night"
        ):
            return "prompt lost", detail
        return state, detail

    await script.step("remix", jack, "succeeded", remix)


async def _comfyui_steps(script: Script, b: _Buttons) -> None:
    world = script.world
    kate, leo = world.add_member("kate"), world.add_member("leo")

    async def comfyui_upscale() -> tuple[str, str]:
        grid = await b.finished(
            await b.obs.reply(b.ch, imagine(kate, b.ch, "a paper boat", backend="comfyui"))
        )
        b.made["comfyui"] = grid
        state, detail = await b.press(kate, "comfyui", "Upscale")
        if state == "succeeded":
            assert world.app is not None
            job = await world.app.store.get(_job_of(b.made["Upscale"]) or "")
            if job is None or job.meta.get("workflow") != "builtin_demo_upscale":
                return "wrong workflow", detail
        return state, detail

    await script.step("comfyui upscale", kate, "succeeded", comfyui_upscale)
    await script.step(
        "comfyui zoom out", leo, "succeeded", lambda: b.press(leo, "comfyui", "Zoom Out")
    )


def _job_of(message: Message) -> str | None:
    """The job a finished message shows (its buttons carry the id)."""
    for cid in buttons(message):
        parts = cid.split(":")
        if len(parts) >= 3:
            return parts[2]
    return None
