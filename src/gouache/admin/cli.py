"""Owner commands that talk to a running gouache: ``pool``, ``queue``, ``user``, ``job``.

`register(main)` adds them to the ``gouache`` command group. Every command
finds the admin API the same way, first match wins:

1. ``--admin-url`` / ``--token`` given on the command line;
2. ``-c/--config PATH``: ``[admin] listen`` and ``token`` of that file;
3. ``GOUACHE_ADMIN_URL`` / ``GOUACHE_ADMIN_TOKEN`` in the environment;
4. http://127.0.0.1:8765 without a token.

Output is a rich table for people, or JSON with ``--json`` for scripts.
Errors are one line on stderr with a non-zero exit: 3 when gouache is not
running, 4 for a missing or wrong token, 1 for anything else (unknown
worker, job or user; a refused change), 2 for a bad command line.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from gouache.admin.client import DEFAULT_URL, AdminClient, AdminError
from gouache.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])

_STATE_STYLE = {
    "ready": "green",
    "busy": "yellow",
    "draining": "cyan",
    "connecting": "blue",
    "quarantined": "bold red",
    "disabled": "red",
    "offline": "dim red",
}


# -- finding the API -----------------------------------------------------------


def _from_config(path: str) -> tuple[str, str | None]:
    """The admin URL and token a config file points at."""
    from gouache.config import load_config

    try:
        admin = load_config(path).admin
    except ConfigError as exc:
        message = str(exc)  # a missing file's message names the path already
        raise AdminError(message if message.startswith(path) else f"{path}: {message}") from None
    if not admin.enabled:
        raise AdminError(f"The admin API is off in {path} ([admin] enabled = false).")
    # A wildcard address is reached through loopback.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(admin.host, admin.host)
    url = f"http://[{host}]:{admin.port}" if ":" in host else f"http://{host}:{admin.port}"
    token = admin.token.get_secret_value() if admin.token is not None else None
    return url, token


def make_client(
    ctx: click.Context, admin_url: str | None, token: str | None, config_path: str | None
) -> AdminClient:
    """The client for this invocation (see the module docstring for the precedence)."""

    def from_cli(name: str) -> bool:
        return ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE

    url = admin_url if from_cli("admin_url") else None
    secret = token if from_cli("token") else None
    if config_path is not None:
        config_url, config_token = _from_config(config_path)
        url = url or config_url
        secret = secret if secret is not None else config_token
    url = url or admin_url or DEFAULT_URL
    secret = secret if secret is not None else token
    return AdminClient(url, secret or None)


def _command(fn: F) -> F:
    """Add the connection and output options; turn `AdminError` into one line and an exit code."""

    def wrapper(
        ctx: click.Context,
        admin_url: str | None,
        token: str | None,
        config_path: str | None,
        as_json: bool,
        **kwargs: Any,
    ) -> None:
        try:
            client = make_client(ctx, admin_url, token, config_path)
            fn(client, Output(as_json), **kwargs)
        except AdminError as exc:
            click.echo(f"Error: {exc.message}", err=True)
            ctx.exit(exc.exit_code)

    functools.update_wrapper(wrapper, fn)  # click takes the help text from the docstring
    decorated: Any = click.pass_context(wrapper)
    for option in reversed(_CONNECTION_OPTIONS):
        decorated = option(decorated)
    return decorated  # type: ignore[no-any-return]


_CONNECTION_OPTIONS = [
    click.option(
        "--admin-url",
        envvar="GOUACHE_ADMIN_URL",
        default=None,
        metavar="URL",
        help=f"The admin API [env GOUACHE_ADMIN_URL; default {DEFAULT_URL}].",
    ),
    click.option(
        "--token",
        envvar="GOUACHE_ADMIN_TOKEN",
        default=None,
        metavar="TOKEN",
        help="The admin token [env GOUACHE_ADMIN_TOKEN].",
    ),
    click.option(
        "-c",
        "--config",
        "config_path",
        default=None,
        metavar="PATH",
        help="Read [admin] listen and token from this config file.",
    ),
    click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table."),
]


class Output:
    """Tables for people, JSON for scripts."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        # Piped or captured output is not squeezed to 80 columns (job ids stay whole).
        width = None if sys.stdout.isatty() else 200
        self.console = Console(soft_wrap=False, highlight=False, width=width)

    def json(self, data: Any) -> None:
        """Print ``data`` as JSON (plain, so pipes get clean text)."""
        click.echo(json.dumps(data, indent=2, sort_keys=True))

    def show(self, data: Any, render: Callable[[], RenderableType | str]) -> None:
        """JSON if asked, else the rendered table or line."""
        if self.as_json:
            self.json(data)
        else:
            self.console.print(render())


