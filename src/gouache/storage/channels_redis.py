"""Channel settings, member preferences and channel usage on Redis (a `RedisStore` mixin).

Settings are one hash field per channel (``{prefix}:chsettings``), preferences
one per member (``{prefix}:prefs``), read on every request so that every
process sees a change at once. A channel's use of its daily cap is
``{prefix}:chcap:<channel>:<day>``, reserved and given back by the Lua
scripts together with the member's quota (enqueue.lua, ``settle`` in
_common.lua).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gouache.channels.settings import ChannelSettings, MemberPreferences
from gouache.queue.quota import Clock, QuotaPolicy


class RedisChannels:
    """`gouache.channels.ChannelStore` for `RedisStore`."""

    base: str
    policy: QuotaPolicy
    clock: Clock
    _command: Callable[..., Any]

    async def get_channel_settings(self, channel_id: int) -> ChannelSettings:
        """The channel's settings (the defaults if it has none)."""
        data = await self._command("HGET", f"{self.base}:chsettings", str(channel_id))
        return ChannelSettings.from_json(data)

    async def put_channel_settings(self, channel_id: int, settings: ChannelSettings) -> None:
        """Replace the channel's settings (all of them, in one write)."""
        await self._command("HSET", f"{self.base}:chsettings", str(channel_id), settings.to_json())

    async def all_channel_settings(self) -> dict[int, ChannelSettings]:
        """Every channel that has settings."""
        raw = await self._command("HGETALL", f"{self.base}:chsettings")
        pairs = raw.items() if isinstance(raw, dict) else zip(raw[::2], raw[1::2], strict=True)
        return {int(k): ChannelSettings.from_json(v) for k, v in pairs}

    async def get_preferences(self, user_id: int) -> MemberPreferences:
        """The member's own defaults."""
        data = await self._command("HGET", f"{self.base}:prefs", str(user_id))
        return MemberPreferences.from_json(data)

    async def put_preferences(self, user_id: int, prefs: MemberPreferences) -> None:
        """Replace the member's own defaults."""
        await self._command("HSET", f"{self.base}:prefs", str(user_id), prefs.to_json())

    async def channel_used(self, channel_id: int) -> int:
        """Images the channel has reserved today."""
        day = self.policy.day_key(self.clock())
        used = await self._command("HGET", f"{self.base}:chcap:{channel_id}:{day}", "used")
        return int(used or 0)
