"""Weighted fair queueing across users, FIFO within a user (pure, no I/O).

Each queued job gets a *virtual finish tag* ``F``. A user's next job gets
``max(V, F_last(user)) + cost / weight`` where ``F_last`` is the finish tag of
the user's previous job (queued or served) and ``V``, the virtual time, is
the *start* tag (``F − cost/weight``) of the last job served. Jobs are served
in tag order, ties broken by ``seq`` (the global enqueue sequence number).

* per-user order is FIFO (a user's tags only grow);
* among users that stay backlogged, service divided by weight differs by at
  most one job's cost/weight;
* a user arriving late starts at ``V``, ahead of the next job of everyone who
  was already served in this round: they wait at most one round, however long
  everybody else's backlog is (a light user behind one heavy user is next);
* remembering ``F_last`` for users whose queue just emptied stops a user from
  jumping the line by re-enqueueing right after each pop.

Tags are whole numbers of millionths of a job (`step`), so sums are exact in
Python, in SQLite and in Redis's Lua (doubles hold integers exactly up to
2**53): no tie is ever decided by rounding noise. Tags are plain numbers so that the SQLite store can persist them and the
Redis store can compute the same ones inside a Lua script; a restart rebuilds
the queue with `restore` and every job keeps its place.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left
from collections import deque
from collections.abc import Collection, Hashable, Iterator
from dataclasses import dataclass

TAG_SCALE = 1_000_000


def step(cost: float, weight: float) -> int:
    """A job's share of virtual time: cost / weight in millionths, rounded half up."""
    return max(1, math.floor(cost * TAG_SCALE / weight + 0.5))


@dataclass(slots=True)
class Entry:
    """One queued job as the scheduler sees it."""

    job_id: str
    user: Hashable
    tag: float
    seq: int
    cost: float
    weight: float
    pin: str | None = None  # the only worker that may run it (a follow-up), if any


class _UserQueue:
    __slots__ = ("entries", "version")

    def __init__(self) -> None:
        self.entries: deque[Entry] = deque()
        # The heap item that stands for this queue's head. Versions come from one
        # counter for the whole FairQueue, so an item left by an earlier queue of
        # the same user (emptied, then refilled) can never match a later one.
        self.version = 0


