"""`gouache demo --scenario smoke`: a fixed script, checked step by step.

Each step is something a member does through the sandbox and the end state
gouache must bring the job to. The run passes only if every step does.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from gouache.bot.service import RequestContext
from gouache.demo.members import Observer, Reply, buttons, imagine
from gouache.demo.smoke_buttons import run_button_steps
from gouache.demo.smoke_channels import run_channel_steps
from gouache.demo.smoke_images import run_image_steps
from gouache.demo.world import DemoWorld
from gouache.jobs import JobState
from gouache_sandbox.discord.members import SimulatedMember
from gouache_sandbox.discord.permissions import P

__all__ = ["SmokeResult", "StepResult", "run_smoke"]

JOB_TIMEOUT_S = 60.0


@dataclass
class StepResult:
    """One step of the script: what was expected and what happened."""

    name: str
    member: str
    expected: str
    got: str
    seconds: float
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.expected == self.got

    def as_json(self) -> dict[str, object]:
        """The step as `gouache demo --scenario smoke --json` prints it (one object a line)."""
        return {
            "step": self.name,
            "member": self.member,
            "expected": self.expected,
            "got": self.got,
            "ok": self.ok,
            "detail": self.detail,
        }


@dataclass
class SmokeResult:
    steps: list[StepResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps)


class _Script:
    def __init__(self, world: DemoWorld, observer: Observer) -> None:
        assert world.channel is not None
        assert world.app is not None
        self.world = world
        self.channel_id = world.channel.id
        self.observer = observer
        self.result = SmokeResult()

    async def step(
        self,
        name: str,
        member: SimulatedMember,
        expected: str,
        action: Callable[[], Awaitable[tuple[str, str]]],
    ) -> str:
        started = time.perf_counter()
        try:
            got, detail = await action()
        except TimeoutError:
            got, detail = "timeout", "no answer in time"
        except Exception as exc:  # a broken step is a failed step, not a crashed demo
            got, detail = "error", f"{type(exc).__name__}: {exc}"
        self.result.steps.append(
            StepResult(
                name, member.user.username, expected, got, time.perf_counter() - started, detail
            )
        )
        return got

    async def outcome(self, reply: Reply, channel_id: int | None = None) -> tuple[str, str]:
        """Wait for the job behind ``reply`` to end; check its message shows the result."""
        if reply.job_id is None:
            return "refused", reply.text[:80]
        event = await self.observer.final(reply.job_id, JOB_TIMEOUT_S)
        state = event.state or JobState.FAILED
        if state is JobState.SUCCEEDED:
            # The member sees the image, uploaded as an attachment to the live message.
            await self.observer.message_where(
                channel_id or self.channel_id,
                lambda m: m.id == reply.message.id and bool(m.attachments),
                timeout=15,
            )
        assert self.world.app is not None
        job = await self.world.app.store.get(reply.job_id)
        detail = ""
        if job is not None:
            detail = f"{job.worker or '-'}"
            if job.meta.get("translated_prompt"):
                detail += f" · {job.meta['translated_prompt']}"
            if job.error_message:
                detail += f" · {job.error_message}"
        return state.value, detail


async def run_smoke(world: DemoWorld) -> SmokeResult:  # noqa: C901, PLR0915
    """Run the script against a started `DemoWorld` (made with ``daily_limit=3``)."""
    assert world.app is not None
    assert world.sandbox is not None
    assert world.channel is not None
    observer = Observer(world.sandbox, world.app.bus)
    observer.start()
    script = _Script(world, observer)
    ch = world.channel.id
    try:
        alice = world.add_member("alice")
        bob = world.add_member("bob", locale="zh-CN")
        carol = world.add_member("carol")
        dave = world.add_member("dave")
        vera = world.add_member("vera", vip=True)
        erin = world.add_member("erin")

        first: dict[str, Reply] = {}

        async def used(member: SimulatedMember) -> int:
            assert world.app is not None
            return (await world.app.requests.quota(RequestContext(user_id=member.id))).used

        async def alice_imagine() -> tuple[str, str]:
            inter = imagine(alice, ch, "a red fox in fresh snow --ar 3:2", backend="midjourney")
            first["fox"] = reply = await observer.reply(ch, inter)
            return await script.outcome(reply)

        await script.step("imagine on Midjourney", alice, "succeeded", alice_imagine)

        async def press(op: str) -> tuple[str, str]:
            fox = first.get("fox")
            if fox is None or fox.job_id is None:
                return "skipped", "no parent image"
            message = await observer.message_where(
                ch, lambda m: m.id == fox.message.id and f"gouache:{op}" in buttons(m)
            )
            inter = alice.click(message, f"gouache:{op}")
            return await script.outcome(await observer.reply(ch, inter))

        def fox_id() -> str:
            return (first["fox"].job_id or "") if "fox" in first else ""

        await script.step("U2 upscale", alice, "succeeded", lambda: press(f"u:{fox_id()}:2"))
        await script.step("V1 variation", alice, "succeeded", lambda: press(f"v:{fox_id()}:1"))

        async def bob_chinese() -> tuple[str, str]:
            inter = imagine(bob, ch, "一只在月光下的猫 --ar 16:9", backend="comfyui")
            reply = await observer.reply(ch, inter)
            state, detail = await script.outcome(reply)
            assert world.app is not None
            assert reply.job_id is not None
            job = await world.app.store.get(reply.job_id)
            translated = str(job.meta.get("translated_prompt", "")) if job else ""
            if state == "succeeded" and (not translated.isascii() or "--ar 16:9" not in translated):
                return "untranslated", translated
            return state, detail

        await script.step("Chinese prompt on ComfyUI", bob, "succeeded", bob_chinese)

        async def carol_cancel() -> tuple[str, str]:
            before = await used(carol)
            inter = imagine(carol, ch, "a lighthouse in a storm", backend="comfyui")
            reply = await observer.reply(ch, inter)
            if reply.job_id is None:
                return "refused", reply.text[:80]
            carol.click(reply.message, f"gouache:x:{reply.job_id}")
            state, detail = await script.outcome(reply)
            after = await used(carol)
            if state == "canceled" and after != before:
                return "not refunded", f"used {before} → {after}"
            return state, detail

        await script.step("cancel", carol, "canceled", carol_cancel)

        for n in range(1, 4):

            async def dave_imagine(n: int = n) -> tuple[str, str]:
                inter = imagine(dave, ch, f"study of a teapot, number {n}", backend="comfyui")
                return await script.outcome(await observer.reply(ch, inter))

            await script.step(f"imagine {n}/3 of the daily limit", dave, "succeeded", dave_imagine)

        async def dave_over() -> tuple[str, str]:
            inter = imagine(dave, ch, "one teapot too many")
            reply = await observer.reply(ch, inter)
            return (
                "refused" if reply.ephemeral and reply.job_id is None else "queued"
            ), reply.text[:80]

        await script.step("over the daily limit", dave, "refused", dave_over)

        async def erin_no_uploads() -> tuple[str, str]:
            # A channel where the server took Attach Files from gouache's role: gouache
            # must refuse at once, name the permission, and take nothing from the quota.
            assert world.sandbox is not None
            assert world.guild is not None
            assert world.app is not None
            assert world.app.bot is not None
            bot = world.app.bot.user
            assert bot is not None
            sandbox = world.sandbox
            locked = sandbox.add_channel(world.guild, "no-uploads")
            role = sandbox.bot_role(world.guild, sandbox.state.users[bot.id])
            sandbox.set_overwrite(locked, role.id, deny=P.ATTACH_FILES)
            before = await used(erin)
            inter = imagine(erin, locked.id, "a kite over the dunes")
            reply = await observer.reply(locked.id, inter)
            after = await used(erin)
            if not reply.ephemeral or reply.job_id is not None:
                return "queued", reply.text[:80]
            if "Attach Files" not in reply.text:
                return "unnamed", reply.text[:80]
            if after != before:
                return "charged", f"used {before} → {after}"
            return "refused", reply.text[:80]

        await script.step("missing permission", erin, "refused", erin_no_uploads)

        async def vip() -> tuple[str, str]:
            inter = imagine(vera, ch, "portrait of a queen in gold leaf")
            return await script.outcome(await observer.reply(ch, inter))

        await script.step("VIP imagine", vera, "succeeded", vip)
        await run_image_steps(script, world, observer)
        await run_channel_steps(script, world, observer)
        await run_button_steps(script)
    finally:
        await observer.aclose()
    return script.result