# -- rendering -------------------------------------------------------------------


def _ms(value: Any) -> str:
    if value is None:
        return "—"
    ms = float(value)
    return f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms"


def _state(row: dict[str, Any]) -> Text:
    state = str(row.get("state"))
    text = Text(state, style=_STATE_STYLE.get(state, ""))
    reason = row.get("reason")
    if reason and state in ("disabled", "quarantined", "offline", "draining"):
        text.append(f" ({reason})", style="dim")
    return text


def _clip(value: Any, size: int) -> str:
    text = "" if value is None else str(value).replace("\n", " ")
    return text if len(text) <= size else text[: size - 1] + "…"


def _age(iso: str | None) -> str:
    if not iso:
        return "—"
    seconds = (datetime.now(UTC) - datetime.fromisoformat(iso)).total_seconds()
    if seconds < 90:
        return f"{max(0, seconds):.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def status_table(status: dict[str, Any]) -> Group:
    """The pool table and its summary line."""
    workers = status["workers"]
    processes = {w.get("process") for w in workers}
    table = Table(title="Workers", title_justify="left", expand=False)
    for column in ("Worker", "Kind", "State", "Latency", "Jobs", "Done today", "Last error"):
        table.add_column(column, no_wrap=column != "Last error")
    if len(processes) > 1:
        table.add_column("Process", no_wrap=True)
    for w in workers:
        cells: list[RenderableType] = [
            str(w["name"]),
            str(w["kind"]) + (f" ({w['mode']})" if w.get("mode") else ""),
            _state(w),
            _ms(w.get("latency_ms")),
            f"{w['in_flight']}/{w['capacity']}",
            str(w.get("done_today", 0)),
            _clip(w.get("last_error"), 50),
        ]
        if len(processes) > 1:
            cells.append(str(w.get("process")))
        table.add_row(*cells)
    parts: list[RenderableType] = [table]
    channels = status.get("channels") or []
    if channels:
        parts.append(channels_table(channels))
    parts.append(Text(summary_line(status)))
    return Group(*parts)


def channels_table(channels: list[dict[str, Any]]) -> Table:
    """Channels where gouache cannot deliver, and what it is missing there."""
    table = Table(title="Channels gouache cannot serve", title_justify="left", style="red")
    for column in ("Channel", "Server", "Missing", "For", "Refused"):
        table.add_column(column, no_wrap=column != "Missing")
    for c in channels:
        table.add_row(
            str(c["channel_id"]),
            str(c.get("guild_id") or "—"),
            ", ".join(c.get("missing") or []),
            _age(c.get("since")),
            str(c.get("refused", 0)),
        )
    return table


def summary_line(status: dict[str, Any]) -> str:
    """``2/3 ready · 1/8 slots busy · queue 4 (default 3, vip 1) · 12 jobs today ...``."""
    s = status["summary"]
    tiers = status.get("queue", {}).get("by_tier", {})
    queue = f"queue {s['queue_depth']}"
    if tiers:
        queue += " (" + ", ".join(f"{k} {v}" for k, v in tiers.items()) + ")"
    today = status.get("jobs_today", {})
    by_state = today.get("by_state", {})
    jobs = f"{s['jobs_today']}{'' if today.get('exact', True) else '+'} jobs today"
    if by_state:
        jobs += " (" + ", ".join(f"{v} {k}" for k, v in by_state.items()) + ")"
    errors = s.get("errors_last_hour", 0)
    return (
        f"{s['ready']}/{s['total']} workers ready · {s['in_flight']}/{s['capacity']} slots busy · "
        f"{queue} · {jobs} · {errors} error{'s' if errors != 1 else ''} in the last hour"
    )


def _pairs(title: str, rows: list[tuple[str, Any]]) -> Table:
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value")
    for key, value in rows:
        table.add_row(key, "—" if value is None or value == "" else str(value))
    return table


def user_table(u: dict[str, Any]) -> Table:
    """One user's standing."""
    ban = "no"
    if u["banned"]:
        ban = f"until {u['banned_until']}" + (f" — {u['ban_reason']}" if u["ban_reason"] else "")
    return _pairs(
        f"User {u['user_id']}",
        [
            ("tier", f"{u['effective_tier']}" + (" (override)" if u["tier"] else "")),
            (
                "daily limit",
                f"{u['effective_limit']}" + (" (override)" if u["daily_limit"] is not None else ""),
            ),
            ("used today", f"{u['used_today']} (resets {u['resets_at']})"),
            ("banned", ban),
            ("strikes", u["strikes"]),
            ("pending jobs", u["pending_jobs"]),
        ],
    )


