"""Images in, end to end: members attach images in the sandbox, the real bot takes them,
a backend uses them, and every bad image is refused with nothing charged.

Each scenario runs on both store backends (SQLite and Redis).
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from PIL import Image

from gouache.images.check import ImageLimits
from gouache.images.fetch import ImageFetcher
from gouache.images.inputs import InputImages
from gouache.jobs import Action, InputRole, JobState
from gouache.pool.comfyui import ComfyUITimings, ComfyUIWorker
from gouache.pool.workflows import load_shipped
from gouache.storage.base import Store
from gouache.storage.images import ImageStore
from gouache_sandbox.comfyui import ComfyUISandbox
from gouache_sandbox.discord import DiscordSandbox

from ..images.pictures import NOT_AN_IMAGE, bomb, jpeg_with_exif, mean_color, noisy_png, png
from .conftest import World, custom_ids, embed_title

RED, BLUE = (220, 20, 20), (20, 20, 220)
FAST = ComfyUITimings(health_interval_s=0.5, progress_interval_s=0.05)


@pytest.fixture
async def comfy() -> AsyncIterator[ComfyUISandbox]:
    async with ComfyUISandbox() as sandbox:
        yield sandbox


@pytest.fixture
def images_world(
    make_world: Callable[..., Any],
    sandbox: DiscordSandbox,
    comfy: ComfyUISandbox,
    backend_store: Store | None,
    tmp_path: Path,
) -> Callable[..., Any]:
    async def build(
        limits: ImageLimits | None = None, also_trusted: str | None = None
    ) -> tuple[World, ComfyUIWorker]:
        inputs = InputImages.build(
            ImageStore(tmp_path / "images"), api_base=sandbox.api_base, limits=limits
        )
        if also_trusted is not None:  # a second "Discord CDN" host (one that redirects)
            policy = inputs.fetcher.policy
            hosts = policy.trusted_hosts | {also_trusted}
            inputs.fetcher = ImageFetcher(replace(policy, trusted_hosts=hosts))
        worker = ComfyUIWorker(
            "gpu-1",
            comfy.url,
            workflow=load_shipped("builtin_demo"),
            actions={
                "img2img": load_shipped("builtin_img2img"),
                "blend": load_shipped("builtin_blend"),
            },
            inputs=inputs.load,
            timings=FAST,
        )
        world = await make_world([worker], store=backend_store, inputs=inputs)
        return world, worker

    return build


def _input_files(comfy: ComfyUISandbox) -> list[Path]:
    return sorted(comfy.files.dirs["input"].glob("gouache-*.png"))


async def _result(world: World, job_id: str) -> bytes:
    job = await world.app.store.get(job_id)
    assert job is not None and job.state is JobState.SUCCEEDED, job
    return await world.app.images.get(job.results[0])


async def test_comfyui_img2img_uses_the_attached_image(
    images_world: Callable[..., Any], comfy: ComfyUISandbox
) -> None:
    world, worker = await images_world()
    alice = world.member("alice")
    inter = alice.invoke(
        world.channel.id,
        "imagine",
        {"prompt": "the same, but redder --iw 2", "image": ("me.jpg", jpeg_with_exif(RED))},
    )
    done = await world.wait(
        lambda m: m.id == inter.original_message_id and embed_title(m) == "Done"
    )
    (job,) = await world.app.store.list_jobs(user_id=alice.id)
    assert [i.role for i in job.inputs()] == [InputRole.PROMPT]
    assert job.inputs()[0].url and job.inputs()[0].width == 80
    # The server got the image once, without its EXIF, and ran the img2img workflow on it.
    (uploaded,) = _input_files(comfy)
    assert b"SecretCam" not in uploaded.read_bytes()
    assert worker.uploads.uploads == 1
    graph = next(iter(comfy.engine.history.values()))["prompt"][2]
    assert (
        graph["1"]["class_type"] == "LoadImage" and graph["1"]["inputs"]["image"] == uploaded.name
    )
    assert graph["2"]["inputs"]["strength"] == pytest.approx(0.417, abs=0.01)  # --iw 2 → denoise
    r, g, _ = mean_color(await _result(world, job.id))
    assert r > 120 and r > 2 * g  # the result is the red input with noise
    assert done.attachments
    assert (await world.app.store.quota(alice.id, daily_limit=100)).used == 1
    # 🔄 draws from the same image again (already on the server: not uploaded twice).
    reroll = next(i for i in custom_ids(done) if i.startswith("gouache:r:"))
    click = alice.click(done, reroll)
    await world.wait(lambda m: m.id == click.original_message_id and embed_title(m) == "Done")
    again = next(j for j in await world.app.store.list_jobs(user_id=alice.id) if j.id != job.id)
    assert again.action is Action.REROLL and again.inputs() == job.inputs()
    r, g, _ = mean_color(await _result(world, again.id))
    assert r > 120 and r > 2 * g
    assert worker.uploads.uploads == 1


async def test_comfyui_blend_loads_every_image(
    images_world: Callable[..., Any], comfy: ComfyUISandbox
) -> None:
    world, worker = await images_world()
    bob = world.member("bob")
    inter = bob.invoke(
        world.channel.id,
        "blend",
        {"image1": ("a.png", png(RED)), "image2": ("b.png", png(BLUE)), "dimensions": "landscape"},
    )
    await world.wait(lambda m: m.id == inter.original_message_id and embed_title(m) == "Done")
    (job,) = await world.app.store.list_jobs(user_id=bob.id)
    assert job.action is Action.BLEND and len(job.inputs(InputRole.BLEND)) == 2
    assert worker.uploads.uploads == 2 and len(_input_files(comfy)) == 2
    data = await _result(world, job.id)
    with Image.open(io.BytesIO(data)) as img:
        assert img.width > img.height  # landscape (3:2)
    r, _, b = mean_color(data)
    assert r > 50 and b > 50  # both colours are in it


async def test_an_image_link_in_the_prompt_is_taken_like_an_attachment(
    images_world: Callable[..., Any], sandbox: DiscordSandbox, comfy: ComfyUISandbox
) -> None:
    world, _ = await images_world()
    carol = world.member("carol")
    # An image already on Discord's CDN (the sandbox's): its link is an image prompt.
    att = sandbox.state.add_attachment(world.channel.id, "blue.png", png(BLUE), "image/png")
    url = f"{sandbox.base_url}/attachments/{world.channel.id}/{att.id}/blue.png"
    inter = carol.invoke(world.channel.id, "imagine", {"prompt": f"{url} in the evening"})
    await world.wait(lambda m: m.id == inter.original_message_id and embed_title(m) == "Done")
    (job,) = await world.app.store.list_jobs(user_id=carol.id)
    assert job.prompt == "in the evening" and job.inputs()[0].url == url
    _, _, b = mean_color(await _result(world, job.id))
    assert b > 120


BAD_IMAGES = {
    "oversized": (("big.png", noisy_png()), "too large"),
    "not an image": (("doc.png", NOT_AN_IMAGE), "not a PNG, JPEG, WebP or GIF"),
    "decompression bomb": (("bomb.png", bomb()), "too many pixels"),
}


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
async def test_a_bad_attachment_is_refused_and_nothing_is_charged(
    images_world: Callable[..., Any], comfy: ComfyUISandbox, case: str
) -> None:
    world, worker = await images_world(ImageLimits(max_bytes=200_000))
    dana = world.member("dana")
    attachment, why = BAD_IMAGES[case]
    reply = await world.reply(
        dana.invoke(world.channel.id, "imagine", {"prompt": "a cat", "image": attachment})
    )
    assert reply.flags & 64 and why in reply.content
    assert await world.app.store.list_jobs(user_id=dana.id) == []
    assert (await world.app.store.quota(dana.id, daily_limit=100)).used == 0
    assert worker.uploads.uploads == 0 and _input_files(comfy) == []


@pytest.mark.parametrize(
    "link",
    [
        "https://127.0.0.1/cat.png",
        "https://169.254.169.254/latest/meta-data/iam.png",
        "https://localhost/cat.png",
        "http://example.com/cat.png",
    ],
)
async def test_a_link_to_a_private_address_is_refused_and_nothing_is_charged(
    images_world: Callable[..., Any], link: str
) -> None:
    world, _ = await images_world()
    erin = world.member("erin")
    reply = await world.reply(
        erin.invoke(world.channel.id, "imagine", {"prompt": f"{link} a cat --iw 1"})
    )
    assert reply.flags & 64
    assert "does not fetch" in reply.content or "https://" in reply.content
    assert await world.app.store.list_jobs(user_id=erin.id) == []
    assert (await world.app.store.quota(erin.id, daily_limit=100)).used == 0


async def test_weights_without_their_image_and_too_few_blend_images_are_refused(
    images_world: Callable[..., Any],
) -> None:
    world, _ = await images_world()
    finn = world.member("finn")
    reply = await world.reply(
        finn.invoke(world.channel.id, "imagine", {"prompt": "a cat --sw 100"})
    )
    assert reply.flags & 64 and "--sw needs a style reference" in reply.content
    assert await world.app.store.list_jobs(user_id=finn.id) == []


async def test_a_redirect_to_a_private_address_is_refused_and_nothing_is_charged(
    images_world: Callable[..., Any], comfy: ComfyUISandbox
) -> None:
    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("https://169.254.169.254/latest/meta-data/cat.png")

    app = web.Application()
    app.router.add_get("/cat.png", redirect)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        world, worker = await images_world(also_trusted=f"127.0.0.1:{server.port}")
        gus = world.member("gus")
        link = f"http://127.0.0.1:{server.port}/cat.png"
        reply = await world.reply(
            gus.invoke(world.channel.id, "imagine", {"prompt": f"{link} a cat"})
        )
    finally:
        await server.close()
    assert reply.flags & 64 and "does not fetch" in reply.content
    assert await world.app.store.list_jobs(user_id=gus.id) == []
    assert (await world.app.store.quota(gus.id, daily_limit=100)).used == 0
    assert worker.uploads.uploads == 0
