"""An account's Remix mode, read from Midjourney's ``/settings`` answer (plain functions).

``/settings`` is answered with a message (seen only by the account) whose
buttons are the toggles: each is green (style 3) when on and grey (style 2)
when off. The Remix toggle's custom id is ``MJ::Settings::RemixMode``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gouache.pool.midjourney_wire import CommandRef

REMIX_TOGGLE = "MJ::Settings::RemixMode"
_ON = 3


def read_remix(data: Mapping[str, Any]) -> bool | None:
    """Whether the settings message ``data`` shows Remix mode on (None: no Remix toggle in it)."""
    rows = data.get("components")
    for row in rows if isinstance(rows, list) else []:
        inner = row.get("components") if isinstance(row, Mapping) else None
        for item in inner if isinstance(inner, list) else []:
            if isinstance(item, Mapping) and item.get("custom_id") == REMIX_TOGGLE:
                return item.get("style") == _ON
    return None


def settings_body(
    command: CommandRef, *, guild_id: str, channel_id: str, session_id: str, nonce: str
) -> dict[str, Any]:
    """The ``POST /interactions`` body of ``/settings`` (type 2, no options)."""
    return {
        "type": 2,
        "application_id": command.application_id,
        "guild_id": guild_id,
        "channel_id": channel_id,
        "session_id": session_id,
        "nonce": nonce,
        "data": {
            "version": command.version,
            "id": command.id,
            "name": command.name,
            "type": command.type,
            "options": [],
        },
    }
