"""The demo guild's themed channels and their settings.

#imagine takes any backend; #niji runs Midjourney with niji as its default
model and keeps result buttons to the member who asked; #comfy runs ComfyUI
with a chosen workflow; #after-dark is marked NSFW, where adult prompts are
allowed. The settings go through the same `ChannelRules.change` as
`/settings set`, so they are validated like any operator's.
"""

from __future__ import annotations

from dataclasses import dataclass

from gouache.app import App
from gouache_sandbox.discord import DiscordSandbox
from gouache_sandbox.discord.state import Channel, Guild


@dataclass(frozen=True)
class DemoChannels:
    """The themed channels beside #imagine."""

    niji: Channel
    comfy: Channel
    after_dark: Channel


def add_demo_channels(sandbox: DiscordSandbox, guild: Guild) -> DemoChannels:
    """Create #niji, #comfy and the NSFW #after-dark in the demo guild."""
    return DemoChannels(
        niji=sandbox.add_channel(guild, "niji"),
        comfy=sandbox.add_channel(guild, "comfy"),
        after_dark=sandbox.add_channel(guild, "after-dark", nsfw=True),
    )


async def configure_demo_channels(app: App, channels: DemoChannels, workflow: str) -> None:
    """Give the themed channels their settings (as an operator's `/settings set` would)."""
    rules = app.requests.channels
    if rules is None:
        return
    await rules.change(
        channels.niji.id, {"backend": "midjourney", "model": "niji", "requester_only": "true"}
    )
    await rules.change(channels.comfy.id, {"backend": "comfyui", "workflow": workflow})
