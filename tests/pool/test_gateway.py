"""One gateway connection against the Discord sandbox: every fault, checked on the wire."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import random
import socket
import time
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import structlog
from pydantic import SecretStr

from gouache.pool.gateway import (
    Backoff,
    GatewayConnection,
    GatewayDisabled,
    GatewayNotReady,
    GatewaySettings,
    GatewayStatus,
    IdentifyPacer,
    Recovery,
    SendBudget,
    close_action,
    identify_payload,
)
from gouache_sandbox.discord import DiscordSandbox
from gouache_sandbox.discord.gateway import ServedConnection
from gouache_sandbox.discord.messages import new_message
from gouache_sandbox.discord.state import Channel, User

HEARTBEAT_MS = 500
GUILDS, GUILD_MESSAGES = 1 << 0, 1 << 9


class FixedRandom(random.Random):
    """random() always returns ``value`` (so the first-heartbeat jitter is known)."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


@dataclass
class WireFrame:
    at: float
    token: str | None
    op: int
    d: Any


class Wire:
    """Every frame our clients sent, as the sandbox decoded it, tagged with the sender's token."""

    def __init__(self, sandbox: DiscordSandbox) -> None:
        self.frames: list[WireFrame] = []
        self._token_of: dict[int, str] = {}
        self.unlisten = sandbox.gateway.listen_frames(self._on_frame)

    def _on_frame(self, conn: ServedConnection, frame: dict[str, Any]) -> None:
        d = frame.get("d")
        if frame["op"] in (2, 6) and isinstance(d, dict):
            self._token_of[id(conn)] = d["token"]
        self.frames.append(
            WireFrame(time.monotonic(), self._token_of.get(id(conn)), frame["op"], d)
        )

    def sessions_ops(self, token: str) -> list[int]:
        """The IDENTIFY (2) and RESUME (6) frames ``token`` sent, in order."""
        return [f.op for f in self.frames if f.token == token and f.op in (2, 6)]

    def first(self, token: str, op: int, after: float = 0.0) -> WireFrame:
        return next(f for f in self.frames if f.token == token and f.op == op and f.at >= after)


@dataclass
class Account:
    user: User
    token: str = field(repr=False)
    channel: Channel
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    statuses: list[tuple[GatewayStatus, str | None]] = field(default_factory=list)

    def contents(self) -> list[str]:
        return [d["content"] for t, d in self.events if t == "MESSAGE_CREATE"]

    async def on_dispatch(self, t: str, d: dict[str, Any]) -> None:
        self.events.append((t, d))

    def on_status(self, status: GatewayStatus, reason: str | None) -> None:
        self.statuses.append((status, reason))


@pytest.fixture
async def sandbox() -> AsyncIterator[DiscordSandbox]:
    async with DiscordSandbox(heartbeat_interval_ms=HEARTBEAT_MS, with_midjourney=False) as sb:
        yield sb


@pytest.fixture
def wire(sandbox: DiscordSandbox) -> Wire:
    return Wire(sandbox)


def new_account(sandbox: DiscordSandbox, name: str = "acct") -> Account:
    user, token = sandbox.add_user_account(name)
    guild = sandbox.add_guild(f"{name}-guild")
    channel = sandbox.add_channel(guild, "general")
    sandbox.join(guild, user)
    return Account(user, token, channel)


@pytest.fixture
def account(sandbox: DiscordSandbox) -> Account:
    return new_account(sandbox)


def post(sandbox: DiscordSandbox, channel: Channel, content: str) -> None:
    """A message from someone else in ``channel`` (fans out to the gateway at once)."""
    author = sandbox.state.new_user("someone")
    msg = new_message(
        sandbox.state, channel, author, {"content": content}, [], allow_components=False
    )
    sandbox.state.store_message(msg)


SETTINGS_FIELDS = {f.name for f in dataclasses.fields(GatewaySettings)}


