"""A click on one of a result's buttons (Midjourney's or ComfyUI's), without Discord.

Two steps, because Discord gives the bot 3 s to answer a click and a modal
must be that first answer:

1. `ClickRules.check_click` — every reason to refuse, before anything is
   queued or charged: the channel, the parent (gone, unfinished), the button
   (not offered), the member (blocked, at their limit), a second click on the
   same button while the first still runs, and the parent's worker (no
   process runs it). It says whether the member must be asked first (Custom
   Zoom; V, 🔄, Vary, pan and zoom on a Remix account) and what to prefill.
   This is the one place a new rule about who may click goes.
2. `ClickRules.queue_click` — with the member's modal value (validated: a
   zoom of 1.0–2.0, a remix prompt that is not empty), the rules are checked
   once more and the follow-up job is queued (`Action.BUTTON`, the button's
   ``custom_id`` verbatim, pinned to the parent's worker, charged what
   ``[queue.action_costs]`` says).

A modal the member closes or lets time out never reaches step 2: nothing was
queued, nothing charged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from gouache.actions import (
    ResultButton,
    check_custom_zoom,
    check_remix_prompt,
    cost_of,
    zoom_prefill,
)
from gouache.bot.service import Receipt, RequestContext, Requests
from gouache.bot.service import _carried as carried_meta
from gouache.errors import (
    ErrorCode,
    GouacheError,
    InvalidParameter,
    JobNotFound,
    QuotaExceeded,
    WorkerUnavailable,
)
from gouache.jobs import Action, Job, JobState

Ask = Literal["custom_zoom", "remix"]


class ClickRefused(GouacheError):
    """A click gouache will not turn into a job (``code`` says why)."""

    def __init__(self, message: str, code: ErrorCode) -> None:
        super().__init__(message, code=code)


@dataclass(frozen=True, slots=True)
class Click:
    """An accepted click, waiting for the member's modal value if ``ask`` is set."""

    parent: Job
    button: ResultButton
    number: int
    cost: int
    ask: Ask | None = None
    prefill: str = ""


def buttons_of(job: Job) -> list[ResultButton]:
    """The buttons a finished job offers (``meta["buttons"]``), as `ResultButton` values."""
    raw = job.meta.get("buttons")
    return (
        [ResultButton.from_dict(b) for b in raw if isinstance(b, dict)]
        if isinstance(raw, list)
        else []
    )


def _ask(button: ResultButton, parent: Job) -> Ask | None:
    if button.modal:
        return "custom_zoom"
    if button.remix and parent.meta.get("remix") is True:
        return "remix"
    return None


