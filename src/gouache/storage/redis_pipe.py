"""One pipelined connection to Redis for the store's commands and script operations.

Callers issue commands or operations of the store's Lua script; everything
issued in one turn of the event loop goes out in one write, in issue order
(group commit), with each run of consecutive operations packed into script
calls of up to ``ops_per_call`` (see ``_batch.lua``). The connection never
waits for replies before writing more: Redis runs one write while this
process handles the replies of another. Replies are parsed by hiredis as
bytes arrive (an `asyncio.Protocol`, no reader task) and handed to their
callers in order, since Redis answers a connection's commands in turn.

The connection opens on first use and again after it is lost: a command in
flight when it drops fails with `redis.exceptions.ConnectionError` (it may or
may not have run), and later commands go out on a new connection. Opening
one authenticates, selects the database and loads the script; a script call
that finds its script gone (SCRIPT FLUSH) is sent again after a reload,
ahead of anything issued since.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections import deque
from collections.abc import Sequence
from typing import Any

import hiredis
import structlog
from redis.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

log = structlog.get_logger(__name__)

CONNECT_TIMEOUT_S = 10.0  # to connect, authenticate and load the script
CLOSE_TIMEOUT_S = 10.0  # for replies still owed when the store closes

# A command to send: its RESP text, the number of bulk strings in it (-1 for a
# whole command, else an operation's part of a script call), and its future.
_Entry = tuple[str, int, "asyncio.Future[Any]"]


def bulk(args: Sequence[str]) -> str:
    """RESP bulk strings for ``args`` (text; encoded once per write).

    redis-py's general packer costs several times more per argument, and a
    write of operations has many arguments. (It measures each argument as
    `size` does, inline: a call per argument showed in profiles.)
    """
    return "".join([f"${len(a) if a.isascii() else len(a.encode())}\r\n{a}\r\n" for a in args])


def size(text: str) -> int:
    """The length of ``text`` in bytes, as Redis and Lua count it."""
    return len(text) if text.isascii() else len(text.encode())


def command(*args: str) -> str:
    """A whole command as RESP."""
    return f"*{len(args)}\r\n{bulk(args)}"


def _keepalive(sock: socket.socket) -> None:
    """TCP keepalive probes: a peer that vanished without a word is noticed in about a minute.

    Without them a silently dropped connection (a NAT or firewall forgetting
    it) would leave every operation on it waiting for good.
    """
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):  # Linux names; other systems keep their defaults
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


def _ssl_context(options: dict[str, Any]) -> ssl.SSLContext:
    """A TLS context from a rediss:// URL's query options (as redis-py reads them)."""
    context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
    if options.get("ssl_certfile"):
        context.load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"))
    reqs = str(options.get("ssl_cert_reqs", "required")).lower()
    if reqs == "none":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif reqs == "optional":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


