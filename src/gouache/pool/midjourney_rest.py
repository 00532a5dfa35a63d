"""Discord REST as one Midjourney user account: interactions, the command index, downloads.

The token goes only to the API base (never to attachment URLs, which are
signed CDN links) and never into an exception message or a log line.

Calls follow Discord's rate-limit headers before they are refused: when a
route's bucket says no request is left (``X-RateLimit-Remaining: 0``), the
next call on it waits ``X-RateLimit-Reset-After`` instead of drawing a 429
(Discord counts 429s towards blocking the address).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog
from pydantic import SecretStr

from gouache.errors import ErrorCode, GouacheError
from gouache.pool.midjourney_wire import CommandRef, find_command

log = structlog.get_logger(__name__)

#: Midjourney proxies present themselves as a desktop browser.
USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF8")


class DiscordUnreachable(GouacheError):
    """Discord did not answer (connection error or timeout) or answered something unusable."""

    code = ErrorCode.WORKER_ERROR


class TokenRejected(GouacheError):
    """Discord answered 401: the account's token is no longer valid."""

    code = ErrorCode.WORKER_UNAVAILABLE


@dataclass(frozen=True, slots=True)
class ApiResponse:
    """A REST answer: status, JSON body (None when there is none) and a 429's retry delay."""

    status: int
    body: Any = None
    retry_after: float | None = None

    @property
    def code(self) -> int | None:
        """Discord's JSON error code, if the body has one."""
        code = self.body.get("code") if isinstance(self.body, dict) else None
        return code if isinstance(code, int) else None


@dataclass
class _Bucket:
    """What the last answer on one route said about its rate limit."""

    remaining: int | None = None  # None: not known (no header yet, or the window has passed)
    reset_at: float = 0.0


class RouteLimits:
    """Paces calls per route from Discord's ``X-RateLimit-*`` headers (see module docstring)."""

    #: Never wait longer than this on the headers' word (a longer wait is a refusal's job).
    MAX_WAIT_S = 10.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    async def acquire(self, route: str) -> None:
        """Wait until ``route`` has a request left, then count one."""
        bucket = self._buckets.setdefault(route, _Bucket())
        while bucket.remaining is not None and bucket.remaining <= 0:
            wait = bucket.reset_at - self._clock()
            if wait <= 0:
                bucket.remaining = None  # a new window: the next answer says how much is left
                break
            await asyncio.sleep(min(wait, self.MAX_WAIT_S))
        if bucket.remaining is not None:
            bucket.remaining -= 1

    def update(self, route: str, headers: Mapping[str, str]) -> None:
        """Learn the route's bucket from an answer's headers."""
        try:
            remaining = int(headers["X-RateLimit-Remaining"])
            reset_after = float(headers["X-RateLimit-Reset-After"])
        except (KeyError, ValueError):
            return
        bucket = self._buckets.setdefault(route, _Bucket())
        reset_at = self._clock() + min(reset_after, self.MAX_WAIT_S)
        if bucket.remaining is None or reset_at > bucket.reset_at + 0.001:
            bucket.remaining = remaining  # a new window began
        else:
            # Answers to calls made in parallel arrive in any order: the lowest count wins.
            bucket.remaining = min(bucket.remaining, remaining)
        bucket.reset_at = max(bucket.reset_at, reset_at)


