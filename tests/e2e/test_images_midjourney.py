"""Images in on Midjourney (and /describe through Ollama), end to end through the bot.

The account uploads the member's images the way Discord's client does
(``POST /channels/{id}/attachments``, ``PUT``, then the uploaded filename in a
message or the interaction); the Midjourney stand-in loads them and shows them
in its results. Each scenario runs on both store backends.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from gouache.images.inputs import InputImages
from gouache.jobs import Action, InputRole, JobState
from gouache.pool.describer import OllamaDescriber
from gouache.pool.gateway_rules import Backoff, IdentifyPacer
from gouache.pool.midjourney import MidjourneyTimeouts, MidjourneyWorker
from gouache.storage.base import Store
from gouache.storage.images import ImageStore
from gouache_sandbox.discord import DiscordSandbox
from gouache_sandbox.ollama import OllamaSandbox

from ..images.pictures import jpeg_with_exif, mean_color, png
from .conftest import World, custom_ids, embed_title

RED, BLUE = (220, 20, 20), (20, 20, 220)
FAST = MidjourneyTimeouts(first_message=5, start=5, progress=5, download=5)


@pytest.fixture
def mj_world(
    make_world: Callable[..., Any],
    sandbox: DiscordSandbox,
    backend_store: Store | None,
    tmp_path: Path,
) -> Callable[..., Any]:
    async def build() -> tuple[World, MidjourneyWorker]:
        inputs = InputImages.build(ImageStore(tmp_path / "images"), api_base=sandbox.api_base)
        guild = next(iter(sandbox.state.guilds.values()))
        account, token = sandbox.add_user_account("mj-account")
        sandbox.join(guild, account)
        mj_channel = sandbox.add_channel(guild, "mj")
        worker = MidjourneyWorker(
            "mj-1",
            token,
            guild.id,
            mj_channel.id,
            api_base=f"{sandbox.base_url}/api/v9",
            gateway_url=sandbox.gateway_url,
            timeouts=FAST,
            gateway_backoff=Backoff(base=0.02, cap=0.1),
            identify_pacer=IdentifyPacer(window=0.05),
            inputs=inputs.load,
        )
        world = await make_world([worker], store=backend_store, inputs=inputs)
        await worker.wait_ready(10)
        return world, worker

    return build


def _grid(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


async def _done(world: World, inter: Any) -> Any:
    return await world.wait(
        lambda m: m.id == inter.original_message_id and embed_title(m) in ("Done", "Failed"),
        timeout=20,
    )


async def _only_job(world: World, user_id: int) -> Any:
    (job,) = await world.app.store.list_jobs(user_id=user_id)
    return job


async def test_image_prompt_and_references_reach_midjourney(
    mj_world: Callable[..., Any], sandbox: DiscordSandbox
) -> None:
    world, _ = await mj_world()
    alice = world.member("alice")
    inter = alice.invoke(
        world.channel.id,
        "imagine",
        {
            "prompt": "a red fox --iw 1.5 --sw 200",
            "image": ("me.jpg", jpeg_with_exif(RED)),
            "style_ref": ("style.png", png(BLUE)),
        },
    )
    done = await _done(world, inter)
    assert embed_title(done) == "Done", done.embeds
    job = await _only_job(world, alice.id)
    assert job.state is JobState.SUCCEEDED
    assert [i.role for i in job.inputs()] == [InputRole.PROMPT, InputRole.STYLE]
    # Midjourney got the image prompt first and the style reference after --sref.
    assert sandbox.midjourney is not None
    mj_job = next(j for j in sandbox.midjourney.jobs.values() if j.kind == "imagine")
    words = mj_job.prompt.split()
    assert words[0].startswith(sandbox.base_url + "/attachments/")
    assert words[words.index("--sref") + 1].startswith(sandbox.base_url + "/attachments/")
    assert "--iw 1.5" in mj_job.prompt and "--sw 200" in mj_job.prompt
    # The images went up through the client's upload flow, without their EXIF.
    assert sandbox.rest.uploads.puts == 2
    uploaded = [a for a in sandbox.state.attachments.values() if a.filename.startswith("image")]
    assert uploaded and all(b"SecretCam" not in a.data for a in uploaded)
    # The stand-in shows the image prompt in every tile (top left): red.
    grid = _grid(await world.app.images.get(job.results[0]))
    r, g, b = grid.getpixel((2, 2))  # type: ignore[misc]
    assert r > 150 and g < 80 and b < 80
    assert (await world.app.store.quota(alice.id, daily_limit=100)).used == 1


async def test_blend_on_midjourney_uses_every_image(
    mj_world: Callable[..., Any], sandbox: DiscordSandbox
) -> None:
    world, _ = await mj_world()
    bob = world.member("bob")
    inter = bob.invoke(
        world.channel.id,
        "blend",
        {"image1": ("a.png", png(RED)), "image2": ("b.png", png(BLUE)), "dimensions": "portrait"},
    )
    assert embed_title(await _done(world, inter)) == "Done"
    job = await _only_job(world, bob.id)
    assert job.action is Action.BLEND and job.state is JobState.SUCCEEDED
    assert sandbox.midjourney is not None
    mj_job = next(j for j in sandbox.midjourney.jobs.values() if j.kind == "blend")
    assert mj_job.aspect == (2, 3) and len(mj_job.inputs) == 2
    grid = _grid(await world.app.images.get(job.results[0]))
    assert grid.height > grid.width  # portrait
    r, _, b = mean_color(await world.app.images.get(job.results[0]))
    assert r > 60 and b > 60  # red and blue mixed


async def test_describe_on_midjourney_then_imagine_one_and_all(
    mj_world: Callable[..., Any],
) -> None:
    world, _ = await mj_world()
    cara = world.member("cara")
    inter = cara.invoke(world.channel.id, "describe", {"image": ("sea.png", png(BLUE, (90, 60)))})
    done = await _done(world, inter)
    assert embed_title(done) == "Done"
    described = await _only_job(world, cara.id)
    prompts = described.meta["prompts"]
    assert len(prompts) == 4 and all("blue" in p and "--ar 3:2" in p for p in prompts)
    assert "1️⃣" in done.embeds[0]["description"] and "blue" in done.embeds[0]["description"]
    ids = custom_ids(done)
    assert ids == [f"gouache:d:{described.id}:{n}" for n in range(1, 5)] + [
        f"gouache:a:{described.id}"
    ]
    # Button 2: an /imagine of prompt 2, queued and charged like any other.
    click = cara.click(done, ids[1])
    await world.wait(lambda m: m.id == click.original_message_id and embed_title(m) == "Done")
    jobs = await world.app.store.list_jobs(user_id=cara.id)
    second = next(j for j in jobs if j.action is Action.IMAGINE)
    assert second.prompt == prompts[1].split(" --")[0]
    assert (await world.app.store.quota(cara.id, daily_limit=100)).used == 2
    # "Imagine all": four more imagines, the later three posted in the channel.
    with world.app.bus.subscribe(lambda e: e.final) as finals:
        cara.click(done, ids[4])
        ended: set[str] = set()
        async with asyncio.timeout(30):
            async for event in finals:
                ended.add(event.job_id)
                if len(ended) == 4:
                    break
    jobs = await world.app.store.list_jobs(user_id=cara.id)
    imagines = [j for j in jobs if j.id in ended]
    assert all(j.action is Action.IMAGINE and j.state is JobState.SUCCEEDED for j in imagines)
    assert sorted(j.prompt for j in imagines) == sorted(p.split(" --")[0] for p in prompts)
    assert sum(j.message_id is not None for j in imagines) == 4  # each has its message
    assert (await world.app.store.quota(cara.id, daily_limit=100)).used == 6


async def test_describe_through_ollama_without_midjourney(
    make_world: Callable[..., Any], sandbox: DiscordSandbox, tmp_path: Path
) -> None:
    async with OllamaSandbox() as ollama:
        inputs = InputImages.build(ImageStore(tmp_path / "images"), api_base=sandbox.api_base)
        describer = OllamaDescriber("describe", ollama.url, model="demo-vision", inputs=inputs.load)
        world = await make_world([describer], inputs=inputs)
        dora = world.member("dora")
        inter = dora.invoke(world.channel.id, "describe", {"image": ("r.png", png(RED, (40, 80)))})
        done = await _done(world, inter)
        assert embed_title(done) == "Done"
        job = await _only_job(world, dora.id)
        prompts = job.meta["prompts"]
        assert len(prompts) == 4 and all("red" in p and "portrait" in p for p in prompts)
        (request,) = ollama.requests
        assert request["model"] == "demo-vision" and request["messages"][0]["images"]
        assert len(custom_ids(done)) == 5
