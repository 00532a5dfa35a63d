"""The viewer's "More" panel: the status fields beside the pool and queue, as a person reads them.

gouache's status carries nested counts (``summary``, ``jobs``, ``jobs_today``)
and lists (``errors_last_hour``, ``channels``); printed raw they read like
``summary: ready: 4, total: 4, …`` and ``0 items``. Each known field gets a
sentence; anything else is shown as ``name value`` pairs of its non-zero counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Fields the pool and queue cards already show.
SHOWN_ELSEWHERE = frozenset({"workers", "pool", "queue", "queue_depth", "depth", "queued"})


def _n(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _counts(data: Mapping[str, Any]) -> str:
    parts = [
        f"{_n(v)} {k.replace('_', ' ')}"
        for k, v in data.items()
        if _n(v) and not isinstance(v, bool)
    ]
    return ", ".join(parts) or "none"


def _summary(s: Mapping[str, Any]) -> str:
    errors = _n(s.get("errors_last_hour"))
    return " · ".join(
        [
            f"{_n(s.get('ready'))} of {_plural(_n(s.get('total')), 'worker')} ready",
            f"{_n(s.get('in_flight'))} of {_n(s.get('capacity'))} slots busy",
            f"{_n(s.get('queue_depth'))} waiting",
            f"{_plural(_n(s.get('jobs_today')), 'job')} today",
            f"{_plural(errors, 'error')} in the last hour"
            if errors
            else "no errors in the last hour",
        ]
    )


def _errors(rows: list[Any]) -> str:
    if not rows:
        return "none"
    latest = rows[0] if isinstance(rows[0], Mapping) else {}
    what = latest.get("message") or latest.get("error_message") or latest.get("error_code")
    return _plural(len(rows), "error") + (f"; latest: {what}" if what else "")


def _channels(rows: list[Any]) -> str:
    if not rows:
        return "every channel can be served"
    return f"{_plural(len(rows), 'channel')} gouache cannot serve"


def describe(key: str, value: Any) -> str:
    """One status field in words."""
    if key == "summary" and isinstance(value, Mapping):
        return _summary(value)
    if key == "in_flight" and isinstance(value, Mapping):
        return f"{_n(value.get('this_process'))} in this process, {_n(value.get('all'))} in all"
    if key == "jobs_today" and isinstance(value, Mapping):
        by_state = value.get("by_state")
        return _counts(by_state if isinstance(by_state, Mapping) else value)
    if key.startswith("errors") and isinstance(value, list):
        return _errors(value)
    if key == "channels" and isinstance(value, list):
        return _channels(value)
    if isinstance(value, Mapping):
        return _counts(value)
    if isinstance(value, list):
        return "none" if not value else _plural(len(value), "entry").replace("entrys", "entries")
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def more_lines(status: Mapping[str, Any]) -> list[list[str]]:
    """``[label, text]`` for every field the pool and queue cards do not show."""
    return [
        [key.replace("_", " "), describe(key, value)]
        for key, value in status.items()
        if key not in SHOWN_ELSEWHERE
    ]
