"""The gateway protocol without a socket: frame scripts in, effects out, row by row."""

from __future__ import annotations

import random
from dataclasses import FrozenInstanceError
from typing import Any

import pytest
from pydantic import SecretStr

from gouache.pool.gateway_rules import CloseAction, Recovery
from gouache.pool.gateway_session import (
    Acked,
    AwaitAck,
    Close,
    Deliver,
    Effect,
    GatewaySession,
    LinkPhase,
    Ready,
    SendHeartbeat,
    SendIdentify,
    SendResume,
    Session,
    StartHeartbeats,
)

TOKEN = "secret-token"
IDENTIFY = {"properties": {"os": "test"}, "compress": False, "capabilities": 16381}
URL = "wss://resume.example"


class FixedRandom(random.Random):
    """random() is always 0.5: the first heartbeat after half an interval, op 9 waits the middle."""

    def random(self) -> float:
        return 0.5


def new_session(session: Session | None = None) -> GatewaySession:
    return GatewaySession(
        name="acct",
        token=SecretStr(TOKEN),
        identify=IDENTIFY,
        invalid_session_delay=(1.0, 5.0),
        rng=FixedRandom(0),
        session=session,
    )


# -- frames and the effects they should give -------------------------------------------------


def hello(ms: Any = 1000) -> dict[str, Any]:
    return {"op": 10, "d": {"heartbeat_interval": ms}}


def ready(s: int = 1, sid: Any = "abc") -> dict[str, Any]:
    d = {"session_id": sid, "resume_gateway_url": URL, "user": {"id": "7"}}
    return {"op": 0, "t": "READY", "s": s, "d": d}


def msg(s: int | None, content: str = "x") -> dict[str, Any]:
    return {"op": 0, "t": "MESSAGE_CREATE", "s": s, "d": {"content": content}}


RESUMED = {"op": 0, "t": "RESUMED", "s": None, "d": {}}
ACK = {"op": 11}
BEAT_ASK = {"op": 1, "d": None}
OP7 = {"op": 7, "d": None}

IDENT = SendIdentify({"token": TOKEN, **IDENTIFY})
BEATS = StartHeartbeats(1.0, 0.5)
READY_FX = [Ready("identified"), Deliver("READY", ready()["d"])]
ZOMBIE = Close(
    4000, CloseAction(Recovery.RESUME, "zombie connection: heartbeat not acked"), wait=1.0
)
OP7_CLOSE = Close(4000, CloseAction(Recovery.RESUME, "server asked to reconnect (op 7)"))
OP9_TRUE = Close(4000, CloseAction(Recovery.RESUME, "invalid session, resumable (op 9)"), delay=3.0)
OP9_FALSE = Close(4000, CloseAction(Recovery.IDENTIFY, "invalid session (op 9)"), delay=3.0)
NO_INTERVAL = Close(4000, CloseAction(Recovery.RESUME, "HELLO without heartbeat_interval"))
NO_HELLO = Close(4000, CloseAction(Recovery.RESUME, "no HELLO from the gateway"))


def resume(sid: str, seq: int | None) -> SendResume:
    return SendResume({"token": TOKEN, "session_id": sid, "seq": seq})


def server_close(code: int | None) -> Close:
    """What `ended` gives for a server close with ``code`` (None: no close frame)."""
    from gouache.pool.gateway_rules import close_action

    return Close(code or 0, close_action(code))


# A step: ("open",) | ("recv", frame) | ("tick", late) | ("hello_timeout",) | ("fail", reason)
# | ("end", code or None) ; each with the effects it must give (for "end": the verdict).
Step = tuple[tuple[Any, ...], Any]
CONNECTED: list[Step] = [(("open",), []), (("recv", hello()), [BEATS, IDENT])]
READY_: list[Step] = [*CONNECTED, (("recv", ready()), READY_FX)]

