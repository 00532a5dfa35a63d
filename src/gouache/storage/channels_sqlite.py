"""Channel settings, member preferences and channel usage on SQLite (a `SQLiteStore` mixin).

The tables come from the store's migration 4 (``channel_settings``,
``member_prefs``, ``channel_usage`` and the ``jobs.chcap`` column that marks a
job whose channel cap was reserved, so a failure or cancel gives it back).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from gouache.channels.settings import ChannelSettings, MemberPreferences
from gouache.queue.quota import Clock, QuotaPolicy

T = TypeVar("T")

MIGRATION = """
CREATE TABLE channel_settings (channel_id INTEGER PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE member_prefs (user_id INTEGER PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE channel_usage (
    channel_id INTEGER NOT NULL,
    day TEXT NOT NULL,
    used INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (channel_id, day)
);
ALTER TABLE jobs ADD COLUMN chcap INTEGER;
"""


def reserve_channel(  # noqa: PLR0913
    conn: sqlite3.Connection, channel_id: int, day: str, cost: int, limit: int, job_id: str
) -> int | None:
    """Reserve ``cost`` of the channel's cap for the job; the channel's use, or None if full."""
    row = conn.execute(
        "INSERT INTO channel_usage(channel_id, day, used) VALUES (?, ?, ?) "
        "ON CONFLICT(channel_id, day) DO UPDATE SET used = used + excluded.used "
        "WHERE used + excluded.used <= ? RETURNING used",
        (channel_id, day, cost, limit),
    ).fetchone()
    if row is None or int(row[0]) > limit:
        return None
    conn.execute("UPDATE jobs SET chcap = ? WHERE id = ?", (channel_id, job_id))
    return int(row[0])


def refund_channel(conn: sqlite3.Connection, job_id: str, day: str | None, cost: int) -> None:
    """Give back the channel cap a failed or cancelled job reserved (nothing if it reserved none)."""
    row = conn.execute("SELECT chcap FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None or row[0] is None or day is None:
        return
    conn.execute(
        "UPDATE channel_usage SET used = MAX(0, used - ?) WHERE channel_id = ? AND day = ?",
        (cost, row[0], day),
    )
    conn.execute("UPDATE jobs SET chcap = NULL WHERE id = ?", (job_id,))


class SQLiteChannels:
    """`gouache.channels.ChannelStore` for `SQLiteStore`."""

    policy: QuotaPolicy
    clock: Clock
    _run: Callable[..., Any]

    async def get_channel_settings(self, channel_id: int) -> ChannelSettings:
        """The channel's settings (the defaults if it has none)."""

        def read(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT data FROM channel_settings WHERE channel_id = ?", (channel_id,)
            ).fetchone()
            return str(row[0]) if row else None

        return ChannelSettings.from_json(await self._run(read))

    async def put_channel_settings(self, channel_id: int, settings: ChannelSettings) -> None:
        """Replace the channel's settings (all of them, in one write)."""
        data = settings.to_json()

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO channel_settings(channel_id, data) VALUES (?, ?) "
                "ON CONFLICT(channel_id) DO UPDATE SET data = excluded.data",
                (channel_id, data),
            )

        await self._run(write)

    async def all_channel_settings(self) -> dict[int, ChannelSettings]:
        """Every channel that has settings."""

        def read(conn: sqlite3.Connection) -> list[tuple[int, str]]:
            return list(conn.execute("SELECT channel_id, data FROM channel_settings"))

        rows = await self._run(read)
        return {int(cid): ChannelSettings.from_json(data) for cid, data in rows}

    async def get_preferences(self, user_id: int) -> MemberPreferences:
        """The member's own defaults."""

        def read(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT data FROM member_prefs WHERE user_id = ?", (user_id,)
            ).fetchone()
            return str(row[0]) if row else None

        return MemberPreferences.from_json(await self._run(read))

    async def put_preferences(self, user_id: int, prefs: MemberPreferences) -> None:
        """Replace the member's own defaults."""
        data = prefs.to_json()

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO member_prefs(user_id, data) VALUES (?, ?) "
                "ON CONFLICT(user_id) DO UPDATE SET data = excluded.data",
                (user_id, data),
            )

        await self._run(write)

    async def channel_used(self, channel_id: int) -> int:
        """Images the channel has reserved today."""
        day = self.policy.day_key(self.clock())

        def read(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT used FROM channel_usage WHERE channel_id = ? AND day = ?",
                (channel_id, day),
            ).fetchone()
            return int(row[0]) if row else 0

        return int(await self._run(read))
