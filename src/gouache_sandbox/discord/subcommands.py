"""Subcommands in the viewer's command box: ``/settings set backend:comfyui``."""

from __future__ import annotations

from typing import Any

from gouache_sandbox.discord.viewmodel import CommandLineError


def split_subcommand(options: list[Any], rest: str) -> tuple[str, str, list[Any]]:
    """``(subcommand, the rest, its options)``; no subcommand when the command has none."""
    subs = {str(o["name"]): o for o in options if int(o.get("type", 0)) == 1}
    if not subs:
        return "", rest, options
    word, _, tail = rest.partition(" ")
    if word not in subs:
        raise CommandLineError(f"pick one of: {', '.join(sorted(subs))}")
    return word, tail.strip(), list(subs[word].get("options") or [])
