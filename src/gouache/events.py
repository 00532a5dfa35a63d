"""An in-process publish/subscribe bus for `JobEvent`s.

The dispatcher publishes; delivery, the admin API and tests subscribe. A slow
subscriber never blocks the publisher: each subscription has a bounded queue
and, when it is full, the oldest *non-final* event is dropped (delivery only
shows the latest state anyway, and a final event is never lost).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable

from gouache.jobs import JobEvent


class Subscription:
    """One subscriber's view of the bus; iterate it or call `get`."""

    def __init__(
        self, bus: EventBus, predicate: Callable[[JobEvent], bool] | None, size: int
    ) -> None:
        self._bus = bus
        self._predicate = predicate
        self._size = size
        self._events: deque[JobEvent] = deque()
        self._ready = asyncio.Event()
        self.dropped = 0

    def _offer(self, event: JobEvent) -> None:
        if self._predicate is not None and not self._predicate(event):
            return
        if len(self._events) >= self._size:
            for i, old in enumerate(self._events):
                if not old.final:
                    del self._events[i]
                    self.dropped += 1
                    break
        self._events.append(event)
        self._ready.set()

    async def get(self, timeout: float | None = None) -> JobEvent:
        """The next event (TimeoutError after ``timeout`` seconds)."""
        async with asyncio.timeout(timeout):
            while not self._events:
                self._ready.clear()
                await self._ready.wait()
        return self._events.popleft()

    def close(self) -> None:
        """Stop receiving events."""
        self._bus._subs.discard(self)

    def __aiter__(self) -> AsyncIterator[JobEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[JobEvent]:
        while True:
            yield await self.get()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    """Fan-out of `JobEvent`s to every subscription."""

    def __init__(self) -> None:
        self._subs: set[Subscription] = set()

    def subscribe(
        self, predicate: Callable[[JobEvent], bool] | None = None, *, size: int = 1000
    ) -> Subscription:
        """A new subscription to events matching ``predicate`` (all if None)."""
        sub = Subscription(self, predicate, size)
        self._subs.add(sub)
        return sub

    def publish(self, event: JobEvent) -> None:
        """Hand ``event`` to every subscriber; never blocks."""
        for sub in list(self._subs):
            sub._offer(event)
