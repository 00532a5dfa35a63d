"""The Ollama stand-in speaks Ollama's HTTP shapes (JSON and NDJSON streams) and fails on demand."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from gouache_sandbox.ollama import OllamaSandbox, toy_translate

_STATS = {
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
}


@pytest.fixture
async def ollama() -> AsyncIterator[OllamaSandbox]:
    async with OllamaSandbox() as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


def chat(content: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": "qwen2.5:7b",
        "messages": [
            {"role": "system", "content": "Translate to English."},
            {"role": "user", "content": content},
        ],
        **extra,
    }


def test_toy_translation_is_deterministic() -> None:
    assert (
        toy_translate("一只可爱的猫在月球上，水墨画风格")
        == "a cute cat on moon, ink wash painting style"
    )
    assert toy_translate("a red 狐狸 ⟦1⟧") == "a red fox ⟦1⟧"
    assert toy_translate("鑫") == "U+946B"


async def test_chat_without_streaming(ollama: OllamaSandbox, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{ollama.url}/api/chat", json=chat("一只猫", stream=False)) as resp:
        assert resp.status == 200 and resp.content_type == "application/json"
        body = await resp.json()
    assert body["model"] == "qwen2.5:7b" and body["done"] is True and body["done_reason"] == "stop"
    assert body["message"] == {"role": "assistant", "content": "a cat"}
    assert body["created_at"].endswith("Z") and set(body) >= _STATS
    assert all(isinstance(body[k], int) and body[k] > 0 for k in _STATS)
    assert ollama.requests[-1]["messages"][1]["content"] == "一只猫"


async def test_chat_streams_ndjson_by_default(
    ollama: OllamaSandbox, http: aiohttp.ClientSession
) -> None:
    async with http.post(f"{ollama.url}/api/chat", json=chat("一只可爱的猫")) as resp:
        assert resp.status == 200 and resp.content_type == "application/x-ndjson"
        lines = [json.loads(line) async for line in resp.content if line.strip()]
    assert [x["done"] for x in lines] == [False, False, False, True]
    assert "".join(x["message"]["content"] for x in lines) == "a cute cat"
    assert lines[-1]["done_reason"] == "stop" and set(lines[-1]) >= _STATS
    assert not _STATS & set(lines[0])


@pytest.mark.parametrize("stream", [False, True])
async def test_generate(ollama: OllamaSandbox, http: aiohttp.ClientSession, stream: bool) -> None:
    payload = {"model": "qwen2.5", "prompt": "红色的龙", "stream": stream}  # no tag = latest
    ollama.settings.models = ("qwen2.5:latest",)
    async with http.post(f"{ollama.url}/api/generate", json=payload) as resp:
        assert resp.status == 200
        lines = [json.loads(line) async for line in resp.content if line.strip()]
    assert "".join(x["response"] for x in lines) == "red dragon"
    last = lines[-1]
    assert last["done"] is True and isinstance(last["context"], list) and set(last) >= _STATS
    assert len(lines) == (3 if stream else 1)


async def test_tags_and_version(ollama: OllamaSandbox, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{ollama.url}/api/tags") as resp:
        models = (await resp.json())["models"]
    assert [m["name"] for m in models] == list(ollama.settings.models)
    assert {"name", "model", "modified_at", "size", "digest", "details"} <= set(models[0])
    assert len(models[0]["digest"]) == 64
    async with http.get(f"{ollama.url}/api/version") as resp:
        assert "version" in await resp.json()
    async with http.get(ollama.url) as resp:
        assert await resp.text() == "Ollama is running"


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b"{not json", 400, "invalid character"),
        (b'{"messages": []}', 400, "model is required"),
        (b'{"model": "mistral:7b", "messages": []}', 404, 'model "mistral:7b" not found'),
        (b'{"model": "qwen2.5:7b", "messages": "hi"}', 400, "messages must be"),
    ],
)
async def test_errors(
    ollama: OllamaSandbox, http: aiohttp.ClientSession, body: bytes, status: int, error: str
) -> None:
    async with http.post(f"{ollama.url}/api/chat", data=body) as resp:
        assert resp.status == status
        assert error in (await resp.json())["error"]


async def test_failure_injection_and_custom_responder(
    ollama: OllamaSandbox, http: aiohttp.ClientSession
) -> None:
    ollama.settings.fail_next = 1
    ollama.settings.fail_status = 503
    async with http.post(f"{ollama.url}/api/chat", json=chat("猫", stream=False)) as resp:
        assert resp.status == 503 and "error" in await resp.json()
    ollama.settings.responder = lambda text: f"<{text}>"
    async with http.post(f"{ollama.url}/api/chat", json=chat("猫", stream=False)) as resp:
        assert (await resp.json())["message"]["content"] == "<猫>"
    assert ollama.served == 1


async def test_hang_is_ended_by_the_client_timeout_and_released_on_close(
    http: aiohttp.ClientSession,
) -> None:
    server = OllamaSandbox()
    await server.start()
    server.settings.hang_next = 1
    request = asyncio.create_task(
        http.post(f"{server.url}/api/chat", json=chat("猫", stream=False))
    )
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(request), 0.3)
    await asyncio.wait_for(server.aclose(), 5)  # a hung handler does not hold up shutdown
    # the held request ends: answered 503 when released, or cut off with the connection
    try:
        resp = await asyncio.wait_for(request, 5)
    except aiohttp.ClientError:
        return
    assert resp.status == 503
    resp.release()
