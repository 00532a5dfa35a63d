"""`Intake`: the checks and the translation every new prompt goes through before it is queued.

Order, cheapest first, so that a blocked or flooding member costs nothing:
block → rate limit → length → banned words (original) → translation →
banned words (English). It plugs into `gouache.bot.service.Requests.intake`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Protocol

import aiohttp
import structlog

from gouache.bot.i18n import t
from gouache.errors import PromptRejected, UserBlocked
from gouache.events import EventBus, Subscription
from gouache.intake.limits import RateLimited, RateLimiter
from gouache.intake.moderation import Block, Moderation, StrikeKind
from gouache.intake.settings import IntakeSettings
from gouache.intake.translate import Translator
from gouache.jobs import ErrorCode, JobState
from gouache.params import ParsedPrompt
from gouache.queue.quota import Clock, system_clock
from gouache.storage.base import Store

log = structlog.get_logger(__name__)


class Requester(Protocol):
    """What intake needs to know about who asks (`RequestContext` fits)."""

    @property
    def user_id(self) -> int: ...

    @property
    def locale(self) -> str: ...

    @property
    def is_owner(self) -> bool: ...


def format_duration(locale: str | None, span: timedelta) -> str:
    """``45 s`` / ``12 min`` / ``2 h 5 min`` in the member's language (rounded up)."""
    seconds = max(1, math.ceil(span.total_seconds()))
    if seconds < 60:
        return t(locale, "duration_s", s=seconds)
    minutes = math.ceil(seconds / 60)
    if minutes < 60:
        return t(locale, "duration_min", m=minutes)
    hours, minutes = divmod(minutes, 60)
    if minutes == 0:
        return t(locale, "duration_h", h=hours)
    return t(locale, "duration_h_min", h=hours, m=minutes)


class Intake:
    """Prompt intake for one process: call it with a parsed prompt and the requester.

    Returns the prompt to queue (translated if needed) and the job ``meta`` to
    record (``original_prompt``/``translated_prompt`` as the member typed and as
    the worker gets them, ``translation: "unavailable"`` after a failure).
    Raises `UserBlocked`, `RateLimited` or `PromptRejected` with a message in
    the member's language.
    """

    def __init__(
        self,
        settings: IntakeSettings,
        store: Store,
        *,
        clock: Clock = system_clock,
        monotonic: Callable[[], float] = time.monotonic,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.translator = Translator(settings.translate, session=session, monotonic=monotonic)
        self.moderation = Moderation(settings.moderation, store, clock=clock, monotonic=monotonic)
        self.rate = RateLimiter(
            burst=settings.limits.rate_burst, per_minute=settings.limits.rate_per_minute
        )
        # Told of every block imposed (user id, block): for the owner's log, metrics, tests.
        self.on_block: Callable[[int, Block], None] | None = None
        self._follow_task: asyncio.Task[None] | None = None
        self._sub: Subscription | None = None

    async def start(self) -> None:
        """Load the word list (`ConfigError` if unreadable) and open the HTTP session."""
        self.moderation.load()
        await self.translator.start()

    async def aclose(self) -> None:
        """Stop following the event bus and close the HTTP session; safe to call twice."""
        if self._sub is not None:
            self._sub.close()
            self._sub = None
        if self._follow_task is not None:
            self._follow_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow_task
            self._follow_task = None
        await self.translator.aclose()

    async def __aenter__(self) -> Intake:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the hook ------------------------------------------------------------------

    async def __call__(
        self, parsed: ParsedPrompt, ctx: Requester
    ) -> tuple[ParsedPrompt, dict[str, Any]]:
        """Check, translate and check again; see the class docstring."""
        await self.check_standing(ctx)
        self._check_rate(ctx)
        self._check_length(parsed, ctx)
        await self._screen(parsed, ctx)
        translation = await self.translator.translate(parsed)
        final = translation.prompt
        meta: dict[str, Any] = {}
        if translation.translated:
            await self._screen(final, ctx)
            meta["original_prompt"] = parsed.render()
            meta["translated_prompt"] = final.render()
            log.info("intake.translated", user_id=ctx.user_id, chars=len(parsed.text))
        if translation.failed:
            meta["translation"] = "unavailable"
        return final, meta

    async def check_standing(self, ctx: Requester) -> None:
        """Raise `UserBlocked` while an owner's ban or an automatic block is in force."""
        record = await self.store.get_user(ctx.user_id)
        now = self.clock()
        if record.banned_until is not None and record.banned_until > now:
            raise UserBlocked(t(ctx.locale, "blocked"))
        if record.blocked_until is not None and record.blocked_until > now:
            left = format_duration(ctx.locale, record.blocked_until - now)
            raise UserBlocked(t(ctx.locale, "blocked_for", duration=left))

    def _check_rate(self, ctx: Requester) -> None:
        if ctx.is_owner:
            return
        wait = self.rate.take(ctx.user_id, self.clock().timestamp())
        if wait > 0:
            raise RateLimited(
                t(
                    ctx.locale,
                    "rate_limited",
                    duration=format_duration(ctx.locale, timedelta(seconds=wait)),
                ),
                retry_after_s=wait,
            )

    def _check_length(self, parsed: ParsedPrompt, ctx: Requester) -> None:
        limit = self.settings.limits.max_prompt_chars
        length = len(parsed.render())
        if length > limit:
            raise PromptRejected(
                t(ctx.locale, "prompt_too_long", length=length, limit=limit),
                code=ErrorCode.PROMPT_TOO_LONG,
            )

    async def _screen(self, prompt: ParsedPrompt, ctx: Requester) -> None:
        term = self.moderation.words.find(prompt.text, *prompt.params.no)
        if term is None:
            return
        # The owner's log names the term; the member is only told the prompt was refused.
        log.info("intake.refused", user_id=ctx.user_id, term=term)
        block = await self.moderation.strike(ctx.user_id, StrikeKind.REFUSED)
        if block is not None:
            self._blocked(ctx.user_id, block)
            duration = format_duration(ctx.locale, block.duration)
            raise UserBlocked(
                t(ctx.locale, "prompt_refused_blocked", duration=duration),
                code=ErrorCode.USER_BLOCKED,
            )
        raise PromptRejected(t(ctx.locale, "prompt_refused"), code=ErrorCode.PROMPT_BANNED)

    # -- results from the workers ------------------------------------------------------

    async def record_banned(self, user_id: int) -> Block | None:
        """Count a "Banned prompt detected" result against ``user_id``; the block it caused, if any."""
        log.info("intake.banned_result", user_id=user_id)
        block = await self.moderation.strike(user_id, StrikeKind.BANNED_RESULT)
        if block is not None:
            self._blocked(user_id, block)
        return block

    def _blocked(self, user_id: int, block: Block) -> None:
        if self.on_block is not None:
            self.on_block(user_id, block)

    def follow(self, bus: EventBus) -> None:
        """Watch the bus for jobs that failed as banned prompts and count them (until `aclose`)."""
        if self._follow_task is not None:
            raise RuntimeError("intake already follows an event bus")
        self._sub = bus.subscribe(lambda e: e.final and e.state is JobState.FAILED)
        self._follow_task = asyncio.create_task(self._follow(self._sub), name="intake-follow")

    async def _follow(self, sub: Subscription) -> None:
        async for event in sub:
            try:
                job = await self.store.get(event.job_id)
                if job is not None and job.error_code == ErrorCode.BANNED_PROMPT:
                    await self.record_banned(job.user_id)
            except Exception:
                # A store hiccup must not end the watch; the next failure is counted again.
                log.exception("intake.follow_failed", job_id=event.job_id)
