"""The Ollama describer: four numbered prompts, or a clear failure (refunded)."""

from __future__ import annotations

from pathlib import Path

from gouache.images.inputs import InputImages
from gouache.jobs import Action, InputImage, InputRole, Job
from gouache.pool.base import Failed, Generated
from gouache.pool.describer import OllamaDescriber, numbered_prompts
from gouache.storage.images import ImageStore
from gouache_sandbox.ollama import OllamaSandbox

from ..images.pictures import png
from .test_comfyui import Sink


def test_numbered_lines_are_the_prompts() -> None:
    answer = "Sure!\n1. a red fox\n2) a fox in snow\n**3.** fox, watercolor\n4: a den at dusk\n"
    assert numbered_prompts(answer) == [
        "a red fox",
        "a fox in snow",
        "fox, watercolor",
        "a den at dusk",
    ]
    assert numbered_prompts("1. only one\n2. and two") == []


async def _describe(tmp_path: Path, ollama: OllamaSandbox, model: str) -> Generated | Failed:
    store = ImageStore(tmp_path / "images")
    key = await store.put(png((10, 200, 10), (60, 30)))
    inputs = InputImages.build(store)
    worker = OllamaDescriber("describe", ollama.url, model=model, inputs=inputs.load, timeout_s=2)
    await worker.start()
    try:
        job = Job(
            user_id=1,
            prompt="describe",
            action=Action.DESCRIBE,
            input_images=[InputImage(role=InputRole.DESCRIBE, key=key)],
        )
        assert worker.can_serve(job) and not worker.can_serve(Job(user_id=1, prompt="x"))
        sink = Sink()
        await worker.submit(job, sink)
        return await sink.final(job)
    finally:
        await worker.aclose()
        await inputs.aclose()


async def test_a_vision_model_describes(tmp_path: Path) -> None:
    async with OllamaSandbox() as ollama:
        result = await _describe(tmp_path, ollama, "demo-vision")
    assert isinstance(result, Generated)
    prompts = result.meta["prompts"]
    assert len(prompts) == 4 and all("green" in p and "landscape" in p for p in prompts)


async def test_a_model_without_vision_or_a_bad_answer_fails(tmp_path: Path) -> None:
    async with OllamaSandbox() as ollama:
        blind = await _describe(tmp_path, ollama, "qwen2.5:7b")
        assert isinstance(blind, Failed) and "could not be described" in blind.message
        ollama.settings.hang_next = 1
        slow = await _describe(tmp_path, ollama, "demo-vision")
        assert isinstance(slow, Failed)
