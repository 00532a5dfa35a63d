"""What a Midjourney account worker does about an answer, as pure tables: no network, no state.

Two verdicts decide everything the worker does when Discord or Midjourney says no:

- `interaction_verdict` judges the HTTP answer to ``POST /interactions``:
  accepted (200/204); a stale command version (refresh the command index once
  and send again); a short 429 (wait ``retry_after`` and send again); 401/403
  (the account cannot act: disable it and tell the owner); an answer that
  belongs to the job (a follow-up whose parent message is gone: 10008 Unknown
  Message or 50035 Invalid Form Body; a malformed ``/imagine``: 50035); and
  anything else (an error the dispatcher may retry on another worker). The
  rows are `ANSWER_RULES`, in order.
- `embed_verdict` judges an error embed of the Midjourney bot (its row of
  `midjourney_wire.ERROR_RULES`): how the job fails, and whether the account
  must be quarantined or is out of fast hours.

`gouache.pool.midjourney` only carries the verdicts out.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gouache.errors import ErrorCode, GouacheError
from gouache.pool.base import Failed
from gouache.pool.midjourney_wire import MjMessage, Outcome, is_stale_command

__all__ = [
    "ANSWER_RULES",
    "CANCELLED",
    "INTERACTION_FAILED",
    "MALFORMED",
    "MAX_RETRY_AFTER_S",
    "OUT_OF_FAST_HOURS",
    "PARENT_GONE",
    "STOPPED",
    "WENT_OFFLINE",
    "AccountAct",
    "Act",
    "AnswerRule",
    "EmbedVerdict",
    "JobRefused",
    "Verdict",
    "embed_verdict",
    "interaction_verdict",
]

#: A 429 asking us to wait longer than this is not waited out inside a submission.
MAX_RETRY_AFTER_S = 10.0
_PARENT_GONE_TEXT = "That image can no longer be upscaled or varied."

#: How a job ends when something other than an error embed ends it.
PARENT_GONE = Failed(ErrorCode.PARENT_UNAVAILABLE, _PARENT_GONE_TEXT)
MALFORMED = Failed(ErrorCode.INVALID_PROMPT, "Discord refused this prompt as malformed.")
STOPPED = Failed(ErrorCode.WORKER_ERROR, "Midjourney stopped this job.", retryable=True)
INTERACTION_FAILED = Failed(ErrorCode.WORKER_ERROR, "Midjourney did not answer.", retryable=True)
CANCELLED = Failed(ErrorCode.CANCELED, "Cancelled.")
WENT_OFFLINE = Failed(
    ErrorCode.WORKER_UNAVAILABLE,
    "The Midjourney account went offline; the request will be retried.",
    retryable=True,
)
OUT_OF_FAST_HOURS = Failed(
    ErrorCode.WORKER_UNAVAILABLE,
    "The Midjourney account is out of fast hours; the request will be retried.",
    retryable=True,
)


class JobRefused(GouacheError):
    """A submission refused for a reason that belongs to the job, not the account."""

    def __init__(self, failed: Failed) -> None:
        super().__init__(failed.message, code=failed.code)
        self.failed = failed


# -- the answer to POST /interactions ------------------------------------------------------


class Act(StrEnum):
    """What the worker does about the answer to an interaction."""

    ACCEPTED = "accepted"  # the interaction is in: follow the job
    REFRESH = "refresh"  # the command version is stale: refresh it once, send again
    RETRY = "retry"  # a short 429: wait ``delay`` seconds, send again
    DISABLE = "disable"  # the account cannot act: disable it (``reason``), tell the owner
    REFUSE = "refuse"  # the job fails with ``failed``; the account is fine
    ERROR = "error"  # raise ``message`` (the dispatcher may retry elsewhere); log ``reason``


@dataclass(frozen=True, slots=True)
class Verdict:
    """The verdict on one answer.

    ``reason`` is for the owner (the disable reason, the worker's last error);
    ``message`` is what the raised error says (DISABLE: the account "was
    rejected" / "has no access"; ERROR: the whole sentence).
    """

    act: Act
    failed: Failed | None = None
    delay: float = 0.0
    reason: str = ""
    message: str = ""


@dataclass(frozen=True, slots=True)
class AnswerRule:
    """One row of the answer table: which answers it matches and the verdict.

    ``codes`` None matches any Discord error code; ``follow_up`` None matches
    both ``/imagine`` and button presses. ``reason`` and ``message`` may name
    ``{status}``, ``{code}`` and ``{channel}``.
    """

    statuses: frozenset[int]
    codes: frozenset[int] | None
    follow_up: bool | None
    verdict: Verdict

    def matches(self, status: int, code: int | None, follow_up: bool) -> bool:
        """Whether this row covers the answer."""
        return (
            status in self.statuses
            and (self.codes is None or code in self.codes)
            and (self.follow_up is None or self.follow_up is follow_up)
        )


#: The answers that are neither accepted, stale nor a short 429, in matching order.
ANSWER_RULES: tuple[AnswerRule, ...] = (
    AnswerRule(
        frozenset({401}),
        None,
        None,
        Verdict(
            Act.DISABLE,
            reason="Discord rejected the account's token (401 Unauthorized).",
            message="was rejected",
        ),
    ),
    AnswerRule(
        frozenset({403}),
        None,
        None,
        Verdict(
            Act.DISABLE,
            reason="No access to the Midjourney bot in channel {channel} (403, code {code}).",
            message="has no access",
        ),
    ),
    # Unknown Message / Invalid Form Body on a button: the parent message is gone.
    AnswerRule(
        frozenset({400, 404}), frozenset({10008, 50035}), True, Verdict(Act.REFUSE, PARENT_GONE)
    ),
    AnswerRule(frozenset({400}), frozenset({50035}), None, Verdict(Act.REFUSE, MALFORMED)),
)

_ACCEPTED = Verdict(Act.ACCEPTED)
_REFRESH = Verdict(Act.REFRESH)
_STILL_STALE = Verdict(
    Act.ERROR,
    reason="the /imagine command is still stale after a refresh",
    message="Midjourney's command changed twice; try again.",
)
_UNEXPECTED = Verdict(
    Act.ERROR,
    reason="interaction answered {status} (code {code})",
    message="Discord answered {status} to the Midjourney interaction.",
)


def _error_code(body: Any) -> int | None:
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def interaction_verdict(  # noqa: PLR0913
    status: int,
    body: Any = None,
    retry_after: float | None = None,
    *,
    follow_up: bool = False,
    can_refresh: bool = False,
    channel: str = "",
) -> Verdict:
    """The verdict on Discord's answer to ``POST /interactions`` (see the module docstring).

    ``can_refresh`` says a stale command may still be refreshed (an
    ``/imagine`` whose command was not refreshed yet in this submission).
    """
    if status in (200, 204):
        return _ACCEPTED
    if is_stale_command(status, body):
        return _REFRESH if can_refresh else _STILL_STALE
    if status == 429 and (retry_after or 0.0) <= MAX_RETRY_AFTER_S:
        return Verdict(Act.RETRY, delay=retry_after or 1.0)
    code = _error_code(body)
    verdict = next(
        (r.verdict for r in ANSWER_RULES if r.matches(status, code, follow_up)), _UNEXPECTED
    )

    def fill(text: str) -> str:
        return text.format(status=status, code=code, channel=channel)

    return Verdict(
        verdict.act, verdict.failed, verdict.delay, fill(verdict.reason), fill(verdict.message)
    )


# -- error embeds --------------------------------------------------------------------------


class AccountAct(StrEnum):
    """What an error embed means for the account (besides the job)."""

    NONE = "none"  # the account is fine
    QUARANTINE = "quarantine"  # a person must look: take it out, tell the owner (``detail``)
    CREDITS = "credits"  # fast hours exhausted: switch to relax and resubmit, or pause


@dataclass(frozen=True, slots=True)
class EmbedVerdict:
    """The verdict on an error embed: the account's part and how the job fails.

    With CREDITS, ``failed`` is how the job ends when it is not resubmitted in
    relax mode. ``detail`` (title: description) is for the owner.
    """

    account: AccountAct
    failed: Failed
    detail: str


def embed_verdict(msg: MjMessage, *, follow_up: bool) -> EmbedVerdict:
    """The verdict on an error embed ``msg`` (its ``rule`` is set) for a job or a follow-up."""
    rule = msg.rule
    if rule is None:
        raise ValueError("embed_verdict needs an error message (its rule is None)")
    detail = ": ".join(
        part for part in (msg.title, " ".join((msg.description or "").split())) if part
    )
    if rule.outcome is Outcome.CREDITS:
        return EmbedVerdict(AccountAct.CREDITS, OUT_OF_FAST_HOURS, detail)
    account = AccountAct.QUARANTINE if rule.outcome is Outcome.QUARANTINE else AccountAct.NONE
    code = rule.code
    if follow_up and rule.title == "Invalid link":
        code = ErrorCode.PARENT_UNAVAILABLE  # the link is our parent's: it is gone
    return EmbedVerdict(account, Failed(code, msg.user_error(), rule.retryable), detail)
