"""Properties of the weighted-fair scheduler."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gouache.queue.fair import Entry, FairQueue, step

ops = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(0, 5)),
        st.tuples(st.just("pop"), st.integers(1, 4)),
    ),
    max_size=120,
)


@given(ops)
def test_per_user_order_is_fifo(script: list[tuple[str, int]]) -> None:
    q = FairQueue()
    pushed: dict[int, list[str]] = {}
    popped: dict[int, list[str]] = {}
    n = 0
    for op, arg in script:
        if op == "push":
            n += 1
            q.push(f"j{n}", arg, weight=1 + arg % 3)
            pushed.setdefault(arg, []).append(f"j{n}")
        else:
            for e in q.pop(arg):
                popped.setdefault(e.user, []).append(e.job_id)  # type: ignore[arg-type]
    for e in q.pop(len(q)):
        popped.setdefault(e.user, []).append(e.job_id)  # type: ignore[arg-type]
    assert popped == pushed


@given(
    weights=st.lists(st.sampled_from([1.0, 2.0, 3.0, 5.0]), min_size=2, max_size=8),
    backlog=st.integers(20, 40),
)
def test_backlogged_users_share_by_weight(weights: list[float], backlog: int) -> None:
    q = FairQueue()
    for i in range(backlog):
        for user, w in enumerate(weights):
            q.push(f"{user}-{i}", user, weight=w)
    served = [0] * len(weights)
    bound = max(1 / w for w in weights)
    # Stop while every user is still backlogged (the property is about backlogged users).
    while all(served[u] < backlog - 1 for u in range(len(weights))):
        (entry,) = q.pop(1)
        served[entry.user] += 1  # type: ignore[index]
        normalized = [s / w for s, w in zip(served, weights, strict=True)]
        assert max(normalized) - min(normalized) <= bound + 1e-9


@given(
    weights=st.lists(st.sampled_from([1.0, 2.0, 4.0]), min_size=1, max_size=6),
    backlog=st.integers(5, 200),
    served_before=st.integers(0, 50),
    newcomer_weight=st.sampled_from([1.0, 2.0, 4.0]),
)
def test_late_arrival_is_served_within_one_round(
    weights: list[float], backlog: int, served_before: int, newcomer_weight: float
) -> None:
    q = FairQueue()
    for i in range(backlog):
        for user, w in enumerate(weights):
            q.push(f"{user}-{i}", user, weight=w)
    q.pop(served_before)
    q.push("late", "newcomer", weight=newcomer_weight)
    # Each other user can get at most floor(w_o / w_new) + 1 jobs ahead of the newcomer.
    bound = sum(math.floor(w / newcomer_weight) + 1 for w in weights)
    order = [e.job_id for e in q.pop(len(q))]
    assert order.index("late") <= bound


@settings(max_examples=200)
@given(ops, st.data())
def test_position_counts_pops_before_the_job(
    script: list[tuple[str, int]], data: st.DataObject
) -> None:
    q = FairQueue()
    n = 0
    for op, arg in script:
        if op == "push":
            n += 1
            q.push(f"j{n}", arg, weight=1 + arg % 3, cost=1 + n % 2)
        else:
            q.pop(arg)
    if not len(q):
        return
    target = data.draw(st.sampled_from(sorted(e.job_id for e in q.ordered())))
    position = q.position(target)
    order = [e.job_id for e in q.pop(len(q))]
    assert position == order.index(target)


@given(ops, st.data())
def test_remove_keeps_order_and_positions_consistent(
    script: list[tuple[str, int]], data: st.DataObject
) -> None:
    q = FairQueue()
    n = 0
    for op, arg in script:
        if op == "push":
            n += 1
            q.push(f"j{n}", arg, weight=1 + arg % 2)
        else:
            q.pop(arg)
    if len(q) < 2:
        return
    ids = sorted(e.job_id for e in q.ordered())
    victim = data.draw(st.sampled_from(ids))
    before = [e.job_id for e in q.ordered()]
    assert q.remove(victim) is not None
    assert q.remove(victim) is None
    positions = {e.job_id: q.position(e.job_id) for e in q.ordered()}
    order = [e.job_id for e in q.pop(len(q))]
    assert victim not in order
    assert all(order.index(j) == p for j, p in positions.items())
    # A cancellation never pushes anyone back.
    for j in order:
        assert order.index(j) <= before.index(j)


def test_light_user_behind_a_heavy_backlog_is_next() -> None:
    q = FairQueue()
    for i in range(100):
        q.push(f"heavy-{i}", "heavy")
    q.pop(3)
    q.push("light-0", "light")
    assert q.position("light-0") == 0
    assert [e.job_id for e in q.pop(1)] == ["light-0"]


def test_re_enqueueing_after_each_pop_does_not_jump_the_line() -> None:
    q = FairQueue()
    for i in range(30):
        q.push(f"b{i}", "b")
        q.push(f"c{i}", "c")
    q.push("a0", "a")
    served = []
    for i in range(30):
        (e,) = q.pop(1)
        served.append(e.user)
        if e.user == "a":
            q.push(f"a{i + 1}", "a")  # always exactly one job waiting
    # a gets a third of the service, like the backlogged users, not more
    assert served.count("a") <= served.count("b") + 1
    assert served.count("a") <= served.count("c") + 1


def test_vip_weight_gets_proportionally_more() -> None:
    q = FairQueue()
    for i in range(60):
        q.push(f"vip-{i}", "vip", weight=3)
        q.push(f"std-{i}", "std", weight=1)
    first = [e.user for e in q.pop(40)]
    assert first.count("vip") == 30
    assert first.count("std") == 10


def test_restore_puts_a_retried_job_first_in_its_users_queue() -> None:
    q = FairQueue()
    for i in range(3):
        q.push(f"a{i}", "a")
    (first,) = q.pop(1)
    q.restore(first)
    assert [e.job_id for e in q.pop(3)] == ["a0", "a1", "a2"]


def test_invalid_pushes_are_refused() -> None:
    q = FairQueue()
    q.push("x", 1)
    with pytest.raises(ValueError, match="already queued"):
        q.push("x", 1)
    with pytest.raises(ValueError, match="positive"):
        q.push("y", 1, weight=0)
    with pytest.raises(ValueError, match="already queued"):
        q.restore(Entry("x", 1, 0.0, 1, 1.0, 1.0))


def test_jain_index_and_meter() -> None:
    from gouache.queue.fairness import FairnessMeter, jain_index

    assert jain_index([3, 3, 3]) == 1.0
    assert jain_index([1, 0, 0, 0]) == 0.25
    meter = FairnessMeter({"a": 1.0, "b": 1.0}, window_jobs=5)
    for _ in range(20):
        meter.enqueued("a")
        meter.enqueued("b")
    for _ in range(10):  # a hog: only "a" is served
        meter.popped("a")
    meter.close()
    unfair, _ = meter.index()
    assert unfair == 0.5
    fair = FairnessMeter({"a": 1.0, "b": 2.0}, window_jobs=5)
    q = FairQueue()
    for i in range(30):
        q.push(f"a{i}", "a")
        q.push(f"b{i}", "b", weight=2.0)
        fair.enqueued("a")
        fair.enqueued("b")
    for e in q.pop(30):
        fair.popped(e.user)
    assert fair.index()[0] > 0.99


def test_a_user_whose_next_job_is_pinned_elsewhere_is_passed_over_and_keeps_their_place() -> None:
    q = FairQueue()
    q.push("a1", "alice")
    q.push("b1", "bob", pin="mj-2")  # a follow-up that must run on mj-2
    q.push("b2", "bob")
    q.push("c1", "carol")
    # A process running only mj-1 takes alice's and carol's jobs; bob's stay, in order.
    taken = [e.job_id for e in q.pop(3, workers={"mj-1"})]
    assert taken == ["a1", "c1"]
    assert q.depth("bob") == 2
    # The process running mj-2 then gets bob's follow-up first, then his next job.
    assert [e.job_id for e in q.pop(1, workers={"mj-2"})] == ["b1"]
    assert [e.job_id for e in q.pop(5)] == ["b2"]
    # Without a worker list nothing is passed over.
    q.push("d1", "dave", pin="mj-9")
    assert [e.job_id for e in q.pop(1)] == ["d1"]


class FairQueueMachine(RuleBasedStateMachine):
    """Any sequence of push, remove, restore and pop keeps `pop` at `ordered()`'s head.

    The model is the documented order itself: the smallest ``(tag, seq)`` among
    the users whose next job the caller may run. Positions must agree with it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.q = FairQueue()
        self.n = 0
        self.popped: list[Entry] = []

    def _expected_head(self, workers: frozenset[str] | None) -> Entry | None:
        heads: dict[object, Entry] = {}
        for e in self.q.ordered():
            heads.setdefault(e.user, e)
        for e in self.q.ordered():
            if heads[e.user] is not e:
                continue
            if workers is None or e.pin is None or e.pin in workers:
                return e
        return None

    @rule(
        user=st.integers(0, 3),
        weight=st.sampled_from([0.5, 1.0, 2.0, 3.0]),
        cost=st.sampled_from([1.0, 0.25, 2.0]),
        pin=st.sampled_from([None, None, "w1", "w2"]),
    )
    def push(self, user: int, weight: float, cost: float, pin: str | None) -> None:
        self.n += 1
        self.q.push(f"j{self.n}", user, weight=weight, cost=cost, pin=pin)

    @precondition(lambda self: len(self.q) > 0)
    @rule(data=st.data(), shift=st.booleans())
    def remove(self, data: st.DataObject, shift: bool) -> None:
        victim = data.draw(st.sampled_from(sorted(e.job_id for e in self.q.ordered())))
        assert self.q.remove(victim, shift=shift) is not None
        assert victim not in self.q

    @precondition(lambda self: len(self.popped) > 0)
    @rule(data=st.data())
    def restore(self, data: st.DataObject) -> None:
        back = self.popped.pop(data.draw(st.integers(0, len(self.popped) - 1)))
        self.q.restore(back)

    @rule(k=st.integers(1, 3), workers=st.sampled_from([None, frozenset({"w1"}), frozenset()]))
    def pop(self, k: int, workers: frozenset[str] | None) -> None:
        for _ in range(k):
            want = self._expected_head(workers)
            got = self.q.pop(1, workers=workers)
            assert [e.job_id for e in got] == ([want.job_id] if want else [])
            self.popped.extend(got)

    @invariant()
    def positions_follow_the_order(self) -> None:
        for i, e in enumerate(self.q.ordered()):
            assert self.q.position(e.job_id) == i
        assert len(self.q) == sum(self.q.depth(u) for u in range(4))


