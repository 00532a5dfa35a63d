"""Midjourney's side of the wire, as plain functions: no network, no state.

What a Midjourney account worker needs to read and write (docs/protocols.md,
"Midjourney through a user account"):

- `parse_message` turns a ``MESSAGE_CREATE``/``MESSAGE_UPDATE`` of the
  Midjourney bot into an `MjMessage`: what kind of message it is (error
  embed, "Job queued", waiting, progress, result, stopped), the ids that
  correlate it with our request (nonce, interaction id, message id, job hash),
  the percentage and the image URL.
- `ERROR_RULES` / `match_error` is the table of error embeds and what each
  means for the job and for the account.
- `find_command`, `is_stale_command` read the application-command index and
  recognise the answer Discord gives to a stale command version.
- `imagine_body`, `button_body`, `custom_id` and `render_prompt` build what
  we send; `NonceFactory` makes fresh snowflake nonces.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gouache.jobs import Action, ErrorCode, Job
from gouache.params import ParsedPrompt

#: The Midjourney bot's application id (also its bot user id).
MIDJOURNEY_APPLICATION_ID = "936929561302675456"
#: The Niji journey bot's application id.
NIJI_APPLICATION_ID = "1022952195194359889"
RED = 16711680
QUEUED_COLOR = 16239475
DISCORD_EPOCH_MS = 1_420_070_400_000
INVALID_VERSION = "INTERACTION_APPLICATION_COMMAND_INVALID_VERSION"

_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_PERCENT = re.compile(r"\((\d{1,3})%\)")
_HASH_IN_NAME = re.compile(rf"({_UUID})", re.IGNORECASE)
_HASH_IN_CUSTOM_ID = re.compile(
    rf"^MJ::[A-Za-z]+::(?:[A-Za-z0-9_]+::)?(?:\d+::)?({_UUID})", re.IGNORECASE
)
_IMAGE_NAME = re.compile(r"\.(png|jpe?g|webp|gif)$", re.IGNORECASE)
_MODE_FLAG = re.compile(r"(?:^|\s)--(fast|relax|turbo)\b", re.IGNORECASE)


class Outcome(StrEnum):
    """What an error embed means."""

    FAIL = "fail"  # this job fails; the account is fine
    WAIT = "wait"  # Midjourney queued the job on its side; keep waiting
    QUARANTINE = "quarantine"  # the account needs a person: take it out, tell the owner
    CREDITS = "credits"  # fast hours exhausted: switch to relax or pause the account


@dataclass(frozen=True, slots=True)
class ErrorRule:
    """One row of the error-embed table.

    ``title`` is matched case-insensitively as a prefix of the embed title;
    ``message`` is what the member is told; ``show_detail`` appends the
    embed's description (it names the offending parameter or link).
    """

    title: str
    outcome: Outcome
    code: ErrorCode
    message: str
    retryable: bool = False
    show_detail: bool = False

    def user_message(self, description: str | None) -> str:
        """The text shown to the member for this error."""
        if self.show_detail and description:
            detail = " ".join(description.split())[:300]
            return f"{self.message} ({detail})"
        return self.message


_ACCOUNT_TROUBLE = (
    "The Midjourney account that took this request needs attention; it will be retried."
)

#: Every error embed in docs/protocols.md ("Midjourney through a user account"), in matching order (longest titles first where they share a prefix).
ERROR_RULES: tuple[ErrorRule, ...] = (
    ErrorRule(
        "Invalid prompt",
        Outcome.FAIL,
        ErrorCode.INVALID_PROMPT,
        "Midjourney could not read this prompt.",
        show_detail=True,
    ),
    ErrorRule(
        "Invalid parameter",
        Outcome.FAIL,
        ErrorCode.INVALID_PARAMETER,
        "Midjourney rejected a parameter of this prompt.",
        show_detail=True,
    ),
    ErrorRule(
        "Banned prompt",
        Outcome.FAIL,
        ErrorCode.BANNED_PROMPT,
        "Midjourney's moderators blocked this prompt; try wording it differently.",
    ),
    ErrorRule(
        "Invalid link",
        Outcome.FAIL,
        ErrorCode.INVALID_PROMPT,
        "Midjourney could not use a link in this request.",
        show_detail=True,
    ),
    ErrorRule(
        "Request cancelled due to output filters",
        Outcome.FAIL,
        ErrorCode.OUTPUT_FILTERED,
        "Midjourney's filters blocked the images this prompt produced.",
    ),
    ErrorRule(
        "Queue full",
        Outcome.FAIL,
        ErrorCode.QUEUE_FULL,
        "Midjourney's queue for this account is full; the request will be retried.",
        retryable=True,
    ),
    ErrorRule("Job queued", Outcome.WAIT, ErrorCode.QUEUE_FULL, "Midjourney queued the request."),
    ErrorRule(
        "Action needed to continue",
        Outcome.QUARANTINE,
        ErrorCode.WORKER_UNAVAILABLE,
        _ACCOUNT_TROUBLE,
        retryable=True,
    ),
    ErrorRule(
        "Credits exhausted",
        Outcome.CREDITS,
        ErrorCode.WORKER_UNAVAILABLE,
        _ACCOUNT_TROUBLE,
        retryable=True,
    ),
    ErrorRule(
        "Pending mod message",
        Outcome.QUARANTINE,
        ErrorCode.WORKER_UNAVAILABLE,
        _ACCOUNT_TROUBLE,
        retryable=True,
    ),
    ErrorRule(
        "Blocked",
        Outcome.QUARANTINE,
        ErrorCode.WORKER_UNAVAILABLE,
        _ACCOUNT_TROUBLE,
        retryable=True,
    ),
    ErrorRule(
        "Plan Cancelled",
        Outcome.QUARANTINE,
        ErrorCode.WORKER_UNAVAILABLE,
        _ACCOUNT_TROUBLE,
        retryable=True,
    ),
    ErrorRule(
        "Subscription required",
        Outcome.QUARANTINE,
        ErrorCode.WORKER_UNAVAILABLE,
        _ACCOUNT_TROUBLE,
        retryable=True,
    ),
    ErrorRule(
        "Subscription paused",
        Outcome.QUARANTINE,
        ErrorCode.WORKER_UNAVAILABLE,
        _ACCOUNT_TROUBLE,
        retryable=True,
    ),
)

#: A red embed we have no rule for: the job fails, and the title tells the member why.
UNKNOWN_ERROR = ErrorRule(
    "", Outcome.FAIL, ErrorCode.WORKER_ERROR, "Midjourney refused the request", show_detail=False
)

#: A captcha or verification modal in answer to our interaction: the account needs a person.
CAPTCHA = ErrorRule(
    "Action needed to continue (verification)",
    Outcome.QUARANTINE,
    ErrorCode.WORKER_UNAVAILABLE,
    _ACCOUNT_TROUBLE,
    retryable=True,
)


def match_error(title: str | None, color: int | None = None) -> ErrorRule | None:
    """The rule for an embed title; a red embed without a rule gets `UNKNOWN_ERROR`, others None."""
    folded = " ".join((title or "").split()).casefold()
    if folded:
        for rule in ERROR_RULES:
            if folded.startswith(rule.title.casefold()):
                return rule
    if color == RED:
        return UNKNOWN_ERROR
    return None


class MessageKind(StrEnum):
    """What a Midjourney bot message says about a job."""

    ERROR = "error"  # an error embed (see `MjMessage.rule`)
    QUEUED = "queued"  # "Job queued": waiting in Midjourney's own queue
    WAITING = "waiting"  # "(Waiting to start)" / "(Paused)"
    PROGRESS = "progress"  # "(N%)" with a preview image
    DONE = "done"  # the result: an image, no percentage
    DESCRIBED = "described"  # a /describe result: four numbered prompts in an embed
    STOPPED = "stopped"  # "(Stopped)": Midjourney gave up on the job
    OTHER = "other"  # anything else (ignored)


@dataclass(frozen=True, slots=True)
class MjMessage:
    """One Midjourney bot message, read."""

    kind: MessageKind
    message_id: str
    channel_id: str | None = None
    author_id: str | None = None
    nonce: str | None = None
    interaction_id: str | None = None
    reference_id: str | None = None  # the message this one answers (U/V results)
    job_hash: str | None = None
    percent: int | None = None
    image_url: str | None = None
    filename: str | None = None
    rule: ErrorRule | None = None
    title: str | None = None
    description: str | None = None
    custom_ids: tuple[str, ...] = ()
    #: The message's action rows as Midjourney sent them (`gouache.actions.read_buttons`).
    components: tuple[Any, ...] = ()
    flags: int = 0
    content: str = ""

    def user_error(self) -> str:
        """The member-facing reason for an error message."""
        rule = self.rule or UNKNOWN_ERROR
        if rule is UNKNOWN_ERROR:
            return f"{rule.message}: {self.title}." if self.title else f"{rule.message}."
        return rule.user_message(self.description)


def parse_progress(content: str) -> int | None:
    """The percentage in ``(45%)`` of a progress message, or None (clamped to 0–100)."""
    found = _PERCENT.findall(content or "")
    if not found:
        return None
    return max(0, min(100, int(found[-1])))


def hash_from_filename(filename: str) -> str | None:
    """The job UUID in a result file name (``…_<uuid>.png``), if any."""
    m = _HASH_IN_NAME.search(filename or "")
    return m.group(1).lower() if m else None


def hash_from_custom_ids(custom_ids: Iterable[str]) -> str | None:
    """The job UUID the message's buttons act on (``MJ::JOB::upsample::1::<uuid>``)."""
    for cid in custom_ids:
        m = _HASH_IN_CUSTOM_ID.match(cid)
        if m:
            return m.group(1).lower()
    return None


