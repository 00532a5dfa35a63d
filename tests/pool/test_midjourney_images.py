"""Where Midjourney gets the images: prompt placement, /blend and /describe bodies, results."""

from __future__ import annotations

from gouache.jobs import Action, InputImage, InputRole, Job
from gouache.params import Params
from gouache.pool.midjourney_images import Prepared, blend_body, body_for, image_prompt
from gouache.pool.midjourney_wire import CommandRef, MessageKind, described_prompts, parse_message

IDS = {"guild_id": "1", "channel_id": "2", "session_id": "s", "nonce": "3"}


def test_image_prompts_come_first_and_references_after_their_flags() -> None:
    job = Job(user_id=1, prompt="a fox", params=Params(image_weight=2.0, style_weight=300))
    urls = {
        InputRole.PROMPT: ["https://cdn/p1.png", "https://cdn/p2.png"],
        InputRole.STYLE: ["https://cdn/s.png"],
        InputRole.CHARACTER: ["https://cdn/c.png"],
    }
    prompt = image_prompt(job, urls, "relax")
    assert prompt == (
        "https://cdn/p1.png https://cdn/p2.png a fox --iw 2 --sw 300"
        " --sref https://cdn/s.png --cref https://cdn/c.png --relax"
    )


def test_blend_and_describe_bodies_reference_the_uploads() -> None:
    command = CommandRef("10", "20", "blend", "936929561302675456")
    body = blend_body(command, ["u/a.png", "u/b.png"], (3, 2), **IDS)
    data = body["data"]
    assert [o["name"] for o in data["options"]] == ["image1", "image2", "dimensions"]
    assert data["options"][2]["value"] == "--ar 3:2"
    assert data["attachments"] == [
        {"id": "0", "filename": "a.png", "uploaded_filename": "u/a.png"},
        {"id": "1", "filename": "b.png", "uploaded_filename": "u/b.png"},
    ]
    describe = Job(
        user_id=1,
        prompt="describe",
        action=Action.DESCRIBE,
        input_images=[InputImage(role=InputRole.DESCRIBE, key="k" * 64 + ".png")],
    )
    dcmd = CommandRef("11", "21", "describe", "936929561302675456")
    dbody = body_for(dcmd, describe, Prepared(names=["u/x.png"]), "fast", **IDS)
    assert dbody["data"]["options"] == [{"type": 11, "name": "image", "value": 0}]
    assert dbody["data"]["attachments"][0]["uploaded_filename"] == "u/x.png"


def test_a_describe_result_is_read_as_four_prompts() -> None:
    text = "1️⃣ a red fox --ar 3:2\n\n2️⃣ a fox, watercolor\n\n3️⃣ snow,\nfox\n\n4️⃣ a den"
    assert described_prompts(text) == [
        "a red fox --ar 3:2",
        "a fox, watercolor",
        "snow, fox",
        "a den",
    ]
    msg = parse_message(
        {"id": "5", "nonce": "3", "content": "", "embeds": [{"description": text, "color": 0}]}
    )
    assert msg.kind is MessageKind.DESCRIBED and msg.nonce == "3"
    plain = parse_message({"id": "6", "content": "", "embeds": [{"description": "hello"}]})
    assert plain.kind is MessageKind.OTHER