TestFairQueueMachine = FairQueueMachine.TestCase
TestFairQueueMachine.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)


def test_a_queue_emptied_by_cancel_and_refilled_serves_in_tag_order() -> None:
    """The heap item of a user's old queue must not come back to life when it refills."""
    q = FairQueue()
    q.push("a1", "a", weight=0.5)
    (a1,) = q.pop(1)
    q.restore(a1)  # a's queue again, with a heap item for a1
    q.remove("a1", shift=False)  # emptied: that heap item is stale
    q.push("a2", "a", weight=0.5)  # tag 4, refilled
    q.push("b1", "b", weight=0.5)  # tag 2: b is next
    assert next(q.ordered()).job_id == "b1"
    assert [e.job_id for e in q.pop(1)] == ["b1"]


def test_a_retried_job_does_not_give_its_user_back_the_place_they_used() -> None:
    """After a retry (restore) is served again, the user's next job still goes
    behind the jobs they were already served, and their queue stays in order."""
    q = FairQueue()
    q.push("a1", "a")
    q.push("a2", "a")
    first, second = q.pop(2)
    q.restore(first)  # a1 is retried: it is queued again with its old tag
    q.push("a3", "a")  # behind a2, which was served, not behind a1's old tag
    assert q.get("a3").tag == second.tag + step(1, 1)  # type: ignore[union-attr]
    assert [e.job_id for e in q.pop(1)] == ["a1"]
    q.push("a4", "a")
    assert q.get("a4").tag == second.tag + 2 * step(1, 1)  # type: ignore[union-attr]
    q.remove("a3")  # a4 moves up into a3's place, not ahead of anything served
    assert q.get("a4").tag == second.tag + step(1, 1)  # type: ignore[union-attr]


def test_a_cancel_that_moves_a_job_past_a_retried_one_keeps_the_users_order() -> None:
    """Jobs behind a cancelled one move up by its share; one can pass a retried job put
    back with its old tag, and pop, positions and Redis's sorted set must all agree."""
    q = FairQueue()
    m = 1_000_000
    q.restore(Entry("retried", "a", 4 * m, 1, 1.0, 1.0))
    q.restore(Entry("cancelled", "a", 5 * m, 2, 1.0, 0.5))  # a share of 2
    q.restore(Entry("later", "a", int(5.5 * m), 3, 1.0, 1.0))
    q.remove("cancelled")
    assert q.get("later").tag == 3.5 * m  # type: ignore[union-attr]
    assert [e.job_id for e in q.ordered()] == ["later", "retried"]
    assert q.position("later") == 0 and q.position("retried") == 1
    assert [e.job_id for e in q.pop(2)] == ["later", "retried"]
