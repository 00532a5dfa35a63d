"""Channel settings and member preferences: the values, and how a change is validated.

A change is a mapping of setting names to the text an operator typed
(``/settings set``, ``gouache channel set``, the admin API). `apply_changes`
checks every one, reports one line per problem naming the setting, and
returns the new settings only if all of them pass: nothing is saved half-way.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict

from gouache.channels.errors import SettingsInvalid
from gouache.errors import GouacheError
from gouache.params import parse_prompt

Backend = Literal["any", "midjourney", "comfyui"]
ContentRule = Literal["allow", "spoiler", "refuse"]

#: Midjourney models a channel or a request may choose (niji goes to the Niji bot).
MJ_MODELS: Final = ("v7", "v6.1", "niji")
BACKENDS: Final = ("any", "midjourney", "comfyui")
CONTENT_RULES: Final = ("allow", "spoiler", "refuse")
MAX_DAILY_CAP: Final = 100_000
MAX_LORAS: Final = 4
_CLEAR: Final = frozenset({"", "none", "default", "-"})
_TRUE: Final = frozenset({"true", "yes", "on", "1"})
_FALSE: Final = frozenset({"false", "no", "off", "0"})

#: Every setting, with what it means (``/settings show`` and the CLI print this).
SETTING_NAMES: Final[dict[str, str]] = {
    "enabled": "whether the channel takes requests at all (true/false)",
    "backend": "which workers serve the channel: any, midjourney or comfyui",
    "model": "default Midjourney model: v7, v6.1 or niji",
    "params": "default Midjourney parameters, e.g. --ar 3:2 --stylize 200 --raw",
    "workflow": "default ComfyUI workflow (one a server is configured with)",
    "checkpoint": "default ComfyUI checkpoint (one a healthy server has)",
    "loras": "default ComfyUI LoRAs, comma-separated (at most 4)",
    "content": "adult prompts: allow, spoiler or refuse (default: refuse outside NSFW channels)",
    "requester_only": "only the member who asked may press a result's buttons (true/false)",
    "daily_cap": f"images the channel may make per day, 1..{MAX_DAILY_CAP} (none: no cap)",
}


class ChannelSettings(BaseModel):
    """One channel's defaults and limits (the defaults are what a channel without settings has)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    enabled: bool = True
    backend: Backend = "any"
    model: str | None = None
    params: str = ""
    workflow: str | None = None
    checkpoint: str | None = None
    loras: tuple[str, ...] = ()
    content: ContentRule | None = None
    requester_only: bool = False
    daily_cap: int | None = None

    def to_json(self) -> str:
        """The JSON the stores keep."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, data: str | bytes | None) -> ChannelSettings:
        """Settings from `to_json` (a channel never set has the defaults)."""
        return cls.model_validate_json(data) if data else cls()

    def lines(self) -> list[str]:
        """``name: value`` lines, as a person reads them."""
        out = []
        for name in SETTING_NAMES:
            value: Any = getattr(self, name)
            if isinstance(value, bool):
                shown = "yes" if value else "no"
            elif isinstance(value, tuple):
                shown = ", ".join(value) or "none"
            elif name == "content" and value is None:
                shown = "default (refuse adult prompts outside NSFW channels)"
            elif value is None or value == "":
                shown = "none" if name != "backend" else "any"
            else:
                shown = str(value)
            out.append(f"{name}: {shown}")
        return out


class MemberPreferences(BaseModel):
    """A member's own defaults, used where the channel allows them."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    model: str | None = None
    params: str = ""

    def to_json(self) -> str:
        """The JSON the stores keep."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, data: str | bytes | None) -> MemberPreferences:
        """Preferences from `to_json` (none set: all defaults)."""
        return cls.model_validate_json(data) if data else cls()


@dataclass(frozen=True)
class SettingsContext:
    """What a change is checked against: what the pool can run now."""

    workflows: Collection[str] = ()
    checkpoints: Collection[str] = ()
    loras: Collection[str] = ()
    #: Model values a member's tier may use (None: any).
    allowed_models: Collection[str] | None = None
    #: Resolves a model value to its backend, or raises `UnknownModel`.
    model_backend: Callable[[str], str] = field(default=lambda value: "midjourney")


def _text(raw: object) -> str:
    return raw.strip() if isinstance(raw, str) else json.dumps(raw)


def _cleared(raw: object) -> bool:
    return raw is None or (isinstance(raw, str) and raw.strip().lower() in _CLEAR)


def _bool(name: str, raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    word = _text(raw).lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"{name}: must be true or false, not {_text(raw)!r}")


def _choice(name: str, raw: object, choices: Collection[str], what: str) -> str:
    word = _text(raw).lower()
    if word not in choices:
        raise ValueError(f"{name}: {what} {_text(raw)!r} is not one of {', '.join(choices)}")
    return word


def _cap(raw: object) -> int | None:
    if _cleared(raw):
        return None
    try:
        value = int(_text(raw))
    except ValueError:
        raise ValueError(f"daily_cap: must be a whole number, not {_text(raw)!r}") from None
    if not 1 <= value <= MAX_DAILY_CAP:
        raise ValueError(f"daily_cap: must be between 1 and {MAX_DAILY_CAP}, not {value}")
    return value


def check_params(name: str, raw: object) -> str:
    """Default parameters: Midjourney-style ``--params`` only, each valid (no prompt text)."""
    if _cleared(raw):
        return ""
    text = _text(raw)
    if not text.startswith("-"):
        raise ValueError(f"{name}: must be --parameters only, such as --ar 3:2 --stylize 200")
    try:
        parsed = parse_prompt(f"x {text}")
    except GouacheError as exc:
        raise ValueError(f"{name}: {exc}") from None
    if parsed.text != "x":
        raise ValueError(f"{name}: must be --parameters only, not prompt text")
    return parsed.params.to_args()


def _member_of(name: str, raw: object, known: Collection[str], what: str) -> str:
    value = _text(raw)
    if value not in known:
        listed = ", ".join(sorted(known)) or "none available now"
        raise ValueError(f"{name}: unknown {what} {value!r}; available: {listed}")
    return value


def _loras(raw: object, known: Collection[str]) -> tuple[str, ...]:
    if _cleared(raw):
        return ()
    items = raw if isinstance(raw, list | tuple) else _text(raw).split(",")
    names = tuple(dict.fromkeys(str(i).strip() for i in items if str(i).strip()))
    if len(names) > MAX_LORAS:
        raise ValueError(f"loras: at most {MAX_LORAS}, not {len(names)}")
    for name in names:
        _member_of("loras", name, known, "LoRA")
    return names


def _parse_one(name: str, raw: object, ctx: SettingsContext) -> Any:
    if name in ("enabled", "requester_only"):
        return _bool(name, raw)
    if name == "backend":
        return _choice(name, raw, BACKENDS, "backend")
    if name == "content":
        return None if _cleared(raw) else _choice(name, raw, CONTENT_RULES, "rule")
    if name == "daily_cap":
        return _cap(raw)
    if name == "params":
        return check_params(name, raw)
    if name == "loras":
        return _loras(raw, ctx.loras)
    if _cleared(raw):
        return None
    if name == "model":
        return _choice(name, raw, MJ_MODELS, "model")
    if name == "workflow":
        return _member_of(name, raw, ctx.workflows, "workflow")
    return _member_of(name, raw, ctx.checkpoints, "checkpoint")


def _consistency(s: ChannelSettings) -> list[str]:
    problems = []
    if s.backend == "comfyui" and (s.model or s.params):
        problems.append(
            "model: a Midjourney default does not fit a channel whose backend is comfyui"
        )
    if s.backend == "midjourney" and (s.workflow or s.checkpoint or s.loras):
        problems.append(
            "workflow: ComfyUI defaults do not fit a channel whose backend is midjourney"
        )
    return problems


def apply_changes(
    current: ChannelSettings, changes: Mapping[str, object], ctx: SettingsContext
) -> ChannelSettings:
    """The settings with ``changes`` applied, or `SettingsInvalid` listing every problem."""
    if not changes:
        raise SettingsInvalid(["nothing to change: name a setting, e.g. backend=midjourney"])
    problems: list[str] = []
    update: dict[str, Any] = {}
    for name, raw in changes.items():
        if name not in SETTING_NAMES:
            problems.append(f"{name}: unknown setting (known: {', '.join(SETTING_NAMES)})")
            continue
        try:
            update[name] = _parse_one(name, raw, ctx)
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise SettingsInvalid(problems)
    new = current.model_copy(update=update)
    problems = _consistency(new)
    if problems:
        raise SettingsInvalid(problems)
    return new


def apply_preferences(
    current: MemberPreferences, changes: Mapping[str, object], ctx: SettingsContext
) -> MemberPreferences:
    """A member's preferences with ``changes`` applied (model and params), or `SettingsInvalid`."""
    problems: list[str] = []
    update: dict[str, Any] = {}
    for name, raw in changes.items():
        try:
            if name == "params":
                update[name] = check_params(name, raw)
            elif name == "model":
                update[name] = None if _cleared(raw) else _preferred_model(_text(raw), ctx)
            else:
                problems.append(f"{name}: unknown preference (known: model, params)")
        except GouacheError as exc:
            problems.append(f"model: {exc}")
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise SettingsInvalid(problems)
    return current.model_copy(update=update)


def _preferred_model(value: str, ctx: SettingsContext) -> str:
    ctx.model_backend(value)  # raises UnknownModel, listing the valid ones
    if ctx.allowed_models is not None and value not in ctx.allowed_models:
        allowed = ", ".join(sorted(ctx.allowed_models)) or "none"
        raise ValueError(f"model: your tier may not use {value!r} (yours: {allowed})")
    return value
