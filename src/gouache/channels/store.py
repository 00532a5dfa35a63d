"""What the channel settings need from a store (both backends implement it as a mixin).

``storage/channels_sqlite.py`` and ``storage/channels_redis.py``; the per-channel
daily cap itself is reserved by `Store.enqueue` (``channel_cap``) and given back
when the job fails or is cancelled, atomically with the member's quota.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from gouache.channels.settings import ChannelSettings, MemberPreferences


@runtime_checkable
class ChannelStore(Protocol):
    """Channel settings, member preferences and channel usage, shared by every process."""

    async def get_channel_settings(self, channel_id: int) -> ChannelSettings:
        """The channel's settings (the defaults if it has none)."""

    async def put_channel_settings(self, channel_id: int, settings: ChannelSettings) -> None:
        """Replace the channel's settings (all of them, in one write)."""

    async def all_channel_settings(self) -> dict[int, ChannelSettings]:
        """Every channel that has settings."""

    async def get_preferences(self, user_id: int) -> MemberPreferences:
        """The member's own defaults."""

    async def put_preferences(self, user_id: int, prefs: MemberPreferences) -> None:
        """Replace the member's own defaults."""

    async def channel_used(self, channel_id: int) -> int:
        """Images the channel has reserved today (its daily cap counts these)."""
