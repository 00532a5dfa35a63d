"""The smoke scenario's image steps: image prompts, blend, describe, img2img, a bad image.

Run after the text steps by `gouache.demo.smoke.run_smoke`; each step is a
member attaching one of the demo's pictures (`gouache.demo.pictures`) and the
end the job must reach.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from gouache.bot.service import RequestContext
from gouache.demo.members import Observer, Reply
from gouache.demo.pictures import attachment
from gouache.demo.world import DemoWorld
from gouache.jobs import InputRole
from gouache_sandbox.discord.members import SimulatedMember

Action = Callable[[], Awaitable[tuple[str, str]]]


class Steps(Protocol):
    """What the image steps need of the smoke script."""

    async def step(self, name: str, member: SimulatedMember, expected: str, action: Action) -> str:
        """Run one step and record it."""

    async def outcome(self, reply: Reply) -> tuple[str, str]:
        """Wait for the job behind ``reply`` to end."""


async def run_image_steps(script: Steps, world: DemoWorld, observer: Observer) -> None:
    """The image steps, in order, after the text steps."""
    assert world.channel is not None
    ch = world.channel.id
    cole = world.add_member("cole")
    mal = world.add_member("mal")

    async def inputs_used(reply: Reply, role: InputRole, count: int) -> tuple[str, str]:
        state, detail = await script.outcome(reply)
        assert world.app is not None
        job = await world.app.store.get(reply.job_id or "")
        if state == "succeeded" and (job is None or len(job.inputs(role)) != count):
            return "no input", detail
        return state, detail

    iris = world.add_member("iris")
    blake = world.add_member("blake")
    desi = world.add_member("desi")

    async def image_prompt() -> tuple[str, str]:
        inter = iris.invoke(
            ch,
            "imagine",
            {
                "prompt": "a lighthouse at dawn --iw 1.5",
                "image": attachment("sunset"),
                "style_ref": attachment("sea"),
                "backend": "midjourney",
            },
        )
        reply = await observer.reply(ch, inter)
        state, detail = await inputs_used(reply, InputRole.PROMPT, 1)
        return (
            (state, detail)
            if state != "succeeded"
            else await inputs_used(reply, InputRole.STYLE, 1)
        )

    await script.step("image prompt on Midjourney", iris, "succeeded", image_prompt)

    async def blend() -> tuple[str, str]:
        inter = blake.invoke(
            ch,
            "blend",
            {
                "image1": attachment("forest"),
                "image2": attachment("checker"),
                "dimensions": "landscape",
                "backend": "midjourney",
            },
        )
        return await inputs_used(await observer.reply(ch, inter), InputRole.BLEND, 2)

    await script.step("blend on Midjourney", blake, "succeeded", blend)

    async def describe() -> tuple[str, str]:
        inter = desi.invoke(ch, "describe", {"image": attachment("sea"), "backend": "midjourney"})
        reply = await observer.reply(ch, inter)
        state, detail = await script.outcome(reply)
        assert world.app is not None
        job = await world.app.store.get(reply.job_id or "")
        prompts = job.meta.get("prompts") if job is not None else None
        if state == "succeeded" and (not isinstance(prompts, list) or len(prompts) != 4):
            return "no prompts", detail
        return state, f"{detail} · {prompts[0] if prompts else ''}"

    await script.step("describe on Midjourney", desi, "succeeded", describe)

    async def comfyui_img2img() -> tuple[str, str]:
        inter = cole.invoke(
            ch,
            "imagine",
            {
                "prompt": "the same sea at night --iw 1.5",
                "image": attachment("sea"),
                "backend": "comfyui",
            },
        )
        return await inputs_used(await observer.reply(ch, inter), InputRole.PROMPT, 1)

    await script.step("comfyui img2img", cole, "succeeded", comfyui_img2img)

    async def bad_image() -> tuple[str, str]:
        assert world.app is not None
        ctx = RequestContext(user_id=mal.id)
        before = (await world.app.requests.quota(ctx)).used
        document = ("notes.png", b"%PDF-1.7\nnot a picture at all\n" * 8)
        inter = mal.invoke(ch, "imagine", {"prompt": "a cat", "image": document})
        reply = await observer.reply(ch, inter)
        after = (await world.app.requests.quota(ctx)).used
        if not reply.ephemeral or reply.job_id is not None:
            return "queued", reply.text[:80]
        if after != before:
            return "charged", f"used {before} → {after}"
        return "refused", reply.text[:80]

    await script.step("bad image refused", mal, "refused", bad_image)