def connect(sandbox: DiscordSandbox, account: Account, **kwargs: Any) -> GatewayConnection:
    """A connection for ``account``; ``kwargs`` are `GatewaySettings` fields or connection arguments."""
    kwargs.setdefault("backoff", Backoff(base=0.01, cap=0.05))
    kwargs.setdefault("invalid_session_delay", (0.0, 0.02))
    # The default pacer allows one IDENTIFY per 5 s (Discord's max_concurrency 1); too slow here.
    kwargs.setdefault("identify_pacer", IdentifyPacer(max_concurrency=10, window=1.0))
    kwargs.setdefault("gateway_url", sandbox.gateway_url)
    kwargs.setdefault("on_dispatch", account.on_dispatch)
    kwargs.setdefault("on_status", account.on_status)
    settings = {k: kwargs.pop(k) for k in list(kwargs) if k in SETTINGS_FIELDS}
    return GatewayConnection(
        GatewaySettings(name=account.user.username, token=SecretStr(account.token), **settings),
        **kwargs,
    )


@pytest.fixture
async def conns() -> AsyncIterator[list[GatewayConnection]]:
    """Connections a test opened; closed at the end even when the test fails."""
    opened: list[GatewayConnection] = []
    yield opened
    for conn in opened:
        await conn.aclose()


async def started(conns: list[GatewayConnection], conn: GatewayConnection) -> GatewayConnection:
    conns.append(conn)
    await conn.start()
    await conn.wait_ready(5.0)
    return conn


def server_conns(sandbox: DiscordSandbox, user_id: int) -> list[ServedConnection]:
    return [c for c in sandbox.gateway.connections if c.session and c.session.user_id == user_id]


def resumed(n: int) -> Callable[[GatewayConnection], bool]:
    return lambda c: c.counters.resumed >= n and c.status is GatewayStatus.READY


def identified(n: int) -> Callable[[GatewayConnection], bool]:
    return lambda c: c.counters.identifies >= n and c.status is GatewayStatus.READY


# -- connecting ------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
async def test_user_account_identify_heartbeat_and_dispatch(
    sandbox: DiscordSandbox,
    wire: Wire,
    account: Account,
    conns: list[GatewayConnection],
    compress: bool,
) -> None:
    conn = await started(conns, connect(sandbox, account, compress=compress))
    assert conn.status is GatewayStatus.READY
    assert conn.user is not None and conn.user["id"] == str(account.user.id)
    (server,) = server_conns(sandbox, account.user.id)
    assert server.session is not None and conn.session_id == server.session.id
    assert (server.compressor is not None) is compress
    identify = wire.first(account.token, 2).d
    assert identify["capabilities"] == 16381 and "intents" not in identify
    assert identify["properties"]["browser"] == "Chrome"
    assert identify["properties"]["browser_user_agent"].startswith("Mozilla/5.0")
    assert identify["compress"] is False and identify["presence"]["status"] == "online"

    await conn.wait_for(lambda c: c.counters.acks >= 2, 5.0)
    assert conn.latency_ms is not None and 0 < conn.latency_ms < HEARTBEAT_MS
    beats = [f.d for f in wire.frames if f.token == account.token and f.op == 1]
    assert beats and all(b == 1 for b in beats)  # the last sequence seen: READY's
    post(sandbox, account.channel, "hello")
    await conn.wait_for(lambda c: c.sequence == 2, 5.0)
    await conn.wait_for(lambda c: account.contents() == ["hello"], 5.0)
    assert [t for t, _ in account.events] == ["READY", "MESSAGE_CREATE"]
    assert conn.counters.missed_heartbeats == 0
    assert account.statuses[-1] == (GatewayStatus.READY, "identified")


async def test_bot_identify_with_intents(
    sandbox: DiscordSandbox, wire: Wire, conns: list[GatewayConnection]
) -> None:
    bot, token, app_id = sandbox.add_bot("bot")
    guild = sandbox.add_guild("g")
    sandbox.join(guild, bot)
    account = Account(bot, token, sandbox.add_channel(guild, "general"))
    conn = await started(
        conns, connect(sandbox, account, bot=True, intents=GUILDS | GUILD_MESSAGES)
    )
    identify = wire.first(token, 2).d
    assert identify["intents"] == GUILDS | GUILD_MESSAGES
    assert "capabilities" not in identify and "shard" not in identify
    assert identify["properties"]["browser"] == "gouache"
    await conn.wait_for(lambda c: len(account.events) >= 2, 5.0)
    ready, guild_create = account.events[:2]
    assert ready[0] == "READY" and ready[1]["application"]["id"] == str(app_id)
    assert guild_create[0] == "GUILD_CREATE" and guild_create[1]["id"] == str(guild.id)


