"""Is it a real image, within the caps? Decode it with Pillow and strip its metadata.

Only PNG, JPEG, WebP and GIF (its first frame) are taken. The pixel count is
read from the header and checked *before* anything is decoded, so a small file
that claims 100,000 × 100,000 pixels (a decompression bomb) is refused without
allocating them; Pillow's own bomb check is kept on as a second line. The
image is then decoded in full (a truncated or corrupt file fails here, not at
the backend) and written again without EXIF, text chunks, ICC profiles or
comments: a member's camera position never leaves for a backend. JPEG and WebP
stay what they are (quality 95), PNG stays PNG, a GIF becomes a PNG of its
first frame. EXIF orientation is applied before it is dropped, so the picture
still stands the right way up.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Final

from PIL import Image, ImageOps, UnidentifiedImageError

from gouache.errors import ErrorCode, GouacheError

#: What Pillow may identify a file as.
FORMATS: Final = ("PNG", "JPEG", "WEBP", "GIF")
_OUT: Final = {"PNG": "PNG", "JPEG": "JPEG", "WEBP": "WEBP", "GIF": "PNG"}
_CONTENT_TYPES: Final = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
_EXTENSIONS: Final = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}
MB: Final = 1024 * 1024


class ImageRejected(GouacheError):
    """An input image is unusable (not an image, too large, a bomb) or its URL is unsafe."""

    code = ErrorCode.INVALID_IMAGE


@dataclass(frozen=True, slots=True)
class ImageLimits:
    """The caps every input image is held to."""

    max_bytes: int = 10 * MB
    max_pixels: int = 40_000_000
    max_side: int = 16384

    def capped(self, max_bytes: int | None) -> ImageLimits:
        """These limits, the byte cap lowered to ``max_bytes`` (Discord's attachment limit)."""
        if max_bytes is None or max_bytes >= self.max_bytes:
            return self
        return ImageLimits(max(1, max_bytes), self.max_pixels, self.max_side)


@dataclass(frozen=True, slots=True)
class CheckedImage:
    """A decoded image, written again without metadata."""

    data: bytes
    format: str  # PNG, JPEG or WEBP (what ``data`` is)
    width: int
    height: int

    @property
    def content_type(self) -> str:
        """Its MIME type."""
        return _CONTENT_TYPES[self.format]

    @property
    def extension(self) -> str:
        """Its file extension."""
        return _EXTENSIONS[self.format]


def too_large(size: int, limits: ImageLimits, label: str = "The image") -> ImageRejected:
    """The refusal for a file over the byte cap."""
    return ImageRejected(
        f"{label} is too large ({size / MB:.1f} MB; at most {limits.max_bytes / MB:.1f} MB)."
    )


def check_image(data: bytes, limits: ImageLimits, label: str = "The image") -> CheckedImage:
    """Decode ``data`` under ``limits``; return it without metadata or raise `ImageRejected`."""
    if len(data) > limits.max_bytes:
        raise too_large(len(data), limits, label)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=FORMATS) as img:
                fmt = str(img.format)
                width, height = img.size
                _check_size(width, height, limits, label)
                img.seek(0)  # a GIF: its first frame
                img.load()
                return _rewrite(img, fmt)
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow's own check (at open) caught a header over its limit: a bomb.
        raise ImageRejected(
            f"{label} has too many pixels (at most {limits.max_pixels / 1e6:g} megapixels)."
        ) from None
    except UnidentifiedImageError:
        raise ImageRejected(f"{label} is not a PNG, JPEG, WebP or GIF image.") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageRejected(f"{label} is damaged and cannot be read.") from exc


def _check_size(width: int, height: int, limits: ImageLimits, label: str) -> None:
    if width < 1 or height < 1:
        raise ImageRejected(f"{label} has no pixels.")
    if width > limits.max_side or height > limits.max_side or width * height > limits.max_pixels:
        raise ImageRejected(
            f"{label} has too many pixels ({width}×{height}; at most "
            f"{limits.max_pixels / 1e6:g} megapixels and {limits.max_side} per side)."
        )


def _rewrite(img: Image.Image, fmt: str) -> CheckedImage:
    """The pixels only: orientation applied, every metadata block left behind."""
    out_format = _OUT[fmt]
    upright = ImageOps.exif_transpose(img) if fmt in ("JPEG", "WEBP") else img
    if out_format == "JPEG":
        clean = upright.convert("RGB")
    elif upright.mode in ("RGB", "RGBA", "L", "LA"):
        clean = upright.copy()
    else:
        clean = upright.convert("RGBA")
    clean.info.clear()
    buf = io.BytesIO()
    if out_format == "PNG":
        clean.save(buf, format="PNG", optimize=False)
    else:
        clean.save(buf, format=out_format, quality=95)
    data = buf.getvalue()
    return CheckedImage(data=data, format=out_format, width=clean.width, height=clean.height)
