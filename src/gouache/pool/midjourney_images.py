"""Images for Midjourney: uploaded from the account's side, placed where Midjourney wants them.

Discord's client uploads a file in three steps (`upload`): ``POST
/channels/{id}/attachments`` announces it and answers an ``upload_url`` and an
``uploaded_filename``; a ``PUT`` of the bytes to that URL (no token: the URL
is the credential); then the message or interaction that uses it lists
``{id, filename, uploaded_filename}``.

* An **image prompt** or **reference** (`post_images`): the images are posted
  in a message of the account's channel and their attachment URLs go into the
  prompt (`image_prompt`): image prompts first, then the text and parameters,
  then ``--sref URL…`` and ``--cref URL…`` (``--iw``, ``--sw``, ``--cw`` stay
  among the parameters).
* **/blend** and **/describe** (`blend_body`, `describe_body`): the uploads
  are referenced in the interaction's ``attachments`` and by attachment
  options (type 11) whose value is the entry's ``id``; /blend's
  ``dimensions`` is ``--ar 2:3|1:1|3:2``.
* A **describe** result is an embed whose description numbers four prompts
  (1️⃣ … 4️⃣): `described_prompts` reads them.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp

from gouache.errors import GouacheError
from gouache.jobs import Action, ErrorCode, InputImage, InputRole, Job
from gouache.params import ParsedPrompt
from gouache.pool.base import Failed
from gouache.pool.midjourney_rest import DiscordUnreachable, UserApi
from gouache.pool.midjourney_verdicts import JobRefused
from gouache.pool.midjourney_wire import CommandRef, described_prompts, imagine_body, render_prompt

__all__ = [
    "COMMANDS",
    "DIMENSIONS",
    "Prepared",
    "blend_body",
    "body_for",
    "describe_body",
    "described_prompts",
    "image_prompt",
    "post_images",
    "prepare",
    "upload",
]

#: The Midjourney command each kind of new job runs.
COMMANDS: Final = {Action.IMAGINE: "imagine", Action.BLEND: "blend", Action.DESCRIBE: "describe"}
InputLoader = Callable[[InputImage], Awaitable[bytes]]


DIMENSIONS: Final = {(2, 3): "--ar 2:3", (1, 1): "--ar 1:1", (3, 2): "--ar 3:2"}
_MODE_FLAG: Final = re.compile(r"(?:^|\s)--(fast|relax|turbo)\b")


async def upload(api: UserApi, data: bytes, filename: str) -> str:
    """Announce, PUT and return the ``uploaded_filename`` of one file."""
    resp = await api.call(
        "POST",
        f"/channels/{api.channel_id}/attachments",
        {"files": [{"id": "0", "filename": filename, "file_size": len(data)}]},
    )
    entries = resp.body.get("attachments") if isinstance(resp.body, dict) else None
    if resp.status != 200 or not isinstance(entries, list) or not entries:
        raise DiscordUnreachable(f"Discord answered {resp.status} to an upload request.")
    entry = entries[0]
    url, name = entry.get("upload_url"), entry.get("upload_filename")
    if not isinstance(url, str) or not isinstance(name, str):
        raise DiscordUnreachable("Discord's upload answer had no upload URL.")
    try:
        async with (
            asyncio.timeout(api.request_timeout),
            api._session().put(url, data=data, headers={"Content-Type": "image/png"}) as put,
        ):
            if put.status not in (200, 201):
                raise DiscordUnreachable(f"The upload was refused (HTTP {put.status}).")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise DiscordUnreachable(f"The upload failed ({type(exc).__name__}).") from None
    return name


def _entries(names: Sequence[str]) -> list[dict[str, str]]:
    return [
        {"id": str(i), "filename": name.rpartition("/")[2], "uploaded_filename": name}
        for i, name in enumerate(names)
    ]


async def post_images(api: UserApi, images: Sequence[bytes]) -> list[str]:
    """Post ``images`` in one message of the account's channel; their attachment URLs in order."""
    names = [await upload(api, data, f"image{i + 1}.png") for i, data in enumerate(images)]
    resp = await api.call(
        "POST",
        f"/channels/{api.channel_id}/messages",
        {"content": "", "attachments": _entries(names)},
    )
    attachments = resp.body.get("attachments") if isinstance(resp.body, dict) else None
    if resp.status != 200 or not isinstance(attachments, list) or len(attachments) != len(names):
        raise DiscordUnreachable(f"Discord answered {resp.status} to posting the images.")
    urls = [a.get("url") for a in attachments if isinstance(a, dict)]
    if not all(isinstance(u, str) for u in urls):
        raise DiscordUnreachable("Discord's message had no attachment URLs.")
    return [str(u) for u in urls]