async def test_first_heartbeat_is_jittered_and_server_op1_gets_one_now(
    conns: list[GatewayConnection],
) -> None:
    async with DiscordSandbox(heartbeat_interval_ms=10_000, with_midjourney=False) as sb:
        wire = Wire(sb)
        account = new_account(sb)
        # random() = 0.9: the first heartbeat is due 9 s after HELLO, not at once.
        conn = await started(conns, connect(sb, account, rng=FixedRandom(0.9)))
        assert conn.counters.heartbeats == 0
        asked = time.monotonic()
        assert sb.gateway_faults.request_heartbeat(user_id=account.user.id) == 1
        await conn.wait_for(lambda c: c.counters.acks == 1, 5.0)
        beat = wire.first(account.token, 1)
        assert beat.at >= asked and beat.at - asked < 1.0
        assert conn.counters.missed_heartbeats == 0
        await conn.aclose()


# -- recovering ------------------------------------------------------------------------------


async def test_a_stall_of_our_own_loop_is_not_a_zombie(conns: list[GatewayConnection]) -> None:
    async with DiscordSandbox(heartbeat_interval_ms=1000, with_midjourney=False) as sb:
        account = new_account(sb)
        beats = 0

        def stall_on_second_beat(conn: ServedConnection, frame: dict[str, Any]) -> None:
            nonlocal beats
            if frame["op"] == 1:
                beats += 1
                if beats == 2:
                    # The whole loop freezes past our next heartbeat; the ACK is then sent
                    # and sits unread when our (late) heartbeat timer fires.
                    time.sleep(1.4)

        unlisten = sb.gateway.listen_frames(stall_on_second_beat)
        conn = await started(conns, connect(sb, account, rng=FixedRandom(0.1)))
        await conn.wait_for(lambda c: c.counters.acks >= 3, 10.0)
        unlisten()
        assert conn.counters.missed_heartbeats == 0
        assert conn.counters.reconnects == 0
        await conn.aclose()


async def test_zombie_link_resumes_and_replays_without_loss_or_duplicates(
    sandbox: DiscordSandbox, wire: Wire, account: Account, conns: list[GatewayConnection]
) -> None:
    conn = await started(conns, connect(sandbox, account))
    session_id = conn.session_id
    post(sandbox, account.channel, "m1")
    await conn.wait_for(lambda c: account.contents() == ["m1"], 5.0)
    # A half-dead link: no ACKs, and nothing else gets through either.
    assert sandbox.gateway_faults.set_zombie(True, user_id=account.user.id, mute=True) == 1
    post(sandbox, account.channel, "m2")
    post(sandbox, account.channel, "m3")
    await conn.wait_for(resumed(1), 5.0)
    post(sandbox, account.channel, "m4")
    await conn.wait_for(lambda c: len(account.contents()) >= 4, 5.0)
    assert account.contents() == ["m1", "m2", "m3", "m4"]
    assert conn.counters.missed_heartbeats == 1
    assert conn.counters.duplicates == 0
    assert conn.session_id == session_id
    assert wire.sessions_ops(account.token) == [2, 6]
    resume = wire.first(account.token, 6).d
    assert resume["session_id"] == session_id and resume["seq"] == 2  # READY, m1
    assert [t for t, _ in account.events].count("RESUMED") == 1


async def test_drop_without_close_frame_resumes_with_replay(
    sandbox: DiscordSandbox, wire: Wire, account: Account, conns: list[GatewayConnection]
) -> None:
    conn = await started(conns, connect(sandbox, account))
    assert sandbox.drop_connections(user_id=account.user.id) == 1
    # Posted before the client can be back: buffered by the session and replayed.
    post(sandbox, account.channel, "while away")
    await conn.wait_for(resumed(1), 5.0)
    await conn.wait_for(lambda c: account.contents() == ["while away"], 5.0)
    assert wire.sessions_ops(account.token) == [2, 6]
    assert conn.counters.reconnects == 1
    reasons = [r for s, r in account.statuses if s is GatewayStatus.BACKOFF]
    assert reasons == ["connection lost without a close frame"]


