"""The configuration file: one TOML file, validated by pydantic, secrets from the environment.

Secrets are written as ``"${ENV_NAME}"`` and resolved from the environment
before validation; they become `SecretStr` and are never printed. Every problem
in a file is reported at once, one line each, naming the field path the owner
must fix (``midjourney.accounts[1].concurrency: must be ≥ 1``).

>>> cfg = load_config("config.toml")          # raises ConfigError(problems)
>>> print(cfg.summary())
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from gouache.errors import ConfigError

__all__ = [
    "AdminConfig",
    "ComfyUIServer",
    "Config",
    "DescribeConfig",
    "DiscordConfig",
    "ImagesConfig",
    "LoggingConfig",
    "MidjourneyAccount",
    "ModerationConfig",
    "QueueConfig",
    "StorageConfig",
    "TierConfig",
    "TranslateConfig",
    "is_loopback",
    "load_config",
    "parse_config",
]

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"

Snowflake = Annotated[int, Field(gt=0, lt=2**64)]
Seconds = Annotated[float, Field(gt=0)]
# URLs are checked for their scheme and kept as text, without a trailing slash.
HttpUrl = Annotated[str, AfterValidator(lambda v: _check_url(v, ("http", "https")))]
EndpointUrl = Annotated[
    str, AfterValidator(lambda v: _check_url(v, ("http", "https", "ws", "wss")))
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class DiscordConfig(_Section):
    """The member-facing bot."""

    token: SecretStr
    application_id: Snowflake
    owner_ids: list[Snowflake] = Field(default_factory=list)
    guild_ids: list[Snowflake] = Field(default_factory=list)
    api_base: EndpointUrl | None = None
    gateway_url: EndpointUrl | None = None
    # Several processes: each runs one shard of the bot (Discord routes a guild's
    # events to one shard), and all share the Redis store.
    shard_id: int | None = Field(default=None, ge=0)
    shard_count: int | None = Field(default=None, ge=1)

    @field_validator("token")
    @classmethod
    def _token_not_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _shards(self) -> DiscordConfig:
        if (self.shard_id is None) != (self.shard_count is None):
            raise ValueError("shard_id: set shard_id and shard_count together")
        if (
            self.shard_id is not None
            and self.shard_count is not None
            and self.shard_id >= self.shard_count
        ):
            raise ValueError(f"shard_id: must be < shard_count ({self.shard_count})")
        return self


class StorageConfig(_Section):
    """Where jobs, quotas and images live."""

    backend: Literal["sqlite", "redis"] = "sqlite"
    sqlite_path: Path = Path("gouache.db")
    # fsync each commit before acknowledging it: survives power loss, ~15% slower.
    sqlite_fsync: bool = False
    redis_url: SecretStr | None = None
    redis_prefix: str = Field(default="gouache", pattern=r"^[A-Za-z0-9:_.-]{1,64}$")
    images_dir: Path = Path("images")
    # Finished jobs, and images no job stored since, are deleted after this many days
    # (checked at start and each local midnight); 0 keeps everything.
    keep_days: float = Field(default=30.0, ge=0)

    @model_validator(mode="after")
    def _redis_needs_url(self) -> StorageConfig:
        if self.backend == "redis":
            if self.redis_url is None:
                raise ValueError('redis_url: required when backend = "redis"')
            url = self.redis_url.get_secret_value()
            if not url.startswith(("redis://", "rediss://", "unix://")):
                raise ValueError("redis_url: must start with redis://, rediss:// or unix://")
        return self


class TimeoutsConfig(_Section):
    """Stage timeouts of one job, in seconds."""

    submit: Seconds = 30.0
    start: Seconds = 600.0
    run: Seconds = 600.0
    store: Seconds = 60.0


class TierConfig(_Section):
    """A class of members, granted by Discord roles."""

    name: str = Field(pattern=_NAME)
    weight: float = Field(default=1.0, gt=0, le=1000)
    daily_limit: int | None = Field(default=None, ge=0)
    role_ids: list[Snowflake] = Field(default_factory=list)
    # What the tier may use (None: anything the pool runs) and Midjourney's speed for it.
    backends: list[Literal["midjourney", "comfyui"]] | None = None
    models: list[str] | None = None
    midjourney_mode: Literal["fast", "relax"] | None = None


class QueueConfig(_Section):
    """Fair queue, daily limits and the dispatcher."""

    daily_limit: int = Field(default=100, ge=0)
    timezone: str = "UTC"
    max_queued_per_user: int = Field(default=50, ge=1)
    max_prompt_chars: int = Field(default=1500, ge=10, le=6000)
    max_batch: int = Field(default=32, ge=1, le=1000)
    lease_s: Seconds = 120.0
    max_attempts: int = Field(default=2, ge=1, le=20)
    grace_s: float = Field(default=30.0, ge=0)
    default_tier: str = "default"
    timeouts: TimeoutsConfig = Field(default_factory=TimeoutsConfig)
    tiers: list[TierConfig] = Field(default_factory=list)
    #: What a click on a result's button costs, by kind (gouache.actions.DEFAULT_COSTS).
    action_costs: dict[str, int] = Field(default_factory=dict)

    @field_validator("action_costs")
    @classmethod
    def _costs(cls, value: dict[str, int]) -> dict[str, int]:
        from gouache.actions import DEFAULT_COSTS

        for kind, cost in value.items():
            if kind not in DEFAULT_COSTS:
                known = ", ".join(sorted(DEFAULT_COSTS))
                raise ValueError(f"unknown button kind {kind!r} (known: {known})")
            if cost < 1:
                raise ValueError(f"{kind}: a click costs at least 1")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r} (use an IANA name like Asia/Shanghai)"
            ) from None
        return value

    @model_validator(mode="after")
    def _tiers(self) -> QueueConfig:
        names = [t.name for t in self.tiers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"tiers: duplicate tier name {duplicates[0]!r}")
        if self.tiers and self.default_tier not in names:
            raise ValueError(f"default_tier: {self.default_tier!r} is not one of the tiers {names}")
        return self


class MidjourneyAccount(_Section):
    """One Discord user account that drives the Midjourney bot."""

    name: str = Field(pattern=_NAME)
    token: SecretStr
    guild_id: Snowflake
    channel_id: Snowflake
    concurrency: int = Field(default=3, ge=1, le=12)
    mode: Literal["fast", "relax", "turbo"] = "fast"
    pause_s: float = Field(default=0.0, ge=0, le=3600)
    daily_cap: int | None = Field(default=None, ge=1)
    enabled: bool = True
    #: The account's Remix mode: on, off, or read from its /settings when it connects.
    remix: bool | Literal["settings"] = False

    @field_validator("token")
    @classmethod
    def _token_not_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        return value


class MidjourneyConfig(_Section):
    """Midjourney accounts and, for tests and proxies, where Discord is."""

    api_base: EndpointUrl | None = None
    gateway_url: EndpointUrl | None = None
    accounts: list[MidjourneyAccount] = Field(default_factory=list)


#: ComfyUI actions: the buttons' (upscale … reroll) and the input images' (img2img, blend).
ActionName = Literal[
    "upscale", "vary_subtle", "vary_strong", "zoom_out", "pan", "reroll", "img2img", "blend"
]


class ComfyUIServer(_Section):
    """One ComfyUI server."""

    name: str = Field(pattern=_NAME)
    url: HttpUrl
    concurrency: int = Field(default=1, ge=1, le=64)
    workflow: str = "default_sdxl"
    enabled: bool = True
    #: Overrides of ``[comfyui.actions]`` for this server (action -> workflow).
    actions: dict[ActionName, str] = Field(default_factory=dict)


class ComfyUIConfig(_Section):
    """ComfyUI servers, and the workflows of their actions."""

    #: Action name -> workflow (a shipped name or a path); the default of every server.
    actions: dict[ActionName, str] = Field(default_factory=dict)
    servers: list[ComfyUIServer] = Field(default_factory=list)
    # How often checkpoints and LoRAs are read again from each server's /object_info.
    models_refresh_s: float = Field(default=300.0, ge=5, le=86400)

    def actions_for(self, server: ComfyUIServer) -> dict[str, str]:
        """The actions ``server`` offers: the shared table with its own overrides.

        A server's ``""`` takes a shared action away from it.
        """
        merged = {str(k): v for k, v in self.actions.items()}
        merged.update((str(k), v) for k, v in server.actions.items())
        return {name: wf for name, wf in merged.items() if wf}


class ImagesConfig(_Section):
    """Images members send in (image prompts, references, /blend, /describe)."""

    #: The most one image may weigh (never above the interaction's attachment limit).
    max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, le=512 * 1024 * 1024)
    #: The most pixels one image may have (decompression bombs are refused before decoding).
    max_pixels: int = Field(default=40_000_000, ge=64 * 64, le=1_000_000_000)
    #: How long fetching a request's images may take (Discord wants an answer within 3 s).
    fetch_timeout_s: float = Field(default=2.5, gt=0, le=60)


class DescribeConfig(_Section):
    """/describe without Midjourney: an Ollama vision model writes the four prompts."""

    enabled: bool = True
    ollama_url: HttpUrl = "http://127.0.0.1:11434"
    model: str = "llava:7b"
    timeout_s: Seconds = 60.0


class TranslateConfig(_Section):
    """Translation of non-English prompts through Ollama."""

    enabled: bool = False
    ollama_url: HttpUrl = "http://127.0.0.1:11434"
    model: str = "qwen2.5:7b"
    timeout_s: Seconds = 10.0
    cache_size: int = Field(default=1024, ge=0)
    languages: list[str] = Field(default_factory=lambda: ["zh"])

    @field_validator("languages")
    @classmethod
    def _languages(cls, value: list[str]) -> list[str]:
        from gouache.intake.settings import LANGUAGES, SCRIPTS

        unknown = [v for v in value if v not in LANGUAGES and v not in SCRIPTS]
        if unknown:
            raise ValueError(
                f"unknown language or script {unknown[0]!r} (have: {', '.join([*LANGUAGES, *SCRIPTS])})"
            )
        return value


class ModerationConfig(_Section):
    """Banned words and abuse limits."""

    banned_words_file: Path | None = None
    # Words that flag a prompt as adult (content rules); default: the list gouache ships.
    adult_words_file: Path | None = None
    refusals_to_block: int = Field(default=3, ge=1)
    banned_results_to_block: int = Field(default=2, ge=1)
    refusal_window_s: Seconds = 3600.0
    block_hours: list[Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: [1.0, 2.0, 10.0]
    )
    rate_burst: int = Field(default=5, ge=1)
    rate_per_minute: float = Field(default=6.0, gt=0)


class AdminConfig(_Section):
    """The owner's API (used by `gouache pool status` and friends)."""

    enabled: bool = True
    listen: str = "127.0.0.1:8765"
    token: SecretStr | None = None

    @property
    def host(self) -> str:
        return _split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return _split_listen(self.listen)[1]

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        _split_listen(value)
        return value

    @model_validator(mode="after")
    def _token_off_loopback(self) -> AdminConfig:
        if self.enabled and self.token is None and not is_loopback(self.host):
            raise ValueError(
                f"token: required when listening on a non-loopback address ({self.host})"
            )
        return self


