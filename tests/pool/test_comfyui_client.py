"""`ComfyUIClient` against the ComfyUI stand-in on loopback: the calls, and errors translated once.

A server that answers with a status we cannot use is `ComfyUIRejected`; one
that does not answer (refused, silent, not started) is `ComfyUIUnreachable`
with the transport error chained; an image over the limit is `ComfyUITooLarge`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from yarl import URL

from gouache.pool.comfyui_client import (
    Answer,
    ComfyUIClient,
    ComfyUIRejected,
    ComfyUITooLarge,
    ComfyUIUnreachable,
)
from gouache_sandbox.comfyui import ComfyUISandbox

#: EmptyImage → SaveImage: a model-free graph the stand-in runs at once.
GRAPH: dict[str, Any] = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": 255},
    },
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "c"}},
}


@pytest.fixture
async def comfy() -> AsyncIterator[ComfyUISandbox]:
    async with ComfyUISandbox() as sandbox:
        yield sandbox


@contextlib.asynccontextmanager
async def opened(url: str, **kwargs: Any) -> AsyncIterator[ComfyUIClient]:
    client = ComfyUIClient("gpu1", URL(url), **kwargs)
    client.open()
    try:
        yield client
    finally:
        await client.aclose()


async def run_one(comfy: ComfyUISandbox, client: ComfyUIClient, prompt_id: str) -> None:
    answer = await client.submit(GRAPH, client_id="test", prompt_id=prompt_id)
    assert answer == Answer(200, {"prompt_id": prompt_id, "number": 0, "node_errors": {}})
    await comfy.wait_idle()


def free_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# -- the calls ---------------------------------------------------------------------------------


async def test_submit_history_view_and_stats(comfy: ComfyUISandbox) -> None:
    async with opened(comfy.url) as client:
        assert await client.history("p1") is None  # not yet submitted
        await run_one(comfy, client, "p1")
        entry = await client.history("p1")
        assert entry is not None and entry["status"]["status_str"] == "success"
        [image] = entry["outputs"]["2"]["images"]
        data = await client.view(image)
        assert data.startswith(b"\x89PNG")
        assert data == (comfy.files.dirs["output"] / image["filename"]).read_bytes()
        stats = await client.system_stats()
        assert isinstance(stats, dict) and "system" in stats


async def test_queue_delete_and_interrupt(comfy: ComfyUISandbox) -> None:
    async with opened(comfy.url) as client:
        comfy.pause_on(lambda cp: cp.class_type == "EmptyImage")  # SaveImage checks the flag
        await client.submit(GRAPH, client_id="test", prompt_id="running")
        await comfy.wait_paused()
        await client.submit(GRAPH, client_id="test", prompt_id="waiting")
        queue = await client.queue()
        assert [row[1] for row in queue["queue_running"]] == ["running"]
        assert [row[1] for row in queue["queue_pending"]] == ["waiting"]
        await client.delete(["waiting"])
        assert (await client.queue())["queue_pending"] == []
        await client.interrupt("running")
        comfy.resume()
        await comfy.wait_idle()
        entry = await client.history("running")
        assert entry is not None
        assert "execution_interrupted" in [m[0] for m in entry["status"]["messages"]]
        assert await client.history("waiting") is None


async def test_a_rejected_prompt_is_an_answer_not_an_error(comfy: ComfyUISandbox) -> None:
    async with opened(comfy.url) as client:
        bad = {"1": {"class_type": "NoSuchNode", "inputs": {}}}
        answer = await client.submit(bad, client_id="test", prompt_id="bad")
        assert answer.status == 400 and answer.body["error"]["type"] == "invalid_prompt"


async def test_the_websocket_handshake(comfy: ComfyUISandbox) -> None:
    async with opened(comfy.url) as client:
        ws = await client.connect(URL(comfy.ws_url("test")), heartbeat=5, max_msg_size=2**20)
        try:
            hello = await ws.receive_json(timeout=5)
            assert hello["type"] == "status" and hello["data"]["sid"] == "test"
        finally:
            await ws.close()


# -- errors, translated at the edge ----------------------------------------------------------


async def test_http_500_is_an_answer_to_submit_and_rejected_elsewhere(
    comfy: ComfyUISandbox,
) -> None:
    async with opened(comfy.url) as client:
        comfy.faults.http_500["/prompt"] = 1
        answer = await client.submit(GRAPH, client_id="test", prompt_id="p")
        assert answer.status == 500 and isinstance(answer.body, str)  # the text body
        for path, call in [
            ("/queue", client.queue),
            ("/system_stats", client.system_stats),
            ("/history", lambda: client.history("p")),
        ]:
            comfy.faults.http_500[path] = 1
            with pytest.raises(ComfyUIRejected, match="gpu1 answered HTTP 500"):
                await call()
        comfy.faults.http_500["/view"] = 1
        ref = {"filename": "x.png", "subfolder": "", "type": "output"}
        with pytest.raises(ComfyUIRejected, match="HTTP 500 for an image"):
            await client.view(ref)
        with pytest.raises(ComfyUIRejected, match="HTTP 404 for an image"):
            await client.view(ref)  # the file does not exist
        comfy.faults.http_500["/ws"] = 1
        with pytest.raises(ComfyUIUnreachable, match="refused the WebSocket") as refused:
            await client.connect(URL(comfy.ws_url("test")), heartbeat=5, max_msg_size=2**20)
        assert isinstance(refused.value.__cause__, aiohttp.WSServerHandshakeError)


async def test_a_refused_connection_is_unreachable() -> None:
    url = f"http://owner:hunter2@127.0.0.1:{free_port()}"
    async with opened(url) as client:
        calls = [
            client.queue(),
            client.system_stats(),
            client.delete(["p"]),
            client.interrupt("p"),
            client.submit(GRAPH, client_id="test", prompt_id="p"),
            client.view({"filename": "x.png", "subfolder": "", "type": "output"}),
            client.connect(URL(url) / "ws", heartbeat=5, max_msg_size=2**20),
        ]
        for call in calls:
            with pytest.raises(ComfyUIUnreachable, match="gpu1") as caught:
                await call
            assert isinstance(caught.value.__cause__, aiohttp.ClientConnectionError | OSError)
            assert "hunter2" not in str(caught.value) and "127.0.0.1" not in str(caught.value)
        assert "hunter2" not in repr(client)


async def test_a_server_that_never_answers_times_out_as_unreachable() -> None:
    accepted = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        await reader.read()  # read until the client gives up; never answer
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with opened(f"http://127.0.0.1:{port}", request_s=0.2) as client:
            with pytest.raises(ComfyUIUnreachable) as caught:
                await client.queue()
            assert accepted.is_set()
            assert isinstance(caught.value.__cause__, TimeoutError)
    finally:
        server.close()
        await server.wait_closed()


async def test_calls_before_open_are_unreachable() -> None:
    client = ComfyUIClient("gpu1", URL("http://127.0.0.1:1"))
    assert not client.started
    with pytest.raises(ComfyUIUnreachable, match="not started"):
        await client.queue()
    await client.aclose()  # nothing to close


async def test_a_given_session_is_used_and_left_open(comfy: ComfyUISandbox) -> None:
    async with aiohttp.ClientSession() as session:
        client = ComfyUIClient("gpu1", URL(comfy.url), session=session)
        assert client.started
        assert await client.queue() == {"queue_running": [], "queue_pending": []}
        await client.aclose()
        assert not session.closed


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_an_image_over_the_limit_is_too_large(comfy: ComfyUISandbox, chunked: bool) -> None:
    async with opened(comfy.url) as client:
        await run_one(comfy, client, "p")
        entry = await client.history("p")
        assert entry is not None
        [ref] = entry["outputs"]["2"]["images"]
        size = len(await client.view(ref))
        comfy.faults.view_chunked = chunked
        assert len(await client.view(ref)) == size  # exactly at the limit is fine
        client.max_image_bytes = size
        assert len(await client.view(ref)) == size
        client.max_image_bytes = size - 1
        with pytest.raises(ComfyUITooLarge, match="too large"):
            await client.view(ref)
