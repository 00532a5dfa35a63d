"""What every REST handler shares: the request context and Discord-exact JSON responses."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from gouache_sandbox.discord.messages import UploadedFile
from gouache_sandbox.discord.state import JSON, DiscordAPIError, Principal

Auth = Literal["bot", "user", "any", "none", "token"]
Body = JSON | list[Any] | None
Handler = Callable[["Ctx"], Awaitable[Body]]


@dataclass
class Ctx:
    """One REST request as a handler sees it."""

    request: web.Request
    params: dict[str, str]
    principal: Principal | None
    json: Any = None
    files: list[UploadedFile] = field(default_factory=list)
    status: int = 200

    def int_param(self, name: str) -> int:
        """A snowflake route parameter (404 when it is not a number)."""
        try:
            return int(self.params[name])
        except ValueError:
            raise DiscordAPIError(404, 0, "404: Not Found") from None

    def body(self) -> JSON:
        """The JSON object body (400 when the body is not an object)."""
        if not isinstance(self.json, dict):
            raise DiscordAPIError(400, 50109, "The request body contains invalid JSON.")
        return self.json


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON response whose Content-Type is exactly ``application/json`` (discord.py needs it)."""
    hdrs = {"Content-Type": "application/json", "Via": "1.1 google"}
    hdrs.update(headers or {})
    return web.Response(body=json.dumps(data).encode(), status=status, headers=hdrs)
