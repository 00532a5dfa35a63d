"""[images], [describe] and the ComfyUI actions table in the config file."""

from __future__ import annotations

import pytest

from gouache.app import build_workers
from gouache.config import parse_config
from gouache.errors import ConfigError
from gouache.pool.comfyui import ComfyUIWorker

BASE = """
[comfyui.actions]
img2img = "builtin_img2img"

[[comfyui.servers]]
name = "a"
url = "http://127.0.0.1:8188"

[[comfyui.servers]]
name = "b"
url = "http://127.0.0.1:8189"
actions = { blend = "builtin_blend", img2img = "default_sdxl_img2img" }
"""


def test_actions_default_and_per_server_overrides() -> None:
    config = parse_config(BASE)
    a, b = config.comfyui.servers
    assert config.comfyui.actions_for(a) == {"img2img": "builtin_img2img"}
    assert config.comfyui.actions_for(b) == {
        "img2img": "default_sdxl_img2img",
        "blend": "builtin_blend",
    }
    workers = [w for w in build_workers(config) if isinstance(w, ComfyUIWorker)]
    assert sorted(workers[0].actions) == ["img2img"]
    assert workers[1].actions["img2img"].name == "default_sdxl_img2img"


def test_unknown_action_and_bad_workflow_are_named() -> None:
    with pytest.raises(ConfigError, match=r"comfyui\.actions\.paint"):
        parse_config('[comfyui.actions]\npaint = "builtin_img2img"\n')
    config = parse_config(BASE.replace('"builtin_blend"', '"no_such_flow"'))
    with pytest.raises(ConfigError, match=r"comfyui\.servers\.b\.actions\.blend"):
        build_workers(config)


def test_image_limits_and_describe() -> None:
    config = parse_config('[images]\nmax_bytes = 2048\n[describe]\nmodel = "llava:13b"\n')
    assert config.images.max_bytes == 2048 and config.images.max_pixels == 40_000_000
    assert config.describe.model == "llava:13b" and config.describe.enabled
    with pytest.raises(ConfigError, match=r"images\.max_bytes"):
        parse_config("[images]\nmax_bytes = 10\n")


def test_describe_through_ollama_only_without_midjourney(tmp_path: object) -> None:
    from gouache.images.inputs import InputImages
    from gouache.pool.describer import OllamaDescriber
    from gouache.storage.images import ImageStore

    inputs = InputImages.build(ImageStore(f"{tmp_path}/images"))
    config = parse_config(BASE)
    describers = [w for w in build_workers(config, inputs=inputs) if isinstance(w, OllamaDescriber)]
    assert [d.model for d in describers] == ["llava:7b"]
    with_mj = parse_config(
        BASE
        + """
[[midjourney.accounts]]
name = "mj"
token = "x.y.z"
guild_id = 1
channel_id = 2
"""
    )
    assert not any(isinstance(w, OllamaDescriber) for w in build_workers(with_mj, inputs=inputs))
