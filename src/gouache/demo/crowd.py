"""The demo's crowd: members who imagine (in English and Chinese), press U/V,
cancel, run into their daily limit, and one VIP whose jobs jump the line."""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass, field

import structlog

from gouache.demo.members import buttons, imagine
from gouache.demo.world import DemoWorld
from gouache_sandbox.discord.members import SimulatedMember
from gouache_sandbox.discord.state import Interaction, Message

__all__ = ["Crowd", "Persona"]

log = structlog.get_logger(__name__)

EN_PROMPTS = [
    "a red fox in fresh snow, morning light",
    "isometric cozy bookshop at night, warm windows",
    "a lighthouse in a storm, oil painting",
    "macro photo of a dewdrop on a leaf --ar 3:2",
    "retro poster of a rocket over the moon --ar 2:3",
    "a teapot shaped like a snail, studio photo",
    "watercolor map of an imaginary island --ar 16:9",
    "a robot tending a bonsai garden",
]
ZH_PROMPTS = [
    "一只在月光下的猫 --ar 16:9",
    "雪山下的小木屋，水彩画",
    "赛博朋克风格的城市夜景 --ar 21:9",
    "一碗热腾腾的拉面，特写",
    "穿着宇航服的熊猫",
]

NAMES = [
    "alice",
    "bob",
    "chen",
    "dora",
    "emil",
    "fang",
    "gus",
    "hana",
    "ivan",
    "jun",
    "kai",
    "lena",
]


@dataclass
class Persona:
    """How one member behaves."""

    member: SimulatedMember
    chinese: bool = False
    vip: bool = False
    heavy: bool = False  # asks in bursts; meets the daily limit first
    done: list[Message] = field(default_factory=list)


class Crowd:
    """``members`` people making about ``rate`` requests a minute between them."""

    def __init__(
        self, world: DemoWorld, *, members: int = 6, rate: float = 20.0, seed: int | None = None
    ) -> None:
        self.world = world
        self.rng = random.Random(seed)
        self.rate = rate
        self.personas: list[Persona] = []
        for n in range(max(1, members)):
            name = NAMES[n % len(NAMES)] + ("" if n < len(NAMES) else str(n // len(NAMES)))
            chinese = n % 3 == 1
            vip = n == 2
            heavy = n == 3
            label = f"{name} (VIP)" if vip else name
            member = world.add_member(label, vip=vip, locale="zh-CN" if chinese else "en-US")
            self.personas.append(Persona(member, chinese=chinese, vip=vip, heavy=heavy))
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for persona in self.personas:
            self._tasks.append(
                asyncio.create_task(self._live(persona), name=f"member-{persona.member.id}")
            )

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _live(self, persona: Persona) -> None:
        per_member = self.rate / len(self.personas) / 60.0  # requests per second
        # Everyone acts once at the start, so a newcomer sees work at once.
        await asyncio.sleep(self.rng.uniform(0.0, 3.0))
        while True:
            try:
                await self._act(persona)
            except Exception as exc:  # a simulated person's mistake must not end the demo
                log.warning(
                    "demo.member_failed", member=persona.member.user.username, error=str(exc)
                )
            burst = 4 if persona.heavy else 1
            wait = self.rng.expovariate(per_member / burst) if per_member > 0 else 3600.0
            await asyncio.sleep(min(wait, 120.0))

    async def _act(self, persona: Persona) -> None:
        world = self.world
        assert world.channel is not None
        ch = world.channel.id
        finished = self._finished(persona)
        roll = self.rng.random()
        if finished and roll < 0.35:
            message = self.rng.choice(finished[-3:])
            choices = [b for b in buttons(message) if b.split(":")[1] in ("u", "v", "r", "b")]
            if choices:
                click = persona.member.click(message, self.rng.choice(choices))
                await self._fill_modal(persona, click)
                return
        prompt = self.rng.choice(ZH_PROMPTS if persona.chinese else EN_PROMPTS)
        backend = self.rng.choice([None, None, "midjourney", "comfyui"])
        count = 3 if persona.heavy else 1
        for _ in range(count):
            inter = imagine(persona.member, ch, prompt, backend=backend)
            if roll > 0.9:  # changes their mind
                answer = str(inter.id)

                def answers(m: Message, answer: str = answer) -> bool:
                    return str((m.interaction_metadata or {}).get("id")) == answer

                assert world.sandbox is not None
                message = await world.sandbox.wait_for_message(ch, answers, timeout=20)
                cancel = [b for b in buttons(message) if b.startswith("gouache:x:")]
                if cancel:
                    persona.member.click(message, cancel[0])

    async def _fill_modal(self, persona: Persona, click: Interaction) -> None:
        """A button that asks first (Custom Zoom, Remix): submit what it prefilled, or a new prompt."""
        async with asyncio.timeout(10):
            await click.responded.wait()
        modal = persona.member.modal(click)
        if modal is None:
            return
        field = modal.inputs[0]
        value = field.value
        if "--zoom" not in value and self.rng.random() < 0.5:
            value = f"{value}, {self.rng.choice(['at dusk', 'in watercolour', 'wider'])}"
        persona.member.submit_modal(click, {field.custom_id: value})

    def _finished(self, persona: Persona) -> list[Message]:
        world = self.world
        assert world.channel is not None
        mine: list[Message] = []
        for m in persona.member.read(world.channel.id, limit=100):
            meta = m.interaction_metadata or {}
            user = meta.get("user") or {}
            if (
                str(user.get("id")) == str(persona.member.id)
                and m.attachments
                and any(
                    b.startswith(("gouache:u:", "gouache:r:", "gouache:b:")) for b in buttons(m)
                )
            ):
                mine.append(m)
        return mine