class LoggingConfig(_Section):
    """Where log lines go and how they look."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["console", "json"] = "console"
    file: Path | None = None


class Config(_Section):
    """The whole configuration file."""

    discord: DiscordConfig | None = None
    storage: StorageConfig = Field(default_factory=StorageConfig)
    queue: QueueConfig = Field(default_factory=QueueConfig)
    midjourney: MidjourneyConfig = Field(default_factory=MidjourneyConfig)
    comfyui: ComfyUIConfig = Field(default_factory=ComfyUIConfig)
    translate: TranslateConfig = Field(default_factory=TranslateConfig)
    images: ImagesConfig = Field(default_factory=ImagesConfig)
    describe: DescribeConfig = Field(default_factory=DescribeConfig)
    moderation: ModerationConfig = Field(default_factory=ModerationConfig)
    admin: AdminConfig = Field(default_factory=AdminConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @model_validator(mode="after")
    def _shards_need_redis(self) -> Config:
        if (
            self.discord is not None
            and (self.discord.shard_count or 1) > 1
            and self.storage.backend != "redis"
        ):
            raise ValueError(
                'discord.shard_count: several shards share a queue only with storage.backend = "redis"'
            )
        return self

    @model_validator(mode="after")
    def _unique_worker_names(self) -> Config:
        seen: set[str] = set()
        for name in [a.name for a in self.midjourney.accounts] + [
            s.name for s in self.comfyui.servers
        ]:
            if name in seen:
                raise ValueError(f"worker name {name!r} is used twice (names must be unique)")
            seen.add(name)
        return self

    def secrets(self) -> list[str]:
        """Every secret value in the file (for the log redactor)."""
        found: list[str] = []
        for value in _walk_secrets(self):
            secret = value.get_secret_value()
            if secret:
                found.append(secret)
        return found

    def worker_count(self) -> int:
        """How many workers are switched on."""
        return sum(a.enabled for a in self.midjourney.accounts) + sum(
            s.enabled for s in self.comfyui.servers
        )

    def summary(self) -> str:
        """A human summary; secrets shown as ``***``."""
        lines: list[str] = []
        if self.discord is None:
            lines.append("discord: (not set: the bot will not connect)")
        else:
            d = self.discord
            lines.append(
                f"discord: application {d.application_id}, token ***, "
                f"{len(d.owner_ids)} owner(s), "
                + (
                    f"commands synced to {len(d.guild_ids)} guild(s)"
                    if d.guild_ids
                    else "global commands"
                )
                + (f", API {d.api_base}" if d.api_base else "")
            )
        s = self.storage
        where = (
            str(s.sqlite_path)
            if s.backend == "sqlite"
            else "redis url *** prefix " + s.redis_prefix
        )
        lines.append(f"storage: {s.backend} ({where}), images in {s.images_dir}")
        q = self.queue
        lines.append(
            f"queue: {q.daily_limit} images/user/day, resets at midnight {q.timezone}, "
            f"≤ {q.max_queued_per_user} queued/user, batches ≤ {q.max_batch}"
        )
        for tier in q.tiers:
            limit = q.daily_limit if tier.daily_limit is None else tier.daily_limit
            lines.append(
                f"  tier {tier.name}: weight {tier.weight:g}, {limit}/day, {len(tier.role_ids)} role(s)"
            )
        for a in self.midjourney.accounts:
            cap = f", cap {a.daily_cap}/day" if a.daily_cap else ""
            state = "" if a.enabled else " (disabled)"
            lines.append(
                f"midjourney {a.name}: token ***, channel {a.channel_id}, "
                f"{a.concurrency} at once, {a.mode}{cap}{state}"
            )
        for srv in self.comfyui.servers:
            state = "" if srv.enabled else " (disabled)"
            lines.append(
                f"comfyui {srv.name}: {srv.url}, {srv.concurrency} at once, workflow {srv.workflow}{state}"
            )
        if self.worker_count() == 0:
            lines.append("workers: none enabled (jobs will wait in the queue)")
        t = self.translate
        lines.append(
            f"translate: {'on via ' + t.ollama_url + ' model ' + t.model if t.enabled else 'off'}"
        )
        m = self.moderation
        lines.append(
            f"moderation: banned words {m.banned_words_file or '(none)'}, "
            f"{m.rate_burst} burst / {m.rate_per_minute:g} per minute"
        )
        admin = self.admin
        lines.append(
            f"admin: {'http://' + admin.listen if admin.enabled else 'off'}"
            + (", token ***" if admin.token else ", no token (loopback only)")
        )
        lines.append(f"logging: {self.logging.level}, {self.logging.format}")
        return "\n".join(lines)


# -- loading ------------------------------------------------------------------


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read, resolve and validate a config file; raises `ConfigError` listing every problem.

    Relative paths in the file (database, images, workflows, word lists) are
    taken relative to the file's directory.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from None
    return parse_config(text, env=env, base_dir=path.parent, source=str(path))


def parse_config(
    text: str,
    *,
    env: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
    source: str = "<config>",
) -> Config:
    """Validate TOML text (see `load_config`)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{source}: TOML syntax error: {exc}"]) from None
    problems: list[str] = []
    resolved = _resolve_env(raw, os.environ if env is None else env, (), problems)
    try:
        config = Config.model_validate(resolved)
    except ValidationError as exc:
        # A field whose variable is unset has one problem: the variable, not its empty value.
        unset = tuple(line.partition(": ")[0] + ":" for line in problems)
        problems.extend(line for line in _describe(exc) if not line.startswith(unset))
        raise ConfigError(_unique(problems)) from None
    if problems:
        raise ConfigError(_unique(problems))
    if base_dir is not None:
        config = _anchor_paths(config, base_dir)
    return config