class ClickRules:
    """The rules of a click on a result's button (see the module docstring)."""

    def __init__(self, requests: Requests) -> None:
        self.requests = requests

    async def check_click(self, ctx: RequestContext, parent_id: str, number: int) -> Click:
        """Refuse the click (`GouacheError`, nothing reserved) or say what it needs."""
        try:
            return await self._check(ctx, parent_id, number)
        except GouacheError as exc:
            self.requests._refused(exc)
            raise

    async def queue_click(self, ctx: RequestContext, click: Click, value: str | None) -> Receipt:
        """Queue the click's job with the member's modal ``value`` (if it asked for one)."""
        try:
            return await self._queue(ctx, click, value)
        except GouacheError as exc:
            self.requests._refused(exc)
            raise

    async def asking_legacy(self, parent_id: str, action: Action, index: int | None) -> int | None:
        """The button number of a V/🔄 click that must ask first (a Remix account), else None.

        Our U/V/🔄 buttons take the short path (`Requests.follow_up`); on a
        result of a Remix account, V and 🔄 go through `check_click` instead,
        so the member is asked for the prompt before anything is sent.
        """
        parent = await self.requests.store.get(parent_id)
        if parent is None or parent.meta.get("remix") is not True:
            return None
        want = {Action.VARIATION: "variation", Action.REROLL: "reroll"}.get(action)
        for number, button in enumerate(buttons_of(parent)):
            if button.kind == want and (want == "reroll" or button.index == index):
                return number
        return None

    async def _check(self, ctx: RequestContext, parent_id: str, number: int) -> Click:
        requests = self.requests
        requests.check_channel(ctx)
        parent = await requests.store.get(parent_id)
        if parent is None:
            raise JobNotFound("That image is no longer known.")
        if parent.state is not JobState.SUCCEEDED:
            raise InvalidParameter("That image is not finished.")
        buttons = buttons_of(parent)
        if not 0 <= number < len(buttons) or buttons[number].is_link:
            raise ClickRefused("That image no longer offers this button.", ErrorCode.BUTTON_GONE)
        button = buttons[number]
        cost = cost_of(button.kind, requests.action_costs)
        _, limit = await requests._standing(ctx)
        quota = await requests.store.quota(ctx.user_id, daily_limit=limit)
        if quota.remaining < cost:
            raise QuotaExceeded(limit=quota.limit, used=quota.used, resets_at=quota.resets_at)
        await self._not_twice(ctx, parent, button)
        worker, running = parent.worker, requests.worker_running
        if worker is not None and running is not None and not await running(worker):
            raise WorkerUnavailable(
                "The worker that made this image is not running right now; try again later."
            )
        ask = _ask(button, parent)
        prefill = zoom_prefill(parent.prompt) if ask == "custom_zoom" else parent.prompt
        return Click(parent, button, number, cost, ask, prefill if ask else "")

    async def _not_twice(self, ctx: RequestContext, parent: Job, button: ResultButton) -> None:
        live = [s for s in JobState if not s.terminal]
        mine = await self.requests.store.list_jobs(user_id=ctx.user_id, states=live, limit=100)
        for job in mine:
            if job.parent_id == parent.id and job.button == button.custom_id:
                raise ClickRefused(
                    "You already pressed that button on this image; it is still running.",
                    ErrorCode.ALREADY_RUNNING,
                )

    async def _queue(self, ctx: RequestContext, click: Click, value: str | None) -> Receipt:
        requests = self.requests
        text: str | None = None
        if click.ask == "custom_zoom":
            text = check_custom_zoom(value or "")
        elif click.ask == "remix":
            text = check_remix_prompt(value or "")
        # Again, at the moment of queueing: a modal may have stayed open for minutes.
        click = await self._check(ctx, click.parent.id, click.number)
        tier, limit = await requests._standing(ctx)
        parent, button = click.parent, click.button
        job = Job(
            user_id=ctx.user_id,
            guild_id=ctx.guild_id,
            channel_id=ctx.channel_id,
            action=Action.BUTTON,
            button=button.custom_id,
            button_kind=button.kind,
            button_input=text,
            prompt=text or parent.prompt,
            params=parent.params,
            parent_id=parent.id,
            index=button.index,
            backend=parent_backend(parent),
            tier=tier.name,
            weight=tier.weight,
            cost=click.cost,
            locale=ctx.locale,
            interaction_token=ctx.interaction_token,
            interaction_at=ctx.interaction_at,
            meta={"parent": parent_ref(parent), **carried_meta(parent.meta)},
        )
        return await requests._enqueue(job, limit)


def parent_ref(parent: Job) -> dict[str, Any]:
    """What a follow-up keeps of its parent (``meta["parent"]``): ids, worker, the result's meta."""
    return {
        "job_id": parent.id,
        "worker": parent.worker,
        "external_id": parent.external_id,
        "results": list(parent.results),
        # Where the result was posted: another process reads the image from there.
        "posted_channel_id": parent.channel_id,
        "posted_message_id": parent.message_id,
        **{k: v for k, v in parent.meta.items() if k not in ("parent", "buttons")},
    }


def parent_backend(parent: Job) -> str | None:
    """The backend kind that made ``parent`` (a click runs on the same kind)."""
    kind = parent.meta.get("backend")
    if isinstance(kind, str):
        return kind
    return parent.backend
