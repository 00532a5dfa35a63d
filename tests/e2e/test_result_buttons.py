"""Every button of a result, end to end: members click through the real bot (discord.py) in the
sandbox, gouache relays the click to Midjourney's stand-in through a real account worker, and
the result comes back; on both store backends."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image
from pydantic import SecretStr

from gouache.jobs import Action, JobState
from gouache.pool.base import WorkerState
from gouache.pool.comfyui import ComfyUIWorker
from gouache.pool.comfyui_parents import ParentImages
from gouache.pool.gateway import Backoff, IdentifyPacer
from gouache.pool.midjourney import MidjourneyTimeouts, MidjourneyWorker
from gouache.pool.workflows import load_shipped
from gouache.storage.base import Store
from gouache.storage.images import ImageStore
from gouache_sandbox.comfyui import ComfyUISandbox
from gouache_sandbox.discord import DiscordSandbox
from gouache_sandbox.discord.members import SimulatedMember
from gouache_sandbox.discord.modals import PendingModal
from gouache_sandbox.discord.state import Message

from .conftest import World, custom_ids, embed_title, footer

DONE = ("Done", "完成")
FAST = MidjourneyTimeouts(request=5, first_message=5, start=10, progress=10, download=5)


@dataclass
class Rig:
    world: World
    worker: MidjourneyWorker

    @property
    def sandbox(self) -> DiscordSandbox:
        return self.world.sandbox

    async def imagine_upscaled(self, member: SimulatedMember, prompt: str) -> Message:
        """/imagine on Midjourney, then U2: the upscaled result's message."""
        ch = self.world.channel.id
        inter = member.invoke(ch, "imagine", {"prompt": prompt, "backend": "midjourney"})
        done = await self.world.wait(
            lambda m: m.id == inter.original_message_id and embed_title(m) in DONE
        )
        u2 = next(i for i in custom_ids(done) if i.startswith("gouache:u:") and i.endswith(":2"))
        click = member.click(done, u2)
        try:
            return await self.world.wait(
                lambda m: (
                    m.id == click.original_message_id
                    and embed_title(m) in DONE
                    and bool(m.attachments)
                )
            )
        except TimeoutError:
            for m in self.sandbox.messages(self.world.channel.id):
                print(
                    "DBG",
                    m.id,
                    click.original_message_id,
                    embed_title(m),
                    len(m.attachments),
                    m.flags,
                    m.content[:100],
                )
            raise
        return await self.world.wait(
            lambda m: (
                m.id == click.original_message_id
                and embed_title(m) == "Done"
                and bool(m.attachments)
            )
        )

    async def press(self, member: SimulatedMember, message: Message, label: str) -> Message:
        """Click the button labelled ``label`` and wait for its job's finished message."""
        inter = member.click(message, button_id(message, label))
        return await self.world.wait(
            lambda m: m.id == inter.original_message_id and embed_title(m) in ("Done", "Failed"),
            timeout=30,
        )


def buttons(m: Message) -> list[dict[str, Any]]:
    return [c for row in m.components for c in row.get("components", [])]


def button_id(m: Message, label: str) -> str:
    for c in buttons(m):
        if c.get("label") == label or (c.get("emoji") or {}).get("name") == label:
            return str(c["custom_id"])
    raise LookupError(f"no button {label!r} in {[c.get('label') for c in buttons(m)]}")


@pytest.fixture
async def rig(
    make_world: Callable[..., Any], sandbox: DiscordSandbox, backend_store: Store | None
) -> Callable[..., Any]:
    """Build the bot with one Midjourney account (its own channel in the same guild)."""

    async def build(*, remix: bool = False, daily_limit: int = 100) -> Rig:
        user, token = sandbox.add_user_account("painter")
        guild = next(g for g in sandbox.state.guilds.values() if g.name == "community")
        channel = sandbox.add_channel(guild, "mj")
        sandbox.join(guild, user)
        assert sandbox.midjourney is not None
        sandbox.midjourney.set_remix(user.id, remix)
        worker = MidjourneyWorker(
            "mj1",
            token,
            guild.id,
            channel.id,
            api_base=f"{sandbox.base_url}/api/v9",
            gateway_url=sandbox.gateway_url,
            timeouts=FAST,
            gateway_backoff=Backoff(base=0.02, cap=0.1),
            identify_pacer=IdentifyPacer(window=0.05),
            remix=remix,
        )
        kw: dict[str, Any] = {"daily_limit": daily_limit}
        if backend_store is not None:
            kw["store"] = backend_store
        world = await make_world([worker], **kw)
        await worker.wait_ready(10)
        return Rig(world, worker)

    return build


