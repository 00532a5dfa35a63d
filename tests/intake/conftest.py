"""Fixtures: the Ollama stand-in on loopback, a SQLite store, and intakes built on them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from gouache.bot.service import RequestContext
from gouache.intake import Intake, IntakeSettings, TranslateSettings
from gouache.storage.sqlite import SQLiteStore
from gouache_sandbox.ollama import OllamaSandbox

from ..conftest import ManualClock

MakeIntake = Callable[..., Awaitable[Intake]]


class Ticker:
    """A monotonic clock that only moves when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def ticker() -> Ticker:
    return Ticker()


@pytest.fixture
async def ollama() -> AsyncIterator[OllamaSandbox]:
    async with OllamaSandbox() as server:
        yield server


@pytest.fixture
async def store(tmp_path: Path, clock: ManualClock) -> AsyncIterator[SQLiteStore]:
    async with SQLiteStore(tmp_path / "intake.db", clock=clock) as s:
        yield s


@pytest.fixture
async def make_intake(
    ollama: OllamaSandbox, store: SQLiteStore, clock: ManualClock, ticker: Ticker
) -> AsyncIterator[MakeIntake]:
    """Build started intakes pointed at the stand-in; settings sections override by keyword."""
    made: list[Intake] = []

    async def build(**sections: Any) -> Intake:
        translate = {"ollama_url": ollama.url, "timeout_s": 2.0, **sections.pop("translate", {})}
        settings = IntakeSettings(translate=TranslateSettings(**translate), **sections)
        intake = Intake(settings, store, clock=clock, monotonic=ticker)
        await intake.start()
        made.append(intake)
        return intake

    yield build
    for intake in made:
        await intake.aclose()


def ctx(user: int = 1, *, locale: str = "en-US", owner: bool = False) -> RequestContext:
    return RequestContext(user_id=user, guild_id=9, channel_id=10, locale=locale, is_owner=owner)
