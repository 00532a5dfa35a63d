"""The image side of a request: which images it brings, in which roles, and whether that fits.

`gather_sources` turns a command's attachments and the links written in its
prompt into `Source`s (image prompts first, then style and character
references), and refuses what the command cannot take: images on a bot
configured without image intake, more images than allowed. `check_weights`
refuses ``--iw``/``--sw``/``--cw`` without the image they weigh. `Shape` is
/blend's ``dimensions`` option. `described_prompt` picks one of a /describe
result's four prompts for its buttons.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Final

from gouache.errors import InvalidParameter
from gouache.images.check import ImageRejected
from gouache.images.inputs import Source
from gouache.images.refs import split_refs
from gouache.jobs import Action, InputRole, Job, JobState
from gouache.params import Params

#: How many images each command takes.
MAX_IMAGINE_IMAGES: Final = 5
BLEND_RANGE: Final = (2, 5)
#: Job meta key of a /describe result's four prompts.
PROMPTS: Final = "prompts"

_LABELS: Final = {
    InputRole.PROMPT: "The image prompt",
    InputRole.STYLE: "The style reference",
    InputRole.CHARACTER: "The character reference",
    InputRole.BLEND: "Image",
    InputRole.DESCRIBE: "The image",
}


class Shape(StrEnum):
    """/blend's ``dimensions``: Midjourney's three shapes."""

    PORTRAIT = "portrait"
    SQUARE = "square"
    LANDSCAPE = "landscape"

    @property
    def aspect(self) -> tuple[int, int]:
        """The aspect ratio Midjourney gives the shape (``--ar 2:3|1:1|3:2``)."""
        return {"portrait": (2, 3), "square": (1, 1), "landscape": (3, 2)}[self.value]


def source(role: InputRole, url: str, size: int | None = None, n: int | None = None) -> Source:
    """A `Source` labelled for error messages (``Image 2``, ``The style reference``)."""
    label = _LABELS[role] + (f" {n}" if n is not None else "")
    return Source(role=role, url=url, label=label, size=size)


def gather_sources(
    prompt: str, attached: Sequence[Source], *, takes_images: bool
) -> tuple[str, list[Source]]:
    """The prompt without its image links, and every image of an /imagine in order."""
    if not takes_images:
        if attached:
            raise ImageRejected("This bot does not take images.")
        return prompt, []
    refs = split_refs(prompt)
    sources = [s for s in attached if s.role is InputRole.PROMPT]
    sources += [source(InputRole.PROMPT, u) for u in refs.prompt_urls]
    sources += [s for s in attached if s.role is InputRole.STYLE]
    sources += [source(InputRole.STYLE, u) for u in refs.style_urls]
    sources += [s for s in attached if s.role is InputRole.CHARACTER]
    sources += [source(InputRole.CHARACTER, u) for u in refs.character_urls]
    if len(sources) > MAX_IMAGINE_IMAGES:
        raise ImageRejected(f"At most {MAX_IMAGINE_IMAGES} images per request.")
    return refs.text, sources


def check_weights(params: Params, sources: Sequence[Source]) -> None:
    """``--iw``, ``--sw`` and ``--cw`` each need the image they weigh."""
    roles = {s.role for s in sources}
    if params.image_weight is not None and InputRole.PROMPT not in roles:
        raise InvalidParameter("--iw needs an image prompt (an image or a link first).")
    if params.style_weight is not None and InputRole.STYLE not in roles:
        raise InvalidParameter("--sw needs a style reference (style_ref or --sref URL).")
    if params.character_weight is not None and InputRole.CHARACTER not in roles:
        raise InvalidParameter("--cw needs a character reference (character_ref or --cref URL).")


def check_blend_count(count: int) -> None:
    """/blend takes 2-5 images."""
    low, high = BLEND_RANGE
    if not low <= count <= high:
        raise ImageRejected(f"/blend takes {low} to {high} images, not {count}.")


def described_prompt(job: Job, index: int) -> str:
    """Prompt ``index`` (1-4) of a finished /describe."""
    prompts = job.meta.get(PROMPTS)
    if job.action is not Action.DESCRIBE or job.state is not JobState.SUCCEEDED:
        raise InvalidParameter("That is not a finished description.")
    if not isinstance(prompts, list) or not 1 <= index <= len(prompts):
        raise InvalidParameter("Pick one of the described prompts (1–4).")
    return str(prompts[index - 1])