def job_table(j: dict[str, Any]) -> Table:
    """One job's record."""
    rows: list[tuple[str, Any]] = [
        ("state", j["state"] + (f" ({j['progress']}%)" if j["state"] == "running" else "")),
        ("user", j["user_id"]),
        ("action", j["action"] + (f" {j['index']}" if j.get("index") else "")),
        ("prompt", _clip(j["prompt"], 200)),
        ("tier", j["tier"]),
        ("worker", j.get("worker")),
        ("position", None if j.get("position") is None else j["position"] + 1),
        ("attempts", j["attempts"]),
        ("created", j["created_at"]),
        ("finished", j.get("finished_at")),
        ("error", f"{j['error_code']}: {j['error_message']}" if j.get("error_code") else None),
        ("detail", j.get("error_detail")),
        ("results", ", ".join(j.get("results") or []) or None),
    ]
    if j.get("meta", {}).get("retry_of"):
        rows.append(("retry of", j["meta"]["retry_of"]))
    return _pairs(f"Job {j['id']}", rows)


def queue_table(q: dict[str, Any]) -> Table:
    """Running jobs, then waiting ones in the order they will be popped."""
    table = Table(title=f"Queue: {q['depth']} waiting", title_justify="left")
    for column in ("#", "Job", "User", "Tier", "State", "Worker", "Age", "Prompt"):
        table.add_column(column, no_wrap=column != "Prompt")
    for j in q["jobs"]:
        table.add_row(
            "—" if j["position"] is None else str(j["position"] + 1),
            j["id"],
            str(j["user_id"]),
            j["tier"],
            j["state"],
            j.get("worker") or "",
            _age(j.get("created_at")),
            _clip(j["prompt"], 40),
        )
    return table


# -- commands ---------------------------------------------------------------------


@click.group()
def pool() -> None:
    """The image workers: status, disable, enable, drain."""


@pool.command("status")
@click.option("--watch", is_flag=True, help="Refresh until Ctrl-C.")
@click.option(
    "--interval",
    default=2.0,
    show_default=True,
    type=click.FloatRange(0.2),
    help="Seconds between refreshes with --watch.",
)
@click.option(
    "--refreshes",
    default=0,
    type=click.IntRange(0),
    hidden=True,
    help="Stop --watch after N refreshes (0: never).",
)
@_command
def pool_status(
    client: AdminClient, out: Output, watch: bool, interval: float, refreshes: int
) -> None:
    """One row per worker and a summary line."""
    status = client.status()
    if not watch:
        out.show(status, lambda: status_table(status))
        return
    if out.as_json:
        raise click.UsageError("--watch and --json do not go together; poll `pool status --json`.")
    _watch(client, out.console, status, interval, refreshes)


def _watch(
    client: AdminClient, console: Console, status: dict[str, Any], interval: float, refreshes: int
) -> None:
    """Redraw the status in place; a lost connection is shown and retried, not fatal."""
    done = 0
    try:
        with Live(status_table(status), console=console, auto_refresh=False) as live:
            while refreshes == 0 or done < refreshes:
                time.sleep(interval)
                done += 1
                stamp = datetime.now().strftime("%H:%M:%S")
                try:
                    status = client.status()
                    view: RenderableType = Group(
                        status_table(status), Text(f"updated {stamp}", style="dim")
                    )
                except AdminError as exc:
                    view = Group(
                        status_table(status), Text(f"{stamp} {exc.message} Retrying…", style="red")
                    )
                live.update(view, refresh=True)
    except KeyboardInterrupt:
        pass
    if not console.is_terminal:
        console.line()  # a terminal keeps the cursor below the table; a pipe wants a newline


@pool.command("disable")
@click.argument("name")
@click.option("--reason", default=None, help="Shown in pool status.")
@_command
def pool_disable(client: AdminClient, out: Output, name: str, reason: str | None) -> None:
    """Take a worker out of rotation (its running jobs finish)."""
    row = client.worker(name, "disable", reason)
    out.show(
        row, lambda: f"{name}: disabled" + (f" ({row['reason']})" if row.get("reason") else "")
    )


@pool.command("enable")
@click.argument("name")
@_command
def pool_enable(client: AdminClient, out: Output, name: str) -> None:
    """Put a worker back into rotation."""
    row = client.worker(name, "enable")
    out.show(row, lambda: f"{name}: enabled, now {row['state']}")


@pool.command("drain")
@click.argument("name")
@_command
def pool_drain(client: AdminClient, out: Output, name: str) -> None:
    """Give a worker no new jobs; let it finish the ones it has."""
    row = client.worker(name, "drain")
    out.show(row, lambda: f"{name}: draining, {row['in_flight']} job(s) still running")