class UserApi:
    """REST calls of one user account, with a cache of the Midjourney commands."""

    def __init__(  # noqa: PLR0913
        self,
        *,
        token: SecretStr,
        api_base: str,
        guild_id: str,
        channel_id: str,
        application_id: str,
        request_timeout: float = 30.0,
    ) -> None:
        self._token = token
        self.api_base = api_base.rstrip("/")
        self.guild_id = guild_id
        self.channel_id = channel_id
        self.application_id = application_id
        self.request_timeout = request_timeout
        self.session: aiohttp.ClientSession | None = None
        self._commands: dict[str, CommandRef] = {}
        self._index_lock = asyncio.Lock()
        self.limits = RouteLimits()
        #: How many times the command index was fetched (tests and metrics).
        self.index_fetches = 0

    def __repr__(self) -> str:
        return f"UserApi(api_base={self.api_base!r}, channel_id={self.channel_id})"

    def _session(self) -> aiohttp.ClientSession:
        if self.session is None or self.session.closed:
            raise DiscordUnreachable("The Midjourney account is not started.")
        return self.session

    async def call(self, method: str, path: str, body: Any = None) -> ApiResponse:
        """One JSON call with the account token."""
        headers = {"Authorization": self._token.get_secret_value(), "User-Agent": USER_AGENT}
        route = f"{method} {path.partition('?')[0]}"
        await self.limits.acquire(route)
        try:
            async with (
                asyncio.timeout(self.request_timeout),
                self._session().request(
                    method, self.api_base + path, json=body, headers=headers
                ) as resp,
            ):
                self.limits.update(route, resp.headers)
                payload: Any = None
                if resp.status != 204 and resp.content_type == "application/json":
                    payload = await resp.json()
                retry_after: float | None = None
                if resp.status == 429:
                    raw = payload.get("retry_after") if isinstance(payload, dict) else None
                    raw = raw if raw is not None else resp.headers.get("Retry-After")
                    with contextlib.suppress(TypeError, ValueError):
                        retry_after = float(raw) if raw is not None else None
                return ApiResponse(resp.status, payload, retry_after)
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The exception text names the URL, never the headers; keep only its type.
            raise DiscordUnreachable(
                f"Discord could not be reached ({type(exc).__name__})."
            ) from None

    async def download(self, url: str, *, timeout: float, attempts: int = 1) -> bytes:
        """An attachment's bytes, checked to be an image (PNG, JPEG, GIF or WebP)."""
        error = "no attempt"
        for attempt in range(attempts):
            try:
                async with (
                    asyncio.timeout(timeout),
                    self._session().get(url, headers={"User-Agent": USER_AGENT}) as resp,
                ):
                    if resp.status == 200:
                        data = await resp.read()
                        if data.startswith(_IMAGE_MAGIC) or data[8:12] == b"WEBP":
                            return data
                        error = "not an image"
                    else:
                        error = f"HTTP {resp.status}"
                        if resp.status in (403, 404):  # expired or gone: retrying will not help
                            break
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = type(exc).__name__
            if attempt + 1 < attempts:
                await asyncio.sleep(0.2 * (attempt + 1))
        raise DiscordUnreachable(f"The image could not be downloaded ({error}).")

    async def command(
        self, name: str, *, stale: CommandRef | None = None, application_id: str | None = None
    ) -> CommandRef:
        """The Midjourney command ``name`` (id and version), from the cache or the index.

        Passing the ``stale`` reference Discord just refused forces a refresh,
        unless another caller already replaced it meanwhile. ``application_id``
        picks another bot the account drives the same way (the Niji bot).
        """
        app = application_id or self.application_id
        key = f"{app}:{name}"
        async with self._index_lock:
            cached = self._commands.get(key)
            if cached is not None and cached != stale:
                return cached
            index = await self._fetch_index()
            found = {
                f"{app}:{ref.name}": ref
                for ref in (find_command(index, app, n) for n in ("imagine", name))
                if ref is not None
            }
            self._commands = {k: v for k, v in self._commands.items() if not k.startswith(app)}
            self._commands.update(found)
            log.info("mj.commands_refreshed", versions={k: v.version for k, v in found.items()})
            if key not in found:
                raise DiscordUnreachable(
                    f"Midjourney's /{name} is not in the command index of guild {self.guild_id}."
                )
            return found[key]

    async def _fetch_index(self) -> Any:
        self.index_fetches += 1
        status = 0
        for path in (
            f"/guilds/{self.guild_id}/application-command-index",
            f"/channels/{self.channel_id}/application-command-index",
        ):
            resp = await self.call("GET", path)
            status = resp.status
            if status == 200:
                return resp.body
            if status == 401:
                raise TokenRejected("Discord rejected the account's token (401 Unauthorized).")
        raise DiscordUnreachable(f"Discord answered {status} to the command index request.")

    async def recent_messages(self, limit: int = 50) -> list[dict[str, Any]]:
        """The channel's latest messages, oldest first."""
        resp = await self.call("GET", f"/channels/{self.channel_id}/messages?limit={limit}")
        if resp.status != 200 or not isinstance(resp.body, list):
            raise DiscordUnreachable(f"Discord answered {resp.status} to the message history.")
        return [m for m in reversed(resp.body) if isinstance(m, dict)]
