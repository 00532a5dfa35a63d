"""The Midjourney stand-in's image inputs: image prompts, --sref/--cref, /blend, /describe.

Midjourney loads every image link in a prompt (image prompts at the start,
``--sref URL…``, ``--cref URL…``) and answers "Invalid link" when one does not
load; the stand-in loads links to the sandbox's own CDN and refuses every
other. Its results show the inputs, so a test can see they were used: each
grid tile carries the image prompts (and references) as an inset, a blend's
tiles are mixes of its images, and a description names the image's colour
and shape.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from PIL import Image

from gouache_sandbox.discord import mjimage
from gouache_sandbox.discord.state import JSON, Command, SandboxState

BLEND_COMMAND_ID: Final = 1062880104792997970
DESCRIBE_COMMAND_ID: Final = 1092492867185950852
_ATTACHMENT_PATH: Final = re.compile(r"/attachments/\d+/(\d+)/[^/?#]+")
_URL: Final = re.compile(r"^https?://\S+$")
_NUMBERS: Final = ("1️⃣", "2️⃣", "3️⃣", "4️⃣")
_DIMENSIONS: Final = (("Portrait", "--ar 2:3"), ("Square", "--ar 1:1"), ("Landscape", "--ar 3:2"))


@dataclass
class PromptImages:
    """A prompt's image links, taken out of it."""

    text: str
    prompt: list[str] = field(default_factory=list)
    style: list[str] = field(default_factory=list)
    character: list[str] = field(default_factory=list)

    @property
    def links(self) -> list[str]:
        return [*self.prompt, *self.style, *self.character]


def split_links(prompt: str) -> PromptImages:
    """Leading URLs, and the URLs after ``--sref`` / ``--cref``."""
    words = prompt.split()
    out = PromptImages(text="")
    while words and _URL.match(words[0]):
        out.prompt.append(words.pop(0))
    kept: list[str] = []
    target: list[str] | None = None
    for word in words:
        if word.lower() in ("--sref", "--cref"):
            target = out.style if word.lower() == "--sref" else out.character
            kept.append(word)
            continue
        if target is not None and _URL.match(word):
            target.append(word)
            continue
        target = None
        kept.append(word)
    out.text = " ".join(w for w in kept if w.lower() not in ("--sref", "--cref"))
    return out


def load_link(state: SandboxState, base_url: str, url: str) -> bytes | None:
    """The bytes behind a link to the sandbox's CDN; None for anything Midjourney could not load."""
    if not url.startswith(base_url + "/attachments/"):
        return None
    m = _ATTACHMENT_PATH.search(url)
    att = state.attachments.get(int(m.group(1))) if m else None
    return att.data if att is not None else None


def _image(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as img:
        return img.convert("RGB")


def grid_with_inputs(prompt: str, job_hash: str, tile: int, inputs: list[bytes]) -> bytes:
    """The usual grid, each tile with the inputs pasted as an inset (top left, half size)."""
    grid = Image.open(io.BytesIO(mjimage.grid_png(prompt, job_hash, tile))).convert("RGB")
    if not inputs:
        return mjimage.to_png(grid)
    inset = _image(inputs[0]).resize((tile // 2, tile // 2))
    for i in range(4):
        grid.paste(inset, ((i % 2) * tile, (i // 2) * tile))
    return mjimage.to_png(grid)


def blend_grid(images: list[bytes], tile: int, aspect: tuple[int, int]) -> bytes:
    """Four mixes of the blended images, in the requested shape."""
    w, h = (
        (tile, tile * aspect[1] // aspect[0])
        if aspect[1] >= aspect[0]
        else (
            tile * aspect[0] // aspect[1],
            tile,
        )
    )
    pics = [_image(d).resize((w, h)) for d in images]
    grid = Image.new("RGB", (w * 2, h * 2))
    for i in range(4):
        mixed = pics[0]
        for n, pic in enumerate(pics[1:], start=2):
            mixed = Image.blend(mixed, pic, 1 / n if i % 2 == 0 else 0.5)
        grid.paste(mixed, ((i % 2) * w, (i // 2) * h))
    return mjimage.to_png(grid)


def _color_name(rgb: tuple[int, int, int]) -> str:
    if max(rgb) < 60:
        return "dark"
    if min(rgb) > 200:
        return "white"
    return ("red", "green", "blue")[max(range(3), key=lambda i: rgb[i])]


def describe(data: bytes) -> list[str]:
    """Four prompts for an image: its main colour and its shape."""
    img = _image(data)
    color = img.resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
    assert isinstance(color, tuple)
    name = _color_name((int(color[0]), int(color[1]), int(color[2])))
    w, h = img.size
    shape = "3:2" if w > h else "2:3" if h > w else "1:1"
    return [
        f"a {name} abstract composition, soft light --ar {shape}",
        f"{name} tones, minimalist poster, flat shapes --ar {shape}",
        f"a photograph dominated by {name}, shallow depth of field --ar {shape}",
        f"{name} watercolor study, textured paper --ar {shape}",
    ]


def describe_embed(prompts: list[str], image_url: str) -> JSON:
    """Midjourney's describe result: the numbered prompts, the image shown."""
    text = "\n\n".join(f"{_NUMBERS[i]} {p}" for i, p in enumerate(prompts))
    return {"type": "rich", "description": text, "image": {"url": image_url}, "color": 0}


def describe_components() -> list[JSON]:
    """Buttons 1-4 (``MJ::Job::PicReader::n``), re-roll and "Imagine all"."""
    buttons: list[JSON] = [
        {"type": 2, "style": 2, "label": str(n), "custom_id": f"MJ::Job::PicReader::{n}"}
        for n in range(1, 5)
    ]
    buttons.append(
        {"type": 2, "style": 2, "emoji": {"name": "🔄"}, "custom_id": "MJ::Picread::Retry"}
    )
    return [{"type": 1, "components": buttons}]


def register_commands(state: SandboxState, app_id: int, version: Callable[[], int]) -> None:
    """Midjourney's /blend and /describe, beside /imagine."""
    image = {"type": 11, "description": "An image"}
    blend = Command(
        id=BLEND_COMMAND_ID,
        application_id=app_id,
        name="blend",
        description="Blend images together seamlessly!",
        options=[
            {**image, "name": "image1", "required": True},
            {**image, "name": "image2", "required": True},
            {
                "type": 3,
                "name": "dimensions",
                "description": "The dimensions of the image",
                "choices": [{"name": n, "value": v} for n, v in _DIMENSIONS],
            },
            *({**image, "name": f"image{n}"} for n in (3, 4, 5)),
        ],
        version=version(),
    )
    describe_cmd = Command(
        id=DESCRIBE_COMMAND_ID,
        application_id=app_id,
        name="describe",
        description="Writes a prompt based on your image.",
        options=[{**image, "name": "image", "required": True}],
        version=version(),
    )
    state.commands[blend.id] = blend
    state.commands[describe_cmd.id] = describe_cmd


def aspect_of(dimensions: str | None) -> tuple[int, int]:
    """``--ar 2:3`` → (2, 3); a square by default."""
    m = re.search(r"(\d+):(\d+)", dimensions or "")
    return (int(m.group(1)), int(m.group(2))) if m else (1, 1)
