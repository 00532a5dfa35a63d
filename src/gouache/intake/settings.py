"""Settings of prompt intake: translation, moderation and abuse limits.

`gouache.config` maps the TOML sections ``[translate]``, ``[moderation]`` and
``[limits]`` onto these models; they validate on their own too, so a bad value
fails with the field's name wherever the settings come from.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator
from yarl import URL

# Which characters mark a prompt as "not English yet". Scripts are Unicode
# ranges; languages name the scripts they are written in. Latin-script
# languages (French, Spanish…) cannot be told from English by their letters
# and are deliberately not offered.
SCRIPTS: dict[str, str] = {
    "han": "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f",
    "kana": "\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f",
    "hangul": "\u1100-\u11ff\u3130-\u318f\uac00-\ud7af",
    "cyrillic": "\u0400-\u04ff",
    "greek": "\u0370-\u03ff",
    "arabic": "\u0600-\u06ff\u0750-\u077f",
    "hebrew": "\u0590-\u05ff",
    "thai": "\u0e00-\u0e7f",
    "devanagari": "\u0900-\u097f",
}
LANGUAGES: dict[str, tuple[str, ...]] = {
    "zh": ("han",),
    "ja": ("han", "kana"),
    "ko": ("hangul",),
    "ru": ("cyrillic",),
    "uk": ("cyrillic",),
    "el": ("greek",),
    "ar": ("arabic",),
    "fa": ("arabic",),
    "he": ("hebrew",),
    "th": ("thai",),
    "hi": ("devanagari",),
}


def scripts_for(names: tuple[str, ...]) -> tuple[str, ...]:
    """The script names behind a list of language codes and/or script names."""
    out: list[str] = []
    for name in names:
        for script in LANGUAGES.get(name, (name,)):
            if script not in out:
                out.append(script)
    return tuple(out)


class TranslateSettings(BaseModel):
    """``[translate]``: non-English prompts go through Ollama's ``/api/chat``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    ollama_url: str = "http://127.0.0.1:11434"
    model: str = Field("qwen2.5:7b", min_length=1)
    timeout_s: float = Field(8.0, gt=0, le=300)
    cache_size: int = Field(512, ge=0)
    languages: tuple[str, ...] = ("zh",)
    # A translation longer than this is not trusted (a rambling model): the
    # prompt is sent as written, with a note.
    max_output_chars: int = Field(4000, ge=100, le=6000)
    # After a failed call, skip Ollama for this long so that members do not each
    # wait a full timeout while it is down.
    retry_after_s: float = Field(30.0, ge=0)
    max_concurrency: int = Field(4, ge=1)

    @field_validator("ollama_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        url = URL(value)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("must be an http(s) URL such as http://127.0.0.1:11434")
        return value

    @field_validator("languages")
    @classmethod
    def _known_languages(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        names = tuple(v.strip().lower() for v in value)
        unknown = [n for n in names if n not in LANGUAGES and n not in SCRIPTS]
        if unknown:
            known = ", ".join([*LANGUAGES, *SCRIPTS])
            raise ValueError(f"unknown language or script {', '.join(unknown)}; known: {known}")
        return names


class ModerationSettings(BaseModel):
    """``[moderation]``: banned words and escalating blocks."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    banned_words_file: Path | None = None
    reload_check_s: float = Field(2.0, ge=0)
    refusals_to_block: int = Field(3, ge=1)
    banned_results_to_block: int = Field(2, ge=1)
    strike_window_s: float = Field(3600.0, gt=0)
    block_steps_h: tuple[float, ...] = (1.0, 2.0, 10.0)
    # A block this long in the past no longer counts: the next one starts at step one.
    block_reset_h: float = Field(168.0, gt=0)

    @field_validator("block_steps_h")
    @classmethod
    def _positive_steps(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(step <= 0 for step in value):
            raise ValueError("needs at least one block length, each above 0 hours")
        return value


class LimitSettings(BaseModel):
    """``[limits]``: prompt length and a per-member request rate (token bucket)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_prompt_chars: int = Field(1500, ge=10, le=6000)
    rate_burst: int = Field(5, ge=1)
    rate_per_minute: float = Field(6.0, gt=0)


class IntakeSettings(BaseModel):
    """Everything prompt intake needs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    translate: TranslateSettings = Field(default_factory=TranslateSettings)
    moderation: ModerationSettings = Field(default_factory=ModerationSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
