"""The job state machine."""

from __future__ import annotations

import itertools

import pytest

from gouache.errors import IllegalTransition
from gouache.jobs import TRANSITIONS, Action, Job, JobState, check_transition

HAPPY_PATH = [
    JobState.QUEUED,
    JobState.SUBMITTED,
    JobState.RUNNING,
    JobState.GENERATED,
    JobState.STORING,
    JobState.SUCCEEDED,
]


def test_happy_path_is_legal() -> None:
    for a, b in itertools.pairwise(HAPPY_PATH):
        check_transition(a, b)


@pytest.mark.parametrize("state", [s for s in JobState if not s.terminal])
@pytest.mark.parametrize("end", [JobState.FAILED, JobState.TIMED_OUT, JobState.CANCELED])
def test_every_live_state_can_end(state: JobState, end: JobState) -> None:
    check_transition(state, end)


@pytest.mark.parametrize(
    ("a", "b"), [(a, b) for a in JobState for b in JobState if b not in TRANSITIONS[a]]
)
def test_everything_else_raises(a: JobState, b: JobState) -> None:
    with pytest.raises(IllegalTransition):
        check_transition(a, b)


def test_terminal_states_are_final_and_requeue_only_before_generation() -> None:
    assert all(not TRANSITIONS[s] for s in JobState if s.terminal)
    assert {a for a in JobState if JobState.QUEUED in TRANSITIONS[a]} == {
        JobState.SUBMITTED,
        JobState.RUNNING,
    }


def test_job_round_trips_through_json() -> None:
    job = Job(user_id=1, prompt="cat", action=Action.UPSCALE, parent_id="p", index=2)
    again = Job.model_validate_json(job.model_dump_json())
    assert again == job
    assert again.action.follow_up
    assert len(job.id) == 32