class FairQueue:
    """A weighted-fair queue of job ids keyed by user."""

    def __init__(self, virtual_time: float = 0.0) -> None:
        self._users: dict[Hashable, _UserQueue] = {}
        self._index: dict[str, Entry] = {}
        # (head tag, head seq, version, user), lazily invalidated by version;
        # versions are unique, so they also break ties before `user` is compared.
        self._heap: list[tuple[float, int, int, Hashable]] = []
        self._versions = 0
        self._seq = 0
        self.virtual_time = virtual_time
        # Finish tag of each user's last served job, while it is still ahead of V.
        self._last_finish: dict[Hashable, float] = {}

    # -- inspection -------------------------------------------------------

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._index

    def depth(self, user: Hashable | None = None) -> int:
        """Jobs queued in total, or for one user."""
        if user is None:
            return len(self._index)
        q = self._users.get(user)
        return len(q.entries) if q else 0

    def users(self) -> int:
        """Number of users with at least one queued job."""
        return len(self._users)

    def get(self, job_id: str) -> Entry | None:
        """The entry of a queued job, or None."""
        return self._index.get(job_id)

    def next_seq(self) -> int:
        """The sequence number the next `push` will use."""
        return self._seq + 1

    def restore_seq(self, seq: int) -> None:
        """Make sure later pushes use sequence numbers above ``seq`` (after a restart)."""
        self._seq = max(self._seq, seq)

    def next_tag(self, user: Hashable, cost: float = 1.0, weight: float = 1.0) -> float:
        """The tag a job pushed now for ``user`` would get."""
        # Behind the user's last queued job and their last served one, and never
        # before V. The tail is usually the largest of the three; it is not when
        # it is a retried job put back with its old tag (`restore`), and a job
        # tagged from that would share its tag range with jobs already served.
        base = max(self.virtual_time, self._last_finish.get(user, self.virtual_time))
        q = self._users.get(user)
        if q and q.entries:
            base = max(base, q.entries[-1].tag)
        return base + step(cost, weight)

    def remember_finish(self, user: Hashable, tag: float) -> None:
        """Record the finish tag of a job ``user`` was served; the largest one counts.

        A retried job served again carries its old, smaller tag: it must not
        give its user back the place their later jobs already used.
        """
        if tag > self._last_finish.get(user, float("-inf")):
            self._last_finish[user] = tag

    # -- mutation ---------------------------------------------------------

    def push(  # noqa: PLR0913
        self,
        job_id: str,
        user: Hashable,
        *,
        cost: float = 1.0,
        weight: float = 1.0,
        seq: int | None = None,
        pin: str | None = None,
    ) -> Entry:
        """Queue a new job at the back of its user's queue and return its entry."""
        if job_id in self._index:
            raise ValueError(f"job {job_id} is already queued")
        if cost <= 0 or weight <= 0:
            raise ValueError("cost and weight must be positive")
        tag = self.next_tag(user, cost, weight)
        if seq is None:
            seq = self._seq + 1
        self._seq = max(self._seq, seq)
        entry = Entry(job_id, user, tag, seq, cost, weight, pin)
        self._insert(entry)
        return entry

    def restore(self, entry: Entry) -> None:
        """Put back an entry with a known tag (restart, or a retried job).

        The entry is placed among its user's jobs by tag, so a retried job
        whose old tag is smaller than everything queued goes to the front.
        """
        if entry.job_id in self._index:
            raise ValueError(f"job {entry.job_id} is already queued")
        self._seq = max(self._seq, entry.seq)
        self._insert(entry)

    def _insert(self, entry: Entry) -> None:
        q = self._users.get(entry.user)
        if q is None:
            q = self._users[entry.user] = _UserQueue()
        key = (entry.tag, entry.seq)
        if not q.entries or (q.entries[-1].tag, q.entries[-1].seq) <= key:
            q.entries.append(entry)
            at_head = len(q.entries) == 1
        else:
            keys = [(e.tag, e.seq) for e in q.entries]
            pos = bisect_left(keys, key)
            q.entries.insert(pos, entry)
            at_head = pos == 0
        self._index[entry.job_id] = entry
        if at_head:
            self._schedule(entry.user, q)

    def _schedule(self, user: Hashable, q: _UserQueue) -> None:
        self._versions += 1
        q.version = self._versions
        if q.entries:
            head = q.entries[0]
            heapq.heappush(self._heap, (head.tag, head.seq, q.version, user))

    def _peek_user(self) -> Hashable | None:
        while self._heap:
            _tag, _seq, version, user = self._heap[0]
            q = self._users.get(user)
            if q is not None and q.version == version and q.entries:
                return user
            heapq.heappop(self._heap)
        return None

    def pop(self, k: int = 1, *, workers: Collection[str] | None = None) -> list[Entry]:
        """Remove and return the next ``k`` jobs in fair order (fewer if the queue is shorter).

        With ``workers`` (the workers the caller runs), a user whose next job is
        pinned to another worker is passed over for this pop — their queue
        stays as it is, for the process that runs that worker.
        """
        out: list[Entry] = []
        passed: list[tuple[float, int, int, Hashable]] = []
        while len(out) < k:
            user = self._peek_user()
            if user is None:
                break
            item = heapq.heappop(self._heap)
            q = self._users[user]
            pin = q.entries[0].pin
            if workers is not None and pin is not None and pin not in workers:
                passed.append(item)
                continue
            entry = q.entries.popleft()
            del self._index[entry.job_id]
            self.virtual_time = max(self.virtual_time, entry.tag - step(entry.cost, entry.weight))
            self.remember_finish(user, entry.tag)
            if q.entries:
                self._schedule(user, q)
            else:
                del self._users[user]
            out.append(entry)
        for item in passed:  # still valid: those users' heads did not change
            heapq.heappush(self._heap, item)
        if len(self._last_finish) > 2 * len(self._users) + 1024:
            # Finish tags at or behind V no longer change anyone's next tag.
            v = self.virtual_time
            self._last_finish = {u: f for u, f in self._last_finish.items() if f > v}
        return out

    def remove(self, job_id: str, *, shift: bool = True) -> Entry | None:
        """Take a queued job out (cancel). Later jobs of the same user move up.

        With ``shift`` the user's later tags shrink by the removed job's
        cost/weight, so cancelling does not cost the user their share. Without
        it (undoing a push whose write failed, when later tags may already be
        persisted) the other entries keep their tags.
        """
        entry = self._index.pop(job_id, None)
        if entry is None:
            return None
        q = self._users[entry.user]
        head = q.entries[0]
        q.entries.remove(entry)
        if shift:
            delta = step(entry.cost, entry.weight)
            for later in q.entries:
                if (later.tag, later.seq) > (entry.tag, entry.seq):
                    later.tag -= delta
            # A job that moved up can pass a retried one put back with its old tag:
            # the user's jobs stay in tag order (as Redis's sorted set keeps them).
            q.entries = deque(sorted(q.entries, key=lambda e: (e.tag, e.seq)))
        if not q.entries:
            del self._users[entry.user]  # its heap item is stale: the user is gone
        elif q.entries[0] is not head or head is entry:
            self._schedule(entry.user, q)
        return entry

    # -- positions --------------------------------------------------------

    def position(self, job_id: str) -> int | None:
        """How many jobs will be popped before this one if nothing else arrives (0 = next)."""
        entry = self._index.get(job_id)
        if entry is None:
            return None
        key = (entry.tag, entry.seq)
        ahead = 0
        for q in self._users.values():
            ahead += _count_before(q.entries, key)
        return ahead

    def ordered(self) -> Iterator[Entry]:
        """All queued entries in the order they would be popped (for inspection)."""
        entries = sorted(self._index.values(), key=lambda e: (e.tag, e.seq))
        return iter(entries)


def _count_before(entries: deque[Entry], key: tuple[float, int]) -> int:
    """Entries of one user (sorted by tag) that come before ``key``."""
    lo, hi = 0, len(entries)
    while lo < hi:
        mid = (lo + hi) // 2
        e = entries[mid]
        if (e.tag, e.seq) < key:
            lo = mid + 1
        else:
            hi = mid
    return lo
