"""The demo world: the Discord sandbox with its Midjourney stand-in, two ComfyUI
stand-ins, an Ollama stand-in, and gouache itself built from a config file —
the same path `gouache run -c config.toml` takes.

Nothing here is special-cased for the demo inside gouache: the demo writes an
ordinary config that points at the stand-ins and starts the ordinary `App`.
"""

from __future__ import annotations

import contextlib
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gouache.app import App
from gouache.config import Config
from gouache.demo.channels import DemoChannels, add_demo_channels, configure_demo_channels
from gouache.demo.ports import PortBusy, is_address_in_use
from gouache.errors import ConfigError
from gouache_sandbox.comfyui import ComfyUISandbox
from gouache_sandbox.comfyui.model import Speed
from gouache_sandbox.discord import DiscordSandbox
from gouache_sandbox.discord.members import SimulatedMember
from gouache_sandbox.discord.midjourney import MidjourneySettings
from gouache_sandbox.discord.state import Channel, Guild, Role
from gouache_sandbox.ollama import OllamaSandbox

__all__ = ["DemoOptions", "DemoWorld"]


@dataclass
class DemoOptions:
    """How big and how fast the demo is."""

    port: int = 8700  # the Discord sandbox and its viewer; 0 picks a free port
    admin_port: int = 8765  # gouache's admin API; 0 picks a free port
    daily_limit: int = 12
    vip_daily_limit: int = 40
    mj_step_s: float = 0.6  # seconds between Midjourney progress messages
    comfy_step_s: float = 0.15  # seconds per ComfyUI sampler step
    workdir: Path | None = None  # default: a temporary directory, removed at the end
    fast: bool = False  # tests: everything as fast as it goes
    log_level: str = "warning"
    lease_s: float = 30.0  # a killed process's jobs come back after this long
    redis_url: str | None = None  # share a Redis instead of the embedded SQLite
    heartbeat_interval_ms: int = 41250  # the Discord stand-in's gateway heartbeat (Discord's)
    log_format: str = "console"  # gouache's log lines: "console" or "json"