async def test_op7_reconnect_resumes(
    sandbox: DiscordSandbox, wire: Wire, account: Account, conns: list[GatewayConnection]
) -> None:
    conn = await started(conns, connect(sandbox, account))
    session_id = conn.session_id
    assert sandbox.send_reconnect(user_id=account.user.id) == 1
    await conn.wait_for(resumed(1), 5.0)
    assert conn.session_id == session_id
    assert wire.sessions_ops(account.token) == [2, 6]
    assert (GatewayStatus.BACKOFF, "server asked to reconnect (op 7)") in account.statuses


@pytest.mark.parametrize("resumable", [True, False])
async def test_op9_waits_then_resumes_or_identifies(
    sandbox: DiscordSandbox,
    wire: Wire,
    account: Account,
    conns: list[GatewayConnection],
    resumable: bool,
) -> None:
    conn = await started(conns, connect(sandbox, account, invalid_session_delay=(0.3, 0.4)))
    old_session = conn.session_id
    sent = time.monotonic()
    assert sandbox.send_invalid_session(resumable, user_id=account.user.id) == 1
    if resumable:
        await conn.wait_for(resumed(1), 5.0)
        assert conn.session_id == old_session
        assert wire.sessions_ops(account.token) == [2, 6]
        again = wire.first(account.token, 6)
    else:
        await conn.wait_for(identified(2), 5.0)
        assert conn.session_id not in (None, old_session)
        assert conn.sequence == 1  # a fresh session numbers from READY again
        assert wire.sessions_ops(account.token) == [2, 2]
        again = wire.first(account.token, 2, after=sent)
    # The 1-5 s wait (shortened here) happens before anything is sent again.
    assert again.at - sent >= 0.3
    assert conn.counters.invalid_sessions == 1


@pytest.mark.parametrize("code", range(4000, 4015))
async def test_every_close_code_on_the_wire(
    sandbox: DiscordSandbox,
    wire: Wire,
    account: Account,
    conns: list[GatewayConnection],
    code: int,
) -> None:
    expected = {
        4003: Recovery.IDENTIFY,
        4006: Recovery.IDENTIFY,
        4007: Recovery.IDENTIFY,
        4009: Recovery.IDENTIFY,
        4004: Recovery.DISABLE,
        4010: Recovery.DISABLE,
        4011: Recovery.DISABLE,
        4012: Recovery.DISABLE,
        4013: Recovery.DISABLE,
        4014: Recovery.DISABLE,
    }.get(code, Recovery.RESUME)
    conn = await started(conns, connect(sandbox, account))
    old_session = conn.session_id
    assert sandbox.close_connections(code, user_id=account.user.id) == 1
    if expected is Recovery.RESUME:
        await conn.wait_for(resumed(1), 5.0)
        assert wire.sessions_ops(account.token) == [2, 6]
        assert conn.session_id == old_session
    elif expected is Recovery.IDENTIFY:
        await conn.wait_for(identified(2), 5.0)
        assert wire.sessions_ops(account.token) == [2, 2]
        assert conn.session_id != old_session
    else:
        await conn.wait_for(lambda c: c.status is GatewayStatus.DISABLED, 5.0)
        assert conn.disabled_reason == close_action(code).reason
        assert str(code) in conn.disabled_reason
        assert wire.sessions_ops(account.token) == [2]
        assert conn.counters.reconnects == 0  # DISABLED is final: the supervisor has returned
        with pytest.raises(GatewayDisabled, match=str(code)):
            await conn.wait_ready(1.0)
        assert account.statuses[-1] == (GatewayStatus.DISABLED, conn.disabled_reason)
        assert conn.session_id is None
    assert close_action(code).kind is expected


@pytest.mark.parametrize("code", [1000, 1001, 1011, 3000, 4999])
async def test_other_server_close_codes_resume(
    sandbox: DiscordSandbox,
    wire: Wire,
    account: Account,
    conns: list[GatewayConnection],
    code: int,
) -> None:
    conn = await started(conns, connect(sandbox, account))
    sandbox.close_connections(code, user_id=account.user.id)
    await conn.wait_for(resumed(1), 5.0)
    assert wire.sessions_ops(account.token) == [2, 6]


async def test_invalid_token_disables_without_retrying(
    sandbox: DiscordSandbox, wire: Wire, conns: list[GatewayConnection]
) -> None:
    account = new_account(sandbox)
    account.token = "not-a-real-token"
    conn = connect(sandbox, account)
    conns.append(conn)
    await conn.start()
    with pytest.raises(GatewayDisabled, match="invalid token"):
        await conn.wait_ready(5.0)
    assert conn.status is GatewayStatus.DISABLED
    assert wire.sessions_ops("not-a-real-token") == [2]
    assert conn.counters.reconnects == 0


