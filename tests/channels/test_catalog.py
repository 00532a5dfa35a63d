"""The model catalog: Midjourney models, workflows, and checkpoints/LoRAs read live from ComfyUI."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gouache.channels.catalog import ComfySource, ModelCatalog, parse_object_info
from gouache.channels.errors import UnknownModel
from gouache.channels.sources import comfy_sources, healthy_in_other_processes
from gouache.pool.base import WorkerState
from gouache.pool.comfyui import ComfyUIWorker
from gouache.pool.workflows import load_shipped
from gouache.storage.base import Store
from gouache_sandbox.comfyui import ComfyUISandbox

from ..conftest import ManualClock

LORAS = ("ink_wash.safetensors", "film_grain.safetensors")


@pytest.fixture
async def comfy() -> AsyncIterator[ComfyUISandbox]:
    async with ComfyUISandbox(
        checkpoints=("sd_xl_base_1.0.safetensors", "anime_xl.safetensors"), loras=LORAS
    ) as server:
        yield server


@pytest.fixture
async def worker(comfy: ComfyUISandbox) -> AsyncIterator[ComfyUIWorker]:
    w = ComfyUIWorker("gpu-1", comfy.url, workflow=load_shipped("default_sdxl"))
    await w.start()
    try:
        await w.wait_for_state(WorkerState.READY)
        yield w
    finally:
        await w.aclose()


def test_object_info_choices_in_both_combo_forms() -> None:
    old = {"LoraLoader": {"input": {"required": {"lora_name": [["a.safetensors", "b"]]}}}}
    new = {"LoraLoader": {"input": {"required": {"lora_name": ["COMBO", {"options": ["c"]}]}}}}
    assert parse_object_info(old, "LoraLoader", "lora_name") == ("a.safetensors", "b")
    assert parse_object_info(new, "LoraLoader", "lora_name") == ("c",)
    assert parse_object_info({}, "LoraLoader", "lora_name") == ()


async def test_checkpoints_and_loras_come_from_healthy_servers(
    comfy: ComfyUISandbox, worker: ComfyUIWorker, clock: ManualClock
) -> None:
    catalog = ModelCatalog(
        backends=lambda: {"comfyui", "midjourney"},
        comfy_sources=lambda: comfy_sources([worker]),
        refresh_s=60,
        monotonic=clock.monotonic,
    )
    await catalog.start()
    try:
        assert catalog.workflows() == ["default_sdxl"]
        assert catalog.checkpoints() == ["anime_xl.safetensors", "sd_xl_base_1.0.safetensors"]
        assert catalog.loras() == sorted(LORAS)
        values = [c.value for c in catalog.choices()]
        assert values[:3] == ["v7", "v6.1", "niji"]
        assert "checkpoint:anime_xl.safetensors" in values and "lora:ink_wash.safetensors" in values
        assert catalog.resolve("anime_xl.safetensors").kind == "checkpoint"  # bare names work
        assert [c.value for c in catalog.suggest("ink")] == ["lora:ink_wash.safetensors"]
        assert catalog.servers_with(checkpoint="anime_xl.safetensors", loras=LORAS) == {"gpu-1"}
        with pytest.raises(UnknownModel, match=r"Valid models: v7, v6\.1, niji"):
            catalog.resolve("sd15.ckpt")
        # A server that goes down takes its models off the list at once.
        await worker.aclose()
        assert catalog.checkpoints() == [] and catalog.workflows() == []
    finally:
        await catalog.aclose()


async def test_the_cache_is_refreshed_when_stale(
    comfy: ComfyUISandbox, worker: ComfyUIWorker, clock: ManualClock
) -> None:
    catalog = ModelCatalog(
        backends=lambda: {"comfyui"},
        comfy_sources=lambda: comfy_sources([worker]),
        refresh_s=60,
        monotonic=clock.monotonic,
    )
    await catalog.start()
    try:
        comfy.loras.append("new_style.safetensors")
        catalog.suggest("")  # fresh: no refresh
        assert "new_style.safetensors" not in catalog.loras()
        clock.advance(61)
        catalog.suggest("")  # stale: a refresh starts, the answer does not wait for it
        assert catalog._refreshing is not None
        await catalog._refreshing
        assert "new_style.safetensors" in catalog.loras()
    finally:
        await catalog.aclose()


async def test_a_failing_server_keeps_nothing_and_raises_nothing(clock: ManualClock) -> None:
    async def broken(path: str) -> object:
        from gouache.pool.comfyui_client import ComfyUIUnreachable

        raise ComfyUIUnreachable("down")

    catalog = ModelCatalog(
        backends=lambda: {"comfyui"},
        comfy_sources=lambda: [ComfySource("gpu-9", "default_sdxl", broken)],
        monotonic=clock.monotonic,
    )
    await catalog.start()
    try:
        assert catalog.checkpoints() == [] and catalog.workflows() == ["default_sdxl"]
    finally:
        await catalog.aclose()


async def test_servers_another_process_runs_count_when_it_reports_them_healthy(
    comfy: ComfyUISandbox, store: Store, clock: ManualClock
) -> None:
    """Many processes: this one does not run gpu-1, another does and says it is ready."""
    idle = ComfyUIWorker("gpu-1", comfy.url, workflow=load_shipped("default_sdxl"))
    await store.publish_workers("proc-b", [{"name": "gpu-1", "state": "ready"}], ttl_s=60)
    await store.publish_workers("proc-a", [{"name": "gpu-2", "state": "ready"}], ttl_s=60)
    catalog = ModelCatalog(
        backends=lambda: {"comfyui"},
        monotonic=clock.monotonic,
        elsewhere=lambda: healthy_in_other_processes(store.worker_rows, "proc-a"),
    )
    catalog.comfy_sources = lambda: comfy_sources(
        [idle], here=lambda name: False, healthy_elsewhere=catalog.healthy_elsewhere
    )
    await catalog.start()
    try:
        assert catalog.healthy_elsewhere == {"gpu-1"}  # its own row does not count
        assert catalog.workflows() == ["default_sdxl"]
        assert "anime_xl.safetensors" in catalog.checkpoints()
        await store.publish_workers("proc-b", [{"name": "gpu-1", "state": "offline"}], ttl_s=60)
        await catalog.refresh()
        assert catalog.workflows() == [] and catalog.checkpoints() == []
    finally:
        await catalog.aclose()
        await idle.aclose()