@dataclass
class DemoWorld:
    """Everything the demo runs, started and stopped together."""

    options: DemoOptions = field(default_factory=DemoOptions)
    sandbox: DiscordSandbox | None = None
    comfy: list[ComfyUISandbox] = field(default_factory=list)
    ollama: OllamaSandbox | None = None
    app: App | None = None
    config: Config | None = None
    config_path: Path | None = None
    guild: Guild | None = None
    channel: Channel | None = None
    vip_role: Role | None = None
    themed: DemoChannels | None = None  # #niji, #comfy, #after-dark (see demo.channels)
    members: list[SimulatedMember] = field(default_factory=list)
    _tmp: tempfile.TemporaryDirectory[str] | None = None
    _raw: dict[str, Any] = field(default_factory=dict)

    @property
    def viewer_url(self) -> str:
        assert self.sandbox is not None
        return self.sandbox.viewer_url

    @property
    def admin_url(self) -> str:
        assert self.config is not None
        return f"http://{self.config.admin.listen}"

    async def start(self) -> None:
        """Start the stand-ins, write the config, start gouache."""
        await self.start_standins()
        await self.start_app()

    async def start_standins(self) -> None:
        """Start Discord (with Midjourney), ComfyUI and Ollama stand-ins; write ``config.toml``."""
        opts = self.options
        if opts.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="gouache-demo-")
            workdir = Path(self._tmp.name)
        else:
            workdir = opts.workdir
            workdir.mkdir(parents=True, exist_ok=True)

        sandbox = DiscordSandbox(heartbeat_interval_ms=opts.heartbeat_interval_ms)
        self.sandbox = sandbox
        if sandbox.midjourney is not None:
            settings: MidjourneySettings = sandbox.midjourney.settings
            settings.step_delay = 0.02 if opts.fast else opts.mj_step_s
        try:
            await sandbox.start(port=opts.port)
        except OSError as exc:
            if not is_address_in_use(exc):
                raise
            raise PortBusy(opts.port, "--port", "the Discord sandbox and its viewer") from None
        _bot_user, bot_token, app_id = sandbox.add_bot("gouache")
        guild = sandbox.add_guild("gouache demo")
        self.guild = guild
        self.channel = sandbox.add_channel(guild, "imagine")
        self.themed = add_demo_channels(sandbox, guild)
        self.vip_role = sandbox.add_role(guild, "VIP")
        sandbox.join(guild, _bot_user)
        accounts: list[dict[str, Any]] = []
        for n in (1, 2):
            account, token = sandbox.add_user_account(f"mj-account-{n}")
            sandbox.join(guild, account)
            mj_channel = sandbox.add_channel(guild, f"mj-{n}")
            accounts.append(
                {
                    "name": f"mj-{n}",
                    "token": token,
                    "guild_id": guild.id,
                    "channel_id": mj_channel.id,
                    "concurrency": 2,
                    "mode": "fast",
                    # mj-2 has Remix mode on; gouache reads it from the account's /settings.
                    "remix": "settings",
                }
            )
            if n == 2 and sandbox.midjourney is not None:
                sandbox.midjourney.set_remix(account.id, True)

        step = 0.0 if opts.fast else opts.comfy_step_s
        for _ in range(2):
            server = ComfyUISandbox(speed=Speed(node_delay=step / 3, step_delay=step))
            await server.start()
            self.comfy.append(server)
        self.ollama = OllamaSandbox()
        await self.ollama.start()

        admin_token = secrets.token_urlsafe(24)
        raw: dict[str, Any] = {
            "discord": {
                "token": bot_token,
                "application_id": app_id,
                "owner_ids": [],
                "guild_ids": [guild.id],
                "api_base": sandbox.api_base,
                "gateway_url": sandbox.gateway_url,
            },
            "storage": {
                "backend": "sqlite",
                "sqlite_path": str(workdir / "gouache.db"),
                "images_dir": str(workdir / "images"),
            }
            if opts.redis_url is None
            else {
                "backend": "redis",
                "redis_url": opts.redis_url,
                "redis_prefix": f"demo-{secrets.token_hex(4)}",
                "images_dir": str(workdir / "images"),
            },
            "queue": {
                "daily_limit": opts.daily_limit,
                "timezone": "UTC",
                "max_queued_per_user": 20,
                "default_tier": "member",
                "grace_s": 5,
                "lease_s": opts.lease_s,
                "timeouts": {"submit": 30, "start": 120, "run": 120, "store": 30},
                "tiers": [
                    {"name": "member", "weight": 1},
                    {
                        "name": "vip",
                        "weight": 4,
                        "daily_limit": opts.vip_daily_limit,
                        "role_ids": [self.vip_role.id],
                    },
                ],
            },
            "midjourney": {
                "api_base": sandbox.api_base.replace("/v10", "/v9"),
                "gateway_url": sandbox.gateway_url,
                "accounts": accounts,
            },
            "comfyui": {
                # Members' images (img2img, blend) and every button the model-free demo
                # workflows can show under a result, on every server.
                "actions": {
                    "img2img": "builtin_img2img",
                    "blend": "builtin_blend",
                    **{
                        name: f"builtin_demo_{name}"
                        for name in ("upscale", "vary_subtle", "vary_strong", "zoom_out", "pan")
                    },
                },
                "servers": [
                    {
                        "name": f"comfy-{i + 1}",
                        "url": s.url,
                        "concurrency": 1,
                        "workflow": "builtin_demo",
                    }
                    for i, s in enumerate(self.comfy)
                ],
            },
            "translate": {
                "enabled": True,
                "ollama_url": self.ollama.url,
                "model": "demo-translate",
            },
            "describe": {"ollama_url": self.ollama.url, "model": "demo-vision"},
            "moderation": {"rate_burst": 20, "rate_per_minute": 120},
            "admin": {"listen": f"127.0.0.1:{opts.admin_port}", "token": admin_token},
            "logging": {"level": opts.log_level, "format": opts.log_format},
        }
        self.config = Config.model_validate(raw)
        self.config_path = workdir / "config.toml"
        _write_toml(self.config_path, raw)
        self._raw = raw

    async def start_app(self) -> None:
        """Start gouache in this process from the config `start_standins` wrote."""
        assert self.config is not None
        assert self.config_path is not None
        assert self.sandbox is not None
        sandbox, raw = self.sandbox, self._raw
        self.app = App.from_config(self.config)
        try:
            await self.app.start(ready_timeout=30)
        except ConfigError as exc:
            if not any(
                p.startswith("admin.listen") and is_address_in_use(exc) for p in exc.problems
            ):
                raise
            raise PortBusy(self.options.admin_port, "--admin-port", "gouache's admin API") from None
        if self.themed is not None:
            await configure_demo_channels(self.app, self.themed, workflow="builtin_demo")
        if self.app.admin is not None:
            # The admin port may have been picked by the OS; keep the config in step.
            raw["admin"]["listen"] = f"127.0.0.1:{self.app.admin.port}"
            self.config = Config.model_validate(raw)
            _write_toml(self.config_path, raw)
        sandbox.viewer.set_status_source(self.app.status)

    def add_member(self, name: str, *, vip: bool = False, locale: str = "en-US") -> SimulatedMember:
        assert self.sandbox is not None
        assert self.guild is not None
        assert self.vip_role is not None
        member = self.sandbox.add_member(
            self.guild, name, roles=[self.vip_role.id] if vip else [], locale=locale
        )
        self.members.append(member)
        return member

    async def aclose(self) -> None:
        """Stop gouache first (it finishes what it can), then the stand-ins."""
        if self.app is not None:
            with contextlib.suppress(Exception):
                await self.app.stop()
        for server in self.comfy:
            with contextlib.suppress(Exception):
                await server.aclose()
        if self.ollama is not None:
            with contextlib.suppress(Exception):
                await self.ollama.aclose()
        if self.sandbox is not None:
            with contextlib.suppress(Exception):
                await self.sandbox.aclose()
        if self._tmp is not None:
            self._tmp.cleanup()


def _write_toml(path: Path, raw: dict[str, Any]) -> None:
    """Write the demo's config (secrets as ``${ENV}`` references would be in real life;
    the demo's stand-in tokens are not secrets, but the file is still private)."""
    lines = ["# Written by `gouache demo`: the config gouache is running with.", ""]

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    def table(prefix: str, data: dict[str, Any]) -> None:
        scalars = {
            k: v for k, v in data.items() if not isinstance(v, dict) and not _is_table_list(v)
        }
        lines.append(f"[{prefix}]")
        lines.extend(f"{k} = {value(v)}" for k, v in scalars.items())
        lines.append("")
        for k, v in data.items():
            if isinstance(v, dict):
                table(f"{prefix}.{k}", v)
            elif _is_table_list(v):
                for item in v:
                    lines.append(f"[[{prefix}.{k}]]")
                    lines.extend(f"{ik} = {value(iv)}" for ik, iv in item.items())
                    lines.append("")

    for section, data in raw.items():
        table(section, data)
    path.write_text("\n".join(lines), encoding="utf-8")
    path.chmod(0o600)


def _is_table_list(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)
