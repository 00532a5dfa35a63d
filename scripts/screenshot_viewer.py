"""Make docs/viewer.png: the sandbox's web viewer with jobs at every stage, from the real page.

Starts the Discord sandbox, gouache itself (real bot over discord.py, SQLite in a
temporary directory) with three stand-in workers whose pace this script holds,
lets members /imagine so that jobs end up done, upscaled, running at different
percentages, queued and refused, then photographs the viewer with headless
Chromium (Debian's ``chromium`` package, driven by Playwright).

    apt-get install -y chromium && pip install -e '.[test]'
    python scripts/screenshot_viewer.py            # writes docs/viewer.png
    python scripts/screenshot_viewer.py --out x.png --width 1600 --height 1000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import logging
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import structlog

from gouache.app import App, BotSettings
from gouache.bot.service import Tier
from gouache.jobs import Job
from gouache.pool.base import (
    Accepted,
    Generated,
    JobSink,
    Progress,
    WorkerState,
)
from gouache.queue.dispatcher import StageTimeouts
from gouache.queue.quota import QuotaPolicy
from gouache.storage.sqlite import SQLiteStore
from gouache_sandbox.discord import DiscordSandbox
from gouache_sandbox.discord.mjimage import grid_png, preview_png, single_png
from gouache_sandbox.discord.state import Message
from gouache_sandbox.instant import InstantWorker

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent


class PacedWorker(InstantWorker):
    """A stand-in backend drawing real-looking pictures; ``hold`` keeps chosen prompts running."""

    def __init__(
        self, name: str, kind: str, capacity: int, *, latency_ms: float, tile: int = 160
    ) -> None:
        super().__init__(name, capacity=capacity, kind=kind, latency_ms=latency_ms)
        self._tile = tile
        self.hold: dict[str, int] = {}  # prompt substring → percent to stop at

    async def start(self) -> None:
        if self.state is WorkerState.CONNECTING:  # a worker set quarantined stays so
            await super().start()

    async def _run(self, job: Job, report: JobSink) -> None:
        seed = hashlib.sha256(job.prompt.encode()).hexdigest()[:12]
        await report(job, Accepted(external_id=f"{self.name}-{job.id[:8]}"))
        stop = next((p for key, p in self.hold.items() if key in job.prompt), None)
        for percent in (20, 45, 70):
            if stop is not None and percent > stop:
                break
            await report(
                job, Progress(percent, preview=preview_png(job.prompt, seed, self._tile, percent))
            )
        if stop is not None:
            await report(
                job, Progress(stop, preview=preview_png(job.prompt, seed, self._tile, stop))
            )
            await asyncio.Event().wait()  # held until the script ends
        upscale = job.action.value == "upscale"
        image = (
            single_png(job.prompt, f"{seed}:{job.id}", self._tile)
            if upscale
            else grid_png(job.prompt, seed, self._tile)
        )
        self.done += 1
        await report(job, Generated(images=[image], meta={"hash": seed, "grid": not upscale}))


def title(m: Message) -> str:
    return str(m.embeds[0].get("title", "")) if m.embeds else ""


def description(m: Message) -> str:
    return str(m.embeds[0].get("description", "")) if m.embeds else ""


async def build_scene(sb: DiscordSandbox, tmp: Path) -> App:
    """The world in the picture; returns the running app."""
    bot, token, app_id = sb.add_bot("gouache")
    guild = sb.add_guild("gouache demo")
    art = sb.add_channel(guild, "art")
    sb.add_channel(guild, "general")
    sb.add_channel(guild, "help")
    art.topic = "Type /imagine and watch the pool at work"
    vip = sb.add_role(guild, "vip")
    sb.join(guild, bot)
    alice = sb.add_member(guild, "alice")
    bob = sb.add_member(guild, "小明", locale="zh-CN")
    carol = sb.add_member(guild, "carol", roles=[vip.id])
    dave = sb.add_member(guild, "dave")
    erin = sb.add_member(guild, "erin")

    mj1 = PacedWorker("mj-account-1", "midjourney", 2, latency_ms=84)
    mj2 = PacedWorker("mj-account-2", "midjourney", 2, latency_ms=97)
    comfy = PacedWorker("comfy-gpu-1", "comfyui", 1, latency_ms=12)
    mj2.set_state(WorkerState.QUARANTINED, "captcha required: a person must log in")
    policy = QuotaPolicy("UTC", default_limit=3)
    store = SQLiteStore(tmp / "gouache.db", policy=policy)
    app = App.assemble(
        store=store,
        workers=[mj1, mj2, comfy],
        images_dir=tmp / "images",
        policy=policy,
        tiers=[
            Tier("default"),
            Tier("vip", weight=3, daily_limit=20, role_ids=frozenset({vip.id})),
        ],
        timeouts=StageTimeouts(submit=60, start=600, run=600, store=60),
        bot=BotSettings(
            token=token,
            application_id=app_id,
            guild_ids=(guild.id,),
            api_base=sb.api_base,
            gateway_url=sb.gateway_url,
            client_options={"guild_ready_timeout": 0.05},
        ),
        delivery_options={"per_message_s": 0.05},
    )
    await app.start(ready_timeout=20)

    async def status() -> dict[str, Any]:
        return {
            "workers": [asdict(s) for s in app.pool.snapshot()],
            "queue_depth": await app.store.depth(),
            "in_flight": app.dispatcher.in_flight,
        }

    sb.viewer.set_status_source(status)
    wait = sb.wait_for_message

    async def until(pred: Callable[[Message], bool]) -> Message:
        return await wait(art.id, pred, timeout=20)

    for w in (mj1, comfy):
        w.hold = {"storm": 70, "小屋": 45, "neon": 20}
    # Two jobs held at different stages take two of the three slots...
    bob.invoke(art.id, "imagine", {"prompt": "山间的小屋，水彩"})
    await until(lambda m: "45%" in description(m))
    carol.invoke(art.id, "imagine", {"prompt": "a fox in a neon city, night rain --ar 16:9"})
    await until(lambda m: "20%" in description(m))
    # ...a finished grid with its U/V buttons goes through the third...
    alice.invoke(art.id, "imagine", {"prompt": "a lighthouse on a cliff at dawn, oil painting"})
    await until(lambda m: title(m) == "Done" and bool(m.components))
    # ...and one more fills it.
    erin.invoke(art.id, "imagine", {"prompt": "ships in a storm, ink drawing"})
    await until(lambda m: "70%" in description(m))
    # Nothing free: the next one waits in the queue.
    dave.invoke(art.id, "imagine", {"prompt": "a retro robot portrait, studio light"})
    await until(lambda m: title(m) == "Queued")
    return app


async def shoot(url: str, out: Path, width: int, height: int) -> None:
    """Open ``url`` in headless Chromium and save a screenshot once every image has loaded."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": width, "height": height})
            await page.goto(url)
            await page.wait_for_selector(".msg .embed-title >> text=Queued", timeout=15000)
            await page.wait_for_selector(".worker[data-name='mj-account-1']", timeout=15000)
            await page.select_option("#member", label="carol · vip")
            await page.wait_for_function(
                "[...document.querySelectorAll('#messages img')]"
                ".every(i => i.complete && i.naturalWidth > 0)",
                timeout=15000,
            )
            await page.fill("#input", "/imagine a watercolor whale")
            await page.evaluate("document.querySelector('#input').blur()")
            await page.evaluate("document.querySelector('#messages').scrollTop = 1e9")
            await page.wait_for_timeout(300)  # let the last bar transitions settle for the photo
            out.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(out))
        finally:
            await browser.close()


async def run(out: Path, width: int, height: int) -> None:
    """Build the scene, photograph it, tear everything down."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    tmp = Path(tempfile.mkdtemp(prefix="gouache-shot-"))
    sb = DiscordSandbox(with_midjourney=False)
    await sb.start()
    app: App | None = None
    try:
        app = await build_scene(sb, tmp)
        await shoot(sb.viewer_url, out, width, height)
    finally:
        if app is not None:
            app.grace_s = 0.1
            with contextlib.suppress(Exception):
                await app.stop()
        await sb.aclose()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "viewer.png")
    parser.add_argument("--width", type=int, default=1440)
    parser.add_argument("--height", type=int, default=1400)
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} is missing: apt-get install -y chromium", file=sys.stderr)
        return 2
    asyncio.run(run(args.out, args.width, args.height))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
