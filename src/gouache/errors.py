"""The error tree: every error gouache raises on purpose is a `GouacheError`.

Each error carries a stable machine-readable ``code`` (an `ErrorCode`, never a
bare string) and a message fit to show whoever caused it: a member sees one
short line; details with server paths or stack text go to the log. Classes
live beside the code that raises them; this is the whole tree::

    GouacheError                       gouache.errors
    ├── ConfigError                    config_invalid: the TOML file is unusable
    │   └── WorkflowError              pool.workflows: a ComfyUI template is unusable
    ├── QuotaExceeded                  the member has no images left today
    ├── QueueLimitExceeded             the member has as many jobs waiting as allowed
    ├── PromptRejected                 the prompt cannot be accepted
    │   ├── InvalidParameter           a --param is unknown or out of range
    │   ├── UnknownModel               channels.errors: a model the pool cannot run (lists the valid ones)
    │   └── ContentRefused             channels.errors: an adult prompt the channel's rule refuses
    ├── ImageRejected                  images.check: an input image is unusable or unsafe to fetch
    ├── RateLimited                    intake.limits: the member sends too fast
    ├── UserBlocked                    the member is banned or blocked for a while
    ├── NotYourJob                     bot.service: a button of someone else's job
    ├── MissingPermissions             bot.service: gouache cannot deliver in this channel
    ├── ClickRefused                   bot.clicks: a button click that cannot become a job
    ├── SettingsInvalid                channels.errors: a settings change, one line per problem
    ├── NotAllowed                     channels.errors: not for this member (Manage Server, tier)
    ├── ChannelClosed                  channels.errors: the channel takes no requests
    ├── ChannelCapReached              channels.errors: the channel's daily cap is used up
    ├── JobNotFound                    no job with that id
    ├── IllegalTransition              a job state change the table forbids (a bug)
    ├── LeaseLost                      the lease on a job expired and was recovered
    ├── WorkerUnavailable              no worker can take the job right now
    ├── JobRefused                     pool.midjourney_verdicts: the job fails, the worker is fine
    ├── DiscordUnreachable             pool.midjourney_rest: Discord did not answer usably
    ├── TokenRejected                  pool.midjourney_rest: 401, the account token is invalid
    ├── GatewayError                   pool.gateway: a gateway connection cannot do it
    │   ├── GatewayNotReady            not READY (connecting, resuming, backing off)
    │   ├── GatewayDisabled            a fatal close code; ``reason`` says why
    │   └── GatewayClosed              aclose() was called
    ├── ParentImageMissing             pool.comfyui_parents: a button's image is gone everywhere
    ├── ComfyUIError                   pool.comfyui_client: a ComfyUI server failed us
    │   ├── ComfyUIUnreachable         it did not answer (connection, timeout) or is off
    │   ├── ComfyUIRejected            it answered an HTTP status we cannot use
    │   └── ComfyUITooLarge            it sent an image larger than we accept
    ├── TokenExpired                   bot.delivery: the 15-minute interaction token is gone
    ├── Refused                        bot.delivery: Discord refused a route (a permission is missing)
    ├── TranslationFailed              intake.translate: no trustworthy translation
    ├── BotDisconnected                app: Discord ended the bot's gateway for good
    ├── ApiError                       admin.server: an admin API answer other than 200
    └── AdminError                     admin.client: an admin call failed (one line, exit code)

`ErrorCode` is one vocabulary for job failures (``Failed.code``,
``Job.error_code``), refusals shown to members, and the admin API's answers.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum


class ErrorCode(StrEnum):
    """Stable codes: why a job did not succeed, why a request was refused, what went wrong."""

    # Why a job did not succeed (Failed.code, Job.error_code; shown to owners, mapped to user text).
    CANCELED = "canceled"
    TIMEOUT = "timeout"
    LEASE_EXPIRED = "lease_expired"
    ATTEMPTS_EXHAUSTED = "attempts_exhausted"
    WORKER_ERROR = "worker_error"
    WORKER_UNAVAILABLE = "worker_unavailable"
    INVALID_PROMPT = "invalid_prompt"
    INVALID_PARAMETER = "invalid_parameter"
    BANNED_PROMPT = "banned_prompt"
    OUTPUT_FILTERED = "output_filtered"
    QUEUE_FULL = "queue_full"
    PARENT_UNAVAILABLE = "parent_unavailable"
    SHUTDOWN = "shutdown"
    INTERNAL = "internal"
    RATE_LIMITED = "rate_limited"  # also: a member sending requests too fast

    # Why a request was refused before it became a job.
    QUOTA_EXCEEDED = "quota_exceeded"
    QUEUE_LIMIT = "queue_limit"
    PROMPT_REJECTED = "prompt_rejected"
    PROMPT_TOO_LONG = "prompt_too_long"
    PROMPT_BANNED = "prompt_banned"
    USER_BLOCKED = "user_blocked"
    NOT_YOUR_JOB = "not_your_job"
    MISSING_PERMISSIONS = "missing_permissions"
    UNKNOWN_MODEL = "unknown_model"
    NOT_ALLOWED = "not_allowed"
    CHANNEL_CLOSED = "channel_closed"
    CHANNEL_CAP = "channel_cap"
    CONTENT_REFUSED = "content_refused"
    SETTINGS_INVALID = "settings_invalid"
    INVALID_IMAGE = "invalid_image"
    ALREADY_RUNNING = "already_running"  # the same button of the same image, still running
    BUTTON_GONE = "button_gone"  # the result does not offer that button (any more)

    # What went wrong inside (for the owner and the log).
    ERROR = "error"
    CONFIG_INVALID = "config_invalid"
    WORKFLOW_INVALID = "workflow_invalid"
    JOB_NOT_FOUND = "job_not_found"
    ILLEGAL_TRANSITION = "illegal_transition"
    LEASE_LOST = "lease_lost"
    GATEWAY_ERROR = "gateway_error"
    GATEWAY_NOT_READY = "gateway_not_ready"
    GATEWAY_DISABLED = "gateway_disabled"
    GATEWAY_CLOSED = "gateway_closed"
    INTERACTION_TOKEN_EXPIRED = "interaction_token_expired"
    BOT_DISCONNECTED = "bot_disconnected"
    TRANSLATION_FAILED = "translation_failed"
    ADMIN_CALL_FAILED = "admin_call_failed"

    # The admin API's answers (with JOB_NOT_FOUND and USER_BLOCKED above).
    FORBIDDEN_HOST = "forbidden_host"
    UNAUTHORIZED = "unauthorized"
    JSON_REQUIRED = "json_required"
    BAD_JSON = "bad_json"
    BAD_REQUEST = "bad_request"
    BAD_REASON = "bad_reason"
    UNKNOWN_ACTION = "unknown_action"
    UNKNOWN_TIER = "unknown_tier"
    WORKER_NOT_FOUND = "worker_not_found"
    WORKER_ELSEWHERE = "worker_elsewhere"
    WORKER_NOT_RUNNING = "worker_not_running"
    AMBIGUOUS_JOB = "ambiguous_job"
    JOB_FINISHED = "job_finished"
    NOT_RETRYABLE = "not_retryable"


class GouacheError(Exception):
    """Base of all deliberate gouache errors; ``str(err)`` is safe to show a user."""

    code: ErrorCode = ErrorCode.ERROR

    def __init__(self, message: str, *, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ConfigError(GouacheError):
    """The configuration file is unusable; ``problems`` has one line per problem."""

    code = ErrorCode.CONFIG_INVALID

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems) if problems else "invalid configuration")
        self.problems = list(problems)


class QuotaExceeded(GouacheError):
    """The user has no images left today."""

    code = ErrorCode.QUOTA_EXCEEDED

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

    code = ErrorCode.QUEUE_LIMIT

    def __init__(self, *, limit: int) -> None:
        super().__init__(f"You already have {limit} jobs waiting; wait for one to finish.")
        self.limit = limit


class PromptRejected(GouacheError):
    """The prompt cannot be accepted (bad parameters, banned content, too long)."""

    code = ErrorCode.PROMPT_REJECTED


class InvalidParameter(PromptRejected):
    """A ``--param`` in the prompt is unknown or out of range."""

    code = ErrorCode.INVALID_PARAMETER


class UserBlocked(GouacheError):
    """The user is banned or temporarily blocked."""

    code = ErrorCode.USER_BLOCKED


class JobNotFound(GouacheError):
    """No job with that id."""

    code = ErrorCode.JOB_NOT_FOUND


class IllegalTransition(GouacheError):
    """A job state change that the transition table does not allow (a bug)."""

    code = ErrorCode.ILLEGAL_TRANSITION


class LeaseLost(GouacheError):
    """The caller no longer holds the lease on a job (it expired and was recovered)."""

    code = ErrorCode.LEASE_LOST


class WorkerUnavailable(GouacheError):
    """No worker can take the job right now."""

    code = ErrorCode.WORKER_UNAVAILABLE
