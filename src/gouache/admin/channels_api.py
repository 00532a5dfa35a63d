"""The admin API's ``/channels``: read and change a channel's settings.

``GET /channels`` lists every channel with settings; ``GET /channels/{id}``
shows one (with today's use of its daily cap); ``PATCH /channels/{id}`` takes
``{"setting": value, ...}`` and answers 400 ``settings_invalid`` with one line
per problem, saving nothing, or the channel as it is afterwards.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gouache.errors import ErrorCode, GouacheError

if TYPE_CHECKING:
    from gouache.channels.rules import ChannelRules

Raise = Callable[[int, ErrorCode, str], Exception]


class ChannelRoutes:
    """The handlers; ``rules`` is the process's `ChannelRules` (None: the store has none)."""

    def __init__(
        self,
        rules: Callable[[], ChannelRules | None],
        api_error: Raise,
        body: Callable[[web.Request], Awaitable[dict[str, Any]]],
    ) -> None:
        self._rules = rules
        self._error = api_error
        self._body = body

    def install(self, router: web.UrlDispatcher) -> None:
        """Add the routes."""
        router.add_get("/channels", self.list_channels)
        router.add_get("/channels/{channel_id}", self.get_channel)
        router.add_patch("/channels/{channel_id}", self.patch_channel)

    def _need(self) -> ChannelRules:
        rules = self._rules()
        if rules is None:
            raise self._error(400, ErrorCode.BAD_REQUEST, "Channel settings are not available.")
        return rules

    def _channel_id(self, request: web.Request) -> int:
        raw = request.match_info["channel_id"]
        if not raw.isdigit() or not 0 < int(raw) < 2**63:
            raise self._error(400, ErrorCode.BAD_REQUEST, f"Not a channel id: {raw!r}.")
        return int(raw)

    async def view(self, rules: ChannelRules, channel_id: int) -> dict[str, Any]:
        """A channel as the API shows it."""
        settings = await rules.settings(channel_id)
        used = await rules.store.channel_used(channel_id)
        return {
            "channel_id": str(channel_id),
            "settings": settings.model_dump(mode="json"),
            "lines": settings.lines(),
            "used_today": used,
        }

    async def list_channels(self, request: web.Request) -> web.Response:
        rules = self._need()
        every = await rules.store.all_channel_settings()
        rows = [await self.view(rules, cid) for cid in sorted(every)]
        return web.json_response({"channels": rows})

    async def get_channel(self, request: web.Request) -> web.Response:
        rules = self._need()
        return web.json_response(await self.view(rules, self._channel_id(request)))

    async def patch_channel(self, request: web.Request) -> web.Response:
        rules = self._need()
        channel_id = self._channel_id(request)
        changes = await self._body(request)
        try:
            await rules.change(channel_id, changes)
        except GouacheError as exc:
            raise self._error(400, exc.code, exc.message) from None
        return web.json_response(await self.view(rules, channel_id))
