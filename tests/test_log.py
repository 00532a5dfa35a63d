"""Log lines never carry a secret, whatever path they take."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from gouache.log import MASK, configure_logging, redactor

TOKEN = "MTEwMDAwMDAwMDAwMDAwMDAwMQ.GhXyZa.abcdefghijklmnopqrstuvwxyz0123456789AB"
REGISTERED = "plain-secret-from-config-42"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("debug", "json", secrets=[REGISTERED], stream=stream)
    yield stream
    redactor.clear()
    structlog.reset_defaults()
    for handler in list(logging.getLogger().handlers):
        if getattr(handler, "_gouache", False):
            logging.getLogger().removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_structlog_event_fields_are_redacted(captured: io.StringIO) -> None:
    log = structlog.get_logger("t")
    log.info(
        "worker.connect",
        token=TOKEN,
        note=f"using {REGISTERED} now",
        headers={"Authorization": f"Bot {TOKEN}", "X-Other": "fine"},
        url="redis://:hunter22@127.0.0.1:6379/0",
        nested=[f"Bearer {REGISTERED}x"],
    )
    text = captured.getvalue()
    assert TOKEN not in text and REGISTERED not in text and "hunter22" not in text
    (event,) = lines(captured)
    assert event["token"] == MASK
    assert event["note"] == f"using {MASK} now"
    assert event["headers"] == {"Authorization": MASK, "X-Other": "fine"}
    assert event["url"] == f"redis://:{MASK}@127.0.0.1:6379/0"
    assert event["event"] == "worker.connect"


def test_stdlib_records_and_exceptions_are_redacted(captured: io.StringIO) -> None:
    logging.getLogger("discord.gateway").warning("identify with %s failed", TOKEN)
    try:
        raise RuntimeError(f"401 for token {REGISTERED}")
    except RuntimeError:
        structlog.get_logger("t").exception("boom")
    text = captured.getvalue()
    assert TOKEN not in text and REGISTERED not in text
    events = lines(captured)
    assert events[0]["event"] == f"identify with {MASK} failed"
    assert "RuntimeError" in text  # the traceback is still there, masked


def test_unregistered_discord_token_shape_is_masked() -> None:
    other = "ODk5OTk5OTk5OTk5OTk5OTk5.YAbCdE.zZyYxXwWvVuUtTsSrRqQpPoOnNmMlL"
    assert redactor.text(f"token={other}!") == f"token={MASK}!"
    assert redactor.text("a normal sentence. with dots.") == "a normal sentence. with dots."


def test_interaction_tokens_in_url_paths_are_masked() -> None:
    token = "aW50ZXJhY3Rpb246MTIzNDU2Nzg5OmFiY2RlZmdoaWprbG1ub3A"
    line = f"PATCH /api/v10/webhooks/1100000000000000001/{token}/messages/@original 200"
    assert (
        redactor.text(line)
        == f"PATCH /api/v10/webhooks/1100000000000000001/{MASK}/messages/@original 200"
    )
    callback = f"POST /api/v10/interactions/1200000000000000002/{token}/callback"
    assert token not in redactor.text(callback)
