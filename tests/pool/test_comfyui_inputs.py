"""ComfyUI with input images: uploads once per server, the img2img/blend workflows, a lost file."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gouache.images.check import ImageLimits
from gouache.images.inputs import InputImages
from gouache.jobs import Action, ErrorCode, InputImage, InputRole, Job
from gouache.params import Params
from gouache.pool.base import Failed, Generated
from gouache.pool.comfyui import ComfyUIWorker
from gouache.pool.comfyui_inputs import denoise_for, lost_input, workflow_for
from gouache.pool.comfyui_uploads import ImageUploads, upload_name
from gouache.pool.workflows import load_shipped
from gouache.storage.images import ImageStore
from gouache_sandbox.comfyui import ComfyUISandbox

from ..images.pictures import mean_color, png
from .test_comfyui import FAST, Sink

DEMO = load_shipped("builtin_demo")
ACTIONS = {"img2img": load_shipped("builtin_img2img"), "blend": load_shipped("builtin_blend")}


@pytest.fixture
async def comfy() -> AsyncIterator[ComfyUISandbox]:
    async with ComfyUISandbox() as sandbox:
        yield sandbox


def _job(action: Action = Action.IMAGINE, *roles: InputRole, **kw: object) -> Job:
    images = [InputImage(role=r, key=f"{i:064x}.png") for i, r in enumerate(roles)]
    return Job(user_id=1, prompt="x", action=action, input_images=images, **kw)  # type: ignore[arg-type]


def test_which_workflow_a_job_runs() -> None:
    assert workflow_for(_job(), DEMO, ACTIONS, True) is DEMO
    assert (
        workflow_for(_job(Action.IMAGINE, InputRole.PROMPT), DEMO, ACTIONS, True)
        is ACTIONS["img2img"]
    )
    blend = _job(Action.BLEND, InputRole.BLEND, InputRole.BLEND)
    assert workflow_for(blend, DEMO, ACTIONS, True) is ACTIONS["blend"]
    # Not configured, no image loader, or a reference only Midjourney understands: not here.
    assert workflow_for(_job(Action.IMAGINE, InputRole.PROMPT), DEMO, {}, True) is None
    assert workflow_for(_job(Action.IMAGINE, InputRole.PROMPT), DEMO, ACTIONS, False) is None
    assert workflow_for(_job(Action.IMAGINE, InputRole.STYLE), DEMO, ACTIONS, True) is None
    assert workflow_for(_job(Action.DESCRIBE, InputRole.DESCRIBE), DEMO, ACTIONS, True) is None


def test_image_weight_becomes_denoise() -> None:
    assert denoise_for(None) is None
    assert denoise_for(0) == 0.95 and denoise_for(3) == 0.15
    assert denoise_for(1) > denoise_for(2)
    assert denoise_for(9) == 0.15  # clamped


def test_a_lost_input_file_is_retried_with_a_fresh_upload() -> None:
    uploads = ImageUploads.__new__(ImageUploads)
    uploads._names = {"abc": "gouache-x.png"}
    job = _job(Action.IMAGINE, InputRole.PROMPT)
    failed = lost_input(job, "LoadImage: image - Invalid image file: gouache-x.png", uploads)
    assert failed.retryable and failed.code is ErrorCode.WORKER_ERROR and uploads._names == {}
    other = lost_input(job, "CLIPTextEncode: text - required input missing", uploads)
    assert not other.retryable and other.code is ErrorCode.INVALID_PROMPT


async def test_uploads_go_once_per_server_by_content(comfy: ComfyUISandbox) -> None:
    worker = ComfyUIWorker("gpu", comfy.url, workflow=DEMO, timings=FAST)
    worker.client.open()
    try:
        uploads = worker.uploads
        data = png((1, 2, 3))
        first = await uploads.ensure(data)
        assert first == upload_name(data) and first.startswith("gouache-") and len(first) == 44
        assert await uploads.ensure(data) == first and uploads.uploads == 1
        other = await uploads.ensure(png((4, 5, 6)))
        assert other != first and uploads.uploads == 2
        assert (comfy.files.dirs["input"] / first).read_bytes() == data
        uploads.forget()
        assert await uploads.ensure(data) == first and uploads.uploads == 3
    finally:
        await worker.client.aclose()


async def test_img2img_after_the_server_lost_its_input_uploads_again(
    comfy: ComfyUISandbox, tmp_path: object
) -> None:
    store = ImageStore(f"{tmp_path}/images")
    inputs = InputImages.build(store, limits=ImageLimits())
    key = await store.put(png((230, 10, 10)))
    worker = ComfyUIWorker(
        "gpu", comfy.url, workflow=DEMO, actions=ACTIONS, inputs=inputs.load, timings=FAST
    )
    await worker.start()
    try:
        job = Job(
            user_id=1,
            prompt="redder",
            params=Params(image_weight=2.0),
            input_images=[InputImage(role=InputRole.PROMPT, key=key)],
        )
        assert worker.can_serve(job)
        sink = Sink()
        await worker.submit(job, sink)
        done = await sink.final(job)
        assert isinstance(done, Generated)
        r, g, _ = mean_color(done.images[0])
        assert r > 120 and r > 2 * g
        # The server lost its input folder (a new machine): the name is unknown there now.
        for path in comfy.files.dirs["input"].glob("gouache-*"):
            path.unlink()
        again = job.model_copy(update={"id": "f" * 32})
        await worker.submit(again, sink)
        lost = await sink.final(again)
        assert isinstance(lost, Failed) and lost.retryable
        retry = job.model_copy(update={"id": "e" * 32})
        await worker.submit(retry, sink)
        assert isinstance(await sink.final(retry), Generated)
        assert worker.uploads.uploads == 2
    finally:
        await worker.aclose()
        await inputs.aclose()
