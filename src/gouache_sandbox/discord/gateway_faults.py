"""Gateway fault injection: drops, zombies, op 7/9, close codes and restarts."""

from __future__ import annotations

from gouache_sandbox.discord.gateway import (
    HEARTBEAT,
    INVALID_SESSION,
    RECONNECT,
    Close,
    GatewayServer,
    ServedConnection,
)


class GatewayFaults:
    """Break a :class:`GatewayServer`'s connections the ways Discord's gateway does.

    Each method targets the connections of one user (``user_id``), of one session
    (``session_id``), or every connection, and returns how many it touched.
    """

    def __init__(self, gateway: GatewayServer) -> None:
        self._gateway = gateway

    def _select(self, user_id: int | None, session_id: str | None) -> list[ServedConnection]:
        out = []
        for conn in self._gateway.connections:
            s = conn.session
            if session_id is not None and (s is None or s.id != session_id):
                continue
            if user_id is not None and (s is None or s.user_id != user_id):
                continue
            out.append(conn)
        return out

    def drop(self, *, user_id: int | None = None, session_id: str | None = None) -> int:
        """Cut matching connections without a close frame (sessions stay resumable)."""
        conns = self._select(user_id, session_id)
        for conn in conns:
            self._gateway.detach(conn, None)
            conn.closed.set()
            conn.transport.abort()
        return len(conns)

    def set_zombie(
        self,
        on: bool = True,
        *,
        user_id: int | None = None,
        session_id: str | None = None,
        mute: bool = False,
    ) -> int:
        """Stop (or restart) acknowledging heartbeats on matching connections.

        With ``mute`` the link also stops delivering anything else (a half-dead
        link): dispatches stay in the session buffer for a RESUME to replay.
        """
        conns = self._select(user_id, session_id)
        for conn in conns:
            conn.zombie = on
            conn.mute = on and mute
        return len(conns)

    def send_reconnect(self, *, user_id: int | None = None, session_id: str | None = None) -> int:
        """Send op 7 RECONNECT to matching connections."""
        conns = self._select(user_id, session_id)
        for conn in conns:
            conn.enqueue({"op": RECONNECT, "d": None, "s": None, "t": None})
        return len(conns)

    def request_heartbeat(
        self, *, user_id: int | None = None, session_id: str | None = None
    ) -> int:
        """Send a server op 1 (asks for an immediate heartbeat)."""
        conns = self._select(user_id, session_id)
        for conn in conns:
            conn.enqueue({"op": HEARTBEAT, "d": None, "s": None, "t": None})
        return len(conns)

    def send_invalid_session(
        self, resumable: bool, *, user_id: int | None = None, session_id: str | None = None
    ) -> int:
        """Send op 9 with ``d: resumable``; a false one also ends the session."""
        conns = self._select(user_id, session_id)
        for conn in conns:
            conn.enqueue({"op": INVALID_SESSION, "d": resumable, "s": None, "t": None})
            if not resumable and conn.session is not None:
                self._gateway.invalidate(conn.session)
        return len(conns)

    def close(
        self,
        code: int,
        reason: str = "",
        *,
        user_id: int | None = None,
        session_id: str | None = None,
    ) -> int:
        """Close matching connections with ``code`` (session-ending codes end the session)."""
        conns = self._select(user_id, session_id)
        for conn in conns:
            conn.enqueue(Close(code, reason or f"sandbox close {code}"))
        return len(conns)

    def restart(self, *, resumable: bool = True) -> int:
        """Drop every connection, as a gateway node restart would; optionally forget sessions."""
        count = self.drop()
        if not resumable:
            for session in list(self._gateway.sessions.values()):
                self._gateway.invalidate(session)
        return count
