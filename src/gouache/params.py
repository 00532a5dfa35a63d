"""Midjourney-style prompt parameters (``--ar 16:9 --seed 42 --no text``).

A prompt is free text followed by ``--name value`` pairs. We parse them into a
typed, validated `Params` so that every backend gets the same meaning and a
user gets a precise error for a bad value, before anything is queued.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict

from gouache.errors import InvalidParameter, PromptRejected

MAX_SEED = 4_294_967_295
_VERSIONS = ("1", "2", "3", "4", "5", "5.0", "5.1", "5.2", "6", "6.0", "6.1", "7")
_NIJI_VERSIONS = ("4", "5", "6")
_QUALITY = (0.25, 0.5, 1.0, 2.0, 4.0)
_STYLES = ("raw", "cute", "expressive", "original", "scenic")
# Long dashes: phones and rich-text editors turn "--" into these.
_DASHES = re.compile(r"[\u2014\u2013\u2012\u2015\u2212]")
_PARAM_START = re.compile(r"(?:^|\s)--([A-Za-z][A-Za-z0-9]*)")


class Params(BaseModel):
    """The validated parameters of one prompt; ``None`` means "backend default"."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    aspect: tuple[int, int] | None = None
    seed: int | None = None
    no: tuple[str, ...] = ()
    chaos: int | None = None
    version: str | None = None
    niji: str | None = None
    quality: float | None = None
    stylize: int | None = None
    weird: int | None = None
    stop: int | None = None
    style: str | None = None
    tile: bool = False
    image_weight: float | None = None
    style_weight: int | None = None  # --sw, with a --sref
    character_weight: int | None = None  # --cw, with a --cref

    def to_args(self) -> str:
        """Render the parameters in canonical Midjourney syntax (empty if none)."""
        parts: list[str] = []
        if self.aspect is not None:
            parts.append(f"--ar {self.aspect[0]}:{self.aspect[1]}")
        if self.seed is not None:
            parts.append(f"--seed {self.seed}")
        if self.no:
            parts.append("--no " + ", ".join(self.no))
        if self.chaos is not None:
            parts.append(f"--chaos {self.chaos}")
        if self.niji is not None:
            parts.append(f"--niji {self.niji}".rstrip())
        elif self.version is not None:
            parts.append(f"--v {self.version}")
        if self.quality is not None:
            parts.append(f"--q {_fmt_num(self.quality)}")
        if self.stylize is not None:
            parts.append(f"--s {self.stylize}")
        if self.weird is not None:
            parts.append(f"--w {self.weird}")
        if self.stop is not None:
            parts.append(f"--stop {self.stop}")
        if self.style is not None:
            parts.append(f"--style {self.style}")
        if self.tile:
            parts.append("--tile")
        parts.extend(self._weights())
        return " ".join(parts)

    def _weights(self) -> list[str]:
        """``--iw``, ``--sw``, ``--cw``: how much the image prompt and references weigh."""
        parts: list[str] = []
        if self.image_weight is not None:
            parts.append(f"--iw {_fmt_num(self.image_weight)}")
        if self.style_weight is not None:
            parts.append(f"--sw {self.style_weight}")
        if self.character_weight is not None:
            parts.append(f"--cw {self.character_weight}")
        return parts


class ParsedPrompt(BaseModel):
    """A prompt split into its free text and its typed parameters."""

    model_config = ConfigDict(frozen=True)

    text: str
    params: Params

    def render(self) -> str:
        """The prompt as Midjourney should receive it: text, then canonical parameters."""
        args = self.params.to_args()
        return f"{self.text} {args}" if args else self.text


def _fmt_num(value: float) -> str:
    return f"{value:g}"


def _int_in(lo: int, hi: int) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise InvalidParameter(f"--{name} needs a whole number, not {raw!r}.") from None
        if not lo <= value <= hi:
            raise InvalidParameter(f"--{name} must be between {lo} and {hi}, not {value}.")
        return value

    return parse


def _float_in(lo: float, hi: float) -> Callable[[str, str], float]:
    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise InvalidParameter(f"--{name} needs a number, not {raw!r}.") from None
        if not lo <= value <= hi:
            raise InvalidParameter(f"--{name} must be between {lo:g} and {hi:g}, not {raw}.")
        return value

    return parse


def parse_aspect(raw: str, *, name: str = "ar") -> tuple[int, int]:
    """Parse ``W:H`` (both whole numbers, ratio at most 8:1 either way)."""
    m = re.fullmatch(r"\s*(\d{1,5})\s*:\s*(\d{1,5})\s*", raw)
    if not m:
        raise InvalidParameter(f"--{name} must look like 16:9, not {raw!r}.")
    w, h = int(m.group(1)), int(m.group(2))
    if w == 0 or h == 0:
        raise InvalidParameter(f"--{name} sides must be at least 1.")
    if max(w, h) / min(w, h) > 8:
        raise InvalidParameter(f"--{name} {w}:{h} is too extreme; keep it within 8:1.")
    return w, h


