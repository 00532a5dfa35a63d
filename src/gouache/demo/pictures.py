"""A small set of pictures the demo draws for its members to attach (no files shipped).

Each is drawn with Pillow on first use: plain shapes and gradients, small
(256 px), so an image prompt, a blend or a describe in the demo shows its
input plainly in the result.
"""

from __future__ import annotations

import io
from functools import cache
from typing import Final

from PIL import Image, ImageDraw

SIZE: Final = 256
NAMES: Final = ("sunset", "sea", "forest", "checker")


def _gradient(top: tuple[int, int, int], bottom: tuple[int, int, int]) -> Image.Image:
    img = Image.new("RGB", (SIZE, SIZE))
    draw = ImageDraw.Draw(img)
    for y in range(SIZE):
        t = y / (SIZE - 1)
        draw.line(
            [(0, y), (SIZE, y)],
            fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)),
        )
    return img


def _draw(name: str) -> Image.Image:
    if name == "sunset":
        img = _gradient((250, 120, 40), (120, 20, 80))
        ImageDraw.Draw(img).ellipse([88, 120, 168, 200], fill=(255, 220, 90))
        return img
    if name == "sea":
        img = _gradient((120, 190, 250), (10, 40, 120))
        draw = ImageDraw.Draw(img)
        for y in range(140, SIZE, 24):
            draw.arc([-20, y - 10, SIZE + 20, y + 10], 0, 180, fill=(230, 240, 255), width=3)
        return img
    if name == "forest":
        img = _gradient((170, 220, 160), (20, 70, 30))
        draw = ImageDraw.Draw(img)
        for x in range(10, SIZE, 40):
            draw.polygon([(x, 220), (x + 20, 90), (x + 40, 220)], fill=(20, 110, 40))
        return img
    if name == "checker":
        img = Image.new("RGB", (SIZE, SIZE), (240, 240, 240))
        draw = ImageDraw.Draw(img)
        for i in range(8):
            for j in range(8):
                if (i + j) % 2:
                    draw.rectangle([i * 32, j * 32, i * 32 + 31, j * 32 + 31], fill=(30, 30, 30))
        return img
    raise KeyError(name)


@cache
def picture(name: str) -> bytes:
    """The PNG bytes of one of `NAMES`."""
    buf = io.BytesIO()
    _draw(name).save(buf, format="PNG")
    return buf.getvalue()


def attachment(name: str) -> tuple[str, bytes]:
    """``(filename, bytes)`` as a simulated member attaches it."""
    return f"{name}.png", picture(name)
