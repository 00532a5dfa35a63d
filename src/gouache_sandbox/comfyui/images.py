"""Pictures the ComfyUI stand-in "generates": drawn with Pillow, deterministic per input.

An image batch travels through the simulated graph as a `Picture` description;
pixels are only produced when a node saves or previews it, so a 1024² batch of
100 costs nothing until something looks at it.
"""

from __future__ import annotations

import hashlib
import io
import random
import textwrap
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

#: The largest side we actually draw; bigger pictures are drawn smaller and scaled.
_DRAW_LIMIT = 2048


@dataclass(frozen=True, slots=True)
class Picture:
    """A batch of images as the simulated graph sees it."""

    width: int
    height: int
    batch: int
    color: int = 0
    text: str = ""
    seed: int | None = None
    noise: float = 0.0
    blur: float = 0.0
    inverted: bool = False
    source: str | None = None  # a file in the input folder (LoadImage)
    layers: tuple[tuple[Picture, float], ...] = ()  # ImageBlend: pictures laid over, by factor
    #: Grey margins around the picture (ImagePadForOutpaint): left, top, right, bottom.
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)

    def with_(self, **changes: object) -> Picture:
        """A copy with some fields changed."""
        return replace(self, **changes)  # type: ignore[arg-type]


def _rng(*parts: object) -> random.Random:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def render(picture: Picture, index: int, caption: str = "") -> Image.Image:
    """Draw image ``index`` of the batch (same inputs, same pixels)."""
    if any(picture.pad):
        left, top, right, bottom = picture.pad
        inner = picture.with_(
            width=max(1, picture.width - left - right),
            height=max(1, picture.height - top - bottom),
            pad=(0, 0, 0, 0),
        )
        # ComfyUI fills the new margins with mid grey (0.5) for the sampler to paint over.
        canvas = Image.new("RGB", (picture.width, picture.height), (128, 128, 128))
        canvas.paste(render(inner, index, caption), (left, top))
        return canvas
    text = picture.text or caption
    w, h = picture.width, picture.height
    scale = max(w, h) / _DRAW_LIMIT
    dw, dh = (w, h) if scale <= 1 else (max(1, int(w / scale)), max(1, int(h / scale)))
    if picture.source is not None:
        with Image.open(picture.source) as src:
            img = src.convert("RGB").resize((dw, dh))
    else:
        img = _scene(dw, dh, picture.color, text, picture.seed, index)
    for layer, factor in picture.layers:
        over = render(layer, index).convert("RGB").resize((dw, dh))
        img = Image.blend(img, over, factor)
    if picture.noise > 0:
        rng = _rng("noise", picture.seed, index)
        px = img.load()
        assert px is not None
        for _ in range(int(dw * dh * picture.noise * 0.05)):
            x, y = rng.randrange(dw), rng.randrange(dh)
            px[x, y] = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
    if picture.blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(picture.blur))
    if picture.inverted:
        img = ImageOps.invert(img)
    if (dw, dh) != (w, h):
        img = img.resize((w, h))
    return img


def _scene(w: int, h: int, color: int, text: str, seed: int | None, index: int) -> Image.Image:  # noqa: PLR0913
    base = ((color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF)
    img = Image.new("RGB", (w, h), base)
    if not text and seed is None:
        return img  # a plain EmptyImage, like ComfyUI's
    rng = _rng(text, seed, index)
    draw = ImageDraw.Draw(img)
    top = tuple(rng.randrange(256) for _ in range(3))
    bottom = tuple(rng.randrange(256) for _ in range(3))
    for y in range(h):
        t = y / max(1, h - 1)
        draw.line(
            [(0, y), (w, y)],
            fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)),
        )
    for _ in range(rng.randrange(3, 9)):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        r = rng.randrange(max(2, min(w, h) // 10), max(3, min(w, h) // 3))
        fill = tuple(rng.randrange(256) for _ in range(3))
        if rng.random() < 0.5:
            draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=fill)
        else:
            draw.rectangle([x0 - r, y0 - r // 2, x0 + r, y0 + r // 2], fill=fill)
    if text and w >= 32 and h >= 16:
        size = max(10, min(w, h) // 18)
        font = ImageFont.load_default(size=size)
        chars = max(8, w // max(6, min(w, h) // 30))
        lines = textwrap.wrap(" ".join(text.split()), width=chars)[:6]
        y = h // 20
        for line in lines:
            draw.text((w // 20 + 1, y + 1), line, fill=(0, 0, 0), font=font)
            draw.text((w // 20, y), line, fill=(255, 255, 255), font=font)
            y += int(size * 1.3)
    return img


def encode(img: Image.Image, fmt: str = "PNG", quality: int = 90) -> bytes:
    """Encode ``img`` as PNG, JPEG or WEBP bytes."""
    buf = io.BytesIO()
    if fmt == "PNG":
        img.save(buf, format="PNG", compress_level=1)
    else:
        img.save(buf, format=fmt, quality=quality)
    return buf.getvalue()


def sampling_preview(final: Image.Image, step: int, steps: int, limit: int = 256) -> bytes:
    """A JPEG preview of a sampling step: the final image, blurred less as steps pass."""
    small = final.copy()
    small.thumbnail((limit, limit))
    remaining = 1 - (step / max(1, steps))
    if remaining > 0:
        small = small.filter(ImageFilter.GaussianBlur(radius=remaining * max(small.size) / 8))
    return encode(small, "JPEG", 75)


def save_png(img: Image.Image, path: Path) -> None:
    """Write ``img`` as PNG to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(img, "PNG"))


def sha_bytes(text: str) -> bytes:
    """SHA-256 of ``text`` (for deterministic colours)."""
    return hashlib.sha256(text.encode()).digest()
