"""The viewer in a real browser: headless Chromium (Debian's package) driven by Playwright.

gouache's real bot runs against the sandbox (discord.py, SQLite, the
dispatcher), with one stand-in worker whose progress the test releases step
by step, so every stage is seen in the page without timing luck.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from gouache.jobs import Job
from gouache.pool.base import (
    Accepted,
    Generated,
    JobSink,
    Progress,
)
from gouache.queue.dispatcher import StageTimeouts
from gouache_sandbox.instant import InstantWorker, tiny_png

from ..e2e.conftest import World, make_world  # noqa: F401  (fixture)

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
WAIT_MS = 15_000  # gouache spaces progress edits; see the bot's delivery


class SteppedWorker(InstantWorker):
    """A worker whose first job stops at 25% and 60% until the test lets it go on."""

    def __init__(self) -> None:
        super().__init__("stepped-1", capacity=2, latency_ms=42.0)
        self.gates = [asyncio.Event(), asyncio.Event()]
        self._first = True

    async def _run(self, job: Job, report: JobSink) -> None:
        gated, self._first = self._first, False
        await report(job, Accepted())
        if gated:
            await report(job, Progress(25, preview=tiny_png(0x202080)))
            await asyncio.wait_for(self.gates[0].wait(), 20)
            await report(job, Progress(60, preview=tiny_png(0x2060C0)))
            await asyncio.wait_for(self.gates[1].wait(), 20)
        else:
            await report(job, Progress(50))
        await report(
            job, Generated(images=[tiny_png(0xE07020)], meta={"hash": job.id, "grid": True})
        )


@pytest.fixture
def chromium() -> Path:
    """Debian's Chromium; its absence fails the test (it is part of the test setup)."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser test needs Debian's chromium "
            "(apt-get install -y chromium)",
            pytrace=False,
        )
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.fail("playwright is missing: pip install -e '.[test]'", pytrace=False)
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
        try:
            yield launched
        finally:
            await launched.close()


async def image_loaded(page: Page, selector: str) -> None:
    """Wait until the image at ``selector`` has really been fetched and decoded."""
    await page.wait_for_function(
        "sel => { const i = document.querySelector(sel); return !!i && i.complete && i.naturalWidth > 0; }",
        arg=selector,
        timeout=WAIT_MS,
    )


async def test_imagine_progress_result_and_upscale_in_the_browser(
    make_world: Callable[..., Any],  # noqa: F811
    browser: Browser,
) -> None:
    worker = SteppedWorker()
    # The test holds the job between steps while it looks at the page: a long run timeout.
    timeouts = StageTimeouts(submit=10, start=10, run=60, store=10)
    world: World = await make_world([worker], timeouts=timeouts)
    alice = world.member("alice")
    bob = world.member("bob", vip=True)
    app = world.app

    async def status() -> dict[str, Any]:
        return {
            "workers": [asdict(s) for s in app.pool.snapshot()],
            "queue_depth": await app.store.depth(),
        }

    world.sandbox.viewer.set_status_source(status)
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(world.sandbox.viewer_url)

    # the channel, the members and the pool render
    await page.wait_for_selector(".channel.active >> text=art", timeout=WAIT_MS)
    await page.wait_for_selector("#conn.live", timeout=WAIT_MS)
    options = await page.eval_on_selector_all("#member option", "os => os.map(o => o.textContent)")
    assert options == ["alice", "bob · vip"]
    row = page.locator(".worker[data-name='stepped-1']")
    await row.wait_for(timeout=WAIT_MS)
    assert "0/2" in await row.inner_text()

    # alice types /imagine in the box
    await page.select_option("#member", value=str(alice.id))
    await page.fill("#input", "/imagine a red fox in the snow")
    await page.press("#input", "Enter")
    line = page.locator(".msg .interaction-line", has_text="alice used /imagine")
    await line.wait_for(timeout=WAIT_MS)
    msg = page.locator(".msg", has=page.locator(".interaction-line", has_text="alice used"))
    message_id = await msg.get_attribute("data-id")
    assert message_id is not None
    sel = f".msg[data-id='{message_id}']"

    # progress is drawn live, with the preview image resolved from attachment://
    await page.wait_for_selector(f"{sel} .progress[data-percent='25']", timeout=WAIT_MS)
    await image_loaded(page, f"{sel} .embed-image img")
    await page.wait_for_selector(".worker[data-name='stepped-1'] >> text=1/2", timeout=WAIT_MS)
    worker.gates[0].set()
    await page.wait_for_selector(f"{sel} .progress[data-percent='60']", timeout=WAIT_MS)
    assert await page.locator(f"{sel} .progress[data-percent='25']").count() == 0
    worker.gates[1].set()

    # the same message becomes the result: final image and U/V buttons
    await page.wait_for_selector(f"{sel} .embed-title >> text=Done", timeout=WAIT_MS)
    await page.wait_for_selector(f"{sel} button[data-custom-id^='gouache:u:']", timeout=WAIT_MS)
    assert await page.locator(f"{sel} .progress").count() == 0
    final_src = await page.get_attribute(f"{sel} .embed-image img", "src")
    assert final_src is not None and final_src.startswith("/attachments/")
    await image_loaded(page, f"{sel} .embed-image img")
    ids = await page.eval_on_selector_all(
        f"{sel} button[data-custom-id]", "bs => bs.map(b => b.dataset.customId)"
    )
    assert len(ids) == 9 and sum(i.startswith("gouache:u:") for i in ids) == 4

    # bob presses U1 in the browser: the follow-up job is his, and its message appears
    await page.select_option("#member", value=str(bob.id))
    u1 = next(i for i in ids if i.startswith("gouache:u:") and i.endswith(":1"))
    await page.click(f"{sel} button[data-custom-id='{u1}']")
    follow = page.locator(".msg", has=page.locator(".interaction-line", has_text="bob"))
    await follow.locator(".embed-title", has_text="Done").wait_for(timeout=WAIT_MS)
    assert "upscale" in await follow.locator(".embed-footer").inner_text()
    await image_loaded(page, f".msg[data-id='{await follow.get_attribute('data-id')}'] img")
    clicks = [i for i in world.sandbox.state.interactions.values() if i.type == 3]
    assert [(i.user.id, i.data["custom_id"]) for i in clicks] == [(bob.id, u1)]
    assert errors == []
