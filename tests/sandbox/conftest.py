"""Fixtures: a started Discord sandbox on loopback with a fast Midjourney stand-in."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gouache_sandbox.discord import DiscordSandbox


@pytest.fixture
async def sandbox() -> AsyncIterator[DiscordSandbox]:
    """A running sandbox; the Midjourney stand-in steps without delay."""
    sb = DiscordSandbox()
    assert sb.midjourney is not None
    sb.midjourney.settings.step_delay = 0.0
    sb.midjourney.settings.progress_steps = (15, 50, 93)
    sb.midjourney.settings.tile_size = 32
    await sb.start()
    try:
        yield sb
    finally:
        await sb.aclose()
