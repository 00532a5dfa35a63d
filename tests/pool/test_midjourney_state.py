"""Correlation and account limits of a Midjourney account: pure bookkeeping, a manual clock."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gouache.pool.midjourney_state import AccountLimits, Correlator
from gouache.pool.midjourney_wire import MessageKind, MjMessage

HASH_A = "0f8fad5b-d9cb-469f-a165-70867728950e"
HASH_B = "7c9e6679-7425-40de-944b-e07fc1f90ae7"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 6, 1, 23, 59, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def msg(kind: MessageKind = MessageKind.WAITING, **fields: object) -> MjMessage:
    return MjMessage(kind=kind, message_id=str(fields.pop("message_id", "")), **fields)  # type: ignore[arg-type]


# -- Correlator ----------------------------------------------------------------------------


def test_a_job_is_followed_from_nonce_to_interaction_to_message_to_hash() -> None:
    c = Correlator()
    c.add("a")
    c.add("b")
    c.set_nonce("a", "100")
    c.set_nonce("b", "200")
    assert c.interaction("200", "9002") == "b"
    assert c.interaction("999", "9999") is None  # someone else's
    # First message: the nonce. Later ones: the interaction id, then the message id.
    assert c.match(msg(message_id="m1", nonce="100", interaction_id="9001")) == "a"
    assert c.match(msg(message_id="m2", interaction_id="9002")) == "b"
    assert c.match(msg(MessageKind.PROGRESS, message_id="m1", job_hash=HASH_A)) == "a"
    assert c.job_hash("a") == HASH_A
    # A result naming only the hash still finds its job.
    assert c.match(msg(MessageKind.DONE, message_id="m9", job_hash=HASH_A)) == "a"
    assert c.match(msg(message_id="m7", interaction_id="4242")) is None
    assert c.match(msg(message_id="m8")) is None


def test_identical_content_is_never_a_match() -> None:
    c = Correlator()
    c.add("a")
    c.set_nonce("a", "1")
    assert c.match(msg(message_id="x", nonce="2")) is None


def test_a_new_nonce_replaces_the_old_one() -> None:
    c = Correlator()
    c.add("a")
    c.set_nonce("a", "1")
    c.set_nonce("a", "2")
    assert c.by_nonce("1") is None and c.by_nonce("2") == "a"


def test_error_messages_do_not_claim_message_ids() -> None:
    c = Correlator()
    c.add("a")
    c.set_nonce("a", "1")
    assert c.match(msg(MessageKind.ERROR, message_id="e1", nonce="1")) == "a"
    c.forget("a")
    c.add("b")
    c.set_nonce("b", "2")
    assert c.match(msg(message_id="e1")) is None


def test_forget_drops_every_key() -> None:
    c = Correlator()
    c.add("a")
    c.set_nonce("a", "1")
    c.interaction("1", "i")
    c.match(msg(MessageKind.PROGRESS, message_id="m", job_hash=HASH_A))
    c.match(msg(MessageKind.PROGRESS, message_id="m", nonce="1"))
    assert "a" in c and len(c) == 1
    c.forget("a")
    assert len(c) == 0 and "a" not in c
    for probe in (
        msg(nonce="1"),
        msg(interaction_id="i"),
        msg(message_id="m"),
        msg(MessageKind.DONE, job_hash=HASH_A),
    ):
        assert c.match(probe) is None
    c.forget("a")  # idempotent


def test_a_reference_to_the_parent_is_trusted_only_when_unambiguous() -> None:
    c = Correlator()
    c.add("u1", parent_message_id="p")
    assert c.match(msg(MessageKind.DONE, message_id="r1", reference_id="p")) == "u1"
    c.forget("u1")
    c.add("u2", parent_message_id="p")
    c.add("v1", parent_message_id="p")
    assert c.match(msg(MessageKind.DONE, message_id="r2", reference_id="p")) is None
    # With an interaction id the reference is not needed (and not used).
    assert (
        c.match(msg(MessageKind.DONE, message_id="r3", reference_id="p", interaction_id="z"))
        is None
    )


# -- AccountLimits -------------------------------------------------------------------------


def test_daily_cap_counts_submissions_and_resets_at_midnight() -> None:
    clock = Clock()
    limits = AccountLimits(pause_s=0, daily_cap=2, clock=clock)
    limits.note_submit()
    undo = limits.note_submit()
    assert limits.capped and limits.capacity(3, 0, 0) == 0
    assert limits.next_change() == pytest.approx(60)
    limits.undo(undo)  # Discord refused it: it does not count
    assert not limits.capped and limits.submitted_today == 1
    limits.note_submit()
    limits.note_done()
    clock.advance(61)  # past midnight
    assert not limits.capped and limits.submitted_today == 0 and limits.done_today == 0
    assert limits.capacity(3, 0, 0) == 3
    assert limits.next_change() is None


def test_undo_after_midnight_does_not_touch_the_new_day() -> None:
    clock = Clock()
    limits = AccountLimits(pause_s=0, daily_cap=5, clock=clock)
    undo = limits.note_submit()
    clock.advance(120)
    limits.note_submit()
    limits.undo(undo)
    assert limits.submitted_today == 1


def test_pause_between_submissions() -> None:
    clock = Clock()
    limits = AccountLimits(pause_s=10, daily_cap=None, clock=clock)
    assert limits.pause_remaining() == 0 and limits.capacity(3, 0, 0) == 3
    limits.note_submit()
    assert limits.pause_remaining() == 10
    assert limits.capacity(3, 1, 0) == 1  # no new slot while pausing
    clock.advance(4)
    assert limits.next_change() == pytest.approx(6)
    clock.advance(6)
    assert limits.pause_remaining() == 0 and limits.capacity(3, 1, 0) == 3
    assert limits.capacity(3, 1, 2) == 1  # cancelled leftovers still take slots


def test_credits_pause_ends_by_itself_or_when_lifted() -> None:
    clock = Clock()
    limits = AccountLimits(pause_s=0, daily_cap=None, clock=clock)
    limits.pause_for(30)
    assert limits.paused_until == clock.now + timedelta(seconds=30)
    assert limits.next_change() == pytest.approx(30)
    clock.advance(30)
    assert limits.paused_until is None
    limits.pause_for(30)
    limits.lift_pause()
    assert limits.paused_until is None


def test_nonsense_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="pause_s"):
        AccountLimits(pause_s=-1, daily_cap=None, clock=Clock())
    with pytest.raises(ValueError, match="daily_cap"):
        AccountLimits(pause_s=0, daily_cap=0, clock=Clock())


@given(
    cap=st.integers(1, 5),
    steps=st.lists(st.tuples(st.booleans(), st.floats(0, 4000)), max_size=60),
)
def test_a_caller_that_respects_capacity_keeps_the_cap_and_the_pause(
    cap: int, steps: list[tuple[bool, float]]
) -> None:
    clock = Clock()
    limits = AccountLimits(pause_s=5, daily_cap=cap, clock=clock)
    per_day: dict[object, int] = {}
    times: list[datetime] = []
    for submit, wait in steps:
        if submit and limits.capacity(3, 0, 0) > 0:
            limits.note_submit()
            day = clock.now.date()
            per_day[day] = per_day.get(day, 0) + 1
            times.append(clock.now)
        clock.advance(wait)
    assert all(n <= cap for n in per_day.values())
    assert all((b - a).total_seconds() >= 5 for a, b in itertools.pairwise(times))
