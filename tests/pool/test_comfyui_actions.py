"""ComfyUI's result buttons: the parent's image uploaded once per server and bound to LoadImage,
the shipped action workflows run in the stand-in with a visible effect, a lost upload sent again."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import aiohttp
import pytest
from PIL import Image

from gouache.actions import ResultButton
from gouache.jobs import Action, ErrorCode, Job
from gouache.pool.base import Failed, Generated
from gouache.pool.comfyui_parents import ParentImages
from gouache.pool.comfyui_uploads import ImageUploads, upload_image, upload_name
from gouache.pool.workflows import SHIPPED_ACTIONS, load_shipped
from gouache.storage.images import ImageStore
from gouache_sandbox.comfyui import ComfyUISandbox

from .test_comfyui import Sink, running
from .test_comfyui import comfy as comfy


def png(width: int = 64, height: int = 48, color: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="PNG")
    return buf.getvalue()


def size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        return img.size


async def stored_parent(images: ImageStore, data: bytes, worker: str = "gpu1") -> Job:
    key = await images.put(data)
    return Job(
        user_id=1,
        prompt="a red square",
        meta={"parent": {"job_id": "p" * 32, "worker": worker, "results": [key]}},
    )


def click(parent: Job, action: str) -> Job:
    return Job(
        user_id=1,
        prompt=parent.prompt,
        action=Action.BUTTON,
        button=action,
        button_kind=action,
        parent_id=parent.meta["parent"]["job_id"],
        meta=parent.meta,
    )


async def test_upload_image_names_what_loadimage_takes(comfy: ComfyUISandbox) -> None:
    async with running(comfy) as worker:
        data = png()
        name = await upload_image(worker.client, data, upload_name(data))
        assert name == upload_name(data) and name.startswith("gouache-") and name.endswith(".png")
        assert (comfy.files.dirs["input"] / name).read_bytes() == data
        # overwrite=true: the same name with other bytes replaces the file, never renames it.
        again = await upload_image(worker.client, png(color=(0, 0, 0)), name)
        assert again == name


async def test_uploads_are_content_addressed_once_per_server(comfy: ComfyUISandbox) -> None:
    async with running(comfy) as worker:
        uploads = ImageUploads(worker.client)
        a, b = png(), png(color=(1, 2, 3))
        first = await uploads.ensure(a)
        assert await uploads.ensure(a) == first and uploads.uploads == 1
        assert await uploads.ensure(b) != first and uploads.uploads == 2
        uploads.forget()
        assert await uploads.ensure(a) == first and uploads.uploads == 3


@pytest.mark.parametrize(
    ("name", "expect"),
    [
        ("builtin_demo_upscale", lambda w, h: (2 * w, 2 * h)),
        ("builtin_demo_zoom_out", lambda w, h: (w + 512, h + 512)),
        ("builtin_demo_pan", lambda w, h: (w + 256, h)),
        ("builtin_demo_vary_subtle", lambda w, h: (w, h)),
        ("builtin_demo_vary_strong", lambda w, h: (w, h)),
    ],
)
async def test_each_demo_action_changes_the_parents_image_visibly(
    comfy: ComfyUISandbox, tmp_path: Path, name: str, expect: object
) -> None:
    images = ImageStore(tmp_path / "images")
    data = png()
    action = name.removeprefix("builtin_demo_")
    sink = Sink()
    async with running(
        comfy, actions={action: load_shipped(name)}, parents=ParentImages(images)
    ) as worker:
        job = click(await stored_parent(images, data), action)
        assert worker.can_serve(job)
        await worker.submit(job, sink)
        done = await sink.final(job)
    assert isinstance(done, Generated), done
    assert callable(expect)
    assert size(done.images[0]) == expect(64, 48)
    assert done.images[0] != data
    assert done.meta["workflow"] == name
    graph = comfy.engine.history[done.external_id]["prompt"][2]
    assert graph["1"]["inputs"]["image"] == upload_name(data)  # bound structurally
    if action == "zoom_out":  # the old image sits unchanged in the middle of the grey frame
        with Image.open(io.BytesIO(done.images[0])) as img:
            assert img.convert("RGB").getpixel((256 + 10, 256 + 10)) == (200, 40, 40)
            assert img.convert("RGB").getpixel((5, 5)) == (128, 128, 128)
    buttons = [ResultButton.from_dict(b) for b in done.meta["buttons"]]
    assert [b.custom_id for b in buttons] == [action, "reroll"]


@pytest.mark.parametrize("name", [n for n in SHIPPED_ACTIONS if n.startswith("default_sdxl")])
async def test_the_sdxl_actions_run_on_the_stand_in(
    comfy: ComfyUISandbox, tmp_path: Path, name: str
) -> None:
    workflow = load_shipped(name)
    graph = workflow.graph
    graph["3"]["inputs"]["steps"] = 2
    images = ImageStore(tmp_path / "images")
    small = type(workflow)(
        name,
        graph,
        {k: [{"node": b.node, "input": b.input} for b in v] for k, v in workflow.bindings.items()},
    )
    sink = Sink()
    async with running(comfy, actions={"act": small}, parents=ParentImages(images)) as worker:
        job = click(await stored_parent(images, png()), "act")
        await worker.submit(job, sink)
        done = await sink.final(job)
    assert isinstance(done, Generated), done
    sent = comfy.engine.history[done.external_id]["prompt"][2]
    assert sent["3"]["inputs"]["denoise"] == workflow.graph["3"]["inputs"]["denoise"]
    assert sent["10"]["inputs"]["image"].startswith("gouache-")


async def test_a_server_without_the_action_does_not_take_the_click(comfy: ComfyUISandbox) -> None:
    async with running(comfy, actions={}) as worker:
        job = click(Job(user_id=1, prompt="x", meta={"parent": {"job_id": "p"}}), "upscale")
        assert not worker.can_serve(job)
    async with running(comfy, actions={"upscale": load_shipped("builtin_demo_upscale")}) as worker:
        assert not worker.can_serve(job)  # configured, but it has no way to read the image


async def test_a_lost_upload_fails_retryably_and_is_uploaded_again(
    comfy: ComfyUISandbox, tmp_path: Path
) -> None:
    images = ImageStore(tmp_path / "images")
    data = png()
    sink = Sink()
    async with running(
        comfy,
        actions={"upscale": load_shipped("builtin_demo_upscale")},
        parents=ParentImages(images),
    ) as worker:
        parent = await stored_parent(images, data)
        first = click(parent, "upscale")
        await worker.submit(first, sink)
        assert isinstance(await sink.final(first), Generated)
        assert worker.uploads.uploads == 1
        # The server restarted and lost its input folder.
        shutil.rmtree(comfy.files.dirs["input"])
        comfy.files.dirs["input"].mkdir()
        second = click(parent, "upscale")
        await worker.submit(second, sink)
        failed = await sink.final(second)
        assert isinstance(failed, Failed) and failed.retryable, failed
        third = click(parent, "upscale")
        await worker.submit(third, sink)
        assert isinstance(await sink.final(third), Generated)
        assert worker.uploads.uploads == 2


async def test_a_parent_image_gone_everywhere_fails_the_click(
    comfy: ComfyUISandbox, tmp_path: Path
) -> None:
    images = ImageStore(tmp_path / "images")
    sink = Sink()
    async with running(
        comfy,
        actions={"upscale": load_shipped("builtin_demo_upscale")},
        parents=ParentImages(images),
    ) as worker:
        job = click(
            Job(
                user_id=1,
                prompt="x",
                meta={"parent": {"job_id": "p" * 32, "results": ["0" * 64 + ".png"]}},
            ),
            "upscale",
        )
        await worker.submit(job, sink)
        failed = await sink.final(job)
    assert isinstance(failed, Failed) and failed.code == ErrorCode.PARENT_UNAVAILABLE


async def test_the_parent_image_is_read_from_the_posted_message_when_not_stored_here(
    tmp_path: Path,
) -> None:
    """Another process made it: the bot's message is read (fresh URL), then the attachment."""
    from aiohttp import web

    data = png(30, 20)
    seen: list[str] = []

    async def message(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        url = str(request.url.with_path("/attachments/result.png"))
        return web.json_response(
            {"id": "5", "attachments": [{"url": url, "content_type": "image/png"}]}
        )

    async def attachment(_: web.Request) -> web.Response:
        return web.Response(body=data, content_type="image/png")

    app = web.Application()
    app.router.add_get("/api/v10/channels/{c}/messages/{m}", message)
    app.router.add_get("/attachments/result.png", attachment)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        from pydantic import SecretStr

        images = ImageStore(tmp_path / "images")
        inputs = ParentImages(
            images, bot_token=SecretStr("bot-token"), api_base=f"http://127.0.0.1:{port}/api/v10"
        )
        job = Job(
            user_id=1,
            prompt="x",
            meta={
                "parent": {
                    "results": ["1" * 64 + ".png"],
                    "posted_channel_id": 7,
                    "posted_message_id": 5,
                }
            },
        )
        async with aiohttp.ClientSession() as http:
            assert await inputs.parent_image(job, http) == data
        assert seen == ["Bot bot-token"] and inputs.downloads == 1
    finally:
        await runner.cleanup()
