"""Which workflow a ComfyUI job runs, and its input images on their way to the server.

A job without input images runs the server's own workflow; an image prompt
runs its ``img2img`` action and a blend its ``blend`` action, each only where
that action is configured (``[comfyui.actions]`` or the server's own
``actions``). Style and character references and /describe are Midjourney's
(or the describer's): a ComfyUI server does not take those jobs.

The images come from the image store (`InputLoader`, i.e.
`gouache.images.inputs.InputImages.load`) and go up once per server
(`ImageUploads`); their uploaded names are bound to the workflow's LoadImage
inputs. ``--iw`` (image weight, 0-3, Midjourney's scale) becomes denoise: the
heavier the image weighs, the less of it is redrawn.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from gouache.jobs import Action, ErrorCode, InputImage, InputRole, Job
from gouache.pool.base import Failed
from gouache.pool.comfyui_uploads import ImageUploads
from gouache.pool.workflows import Workflow

__all__ = [
    "InputLoader",
    "denoise_for",
    "lost_file",
    "lost_input",
    "prepare_inputs",
    "workflow_for",
]

_MOST_DENOISE: Final = 0.95
_LEAST_DENOISE: Final = 0.15
_MAX_IW: Final = 3.0
_LOST_FILE: Final = "Invalid image file"


#: Gives the clean bytes of an input image (``InputImages.load``).
InputLoader = Callable[[InputImage], Awaitable[bytes]]


def workflow_for(
    job: Job, default: Workflow, actions: Mapping[str, Workflow], takes_images: bool
) -> Workflow | None:
    """The workflow ``job`` runs on a server with these ``actions``; None if it cannot run it."""
    if job.inputs(InputRole.STYLE) or job.inputs(InputRole.CHARACTER):
        return None
    if job.action is Action.BLEND:
        return actions.get("blend") if takes_images else None
    if job.action is Action.IMAGINE and job.inputs(InputRole.PROMPT):
        return actions.get("img2img") if takes_images else None
    if job.action in (Action.IMAGINE, Action.REROLL) and not job.input_images:
        return default
    return None


def denoise_for(image_weight: float | None) -> float | None:
    """Midjourney's ``--iw`` (0-3) as a denoise (0.95 … 0.15); None keeps the workflow's."""
    if image_weight is None:
        return None
    weight = min(max(image_weight, 0.0), _MAX_IW)
    return round(_MOST_DENOISE - (_MOST_DENOISE - _LEAST_DENOISE) * weight / _MAX_IW, 3)


async def prepare_inputs(
    job: Job, load: InputLoader | None, uploads: ImageUploads
) -> tuple[str, ...]:
    """Upload the job's image prompt (or blend images) once per server; their LoadImage names."""
    role = InputRole.BLEND if job.action is Action.BLEND else InputRole.PROMPT
    wanted = job.inputs(role)
    if not wanted or load is None:
        return ()
    return tuple([await uploads.ensure(await load(image)) for image in wanted])


def lost_file(job: Job, reason: str) -> bool:
    """Whether ComfyUI refused the job's LoadImage file (the server no longer has it)."""
    return bool(job.input_images) and _LOST_FILE in reason


def lost_input(job: Job, reason: str, uploads: ImageUploads) -> Failed:
    """The failure for a rejected prompt; a LoadImage file the server lost is uploaded again."""
    if lost_file(job, reason):
        uploads.forget()  # the server restarted without its input folder
        return Failed(
            ErrorCode.WORKER_ERROR, "The image server lost the input image.", retryable=True
        )
    return Failed(ErrorCode.INVALID_PROMPT, reason)
