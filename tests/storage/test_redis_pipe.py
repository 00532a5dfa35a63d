"""The Redis store's connection on its own: closing with replies owed, a server that never answers."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from redis import exceptions as redis_exceptions
from redis.asyncio import Redis

from gouache.storage import redis_pipe
from gouache.storage.redis_pipe import RedisPipe
from gouache.storage.redis_records import script_source


async def test_closing_does_not_wait_for_a_redis_that_stopped_answering(
    redis_url: str, raw: Redis
) -> None:
    base = "{pipe-" + uuid.uuid4().hex[:8] + "}"
    pipe = RedisPipe(redis_url, base=base, script=script_source())
    await pipe.connect()
    assert await pipe.op("position", "nope") is None  # the script answers
    await raw.client_pause(10_000, all=False)  # scripts wait: replies are owed
    try:
        owed = [pipe.op("get", f"job-{i}") for i in range(5)]
        await asyncio.sleep(0)  # written
        started = time.perf_counter()
        await pipe.aclose(timeout=0.2)
        assert time.perf_counter() - started < 2.0
    finally:
        await raw.client_unpause()
    results = await asyncio.gather(*owed, return_exceptions=True)
    assert all(isinstance(r, redis_exceptions.ConnectionError) for r in results)
    with pytest.raises(RuntimeError, match="connection is closed"):
        pipe.call("PING")


async def test_a_server_that_never_answers_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # accepts the connection, never says a word

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setattr(redis_pipe, "CONNECT_TIMEOUT_S", 0.3)
    try:
        pipe = RedisPipe(f"redis://127.0.0.1:{port}/0", base="{x}", script=script_source())
        started = time.perf_counter()
        with pytest.raises(redis_exceptions.ConnectionError, match=r"no answer within 0\.3 s"):
            await pipe.connect()
        assert time.perf_counter() - started < 3.0
        assert accepted  # it did connect: the handshake is what went unanswered
        await pipe.aclose()
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
