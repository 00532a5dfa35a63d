"""check_image: real images only, within the caps, metadata stripped."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from gouache.images.check import ImageLimits, ImageRejected, check_image

from .pictures import NOT_AN_IMAGE, bomb, gif, jpeg_with_exif, mean_color, png


def test_png_passes_and_keeps_its_pixels() -> None:
    checked = check_image(png((200, 30, 40)), ImageLimits())
    assert (checked.format, checked.width, checked.height) == ("PNG", 64, 48)
    assert checked.content_type == "image/png" and checked.extension == "png"
    assert mean_color(checked.data) == (200, 30, 40)


def test_exif_is_stripped_from_a_jpeg() -> None:
    original = jpeg_with_exif()
    with Image.open(io.BytesIO(original)) as img:
        assert img.getexif().get(0x0110) == "SecretCam 3000"  # the camera model is there
    checked = check_image(original, ImageLimits())
    assert checked.format == "JPEG"
    assert b"SecretCam" not in checked.data and b"Exif" not in checked.data
    with Image.open(io.BytesIO(checked.data)) as img:
        assert len(img.getexif()) == 0


def test_png_text_chunks_are_dropped() -> None:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Author", "Jane Doe, 12 Secret Street")
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(buf, format="PNG", pnginfo=info)
    checked = check_image(buf.getvalue(), ImageLimits())
    assert b"Secret Street" not in checked.data


def test_gif_becomes_its_first_frame_as_png() -> None:
    checked = check_image(gif(((0, 0, 255), (255, 255, 0))), ImageLimits())
    assert checked.format == "PNG"
    r, g, b = mean_color(checked.data)
    assert b > 200 and r < 30 and g < 30


def test_not_an_image_is_refused() -> None:
    with pytest.raises(ImageRejected, match="not a PNG, JPEG, WebP or GIF"):
        check_image(NOT_AN_IMAGE, ImageLimits())


def test_a_truncated_image_is_refused() -> None:
    with pytest.raises(ImageRejected, match=r"damaged|not a PNG"):
        check_image(png()[:60], ImageLimits())


def test_bomb_is_refused_before_decoding() -> None:
    data = bomb(60000)
    assert len(data) < 100_000  # tiny on the wire
    with pytest.raises(ImageRejected, match="too many pixels"):
        check_image(data, ImageLimits())


def test_pixel_cap_is_configurable() -> None:
    with pytest.raises(ImageRejected, match="too many pixels"):
        check_image(png(size=(100, 100)), ImageLimits(max_pixels=5000))
    assert check_image(png(size=(50, 50)), ImageLimits(max_pixels=5000)).width == 50


def test_byte_cap_and_discords_lower_limit() -> None:
    data = png(size=(300, 300))
    with pytest.raises(ImageRejected, match="too large"):
        check_image(data, ImageLimits(max_bytes=len(data) - 1))
    limits = ImageLimits(max_bytes=10 * 2**20)
    assert limits.capped(1000).max_bytes == 1000  # Discord's attachment limit is lower
    assert limits.capped(50 * 2**20).max_bytes == 10 * 2**20  # never raised above ours
    assert limits.capped(None) is limits
