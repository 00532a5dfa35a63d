"""The image side of a request: sources in order, counts, weights, blend shapes, describe picks."""

from __future__ import annotations

import pytest

from gouache.bot.image_requests import (
    MAX_IMAGINE_IMAGES,
    Shape,
    check_blend_count,
    check_weights,
    described_prompt,
    gather_sources,
    source,
)
from gouache.errors import InvalidParameter
from gouache.images.check import ImageRejected
from gouache.jobs import Action, InputRole, Job, JobState
from gouache.params import parse_prompt


def test_attachments_and_links_in_midjourneys_order() -> None:
    attached = [
        source(InputRole.STYLE, "https://cdn/style.png"),
        source(InputRole.PROMPT, "https://cdn/me.png"),
    ]
    text, sources = gather_sources(
        "https://x.example/a.png a fox --cref https://x.example/c.png --ar 3:2",
        attached,
        takes_images=True,
    )
    assert text == "a fox --ar 3:2"
    assert [(s.role, s.url) for s in sources] == [
        (InputRole.PROMPT, "https://cdn/me.png"),
        (InputRole.PROMPT, "https://x.example/a.png"),
        (InputRole.STYLE, "https://cdn/style.png"),
        (InputRole.CHARACTER, "https://x.example/c.png"),
    ]
    assert sources[0].label == "The image prompt"


def test_too_many_images_or_images_on_a_bot_without_intake_are_refused() -> None:
    links = " ".join(f"https://x.example/{n}.png" for n in range(MAX_IMAGINE_IMAGES + 1))
    with pytest.raises(ImageRejected, match="At most 5 images"):
        gather_sources(f"{links} a fox", [], takes_images=True)
    with pytest.raises(ImageRejected, match="does not take images"):
        gather_sources("a fox", [source(InputRole.PROMPT, "https://cdn/a.png")], takes_images=False)
    # Without image intake a link stays plain text, as before.
    assert gather_sources("https://x.example/a.png a fox", [], takes_images=False)[1] == []


def test_weights_need_their_image() -> None:
    prompt = [source(InputRole.PROMPT, "https://cdn/a.png")]
    check_weights(parse_prompt("x --iw 2").params, prompt)
    for flag, name in (("--iw 2", "--iw"), ("--sw 100", "--sw"), ("--cw 50", "--cw")):
        with pytest.raises(InvalidParameter, match=name):
            check_weights(parse_prompt(f"x {flag}").params, [])


def test_blend_counts_and_shapes() -> None:
    check_blend_count(2)
    check_blend_count(5)
    for bad in (1, 6):
        with pytest.raises(ImageRejected, match="2 to 5"):
            check_blend_count(bad)
    assert [s.aspect for s in Shape] == [(2, 3), (1, 1), (3, 2)]


def test_a_described_prompt_is_picked_by_number() -> None:
    job = Job(
        user_id=1,
        prompt="describe",
        action=Action.DESCRIBE,
        state=JobState.SUCCEEDED,
        meta={"prompts": ["one", "two", "three", "four"]},
    )
    assert described_prompt(job, 3) == "three"
    with pytest.raises(InvalidParameter):
        described_prompt(job, 5)
    with pytest.raises(InvalidParameter, match="not a finished description"):
        described_prompt(job.model_copy(update={"state": JobState.RUNNING}), 1)
