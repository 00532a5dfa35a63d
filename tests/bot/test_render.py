"""Embeds and buttons for every state, within Discord's limits."""

from __future__ import annotations

import pytest

from gouache.bot.i18n import language, t
from gouache.bot.render import LiveInfo, clip, format_eta, job_embed, progress_bar
from gouache.bot.views import TEMPLATE, custom_id, progress_view, result_view
from gouache.jobs import Action, Job, JobState


def test_progress_bar() -> None:
    assert progress_bar(0, 10) == "▱" * 10 + " 0%"
    assert progress_bar(45, 10).startswith("▰" * 4 + "▱" * 6)
    assert progress_bar(150, 10) == "▰" * 10 + " 100%"


@pytest.mark.parametrize("state", list(JobState))
@pytest.mark.parametrize("locale", ["en-US", "zh-CN"])
def test_every_state_renders_within_limits(state: JobState, locale: str) -> None:
    job = Job(
        user_id=1,
        prompt="x" * 5000,
        state=state,
        progress=40,
        locale=locale,
        error_message="e" * 5000,
        meta={"translated_prompt": "y" * 5000},
    )
    embed = job_embed(
        job,
        LiveInfo(
            position=2,
            eta_s=75,
            quota_remaining=3,
            quota_limit=100,
            preview_name="preview.png",
            result_name="r.png",
        ),
    )
    assert len(embed) <= 6000
    assert embed.title == t(locale, state.value)
    if state is JobState.QUEUED:
        assert any(f.value == "#3" for f in embed.fields)
    if state is JobState.SUCCEEDED:
        assert embed.image.url == "attachment://r.png"
    if state is JobState.RUNNING:
        assert embed.description is not None and "40%" in embed.description


def test_language_and_eta_text() -> None:
    assert language("zh-TW") == "zh" and language("en-GB") == "en" and language(None) == "en"
    assert format_eta("en-US", 40) == "~40 s"
    assert format_eta("zh-CN", 600) == "约 10 分钟"
    assert clip("abcdef", 4) == "abc…"


async def test_buttons_have_parsable_custom_ids() -> None:
    # (views only track "finished" inside a running loop, as in the bot)
    import re

    job = Job(user_id=1, prompt="x", state=JobState.SUCCEEDED, meta={"grid": True})
    view = result_view(job)
    assert view is not None and view.is_finished()
    ids = [c.custom_id for c in view.children]  # type: ignore[attr-defined]
    assert len(ids) == 9 and all(re.fullmatch(TEMPLATE, i) for i in ids)
    assert custom_id("u", job.id, 2) in ids
    assert result_view(job.model_copy(update={"action": Action.UPSCALE})) is None
    # A single image (ComfyUI) has nothing to upscale or vary: re-roll only.
    single = result_view(job.model_copy(update={"meta": {"seed": 7}}))
    assert single is not None
    assert [c.custom_id for c in single.children] == [custom_id("r", job.id)]  # type: ignore[attr-defined]
    assert progress_view(job).children[0].custom_id == f"gouache:x:{job.id}"  # type: ignore[attr-defined]
