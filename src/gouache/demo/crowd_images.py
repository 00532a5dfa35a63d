"""The crowd's images: now and then a member attaches one of the demo's pictures.

An image prompt (`/imagine` with an image), a `/blend` of two pictures, or a
`/describe`, drawn from `gouache.demo.pictures`, so the viewer shows images
going in as well as coming out.
"""

from __future__ import annotations

import random

from gouache.demo.pictures import NAMES, attachment
from gouache_sandbox.discord.members import SimulatedMember

#: Image prompts the crowd writes beside its pictures.
IMAGE_PROMPTS = (
    "the same scene at night --iw 1.5",
    "as a watercolor painting",
    "in the style of a travel poster --iw 0.8",
)


def image_action(member: SimulatedMember, channel_id: int, rng: random.Random, roll: float) -> bool:
    """Do something with images when ``roll`` says so (about one turn in six); True if done."""
    if not 0.35 <= roll < 0.52:
        return False
    first, second = rng.sample(NAMES, 2)
    if roll < 0.44:
        options = {"prompt": rng.choice(IMAGE_PROMPTS), "image": attachment(first)}
        member.invoke(channel_id, "imagine", options)
    elif roll < 0.49:
        shape = rng.choice(["portrait", "square", "landscape"])
        options = {"image1": attachment(first), "image2": attachment(second), "dimensions": shape}
        member.invoke(channel_id, "blend", options)
    else:
        member.invoke(channel_id, "describe", {"image": attachment(first)})
    return True
