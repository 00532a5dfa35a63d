"""``python -m gouache_sandbox``: run the Discord sandbox for a person to poke at."""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from gouache_sandbox.discord import DiscordSandbox


async def _run(host: str, port: int) -> None:
    sandbox = DiscordSandbox()
    await sandbox.start(host, port)
    bot, bot_token, app_id = sandbox.add_bot("gouache")
    account, account_token = sandbox.add_user_account("mj-account-1")
    guild = sandbox.add_guild("gouache sandbox")
    channel = sandbox.add_channel(guild, "general")
    sandbox.join(guild, bot)
    sandbox.join(guild, account)
    member = sandbox.add_member(guild, "alice")
    lines = [
        "gouache Discord sandbox",
        f"  REST     {sandbox.api_base}   (also /api/v9)",
        f"  gateway  {sandbox.gateway_url}",
        f"  control  {sandbox.base_url}/_sandbox/state",
        f"  bot      {bot.username} id={bot.id} application={app_id}",
        f"           token (Authorization: Bot …): {bot_token}",
        f"  account  {account.username} id={account.id}",
        f"           token (raw Authorization):    {account_token}",
        f"  guild    {guild.id}  channel #general {channel.id}  member alice {member.id}",
        f"  midjourney application 936929561302675456, /imagine version {sandbox.midjourney.version if sandbox.midjourney else '-'}",
        "Ctrl-C stops it.",
    ]
    print("\n".join(lines), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await sandbox.aclose()


def main() -> None:
    """Parse ``--host``/``--port`` and serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m gouache_sandbox")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(args.host, args.port))


if __name__ == "__main__":
    main()
