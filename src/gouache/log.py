"""Logging: structlog for our events, the standard library's records (discord.py, aiohttp) through the same pipeline.

Every line passes through `Redactor` last, so no secret reaches a log line:
values registered from the config (tokens, the Redis URL, the admin token)
are replaced wherever they appear, and so is anything shaped like a Discord
token or an ``Authorization`` header value, registered or not.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterable, MutableMapping
from pathlib import Path
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = ["MASK", "Redactor", "configure_logging", "redactor"]

MASK = "***"

# A Discord token: base64 user id, a timestamp part, an HMAC part.
_DISCORD_TOKEN = re.compile(r"\b[A-Za-z0-9_-]{18,30}\.[A-Za-z0-9_-]{5,8}\.[A-Za-z0-9_-]{25,}\b")
# Authorization header values and URL passwords.
_AUTH_VALUE = re.compile(r"\b(Bot|Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)
_URL_PASSWORD = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@", re.IGNORECASE
)
# Interaction tokens travel in URL paths (webhook edits, interaction callbacks).
_TOKEN_PATH = re.compile(r"(/(?:webhooks|interactions)/\d+/)([A-Za-z0-9_.:-]{16,})")
_SECRET_KEYS = frozenset({"token", "authorization", "password", "secret", "api_key", "redis_url"})


class Redactor:
    """Masks secrets in strings, mappings and sequences (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()

    def register(self, secrets: Iterable[str]) -> None:
        """Add exact values to mask (tokens from the config; values shorter than 4 chars are ignored)."""
        with self._lock:
            merged = set(self._secrets) | {s for s in secrets if len(s) >= 4}
            # Longest first, so a secret that contains another is masked whole.
            self._secrets = tuple(sorted(merged, key=len, reverse=True))

    def clear(self) -> None:
        with self._lock:
            self._secrets = ()

    def text(self, value: str) -> str:
        """``value`` with every secret masked."""
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        value = _AUTH_VALUE.sub(lambda m: f"{m.group(1)} {MASK}", value)
        value = _TOKEN_PATH.sub(lambda m: f"{m.group(1)}{MASK}", value)
        value = _URL_PASSWORD.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:{MASK}@", value)
        return _DISCORD_TOKEN.sub(MASK, value)

    def value(self, value: Any, key: str | None = None) -> Any:
        """Redact any JSON-like value; a field named like a secret is masked outright."""
        if key is not None and key.lower() in _SECRET_KEYS and value not in (None, ""):
            return MASK
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.value(v, str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.value(v) for v in value)
        if isinstance(value, BaseException):
            return self.text(f"{type(value).__name__}: {value}")
        return value

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        """A structlog processor."""
        return {k: self.value(v, k) for k, v in event_dict.items()}


redactor = Redactor()
"""The process-wide redactor every log line passes through."""


class _RedactingFormatter(structlog.stdlib.ProcessorFormatter):
    """Masks the final rendered line too (exception tracebacks are rendered late)."""

    def format(self, record: logging.LogRecord) -> str:
        return redactor.text(super().format(record))


def configure_logging(
    level: str = "info",
    fmt: str = "console",
    file: Path | None = None,
    *,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Set up structlog and the standard library's logging once for the process.

    ``secrets`` are registered with the redactor; ``fmt`` is ``console`` (for
    people) or ``json`` (one object per line, for log shippers).
    """
    redactor.register(secrets)
    numeric = getattr(logging, level.upper())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream is None and sys.stderr.isatty())

    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            redactor,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = _RedactingFormatter(
        foreign_pre_chain=[*shared, _stdlib_message, redactor],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, redactor, renderer],
    )
    handlers: list[logging.Handler] = [logging.StreamHandler(stream or sys.stderr)]
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(file, encoding="utf-8"))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_gouache", False):
            root.removeHandler(old)
            old.close()
    for handler in handlers:
        handler.setFormatter(formatter)
        handler._gouache = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(numeric)
    # discord.py and aiohttp are chatty at debug; keep them at info unless asked.
    for noisy in ("discord", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.INFO))
    # gouache never joins voice: discord.py's warning about voice libraries is noise.
    voice = logging.getLogger("discord.client")
    if not any(isinstance(f, _NoVoiceWarning) for f in voice.filters):
        voice.addFilter(_NoVoiceWarning())


class _NoVoiceWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "voice will NOT be supported" not in record.getMessage()


def _stdlib_message(
    logger: WrappedLogger, method: str, event_dict: MutableMapping[str, Any]
) -> EventDict:
    """Render a foreign record's %-args before redaction sees the message."""
    record = event_dict.get("_record")
    if isinstance(record, logging.LogRecord) and record.args:
        event_dict["event"] = record.getMessage()
        record.args = None
        record.msg = event_dict["event"]
    return dict(event_dict)
