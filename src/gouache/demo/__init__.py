"""`gouache demo`: the whole product offline — Discord, Midjourney and ComfyUI stand-ins,
gouache on SQLite, and a crowd of simulated members, watched in a browser."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import NoReturn

import click
from rich.console import Console
from rich.table import Table

from gouache.demo.ports import PortBusy
from gouache.demo.smoke import SmokeResult, run_smoke
from gouache.demo.world import DemoOptions, DemoWorld

__all__ = ["DemoOptions", "DemoWorld", "register"]


def register(main: click.Group) -> None:
    """Add ``gouache demo`` to the command line."""
    main.add_command(demo)


@click.command()
@click.option("--members", default=6, show_default=True, help="Simulated members in the crowd.")
@click.option(
    "--rate", default=20.0, show_default=True, help="Requests per minute, all members together."
)
@click.option(
    "--port",
    default=8700,
    show_default=True,
    help="Port of the Discord sandbox and its viewer (0: any).",
)
@click.option(
    "--admin-port", default=8765, show_default=True, help="Port of gouache's admin API (0: any)."
)
@click.option(
    "--scenario",
    type=click.Choice(["crowd", "smoke"]),
    default="crowd",
    show_default=True,
    help="crowd: run until Ctrl-C; smoke: a fixed script, exit 0 only if every step ends as expected.",
)
@click.option(
    "--workdir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Keep the database, images and config here (default: a temporary directory).",
)
@click.option("--seed", type=int, default=None, help="Seed the crowd's choices.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="smoke: print one JSON object per step (step, member, expected, got, ok, detail) "
    "instead of the table; everything else goes to stderr.",
)
def demo(  # noqa: PLR0913
    members: int,
    rate: float,
    port: int,
    admin_port: int,
    scenario: str,
    workdir: Path | None,
    seed: int | None,
    as_json: bool,
) -> None:
    """Run gouache against local stand-ins of Discord, Midjourney and ComfyUI."""
    from gouache.log import configure_logging
    from gouache.runtime import run_until_signal

    configure_logging("warning")
    if as_json and scenario != "smoke":
        raise click.UsageError("--json goes with --scenario smoke.")
    console = Console()
    if scenario == "smoke":
        options = DemoOptions(
            port=port, admin_port=admin_port, daily_limit=3, workdir=workdir, fast=True
        )
        try:
            result = run_until_signal(
                _smoke(options, Console(stderr=True) if as_json else console, as_json=as_json)
            )
        except PortBusy as exc:
            _busy(exc)
        if result is None or not result.ok:
            raise SystemExit(1)
        return
    options = DemoOptions(port=port, admin_port=admin_port, workdir=workdir)
    try:
        run_until_signal(_crowd(options, console, members=members, rate=rate, seed=seed))
    except PortBusy as exc:
        _busy(exc)


def _busy(exc: PortBusy) -> NoReturn:
    """One line saying which port is taken and how to choose another; exit 2."""
    click.echo(f"gouache demo: {exc}", err=True)
    raise SystemExit(2)


async def _crowd(
    options: DemoOptions, console: Console, *, members: int, rate: float, seed: int | None
) -> None:
    from gouache.demo.crowd import Crowd

    world = DemoWorld(options)
    crowd: Crowd | None = None
    try:
        with console.status("starting the stand-ins and gouache…"):
            await world.start()
        crowd = Crowd(world, members=members, rate=rate, seed=seed)
        console.print(
            f"[bold]gouache demo[/] is running: {members} members, about {rate:g} requests a minute.\n"
            f"  Watch it:      [link={world.viewer_url}]{world.viewer_url}[/link]\n"
            f"  Pool status:   gouache pool status --watch -c {world.config_path}\n"
            f"  Config used:   {world.config_path}\n"
            "Ctrl-C stops it.",
            soft_wrap=True,
        )
        crowd.start()
        await asyncio.Event().wait()
    finally:
        console.print("stopping…")
        if crowd is not None:
            await crowd.aclose()
        await world.aclose()


async def _smoke(options: DemoOptions, console: Console, *, as_json: bool = False) -> SmokeResult:
    world = DemoWorld(options)
    try:
        with console.status("starting the stand-ins and gouache…"):
            await world.start()
        console.print(f"smoke scenario: viewer at {world.viewer_url}")
        result = await run_smoke(world)
    finally:
        await world.aclose()
    if as_json:
        for step in result.steps:
            click.echo(json.dumps(step.as_json(), ensure_ascii=False))
        return result
    table = Table(title="gouache demo --scenario smoke")
    for column in ("step", "member", "expected", "got", "s", "detail"):
        table.add_column(column)
    for step in result.steps:
        colour = "green" if step.ok else "red"
        table.add_row(
            step.name,
            step.member,
            step.expected,
            f"[{colour}]{step.got}[/]",
            f"{step.seconds:.1f}",
            step.detail[:60],
        )
    console.print(table)
    passed = sum(s.ok for s in result.steps)
    console.print(
        f"{passed}/{len(result.steps)} steps as expected: {'PASS' if result.ok else 'FAIL'}"
    )
    return result
