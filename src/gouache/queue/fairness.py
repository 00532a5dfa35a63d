"""Measuring fairness: Jain's index of weighted service among backlogged users.

Used by the benchmarks and available to the admin status. Service is counted
over consecutive windows in which every user that stayed backlogged is due
about ``window_jobs`` jobs, so the one-job rounding of any schedule cannot
dominate; users whose queue ran dry during a window are left out of it (the
property is about users who kept asking).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable


def jain_index(values: Iterable[float]) -> float:
    """Jain's fairness index: 1 when all values are equal, 1/n when one takes everything."""
    xs = list(values)
    if not xs or not any(xs):
        return 1.0
    return sum(xs) ** 2 / (len(xs) * sum(x * x for x in xs))


class FairnessMeter:
    """Jain's index of weighted service over windows of backlogged users."""

    def __init__(self, weights: dict[Hashable, float], window_jobs: int = 20) -> None:
        self.weights = weights
        self.window_jobs = window_jobs
        self.queued: dict[Hashable, int] = {}
        self.window: dict[Hashable, int] | None = None
        self.emptied: set[Hashable] = set()
        self.pops_in_window = 0
        self._window_due = 0.0
        self.results: list[tuple[float, int]] = []

    def enqueued(self, user: Hashable) -> None:
        """Count a job entering ``user``'s queue."""
        self.queued[user] = self.queued.get(user, 0) + 1

    def popped(self, user: Hashable) -> None:
        """Count a job of ``user`` being served."""
        if self.window is None:
            self._open()
        assert self.window is not None
        self.queued[user] -= 1
        if user in self.window:
            self.window[user] += 1
        if self.queued[user] == 0:
            self.emptied.add(user)
        self.pops_in_window += 1
        if self.pops_in_window >= self._window_due:
            self.close()

    def _open(self) -> None:
        self.window = {u: 0 for u, n in self.queued.items() if n > 0}
        self.emptied = set()
        self.pops_in_window = 0
        # Fixed for the window (its users are), so not summed again on every pop.
        self._window_due = self.window_jobs * sum(self.weights[u] for u in self.window)

    def close(self) -> None:
        """End the current window and record its index."""
        if self.window:
            xs = [n / self.weights[u] for u, n in self.window.items() if u not in self.emptied]
            if len(xs) >= 2 and sum(xs) > 0:
                self.results.append((jain_index(xs), self.pops_in_window))
        self.window = None

    def index(self) -> tuple[float, float]:
        """(pop-weighted mean, minimum) of the windows' indexes."""
        if not self.results:
            return 1.0, 1.0
        total = sum(n for _, n in self.results)
        mean = sum(j * n for j, n in self.results) / total
        return mean, min(j for j, _ in self.results)
