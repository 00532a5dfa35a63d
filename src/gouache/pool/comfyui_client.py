"""ComfyUI's HTTP API and WebSocket handshake for one server, with errors translated at the edge.

`ComfyUIClient` is to `gouache.pool.comfyui.ComfyUIWorker` what
`gouache.pool.midjourney_rest.UserApi` is to the Midjourney worker: it makes
the calls (``POST /prompt``, ``GET /history/<id>``, ``GET /queue``, ``POST
/queue`` delete, ``POST /interrupt``, ``GET /system_stats``, ``GET /view`` and
the ``/ws`` handshake) and decides nothing about jobs. Every transport failure
(connection refused or reset, timeout, a body that is not what it says)
leaves here as one of the `ComfyUIError` classes, with the cause chained for
the log; the messages name the server, never its URL or credentials.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from yarl import URL

from gouache.errors import ErrorCode, GouacheError

__all__ = [
    "MAX_IMAGE_BYTES",
    "Answer",
    "ComfyUIClient",
    "ComfyUIError",
    "ComfyUIRejected",
    "ComfyUITooLarge",
    "ComfyUIUnreachable",
]

MAX_IMAGE_BYTES: Final = 256 * 2**20
_CHUNK: Final = 2**16


class ComfyUIError(GouacheError):
    """The ComfyUI server failed us; the subclasses say how (catch this for any of them)."""

    code = ErrorCode.WORKER_ERROR


class ComfyUIUnreachable(ComfyUIError):
    """The server did not answer (connection refused or reset, timeout) or is not started."""


class ComfyUIRejected(ComfyUIError):
    """The server answered with an HTTP status we cannot use."""


class ComfyUITooLarge(ComfyUIError):
    """The server sent an image larger than we accept."""


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer: its status and body (decoded JSON, or the text when it is not JSON)."""

    status: int
    body: Any = None


class ComfyUIClient:
    """The HTTP calls of one ComfyUI server (``name`` is what error messages call it).

    ``base`` may carry user and password (sent as basic auth by aiohttp). The
    session is given (shared) or opened by `open` and then closed by `aclose`.
    """

    def __init__(  # noqa: PLR0913
        self,
        name: str,
        base: URL,
        *,
        request_s: float = 30.0,
        view_s: float = 120.0,
        connect_s: float = 10.0,
        max_image_bytes: int = MAX_IMAGE_BYTES,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.name = name
        self.base = base
        self.request_s = request_s
        self.view_s = view_s
        self.connect_s = connect_s
        self.max_image_bytes = max_image_bytes
        self._session = session
        self._own_session = session is None

    def __repr__(self) -> str:
        return f"ComfyUIClient({self.name!r}, {str(self.base.with_user(None))!r})"

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """Whether calls can be made (a session is open)."""
        return self._session is not None

    def open(self) -> None:
        """Open our own session unless one was given (idempotent)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.connect_s)
            )
            self._own_session = True

    async def aclose(self) -> None:
        """Close the session if it is ours (a given one belongs to the caller)."""
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def session(self) -> aiohttp.ClientSession:
        """The open HTTP session (for downloads beside the server's own calls)."""
        return self._http()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise ComfyUIUnreachable(f"The image server {self.name} is not started.")
        return self._session

    # -- the calls ---------------------------------------------------------------------------

    async def call(self, method: str, path: str, *, json_body: Any = None) -> Answer:
        """One request; any status is an `Answer`. `ComfyUIUnreachable` when it cannot be made."""
        try:
            async with (
                asyncio.timeout(self.request_s),
                self._http().request(method, self.base / path, json=json_body) as resp,
            ):
                if resp.content_type == "application/json":
                    return Answer(resp.status, await resp.json())
                return Answer(resp.status, await resp.text())
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            raise ComfyUIUnreachable(f"The image server {self.name} did not answer.") from exc

    async def post_form(self, path: str, form: aiohttp.FormData) -> Answer:
        """A multipart ``POST`` (uploads); any status is an `Answer`."""
        try:
            async with (
                asyncio.timeout(self.view_s),
                self._http().post(self.base / path, data=form) as resp,
            ):
                if resp.content_type == "application/json":
                    return Answer(resp.status, await resp.json())
                return Answer(resp.status, await resp.text())
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            raise ComfyUIUnreachable(f"The image server {self.name} did not answer.") from exc

    async def get_json(self, path: str) -> Any:
        """``GET path``'s body; `ComfyUIRejected` for any status but 200."""
        answer = await self.call("GET", path)
        if answer.status != 200:
            raise ComfyUIRejected(f"The image server {self.name} answered HTTP {answer.status}.")
        return answer.body

    async def submit(self, graph: Mapping[str, Any], *, client_id: str, prompt_id: str) -> Answer:
        """``POST /prompt``: the answer as it came (200 queued, 400 rejected, anything else)."""
        body = {"prompt": graph, "client_id": client_id, "prompt_id": prompt_id}
        return await self.call("POST", "prompt", json_body=body)

    async def history(self, prompt_id: str) -> Mapping[str, Any] | None:
        """``GET /history/<id>``: the prompt's entry, or None while the server has none."""
        body = await self.get_json(f"history/{prompt_id}")
        entry = body.get(prompt_id) if isinstance(body, Mapping) else None
        return entry if isinstance(entry, Mapping) else None

    async def queue(self) -> Mapping[str, Any]:
        """``GET /queue`` (``{}`` when the body is not an object)."""
        body = await self.get_json("queue")
        return body if isinstance(body, Mapping) else {}

    async def delete(self, prompt_ids: list[str]) -> None:
        """``POST /queue {"delete": [...]}``: drop pending prompts (the status is not checked)."""
        await self.call("POST", "queue", json_body={"delete": prompt_ids})

    async def interrupt(self, prompt_id: str) -> None:
        """``POST /interrupt {"prompt_id"}``: stop it if it is the one running."""
        await self.call("POST", "interrupt", json_body={"prompt_id": prompt_id})

    async def system_stats(self) -> Any:
        """``GET /system_stats`` (the health probe)."""
        return await self.get_json("system_stats")

    async def view(self, ref: Mapping[str, str]) -> bytes:
        """``GET /view``: one result file's bytes, at most ``max_image_bytes``."""
        params = {"filename": ref["filename"], "subfolder": ref["subfolder"], "type": ref["type"]}
        try:
            async with (
                asyncio.timeout(self.view_s),
                self._http().get(self.base / "view", params=params) as resp,
            ):
                if resp.status != 200:
                    raise ComfyUIRejected(
                        f"The image server {self.name} answered HTTP {resp.status} for an image."
                    )
                too_large = ComfyUITooLarge(f"An image from {self.name} is too large.")
                if (resp.content_length or 0) > self.max_image_bytes:
                    raise too_large
                # A chunked answer has no length: count while reading.
                data = bytearray()
                async for chunk in resp.content.iter_chunked(_CHUNK):
                    data += chunk
                    if len(data) > self.max_image_bytes:
                        raise too_large
                return bytes(data)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ComfyUIUnreachable(
                f"The image server {self.name} did not send an image."
            ) from exc

    async def connect(
        self, url: URL, *, heartbeat: float, max_msg_size: int
    ) -> aiohttp.ClientWebSocketResponse:
        """Open the WebSocket at ``url``; `ComfyUIUnreachable` if the handshake fails."""
        try:
            async with asyncio.timeout(self.connect_s):
                return await self._http().ws_connect(
                    url, heartbeat=heartbeat, max_msg_size=max_msg_size
                )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ComfyUIUnreachable(
                f"The image server {self.name} refused the WebSocket."
            ) from exc