# name, the session given back (or None), the script, the session value at the end.
SCRIPTS: list[tuple[str, Session | None, list[Step], Session | None]] = [
    ("identify, then READY gives the session", None, READY_, Session("abc", 1, URL)),
    (
        "dispatches in order; replays and old sequences are dropped",
        None,
        [
            *READY_,
            (("recv", msg(2, "a")), [Deliver("MESSAGE_CREATE", {"content": "a"})]),
            (("recv", msg(2, "a")), []),
            (("recv", msg(1, "old")), []),
            (("recv", msg(3, "b")), [Deliver("MESSAGE_CREATE", {"content": "b"})]),
        ],
        Session("abc", 3, URL),
    ),
    (
        "a dispatch without a type still moves the sequence",
        None,
        [*READY_, (("recv", {"op": 0, "s": 2, "d": {}}), []), (("tick", 0.0), [SendHeartbeat(2)])],
        Session("abc", 2, URL),
    ),
    (
        "a saved session given back is resumed, and its replay deduplicated",
        Session("abc", 5, URL),
        [
            (("open",), []),
            (("recv", hello()), [BEATS, resume("abc", 5)]),
            (("recv", msg(5)), []),
            (("recv", msg(6, "new")), [Deliver("MESSAGE_CREATE", {"content": "new"})]),
            (("recv", RESUMED), [Ready("resumed"), Deliver("RESUMED", {})]),
        ],
        Session("abc", 6, URL),
    ),
    (
        "heartbeats carry the last sequence; ACKs come back; the first after READY is stable",
        None,
        [
            *CONNECTED,
            (("tick", 0.0), [SendHeartbeat(None)]),
            (("recv", ACK), [Acked(False)]),  # not READY yet: not stable
            (("recv", ready()), READY_FX),
            (("tick", 0.0), [SendHeartbeat(1)]),
            (("recv", ACK), [Acked(True)]),
            (("tick", 0.0), [SendHeartbeat(1)]),
            (("recv", ACK), [Acked(False)]),
        ],
        Session("abc", 1, URL),
    ),
    (
        "a heartbeat that finds the last one unacked: zombie, close 4000 and resume",
        None,
        [
            *READY_,
            (("tick", 0.0), [SendHeartbeat(1)]),
            (("tick", 0.0), [ZOMBIE]),
            (("recv", msg(2)), []),  # closing: nothing more is taken in
            (("end", 1006), ZOMBIE),  # our reason wins over the server's close
        ],
        Session("abc", 1, URL),
    ),
    (
        "a late timer (our loop stalled) lets the reader catch up before judging",
        None,
        [
            *READY_,
            (("tick", 0.0), [SendHeartbeat(1)]),
            (("tick", 0.3), [AwaitAck(1.0)]),
            (("recv", ACK), [Acked(True)]),
            (("tick", 0.0), [SendHeartbeat(1)]),
        ],
        Session("abc", 1, URL),
    ),
    (
        "a late timer with no ACK after the grace is still a zombie",
        None,
        [
            *READY_,
            (("tick", 0.0), [SendHeartbeat(1)]),
            (("tick", 0.3), [AwaitAck(1.0)]),
            (("tick", 0.3), [ZOMBIE]),
        ],
        Session("abc", 1, URL),
    ),
    (
        "slightly late is not late: a quarter interval is the line",
        None,
        [*READY_, (("tick", 0.0), [SendHeartbeat(1)]), (("tick", 0.25), [ZOMBIE])],
        Session("abc", 1, URL),
    ),
    (
        "the server's op 1 gets a heartbeat at once, without spending the ACK",
        None,
        [
            *READY_,
            (("recv", BEAT_ASK), [SendHeartbeat(1)]),
            (("tick", 0.0), [SendHeartbeat(1)]),
        ],
        Session("abc", 1, URL),
    ),
    (
        "op 7: close 4000 and resume the same session",
        None,
        [*READY_, (("recv", OP7), [OP7_CLOSE]), (("end", 1000), OP7_CLOSE)],
        Session("abc", 1, URL),
    ),
    (
        "op 9 true: wait 1-5 s, then resume",
        None,
        [*READY_, (("recv", {"op": 9, "d": True}), [OP9_TRUE]), (("end", None), OP9_TRUE)],
        Session("abc", 1, URL),
    ),
    (
        "op 9 false: wait 1-5 s, then identify anew",
        None,
        [
            *READY_,
            (("recv", {"op": 9, "d": False}), [OP9_FALSE]),
            (("end", None), OP9_FALSE),
            *CONNECTED,
        ],
        None,
    ),
    (
        "a RESUME answered by op 9 false falls back to IDENTIFY",
        Session("gone", 9, URL),
        [
            (("open",), []),
            (("recv", hello()), [BEATS, resume("gone", 9)]),
            (("recv", {"op": 9, "d": False}), [OP9_FALSE]),
            (("end", None), OP9_FALSE),
            *READY_,
        ],
        Session("abc", 1, URL),
    ),
    (
        "HELLO without an interval (or a boolean one) is unusable",
        None,
        [(("open",), []), (("recv", hello(None)), [NO_INTERVAL])],
        None,
    ),
    (
        "a boolean interval is no interval",
        None,
        [(("open",), []), (("recv", hello(True)), [NO_INTERVAL])],
        None,
    ),
    ("a second HELLO changes nothing", None, [*CONNECTED, (("recv", hello(5)), [])], None),
    (
        "no HELLO in time: close and try again",
        None,
        [(("open",), []), (("hello_timeout",), [NO_HELLO]), (("end", None), NO_HELLO)],
        None,
    ),
    (
        "HELLO in time: the watchdog does nothing",
        None,
        [*CONNECTED, (("hello_timeout",), [])],
        None,
    ),
    (
        "no heartbeat before HELLO, none once closed",
        None,
        [(("open",), []), (("tick", 0.0), []), (("recv", OP7), [OP7_CLOSE]), (("tick", 0.0), [])],
        None,
    ),
    (
        "an unusable frame closes 4000 and resumes",
        None,
        [
            *READY_,
            (
                ("fail", "undecodable frame from gateway"),
                [Close(4000, CloseAction(Recovery.RESUME, "undecodable frame from gateway"))],
            ),
        ],
        Session("abc", 1, URL),
    ),
    (
        "READY without a session id leaves nothing to resume",
        None,
        [
            *CONNECTED,
            (("recv", ready(sid="")), [Ready("identified"), Deliver("READY", ready(sid="")["d"])]),
        ],
        None,
    ),
    (
        "frames before a socket is open are ignored",
        None,
        [(("recv", hello()), []), (("tick", 0.0), [])],
        None,
    ),
]
# The server's close codes, each with its recovery (gateway_rules has the whole table).
for code, kept in [
    (4000, True),
    (4008, True),
    (1001, True),
    (None, True),
    (4003, False),
    (4009, False),
    (4004, False),
    (4014, False),
]:
    SCRIPTS.append(
        (
            f"the server closes with {code}",
            None,
            [*READY_, (("end", code), server_close(code))],
            Session("abc", 1, URL) if kept else None,
        )
    )


