"""A small synchronous client of the admin API, for the CLI and scripts.

Every failure becomes an `AdminError` with one line fit to print and an exit
code: 3 when nothing answers (the bot is not running), 4 when the token is
missing or wrong, 1 otherwise (an unknown worker, job or user; a refusal).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from pydantic import SecretStr

from gouache.errors import ErrorCode, GouacheError

DEFAULT_URL = "http://127.0.0.1:8765"

EXIT_ERROR = 1
EXIT_NOT_RUNNING = 3
EXIT_UNAUTHORIZED = 4


class AdminError(GouacheError):
    """A failed admin call: ``str()`` is one line for the owner; ``exit_code`` for the shell."""

    code = ErrorCode.ADMIN_CALL_FAILED

    def __init__(
        self, message: str, *, exit_code: int = EXIT_ERROR, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.status = status


class AdminClient:
    """Calls one running gouache's admin API."""

    def __init__(
        self, url: str = DEFAULT_URL, token: str | SecretStr | None = None, *, timeout: float = 10.0
    ) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise AdminError(f"The admin URL must look like {DEFAULT_URL}, not {url!r}.")
        self.url = url.rstrip("/")
        self._token = token.get_secret_value() if isinstance(token, SecretStr) else token
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"AdminClient({self.url!r}, token={'***' if self._token else None})"

    # -- transport --------------------------------------------------------------

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One request; the decoded JSON answer (or text for non-JSON answers)."""
        headers = {"Accept": "application/json"}
        data: bytes | None = None
        if method != "GET":
            data = json.dumps(body or {}).encode()
            headers["Content-Type"] = "application/json"
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
                kind = response.headers.get_content_type()
        except urllib.error.HTTPError as exc:
            raise self._http_error(exc) from None
        except urllib.error.URLError as exc:
            raise self._unreachable(exc.reason) from None
        except (TimeoutError, ConnectionError) as exc:
            raise self._unreachable(exc) from None
        if kind == "application/json":
            return json.loads(raw)
        return raw.decode("utf-8", "replace")

    def _unreachable(self, reason: object) -> AdminError:
        if isinstance(reason, ConnectionRefusedError):
            why = "connection refused"
        elif isinstance(reason, TimeoutError):
            why = f"no answer within {self.timeout:g} s"
        else:
            why = str(getattr(reason, "strerror", None) or reason)
        return AdminError(
            f"gouache is not running or its admin API is off: nothing answers at {self.url} ({why}).",
            exit_code=EXIT_NOT_RUNNING,
        )

    def _http_error(self, exc: urllib.error.HTTPError) -> AdminError:
        if exc.code == 401:
            hint = "no token was given" if not self._token else "the token was refused"
            return AdminError(
                f"Unauthorized at {self.url}: {hint} "
                "(use --token, GOUACHE_ADMIN_TOKEN or -c with the config's [admin] token).",
                exit_code=EXIT_UNAUTHORIZED,
                status=401,
            )
        message: str | None = None
        try:
            payload = json.loads(exc.read() or b"{}")
            if isinstance(payload, dict) and payload.get("message"):
                message = str(payload["message"])
        except ValueError:
            pass
        if message is None:  # not our API's error shape: something else is listening there
            message = f"HTTP {exc.code} {exc.reason} from {self.url} (is this gouache's admin API?)"
        return AdminError(message, status=exc.code)

    # -- endpoints ----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """``GET /status``."""
        return dict(self.call("GET", "/status"))

    def worker(self, name: str, action: str, reason: str | None = None) -> dict[str, Any]:
        """Enable, disable or drain a worker; its new row."""
        body = {"reason": reason} if reason else {}
        return dict(self.call("POST", f"/workers/{_seg(name)}/{action}", body)["worker"])

    def queue(self, user_id: int | None = None) -> dict[str, Any]:
        """``GET /queue``."""
        query = f"?user={user_id}" if user_id is not None else ""
        return dict(self.call("GET", f"/queue{query}"))

    def user(self, user_id: int) -> dict[str, Any]:
        """``GET /users/{id}``."""
        return dict(self.call("GET", f"/users/{user_id}"))

    def patch_user(self, user_id: int, **changes: Any) -> dict[str, Any]:
        """``PATCH /users/{id}``; the user as it is afterwards."""
        return dict(self.call("PATCH", f"/users/{user_id}", changes))

    def job(self, job_id: str) -> dict[str, Any]:
        """``GET /jobs/{id}``."""
        return dict(self.call("GET", f"/jobs/{_seg(job_id)}")["job"])

    def cancel(self, job_id: str) -> dict[str, Any]:
        """``POST /jobs/{id}/cancel``."""
        return dict(self.call("POST", f"/jobs/{_seg(job_id)}/cancel"))

    def retry(self, job_id: str) -> dict[str, Any]:
        """``POST /jobs/{id}/retry``."""
        return dict(self.call("POST", f"/jobs/{_seg(job_id)}/retry"))

    def channels(self) -> dict[str, Any]:
        """``GET /channels``: every channel with settings."""
        return dict(self.call("GET", "/channels"))

    def channel(self, channel_id: int) -> dict[str, Any]:
        """``GET /channels/{id}``."""
        return dict(self.call("GET", f"/channels/{channel_id}"))

    def patch_channel(self, channel_id: int, changes: dict[str, str]) -> dict[str, Any]:
        """``PATCH /channels/{id}``; the channel as it is afterwards."""
        return dict(self.call("PATCH", f"/channels/{channel_id}", dict(changes)))

    def metrics(self) -> str:
        """``GET /metrics`` (Prometheus text)."""
        return str(self.call("GET", "/metrics"))


def _seg(value: str) -> str:
    return urllib.parse.quote(value, safe="")