def _choice(options: tuple[str, ...]) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        if raw not in options:
            raise InvalidParameter(f"--{name} must be one of {', '.join(options)}, not {raw!r}.")
        return raw

    return parse


def _quality(name: str, raw: str) -> float:
    value = _float_in(0.25, 4)(name, raw)
    if value not in _QUALITY:
        allowed = ", ".join(_fmt_num(q) for q in _QUALITY)
        raise InvalidParameter(f"--{name} must be one of {allowed}, not {raw}.")
    return value


def _no(name: str, raw: str) -> tuple[str, ...]:
    words = tuple(w.strip() for w in raw.split(",") if w.strip())
    if not words:
        raise InvalidParameter(f"--{name} needs something to leave out, e.g. --no text.")
    return words


# name/alias -> (field, parser or None for flags)
_SPECS: dict[str, tuple[str, Callable[[str, str], Any] | None]] = {
    "ar": ("aspect", lambda n, r: parse_aspect(r, name=n)),
    "aspect": ("aspect", lambda n, r: parse_aspect(r, name=n)),
    "seed": ("seed", _int_in(0, MAX_SEED)),
    "sameseed": ("seed", _int_in(0, MAX_SEED)),
    "no": ("no", _no),
    "chaos": ("chaos", _int_in(0, 100)),
    "c": ("chaos", _int_in(0, 100)),
    "v": ("version", _choice(_VERSIONS)),
    "version": ("version", _choice(_VERSIONS)),
    "niji": ("niji", None),
    "q": ("quality", _quality),
    "quality": ("quality", _quality),
    "s": ("stylize", _int_in(0, 1000)),
    "stylize": ("stylize", _int_in(0, 1000)),
    "w": ("weird", _int_in(0, 3000)),
    "weird": ("weird", _int_in(0, 3000)),
    "stop": ("stop", _int_in(10, 100)),
    "style": ("style", _choice(_STYLES)),
    "tile": ("tile", None),
    "iw": ("image_weight", _float_in(0, 3)),
    "sw": ("style_weight", _int_in(0, 1000)),
    "cw": ("character_weight", _int_in(0, 100)),
}


def parse_prompt(prompt: str, *, max_length: int = 4000) -> ParsedPrompt:
    """Split ``prompt`` into text and validated `Params`.

    Raises `InvalidParameter` for an unknown, repeated or out-of-range
    parameter and `PromptRejected` for an empty or over-long prompt.
    """
    normalized = _DASHES.sub("--", prompt).strip()
    if len(normalized) > max_length:
        raise PromptRejected(
            f"The prompt is too long ({len(normalized)} > {max_length} characters)."
        )
    matches = list(_PARAM_START.finditer(normalized))
    text = normalized[: matches[0].start()].strip() if matches else normalized
    text = " ".join(text.split())
    if not text:
        raise PromptRejected("The prompt needs some words before its parameters.")
    values: dict[str, Any] = {}
    for i, m in enumerate(matches):
        name = m.group(1).lower()
        end = matches[i + 1].start() if i + 1 < len(matches) else len(normalized)
        raw = normalized[m.end() : end].strip()
        _one(name, raw, values)
    if "niji" in values and "version" in values:
        raise InvalidParameter("Use either --niji or --v, not both.")
    return ParsedPrompt(text=text, params=Params(**values))


def _one(name: str, raw: str, values: dict[str, Any]) -> None:
    """Parse one ``--name raw`` into ``values`` (raising `InvalidParameter`)."""
    if name == "raw":  # Midjourney's shorthand for --style raw
        if raw or "style" in values:
            raise InvalidParameter("--raw takes no value and replaces --style raw.")
        values["style"] = "raw"
        return
    spec = _SPECS.get(name)
    if spec is None:
        raise InvalidParameter(f"Unknown parameter --{name}.")
    field, parser = spec
    if field in values:
        raise InvalidParameter(f"--{name} is given twice.")
    if field == "niji":
        if raw and raw not in _NIJI_VERSIONS:
            raise InvalidParameter(
                f"--niji takes no value or one of {', '.join(_NIJI_VERSIONS)}, not {raw!r}."
            )
        values[field] = raw
    elif parser is None:
        if raw:
            raise InvalidParameter(f"--{name} takes no value, but got {raw!r}.")
        values[field] = True
    else:
        if not raw:
            raise InvalidParameter(f"--{name} needs a value.")
        values[field] = parser(name, raw)
