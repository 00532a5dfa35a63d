"""What the slash commands and buttons do, without Discord: validate, reserve, enqueue, cancel.

The discord.py layer (`gouache.bot.client`) only translates interactions into
calls here and results into messages, so every rule is tested directly.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from gouache.bot import image_requests as img
from gouache.bot.i18n import t
from gouache.bot.permissions import ChannelProblems, missing_permissions
from gouache.errors import (
    ErrorCode,
    GouacheError,
    InvalidParameter,
    JobNotFound,
    UserBlocked,
    WorkerUnavailable,
)
from gouache.images.check import ImageRejected
from gouache.images.inputs import InputImages, Source
from gouache.jobs import Action, InputImage, Job, JobState
from gouache.params import ParsedPrompt, parse_aspect, parse_prompt
from gouache.queue.quota import Clock, QuotaPolicy, QuotaStatus, system_clock
from gouache.storage.base import Store

if TYPE_CHECKING:
    from gouache.channels.rules import ChannelRules

#: Job meta flag: the member never saw the reply (see `Requests.unanswered`).
UNANSWERED = "unanswered"


class Canceller(Protocol):
    """Cancels a job wherever it is (the dispatcher's `cancel`)."""

    async def __call__(self, job_id: str, *, reason: str = ...) -> Job: ...


EtaFn = Callable[[int, "str | None"], float]
# An intake hook returns the prompt to queue, optionally with job meta to record
# (gouache.intake.Intake returns the original and English prompts that way).
IntakeResult = ParsedPrompt | tuple[ParsedPrompt, dict[str, Any]]
Intake = Callable[[ParsedPrompt, "RequestContext"], Awaitable[IntakeResult]]


class NotYourJob(GouacheError):
    """A member tried to cancel someone else's job."""

    code = ErrorCode.NOT_YOUR_JOB


class MissingPermissions(GouacheError):
    """gouache cannot deliver in this channel; ``missing`` names the Discord permissions."""

    code = ErrorCode.MISSING_PERMISSIONS

    def __init__(self, message: str, missing: tuple[str, ...]) -> None:
        super().__init__(message)
        self.missing = missing


@dataclass(frozen=True, slots=True)
class Tier:
    """A class of members: scheduling weight and daily limit, granted by Discord roles."""

    name: str
    weight: float = 1.0
    daily_limit: int | None = None
    role_ids: frozenset[int] = frozenset()
    #: Which backends and models the tier may use (None: any), and the Midjourney speed.
    backends: frozenset[str] | None = None
    models: frozenset[str] | None = None
    midjourney_mode: str | None = None


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who asks, and where the answer goes."""

    user_id: int
    role_ids: frozenset[int] = frozenset()
    guild_id: int | None = None
    channel_id: int | None = None
    locale: str = "en-US"
    interaction_token: str | None = None
    interaction_at: datetime | None = None
    is_owner: bool = False
    #: The bot's computed permission bits in the channel (the interaction's ``app_permissions``).
    app_permissions: int | None = None
    #: Discord marks the channel NSFW (adult prompts are allowed there by default).
    nsfw: bool = False
    #: The most an attachment may weigh here (the interaction's ``attachment_size_limit``).
    attachment_size_limit: int | None = None


@dataclass(frozen=True, slots=True)
class Receipt:
    """The answer to an accepted request."""

    job: Job
    position: int
    eta_s: float
    quota: QuotaStatus


@dataclass
class Requests:
    """The request rules of one deployment."""

    store: Store
    policy: QuotaPolicy
    tiers: list[Tier] = field(default_factory=lambda: [Tier("default")])
    default_tier: str = "default"
    max_queued: int | None = 50
    prompt_max_length: int = 1500
    backends: Callable[[], Collection[str]] = lambda: ()
    eta: EtaFn = lambda position, backend: 60.0 * (position + 1)
    cancel_job: Canceller | None = None
    intake: Intake | None = None
    clock: Clock = system_clock
    # Told the error code of every refused request (the admin metrics count them).
    on_refused: Callable[[str], None] | None = None
    # With many processes: whether some process runs this worker now (its lease is
    # held). A follow-up must run on its parent's worker, so it is refused at once,
    # before its quota is taken, rather than left waiting for a worker nobody runs.
    worker_running: Callable[[str], Awaitable[bool]] | None = None
    # Channels where gouache cannot deliver (the owner is told once, `pool status` lists them).
    channel_problems: ChannelProblems | None = None
    # What a click on a result's button costs, by kind (`gouache.actions`, [queue.action_costs]).
    action_costs: Mapping[str, int] = field(default_factory=dict)
    # Channel settings, member preferences, content rules and model choice.
    channels: ChannelRules | None = None
    # Takes in members' images (fetch, check, store); None: the bot takes no images.
    images: InputImages | None = None

    def _refused(self, exc: GouacheError) -> None:
        if self.on_refused is not None:
            self.on_refused(exc.code)

    def check_channel(self, ctx: RequestContext) -> None:
        """Refuse at once where gouache could not deliver the result (nothing is reserved yet)."""
        if ctx.channel_id is None:
            return
        missing = missing_permissions(ctx.app_permissions)
        problems = self.channel_problems
        if not missing:
            if problems is not None:
                problems.resolve(ctx.channel_id)
            return
        if problems is not None:
            problems.record(ctx.guild_id, ctx.channel_id, missing)
        raise MissingPermissions(
            t(ctx.locale, "missing_permission", perms=", ".join(missing)), missing
        )

    # -- tiers and limits ----------------------------------------------------

    def tier_for(self, role_ids: Iterable[int], override: str | None = None) -> Tier:
        """The member's tier: an owner override, else the heaviest tier one of their roles grants."""
        by_name = {t.name: t for t in self.tiers}
        if override and override in by_name:
            return by_name[override]
        roles = set(role_ids)
        granted = [t for t in self.tiers if t.role_ids & roles]
        if granted:
            return max(granted, key=lambda t: t.weight)
        return by_name.get(self.default_tier) or Tier(self.default_tier)

    async def _standing(self, ctx: RequestContext) -> tuple[Tier, int]:
        user = await self.store.get_user(ctx.user_id)
        if user.banned(self.clock()):
            raise UserBlocked("You cannot request images right now.")
        tier = self.tier_for(ctx.role_ids, user.tier)
        limit = self.policy.limit_for(tier_limit=tier.daily_limit, user_limit=user.daily_limit)
        return tier, limit

    async def quota(self, ctx: RequestContext) -> QuotaStatus:
        """The member's quota today."""
        user = await self.store.get_user(ctx.user_id)
        tier = self.tier_for(ctx.role_ids, user.tier)
        limit = self.policy.limit_for(tier_limit=tier.daily_limit, user_limit=user.daily_limit)
        return await self.store.quota(ctx.user_id, daily_limit=limit)

    # -- requests --------------------------------------------------------------

    def parse(
        self,
        prompt: str,
        *,
        aspect: str | None = None,
        negative: str | None = None,
        seed: int | None = None,
    ) -> ParsedPrompt:
        """Parse the prompt and fold the command's options into its parameters."""
        parsed = parse_prompt(prompt, max_length=self.prompt_max_length)
        updates: dict[str, Any] = {}
        if aspect is not None:
            if parsed.params.aspect is not None:
                raise InvalidParameter("The aspect ratio is given twice (option and --ar).")
            updates["aspect"] = parse_aspect(aspect, name="aspect")
        if negative is not None and negative.strip():
            if parsed.params.no:
                raise InvalidParameter("Things to leave out are given twice (option and --no).")
            updates["no"] = tuple(w.strip() for w in negative.split(",") if w.strip())
        if seed is not None:
            if parsed.params.seed is not None:
                raise InvalidParameter("The seed is given twice (option and --seed).")
            parse_prompt(f"x --seed {seed}")  # same range check as in the prompt
            updates["seed"] = seed
        if updates:
            parsed = parsed.model_copy(update={"params": parsed.params.model_copy(update=updates)})
        return parsed

    async def imagine(  # noqa: PLR0913
        self,
        ctx: RequestContext,
        prompt: str,
        *,
        aspect: str | None = None,
        backend: str | None = None,
        negative: str | None = None,
        seed: int | None = None,
        model: str | None = None,
        images: Sequence[Source] = (),
    ) -> Receipt:
        """Validate a new request (its images too), reserve quota and queue it."""
        try:
            return await self._imagine(
                ctx,
                prompt,
                aspect=aspect,
                backend=backend,
                negative=negative,
                seed=seed,
                model=model,
                images=images,
            )
        except GouacheError as exc:
            self._refused(exc)
            raise

    async def _imagine(  # noqa: PLR0913
        self,
        ctx: RequestContext,
        prompt: str,
        *,
        aspect: str | None,
        backend: str | None,
        negative: str | None,
        seed: int | None,
        images: Sequence[Source],
        model: str | None = None,
    ) -> Receipt:
        self.check_channel(ctx)
        rules = self.channels
        settings = await rules.admit(ctx.channel_id) if rules is not None else None
        prompt, sources = img.gather_sources(prompt, images, takes_images=self.images is not None)
        parsed = self.parse(prompt, aspect=aspect, negative=negative, seed=seed)
        img.check_weights(parsed.params, sources)
        if backend is not None and backend not in self.backends():
            available = ", ".join(sorted(self.backends())) or "none"
            raise InvalidParameter(f"Unknown backend {backend!r}; available: {available}.")
        meta: dict[str, Any] = {}
        if self.intake is not None:
            original = parsed
            admitted = await self.intake(parsed, ctx)
            parsed, extra = admitted if isinstance(admitted, tuple) else (admitted, {})
            if parsed.text != original.text:
                meta["original_prompt"] = original.text
                meta["translated_prompt"] = parsed.text
            meta.update(extra)
        tier, limit = await self._standing(ctx)
        cap: int | None = None
        if rules is not None and settings is not None:
            spoiler = rules.check_content(settings, {prompt, parsed.text}, nsfw=ctx.nsfw)
            placed = await rules.place(
                settings, parsed, user_id=ctx.user_id, model=model, backend=backend, tier=tier
            )
            parsed = parsed.model_copy(update={"params": placed.params})
            backend, cap = placed.backend, placed.channel_cap
            meta.update(placed.meta)
            if spoiler:
                meta["spoiler"] = True
        inputs = await self._take_images(ctx, sources)
        job = Job(
            user_id=ctx.user_id,
            guild_id=ctx.guild_id,
            channel_id=ctx.channel_id,
            action=Action.IMAGINE,
            prompt=parsed.text,
            params=parsed.params,
            backend=backend,
            tier=tier.name,
            weight=tier.weight,
            locale=ctx.locale,
            interaction_token=ctx.interaction_token,
            interaction_at=ctx.interaction_at,
            meta=meta,
            input_images=inputs,
        )
        return await self._enqueue(job, limit, cap)

    async def _take_images(
        self, ctx: RequestContext, sources: Sequence[Source]
    ) -> list[InputImage]:
        if not sources:
            return []
        if self.images is None:
            raise ImageRejected("This bot does not take images.")
        return await self.images.take(sources, max_bytes=ctx.attachment_size_limit)

    async def blend(
        self, ctx: RequestContext, images: Sequence[Source], shape: img.Shape, backend: str | None
    ) -> Receipt:
        """/blend: 2-5 images into one of a shape."""
        img.check_blend_count(len(images))
        parsed = self.parse(
            f"blend of {len(images)} images --ar {shape.aspect[0]}:{shape.aspect[1]}"
        )
        return await self._image_job(ctx, Action.BLEND, parsed, images, backend)

    async def describe(
        self, ctx: RequestContext, image: Source, backend: str | None = None
    ) -> Receipt:
        """/describe: four prompts for one image."""
        return await self._image_job(ctx, Action.DESCRIBE, self.parse("describe"), [image], backend)

    async def _image_job(
        self,
        ctx: RequestContext,
        action: Action,
        parsed: ParsedPrompt,
        images: Sequence[Source],
        backend: str | None,
    ) -> Receipt:
        try:
            self.check_channel(ctx)
            rules = self.channels
            settings = await rules.admit(ctx.channel_id) if rules is not None else None
            if backend is not None and backend not in self.backends():
                raise InvalidParameter(f"Unknown backend {backend!r}.")
            tier, limit = await self._standing(ctx)
            job = Job(
                user_id=ctx.user_id,
                guild_id=ctx.guild_id,
                channel_id=ctx.channel_id,
                action=action,
                prompt=parsed.text,
                params=parsed.params,
                backend=backend,
                tier=tier.name,
                weight=tier.weight,
                locale=ctx.locale,
                interaction_token=ctx.interaction_token,
                interaction_at=ctx.interaction_at,
                input_images=await self._take_images(ctx, images),
            )
            return await self._enqueue(job, limit, settings.daily_cap if settings else None)
        except GouacheError as exc:
            self._refused(exc)
            raise

    async def imagine_described(
        self, ctx: RequestContext, describe_id: str, index: int, *, first: bool = True
    ) -> Receipt:
        """A /describe result's button: imagine its prompt ``index`` (charged as any /imagine)."""
        job = await self.store.get(describe_id)
        if job is None:
            raise JobNotFound("That description is no longer known.")
        prompt = img.described_prompt(job, index)
        if first:
            return await self.imagine(ctx, prompt)
        # "Imagine all": the later ones are posted in the channel, not as the reply.
        return await self.imagine(
            RequestContext(**{**_fields(ctx), "interaction_token": None, "interaction_at": None}),
            prompt,
        )

    async def follow_up(
        self, ctx: RequestContext, parent_id: str, action: Action, index: int | None
    ) -> Receipt:
        """Queue an upscale, variation or re-roll of a finished job (the clicker pays)."""
        try:
            return await self._follow_up(ctx, parent_id, action, index)
        except GouacheError as exc:
            self._refused(exc)
            raise

    async def _follow_up(
        self, ctx: RequestContext, parent_id: str, action: Action, index: int | None
    ) -> Receipt:
        self.check_channel(ctx)
        rules = self.channels
        settings = await rules.admit(ctx.channel_id) if rules is not None else None
        parent = await self.store.get(parent_id)
        if parent is None:
            raise JobNotFound("That image is no longer known.")
        if parent.state is not JobState.SUCCEEDED:
            raise InvalidParameter("That image is not finished.")
        if action in (Action.UPSCALE, Action.VARIATION) and not (index and 1 <= index <= 4):
            raise InvalidParameter("Pick one of the four images (1–4).")
        tier, limit = await self._standing(ctx)
        parent_ref = {
            "job_id": parent.id,
            "worker": parent.worker,
            "external_id": parent.external_id,
            **{k: v for k, v in parent.meta.items() if k != "parent"},
        }
        job = Job(
            user_id=ctx.user_id,
            guild_id=ctx.guild_id,
            channel_id=ctx.channel_id,
            action=action,
            prompt=parent.prompt,
            params=parent.params,
            parent_id=parent.id,
            index=index,
            tier=tier.name,
            weight=tier.weight,
            locale=ctx.locale,
            interaction_token=ctx.interaction_token,
            interaction_at=ctx.interaction_at,
            meta={"parent": parent_ref, **_carried(parent.meta)},
        )
        pinned, running = job.pinned_worker, self.worker_running
        if pinned is not None and running is not None and not await running(pinned):
            raise WorkerUnavailable(
                "The account that made this image is not running right now; try again later."
            )
        return await self._enqueue(job, limit, settings.daily_cap if settings else None)

    async def _enqueue(self, job: Job, limit: int, channel_cap: int | None = None) -> Receipt:
        result = await self.store.enqueue(
            job, daily_limit=limit, max_queued=self.max_queued, channel_cap=channel_cap
        )
        eta = self.eta(result.position, job.backend)
        return Receipt(job=result.job, position=result.position, eta_s=eta, quota=result.quota)

    async def cancel(self, ctx: RequestContext, job_id: str) -> Job:
        """Cancel a job: members their own, owners any. A finished job is returned as it is."""
        job = await self.store.get(job_id)
        if job is None:
            raise JobNotFound("No such job.")
        if job.user_id != ctx.user_id and not ctx.is_owner:
            raise NotYourJob("You can only cancel your own jobs.")
        if job.state.terminal:
            return job
        if self.cancel_job is not None:
            return await self.cancel_job(job_id)
        return await self.store.cancel(job_id)

    async def unanswered(self, job_id: str) -> Job:
        """The member never saw the job's reply: see `withdraw_unanswered`."""
        return await withdraw_unanswered(self.store, job_id, self.cancel_job)

    async def pending(self, ctx: RequestContext) -> list[tuple[Job, int | None]]:
        """The member's waiting and running jobs, with queue positions."""
        live = [s for s in JobState if not s.terminal]
        jobs = await self.store.list_jobs(user_id=ctx.user_id, states=live, limit=100)
        return [(j, await self.store.position(j.id)) for j in jobs]

    async def history(self, ctx: RequestContext, limit: int = 10) -> list[Job]:
        """The member's latest finished images."""
        return await self.store.list_jobs(
            user_id=ctx.user_id, states=[JobState.SUCCEEDED], limit=limit
        )

    async def latest_cancellable(self, ctx: RequestContext) -> Job | None:
        """The member's most recent job that can still be cancelled."""
        pending = await self.pending(ctx)
        return pending[0][0] if pending else None


def _carried(meta: dict[str, Any]) -> dict[str, Any]:
    """What a follow-up keeps of its parent's meta: spoiler posting and the ComfyUI model choice."""
    keep = ("spoiler", "mj_mode", "mj_app", "workflow", "checkpoint", "loras", "comfy_servers")
    return {k: meta[k] for k in keep if k in meta}


def _fields(ctx: RequestContext) -> dict[str, Any]:
    return {name: getattr(ctx, name) for name in RequestContext.__slots__}


async def withdraw_unanswered(
    store: Store, job_id: str, cancel: Callable[..., Awaitable[Job]] | None
) -> Job:
    """The member never saw the job's reply: forget its interaction and withdraw it.

    A job still under way is cancelled and refunded (`UNANSWERED` in its meta
    tells delivery to show nothing); one that already succeeded stays, and is
    posted in its channel instead of the reply that never came. Doing it twice
    (the answering process and a delivery that found no reply) changes nothing more.
    """
    job = await store.get(job_id)
    if job is None:
        raise JobNotFound("No such job.")
    await store.update(
        job_id,
        interaction_token=None,
        interaction_at=None,
        meta={**job.meta, UNANSWERED: True},
    )
    reason = "The request could not be confirmed on Discord; it was not charged."
    if cancel is not None:
        return await cancel(job_id, reason=reason)
    return await store.cancel(job_id, reason=reason)
