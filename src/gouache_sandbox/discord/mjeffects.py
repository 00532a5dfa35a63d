"""What the Midjourney stand-in's buttons do to a picture, visibly (Pillow, deterministic).

- zoom out: a canvas ``zoom`` times larger, freshly drawn, with the old image
  pasted unchanged in its centre;
- pan: one side extended by half, the old image kept against the other side;
- make square: the short side extended to the long one, the image centred;
- vary: the old image blended with new shapes (subtle: a little, strong: a lot);
- upscale (subtle/creative): twice the size (creative adds detail: sharpened);
- swirl (the invented button): the image turned a quarter.

Each grid-making action draws four candidates (different new content around
or over the same old image) and tiles them 2×2.
"""

from __future__ import annotations

import io

from PIL import Image, ImageFilter

from gouache_sandbox.discord.mjimage import draw_tile, to_png


def load(png: bytes) -> Image.Image:
    """Decode an image as RGB."""
    return Image.open(io.BytesIO(png)).convert("RGB")


def _backdrop(prompt: str, seed: str, width: int, height: int) -> Image.Image:
    side = max(width, height)
    return draw_tile(prompt, seed, side).crop((0, 0, width, height))


def zoom_out(img: Image.Image, zoom: float, prompt: str, seed: str) -> Image.Image:
    """A larger canvas with ``img`` in its centre."""
    w, h = img.size
    cw, ch = round(w * zoom), round(h * zoom)
    canvas = _backdrop(prompt, seed, cw, ch)
    canvas.paste(img, ((cw - w) // 2, (ch - h) // 2))
    return canvas


def pan(img: Image.Image, direction: str, prompt: str, seed: str) -> Image.Image:
    """``img`` extended by half its size on one side (left, right, up or down)."""
    w, h = img.size
    if direction in ("left", "right"):
        cw, ch = w + w // 2, h
    else:
        cw, ch = w, h + h // 2
    canvas = _backdrop(prompt, seed, cw, ch)
    x = cw - w if direction == "left" else 0
    y = ch - h if direction == "up" else 0
    canvas.paste(img, (x, y))
    return canvas


def make_square(img: Image.Image, prompt: str, seed: str) -> Image.Image:
    """``img`` centred on a square canvas of its long side."""
    w, h = img.size
    side = max(w, h)
    canvas = _backdrop(prompt, seed, side, side)
    canvas.paste(img, ((side - w) // 2, (side - h) // 2))
    return canvas


def vary(img: Image.Image, strength: float, prompt: str, seed: str) -> Image.Image:
    """``img`` blended with new shapes (``strength`` 0–1)."""
    fresh = _backdrop(prompt, seed, *img.size)
    return Image.blend(img, fresh, strength)


def upscale(img: Image.Image, *, creative: bool) -> Image.Image:
    """Twice the size; creative adds detail."""
    big = img.resize((img.width * 2, img.height * 2), Image.Resampling.LANCZOS)
    return big.filter(ImageFilter.SHARPEN) if creative else big


def swirl(img: Image.Image) -> Image.Image:
    """A quarter turn (the invented button's effect)."""
    return img.transpose(Image.Transpose.ROTATE_90)


def grid(tiles: list[Image.Image]) -> bytes:
    """Four same-sized candidates tiled 2×2, as PNG."""
    w, h = tiles[0].size
    out = Image.new("RGB", (w * 2, h * 2))
    for i, tile in enumerate(tiles[:4]):
        out.paste(tile, ((i % 2) * w, (i // 2) * h))
    return to_png(out)


def crop_tile(grid_png: bytes, index: int) -> Image.Image:
    """Candidate ``index`` (1–4) of a 2×2 grid."""
    img = load(grid_png)
    w, h = img.width // 2, img.height // 2
    x, y = ((index - 1) % 2) * w, ((index - 1) // 2) * h
    return img.crop((x, y, x + w, y + h))
