"""The gateway's pure rules: close-code policy, backoff, identify pacing, send budget, zlib-stream."""

from __future__ import annotations

import json
import random
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gouache.pool.gateway_rules import (
    Backoff,
    IdentifyPacer,
    Recovery,
    SendBudget,
    ZlibStream,
    close_action,
)

R, ID, D = Recovery.RESUME, Recovery.IDENTIFY, Recovery.DISABLE

# docs/protocols.md ("Discord gateway"): resume on 4000, 4001, 4002, 4005, 4008; identify on 4003, 4007, 4009;
# disable on 4004, 4010-4014. 4006 is not in Discord's table any more ("session no longer valid").
EXPECTED = {
    4000: R,
    4001: R,
    4002: R,
    4003: ID,
    4004: D,
    4005: R,
    4006: ID,
    4007: ID,
    4008: R,
    4009: ID,
    4010: D,
    4011: D,
    4012: D,
    4013: D,
    4014: D,
}


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.mark.parametrize(("code", "kind"), sorted(EXPECTED.items()))
def test_close_code_table(code: int, kind: Recovery) -> None:
    action = close_action(code)
    assert action.kind is kind
    assert str(code) in action.reason


def test_disable_reasons_say_what_to_fix() -> None:
    assert "invalid token" in close_action(4004).reason
    assert "shard" in close_action(4010).reason
    assert "sharding required" in close_action(4011).reason
    assert "API version" in close_action(4012).reason
    assert "invalid intents" in close_action(4013).reason
    assert "disallowed intents" in close_action(4014).reason


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1006, 1011, 1012, 1015, 1999])
def test_any_1xxx_resumes(code: int) -> None:
    assert close_action(code).kind is R


def test_a_drop_without_close_frame_resumes() -> None:
    action = close_action(None)
    assert action.kind is R and "without a close frame" in action.reason


@given(st.integers(min_value=0, max_value=70000).filter(lambda c: c not in EXPECTED))
def test_unknown_codes_resume(code: int) -> None:
    # The server answers a RESUME of a dead session with op 9 false, so guessing costs one trip.
    action = close_action(code)
    assert action.kind is R
    assert str(code) in action.reason


@given(
    seed=st.integers(),
    base=st.floats(min_value=0.001, max_value=5.0),
    cap_factor=st.floats(min_value=1.0, max_value=100.0),
    n=st.integers(min_value=1, max_value=80),
)
def test_backoff_full_jitter_bounds(seed: int, base: float, cap_factor: float, n: int) -> None:
    cap = base * cap_factor
    backoff = Backoff(base=base, cap=cap, rng=random.Random(seed))
    for attempt in range(n):
        delay = backoff.next_delay()
        assert 0.0 <= delay <= min(cap, base * 2**attempt)
    assert backoff.attempts == n


def test_backoff_ceiling_grows_exponentially_to_the_cap_and_resets() -> None:
    backoff = Backoff(base=0.5, cap=30.0, rng=random.Random(1))
    assert [backoff.ceiling(k) for k in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff.ceiling(10_000) == 30.0  # no overflow after a long outage
    draws = [backoff.next_delay() for _ in range(10)]
    # Full jitter: late draws spread over the whole [0, cap] range, not clustered at the top.
    late = [Backoff(base=0.5, cap=30.0, rng=random.Random(s)) for s in range(200)]
    samples = []
    for b in late:
        b.attempts = 9
        samples.append(b.next_delay())
    assert min(samples) < 5.0 and max(samples) > 25.0
    assert max(draws[:2]) <= 1.0
    backoff.reset()
    assert backoff.attempts == 0
    assert backoff.next_delay() <= 0.5


@given(seed=st.integers(), n=st.integers(min_value=1, max_value=40))
def test_backoff_partial_jitter_keeps_the_floor(seed: int, n: int) -> None:
    """``jitter=0.5`` (ComfyUI's reconnects): each delay is within [50 %, 100 %] of its ceiling."""
    backoff = Backoff(base=0.5, cap=30.0, jitter=0.5, rng=random.Random(seed))
    for attempt in range(n):
        ceiling = min(30.0, 0.5 * 2**attempt)
        assert ceiling / 2 <= backoff.next_delay() <= ceiling


def test_backoff_without_jitter_is_the_ceiling() -> None:
    backoff = Backoff(base=0.5, cap=4.0, jitter=0.0)
    assert [backoff.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base": 0},
        {"base": 2, "cap": 1},
        {"factor": 0.5},
        {"base": -1},
        {"jitter": -0.1},
        {"jitter": 1.5},
    ],
)
def test_backoff_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(**kwargs)