def run(core: GatewaySession, step: tuple[Any, ...]) -> Any:
    kind, *args = step
    if kind == "open":
        core.opened()
        return []
    if kind == "recv":
        return core.receive(args[0])
    if kind == "tick":
        return core.heartbeat_due(late=args[0])
    if kind == "hello_timeout":
        return core.hello_timed_out()
    if kind == "fail":
        return core.fail(args[0])
    if kind == "end":
        return core.ended(args[0], frame=args[0] is not None)
    raise AssertionError(kind)


@pytest.mark.parametrize(("name", "given", "script", "final"), SCRIPTS, ids=[s[0] for s in SCRIPTS])
def test_frame_scripts(
    name: str, given: Session | None, script: list[Step], final: Session | None
) -> None:
    core = new_session(given)
    for i, (step, expected) in enumerate(script):
        got: list[Effect] | Close = run(core, step)
        assert got == expected, f"step {i} {step[0]}"
    assert core.session == final


# -- the session value and the counters -------------------------------------------------------


def test_the_session_is_a_frozen_value() -> None:
    session = Session("abc", 3, URL)
    with pytest.raises(FrozenInstanceError):
        session.sequence = 4  # type: ignore[misc]
    assert session == Session("abc", 3, URL) and hash(session) == hash(Session("abc", 3, URL))


def test_a_saved_session_does_not_change_as_dispatches_arrive() -> None:
    core = new_session()
    for step, _ in READY_:
        run(core, step)
    saved = core.session
    core.receive(msg(2))
    assert saved == Session("abc", 1, URL)
    assert core.session == Session("abc", 2, URL)


def test_counters_and_phases_follow_the_script() -> None:
    core = new_session()
    assert core.phase is LinkPhase.CLOSED
    core.opened()
    assert core.phase is LinkPhase.HELLO
    core.receive(hello())
    assert core.phase is LinkPhase.IDENTIFYING
    core.receive(ready())
    assert core.phase is LinkPhase.READY and core.user == {"id": "7"}
    core.receive(msg(2))
    core.receive(msg(2))
    core.heartbeat_due()
    core.receive(ACK)
    core.heartbeat_due()
    core.heartbeat_due()
    core.receive({"op": 9, "d": True})  # ignored: already closing after the zombie
    assert core.phase is LinkPhase.CLOSING
    c = core.counters
    assert (c.dispatches, c.duplicates, c.acks, c.missed_heartbeats, c.invalid_sessions) == (
        2,
        1,
        1,
        1,
        0,
    )
    core.ended(None, frame=False)
    core.opened()
    assert core.receive(hello())[1] == resume("abc", 2)
    assert core.phase is LinkPhase.RESUMING


def test_the_token_stays_out_of_reprs() -> None:
    core = new_session(Session("abc", 1, URL))
    core.opened()
    effects = core.receive(hello())
    assert TOKEN not in repr(core) + repr(effects)
    assert effects[1] == resume("abc", 1)  # but it is in the frame to send
