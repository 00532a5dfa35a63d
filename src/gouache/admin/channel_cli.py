"""``gouache channel show|set``: a channel's settings from the owner's terminal (admin API)."""

from __future__ import annotations

from typing import Any

import click

from gouache.admin.cli import Output, _command
from gouache.admin.client import AdminClient
from gouache.channels.settings import SETTING_NAMES


def _lines(data: dict[str, Any]) -> str:
    head = f"Channel {data['channel_id']}"
    cap = data["settings"].get("daily_cap")
    used = f"\n  used today: {data['used_today']} of {cap}" if cap else ""
    return head + "\n" + "\n".join(f"  {line}" for line in data["lines"]) + used


def _parse(pairs: tuple[str, ...]) -> dict[str, str]:
    changes: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise click.UsageError(f"Write each change as NAME=VALUE, not {pair!r}.")
        changes[name.strip()] = value.strip()
    return changes


@click.group()
def channel() -> None:
    """A channel's image settings (defaults, model, content rule, daily cap)."""


@channel.command("show")
@click.argument("channel_id", type=click.IntRange(1), required=False)
@_command
def channel_show(client: AdminClient, out: Output, channel_id: int | None) -> None:
    """One channel's settings, or every channel that has some."""
    if channel_id is not None:
        data = client.channel(channel_id)
        out.show(data, lambda: _lines(data))
        return
    every = client.channels()
    rows = every["channels"]
    out.show(every, lambda: "\n".join(_lines(r) for r in rows) or "No channel has settings.")


@channel.command(
    "set",
    epilog="Settings: "
    + "; ".join(f"{k} ({v})" for k, v in SETTING_NAMES.items())
    + ". 'none' clears one.",
)
@click.argument("channel_id", type=click.IntRange(1))
@click.argument("changes", nargs=-1, required=True, metavar="NAME=VALUE...")
@_command
def channel_set(
    client: AdminClient, out: Output, channel_id: int, changes: tuple[str, ...]
) -> None:
    """Change settings, all or nothing (e.g. backend=midjourney model=niji daily_cap=200)."""
    data = client.patch_channel(channel_id, _parse(changes))
    out.show(data, lambda: "Saved.\n" + _lines(data))
