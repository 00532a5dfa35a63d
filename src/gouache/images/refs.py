"""Image URLs written in a prompt, the way Midjourney reads them.

``https://a/1.png https://b/2.jpg a red fox --sref https://c/s.png --cref https://d/c.png --ar 3:2``
has two image prompts (URLs at the very start), one style reference and one
character reference. `split_refs` takes the URLs out, so the rest is an
ordinary prompt for `gouache.params.parse_prompt` (which knows ``--iw``,
``--sw`` and ``--cw``); the images are fetched, checked and stored, and each
backend puts them back where it expects them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

_URL: Final = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$")
_DASHES: Final = re.compile(r"[\u2014\u2013\u2012\u2015\u2212]")
_REF_FLAGS: Final = {"--sref": "style", "--cref": "character"}


@dataclass(frozen=True, slots=True)
class PromptRefs:
    """A prompt with its image URLs taken out."""

    text: str
    prompt_urls: tuple[str, ...] = ()
    style_urls: tuple[str, ...] = ()
    character_urls: tuple[str, ...] = ()

    @property
    def count(self) -> int:
        """How many URLs there were."""
        return len(self.prompt_urls) + len(self.style_urls) + len(self.character_urls)


def is_url(token: str) -> bool:
    """Whether ``token`` looks like a URL (any scheme: the fetcher says which it takes)."""
    return bool(_URL.match(token))


def split_refs(prompt: str) -> PromptRefs:
    """Take the leading image URLs and the ``--sref``/``--cref`` URLs out of ``prompt``."""
    tokens = _DASHES.sub("--", prompt).split()
    leading: list[str] = []
    while tokens and is_url(tokens[0]):
        leading.append(tokens.pop(0))
    kept: list[str] = []
    refs: dict[str, list[str]] = {"style": [], "character": []}
    role: str | None = None
    pending: str | None = None  # a flag not yet followed by a URL
    for token in tokens:
        flag = token.lower()
        if flag in _REF_FLAGS:
            if pending is not None:
                kept.append(pending)
            role, pending = _REF_FLAGS[flag], token
            continue
        if role is not None and is_url(token):
            refs[role].append(token)
            pending = None
            continue
        if pending is not None:  # --sref without a URL: parse_prompt names it
            kept.append(pending)
        role = pending = None
        kept.append(token)
    if pending is not None:
        kept.append(pending)
    return PromptRefs(
        text=" ".join(kept),
        prompt_urls=tuple(leading),
        style_urls=tuple(refs["style"]),
        character_urls=tuple(refs["character"]),
    )
