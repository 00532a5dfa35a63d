"""A chosen checkpoint and LoRAs are bound into the workflow's graph, and ComfyUI runs it."""

from __future__ import annotations

import pytest

from gouache.channels.graph import bind_models, comfy_fits, loader_of
from gouache.errors import InvalidParameter
from gouache.jobs import Job
from gouache.pool.base import Generated, WorkerState
from gouache.pool.comfyui import ComfyUIWorker
from gouache.pool.workflows import load_shipped
from gouache_sandbox.comfyui import ComfyUISandbox

from ..pool.test_comfyui import FAST, Sink, fast_sdxl, history_graph


def test_loras_are_chained_after_the_loader_and_take_its_consumers() -> None:
    graph = load_shipped("default_sdxl").graph
    loader = loader_of(graph)
    assert loader is not None
    out = bind_models(graph, checkpoint="anime.safetensors", loras=["a", 'b"},{"x'])
    assert out[loader]["inputs"]["ckpt_name"] == "anime.safetensors"
    loras = [k for k, v in out.items() if v["class_type"] == "LoraLoader"]
    first, second = sorted(loras, key=int)
    assert out[first]["inputs"]["model"] == [loader, 0]
    assert out[second]["inputs"]["model"] == [first, 0]
    assert out[second]["inputs"]["lora_name"] == 'b"},{"x'  # a value, never JSON text
    consumers = [
        v for k, v in out.items() if k not in loras and [loader, 0] in v["inputs"].values()
    ]
    assert consumers == []  # every MODEL user now reads the last LoRA
    assert graph == load_shipped("default_sdxl").graph  # the template is untouched
    assert bind_models(graph, checkpoint=None) == graph


def test_a_workflow_without_a_loader_cannot_take_a_model() -> None:
    graph = load_shipped("builtin_demo").graph
    with pytest.raises(InvalidParameter, match="no checkpoint loader"):
        bind_models(graph, checkpoint="x")
    meta = {"checkpoint": "x"}
    assert not comfy_fits(meta, server="a", workflow="builtin_demo", has_loader=False)
    assert comfy_fits(meta, server="a", workflow="w", has_loader=True)
    assert not comfy_fits({"workflow": "other"}, server="a", workflow="w", has_loader=True)
    assert not comfy_fits({"comfy_servers": ["b"]}, server="a", workflow="w", has_loader=True)


async def test_comfyui_runs_the_chosen_checkpoint_and_lora() -> None:
    async with ComfyUISandbox(
        checkpoints=("sd_xl_base_1.0.safetensors", "anime_xl.safetensors"),
        loras=("ink.safetensors",),
    ) as comfy:
        worker = ComfyUIWorker("gpu-1", comfy.url, workflow=fast_sdxl(), timings=FAST)
        await worker.start()
        try:
            await worker.wait_for_state(WorkerState.READY)
            job = Job(
                user_id=1,
                prompt="a heron",
                meta={"checkpoint": "anime_xl.safetensors", "loras": ["ink.safetensors"]},
            )
            assert worker.can_serve(job)
            sink = Sink()
            await worker.submit(job, sink)
            done = await sink.final(job)
            assert isinstance(done, Generated)
            graph = history_graph(comfy, done.meta["prompt_id"])
            kinds = {v["class_type"]: v["inputs"] for v in graph.values()}
            assert kinds["CheckpointLoaderSimple"]["ckpt_name"] == "anime_xl.safetensors"
            assert kinds["LoraLoader"]["lora_name"] == "ink.safetensors"
            assert not worker.can_serve(Job(user_id=1, prompt="x", meta={"workflow": "other"}))
        finally:
            await worker.aclose()