@click.command("queue")
@click.option(
    "--user", "user_id", type=click.IntRange(0), default=None, help="Only this user's jobs."
)
@_command
def queue(client: AdminClient, out: Output, user_id: int | None) -> None:
    """Running and waiting jobs, in the order they will be served."""
    data = client.queue(user_id)
    out.show(data, lambda: queue_table(data))


@click.group()
def user() -> None:
    """A member's tier, daily limit and ban."""


@user.command("show")
@click.argument("user_id", type=click.IntRange(0))
@_command
def user_show(client: AdminClient, out: Output, user_id: int) -> None:
    """Overrides, quota used today, ban."""
    data = client.user(user_id)
    out.show(data, lambda: user_table(data))


@user.command("limit")
@click.argument("user_id", type=click.IntRange(0))
@click.argument("limit", type=click.IntRange(0), required=False)
@click.option("--reset", is_flag=True, help="Back to the tier's limit.")
@_command
def user_limit(
    client: AdminClient, out: Output, user_id: int, limit: int | None, reset: bool
) -> None:
    """Set a personal daily limit (or --reset it)."""
    if (limit is None) == (not reset):
        raise click.UsageError("Give a LIMIT or --reset (not both).")
    data = client.patch_user(user_id, daily_limit=None if reset else limit)
    out.show(
        data,
        lambda: (
            f"User {user_id}: daily limit {data['effective_limit']}"
            + (" (tier default)" if reset else "")
        ),
    )


@user.command("tier")
@click.argument("user_id", type=click.IntRange(0))
@click.argument("name", required=False)
@click.option("--reset", is_flag=True, help="Back to the tier their roles give.")
@_command
def user_tier(
    client: AdminClient, out: Output, user_id: int, name: str | None, reset: bool
) -> None:
    """Put a member in a tier regardless of their roles (or --reset it)."""
    if (name is None) == (not reset):
        raise click.UsageError("Give a tier NAME or --reset (not both).")
    data = client.patch_user(user_id, tier=None if reset else name)
    out.show(
        data,
        lambda: (
            f"User {user_id}: tier {data['effective_tier']}" + (" (from roles)" if reset else "")
        ),
    )


@user.command("ban")
@click.argument("user_id", type=click.IntRange(0))
@click.option(
    "--hours",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="How long (default: until unbanned).",
)
@click.option("--reason", default=None, help="Kept with the ban.")
@_command
def user_ban(
    client: AdminClient, out: Output, user_id: int, hours: float | None, reason: str | None
) -> None:
    """Refuse a member's requests (jobs already queued still run)."""
    changes: dict[str, Any] = {"ban": True}
    if hours is not None:
        changes["ban_hours"] = hours
    if reason:
        changes["ban_reason"] = reason
    data = client.patch_user(user_id, **changes)
    out.show(data, lambda: f"User {user_id}: banned until {data['banned_until']}")


@user.command("unban")
@click.argument("user_id", type=click.IntRange(0))
@_command
def user_unban(client: AdminClient, out: Output, user_id: int) -> None:
    """Lift a ban (and clear strikes)."""
    data = client.patch_user(user_id, unban=True)
    out.show(data, lambda: f"User {user_id}: not banned")


@click.group()
def job() -> None:
    """One job: show, cancel, retry."""


@job.command("show")
@click.argument("job_id")
@_command
def job_show(client: AdminClient, out: Output, job_id: str) -> None:
    """A job's record (an 8+ character prefix of a recent job is enough)."""
    data = client.job(job_id)
    out.show(data, lambda: job_table(data))


@job.command("cancel")
@click.argument("job_id")
@_command
def job_cancel(client: AdminClient, out: Output, job_id: str) -> None:
    """Cancel a job (stopping it on its worker) and refund its quota."""
    data = client.cancel(job_id)
    j = data["job"]
    out.show(
        data,
        lambda: f"Job {j['id']}: {j['state']}" + ("; quota refunded" if data["refunded"] else ""),
    )


@job.command("retry")
@click.argument("job_id")
@_command
def job_retry(client: AdminClient, out: Output, job_id: str) -> None:
    """Queue a copy of a job that ended without an image (limits do not apply)."""
    data = client.retry(job_id)
    j = data["job"]
    out.show(
        data,
        lambda: (
            f"Job {j['id']} queued at #{(j['position'] or 0) + 1} as a retry of {data['retry_of']}"
        ),
    )


def register(main: click.Group) -> None:
    """Add ``pool``, ``queue``, ``user`` and ``job`` to the ``gouache`` command group."""
    for command in (pool, queue, user, job):
        main.add_command(command)