async def opened(member: SimulatedMember, click: Any) -> PendingModal:
    """The modal the bot answered ``click`` with."""
    async with asyncio.timeout(10):
        await click.responded.wait()
    modal = member.modal(click)
    assert modal is not None, f"answered with type {click.response_type}, not a modal"
    return modal


async def used_by(world: World, member: SimulatedMember) -> int:
    return (await world.app.store.quota(member.id, daily_limit=100)).used


async def used(rig: Rig, member: SimulatedMember) -> int:
    return (await rig.world.app.store.quota(member.id, daily_limit=100)).used


async def test_an_upscale_shows_midjourneys_buttons_translated_and_each_press_is_a_job(
    rig: Callable[..., Any],
) -> None:
    r: Rig = await rig()
    alice = r.world.member("alice")
    up = await r.imagine_upscaled(alice, "a red fox")
    labels = [c.get("label") or c["emoji"]["name"] for c in buttons(up)]
    assert labels == [
        "Upscale (Subtle)",
        "Upscale (Creative)",
        "Vary (Subtle)",
        "Vary (Strong)",
        "Zoom Out 2x",
        "Zoom Out 1.5x",
        "Custom Zoom",
        "⬅️",
        "➡️",
        "⬆️",
        "⬇️",
        "Swirl",  # a button gouache does not know keeps Midjourney's label
        "Web",
    ]  # ❤️ and Vary (Region) only work in Midjourney's own server: left out
    web = buttons(up)[-1]
    assert web["style"] == 5 and web["url"].startswith("https://www.midjourney.com/")
    assert all(i.startswith("gouache:b:") for i in custom_ids(up))
    before = await used(r, alice)
    strong = await r.press(alice, up, "Vary (Strong)")
    assert embed_title(strong) == "Done" and footer(strong).startswith("vary_strong")
    assert len([i for i in custom_ids(strong) if i.startswith("gouache:u:")]) == 4  # a grid
    assert await used(r, alice) == before + 1
    creative = await r.press(alice, up, "Upscale (Creative)")
    assert embed_title(creative) == "Done" and footer(creative).startswith("upscale_creative")
    assert await used(r, alice) == before + 3  # a 2× upscale costs 2 by default
    jobs = await r.world.app.store.list_jobs(user_id=alice.id, states=[JobState.SUCCEEDED])
    clicks = [j for j in jobs if j.action is Action.BUTTON]
    assert {j.button_kind for j in clicks} == {"vary_strong", "upscale_creative"}
    assert all(j.worker == "mj1" and j.button and j.button.startswith("MJ::") for j in clicks)


async def test_zh_members_read_translated_labels(rig: Callable[..., Any]) -> None:
    r: Rig = await rig()
    bo = r.world.member("bo", locale="zh-CN")
    up = await r.imagine_upscaled(bo, "一只猫")
    labels = [c.get("label") for c in buttons(up)]
    assert "强烈变化" in labels and "放大（创意）" in labels and "Swirl" in labels