@pytest.mark.parametrize("resumable", [True, False])
async def test_gateway_restart(
    sandbox: DiscordSandbox,
    wire: Wire,
    account: Account,
    conns: list[GatewayConnection],
    resumable: bool,
) -> None:
    conn = await started(conns, connect(sandbox, account))
    post(sandbox, account.channel, "before")
    await conn.wait_for(lambda c: account.contents() == ["before"], 5.0)
    assert sandbox.restart_gateway(resumable=resumable) == 1
    if resumable:
        await conn.wait_for(resumed(1), 5.0)
        assert wire.sessions_ops(account.token) == [2, 6]
    else:
        # The RESUME of a forgotten session gets op 9 false: a fresh IDENTIFY follows.
        await conn.wait_for(identified(2), 5.0)
        assert wire.sessions_ops(account.token) == [2, 6, 2]
        assert conn.counters.invalid_sessions == 1
    post(sandbox, account.channel, "after")
    await conn.wait_for(lambda c: account.contents() == ["before", "after"], 5.0)


async def test_backoff_grows_while_unreachable_and_resets_after_stable_ready(
    sandbox: DiscordSandbox, account: Account, conns: list[GatewayConnection]
) -> None:
    backoff = Backoff(base=0.005, cap=0.04)
    # Every attempt fails to connect: the ceiling doubles each time.
    dead = connect(
        sandbox, account, gateway_url=f"ws://127.0.0.1:{dead_port()}/gateway", backoff=backoff
    )
    conns.append(dead)
    await dead.start()
    await dead.wait_for(lambda c: backoff.attempts >= 5, 5.0)
    assert dead.status in (GatewayStatus.BACKOFF, GatewayStatus.CONNECTING)
    reasons = {r for s, r in account.statuses if s is GatewayStatus.BACKOFF}
    assert reasons and all(r and r.startswith("connection failed") for r in reasons)
    assert dead.counters.identifies == 0
    await dead.aclose()
    account.statuses.clear()

    live_backoff = Backoff(base=0.005, cap=0.04)
    conn = await started(conns, connect(sandbox, account, backoff=live_backoff))
    sandbox.drop_connections(user_id=account.user.id)
    await conn.wait_for(resumed(1), 5.0)
    assert live_backoff.attempts == 1
    # One heartbeat round trip after RESUMED makes the connection count as stable.
    acks = conn.counters.acks
    await conn.wait_for(lambda c: c.counters.acks > acks, 5.0)
    assert live_backoff.attempts == 0


