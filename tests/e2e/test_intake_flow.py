"""A Chinese prompt through the real bot: it reaches the worker in English, parameters intact."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gouache.intake import Intake, IntakeSettings, TranslateSettings
from gouache.jobs import JobState
from gouache_sandbox.instant import InstantWorker
from gouache_sandbox.ollama import OllamaSandbox

from .conftest import embed_title


async def test_chinese_prompt_reaches_the_worker_in_english(
    make_world: Callable[..., Any],
) -> None:
    worker = InstantWorker("instant-1")
    world = await make_world([worker])
    async with OllamaSandbox() as ollama:
        settings = IntakeSettings(translate=TranslateSettings(ollama_url=ollama.url))
        async with Intake(settings, world.app.store) as intake:
            world.app.requests.intake = intake
            member = world.member("xiaoming", locale="zh-CN")
            member.invoke(
                world.channel.id,
                "imagine",
                {
                    "prompt": "一只可爱的猫在月球上，水墨画风格 —ar 16:9 --seed 7",
                    "negative": "文字",
                },
            )
            done = await world.wait(lambda m: embed_title(m) == "完成" and bool(m.attachments))
    assert len(worker.submitted) == 1
    job = await world.app.store.get(worker.submitted[0])
    assert job is not None and job.state is JobState.SUCCEEDED
    assert job.prompt == "a cute cat on moon, ink wash painting style"
    assert job.params.aspect == (16, 9) and job.params.seed == 7 and job.params.no == ("text",)
    fields = {f["name"]: f["value"] for f in done.embeds[0]["fields"]}
    assert fields["提示词"] == "一只可爱的猫在月球上，水墨画风格 --ar 16:9 --seed 7 --no 文字"
    assert (
        fields["英文提示词"]
        == "a cute cat on moon, ink wash painting style --ar 16:9 --seed 7 --no text"
    )
