"""REST fault injection: make chosen routes fail or stall, for N calls or for a while."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field

from gouache_sandbox.discord.state import JSON


@dataclass
class RestFault:
    """One injected fault on routes matching ``method`` and ``route`` (glob patterns)."""

    method: str
    route: str
    status: int | None = None
    delay: float = 0.0
    times: int | None = None
    until: float | None = None
    body: JSON = field(default_factory=dict)
    #: Fail after the request was carried out (Discord made the message, then the
    #: answer was lost: a 502 from the edge), instead of before.
    after: bool = False
    hits: int = 0

    def matches(self, method: str, route: str) -> bool:
        """Whether this fault applies to a request on ``method route``."""
        return fnmatch.fnmatchcase(method.upper(), self.method.upper()) and fnmatch.fnmatchcase(
            route, self.route
        )


class RestFaults:
    """The active REST faults; the server asks it before handling each request."""

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._faults: list[RestFault] = []

    def add(  # noqa: PLR0913
        self,
        method: str,
        route: str,
        *,
        status: int | None = None,
        delay: float = 0.0,
        times: int | None = None,
        duration: float | None = None,
        body: JSON | None = None,
        after: bool = False,
    ) -> RestFault:
        """Fail (``status``) and/or delay (``delay`` s) matching requests.

        Lasts for ``times`` requests, for ``duration`` sandbox seconds, or until cleared.
        With ``after``, the request is carried out first and its answer replaced by the failure.
        """
        if status is None and delay <= 0:
            raise ValueError("a fault needs a status, a delay, or both")
        fault = RestFault(
            method=method,
            route=route,
            status=status,
            delay=delay,
            times=times,
            until=None if duration is None else self._now() + duration,
            body=dict(body or {}),
            after=after,
        )
        self._faults.append(fault)
        return fault

    def clear(self) -> None:
        """Remove every fault."""
        self._faults.clear()

    def take(self, method: str, route: str) -> RestFault | None:
        """The first live fault matching this request (counting it), if any."""
        now = self._now()
        for fault in list(self._faults):
            expired = (fault.until is not None and now >= fault.until) or (
                fault.times is not None and fault.hits >= fault.times
            )
            if expired:
                self._faults.remove(fault)
                continue
            if fault.matches(method, route):
                fault.hits += 1
                return fault
        return None
