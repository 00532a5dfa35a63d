"""Niji jobs go to the Niji bot through the same account; a tier's relax mode is the job's."""

from __future__ import annotations

from gouache.jobs import Action, Job
from gouache.params import Params
from gouache.pool.midjourney_models import bot_for, mode_for
from gouache.pool.midjourney_wire import MIDJOURNEY_APPLICATION_ID, NIJI_APPLICATION_ID
from gouache_sandbox.discord.midjourney import NIJI_APPLICATION_ID as SANDBOX_NIJI

from .test_midjourney import Recorder, World, follow_up, imagine, world  # noqa: F401


def test_the_bot_and_the_mode_come_from_the_jobs_meta() -> None:
    niji = Job(user_id=1, prompt="x", meta={"mj_app": "niji", "mj_mode": "relax"})
    plain = Job(user_id=1, prompt="x", meta={"mj_mode": "fast"})
    assert bot_for(niji, MIDJOURNEY_APPLICATION_ID) == NIJI_APPLICATION_ID == str(SANDBOX_NIJI)
    assert bot_for(plain, MIDJOURNEY_APPLICATION_ID) == MIDJOURNEY_APPLICATION_ID
    assert mode_for(niji, "fast") == "relax"
    assert mode_for(plain, "relax") == "relax"  # an account out of fast hours stays relaxed


async def test_a_niji_job_and_its_upscale_run_on_the_niji_bot(world: World) -> None:  # noqa: F811
    sb = world.sb
    assert sb.niji is not None and sb.midjourney is not None
    sb.niji.settings = sb.midjourney.settings  # the fixture sped up the Midjourney bot
    worker = await world.worker()
    rec = Recorder()
    job = imagine(
        "a koi pond in spring", params=Params(niji="6"), meta={"mj_app": "niji", "mj_mode": "relax"}
    )
    await worker.submit(job, rec)
    result = await rec.done(job)
    niji_job = sb.niji.jobs[result.external_id]
    assert "--niji 6" in niji_job.prompt and "--relax" in niji_job.prompt
    assert result.external_id not in world.mj.jobs  # the Midjourney bot never saw it
    # The upscale's button goes to the bot that made the grid.
    up = follow_up(job, result, worker.name, Action.UPSCALE, 2)
    up = up.model_copy(update={"meta": {**up.meta, "mj_app": "niji"}})
    await worker.submit(up, rec)
    upscaled = await rec.done(up)
    assert sb.niji.jobs[upscaled.external_id].kind == "upscale"
