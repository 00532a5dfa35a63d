"""The bookkeeping of one Midjourney account, without I/O: correlation and account limits.

- `Correlator` finds the job a Midjourney bot message belongs to, by nonce,
  interaction id, message id and job hash (never by prompt text).
- `AccountLimits` counts submissions per day, spaces them by the pause, and
  holds a credits pause; it reads an injected clock, so tests move time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from gouache.pool.midjourney_wire import MessageKind, MjMessage


@dataclass
class _Entry:
    nonce: str | None = None
    interaction_id: str | None = None
    message_ids: set[str] = field(default_factory=set)
    job_hash: str | None = None
    parent_message_id: str | None = None


class Correlator:
    """Which job (by id) a bot message answers.

    A job is registered with its nonce before the interaction is sent. The
    first bot message carries that nonce; Discord's ``INTERACTION_CREATE`` /
    ``INTERACTION_SUCCESS`` tell the interaction id for it, which every later
    bot message repeats in ``interaction_metadata``; progress messages are
    edits of a message id already seen; results name the job hash. A
    follow-up's result that carries none of these but answers (references)
    the parent message is matched only when exactly one waiting follow-up
    has that parent.
    """

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._by_nonce: dict[str, str] = {}
        self._by_interaction: dict[str, str] = {}
        self._by_message: dict[str, str] = {}
        self._by_hash: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._entries

    def add(self, job_id: str, *, parent_message_id: str | None = None) -> None:
        """Start correlating ``job_id`` (a follow-up names the message it acts on)."""
        self._entries.setdefault(job_id, _Entry(parent_message_id=parent_message_id))

    def set_nonce(self, job_id: str, nonce: str) -> None:
        """The nonce of the interaction just (re)sent for ``job_id``; a previous one is dropped."""
        entry = self._entries[job_id]
        if entry.nonce is not None:
            self._by_nonce.pop(entry.nonce, None)
        entry.nonce = nonce
        self._by_nonce[nonce] = job_id

    def by_nonce(self, nonce: object) -> str | None:
        """The job whose interaction carried ``nonce``."""
        return self._by_nonce.get(str(nonce)) if nonce is not None else None

    def interaction(self, nonce: object, interaction_id: object) -> str | None:
        """Discord told us the interaction id of ``nonce``; returns the job, if ours."""
        job_id = self.by_nonce(nonce)
        if job_id is not None and interaction_id is not None:
            self._entries[job_id].interaction_id = str(interaction_id)
            self._by_interaction[str(interaction_id)] = job_id
        return job_id

    def match(self, msg: MjMessage) -> str | None:
        """The job ``msg`` belongs to, learning its ids on the way; None if not ours."""
        job_id = self._find(msg)
        if job_id is None:
            return None
        entry = self._entries[job_id]
        if msg.interaction_id:
            entry.interaction_id = msg.interaction_id
            self._by_interaction[msg.interaction_id] = job_id
        if msg.message_id and msg.kind is not MessageKind.ERROR:
            entry.message_ids.add(msg.message_id)
            self._by_message[msg.message_id] = job_id
        if msg.job_hash and msg.kind in (MessageKind.PROGRESS, MessageKind.DONE):
            entry.job_hash = msg.job_hash
            self._by_hash[msg.job_hash] = job_id
        return job_id

    def job_hash(self, job_id: str) -> str | None:
        """The Midjourney job hash learned for ``job_id`` so far."""
        entry = self._entries.get(job_id)
        return entry.job_hash if entry else None

    def _find(self, msg: MjMessage) -> str | None:
        for key, table in (
            (msg.nonce, self._by_nonce),
            (msg.message_id, self._by_message),
            (msg.interaction_id, self._by_interaction),
            (msg.job_hash, self._by_hash),
        ):
            if key and key in table:
                return table[key]
        if msg.reference_id and not msg.interaction_id:
            candidates = [
                job_id
                for job_id, entry in self._entries.items()
                if entry.parent_message_id == msg.reference_id and not entry.message_ids
            ]
            if len(candidates) == 1:
                return candidates[0]
        return None

    def forget(self, job_id: str) -> None:
        """Stop correlating ``job_id``."""
        entry = self._entries.pop(job_id, None)
        if entry is None:
            return
        if entry.nonce is not None:
            self._by_nonce.pop(entry.nonce, None)
        if entry.interaction_id is not None:
            self._by_interaction.pop(entry.interaction_id, None)
        for mid in entry.message_ids:
            self._by_message.pop(mid, None)
        if entry.job_hash is not None:
            self._by_hash.pop(entry.job_hash, None)


class AccountLimits:
    """Daily cap, pause between submissions and the credits pause of one account.

    The day is the clock's calendar date (UTC for the default clock). A
    submission counts against the cap when it is sent; one Discord refused
    is given back with `undo`.
    """

    def __init__(
        self,
        *,
        pause_s: float,
        daily_cap: int | None,
        clock: Callable[[], datetime],
    ) -> None:
        if pause_s < 0:
            raise ValueError("pause_s must be ≥ 0")
        if daily_cap is not None and daily_cap < 1:
            raise ValueError("daily_cap must be ≥ 1")
        self.pause_s = pause_s
        self.daily_cap = daily_cap
        self._clock = clock
        self._day: date = clock().date()
        self._submitted = 0
        self._done = 0
        self._last_submit: datetime | None = None
        self._paused_until: datetime | None = None

    def _roll(self) -> None:
        today = self._clock().date()
        if today != self._day:
            self._day, self._submitted, self._done = today, 0, 0

    @property
    def submitted_today(self) -> int:
        """Interactions sent today."""
        self._roll()
        return self._submitted

    @property
    def done_today(self) -> int:
        """Jobs that produced images today."""
        self._roll()
        return self._done

    @property
    def capped(self) -> bool:
        """Whether today's submissions reached the cap."""
        return self.daily_cap is not None and self.submitted_today >= self.daily_cap

    def pause_remaining(self) -> float:
        """Seconds until the pause after the last submission ends (0 when none)."""
        if self.pause_s <= 0 or self._last_submit is None:
            return 0.0
        elapsed = (self._clock() - self._last_submit).total_seconds()
        return max(0.0, self.pause_s - elapsed)

    def note_submit(self) -> tuple[date, datetime | None]:
        """Count a submission now; returns what `undo` needs."""
        self._roll()
        self._submitted += 1
        token = (self._day, self._last_submit)
        self._last_submit = self._clock()
        return token

    def undo(self, token: tuple[date, datetime | None]) -> None:
        """Give back a submission Discord refused."""
        day, last = token
        if day == self._day and self._submitted > 0:
            self._submitted -= 1
        self._last_submit = last

    def note_done(self) -> None:
        """Count a job that produced images."""
        self._roll()
        self._done += 1

    def pause_for(self, seconds: float) -> None:
        """Take the account out for ``seconds`` (fast hours exhausted)."""
        self._paused_until = self._clock() + timedelta(seconds=seconds)

    @property
    def paused_until(self) -> datetime | None:
        """When a credits pause ends, if one is running."""
        if self._paused_until is not None and self._clock() >= self._paused_until:
            self._paused_until = None
        return self._paused_until

    def lift_pause(self) -> None:
        """End a credits pause now."""
        self._paused_until = None

    def capacity(self, concurrency: int, in_flight: int, orphans: int) -> int:
        """Slots now: 0 at the cap, no new ones during the pause, minus cancelled leftovers."""
        if self.capped:
            return 0
        if self.pause_remaining() > 0:
            return min(in_flight, concurrency)
        return max(0, concurrency - orphans)

    def seconds_to_midnight(self) -> float:
        """Seconds until the clock's next day begins (at least 1)."""
        now = self._clock()
        midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), now.tzinfo)
        return max(1.0, (midnight - now).total_seconds())

    def next_change(self) -> float | None:
        """Seconds until the pause, the credits pause or the cap ends, whichever is first."""
        delays: list[float] = []
        if (remaining := self.pause_remaining()) > 0:
            delays.append(remaining)
        if (until := self.paused_until) is not None:
            delays.append((until - self._clock()).total_seconds())
        if self.capped:
            delays.append(self.seconds_to_midnight())
        return max(0.0, min(delays)) if delays else None
