"""Channel settings and preferences: validation names each problem and keeps nothing of a bad change."""

from __future__ import annotations

import pytest

from gouache.channels.errors import SettingsInvalid, UnknownModel
from gouache.channels.settings import (
    ChannelSettings,
    MemberPreferences,
    SettingsContext,
    apply_changes,
    apply_preferences,
)

CTX = SettingsContext(
    workflows=("builtin_demo", "default_sdxl"),
    checkpoints=("sd_xl_base_1.0.safetensors",),
    loras=("ink.safetensors", "film.safetensors"),
)


def test_a_valid_change_applies_every_setting() -> None:
    new = apply_changes(
        ChannelSettings(),
        {
            "backend": "Midjourney",
            "model": "niji",
            "params": "--stylize 250 --ar 2:3 --raw",
            "content": "spoiler",
            "requester_only": "yes",
            "daily_cap": "40",
            "enabled": "off",
        },
        CTX,
    )
    assert new.backend == "midjourney" and new.model == "niji"
    assert new.params == "--ar 2:3 --s 250 --style raw"
    assert (new.content, new.requester_only, new.daily_cap, new.enabled) == (
        "spoiler",
        True,
        40,
        False,
    )
    cleared = apply_changes(new, {"model": "none", "daily_cap": "none", "content": ""}, CTX)
    assert (cleared.model, cleared.daily_cap, cleared.content) == (None, None, None)


def test_every_problem_is_one_line_naming_the_setting() -> None:
    with pytest.raises(SettingsInvalid) as bad:
        apply_changes(
            ChannelSettings(),
            {
                "backend": "dalle",
                "daily_cap": "0",
                "model": "v5",
                "workflow": "missing",
                "loras": "ink.safetensors, nope.safetensors",
                "params": "a prompt --ar 2:3",
                "colour": "red",
                "requester_only": "maybe",
            },
            CTX,
        )
    lines = bad.value.problems
    assert [line.split(":")[0] for line in lines] == [
        "backend",
        "daily_cap",
        "model",
        "workflow",
        "loras",
        "params",
        "colour",
        "requester_only",
    ]
    assert "between 1 and 100000, not 0" in lines[1]
    assert "v7, v6.1, niji" in lines[2]
    assert "builtin_demo, default_sdxl" in lines[3]
    assert "'nope.safetensors'" in lines[4]


def test_defaults_that_contradict_the_backend_are_refused() -> None:
    with pytest.raises(SettingsInvalid, match="model: a Midjourney default"):
        apply_changes(ChannelSettings(), {"backend": "comfyui", "model": "v7"}, CTX)
    with pytest.raises(SettingsInvalid, match="workflow: ComfyUI defaults"):
        apply_changes(ChannelSettings(workflow="builtin_demo"), {"backend": "midjourney"}, CTX)
    with pytest.raises(SettingsInvalid, match="nothing to change"):
        apply_changes(ChannelSettings(), {}, CTX)
    with pytest.raises(SettingsInvalid, match="at most 4"):
        apply_changes(ChannelSettings(), {"loras": "a,b,c,d,e"}, CTX)


def test_settings_round_trip_and_read_as_a_person_would() -> None:
    s = ChannelSettings(backend="comfyui", workflow="builtin_demo", loras=("ink.safetensors",))
    assert ChannelSettings.from_json(s.to_json()) == s
    assert ChannelSettings.from_json(None) == ChannelSettings()
    lines = s.lines()
    assert "backend: comfyui" in lines and "loras: ink.safetensors" in lines
    assert "requester_only: no" in lines and "daily_cap: none" in lines


def test_preferences_stay_within_the_tier_and_the_known_models() -> None:
    def backend_of(value: str) -> str:
        if value in ("v7", "v6.1", "niji"):
            return "midjourney"
        raise UnknownModel(f"Unknown model {value!r}. Valid models: v7, v6.1, niji.")

    ctx = SettingsContext(allowed_models={"v7", "v6.1"}, model_backend=backend_of)
    prefs = apply_preferences(MemberPreferences(), {"model": "v6.1", "params": "--ar 3:2"}, ctx)
    assert prefs == MemberPreferences(model="v6.1", params="--ar 3:2")
    with pytest.raises(SettingsInvalid) as bad:
        apply_preferences(prefs, {"model": "niji", "params": "--chaos 500"}, ctx)
    assert bad.value.problems[0].startswith("model: your tier may not use 'niji'")
    assert bad.value.problems[1].startswith("params:")
    with pytest.raises(SettingsInvalid, match="Valid models: v7"):
        apply_preferences(prefs, {"model": "dall-e"}, ctx)
