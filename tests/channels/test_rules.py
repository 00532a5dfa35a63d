"""One request under its channel's settings: precedence, tiers, content, cap (over a real store)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gouache.channels.catalog import ComfySource, ModelCatalog
from gouache.channels.errors import ChannelClosed, ContentRefused, NotAllowed, UnknownModel
from gouache.channels.rules import ChannelRules
from gouache.channels.settings import ChannelSettings, MemberPreferences
from gouache.errors import InvalidParameter
from gouache.params import parse_prompt
from gouache.storage.sqlite import SQLiteStore

CH = 10


@dataclass(frozen=True)
class T:
    name: str = "t"
    backends: frozenset[str] | None = None
    models: frozenset[str] | None = None
    midjourney_mode: str | None = None


async def object_info(path: str) -> Any:
    node = path.rsplit("/", 1)[-1]
    name = "ckpt_name" if node == "CheckpointLoaderSimple" else "lora_name"
    files = ["anime.safetensors"] if name == "ckpt_name" else ["ink.safetensors"]
    return {node: {"input": {"required": {name: [files]}}}}


@pytest.fixture
async def rules(tmp_path: Path) -> AsyncIterator[ChannelRules]:
    store = SQLiteStore(tmp_path / "g.db")
    await store.start()
    catalog = ModelCatalog(
        backends=lambda: {"midjourney", "comfyui"},
        comfy_sources=lambda: [ComfySource("gpu-1", "default_sdxl", object_info)],
    )
    await catalog.start()
    try:
        yield ChannelRules(store, catalog)
    finally:
        await catalog.aclose()
        await store.aclose()


async def place(rules: ChannelRules, prompt: str = "a fox", **kw: Any) -> Any:
    settings = await rules.admit(CH)
    kw.setdefault("model", None)
    kw.setdefault("backend", None)
    kw.setdefault("tier", None)
    return await rules.place(settings, parse_prompt(prompt), user_id=1, **kw)


async def test_prompt_over_preferences_over_channel(rules: ChannelRules) -> None:
    await rules.store.put_channel_settings(
        CH, ChannelSettings(model="niji", params="--ar 2:3 --stylize 300")
    )
    placed = await place(rules)
    assert placed.backend == "midjourney" and placed.params.niji == "6"
    assert placed.params.aspect == (2, 3) and placed.params.stylize == 300
    await rules.store.put_preferences(1, MemberPreferences(model="v7", params="--ar 1:1"))
    placed = await place(rules, "a fox --s 50")
    assert placed.params.version == "7" and placed.params.niji is None
    assert placed.params.aspect == (1, 1) and placed.params.stylize == 50
    placed = await place(rules, model="checkpoint:anime.safetensors")
    assert placed.backend == "comfyui" and placed.meta["checkpoint"] == "anime.safetensors"
    assert placed.meta["comfy_servers"] == ["gpu-1"]


async def test_what_the_channel_or_tier_forbids_is_refused(rules: ChannelRules) -> None:
    await rules.store.put_channel_settings(CH, ChannelSettings(backend="comfyui"))
    with pytest.raises(NotAllowed, match="comfyui only"):
        await place(rules, model="v7")
    with pytest.raises(InvalidParameter, match="comfyui only"):
        await place(rules, backend="midjourney")
    with pytest.raises(UnknownModel, match="Valid models"):
        await place(rules, model="sd15")
    await rules.store.put_channel_settings(CH, ChannelSettings())
    relaxed = T(
        backends=frozenset({"midjourney"}), models=frozenset({"v7"}), midjourney_mode="relax"
    )
    with pytest.raises(NotAllowed, match="tier may not use niji"):
        await place(rules, model="niji", tier=relaxed)
    placed = await place(rules, tier=relaxed)
    assert placed.backend == "midjourney" and placed.meta["mj_mode"] == "relax"
    # A preference the tier may not use is passed over, not an error.
    await rules.store.put_preferences(1, MemberPreferences(model="niji"))
    assert (await place(rules, tier=relaxed)).params.niji is None


async def test_closed_channels_adult_prompts_and_the_cap(rules: ChannelRules) -> None:
    await rules.store.put_channel_settings(CH, ChannelSettings(enabled=False))
    with pytest.raises(ChannelClosed):
        await rules.admit(CH)
    settings = ChannelSettings(daily_cap=5)
    with pytest.raises(ContentRefused, match="NSFW"):
        rules.check_content(settings, ["a nude study"], nsfw=False)
    assert rules.check_content(settings, ["a nude study"], nsfw=True) is False
    spoiler = ChannelSettings(content="spoiler")
    assert rules.check_content(spoiler, ["a nude study"], nsfw=False) is True
    assert rules.check_content(spoiler, ["a teapot"], nsfw=False) is False
    await rules.store.put_channel_settings(CH, settings)
    assert (await place(rules)).channel_cap == 5