class RedisPipe(asyncio.Protocol):
    """The store's connection (see module docstring)."""

    def __init__(self, url: str, *, base: str, script: str, ops_per_call: int = 16) -> None:
        """Made inside the event loop it runs on; it connects on first use (or `connect`)."""
        self._loop: asyncio.AbstractEventLoop = asyncio.get_running_loop()
        self._options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
        self._tls = url.startswith("rediss://")
        self._base = base  # KEYS[1] of every script call
        self._script = script
        self._ops_per_call = ops_per_call
        self._head = ""  # "EVALSHA <sha> 1 <base>" as RESP bulk strings, once loaded
        self._transport: asyncio.Transport | None = None
        self._reader = hiredis.Reader(encoding="utf-8", replyError=ResponseError)
        self._ready = False  # connected, authenticated and the script loaded
        self._opening: asyncio.Task[None] | None = None
        self._pending: list[_Entry] = []  # issued, not yet written
        self._retry: list[_Entry] = []  # script calls to send again after a reload
        self._inflight: deque[list[_Entry]] = deque()  # written; one reply each
        self._write_soon = False
        self._idle = asyncio.Event()  # nothing pending or in flight
        self._idle.set()
        self._closed = False
        self._error: Exception | None = None  # why the last attempt to connect failed

    # -- issuing -------------------------------------------------------------

    def call(self, *args: str) -> asyncio.Future[Any]:
        """Run one Redis command; the future holds its reply."""
        return self.submit(command(*args), -1)

    def op(self, name: str, *args: str) -> asyncio.Future[Any]:
        """Run one operation of the script (see _batch.lua); the future holds its reply."""
        return self.submit(bulk((name, str(len(args)), *args)), len(args) + 2)

    def submit(self, wire: str, count: int) -> asyncio.Future[Any]:
        """Queue RESP text (a whole command if ``count`` < 0, else an operation of ``count`` strings)."""
        if self._closed:
            raise RuntimeError("the Redis connection is closed")
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._pending.append((wire, count, fut))
        if not self._write_soon:
            self._idle.clear()
            self._schedule()
        return fut

    def _schedule(self) -> None:
        """Write soon (once the callers of this turn have issued theirs), or connect first."""
        if not self._ready:
            if self._opening is None:
                self._opening = self._loop.create_task(self._open(), name="redis-connect")
        elif not self._write_soon:
            self._write_soon = True
            self._loop.call_soon(self._write)

    # -- connecting ------------------------------------------------------------

    async def connect(self) -> None:
        """Open the connection now; raises if Redis cannot be reached."""
        if self._ready:
            return
        if self._opening is None:
            self._opening = self._loop.create_task(self._open(), name="redis-connect")
        await asyncio.shield(self._opening)
        if not self._ready:
            raise self._error or RedisConnectionError("could not connect to Redis")

    async def _open(self) -> None:
        """Connect, authenticate, select the database and load the script; then write what waits."""
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await self._open_transport()
                steps: list[asyncio.Future[Any]] = []
                password, username = self._options.get("password"), self._options.get("username")
                if password is not None:
                    args = ("AUTH", username, password) if username else ("AUTH", password)
                    steps.append(self._send_now(command(*args)))
                if self._options.get("db"):
                    steps.append(self._send_now(command("SELECT", str(self._options["db"]))))
                steps.append(self._send_now(command("SCRIPT", "LOAD", self._script)))
                replies = await asyncio.gather(*steps)
            self._head = bulk(("EVALSHA", replies[-1], "1", self._base))
        except Exception as exc:
            error = self._error = self._connection_error(exc)
            if self._transport is not None:
                self._transport.abort()
            self._fail(self._pending + self._retry, error)
            self._pending, self._retry = [], []
            self._opening = None
            self._check_idle()
            if isinstance(exc, ResponseError):
                log.warning("store.redis_refused", error=str(exc))
            return
        self._ready = True
        self._opening = None
        self._error = None
        self._schedule()
        self._check_idle()

    async def _open_transport(self) -> None:
        loop = self._loop
        options = self._options
        if "path" in options:
            await loop.create_unix_connection(lambda: self, options["path"])
            return
        host, port = options.get("host", "localhost"), int(options.get("port", 6379))
        if self._tls:
            await loop.create_connection(
                lambda: self, host, port, ssl=_ssl_context(options), server_hostname=host
            )
        else:
            await loop.create_connection(lambda: self, host, port)

    @staticmethod
    def _connection_error(exc: Exception) -> Exception:
        if isinstance(exc, TimeoutError):
            return RedisConnectionError(
                f"cannot reach Redis: no answer within {CONNECT_TIMEOUT_S:g} s"
            )
        if isinstance(exc, OSError):
            return RedisConnectionError(f"cannot reach Redis: {exc.strerror or exc}")
        return exc

    def _send_now(self, wire: str) -> asyncio.Future[Any]:
        """Write one command ahead of the queue (the handshake, before anything else)."""
        if self._transport is None:
            raise RedisConnectionError("the connection to Redis was lost")
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._inflight.append([(wire, -1, fut)])
        self._idle.clear()
        self._transport.write(wire.encode())
        return fut

    # -- asyncio.Protocol -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._reader = hiredis.Reader(encoding="utf-8", replyError=ResponseError)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            _keepalive(sock)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._ready = False
        error = RedisConnectionError(
            "the connection to Redis was lost" + (f": {exc}" if exc else "")
        )
        for group in self._inflight:
            self._fail(group, error)
        self._inflight.clear()
        if self._pending or self._retry:
            if self._closed:
                self._fail(self._pending + self._retry, error)
                self._pending, self._retry = [], []
            else:
                log.warning("store.redis_reconnecting", error=str(error))
                self._schedule()  # what was issued since goes out on a new connection
        self._check_idle()

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as exc:
                log.error("store.redis_protocol_error", error=str(exc))
                if self._transport is not None:
                    self._transport.abort()
                return
            if reply is False:
                break
            if not self._inflight:
                log.error("store.redis_unexpected_reply")
                continue
            self._settle(self._inflight.popleft(), reply)
        self._check_idle()

    # -- writing and settling ---------------------------------------------------

    def _write(self) -> None:
        """Write everything issued so far (see module docstring)."""
        self._write_soon = False
        if not self._ready or self._transport is None:
            return
        batch = self._retry + self._pending if self._retry else self._pending
        self._retry, self._pending = [], []
        if not batch:
            return
        groups, wire = self._pack(batch)
        self._inflight += groups
        self._transport.write(wire.encode())

    def _pack(self, batch: list[_Entry]) -> tuple[list[list[_Entry]], str]:
        """Group a batch into commands: each run of operations becomes script calls.

        Returns the groups (one reply each) and the RESP text to write.
        """
        groups: list[list[_Entry]] = []
        parts: list[str] = []
        run: list[_Entry] = []
        strings = 0
        for entry in batch:
            if entry[1] >= 0:
                run.append(entry)
                strings += entry[1]
                if len(run) < self._ops_per_call:
                    continue
            if run:
                parts.append(f"*{strings + 4}\r\n{self._head}")
                parts += [wire for wire, _, _ in run]
                groups.append(run)
                run, strings = [], 0
            if entry[1] < 0:
                parts.append(entry[0])
                groups.append([entry])
        if run:
            parts.append(f"*{strings + 4}\r\n{self._head}")
            parts += [wire for wire, _, _ in run]
            groups.append(run)
        return groups, "".join(parts)

    def _settle(self, group: list[_Entry], reply: Any) -> None:
        """Hand one reply to the callers behind it."""
        script = group[0][1] >= 0
        if isinstance(reply, ResponseError):
            if script and str(reply).startswith("NOSCRIPT"):
                # The script is gone (SCRIPT FLUSH) and the call did not run at
                # all: reload it and send the call again, ahead of anything
                # issued since (the only case where issue order bends).
                if not self._retry:
                    log.warning("store.scripts_reloaded")
                    loaded = self._loop.create_future()
                    loaded.add_done_callback(self._loaded)
                    self._retry.append((command("SCRIPT", "LOAD", self._script), -1, loaded))
                self._retry += group
                self._schedule()
                return
            error = NoScriptError(str(reply)) if str(reply).startswith("NOSCRIPT") else reply
            self._fail(group, error)  # the whole call failed (e.g. BUSY, OOM)
            return
        results = reply if script else [reply]
        for (_, _, fut), result in zip(group, results, strict=True):
            if fut.done():
                continue
            if isinstance(result, ResponseError):
                fut.set_exception(result)
            else:
                fut.set_result(result)

    @staticmethod
    def _loaded(fut: asyncio.Future[Any]) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            log.error("store.script_load_failed", error=str(fut.exception()))

    @staticmethod
    def _fail(entries: Sequence[_Entry], error: BaseException) -> None:
        for _, _, fut in entries:
            if not fut.done():
                fut.set_exception(error)

    def _check_idle(self) -> None:
        if not (self._pending or self._retry or self._inflight or self._opening):
            self._idle.set()

    # -- closing -------------------------------------------------------------------

    async def aclose(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Wait (up to ``timeout``) for what was issued to be answered, then disconnect.

        Past the timeout the connection is cut and what is still in flight
        fails with ConnectionError: a Redis that stopped answering cannot hold
        up a shutdown. Safe to call twice.
        """
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        self._closed = True
        if self._transport is not None:
            transport, self._transport = self._transport, None
            if self._inflight:
                log.warning("store.redis_close_timeout", in_flight=len(self._inflight))
                transport.abort()  # connection_lost fails what is in flight
            else:
                transport.close()
        self._ready = False
