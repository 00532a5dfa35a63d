"""InputImages: fetch, check and store; load again, from another machine's URL too; retention."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gouache.images.check import ImageLimits, ImageRejected
from gouache.images.inputs import InputImages, Source
from gouache.jobs import InputRole
from gouache.storage.images import ImageStore

from .pictures import jpeg_with_exif, png


@pytest.fixture
async def cdn() -> AsyncIterator[TestServer]:
    files = {"/a.jpg": jpeg_with_exif(), "/b.png": png((1, 2, 3))}

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=files[request.path])

    app = web.Application()
    for path in files:
        app.router.add_get(path, serve)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


def _stored(root: Path) -> list[Path]:
    return list(root.glob("*/*"))


def _intake(root: Path, cdn: TestServer, limits: ImageLimits | None = None) -> InputImages:
    return InputImages.build(
        ImageStore(root), api_base=f"http://127.0.0.1:{cdn.port}/api/v10", limits=limits
    )


async def test_taken_images_are_clean_stored_and_loaded(cdn: TestServer, tmp_path: Path) -> None:
    intake = _intake(tmp_path / "a", cdn)
    base = f"http://127.0.0.1:{cdn.port}"
    try:
        taken = await intake.take(
            [
                Source(InputRole.PROMPT, f"{base}/a.jpg"),
                Source(InputRole.STYLE, f"{base}/b.png"),
            ]
        )
        assert [t.role for t in taken] == [InputRole.PROMPT, InputRole.STYLE]
        assert taken[0].key.endswith(".jpg") and taken[1].key.endswith(".png")
        assert (taken[0].width, taken[0].height) == (80, 60)
        data = await intake.load(taken[0])
        assert b"SecretCam" not in data  # what is stored is the clean image
        # Another machine's store lacks it: fetched again from its URL, and kept there.
        elsewhere = _intake(tmp_path / "b", cdn)
        try:
            assert await elsewhere.load(taken[0]) == data
            assert elsewhere.store.exists(taken[0].key)
        finally:
            await elsewhere.aclose()
    finally:
        await intake.aclose()


async def test_one_bad_image_refuses_the_request_and_names_it(
    cdn: TestServer, tmp_path: Path
) -> None:
    intake = _intake(tmp_path, cdn)
    base = f"http://127.0.0.1:{cdn.port}"
    try:
        with pytest.raises(ImageRejected, match="Image 2 is too large"):
            await intake.take(
                [
                    Source(InputRole.BLEND, f"{base}/b.png", "Image 1", size=100),
                    Source(InputRole.BLEND, f"{base}/a.jpg", "Image 2", size=50 * 2**20),
                ]
            )
        with pytest.raises(ImageRejected, match="too large"):  # Discord's lower limit
            await intake.take([Source(InputRole.PROMPT, f"{base}/a.jpg")], max_bytes=100)
    finally:
        await intake.aclose()
    assert _stored(tmp_path) == []  # nothing stored


async def test_stored_inputs_age_out_with_the_results(cdn: TestServer, tmp_path: Path) -> None:
    intake = _intake(tmp_path, cdn)
    try:
        (taken,) = await intake.take(
            [Source(InputRole.PROMPT, f"http://127.0.0.1:{cdn.port}/b.png")]
        )
    finally:
        await intake.aclose()
    assert await intake.store.sweep(older_than=datetime.now(UTC) - timedelta(days=1)) == 0
    assert await intake.store.sweep(older_than=datetime.now(UTC) + timedelta(seconds=5)) == 1
    assert not intake.store.exists(taken.key)
