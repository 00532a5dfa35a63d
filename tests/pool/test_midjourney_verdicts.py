"""The Midjourney verdicts, row by row: Discord's answers to an interaction and error embeds."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gouache.errors import ErrorCode, GouacheError
from gouache.pool.midjourney_verdicts import (
    MAX_RETRY_AFTER_S,
    OUT_OF_FAST_HOURS,
    AccountAct,
    Act,
    JobRefused,
    embed_verdict,
    interaction_verdict,
)
from gouache.pool.midjourney_wire import (
    CAPTCHA,
    ERROR_RULES,
    RED,
    MessageKind,
    MjMessage,
    Outcome,
    match_error,
)

STALE = {
    "code": 50035,
    "message": "Invalid Form Body",
    "errors": {"data": {"_errors": [{"code": "INTERACTION_APPLICATION_COMMAND_INVALID_VERSION"}]}},
}
UNKNOWN_COMMAND = {"code": 10063, "message": "Unknown application command"}
FORM_BODY = {"code": 50035, "message": "Invalid Form Body", "errors": {"data": {}}}
UNKNOWN_MESSAGE = {"code": 10008, "message": "Unknown Message"}
MISSING_ACCESS = {"code": 50001, "message": "Missing Access"}

A, RF, RT, DIS, REF, ERR = Act.ACCEPTED, Act.REFRESH, Act.RETRY, Act.DISABLE, Act.REFUSE, Act.ERROR
PG, IP = ErrorCode.PARENT_UNAVAILABLE, ErrorCode.INVALID_PROMPT

# status, body, retry_after, follow_up, can_refresh → act, the failed code (REFUSE), a text in
# reason or message, the delay (RETRY).
ANSWERS: list[tuple[int, Any, float | None, bool, bool, Act, ErrorCode | None, str, float]] = [
    (204, None, None, False, True, A, None, "", 0.0),
    (200, {}, None, True, False, A, None, "", 0.0),
    # A stale command: refreshed once on /imagine, then an error (never a loop).
    (400, STALE, None, False, True, RF, None, "", 0.0),
    (400, STALE, None, False, False, ERR, None, "changed twice", 0.0),
    (404, UNKNOWN_COMMAND, None, False, True, RF, None, "", 0.0),
    (404, UNKNOWN_COMMAND, None, True, False, ERR, None, "still stale", 0.0),
    # 429: a short wait is waited out; a missing retry_after waits 1 s; a long one is an error.
    (429, {"retry_after": 0.5}, 0.5, False, True, RT, None, "", 0.5),
    (429, None, None, False, True, RT, None, "", 1.0),
    (429, None, MAX_RETRY_AFTER_S, True, False, RT, None, "", MAX_RETRY_AFTER_S),
    (429, None, MAX_RETRY_AFTER_S + 0.1, False, True, ERR, None, "429", 0.0),
    # The account cannot act.
    (401, {"code": 0, "message": "401: Unauthorized"}, None, False, True, DIS, None, "401", 0.0),
    (401, None, None, True, False, DIS, None, "was rejected", 0.0),
    (403, MISSING_ACCESS, None, False, True, DIS, None, "channel 42 (403, code 50001)", 0.0),
    (403, None, None, True, False, DIS, None, "has no access", 0.0),
    # The job's own fault: a follow-up whose parent is gone, a malformed /imagine.
    (404, UNKNOWN_MESSAGE, None, True, False, REF, PG, "", 0.0),
    (400, UNKNOWN_MESSAGE, None, True, False, REF, PG, "", 0.0),
    (400, FORM_BODY, None, True, False, REF, PG, "", 0.0),
    (404, FORM_BODY, None, True, False, REF, PG, "", 0.0),
    (400, FORM_BODY, None, False, True, REF, IP, "", 0.0),
    # Unknown Message on /imagine, or a 404 Invalid Form Body: not the job's fault we know of.
    (404, UNKNOWN_MESSAGE, None, False, True, ERR, None, "404", 0.0),
    (404, FORM_BODY, None, False, True, ERR, None, "404", 0.0),
    # Anything else is raised to the dispatcher (it may retry on another worker).
    (500, None, None, False, True, ERR, None, "500", 0.0),
    (502, "<html>bad gateway</html>", None, True, False, ERR, None, "502", 0.0),
    (
        400,
        {"code": 50006, "message": "Cannot send an empty message"},
        None,
        False,
        True,
        ERR,
        None,
        "code 50006",
        0.0,
    ),
]


@pytest.mark.parametrize(
    ("status", "body", "retry_after", "follow_up", "can_refresh", "act", "code", "text", "delay"),
    ANSWERS,
)
def test_interaction_answer_table(
    status: int,
    body: Any,
    retry_after: float | None,
    follow_up: bool,
    can_refresh: bool,
    act: Act,
    code: ErrorCode | None,
    text: str,
    delay: float,
) -> None:
    verdict = interaction_verdict(
        status, body, retry_after, follow_up=follow_up, can_refresh=can_refresh, channel="42"
    )
    assert verdict.act is act
    assert verdict.delay == delay
    if act is Act.REFUSE:
        assert verdict.failed is not None and verdict.failed.code is code
        assert not verdict.failed.retryable
    else:
        assert verdict.failed is None
    if text:
        assert text in verdict.reason + " | " + verdict.message
    if act in (Act.DISABLE, Act.ERROR):
        assert verdict.reason and verdict.message
        assert "{" not in verdict.reason + verdict.message  # every field was filled in


@given(
    st.integers(min_value=100, max_value=599).filter(lambda s: s not in (200, 204)),
    st.one_of(st.none(), st.integers(min_value=0, max_value=200_000)),
    st.booleans(),
    st.booleans(),
)
def test_every_refusal_has_a_verdict_with_words(
    status: int, code: int | None, follow_up: bool, can_refresh: bool
) -> None:
    body = {"code": code, "message": "x"} if code is not None else None
    verdict = interaction_verdict(status, body, follow_up=follow_up, can_refresh=can_refresh)
    assert verdict.act is not Act.ACCEPTED
    if verdict.act in (Act.DISABLE, Act.ERROR):
        assert str(status) in verdict.reason
    if verdict.act is Act.REFUSE:
        assert verdict.failed is not None and verdict.failed.message


def test_job_refused_is_a_gouache_error_carrying_the_failure() -> None:
    verdict = interaction_verdict(400, FORM_BODY, follow_up=True)
    assert verdict.failed is not None
    refused = JobRefused(verdict.failed)
    assert isinstance(refused, GouacheError)
    assert refused.code is ErrorCode.PARENT_UNAVAILABLE and refused.failed is verdict.failed


# -- error embeds --------------------------------------------------------------------------


def embed(title: str, description: str = "", color: int = RED) -> MjMessage:
    return MjMessage(
        kind=MessageKind.ERROR,
        message_id="1",
        rule=match_error(title, color),
        title=title,
        description=description,
    )


Q, C, N = AccountAct.QUARANTINE, AccountAct.CREDITS, AccountAct.NONE
W = ErrorCode

# title, follow_up → account act, failed code, retryable, a text in the member's message.
EMBEDS: list[tuple[str, bool, AccountAct, ErrorCode, bool, str]] = [
    ("Invalid prompt", False, N, W.INVALID_PROMPT, False, "could not read"),
    ("Invalid parameter", False, N, W.INVALID_PARAMETER, False, "--ar 0:1"),
    ("Banned prompt detected", False, N, W.BANNED_PROMPT, False, "moderators"),
    ("Invalid link", False, N, W.INVALID_PROMPT, False, "link"),
    ("Invalid link", True, N, W.PARENT_UNAVAILABLE, False, "link"),
    ("Request cancelled due to output filters", False, N, W.OUTPUT_FILTERED, False, "filters"),
    ("Queue full", True, N, W.QUEUE_FULL, True, "queue"),
    ("Action needed to continue", False, Q, W.WORKER_UNAVAILABLE, True, "needs attention"),
    ("Pending mod message", False, Q, W.WORKER_UNAVAILABLE, True, "needs attention"),
    ("Blocked", False, Q, W.WORKER_UNAVAILABLE, True, "needs attention"),
    ("Plan Cancelled", False, Q, W.WORKER_UNAVAILABLE, True, "needs attention"),
    ("Subscription required", False, Q, W.WORKER_UNAVAILABLE, True, "needs attention"),
    ("Subscription paused", True, Q, W.WORKER_UNAVAILABLE, True, "needs attention"),
    ("Credits exhausted", False, C, W.WORKER_UNAVAILABLE, True, "fast hours"),
    ("Something new and red", False, N, W.WORKER_ERROR, False, "Something new and red"),
]


@pytest.mark.parametrize(("title", "follow_up", "account", "code", "retryable", "text"), EMBEDS)
def test_error_embed_table(
    title: str, follow_up: bool, account: AccountAct, code: ErrorCode, retryable: bool, text: str
) -> None:
    msg = embed(title, "The value  --ar 0:1\nis not allowed")
    verdict = embed_verdict(msg, follow_up=follow_up)
    assert verdict.account is account
    assert verdict.failed.code is code
    assert verdict.failed.retryable is retryable
    assert text in verdict.failed.message
    # The owner hears the title and the description on one line.
    assert verdict.detail == f"{title}: The value --ar 0:1 is not allowed"


def test_every_error_rule_is_in_the_embed_table() -> None:
    titled = {row[0].casefold() for row in EMBEDS}
    failing = [r for r in ERROR_RULES if r.outcome is not Outcome.WAIT]
    assert all(any(t.startswith(r.title.casefold()) for t in titled) for r in failing)


def test_credits_fail_the_job_as_out_of_fast_hours_when_not_resubmitted() -> None:
    assert embed_verdict(embed("Credits exhausted"), follow_up=False).failed is OUT_OF_FAST_HOURS


def test_captcha_rule_quarantines() -> None:
    msg = MjMessage(kind=MessageKind.ERROR, message_id="1", rule=CAPTCHA, title=CAPTCHA.title)
    verdict = embed_verdict(msg, follow_up=False)
    assert verdict.account is AccountAct.QUARANTINE and verdict.failed.retryable
    assert verdict.detail == CAPTCHA.title


def test_a_message_without_a_rule_is_refused() -> None:
    with pytest.raises(ValueError, match="rule"):
        embed_verdict(MjMessage(kind=MessageKind.OTHER, message_id="1"), follow_up=False)
