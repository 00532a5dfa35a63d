"""What gouache needs in a channel, and the owner's list of channels it cannot serve."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gouache.bot.permissions import (
    ADMINISTRATOR,
    ATTACH_FILES,
    EMBED_LINKS,
    SEND_MESSAGES,
    VIEW_CHANNEL,
    ChannelProblems,
    missing_permissions,
)
from gouache.bot.service import MissingPermissions, RequestContext, Requests
from gouache.queue.quota import QuotaPolicy
from gouache.storage.sqlite import SQLiteStore

from ..conftest import ManualClock

EVERYTHING = VIEW_CHANNEL | SEND_MESSAGES | EMBED_LINKS | ATTACH_FILES


def test_missing_permissions_names_each_missing_bit_in_grant_order() -> None:
    assert missing_permissions(EVERYTHING) == ()
    assert missing_permissions(None) == ()  # a DM: nothing to check
    assert missing_permissions(ADMINISTRATOR) == ()
    assert missing_permissions(EVERYTHING & ~ATTACH_FILES) == ("Attach Files",)
    assert missing_permissions(0) == (
        "View Channel",
        "Send Messages",
        "Embed Links",
        "Attach Files",
    )
    # Implicit rules: without Send Messages, a granted Attach Files does not help, and the
    # missing gating bit is what gets named.
    assert missing_permissions(VIEW_CHANNEL | ATTACH_FILES | EMBED_LINKS) == ("Send Messages",)


def test_channel_problems_tell_the_owner_once_per_problem_and_forget_solved_ones() -> None:
    told: list[str] = []
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    now = [t0]
    problems = ChannelProblems(notify=told.append, now=lambda: now[0])
    assert problems.record(9, 10, ("Attach Files",))
    now[0] = t0 + timedelta(minutes=1)
    assert not problems.record(9, 10, ("Attach Files",))
    assert len(told) == 1 and "<#10>" in told[0] and "Attach Files" in told[0]
    assert problems.rows() == [
        {
            "guild_id": 9,
            "channel_id": 10,
            "missing": ["Attach Files"],
            "since": t0.isoformat(),
            "refused": 2,
            "source": "request",
        }
    ]
    # A different problem in the same channel is news.
    assert problems.record(9, 10, ("Send Messages",))
    assert len(told) == 2 and problems.rows()[0]["refused"] == 1
    assert problems.resolve(10) and not problems.resolve(10)
    assert problems.rows() == [] and len(problems) == 0


@pytest.fixture
async def requests(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Requests]:
    async with SQLiteStore(tmp_path / "g.db", clock=clock) as store:
        yield Requests(
            store=store,
            policy=QuotaPolicy("UTC", default_limit=3),
            clock=clock,
            channel_problems=ChannelProblems(),
        )


async def test_a_request_where_gouache_cannot_deliver_is_refused_before_anything_is_taken(
    requests: Requests,
) -> None:
    refused: list[str] = []
    requests.on_refused = refused.append
    ctx = RequestContext(
        user_id=1, guild_id=9, channel_id=10, locale="en-US", app_permissions=EVERYTHING
    )
    blocked = replace(ctx, app_permissions=EVERYTHING & ~EMBED_LINKS)
    with pytest.raises(MissingPermissions) as caught:
        await requests.imagine(blocked, "a fox --ar 99:1x")  # even a bad prompt: channel first
    assert caught.value.missing == ("Embed Links",) and "Embed Links" in str(caught.value)
    assert refused == ["missing_permissions"]
    assert (await requests.quota(ctx)).used == 0 and await requests.store.depth() == 0
    zh = replace(blocked, locale="zh-CN")
    with pytest.raises(MissingPermissions, match="权限"):
        await requests.imagine(zh, "a fox")
    assert requests.channel_problems is not None
    assert requests.channel_problems.rows()[0]["refused"] == 2
    receipt = await requests.imagine(ctx, "a fox")
    assert receipt.quota.used == 1 and requests.channel_problems.rows() == []
