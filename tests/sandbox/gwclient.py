"""A minimal raw gateway client for tests (aiohttp WebSocket + zlib-stream decoding)."""

from __future__ import annotations

import asyncio
import json
import zlib
from typing import Any

import aiohttp


class RawGateway:
    """One raw connection: ``recv()`` frames (decompressing zlib-stream), ``send()`` objects."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, compressed: bool) -> None:
        self.ws = ws
        self.compressed = compressed
        self.inflator = zlib.decompressobj()
        self.buffer = bytearray()
        self.raw_frames: list[bytes] = []

    @classmethod
    async def connect(
        cls, session: aiohttp.ClientSession, url: str, *, compress: bool = False, v: int = 10
    ) -> RawGateway:
        """Connect to ``url`` with Discord's query string."""
        query = f"?v={v}&encoding=json" + ("&compress=zlib-stream" if compress else "")
        ws = await session.ws_connect(url + query, autoclose=False, autoping=True)
        return cls(ws, compress)

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next JSON frame; raises ``ConnectionError`` carrying the close code on close."""
        while True:
            msg = await self.ws.receive(timeout=timeout)
            if msg.type == aiohttp.WSMsgType.TEXT:
                return dict(json.loads(msg.data))
            if msg.type == aiohttp.WSMsgType.BINARY:
                self.raw_frames.append(bytes(msg.data))
                self.buffer.extend(msg.data)
                if self.buffer[-4:] != b"\x00\x00\xff\xff":
                    continue
                text = self.inflator.decompress(bytes(self.buffer))
                self.buffer.clear()
                return dict(json.loads(text))
            raise ConnectionError(self.ws.close_code, msg.type)

    async def recv_until(self, predicate: Any, timeout: float = 5.0) -> dict[str, Any]:
        """Skip frames until one matches ``predicate``."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.recv(timeout)
                if predicate(frame):
                    return frame

    async def close_code(self, timeout: float = 5.0) -> int | None:
        """Read until the server closes; the close code it sent."""
        async with asyncio.timeout(timeout):
            while True:
                try:
                    await self.recv(timeout)
                except ConnectionError:
                    return self.ws.close_code

    async def send(self, obj: Any) -> None:
        """Send ``obj`` as JSON text."""
        await self.ws.send_str(json.dumps(obj))

    async def identify_bot(
        self, token: str, intents: int = (1 << 9) | 1, **extra: Any
    ) -> dict[str, Any]:
        """IDENTIFY as a bot; returns READY."""
        d = {
            "token": token,
            "intents": intents,
            "properties": {"os": "linux", "browser": "t", "device": "t"},
        }
        d.update(extra)
        await self.send({"op": 2, "d": d})
        return await self.recv_until(lambda f: f.get("t") == "READY")

    async def identify_user(self, token: str) -> dict[str, Any]:
        """IDENTIFY as a user account (browser properties, capabilities); returns READY."""
        await self.send(
            {
                "op": 2,
                "d": {
                    "token": token,
                    "capabilities": 16381,
                    "properties": {
                        "os": "Windows",
                        "browser": "Chrome",
                        "device": "",
                        "system_locale": "en-US",
                        "browser_user_agent": "Mozilla/5.0",
                        "browser_version": "120.0",
                        "client_build_number": 250000,
                        "release_channel": "stable",
                    },
                    "presence": {"status": "online", "since": 0, "activities": [], "afk": False},
                    "compress": False,
                    "client_state": {"guild_versions": {}},
                },
            }
        )
        return await self.recv_until(lambda f: f.get("t") == "READY")
