"""The rules of a click on a result's button (gouache.bot.clicks), on both stores.

Every refusal leaves the queue and the quota as they were.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from gouache.actions import ResultButton
from gouache.bot.clicks import ClickRefused, ClickRules
from gouache.bot.service import RequestContext, Requests
from gouache.errors import (
    ErrorCode,
    InvalidParameter,
    JobNotFound,
    QuotaExceeded,
    UserBlocked,
    WorkerUnavailable,
)
from gouache.jobs import Action, Job, JobState
from gouache.queue.quota import QuotaPolicy
from gouache.storage.base import Store, UserRecord

from ..conftest import ManualClock

HASH = "0c62e57f-6b7f-4bad-9524-77bb78ee793a"
BUTTONS = [
    ResultButton(
        "upscale_creative",
        f"MJ::JOB::upsample_v6_2x_creative::1::{HASH}::SOLO",
        "Upscale (Creative)",
    ),
    ResultButton("vary_strong", f"MJ::JOB::high_variation::1::{HASH}::SOLO", "Vary (Strong)"),
    ResultButton("custom_zoom", f"MJ::CustomZoom::{HASH}", "Custom Zoom", row=1),
    ResultButton("pan_left", f"MJ::JOB::pan_left::1::{HASH}::SOLO", emoji="⬅️", row=2),
    ResultButton("link", label="Web", url="https://www.midjourney.com/jobs/x", style=5, row=3),
]


def ctx(user: int = 1) -> RequestContext:
    return RequestContext(user_id=user, guild_id=9, channel_id=10)


async def finished(requests: Requests, *, remix: bool = False) -> Job:
    """A succeeded Midjourney upscale of user 99 offering `BUTTONS`."""
    parent = (await requests.imagine(RequestContext(user_id=99), "a red fox")).job
    await requests.store.pop(1, owner="w")
    for state in (JobState.RUNNING, JobState.GENERATED, JobState.STORING):
        await requests.store.transition(parent.id, state, owner="w", worker="mj1")
    meta = {
        "message_id": "77",
        "job_hash": HASH,
        "flags": 0,
        "remix": remix,
        "buttons": [b.as_dict() for b in BUTTONS],
    }
    return await requests.store.transition(parent.id, JobState.SUCCEEDED, owner="w", meta=meta)


@pytest.fixture
def running() -> set[str]:
    return {"mj1"}


@pytest.fixture
async def rules(store: Store, clock: ManualClock, running: set[str]) -> ClickRules:
    async def worker_running(name: str) -> bool:
        return name in running

    requests = Requests(
        store=store,
        policy=QuotaPolicy("UTC", default_limit=3),
        clock=clock,
        worker_running=worker_running,
        action_costs={"vary_strong": 2},
    )
    return ClickRules(requests)


async def unchanged(rules: ClickRules, user: int = 1) -> None:
    """Nothing queued for ``user``, nothing taken from their quota."""
    store = rules.requests.store
    assert await store.list_jobs(user_id=user) == []
    assert (await store.quota(user, daily_limit=3)).used == 0


async def test_a_plain_click_is_a_pinned_charged_job_carrying_the_custom_id(
    rules: ClickRules,
) -> None:
    parent = await finished(rules.requests)
    click = await rules.check_click(ctx(), parent.id, 0)
    assert click.ask is None and click.cost == 2  # a 2× upscale, by default
    receipt = await rules.queue_click(ctx(), click, None)
    job = receipt.job
    assert job.action is Action.BUTTON and job.button == BUTTONS[0].custom_id
    assert job.button_kind == "upscale_creative" and job.cost == 2 and job.pinned_worker == "mj1"
    assert job.meta["parent"]["message_id"] == "77" and job.meta["parent"]["flags"] == 0
    assert (await rules.requests.quota(ctx())).used == 2
    # The configured cost wins over the default.
    vary = await rules.check_click(ctx(2), parent.id, 1)
    assert vary.cost == 2 and vary.ask is None


async def test_custom_zoom_asks_prefilled_and_checks_the_range(rules: ClickRules) -> None:
    parent = await finished(rules.requests)
    click = await rules.check_click(ctx(), parent.id, 2)
    assert click.ask == "custom_zoom" and click.prefill == "a red fox --zoom 2"
    for bad in (
        "a red fox --zoom 2.5",
        "a red fox --zoom 0.9",
        "a red fox",
        "--zoom 1.5",
        "a --zoom x",
    ):
        with pytest.raises(InvalidParameter):
            await rules.queue_click(ctx(), click, bad)
    await unchanged(rules)
    job = (await rules.queue_click(ctx(), click, "a red fox   --zoom 1.5")).job
    assert job.button_input == "a red fox --zoom 1.5" and job.prompt == "a red fox --zoom 1.5"


async def test_a_remix_account_asks_for_a_prompt_that_must_not_be_empty(rules: ClickRules) -> None:
    parent = await finished(rules.requests, remix=True)
    click = await rules.check_click(ctx(), parent.id, 1)
    assert click.ask == "remix" and click.prefill == "a red fox"
    assert (await rules.check_click(ctx(), parent.id, 3)).ask == "remix"  # pan too
    assert (await rules.check_click(ctx(), parent.id, 0)).ask is None  # not upscales
    with pytest.raises(InvalidParameter, match="empty"):
        await rules.queue_click(ctx(), click, "   ")
    await unchanged(rules)
    job = (await rules.queue_click(ctx(), click, "a blue fox")).job
    assert job.button_input == "a blue fox"


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("parent gone", JobNotFound),
        ("not offered", ClickRefused),
        ("a link", ClickRefused),
        ("blocked", UserBlocked),
        ("at the limit", QuotaExceeded),
        ("no process runs the account", WorkerUnavailable),
    ],
)
async def test_bad_clicks_are_refused_before_anything_is_queued(
    rules: ClickRules, running: set[str], case: str, error: type[Exception]
) -> None:
    requests = rules.requests
    parent = await finished(requests)
    parent_id, number = parent.id, 1
    if case == "parent gone":
        parent_id = "0" * 32
    elif case == "not offered":
        number = 17
    elif case == "a link":
        number = 4
    elif case == "blocked":
        await requests.store.put_user(
            UserRecord(user_id=1, banned_until=datetime(2026, 6, 2, tzinfo=UTC))
        )
    elif case == "at the limit":
        await requests.store.put_user(UserRecord(user_id=1, daily_limit=1))  # vary costs 2
    else:
        running.clear()
    with pytest.raises(error):
        await rules.check_click(ctx(), parent_id, number)
    await unchanged(rules)


async def test_a_second_click_while_the_first_runs_is_refused(rules: ClickRules) -> None:
    parent = await finished(rules.requests)
    first = await rules.check_click(ctx(), parent.id, 3)
    await rules.queue_click(ctx(), first, None)
    with pytest.raises(ClickRefused) as refused:
        await rules.check_click(ctx(), parent.id, 3)
    assert refused.value.code is ErrorCode.ALREADY_RUNNING
    # Queued at check time by a modal left open: refused at submit too.
    with pytest.raises(ClickRefused):
        await rules.queue_click(ctx(), first, None)
    assert len(await rules.requests.store.list_jobs(user_id=1)) == 1
    assert (await rules.requests.quota(ctx())).used == 1
    # Another button, or another member, is fine.
    await rules.check_click(ctx(), parent.id, 1)
    await rules.check_click(ctx(2), parent.id, 3)
    # Once it ended, the same button may be pressed again.
    (job,) = await rules.requests.store.list_jobs(user_id=1)
    await rules.requests.store.cancel(job.id)
    await rules.check_click(ctx(), parent.id, 3)


async def test_refusals_are_counted_by_code(store: Store, clock: ManualClock) -> None:
    codes: list[str] = []
    requests = Requests(
        store=store, policy=QuotaPolicy("UTC"), clock=clock, on_refused=codes.append
    )
    with pytest.raises(JobNotFound):
        await ClickRules(requests).check_click(ctx(), "f" * 32, 0)
    assert codes == ["job_not_found"]


def test_a_result_without_buttons_offers_none(**_: Any) -> None:
    from gouache.bot.clicks import buttons_of

    assert buttons_of(Job(user_id=1, prompt="x")) == []
    assert buttons_of(Job(user_id=1, prompt="x", meta={"buttons": "junk"})) == []
