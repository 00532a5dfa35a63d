"""Saying which port the demo could not take, and how to pick another (instead of a traceback)."""

from __future__ import annotations

import errno

from gouache.errors import ErrorCode, GouacheError


class PortBusy(GouacheError):
    """A port the demo needs is taken by another program."""

    code = ErrorCode.CONFIG_INVALID

    def __init__(self, port: int, option: str, what: str) -> None:
        super().__init__(
            f"port {port} ({what}) is already in use; pick another with {option} N "
            f"(or {option} 0 for any free port), or stop what is listening there."
        )
        self.port = port
        self.option = option


def is_address_in_use(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is "address already in use"."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.EADDRINUSE, errno.EACCES):
            return True
        if "address already in use" in str(exc).lower():
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False
