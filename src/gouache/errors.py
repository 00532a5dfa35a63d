"""The error hierarchy: every error gouache raises on purpose is a `GouacheError`.

Each subclass carries a stable machine-readable ``code`` and a message fit to
show the user who caused it (no internals, no secrets).
"""

from __future__ import annotations

from datetime import datetime


class GouacheError(Exception):
    """Base of all deliberate gouache errors; ``str(err)`` is safe to show a user."""

    code: str = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ConfigError(GouacheError):
    """The configuration file is unusable; ``problems`` has one line per problem."""

    code = "config_invalid"

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems) if problems else "invalid configuration")
        self.problems = list(problems)


class QuotaExceeded(GouacheError):
    """The user has no images left today."""

    code = "quota_exceeded"

    def __init__(self, *, limit: int, used: int, resets_at: datetime) -> None:
        super().__init__(
            f"You have used {used} of your {limit} images today; "
            f"the limit resets at {resets_at.strftime('%H:%M %Z')}."
        )
        self.limit = limit
        self.used = used
        self.remaining = max(0, limit - used)
        self.resets_at = resets_at


class QueueLimitExceeded(GouacheError):
    """The user already has as many jobs waiting as allowed."""

    code = "queue_limit"

    def __init__(self, *, limit: int) -> None:
        super().__init__(f"You already have {limit} jobs waiting; wait for one to finish.")
        self.limit = limit


class PromptRejected(GouacheError):
    """The prompt cannot be accepted (bad parameters, banned content, too long)."""

    code = "prompt_rejected"


class InvalidParameter(PromptRejected):
    """A ``--param`` in the prompt is unknown or out of range."""

    code = "invalid_parameter"


class UserBlocked(GouacheError):
    """The user is banned or temporarily blocked."""

    code = "user_blocked"


class JobNotFound(GouacheError):
    """No job with that id."""

    code = "job_not_found"


class IllegalTransition(GouacheError):
    """A job state change that the transition table does not allow (a bug)."""

    code = "illegal_transition"


class LeaseLost(GouacheError):
    """The caller no longer holds the lease on a job (it expired and was recovered)."""

    code = "lease_lost"


class WorkerUnavailable(GouacheError):
    """No worker can take the job right now."""

    code = "worker_unavailable"
