"""Prompt intake: translation to English, banned words with escalating blocks, abuse limits.

`Intake` is the hook `gouache.bot.service.Requests.intake` calls for every new
prompt; `IntakeSettings` is what the ``[translate]``, ``[moderation]`` and
``[limits]`` sections of the configuration map onto.
"""

from __future__ import annotations

from gouache.intake.core import Intake, Requester, format_duration
from gouache.intake.limits import RateLimited, RateLimiter, TokenBucket
from gouache.intake.moderation import BannedWords, Block, Moderation, StrikeKind, WordMatcher
from gouache.intake.settings import (
    IntakeSettings,
    LimitSettings,
    ModerationSettings,
    TranslateSettings,
)
from gouache.intake.translate import SYSTEM_INSTRUCTION, Translation, TranslationFailed, Translator

__all__ = [
    "SYSTEM_INSTRUCTION",
    "BannedWords",
    "Block",
    "Intake",
    "IntakeSettings",
    "LimitSettings",
    "Moderation",
    "ModerationSettings",
    "RateLimited",
    "RateLimiter",
    "Requester",
    "StrikeKind",
    "TokenBucket",
    "TranslateSettings",
    "Translation",
    "TranslationFailed",
    "Translator",
    "WordMatcher",
    "format_duration",
]
