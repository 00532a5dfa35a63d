"""The demo crowd's pictures: an image prompt, a blend or a describe, taken in by the real bot."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from gouache.demo.crowd_images import image_action
from gouache.demo.pictures import NAMES, picture
from gouache.jobs import Action, InputRole
from gouache_sandbox.instant import InstantWorker

from ..images.pictures import mean_color


@pytest.mark.parametrize(
    ("roll", "action", "role", "count"),
    [
        (0.40, Action.IMAGINE, InputRole.PROMPT, 1),
        (0.46, Action.BLEND, InputRole.BLEND, 2),
        (0.50, Action.DESCRIBE, InputRole.DESCRIBE, 1),
    ],
)
async def test_crowd_members_attach_the_demos_pictures(
    make_world: Callable[..., Any], roll: float, action: Action, role: InputRole, count: int
) -> None:
    world = await make_world([InstantWorker("instant-1")])
    member = world.member("pat")
    with world.app.bus.subscribe(lambda e: e.final) as finals:
        assert image_action(member, world.channel.id, random.Random(3), roll)
        event = await anext(aiter(finals))
    job = await world.app.store.get(event.job_id)
    assert job is not None and job.action is action and len(job.inputs(role)) == count
    assert not image_action(member, world.channel.id, random.Random(3), 0.2)


def test_the_demo_draws_distinct_pictures() -> None:
    colors = {mean_color(picture(name)) for name in NAMES}
    assert len(colors) == len(NAMES)