def _custom_ids(components: Any) -> tuple[str, ...]:
    out: list[str] = []
    stack = list(components) if isinstance(components, list) else []
    while stack:
        item = stack.pop(0)
        if not isinstance(item, dict):
            continue
        cid = item.get("custom_id")
        if isinstance(cid, str):
            out.append(cid)
        inner = item.get("components")
        if isinstance(inner, list):
            stack.extend(inner)
    return tuple(out)


def _str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str | int):
        return str(value)
    return None


def _first_image(attachments: Any) -> tuple[str | None, str | None]:
    if not isinstance(attachments, list):
        return None, None
    for att in attachments:
        if not isinstance(att, dict):
            continue
        name = str(att.get("filename") or "")
        ctype = str(att.get("content_type") or "")
        url = att.get("url") or att.get("proxy_url")
        if isinstance(url, str) and (ctype.startswith("image/") or _IMAGE_NAME.search(name)):
            return url, name
    return None, None


_NUMBERED = re.compile(r"([1-4])\ufe0f?\u20e3\s*(.+?)(?=\s*[1-4]\ufe0f?\u20e3|\Z)", re.S)


def described_prompts(description: str | None) -> list[str]:
    """The numbered prompts (1️⃣ … 4️⃣) of a describe result's embed, in order."""
    found = sorted(_NUMBERED.findall(description or ""), key=lambda m: m[0])
    return [" ".join(text.split()) for _, text in found][:4]