def _resolve_env(
    value: Any, env: Mapping[str, str], path: tuple[str | int, ...], problems: list[str]
) -> Any:
    if isinstance(value, dict):
        return {k: _resolve_env(v, env, (*path, k), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_env(v, env, (*path, i), problems) for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                problems.append(f"{_format_path(path)}: environment variable {name} is not set")
                return ""
            return env[name]

        return _ENV_REF.sub(substitute, value)
    return value


def _anchor_paths(config: Config, base: Path) -> Config:
    def anchored(p: Path) -> Path:
        return p if p.is_absolute() else base / p

    storage = config.storage.model_copy(
        update={
            "sqlite_path": anchored(config.storage.sqlite_path),
            "images_dir": anchored(config.storage.images_dir),
        }
    )

    def workflow(name: str) -> str:
        return str(anchored(Path(name))) if name.endswith(".json") else name

    servers = [
        s.model_copy(
            update={
                "workflow": workflow(s.workflow),
                "actions": {k: workflow(v) for k, v in s.actions.items()},
            }
        )
        for s in config.comfyui.servers
    ]
    moderation = config.moderation
    if moderation.banned_words_file is not None:
        moderation = moderation.model_copy(
            update={"banned_words_file": anchored(moderation.banned_words_file)}
        )
    if moderation.adult_words_file is not None:
        moderation = moderation.model_copy(
            update={"adult_words_file": anchored(moderation.adult_words_file)}
        )
    logging = config.logging
    if logging.file is not None:
        logging = logging.model_copy(update={"file": anchored(logging.file)})
    return config.model_copy(
        update={
            "storage": storage,
            "comfyui": config.comfyui.model_copy(
                update={
                    "servers": servers,
                    "actions": {k: workflow(v) for k, v in config.comfyui.actions.items()},
                }
            ),
            "moderation": moderation,
            "logging": logging,
        }
    )


# -- error messages ---------------------------------------------------------------


def _format_path(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(top level)"


def _describe(exc: ValidationError) -> list[str]:
    lines = []
    for error in exc.errors(include_url=False):
        loc = tuple(
            p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-"))
        )
        message = _message(error)
        # Model validators report "field: problem" inside the message; fold it into the path.
        if error["type"] == "value_error" and re.match(r"^[a-z_][a-z_.]*: ", message):
            field, _, message = message.partition(": ")
            loc = (*loc, *field.split("."))
        lines.append(f"{_format_path(loc)}: {message}")
    return lines


def _message(error: Any) -> str:  # noqa: C901, PLR0912
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "greater_than_equal":
        return f"must be ≥ {ctx['ge']:g}"
    if kind == "greater_than":
        return f"must be > {ctx['gt']:g}"
    if kind == "less_than_equal":
        return f"must be ≤ {ctx['le']:g}"
    if kind == "less_than":
        return f"must be < {ctx['lt']:g}"
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "unknown option (check the spelling against config.example.toml)"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '')}"
    if kind in {"int_parsing", "int_type", "int_from_float"}:
        return "must be an integer"
    if kind in {"float_parsing", "float_type"}:
        return "must be a number"
    if kind in {"bool_parsing", "bool_type"}:
        return "must be true or false"
    if kind in {"string_type"}:
        return "must be a string"
    if kind in {"list_type"}:
        return "must be a list"
    if kind in {"model_type", "dict_type", "model_attributes_type"}:
        return "must be a table"
    if kind == "string_pattern_mismatch":
        return "may hold only letters, digits, '_', '-' and '.' (at most 64)"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return str(error["msg"])


def _unique(lines: list[str]) -> list[str]:
    return list(dict.fromkeys(lines))


# -- helpers -------------------------------------------------------------------------


def _check_url(value: str, schemes: tuple[str, ...]) -> str:
    scheme, sep, rest = value.partition("://")
    if not sep or scheme not in schemes or not rest:
        raise ValueError(f"must be a URL starting with {' or '.join(s + '://' for s in schemes)}")
    return value.rstrip("/")


def _split_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("must be host:port, like 127.0.0.1:8765")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, brackets allowed) means this machine only."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _walk_secrets(model: BaseModel) -> Iterator[SecretStr]:
    for name in type(model).model_fields:
        value = getattr(model, name)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, SecretStr):
                yield item
            elif isinstance(item, BaseModel):
                yield from _walk_secrets(item)