async def test_custom_zoom_asks_first_validates_and_queues_only_on_submit(
    rig: Callable[..., Any],
) -> None:
    r: Rig = await rig()
    carol = r.world.member("carol")
    up = await r.imagine_upscaled(carol, "a lighthouse")
    before = await used(r, carol)
    click = carol.click(up, button_id(up, "Custom Zoom"))
    modal = await opened(carol, click)
    (field,) = modal.inputs
    assert field.value == "a lighthouse --zoom 2"
    # Out of range: a clear private answer, nothing queued or charged.
    bad = carol.submit_modal(click, {field.custom_id: "a lighthouse --zoom 3"})
    refusal = await r.world.reply(bad)
    assert refusal.flags & 64 and "1.0 to 2.0" in refusal.content
    assert await used(r, carol) == before
    # Closing the modal queues nothing either.
    again = carol.click(up, button_id(up, "Custom Zoom"))
    await opened(carol, again)
    carol.close_modal(again)
    assert await used(r, carol) == before
    # A good value: the job runs with it.
    third = carol.click(up, button_id(up, "Custom Zoom"))
    modal = await opened(carol, third)
    ok = carol.submit_modal(third, {modal.inputs[0].custom_id: "a lighthouse --zoom 1.5"})
    done = await r.world.wait(
        lambda m: m.id == ok.original_message_id and embed_title(m) == "Done", timeout=30
    )
    assert footer(done).startswith("custom_zoom")
    assert await used(r, carol) == before + 1
    assert r.sandbox.midjourney is not None
    made = [j for j in r.sandbox.midjourney.jobs.values() if j.prompt == "a lighthouse --zoom 1.5"]
    assert made and made[0].press is not None and made[0].press.zoom == 1.5


async def test_remix_account_asks_for_the_prompt_on_v_and_vary(rig: Callable[..., Any]) -> None:
    r: Rig = await rig(remix=True)
    dana = r.world.member("dana")
    up = await r.imagine_upscaled(dana, "a castle")
    click = dana.click(up, button_id(up, "Vary (Strong)"))
    modal = await opened(dana, click)
    assert modal.inputs[0].value == "a castle"
    sub = dana.submit_modal(click, {modal.inputs[0].custom_id: "a castle at night"})
    done = await r.world.wait(
        lambda m: m.id == sub.original_message_id and embed_title(m) == "Done", timeout=30
    )
    assert "a castle at night" in str(done.embeds[0])
    assert r.sandbox.midjourney is not None
    assert any(
        j.remix and j.prompt == "a castle at night" for j in r.sandbox.midjourney.jobs.values()
    )


async def test_a_button_gouache_never_saw_is_relayed_and_its_result_delivered(
    rig: Callable[..., Any],
) -> None:
    r: Rig = await rig()
    erin = r.world.member("erin")
    up = await r.imagine_upscaled(erin, "a kite")
    swirled = await r.press(erin, up, "Swirl")
    assert embed_title(swirled) == "Done" and swirled.attachments
    assert footer(swirled).startswith("unknown")


@pytest.fixture
async def comfy() -> AsyncIterator[ComfyUISandbox]:
    async with ComfyUISandbox() as server:
        yield server


@pytest.mark.parametrize("elsewhere", [False, True], ids=["same process", "other process"])
async def test_comfyui_results_offer_the_configured_actions_and_run_them(
    make_world: Callable[..., Any],
    sandbox: DiscordSandbox,
    backend_store: Store | None,
    comfy: ComfyUISandbox,
    tmp_path: Path,
    elsewhere: bool,
) -> None:
    """The parent's image comes from the image store, or (made by another process) from the
    message the bot posted it with."""
    inputs = ParentImages(ImageStore(tmp_path / ("other" if elsewhere else "images")))
    worker = ComfyUIWorker(
        "comfy-1",
        comfy.url,
        workflow=load_shipped("builtin_demo"),
        actions={
            "upscale": load_shipped("builtin_demo_upscale"),
            "zoom_out": load_shipped("builtin_demo_zoom_out"),
        },
        parents=inputs,
    )
    kw: dict[str, Any] = {} if backend_store is None else {"store": backend_store}
    world: World = await make_world([worker], **kw)
    if elsewhere:  # this "process" has an empty store, but can read Discord with the bot token
        assert world.app.bot is not None
        inputs._token = SecretStr(world.app.bot.http.token or "")
        inputs.api_base = sandbox.api_base
    await worker.wait_for_state(WorkerState.READY)
    fay = world.member("fay")
    inter = fay.invoke(
        world.channel.id, "imagine", {"prompt": "a paper boat", "backend": "comfyui"}
    )
    done = await world.wait(
        lambda m: (
            m.id == inter.original_message_id and embed_title(m) == "Done" and bool(m.attachments)
        )
    )
    labels = [c.get("label") or c["emoji"]["name"] for c in buttons(done)]
    assert labels == ["Upscale", "Zoom Out", "🔄"]  # configured actions only, then re-roll
    before = await used_by(world, fay)
    click = fay.click(done, button_id(done, "Upscale"))
    up = await world.wait(
        lambda m: m.id == click.original_message_id and embed_title(m) in ("Done", "Failed"),
        timeout=30,
    )
    assert embed_title(up) == "Done", str(up.embeds)
    assert footer(up).startswith("upscale_2x")
    assert await used_by(world, fay) == before + 1
    with (
        Image.open(io.BytesIO(up.attachments[0].data)) as big,
        Image.open(io.BytesIO(done.attachments[0].data)) as small,
    ):
        assert big.size == (2 * small.size[0], 2 * small.size[1])
    assert inputs.downloads == (1 if elsewhere else 0)
    assert worker.uploads.uploads == 1


