"""HTTP control API under ``/_sandbox/``: the fault-injection and member actions over HTTP."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gouache_sandbox.discord import payloads
from gouache_sandbox.discord.host import SandboxHost
from gouache_sandbox.discord.permissions import P
from gouache_sandbox.discord.state import DiscordAPIError


def install_control_routes(app: web.Application, sandbox: SandboxHost) -> None:  # noqa: C901, PLR0915
    """Add ``/_sandbox/...`` routes driving ``sandbox``'s control methods."""

    def route(
        fn: Callable[[dict[str, Any]], Any],
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            body: dict[str, Any] = {}
            if request.can_read_body:
                try:
                    loaded = await request.json()
                except json.JSONDecodeError:
                    return web.json_response({"error": "invalid JSON"}, status=400)
                if isinstance(loaded, dict):
                    body = loaded
            body.update(request.match_info)
            try:
                result = fn(body)
            except (LookupError, ValueError, TypeError) as exc:
                return web.json_response({"error": str(exc)}, status=400)
            except DiscordAPIError as exc:
                return web.json_response({"error": exc.message}, status=exc.status)
            return web.json_response({"result": result})

        return handler

    def uid(body: dict[str, Any]) -> int | None:
        return int(body["user_id"]) if body.get("user_id") is not None else None

    def state(_: dict[str, Any]) -> Any:
        s = sandbox.state
        return {
            "guilds": [
                {
                    "id": str(g.id),
                    "name": g.name,
                    "roles": [payloads.role_payload(r) for r in g.roles.values()],
                    "channels": [{"id": str(c.id), "name": c.name} for c in g.channels.values()],
                    "members": [str(m) for m in g.members],
                }
                for g in s.guilds.values()
            ],
            "sessions": [
                {
                    "id": x.id,
                    "user_id": str(x.user_id),
                    "connected": x.conn is not None,
                    "seq": x.seq,
                }
                for x in sandbox.gateway.live_sessions()
            ],
        }

    def messages(body: dict[str, Any]) -> Any:
        return [
            payloads.message_payload(m, sandbox.state, sandbox.base_url)
            for m in sandbox.messages(int(body["channel_id"]))
        ]

    def fail(body: dict[str, Any]) -> Any:
        sandbox.rest.faults.add(
            str(body.get("method", "*")),
            str(body["route"]),
            status=body.get("status"),
            delay=float(body.get("delay", 0.0)),
            times=body.get("times"),
            duration=body.get("duration"),
        )
        return True

    def clear(_: dict[str, Any]) -> Any:
        sandbox.clear_faults()
        return True

    def advance(body: dict[str, Any]) -> Any:
        sandbox.clock.advance(float(body["seconds"]))
        return sandbox.clock.now()

    def bits(value: Any) -> int:
        """A permission set as an integer, a numeric string, or a list of names."""
        if isinstance(value, list):
            out = 0
            for name in value:
                try:
                    out |= P[str(name).upper()]
                except KeyError:
                    raise ValueError(f"unknown permission {name!r}") from None
            return out
        return int(value or 0)

    def guild_of(body: dict[str, Any]) -> Any:
        guild = sandbox.state.guilds.get(int(body["guild_id"]))
        if guild is None:
            raise LookupError(f"no guild {body['guild_id']}")
        return guild

    def role_perms(body: dict[str, Any]) -> Any:
        guild = guild_of(body)
        role_id = int(body["role_id"])
        if role_id not in guild.roles:
            raise LookupError(f"no role {role_id}")
        return str(
            sandbox.set_role_permissions(guild, role_id, bits(body["permissions"])).permissions
        )

    def put_overwrite(body: dict[str, Any]) -> Any:
        channel = sandbox.state.get_channel(int(body["channel_id"]))
        ow = sandbox.set_overwrite(
            channel,
            int(body["target_id"]),
            allow=bits(body.get("allow")),
            deny=bits(body.get("deny")),
        )
        return payloads.overwrite_payload(ow)

    def delete_overwrite(body: dict[str, Any]) -> Any:
        channel = sandbox.state.get_channel(int(body["channel_id"]))
        return sandbox.clear_overwrite(channel, int(body["target_id"]))

    def member_roles(body: dict[str, Any]) -> Any:
        guild = guild_of(body)
        sandbox.set_member_roles(guild, int(body["user_id"]), [int(r) for r in body["roles"]])
        return [str(r) for r in guild.members[int(body["user_id"])].roles]

    def permissions(body: dict[str, Any]) -> Any:
        channel = sandbox.state.get_channel(int(body["channel_id"]))
        have = sandbox.permissions_of(int(body["user_id"]), channel)
        return {"permissions": str(have), "names": [p.name for p in P if have & p]}

    r = app.router
    r.add_post("/_sandbox/guilds/{guild_id}/roles/{role_id}", route(role_perms))
    r.add_put("/_sandbox/channels/{channel_id}/overwrites/{target_id}", route(put_overwrite))
    r.add_delete("/_sandbox/channels/{channel_id}/overwrites/{target_id}", route(delete_overwrite))
    r.add_put("/_sandbox/guilds/{guild_id}/members/{user_id}/roles", route(member_roles))
    r.add_get("/_sandbox/channels/{channel_id}/permissions/{user_id}", route(permissions))
    r.add_get("/_sandbox/state", route(state))
    r.add_get("/_sandbox/channels/{channel_id}/messages", route(messages))
    r.add_post(
        "/_sandbox/gateway/drop", route(lambda b: sandbox.gateway_faults.drop(user_id=uid(b)))
    )
    r.add_post(
        "/_sandbox/gateway/zombie",
        route(lambda b: sandbox.gateway_faults.set_zombie(bool(b.get("on", True)), user_id=uid(b))),
    )
    r.add_post(
        "/_sandbox/gateway/reconnect",
        route(lambda b: sandbox.gateway_faults.send_reconnect(user_id=uid(b))),
    )
    r.add_post(
        "/_sandbox/gateway/heartbeat",
        route(lambda b: sandbox.gateway_faults.request_heartbeat(user_id=uid(b))),
    )
    r.add_post(
        "/_sandbox/gateway/invalidate",
        route(
            lambda b: sandbox.gateway_faults.send_invalid_session(
                bool(b.get("resumable", False)), user_id=uid(b)
            )
        ),
    )
    r.add_post(
        "/_sandbox/gateway/close",
        route(lambda b: sandbox.gateway_faults.close(int(b["code"]), user_id=uid(b))),
    )
    r.add_post(
        "/_sandbox/gateway/restart",
        route(lambda b: sandbox.gateway_faults.restart(resumable=bool(b.get("resumable", True)))),
    )
    r.add_post("/_sandbox/rest/faults", route(fail))
    r.add_delete("/_sandbox/rest/faults", route(clear))
    r.add_post("/_sandbox/clock/advance", route(advance))