def parse_message(data: Mapping[str, Any]) -> MjMessage:
    """Read a ``MESSAGE_CREATE``/``MESSAGE_UPDATE`` payload (missing fields are tolerated)."""
    message_id = _str(data.get("id")) or ""
    author = data.get("author")
    meta = data.get("interaction_metadata") or data.get("interaction")
    ref = data.get("message_reference")
    components = data.get("components")
    custom_ids = _custom_ids(components)
    image_url, filename = _first_image(data.get("attachments"))
    job_hash = hash_from_custom_ids(custom_ids) or (
        hash_from_filename(filename) if filename else None
    )
    common: dict[str, Any] = {
        "message_id": message_id,
        "channel_id": _str(data.get("channel_id")),
        "author_id": _str(author.get("id")) if isinstance(author, dict) else None,
        "nonce": _str(data.get("nonce")),
        "interaction_id": _str(meta.get("id")) if isinstance(meta, dict) else None,
        "reference_id": _str(ref.get("message_id")) if isinstance(ref, dict) else None,
        "job_hash": job_hash,
        "image_url": image_url,
        "filename": filename,
        "custom_ids": custom_ids,
        "components": tuple(components) if isinstance(components, list) else (),
        "flags": data.get("flags") if isinstance(data.get("flags"), int) else 0,
        "content": data.get("content") if isinstance(data.get("content"), str) else "",
    }
    embeds = data.get("embeds")
    for embed in embeds if isinstance(embeds, list) else []:
        if not isinstance(embed, dict):
            continue
        title = embed.get("title") if isinstance(embed.get("title"), str) else None
        color = embed.get("color") if isinstance(embed.get("color"), int) else None
        rule = match_error(title, color)
        if rule is None:
            text = embed.get("description")
            if isinstance(text, str) and len(described_prompts(text)) == 4:
                return MjMessage(kind=MessageKind.DESCRIBED, description=text, **common)
            continue
        description = embed.get("description")
        kind = MessageKind.QUEUED if rule.outcome is Outcome.WAIT else MessageKind.ERROR
        return MjMessage(
            kind=kind,
            rule=rule,
            title=title,
            description=description if isinstance(description, str) else None,
            **common,
        )
    content = common["content"]
    assert isinstance(content, str)
    lowered = content.casefold()
    percent = parse_progress(content)
    if percent is not None:
        return MjMessage(kind=MessageKind.PROGRESS, percent=percent, **common)
    if "(stopped)" in lowered:
        return MjMessage(kind=MessageKind.STOPPED, **common)
    if "(waiting to start)" in lowered or "(paused)" in lowered:
        return MjMessage(kind=MessageKind.WAITING, **common)
    if image_url is not None:
        return MjMessage(kind=MessageKind.DONE, **common)
    return MjMessage(kind=MessageKind.OTHER, **common)