def test_identify_pacer_allows_max_concurrency_per_window() -> None:
    clock = FakeClock()
    pacer = IdentifyPacer(max_concurrency=2, window=5.0, clock=clock)
    assert pacer.delay() == 0
    pacer.record()
    clock.t += 1.0
    assert pacer.delay() == 0
    pacer.record()
    assert pacer.delay() == pytest.approx(4.0)  # the first leaves the window at t0 + 5
    clock.t += 4.0
    assert pacer.delay() == 0
    pacer.record()
    assert pacer.delay() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="identify"):
        IdentifyPacer(max_concurrency=0)


async def test_identify_pacer_acquire_waits_for_the_window() -> None:
    import time

    pacer = IdentifyPacer(max_concurrency=2, window=0.2)
    t0 = time.monotonic()
    for _ in range(3):
        await pacer.acquire()
    assert time.monotonic() - t0 >= 0.19


def test_send_budget_reserves_room_for_heartbeats() -> None:
    clock = FakeClock()
    budget = SendBudget(limit=120, window=60.0, reserved=5, clock=clock)
    for i in range(115):
        assert budget.delay() == 0, i
        budget.record()
        clock.t += 0.1
    assert budget.available() == 0
    assert budget.available(priority=True) == 5
    # Ordinary sends wait until the first frame (sent at t0) leaves the 60 s window.
    assert budget.delay() == pytest.approx(60.0 - 11.5)
    for _ in range(5):
        assert budget.delay(priority=True) == 0
        budget.record()
    assert budget.delay(priority=True) == pytest.approx(60.0 - 11.5)
    # The server's rule holds in every window: never more than 120 in 60 s.
    clock.t = 1000.0 + 60.0
    assert budget.available(priority=True) == 1
    clock.t = 1000.0 + 60.0 + 11.45  # the 115 ordinary frames left, the 5 priority ones not
    assert budget.available(priority=True) == 115
    assert budget.available() == 110


@given(st.lists(st.floats(min_value=0.0, max_value=3.0), min_size=1, max_size=400))
def test_send_budget_never_exceeds_the_limit_in_any_window(gaps: list[float]) -> None:
    clock = FakeClock()
    budget = SendBudget(limit=10, window=5.0, reserved=2, clock=clock)
    sent: list[float] = []
    for i, gap in enumerate(gaps):
        clock.t += gap
        if budget.delay(priority=i % 3 == 0) == 0:
            budget.record()
            sent.append(clock.t)
    for t in sent:
        assert sum(1 for u in sent if t - 5.0 < u <= t) <= 10


@pytest.mark.parametrize("kwargs", [{"limit": 0}, {"reserved": 120}, {"window": 0}])
def test_send_budget_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="send budget"):
        SendBudget(**kwargs)  # type: ignore[arg-type]


@given(
    messages=st.lists(
        st.dictionaries(st.text(max_size=8), st.text(max_size=300), max_size=5),
        min_size=1,
        max_size=6,
    ),
    cuts=st.lists(st.integers(min_value=1, max_value=40), max_size=30),
)
def test_zlib_stream_reassembles_split_frames(
    messages: list[dict[str, str]], cuts: list[int]
) -> None:
    compressor = zlib.compressobj()
    stream = ZlibStream()
    cuts_iter = iter(cuts)
    for message in messages:
        blob = compressor.compress(json.dumps(message).encode()) + compressor.flush(
            zlib.Z_SYNC_FLUSH
        )
        out: list[bytes] = []
        pos = 0
        while pos < len(blob):
            step = next(cuts_iter, len(blob))
            chunk = blob[pos : pos + step]
            pos += len(chunk)
            result = stream.feed(chunk)
            if result is not None:
                out.append(result)
        # One message, decoded once, only when its last frame (ending 00 00 ff ff) arrived.
        assert [json.loads(o) for o in out] == [message]


def test_zlib_stream_rejects_garbage() -> None:
    stream = ZlibStream()
    with pytest.raises(zlib.error):
        stream.feed(b"not zlib at all\x00\x00\xff\xff")