def image_prompt(job: Job, urls: dict[InputRole, list[str]], mode: str) -> str:
    """The /imagine prompt with its images: URLs first, text, parameters, --sref, --cref."""
    text = ParsedPrompt(text=job.prompt, params=job.params).render()
    parts = [*urls.get(InputRole.PROMPT, []), text]
    if urls.get(InputRole.STYLE):
        parts.append("--sref " + " ".join(urls[InputRole.STYLE]))
    if urls.get(InputRole.CHARACTER):
        parts.append("--cref " + " ".join(urls[InputRole.CHARACTER]))
    prompt = " ".join(parts)
    if not _MODE_FLAG.search(prompt):
        prompt = f"{prompt} --{mode}"
    return prompt


def _command_body(
    command: CommandRef, options: list[dict[str, Any]], names: Sequence[str], **ids: str
) -> dict[str, Any]:
    return {
        "type": 2,
        "application_id": command.application_id,
        "guild_id": ids["guild_id"],
        "channel_id": ids["channel_id"],
        "session_id": ids["session_id"],
        "nonce": ids["nonce"],
        "data": {
            "version": command.version,
            "id": command.id,
            "name": command.name,
            "type": command.type,
            "options": options,
            "attachments": _entries(names),
        },
    }


def blend_body(
    command: CommandRef, names: Sequence[str], aspect: tuple[int, int] | None, **ids: str
) -> dict[str, Any]:
    """``POST /interactions`` of /blend: ``image1``…``imageN`` and ``dimensions``."""
    options: list[dict[str, Any]] = [
        {"type": 11, "name": f"image{i + 1}", "value": i} for i in range(len(names))
    ]
    dimensions = DIMENSIONS.get(aspect or (1, 1), "--ar 1:1")
    options.append({"type": 3, "name": "dimensions", "value": dimensions})
    return _command_body(command, options, names, **ids)


def describe_body(command: CommandRef, name: str, **ids: str) -> dict[str, Any]:
    """``POST /interactions`` of /describe: one ``image``."""
    return _command_body(command, [{"type": 11, "name": "image", "value": 0}], [name], **ids)


@dataclass
class Prepared:
    """A job's images as Midjourney will see them (made once, reused when the send is retried)."""

    urls: dict[InputRole, list[str]] | None = None  # /imagine: posted images' URLs
    names: list[str] = field(default_factory=list)  # /blend, /describe: uploaded filenames
    images: list[bytes] = field(default_factory=list)  # the bytes, in order


async def prepare(api: UserApi, job: Job, load: InputLoader | None, prepared: Prepared) -> None:
    """Load and upload the job's input images once; `JobRefused` when one is gone."""
    inputs = job.inputs()
    if not inputs or prepared.images:
        return
    if load is None:
        raise JobRefused(Failed(ErrorCode.WORKER_ERROR, "This account takes no images."))
    try:
        images = [await load(image) for image in inputs]
    except GouacheError as exc:
        raise JobRefused(Failed(ErrorCode.INVALID_PROMPT, exc.message)) from None
    if job.action is Action.IMAGINE:
        urls = await post_images(api, images)
        grouped: dict[InputRole, list[str]] = {}
        for image, url in zip(inputs, urls, strict=True):
            grouped.setdefault(image.role, []).append(url)
        prepared.urls = grouped
    else:
        prepared.names = [
            await upload(api, data, f"image{n}.png") for n, data in enumerate(images, 1)
        ]
    prepared.images = images


def body_for(
    command: CommandRef, job: Job, prepared: Prepared, mode: str, **ids: str
) -> dict[str, Any]:
    """The ``POST /interactions`` body of a new job (imagine, blend or describe)."""
    if job.action is Action.BLEND:
        return blend_body(command, prepared.names, job.params.aspect, **ids)
    if job.action is Action.DESCRIBE:
        return describe_body(command, prepared.names[0], **ids)
    prompt = image_prompt(job, prepared.urls, mode) if prepared.urls else render_prompt(job, mode)
    return imagine_body(command, prompt=prompt, **ids)