# -- application commands -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommandRef:
    """An application command as the index lists it: what an invocation must name."""

    id: str
    version: str
    name: str
    application_id: str
    type: int = 1


def find_command(index: Any, application_id: str, name: str) -> CommandRef | None:
    """The command ``name`` of ``application_id`` in an application-command-index answer."""
    commands = index.get("application_commands") if isinstance(index, dict) else None
    if not isinstance(commands, list):
        return None
    for cmd in commands:
        if not isinstance(cmd, dict):
            continue
        if str(cmd.get("application_id")) != str(application_id) or cmd.get("name") != name:
            continue
        cid, version = _str(cmd.get("id")), _str(cmd.get("version"))
        if not cid or not version:
            continue
        ctype = cmd.get("type")
        return CommandRef(
            cid, version, name, str(application_id), ctype if isinstance(ctype, int) else 1
        )
    return None


def _error_codes(errors: Any) -> Iterable[str]:
    if isinstance(errors, dict):
        for key, value in errors.items():
            if key == "_errors" and isinstance(value, list):
                for item in value:
                    if isinstance(item, dict) and isinstance(item.get("code"), str):
                        yield item["code"]
            else:
                yield from _error_codes(value)


def is_stale_command(status: int, body: Any) -> bool:
    """Whether a refused ``POST /interactions`` means "your command id/version is out of date"."""
    if not isinstance(body, dict):
        return False
    code = body.get("code")
    if status == 404 and code == 10063:  # Unknown application command: it was re-created
        return True
    if code != 50035:
        return False
    return INVALID_VERSION in set(_error_codes(body.get("errors")))


# -- what we send ------------------------------------------------------------------------


class NonceFactory:
    """Fresh snowflake-shaped nonces, strictly increasing even when the clock stands still."""

    def __init__(self, now_ms: Callable[[], float]) -> None:
        self._now_ms = now_ms
        self._last = 0

    def __call__(self) -> str:
        candidate = (int(self._now_ms()) - DISCORD_EPOCH_MS) << 22
        if candidate <= self._last:
            candidate = self._last + 1
        self._last = candidate
        return str(candidate)


def render_prompt(job: Job, mode: str) -> str:
    """The prompt text for /imagine: the job's text, its canonical parameters, the speed mode."""
    text = ParsedPrompt(text=job.prompt, params=job.params).render()
    if not _MODE_FLAG.search(text):
        text = f"{text} --{mode}"
    return text


def custom_id(action: Action, index: int | None, job_hash: str) -> str:
    """The button custom id for a follow-up of the grid ``job_hash``."""
    if action is Action.UPSCALE:
        return f"MJ::JOB::upsample::{_index(index)}::{job_hash}"
    if action is Action.VARIATION:
        return f"MJ::JOB::variation::{_index(index)}::{job_hash}"
    if action is Action.REROLL:
        return f"MJ::JOB::reroll::0::{job_hash}::SOLO"
    raise ValueError(f"{action} is not a follow-up")


def _index(index: int | None) -> int:
    if index is None or not 1 <= index <= 4:
        raise ValueError(f"image index must be 1-4, not {index!r}")
    return index


def imagine_body(  # noqa: PLR0913
    command: CommandRef,
    *,
    prompt: str,
    guild_id: str,
    channel_id: str,
    session_id: str,
    nonce: str,
) -> dict[str, Any]:
    """The ``POST /interactions`` body of an /imagine (type 2, application command)."""
    return {
        "type": 2,
        "application_id": command.application_id,
        "guild_id": guild_id,
        "channel_id": channel_id,
        "session_id": session_id,
        "nonce": nonce,
        "data": {
            "version": command.version,
            "id": command.id,
            "name": command.name,
            "type": command.type,
            "options": [{"type": 3, "name": "prompt", "value": prompt}],
        },
    }


def button_body(  # noqa: PLR0913
    *,
    application_id: str,
    guild_id: str,
    channel_id: str,
    message_id: str,
    session_id: str,
    nonce: str,
    custom_id: str,
    message_flags: int = 0,
) -> dict[str, Any]:
    """The ``POST /interactions`` body of a button press (type 3, message component)."""
    return {
        "type": 3,
        "application_id": application_id,
        "guild_id": guild_id,
        "channel_id": channel_id,
        "message_id": message_id,
        "session_id": session_id,
        "nonce": nonce,
        "message_flags": message_flags,
        "data": {"component_type": 2, "custom_id": custom_id},
    }
