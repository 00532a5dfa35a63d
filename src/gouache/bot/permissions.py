"""What gouache needs in a channel to serve it, and the channels where it is missing.

gouache answers a request through the interaction, then keeps the reply up to
date: through the interaction webhook for 15 minutes, after that through the
channel with the bot's own token (see `gouache.bot.delivery`). A job may wait
longer than 15 minutes, so a channel is served only where the bot itself may
deliver: VIEW_CHANNEL, SEND_MESSAGES (a new message when the reply is gone),
EMBED_LINKS (the job's card; Discord silently drops embeds without it) and
ATTACH_FILES (the image). gouache reads no message history, so it does not
ask for READ_MESSAGE_HISTORY.

The check uses the interaction's ``app_permissions`` (the bot's computed bits
in the channel, overwrites included). Discord does not apply its implicit
rules to those bits (no VIEW_CHANNEL means nothing; no SEND_MESSAGES means no
files or embeds); naming every missing gating bit covers them, since a bit
that is only implicitly lost always comes with a named missing one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gouache.jobs import utcnow

ADMINISTRATOR = 1 << 3
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15

#: What gouache needs where it serves, in the order an admin should grant them.
NEEDED: tuple[tuple[int, str], ...] = (
    (VIEW_CHANNEL, "View Channel"),
    (SEND_MESSAGES, "Send Messages"),
    (EMBED_LINKS, "Embed Links"),
    (ATTACH_FILES, "Attach Files"),
)


def missing_permissions(app_permissions: int | None) -> tuple[str, ...]:
    """Names of the permissions gouache lacks (empty: it can serve; None: unknown, e.g. a DM)."""
    if app_permissions is None or app_permissions & ADMINISTRATOR:
        return ()
    return tuple(name for bit, name in NEEDED if not app_permissions & bit)


@dataclass
class ChannelProblem:
    """A channel where gouache cannot deliver, as the owner sees it."""

    guild_id: int | None
    channel_id: int
    missing: tuple[str, ...]
    since: datetime
    refused: int = 0
    source: str = "request"  # "request": seen in app_permissions; "delivery": a 403 mid-job

    def row(self) -> dict[str, Any]:
        """A JSON-able row for `gouache pool status`."""
        return {
            "guild_id": self.guild_id,
            "channel_id": self.channel_id,
            "missing": list(self.missing),
            "since": self.since.isoformat(),
            "refused": self.refused,
            "source": self.source,
        }


@dataclass
class ChannelProblems:
    """Channels gouache cannot serve; tells the owner once per channel and problem."""

    #: Called with a one-line message the first time a problem is seen (and again if it changes).
    notify: Callable[[str], None] | None = None
    now: Callable[[], datetime] = utcnow
    _by_channel: dict[int, ChannelProblem] = field(default_factory=dict)

    def record(
        self,
        guild_id: int | None,
        channel_id: int,
        missing: tuple[str, ...],
        *,
        source: str = "request",
    ) -> bool:
        """Note that a request was refused (or a delivery failed) here; True if the owner was told."""
        known = self._by_channel.get(channel_id)
        if known is not None and known.missing == missing:
            known.refused += source == "request"
            return False
        self._by_channel[channel_id] = ChannelProblem(
            guild_id, channel_id, missing, self.now(), int(source == "request"), source
        )
        if self.notify is not None:
            where = f"<#{channel_id}>" + (f" (server {guild_id})" if guild_id else "")
            self.notify(
                f"gouache cannot deliver images in {where}: missing "
                f"{', '.join(missing) or 'permissions'}. Requests there are refused until "
                "an admin grants them."
            )
        return True

    def resolve(self, channel_id: int) -> bool:
        """The channel works again (a request there passed the check); True if it was listed."""
        return self._by_channel.pop(channel_id, None) is not None

    def rows(self) -> list[dict[str, Any]]:
        """Every open problem, oldest first."""
        return [p.row() for p in sorted(self._by_channel.values(), key=lambda p: p.since)]

    def __len__(self) -> int:
        return len(self._by_channel)