def dead_port() -> int:
    """A port nobody listens on (bound a moment ago, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_identify_pacer_is_shared(
    sandbox: DiscordSandbox, wire: Wire, conns: list[GatewayConnection]
) -> None:
    pacer = IdentifyPacer(max_concurrency=2, window=0.5)
    accounts = [new_account(sandbox, f"acct{i}") for i in range(3)]
    for a in accounts:
        conn = connect(sandbox, a, identify_pacer=pacer)
        conns.append(conn)
        await conn.start()
    for conn in conns:
        await conn.wait_ready(5.0)
    times = sorted(f.at for f in wire.frames if f.op == 2)
    assert len(times) == 3
    assert times[2] - times[0] >= 0.45  # the third waited for the first to leave the window


# -- sending ---------------------------------------------------------------------------------


async def test_send_validates_and_reaches_the_server(
    sandbox: DiscordSandbox, wire: Wire, account: Account, conns: list[GatewayConnection]
) -> None:
    conn = connect(sandbox, account)
    with pytest.raises(GatewayNotReady):
        await conn.send(3, {"status": "idle"})
    conns.append(conn)
    await conn.start()
    await conn.wait_ready(5.0)
    for op in (1, 2, 6):
        with pytest.raises(ValueError, match="sent by the gateway connection itself"):
            await conn.send(op, {})
    with pytest.raises(ValueError, match="exceeds 4096"):
        await conn.send(3, {"status": "x" * 5000})
    await conn.send(3, {"status": "idle", "since": 0, "activities": [], "afk": False})
    await conn.wait_for(lambda c: any(f.op == 3 for f in wire.frames), 5.0)
    (presence,) = [f for f in wire.frames if f.op == 3]
    assert presence.token == account.token and presence.d["status"] == "idle"


async def test_send_budget_holds_sends_back_but_not_heartbeats(
    conns: list[GatewayConnection],
) -> None:
    budgets: list[SendBudget] = []

    def frozen_budget() -> SendBudget:
        # A clock that never moves: the window never slides, so every frame of the
        # connection counts and a send held back stays held, however slow the machine.
        budget = SendBudget(clock=lambda: 0.0)
        budgets.append(budget)
        return budget

    async with DiscordSandbox(heartbeat_interval_ms=400, with_midjourney=False) as sb:
        wire = Wire(sb)
        account = new_account(sb)
        conn = await started(conns, connect(sb, account, send_budget=frozen_budget))
        (budget,) = budgets
        (server,) = server_conns(sb, account.user.id)
        presence = {"status": "online", "afk": False}
        sent = 0
        # Fill the ordinary share of the 120 frames (5 are kept for heartbeats); IDENTIFY
        # and heartbeats count too. Nothing is awaited between the check and the send
        # taking its frame, so a heartbeat cannot take the last one in between.
        while budget.available() > 0:
            async with asyncio.timeout(10):  # a send with room goes out at once
                await conn.send(3, presence)
            sent += 1
        assert budget.available(priority=True) == 5
        held = asyncio.create_task(conn.send(3, presence))
        # Heartbeats still go out, from the reserve, and are answered (three acks: one
        # may answer a heartbeat sent before the share was full).
        acks = conn.counters.acks
        await conn.wait_for(lambda c: c.counters.acks >= acks + 3, 5.0)
        assert budget.available(priority=True) <= 3
        assert not held.done()
        # The server got every frame up to those heartbeats' (one socket, in order):
        # each send but the held one, never more than 120 frames, and no 4008 close.
        mine = [f.op for f in wire.frames if f.token == account.token]
        assert mine.count(3) == sent and mine.count(2) == 1
        assert 115 + 2 <= len(mine) <= 120
        assert conn.status is GatewayStatus.READY and server.server_close is None
        await conn.aclose()
        with pytest.raises(GatewayNotReady):
            await held


# -- handler errors, shutdown, secrets --------------------------------------------------------------


async def test_a_failing_handler_does_not_kill_the_connection(
    sandbox: DiscordSandbox, account: Account, conns: list[GatewayConnection]
) -> None:
    seen: list[str] = []
    second = asyncio.Event()

    async def handler(t: str, d: dict[str, Any]) -> None:
        if t == "MESSAGE_CREATE":
            seen.append(d["content"])
            if d["content"] == "boom":
                raise RuntimeError("handler bug")
            second.set()

    with structlog.testing.capture_logs() as logs:
        conn = await started(conns, connect(sandbox, account, on_dispatch=handler))
        post(sandbox, account.channel, "boom")
        post(sandbox, account.channel, "fine")
        await asyncio.wait_for(second.wait(), 5.0)
    assert seen == ["boom", "fine"]
    assert conn.status is GatewayStatus.READY
    assert any(e["event"] == "gateway.dispatch_handler_failed" for e in logs)


def our_tasks() -> list[asyncio.Task[Any]]:
    return [
        t
        for t in asyncio.all_tasks()
        if t.get_coro().__qualname__.startswith("GatewayConnection.")  # type: ignore[union-attr]
    ]


async def test_aclose_ends_the_session_cleanly(sandbox: DiscordSandbox, account: Account) -> None:
    conn = connect(sandbox, account)
    await conn.start()
    await conn.wait_ready(5.0)
    (server,) = server_conns(sandbox, account.user.id)
    session_id = conn.session_id
    await conn.aclose()
    assert conn.status is GatewayStatus.CLOSED
    await asyncio.wait_for(server.closed.wait(), 5.0)
    assert server.ws.close_code == 1000
    assert session_id not in sandbox.gateway.sessions  # 1000 ends the session
    assert our_tasks() == []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del conn
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    await conn_aclose_is_idempotent(sandbox, account)


async def conn_aclose_is_idempotent(sandbox: DiscordSandbox, account: Account) -> None:
    conn = connect(sandbox, account)
    await conn.aclose()
    await conn.aclose()
    assert conn.status is GatewayStatus.CLOSED


async def test_aclose_while_backing_off_is_prompt(
    sandbox: DiscordSandbox, account: Account
) -> None:
    conn = connect(
        sandbox,
        account,
        gateway_url=f"ws://127.0.0.1:{dead_port()}/gateway",
        backoff=Backoff(base=30.0, cap=60.0, rng=FixedRandom(0.99)),
    )
    await conn.start()
    await conn.wait_for(lambda c: c.status is GatewayStatus.BACKOFF, 5.0)
    t0 = time.monotonic()
    await conn.aclose()
    assert time.monotonic() - t0 < 10.0  # not the 30-60 s backoff, however busy the machine
    assert conn.status is GatewayStatus.CLOSED


async def test_token_never_reaches_logs_reprs_or_errors(
    sandbox: DiscordSandbox, account: Account
) -> None:
    bad_token = "mfa.secret-looking-token"
    with structlog.testing.capture_logs() as logs:
        conn = connect(sandbox, account)
        await conn.start()
        await conn.wait_ready(5.0)
        sandbox.stop_acking(user_id=account.user.id)
        await conn.wait_for(resumed(1), 5.0)
        sandbox.close_connections(4004, user_id=account.user.id)
        await conn.wait_for(lambda c: c.status is GatewayStatus.DISABLED, 5.0)
        with pytest.raises(GatewayDisabled) as disabled:
            await conn.wait_ready(1.0)
        await conn.aclose()
        other = GatewayConnection(
            GatewaySettings(
                name="bad", token=SecretStr(bad_token), gateway_url=sandbox.gateway_url
            ),
            on_dispatch=_ignore,
        )
        await other.start()
        with pytest.raises(GatewayDisabled) as bad:
            await other.wait_ready(5.0)
        await other.aclose()
    assert any(e["event"] == "gateway.identify" for e in logs)
    texts = [
        repr(logs),
        repr(conn),
        repr(vars(conn)),
        str(conn.disabled_reason),
        str(disabled.value),
        repr(disabled.value),
        repr(other),
        repr(vars(other)),
        str(bad.value),
    ]
    for text in texts:
        assert account.token not in text and bad_token not in text
    with pytest.raises(ValueError, match="empty token"):
        GatewaySettings(name="x", token=SecretStr(""), gateway_url=sandbox.gateway_url)


async def _ignore(t: str, d: dict[str, Any]) -> None:
    del t, d


async def test_shared_session_is_left_open(sandbox: DiscordSandbox, account: Account) -> None:
    async with aiohttp.ClientSession() as http:
        conn = connect(sandbox, account, http=http)
        await conn.start()
        await conn.wait_ready(5.0)
        await conn.aclose()
        assert not http.closed


# -- settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"token": SecretStr("")}, "empty token"),
        ({"invalid_session_delay": (2.0, 1.0)}, "invalid_session_delay"),
        ({"invalid_session_delay": (-1.0, 1.0)}, "invalid_session_delay"),
        ({"shard": (2, 2)}, "shard"),
        ({"gateway_url": "https://gateway.discord.gg"}, "ws:// or wss://"),
    ],
)
def test_settings_are_checked_when_built(change: dict[str, Any], problem: str) -> None:
    fields: dict[str, Any] = {
        "name": "acct",
        "token": SecretStr("t"),
        "gateway_url": "wss://gateway.discord.gg",
    }
    GatewaySettings(**fields)
    with pytest.raises(ValueError, match=problem):
        GatewaySettings(**(fields | change))


def test_settings_are_frozen_and_keep_the_token_out_of_their_repr() -> None:
    settings = GatewaySettings(
        name="acct", token=SecretStr("mfa.very-secret"), gateway_url="wss://g.example"
    )
    assert "very-secret" not in repr(settings)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.compress = False  # type: ignore[misc]


def test_identify_payload_of_a_sharded_bot() -> None:
    settings = GatewaySettings(
        name="bot",
        token=SecretStr("t"),
        gateway_url="wss://g.example",
        bot=True,
        intents=GUILDS,
        shard=(1, 4),
    )
    d = identify_payload(settings)
    assert "token" not in d
    assert d["intents"] == GUILDS and d["shard"] == [1, 4] and d["large_threshold"] == 250
    assert d["properties"]["browser"] == "gouache" and "capabilities" not in d
