"""Structured events of a running app, and no secret in any of its log lines."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from gouache.jobs import JobState
from gouache.log import configure_logging, redactor

from ..e2e.conftest import embed_title
from .conftest import TOKEN, AdminFactory
from .test_cli import run


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Production logging (JSON lines) into a buffer; the test framework's setup restored after."""
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    noisy = {name: logging.getLogger(name).level for name in ("discord", "aiohttp.access")}
    buffer = io.StringIO()
    configure_logging("debug", "json", stream=buffer)
    try:
        yield buffer
    finally:
        for handler in list(root.handlers):
            if handler not in saved[1]:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(saved[0])
        for name, level in noisy.items():
            logging.getLogger(name).setLevel(level)
        structlog.reset_defaults()
        redactor.clear()


async def test_events_carry_ids_and_no_token_reaches_the_log(
    make_admin: AdminFactory, captured: io.StringIO
) -> None:
    admin = await make_admin({"instant-a": 1})
    app = admin.world.app
    assert app.bot_settings is not None
    bot_token = app.bot_settings.token
    # What `gouache run` registers from the config.
    redactor.register([bot_token, TOKEN])
    sandbox = admin.world.sandbox
    # 429s make discord.py log what it called: the interaction webhook and a channel.
    sandbox.fail_route("POST", "/interactions/*", 429, times=1)
    sandbox.fail_route("PATCH", "/webhooks/*", 429, times=1)
    sandbox.fail_route("POST", "/channels/*/messages", 429, times=1)

    worker = admin.workers["instant-a"]
    worker.behaviour.fail_next = 1
    mona = admin.world.member("mona")
    failed = await admin.imagine_job(mona, "fails first")
    await admin.wait_state(failed.id, JobState.FAILED)
    retried = (await admin.ok("POST", f"/jobs/{failed.id}/retry"))["job"]
    await admin.wait_state(retried["id"], JobState.SUCCEEDED)
    await admin.world.wait(lambda m: embed_title(m) == "Done")
    await admin.ok("POST", "/workers/instant-a/disable", {"reason": "log test"})
    await admin.call("GET", "/status", token="a-wrong-token-" + TOKEN)
    result = await run(admin, "pool", "status", "--token", "another-wrong-token")
    assert result.exit_code == 4 and "another-wrong-token" not in result.output
    worker.set_state(worker.state.OFFLINE)

    text = captured.getvalue()
    events = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert len(events) > 20
    interaction_tokens = list(sandbox.state.interactions_by_token)
    assert interaction_tokens
    # The Discord stand-in's own HTTP server logs the paths it was called on (its
    # side of the wire, which in production is Discord's): those lines are not gouache's.
    ours = "\n".join(
        line
        for line in text.splitlines()
        if not ('"logger": "aiohttp.access"' in line and "/api/v10/" in line)
    )
    for secret in (bot_token, TOKEN, *interaction_tokens):
        assert secret not in ours
    assert "responded with 429" in ours and "is rate limited" in ours

    transitions = [e for e in events if e["event"] == "job.transition" and e["job_id"] == failed.id]
    assert [e["state"] for e in transitions] == ["submitted", "failed"]
    assert all(e["user_id"] == mona.id for e in transitions)
    assert (
        transitions[-1]["worker"] == "instant-a" and transitions[-1]["error_code"] == "worker_error"
    )
    states = [
        e["state"]
        for e in events
        if e["event"] == "job.transition" and e["job_id"] == retried["id"]
    ]
    assert states == ["submitted", "running", "generated", "storing", "succeeded"]
    assert any(e["event"] == "admin.job_retried" and e["retry_of"] == failed.id for e in events)
    assert any(
        e["event"] == "worker.state" and e["worker"] == "instant-a" and e["state"] == "offline"
        for e in events
    )
    assert any(e["event"] == "worker.disabled" and e["reason"] == "log test" for e in events)
