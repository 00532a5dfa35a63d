"""Pictures for the Midjourney stand-in, drawn with Pillow from the prompt (deterministic)."""

from __future__ import annotations

import hashlib
import io

from PIL import Image, ImageDraw, ImageFilter


def _palette(seed: str) -> list[tuple[int, int, int]]:
    digest = hashlib.sha256(seed.encode()).digest()
    return [(digest[i], digest[i + 1], digest[i + 2]) for i in range(0, 30, 3)]


def draw_tile(prompt: str, seed: str, size: int) -> Image.Image:
    """One square picture whose shapes and colours follow from ``prompt`` and ``seed``."""
    colors = _palette(f"{prompt}|{seed}")
    img = Image.new("RGB", (size, size), colors[0])
    draw = ImageDraw.Draw(img)
    for i, color in enumerate(colors[1:7]):
        x = (color[0] * size) // 256
        y = (color[1] * size) // 256
        r = size // 8 + (color[2] * size) // 1024 + i
        if i % 2:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=color)
        else:
            draw.rectangle((x - r, y - r // 2, x + r, y + r // 2), fill=color)
    draw.text((4, size - 14), prompt[:28], fill=(255, 255, 255))
    return img


def to_png(img: Image.Image) -> bytes:
    """Encode as PNG."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def grid_png(prompt: str, job_hash: str, tile: int) -> bytes:
    """The 2×2 grid of four candidates."""
    grid = Image.new("RGB", (tile * 2, tile * 2))
    for i in range(4):
        grid.paste(draw_tile(prompt, f"{job_hash}:{i}", tile), ((i % 2) * tile, (i // 2) * tile))
    return to_png(grid)


def preview_png(prompt: str, job_hash: str, tile: int, percent: int) -> bytes:
    """A blurred, small grid standing in for an in-progress preview."""
    grid = Image.open(io.BytesIO(grid_png(prompt, job_hash, max(16, tile // 2))))
    radius = max(0.5, (100 - percent) / 10)
    return to_png(grid.filter(ImageFilter.GaussianBlur(radius)))


def single_png(prompt: str, job_hash: str, tile: int) -> bytes:
    """One upscaled picture."""
    return to_png(draw_tile(prompt, job_hash, tile * 2))
