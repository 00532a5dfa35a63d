"""Every button of a Midjourney result, pressed by the account worker against the stand-in."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from gouache.actions import Kind, ResultButton
from gouache.jobs import Action, ErrorCode, Job
from gouache.pool.base import Failed, Generated
from gouache.pool.midjourney import MidjourneyWorker
from gouache_sandbox.discord.mjbuttons import SWIRL

from .test_midjourney import Recorder, World, attachment_bytes, follow_up, imagine, until
from .test_midjourney import world as world


def size(png: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(png)).size


def pixels(png: bytes) -> Image.Image:
    return Image.open(io.BytesIO(png)).convert("RGB")


def press(parent: Job, result: Generated, worker: str, kind: str, value: str | None = None) -> Job:
    """The follow-up job a click on ``kind`` makes (as `gouache.bot.clicks` builds it)."""
    buttons = [ResultButton.from_dict(b) for b in result.meta["buttons"]]
    (button,) = [b for b in buttons if b.kind == kind]
    ref = {"job_id": parent.id, "worker": worker, "external_id": result.external_id, **result.meta}
    return Job(
        user_id=1,
        prompt=value or parent.prompt,
        action=Action.BUTTON,
        button=button.custom_id,
        button_kind=button.kind,
        button_input=value,
        parent_id=parent.id,
        meta={"parent": ref},
    )


async def upscaled(world: World, worker: MidjourneyWorker, rec: Recorder) -> tuple[Job, Generated]:
    parent = imagine("a red fox")
    await worker.submit(parent, rec)
    grid = await rec.done(parent)
    up = follow_up(parent, grid, worker.name, Action.UPSCALE, 2)
    await worker.submit(up, rec)
    return up, await rec.done(up)


async def run(worker: MidjourneyWorker, rec: Recorder, job: Job) -> Generated:
    await worker.submit(job, rec)
    return await rec.done(job)


async def test_an_upscale_keeps_midjourneys_buttons_in_its_layout(world: World) -> None:
    worker = await world.worker()
    rec = Recorder()
    _, result = await upscaled(world, worker, rec)
    buttons = [ResultButton.from_dict(b) for b in result.meta["buttons"]]
    kinds = [b.kind for b in buttons]
    assert kinds == [
        "upscale_subtle",
        "upscale_creative",
        "vary_subtle",
        "vary_strong",
        "zoom_out_2x",
        "zoom_out_1_5x",
        "custom_zoom",
        "pan_left",
        "pan_right",
        "pan_up",
        "pan_down",
        "unknown",  # the stand-in's invented button: kept, relayed as it is
        "link",
    ]
    assert Kind.MAKE_SQUARE not in kinds  # the upscale is square
    assert [b.row for b in buttons] == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3]
    link = buttons[-1]
    assert link.url is not None and link.url.endswith(str(result.external_id))
    assert buttons[-2].label == "Swirl" and SWIRL in buttons[-2].custom_id
    assert result.meta["grid"] is False and result.meta["remix"] is False


async def test_vary_strong_and_subtle_make_grids_from_the_image(world: World) -> None:
    worker = await world.worker()
    rec = Recorder()
    up, result = await upscaled(world, worker, rec)
    for kind, line in (
        ("vary_strong", "Variations (Strong) by"),
        ("vary_subtle", "Variations (Subtle) by"),
    ):
        done = await run(worker, rec, press(up, result, worker.name, kind))
        message = world.sb.state.get_message(world.channel.id, int(done.meta["message_id"]))
        assert line in message.content
        assert done.meta["grid"] is True and done.meta["made_by"] == kind
        assert size(done.images[0]) == tuple(2 * s for s in size(result.images[0]))
        assert world.mj.jobs[done.external_id].parent.hash == result.external_id


async def test_upscale_creative_doubles_the_image(world: World) -> None:
    worker = await world.worker()
    rec = Recorder()
    up, result = await upscaled(world, worker, rec)
    done = await run(worker, rec, press(up, result, worker.name, "upscale_creative"))
    w, h = size(result.images[0])
    assert size(done.images[0]) == (2 * w, 2 * h)
    message = world.sb.state.get_message(world.channel.id, int(done.meta["message_id"]))
    assert "Upscaled (Creative) by" in message.content and done.meta["grid"] is False
    # An upscaled image offers no upscale buttons of its own.
    assert not {"upscale_subtle", "upscale_creative"} & {b["kind"] for b in done.meta["buttons"]}


async def test_zoom_out_2x_puts_the_old_image_inside_a_larger_canvas(world: World) -> None:
    worker = await world.worker()
    rec = Recorder()
    up, result = await upscaled(world, worker, rec)
    done = await run(worker, rec, press(up, result, worker.name, "zoom_out_2x"))
    w, h = size(result.images[0])
    grid = pixels(done.images[0])
    assert grid.size == (4 * w, 4 * h)  # four candidates, each twice as large
    first = grid.crop((0, 0, 2 * w, 2 * h))
    inner = first.crop((w // 2, h // 2, w // 2 + w, h // 2 + h))
    assert inner.tobytes() == pixels(result.images[0]).tobytes()
    message = world.sb.state.get_message(world.channel.id, int(done.meta["message_id"]))
    assert "Zoom Out by" in message.content


async def test_pan_left_extends_the_left_side_and_make_square_squares_it(world: World) -> None:
    worker = await world.worker()
    rec = Recorder()
    up, result = await upscaled(world, worker, rec)
    panned = await run(worker, rec, press(up, result, worker.name, "pan_left"))
    w, h = size(result.images[0])
    assert size(panned.images[0]) == (2 * (w + w // 2), 2 * h)
    message = world.sb.state.get_message(world.channel.id, int(panned.meta["message_id"]))
    assert "Pan Left by" in message.content and panned.meta["made_by"] == "pan_left"
    # Its first candidate keeps the old image against the right side.
    tile = pixels(panned.images[0]).crop((0, 0, w + w // 2, h))
    right = tile.crop((w // 2, 0, w // 2 + w, h))
    assert right.tobytes() == pixels(result.images[0]).tobytes()
    # Upscaled, it is not square, so Midjourney offers Make Square.
    wide_parent = Job(user_id=1, prompt="x", id=panned.external_id.replace("-", "")[:32])
    wide = follow_up(wide_parent, panned, worker.name, Action.UPSCALE, 1)
    wide_done = await run(worker, rec, wide)
    assert "make_square" in {b["kind"] for b in wide_done.meta["buttons"]}
    squared = await run(worker, rec, press(wide, wide_done, worker.name, "make_square"))
    sw, sh = size(squared.images[0])
    assert sw == sh


async def test_custom_zoom_answers_midjourneys_modal_with_the_members_value(world: World) -> None:
    worker = await world.worker()
    rec = Recorder()
    up, result = await upscaled(world, worker, rec)
    job = press(up, result, worker.name, "custom_zoom", "a red fox --zoom 1.5")
    done = await run(worker, rec, job)
    mj_job = world.mj.jobs[done.external_id]
    assert mj_job.prompt == "a red fox --zoom 1.5" and mj_job.press.zoom == 1.5
    w, _ = size(result.images[0])
    assert size(done.images[0])[0] == 2 * round(w * 1.5)
    assert not world.sb.state.modals  # Midjourney's form was answered, not left open


async def test_a_zoom_midjourney_refuses_fails_the_job_with_its_reason(world: World) -> None:
    worker = await world.worker()
    rec = Recorder()
    up, result = await upscaled(world, worker, rec)
    job = press(up, result, worker.name, "custom_zoom", "a red fox --zoom 3")
    await worker.submit(job, rec)
    failed = await rec.final(job)
    assert isinstance(failed, Failed) and failed.code == ErrorCode.INVALID_PARAMETER
    assert "zoom" in failed.message


async def test_remix_account_asks_for_a_prompt_and_uses_the_new_one(world: World) -> None:
    worker = await world.worker(remix=True)
    world.mj.set_remix(world.user.id, True)
    rec = Recorder()
    up, result = await upscaled(world, worker, rec)
    assert result.meta["remix"] is True
    done = await run(worker, rec, press(up, result, worker.name, "vary_strong", "a blue fox"))
    mj_job = world.mj.jobs[done.external_id]
    assert mj_job.prompt == "a blue fox" and mj_job.remix
    message = world.sb.state.get_message(world.channel.id, int(done.meta["message_id"]))
    assert "Remix (Strong) by" in message.content
    # Pan on a Remix account opens Midjourney's pan form; the prompt goes through it.
    panned = await run(worker, rec, press(up, result, worker.name, "pan_right", "a fox, wider"))
    assert world.mj.jobs[panned.external_id].prompt == "a fox, wider"


async def test_a_button_gouache_has_never_seen_is_relayed_and_its_result_read(
    world: World,
) -> None:
    worker = await world.worker()
    rec = Recorder()
    up, result = await upscaled(world, worker, rec)
    job = press(up, result, worker.name, "unknown")
    assert job.button is not None and SWIRL in job.button
    done = await run(worker, rec, job)
    w, h = size(result.images[0])
    assert size(done.images[0]) == (h, w)
    assert done.images == [attachment_bytes(world, done.meta["message_id"])]
    assert world.mj.jobs[done.external_id].press.action == SWIRL


async def test_remix_mode_is_read_from_the_accounts_settings(world: World) -> None:
    world.mj.set_remix(world.user.id, True)
    worker = await world.worker(remix="settings")
    await until(worker, lambda: worker.remix is True)
    world.mj.set_remix(world.user.id, False)
    await worker._ask_settings()
    await until(worker, lambda: worker.remix is False)


async def test_a_modal_submit_with_wrong_ids_or_values_is_refused_with_400(world: World) -> None:
    worker = await world.worker()
    rec = Recorder()
    _up, result = await upscaled(world, worker, rec)
    # Open Midjourney's Custom Zoom form by pressing the button as a person would.
    custom = next(b for b in result.meta["buttons"] if b["kind"] == "custom_zoom")
    session = worker._gateway.session_id if worker._gateway else ""
    body: dict[str, Any] = {
        "type": 3,
        "application_id": str(world.mj.application.id),
        "guild_id": str(world.guild.id),
        "channel_id": str(world.channel.id),
        "message_id": result.meta["message_id"],
        "session_id": session,
        "nonce": "1",
        "data": {"component_type": 2, "custom_id": custom["custom_id"]},
    }
    assert (await worker.api.call("POST", "/interactions", body)).status == 204
    await until(worker, lambda: bool(world.sb.state.modals))
    (modal,) = world.sb.state.modals.values()

    def submit(custom_id: str, input_id: str, value: str) -> dict[str, Any]:
        row = {"type": 1, "components": [{"type": 4, "custom_id": input_id, "value": value}]}
        return {
            **{k: body[k] for k in ("application_id", "guild_id", "channel_id", "session_id")},
            "type": 5,
            "nonce": "2",
            "data": {"id": str(modal.id), "custom_id": custom_id, "components": [row]},
        }

    field = modal.inputs[0].custom_id
    bad = [
        submit("MJ::OutpaintCustomZoomModal::wrong", field, "x --zoom 1.5"),
        submit(modal.custom_id, "MJ::Other::prompt", "x --zoom 1.5"),
        submit(modal.custom_id, field, ""),
        submit(modal.custom_id, field, "x" * 4001),
    ]
    for attempt in bad:
        resp = await worker.api.call("POST", "/interactions", attempt)
        assert resp.status == 400 and resp.body["code"] == 50035, attempt
    assert modal.id in world.sb.state.modals  # still open: a refused submit changes nothing
    ok = await worker.api.call(
        "POST", "/interactions", submit(modal.custom_id, field, "x --zoom 1.2")
    )
    assert ok.status == 204 and modal.id not in world.sb.state.modals
    again = await worker.api.call(
        "POST", "/interactions", submit(modal.custom_id, field, "x --zoom 1.2")
    )
    assert again.status == 400  # a modal is answered once