async def test_v1_on_a_remix_accounts_grid_asks_for_the_prompt_first(
    rig: Callable[..., Any],
) -> None:
    r: Rig = await rig(remix=True)
    gus = r.world.member("gus")
    inter = gus.invoke(r.world.channel.id, "imagine", {"prompt": "a lake", "backend": "midjourney"})
    grid = await r.world.wait(
        lambda m: m.id == inter.original_message_id and embed_title(m) in DONE
    )
    v1 = next(i for i in custom_ids(grid) if i.startswith("gouache:v:") and i.endswith(":1"))
    before = await used(r, gus)
    click = gus.click(grid, v1)
    modal = await opened(gus, click)
    assert modal.inputs[0].value == "a lake" and await used(r, gus) == before
    sub = gus.submit_modal(click, {modal.inputs[0].custom_id: "a lake at dawn"})
    done = await r.world.wait(
        lambda m: m.id == sub.original_message_id and embed_title(m) == "Done", timeout=30
    )
    assert footer(done).startswith("variation") and await used(r, gus) == before + 1
    assert r.sandbox.midjourney is not None
    assert any(j.prompt == "a lake at dawn" for j in r.sandbox.midjourney.jobs.values())


async def test_the_viewer_shows_the_modal_of_a_click_and_sends_what_was_typed(
    rig: Callable[..., Any], sandbox: DiscordSandbox
) -> None:
    """A person in the web viewer gets Custom Zoom's form, fills it in or closes it."""
    r: Rig = await rig()
    hal = r.world.member("hal")
    up = await r.imagine_upscaled(hal, "a mountain")
    api = f"{sandbox.base_url}/viewer/api"
    click = {"member_id": str(hal.id), "message_id": str(up.id)}
    click["custom_id"] = button_id(up, "Custom Zoom")
    before = await used(r, hal)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{api}/click", json=click) as resp:
            first = await resp.json()
        assert first["modal"]["inputs"][0]["value"] == "a mountain --zoom 2"
        closing = {"member_id": str(hal.id), "interaction_id": first["interaction_id"]}
        async with http.post(f"{api}/modal", json={**closing, "close": True}) as resp:
            assert resp.status == 200
        assert hal.modal(sandbox.state.interactions[int(first["interaction_id"])]) is None
        async with http.post(f"{api}/click", json=click) as resp:
            second = await resp.json()
        field = second["modal"]["inputs"][0]["custom_id"]
        sent = {
            "member_id": str(hal.id),
            "interaction_id": second["interaction_id"],
            "values": {field: "a mountain --zoom 1.25"},
        }
        async with http.post(f"{api}/modal", json=sent) as resp:
            submitted = (await resp.json())["interaction_id"]
    done = await r.world.wait(
        lambda m: (
            m.id == sandbox.state.interactions[int(submitted)].original_message_id
            and embed_title(m) == "Done"
        ),
        timeout=30,
    )
    assert footer(done).startswith("custom_zoom") and await used(r, hal) == before + 1
