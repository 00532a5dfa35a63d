"""Fixtures of the store tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[Redis]:
    """A plain client on the test Redis, to look at keys and play the operator (pause, kill)."""
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()
