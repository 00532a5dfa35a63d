"""Content rules: which prompts count as adult, and what a channel does with them.

A channel's rule is ``allow``, ``spoiler`` (results posted as spoilers) or
``refuse``. A channel that set none refuses adult prompts unless Discord marks
it NSFW. Results Midjourney's own filter stops stay errors whatever the rule
(they never reach this module).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

from gouache.channels.settings import ContentRule
from gouache.intake.moderation import BannedWords, WordMatcher, parse_word_list

Decision = Literal["allow", "spoiler", "refuse"]


def shipped_words() -> list[str]:
    """The default list that ships with gouache (``channels/adult_words.txt``)."""
    text = resources.files("gouache.channels").joinpath("adult_words.txt").read_text("utf-8")
    return parse_word_list(text)


class AdultWords:
    """The words that flag a prompt as adult: a file (re-read when it changes) or the shipped list."""

    def __init__(self, path: Path | None = None) -> None:
        self._file = BannedWords(path) if path is not None else None
        self._shipped = WordMatcher(shipped_words()) if path is None else None

    def load(self) -> None:
        """Read the file now; `ConfigError` if it cannot be read."""
        if self._file is not None:
            self._file.load()

    def find(self, *texts: str) -> str | None:
        """The first adult term in any of ``texts`` (for logs), or None."""
        if self._file is not None:
            return self._file.find(*texts)
        assert self._shipped is not None
        for text in texts:
            if (hit := self._shipped.find(text)) is not None:
                return hit
        return None


def decide_content(rule: ContentRule | None, *, adult: bool, nsfw_channel: bool) -> Decision:
    """What happens to a prompt: a clean one is always allowed; an adult one follows the rule.

    Without a rule of its own, a channel allows adult prompts only if Discord marks it NSFW.
    """
    if not adult:
        return "allow"
    if rule is None:
        return "allow" if nsfw_channel else "refuse"
    return rule
