"""How the Redis store keeps a job, and the script that works on it.

A job is a hash: the job's JSON as it was enqueued (``d``), a trail of
patches (``o``: JSON fragments such as ``,"progress":40``, appended by each
change), and the fields the scripts index on (see ``lua/_common.lua``).
Decoding puts the two together; a `Patch` is one change in both forms, the
fragment stored and the values a decode of it yields, so that a process
holding a current copy of the job can apply the change to its copy instead
of decoding the job again.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

from pydantic import TypeAdapter

from gouache.jobs import TRANSITIONS, Job, JobState
from gouache.storage.base import MUTABLE_FIELDS
from gouache.storage.redis_pipe import bulk

# The script is its operation files between a common start and a batch runner.
OPERATIONS = (
    "enqueue",
    "get",
    "pop",
    "transition",
    "update",
    "renew",
    "recover",
    "position",
    "list",
    "worker",
    "prune",
)
_ACTIVE_WORDS = " " + " ".join(s.value for s in JobState if s.active) + " "


@cache
def script_source() -> str:
    """The Lua script: _common.lua, the state tables, every operation, then _batch.lua."""
    lua = resources.files("gouache.storage") / "lua"
    sources = ", ".join(
        f"{target.value} = '{words([s for s, ts in TRANSITIONS.items() if target in ts])}'"
        for target in JobState
    )
    table = (
        "-- Written by storage/redis_records.py from gouache.jobs: the states a worker holds\n"
        "-- a job in, and for each target state the states a job may reach it from.\n"
        f"local ACTIVE = '{_ACTIVE_WORDS}'\n"
        f"local SOURCES = {{{sources}}}\n"
    )
    parts = [(lua / "_common.lua").read_text(encoding="utf-8"), table]
    parts += [(lua / f"{name}.lua").read_text(encoding="utf-8") for name in OPERATIONS]
    parts.append((lua / "_batch.lua").read_text(encoding="utf-8"))
    return "\n".join(parts)


@cache
def _adapter(field: str) -> TypeAdapter[Any]:
    return TypeAdapter(Job.model_fields[field].annotation)


class Patch:
    """Changes to a job: the JSON fragment stored, and the values a decode of it yields."""

    __slots__ = ("fragment", "values")

    def __init__(self, changes: dict[str, Any] | None = None) -> None:
        self.fragment = ""
        self.values: dict[str, Any] = {}
        if changes:
            self.change(changes)

    def change(self, changes: dict[str, Any]) -> Patch:
        """Add ``changes``, validated against the Job fields."""
        bad = set(changes) - MUTABLE_FIELDS
        if bad:
            raise ValueError(f"fields not changeable through the store: {sorted(bad)}")
        parts: list[str] = []
        for name, value in changes.items():
            adapter = _adapter(name)
            # Validate before writing: a bad value must fail here, not poison the record.
            raw = adapter.dump_json(adapter.validate_python(value))
            parts.append(f',"{name}":{raw.decode()}')
            # What decoding the stored JSON gives (a tuple in meta comes back a list).
            self.values[name] = adapter.validate_json(raw)
        self.fragment += "".join(parts)
        return self

    def stamp(self, now: datetime, *fields: str) -> Patch:
        """Set the timestamp ``fields`` (updated_at, finished_at...) to ``now``."""
        text = now.isoformat()
        values = self.values
        for name in fields:
            self.fragment += f',"{name}":"{text}"'
            values[name] = now
        return self


def evolve(job: Job, values: dict[str, Any]) -> Job:
    """``job.model_copy(update=values)`` for values already validated, at half its cost.

    model_copy copies the model's three bookkeeping attributes through
    copy.copy; a job changes four or five times in its life, on the hot path.
    """
    fields = job.__dict__.copy()
    fields.update(values)
    new = Job.__new__(Job)
    object.__setattr__(new, "__dict__", fields)
    object.__setattr__(new, "__pydantic_fields_set__", job.__pydantic_fields_set__ | values.keys())
    object.__setattr__(new, "__pydantic_extra__", job.__pydantic_extra__)
    object.__setattr__(new, "__pydantic_private__", job.__pydantic_private__)
    return new


def words(states: Collection[JobState]) -> str:
    """States as the scripts match them: space-separated, with a space at each end."""
    return " " + " ".join(s.value for s in states) + " "


@cache
def transition_head(target: JobState, cancel: bool) -> tuple[str, tuple[str, ...]]:
    """The leading arguments of a transition to ``target`` (see transition.lua).

    Also the timestamps it sets: ``finished_at`` too when ``target`` is terminal.
    """
    head = bulk(("transition", "8", target.value, "cancel" if cancel else ""))
    return head, ("updated_at", "finished_at") if target.terminal else ("updated_at",)


def decode(reply: Sequence[str]) -> Job:
    """Rebuild a Job from a script's job reply: [JSON at enqueue, state, attempts, patches].

    The enqueue-time JSON with the patches appended is one JSON text with
    repeated keys; pydantic keeps a repeated key's last value (as
    ``json.loads`` does) and parses it in one pass.
    """
    data, state, attempts, patches = reply
    return _validate_json(f'{data[:-1]}{patches},"state":"{state}","attempts":{int(attempts)}}}')


# What Job.model_validate_json calls, without its wrapper: a job per store reply adds up.
_validate_json: Callable[[str], Job] = Job.__pydantic_validator__.validate_json
