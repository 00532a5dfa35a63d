"""The `gouache` command: run the bot, check a config, run the demo, steer a running bot."""

from __future__ import annotations

from pathlib import Path

import click

from gouache import __version__
from gouache.config import Config, load_config
from gouache.errors import ConfigError
from gouache.runtime import run_until_signal

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="gouache")
def main() -> None:
    """gouache — a fair-queued /imagine bot for Discord (Midjourney accounts and ComfyUI servers)."""


def _load(path: Path) -> Config:
    """Load a config or exit 2 with one line per problem."""
    try:
        return load_config(path)
    except ConfigError as exc:
        click.echo(f"{path}: {len(exc.problems)} problem(s)", err=True)
        for problem in exc.problems:
            click.echo(f"  {problem}", err=True)
        raise SystemExit(2) from None


@main.command("check-config")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
def check_config(path: Path) -> None:
    """Validate a config file and print what it sets up (secrets shown as ***)."""
    config = _load(path)
    click.echo(config.summary())
    click.echo(f"{path}: OK")


@main.command()
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("config.toml"),
    show_default=True,
    help="The configuration file.",
)
def run(config_path: Path) -> None:
    """Run the bot: connect to Discord, start the workers, serve members until Ctrl-C."""
    from gouache.app import BotDisconnected, run_forever
    from gouache.log import configure_logging, redactor

    config = _load(config_path)
    configure_logging(
        config.logging.level, config.logging.format, config.logging.file, secrets=config.secrets()
    )
    try:
        run_until_signal(run_forever(config))
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"gouache run: {problem}", err=True)
        raise SystemExit(2) from None
    except BotDisconnected as exc:  # a supervisor restarts us; the owner reads why
        click.echo(f"gouache run: {redactor.text(str(exc))}", err=True)
        raise SystemExit(1) from None
    except OSError as exc:  # e.g. the admin port is taken
        click.echo(f"gouache run: {redactor.text(str(exc))}", err=True)
        raise SystemExit(1) from None


def _register_commands() -> None:
    """Commands that live in their own packages: the owner's tooling and the demo."""
    from gouache.admin.channel_cli import channel
    from gouache.admin.cli import register as register_admin
    from gouache.demo import register as register_demo

    register_admin(main)
    main.add_command(channel)
    register_demo(main)


_register_commands()
