"""Test pictures: plain colours, a photo with EXIF, a decompression bomb, not-an-image."""

from __future__ import annotations

import io
import os
import struct
import zlib

from PIL import Image


def png(color: tuple[int, int, int] = (200, 30, 40), size: tuple[int, int] = (64, 48)) -> bytes:
    """A plain PNG of one colour."""
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_with_exif(color: tuple[int, int, int] = (20, 160, 40)) -> bytes:
    """A JPEG carrying EXIF (a camera model and a GPS block), as phones send them."""
    img = Image.new("RGB", (80, 60), color)
    exif = Image.Exif()
    exif[0x0110] = "SecretCam 3000"  # Model
    exif[0x8825] = {2: (48.0, 51.0, 29.0)}  # GPSInfo: latitude
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes(), quality=90)
    return buf.getvalue()


def gif(colors: tuple[tuple[int, int, int], ...] = ((0, 0, 255), (255, 255, 0))) -> bytes:
    """An animated GIF whose first frame is the first colour."""
    frames = [Image.new("RGB", (32, 32), c) for c in colors]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb(side: int = 60000) -> bytes:
    """A tiny PNG that claims ``side``² pixels (a decompression bomb: 3.6 gigapixels)."""
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    row = b"\x00" + b"\x00" * (side * 3)
    body = zlib.compress(row * 4, 9)  # a few rows; the header is what counts
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", body)
        + _chunk(b"IEND", b"")
    )


NOT_AN_IMAGE = b"%PDF-1.7\n" + b"this is a document, not a picture\n" * 20


def mean_color(data: bytes) -> tuple[int, int, int]:
    """The average colour of an image."""
    with Image.open(io.BytesIO(data)) as img:
        small = img.convert("RGB").resize((1, 1), Image.Resampling.BOX)
        r, g, b = small.getpixel((0, 0))  # type: ignore[misc]
        return int(r), int(g), int(b)


def noisy_png(size: tuple[int, int] = (400, 400)) -> bytes:
    """A PNG of random pixels: it does not compress (about 3 bytes a pixel)."""
    img = Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
