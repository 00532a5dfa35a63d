"""Delivery: keep each job's message up to date within Discord's rate limits.

One live message per job, edited as `JobEvent`s arrive:

* coalesced — events only mark a job *dirty*; the edit renders the job as the
  store has it at that moment, so the latest state always wins;
* at most one edit per message per ``per_message_s`` (≈ 1 s), final states
  first in line;
* all edits share a token bucket below Discord's global 50 requests/s;
* the interaction token lives 15 minutes: until shortly before that the
  message is edited through the interaction webhook, after it through the
  channel endpoint with the bot token (and on a 401/404 from the webhook too);
* the final image comes from our image store and is uploaded as an
  attachment, never linked from a CDN URL that will expire;
* a route Discord refuses (403: a permission was taken away mid-job, or the
  @everyone role lost Attach Files, which interaction webhooks go by) is
  replaced by the other one; when neither can deliver, a job still under
  way is cancelled (refunded); a finished one is sent to its member in a
  direct message, and the member is told through an ephemeral follow-up while
  the token lives, else in plain text in the channel; the channel is listed
  for the owner (`ChannelProblems`);
* queued jobs' positions and ETAs are refreshed when the queue moves, at most
  every ``position_refresh_s`` per message;
* a failed edit is tried again, backing off (``retries`` times, at most
  ``retry_max_s`` apart);
* a final edit that was never made (the process died between the store's
  transition and the edit, or the edit failed) is made later: each job's
  message records the final state it shows (``meta["shown"]``), and every
  ``catch_up_s`` delivery looks for recently finished jobs whose message does
  not show their end yet — after a restart, or for a process that died for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import io
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

import discord
import structlog

from gouache.bot.i18n import t
from gouache.bot.permissions import ChannelProblems, missing_permissions
from gouache.bot.render import LiveInfo, job_embed
from gouache.bot.service import UNANSWERED, withdraw_unanswered
from gouache.bot.views import progress_view, result_view
from gouache.channels.spoiler import spoiler_prefix
from gouache.errors import ErrorCode, GouacheError
from gouache.events import EventBus, Subscription
from gouache.jobs import TERMINAL_STATES, Job, JobEvent, JobEventKind, JobState, utcnow
from gouache.storage.base import Store
from gouache.storage.images import ImageStore, sniff_extension

log = structlog.get_logger(__name__)

TOKEN_LIFE = timedelta(minutes=15)
TOKEN_MARGIN = timedelta(seconds=30)
#: Discord takes an interaction's first answer within 3 s of its creation; past this
#: (with room for clocks that disagree), a reply that is not there will never come.
REPLY_DEADLINE = timedelta(seconds=3) + timedelta(seconds=12)
#: The meta key naming the final state a job's message shows.
SHOWN = "shown"


@dataclass
class Edit:
    """One edit to make: what the message should look like now."""

    job: Job
    embed: discord.Embed
    files: list[discord.File]
    view: discord.ui.View | None
    via_webhook: bool


class Sender(Protocol):
    """Makes the REST calls (discord.py in production)."""

    async def edit(self, edit: Edit) -> int | None:
        """Apply ``edit``; return the message id if a new message had to be sent."""

    async def tell(self, job: Job, text: str, *, via_webhook: bool) -> bool:
        """Say ``text`` to the job's member without files or embeds; whether it got through."""

    async def direct(self, edit: Edit, note: str) -> bool:
        """Send the job's card and image to its member in a direct message; whether it arrived."""


class TokenExpired(GouacheError):
    """The interaction webhook refused the token (Discord 401 50027 / 404)."""

    code = ErrorCode.INTERACTION_TOKEN_EXPIRED


class Refused(GouacheError):
    """Discord refused a route for lack of permissions (403, or embeds silently dropped)."""

    code = ErrorCode.MISSING_PERMISSIONS

    def __init__(self, missing: tuple[str, ...], route: str) -> None:
        super().__init__(f"{route}: missing {', '.join(missing) or 'permissions'}")
        self.missing = missing
        self.route = route


Canceller = Callable[..., Awaitable[Job]]


class TokenBucket:
    """``rate`` operations per second with bursts of ``burst``."""

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._clock = clock
        self._last = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now

    async def acquire(self) -> None:
        """Wait until one operation is allowed."""
        async with self._lock:
            self._refill()
            while self._tokens < 1:
                await asyncio.sleep((1 - self._tokens) / self.rate)
                self._refill()
            self._tokens -= 1


@dataclass(order=True)
class _Due:
    priority: int
    due: float
    seq: int
    job_id: str = field(compare=False)


class Delivery:
    """Turns the event stream into message edits (see module docstring)."""

    def __init__(  # noqa: PLR0913
        self,
        store: Store,
        images: ImageStore,
        bus: EventBus,
        sender: Sender,
        *,
        eta: Callable[[int, str | None], float] | None = None,
        per_message_s: float = 1.0,
        position_refresh_s: float = 10.0,
        edits_per_s: float = 25.0,
        senders: int = 4,
        retries: int = 8,
        retry_max_s: float = 60.0,
        catch_up_s: float = 15.0,
        catch_up_after_s: float = 10.0,
        catch_up_within: timedelta = timedelta(hours=1),
        catch_up_limit: int = 500,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = utcnow,
        cancel: Canceller | None = None,
        problems: ChannelProblems | None = None,
    ) -> None:
        self.store = store
        self.cancel = cancel
        self.problems = problems
        self._told: set[str] = set()
        self.images = images
        self.bus = bus
        self.sender = sender
        self.eta = eta
        self.per_message_s = per_message_s
        self.position_refresh_s = position_refresh_s
        self.budget = TokenBucket(edits_per_s, burst=max(1.0, edits_per_s / 2), clock=clock)
        self.senders = senders
        self.retries = retries
        self.retry_max_s = retry_max_s
        self.catch_up_s = catch_up_s
        self.catch_up_after = timedelta(seconds=catch_up_after_s)
        self.catch_up_within = catch_up_within
        self.catch_up_limit = catch_up_limit
        self.clock = clock
        self.now = now
        self._heap: list[_Due] = []
        self._scheduled: dict[str, _Due] = {}
        self._last_edit: dict[str, float] = {}
        self._previews: dict[str, bytes] = {}
        self._waiting_note: set[str] = set()
        self._queued: set[str] = set()
        self._in_edit: set[str] = set()
        self._tries: dict[str, int] = {}  # failed edits in a row, per job
        # Messages posted whose id the store may not have yet (its write failed):
        # the next try edits them instead of posting a second copy.
        self._posted: dict[str, int] = {}
        self._retry_after: dict[str, tuple[float, bool]] = {}
        self._seq = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()  # set after every edit, for flush()
        self._tasks: list[asyncio.Task[None]] = []
        self._sub: Subscription | None = None
        self.edits = 0
        self.failures = 0
        self.refusals = 0

    async def start(self) -> None:
        """Subscribe to the bus and start the senders."""
        self._sub = self.bus.subscribe(size=100_000)
        self._tasks = [asyncio.create_task(self._listen(self._sub), name="delivery-listen")]
        self._tasks += [
            asyncio.create_task(self._send_loop(), name=f"delivery-{i}")
            for i in range(self.senders)
        ]
        self._tasks.append(asyncio.create_task(self._catch_up_loop(), name="delivery-catch-up"))

    async def flush(self, timeout: float) -> bool:
        """Wait until nothing is waiting to be edited (True) or ``timeout`` passes."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self._scheduled or self._in_edit:
                    self._idle.clear()
                    self._wake.set()
                    await self._idle.wait()
                return True
        return False

    async def aclose(self) -> None:
        """Stop the senders (pending edits are dropped; the store still has the state)."""
        if self._sub is not None:
            self._sub.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    # -- marking jobs dirty ----------------------------------------------------

    def track(self, job_id: str) -> None:
        """A job's message exists and the job is queued: keep its position fresh."""
        self._queued.add(job_id)

    def mark(
        self, job_id: str, *, final: bool = False, soon: bool = False, after: float = 0.0
    ) -> None:
        """Schedule an edit of ``job_id``'s message (coalesced with any pending one)."""
        now = self.clock()
        if after > 0:
            due = now + after
        elif soon:
            due = now
        else:
            interval = (
                self.position_refresh_s
                if job_id in self._queued and not final
                else self.per_message_s
            )
            due = max(
                now, self._last_edit.get(job_id, -1e9) + (self.per_message_s if final else interval)
            )
        priority = 0 if final else 1
        old = self._scheduled.get(job_id)
        if old is not None and (old.priority, old.due) <= (priority, due):
            return
        self._seq += 1
        item = _Due(priority, due, self._seq, job_id)
        self._scheduled[job_id] = item
        heapq.heappush(self._heap, item)
        self._wake.set()

    def _on_event(self, event: JobEvent) -> None:
        if event.preview is not None:
            self._previews[event.job_id] = event.preview
        if event.kind is JobEventKind.POSITION and event.message:
            self._waiting_note.add(event.job_id)
        if event.kind is JobEventKind.PROGRESS:
            # Work is under way (`track` may have come after the job left the queue).
            self._queued.discard(event.job_id)
        if event.kind is JobEventKind.STATE:
            if event.state in (JobState.QUEUED, JobState.SUBMITTED):
                # A new attempt (a retry goes back to QUEUED): the last one's preview
                # is not a picture of this one.
                self._previews.pop(event.job_id, None)
            if event.state is JobState.QUEUED:
                self._queued.add(event.job_id)
            else:
                self._queued.discard(event.job_id)
            if event.state is JobState.SUBMITTED:
                # The queue moved: everyone still waiting has a new position.
                for job_id in list(self._queued):
                    self.mark(job_id)
            if event.state is JobState.RUNNING:
                self._waiting_note.discard(event.job_id)
        self.mark(event.job_id, final=event.final)

    async def catch_up(self) -> int:
        """Schedule the final edit of recently finished jobs whose message does not show it.

        A job is left alone for ``catch_up_after_s`` after it finished (the
        process running it is still editing), and past ``catch_up_within``
        (old history). Returns how many were scheduled.
        """
        now = self.now()
        jobs = await self.store.list_jobs(states=TERMINAL_STATES, limit=self.catch_up_limit)
        due = 0
        for job in jobs:
            finished = job.finished_at or job.updated_at
            if (
                job.meta.get(SHOWN) == job.state.value
                or not now - self.catch_up_within <= finished <= now - self.catch_up_after
                or job.id in self._scheduled
                or job.id in self._in_edit
            ):
                continue
            if job.meta.get(UNANSWERED):
                if job.state is not JobState.SUCCEEDED:
                    continue  # withdrawn: nothing to show
                # Its reply never came: the image is posted in the channel (see `_edit`).
            elif job.message_id is None and not self._token_alive(job):
                continue  # no message to edit: a new one could be a second copy
            log.info("delivery.catch_up", job_id=job.id, state=job.state.value)
            self.mark(job.id, final=True, soon=True)
            due += 1
        return due

    async def _catch_up_loop(self) -> None:
        while True:
            try:
                await self.catch_up()
            except Exception as exc:  # the store is away: try again at the next round
                log.warning("delivery.catch_up_failed", error=str(exc))
            await asyncio.sleep(self.catch_up_s)

    async def _listen(self, sub: Subscription) -> None:
        async for event in sub:
            self._on_event(event)

    # -- sending -----------------------------------------------------------------

    def _next_due(self) -> tuple[_Due | None, float]:
        while self._heap:
            head = self._heap[0]
            if self._scheduled.get(head.job_id) is not head:
                heapq.heappop(self._heap)
                continue
            if head.job_id in self._in_edit:
                # Another sender is editing this message; look again after it.
                return None, self.per_message_s
            earliest = self._last_edit.get(head.job_id, -1e9) + self.per_message_s
            if head.due < earliest:
                # Marked while its previous edit was under way: keep the spacing.
                heapq.heappop(self._heap)
                self._seq += 1
                later = _Due(head.priority, earliest, self._seq, head.job_id)
                self._scheduled[head.job_id] = later
                heapq.heappush(self._heap, later)
                continue
            wait = head.due - self.clock()
            if wait > 0:
                return None, wait
            heapq.heappop(self._heap)
            del self._scheduled[head.job_id]
            return head, 0.0
        return None, 3600.0

    async def _send_loop(self) -> None:
        while True:
            item, wait = self._next_due()
            if item is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                continue
            self._in_edit.add(item.job_id)
            try:
                await self.budget.acquire()
                await self._edit(item.job_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                # Discord (5xx, 429s beyond discord.py's own retries) or the store was
                # away: try again later, so a message never stays on a stale state.
                tries = self._tries[item.job_id] = self._tries.get(item.job_id, 0) + 1
                again = tries <= self.retries
                log.warning("delivery.edit_failed", job_id=item.job_id, error=str(exc), retry=again)
                if not again:
                    self._tries.pop(item.job_id, None)
                else:
                    self._retry_after[item.job_id] = (
                        min(self.retry_max_s, self.per_message_s * 2**tries),
                        item.priority == 0,
                    )
            else:
                self._tries.pop(item.job_id, None)
            finally:
                self._in_edit.discard(item.job_id)
                self._last_edit[item.job_id] = self.clock()
                retry = self._retry_after.pop(item.job_id, None)
                if retry is not None:
                    self.mark(item.job_id, final=retry[1], after=retry[0])
                self._wake.set()
                self._idle.set()

    async def render(self, job: Job) -> Edit:
        """What ``job``'s message should look like now."""
        files: list[discord.File] = []
        info = LiveInfo(waiting_note=job.id in self._waiting_note)
        if job.state is JobState.QUEUED:
            position = await self.store.position(job.id)
            eta = self.eta(position, job.backend) if (self.eta and position is not None) else None
            info = LiveInfo(position=position, eta_s=eta)
        elif job.state is JobState.SUCCEEDED and job.results:
            data = await self.images.get(job.results[0])
            name = f"{spoiler_prefix(job)}{job.id[:12]}.{sniff_extension(data)}"
            files.append(discord.File(io.BytesIO(data), filename=name))
            # A spoiler stays out of the embed, where Discord would show it unblurred.
            info = LiveInfo(result_name=None if spoiler_prefix(job) else name)
        elif not job.state.terminal and job.id in self._previews:
            data = self._previews[job.id]
            name = f"{spoiler_prefix(job)}preview.{sniff_extension(data)}"
            files.append(discord.File(io.BytesIO(data), filename=name))
            info = LiveInfo(
                preview_name=None if spoiler_prefix(job) else name, waiting_note=info.waiting_note
            )
        view: discord.ui.View | None
        if job.state is JobState.SUCCEEDED:
            view = result_view(job)
        elif job.state.terminal:
            view = None
        else:
            view = progress_view(job)
        return Edit(
            job=job,
            embed=job_embed(job, info),
            files=files,
            view=view,
            via_webhook=self._token_alive(job),
        )

    def _token_alive(self, job: Job) -> bool:
        if not job.interaction_token or job.interaction_at is None:
            return False
        return self.now() < job.interaction_at + TOKEN_LIFE - TOKEN_MARGIN

    async def _edit(self, job_id: str) -> None:
        job = await self.store.get(job_id)
        if job is None:
            return
        if job.message_id is None and job_id in self._posted:
            job = job.model_copy(update={"message_id": self._posted[job_id]})
        if job.message_id is None and not job.interaction_token and job.channel_id is None:
            return  # nowhere to show it (a job made by an API call, say)
        if job.meta.get(UNANSWERED) and job.state is not JobState.SUCCEEDED:
            return  # the member was told the request failed; it was withdrawn
        routes = [True, False] if self._token_alive(job) else [False]
        refused: Refused | None = None
        for via_webhook in routes:
            edit = await self.render(job)  # files are single-use streams: render per attempt
            edit.via_webhook = via_webhook
            try:
                new_id = await self.sender.edit(edit)
            except TokenExpired:
                if job.message_id is None and self._token_alive(job):
                    if self._reply_overdue(job):
                        await self._never_answered(job)
                        return
                    # The reply is not there yet: another process (a bot shard) is still
                    # answering the interaction while this one already runs the job.
                    log.info("delivery.reply_not_yet", job_id=job.id)
                    self._last_edit[job.id] = self.clock()  # try again one spacing later
                    self.mark(job.id, final=job.state.terminal)
                    return
                log.info("delivery.token_expired", job_id=job.id)
                continue
            except Refused as exc:
                self.refusals += 1
                log.warning(
                    "delivery.refused", job_id=job.id, route=exc.route, missing=list(exc.missing)
                )
                refused = exc
                continue
            await self._shown(job, new_id)
            return
        if refused is not None:
            await self._undeliverable(job, refused)

    def _reply_overdue(self, job: Job) -> bool:
        return job.interaction_at is not None and self.now() > job.interaction_at + REPLY_DEADLINE

    async def _never_answered(self, job: Job) -> None:
        """Discord's answer window closed without a reply (the answering process died
        before its callback): the member saw "This interaction failed". Withdraw the job
        as the answering process would have; a finished one is posted in the channel."""
        log.warning("delivery.never_answered", job_id=job.id, state=job.state.value)
        await withdraw_unanswered(self.store, job.id, self.cancel)
        self.mark(job.id, final=True, soon=True)

    async def _shown(self, job: Job, new_id: int | None) -> None:
        """An edit showing ``job`` went out: record its message and the end it shows."""
        self.edits += 1
        changes: dict[str, Any] = {}
        new_id = new_id if new_id is not None else self._posted.get(job.id)
        if new_id is not None:
            self._posted[job.id] = new_id  # until the store has it
            changes["message_id"] = new_id
        if job.state.terminal and job.meta.get(SHOWN) != job.state.value:
            changes["meta"] = {**job.meta, SHOWN: job.state.value}
        if changes:
            await self.store.update(job.id, **changes)
        self._posted.pop(job.id, None)
        if job.state.terminal:
            self._forget(job.id)
            return
        # Another process may have shown the job's end while this edit was on its way
        # (with several processes, the one that answered and the one that runs it both
        # edit): if the job has ended meanwhile, show the end again, last.
        fresh = await self.store.get(job.id)
        if fresh is not None and fresh.state.terminal:
            self.mark(job.id, final=True, soon=True)

    def _forget(self, job_id: str) -> None:
        self._posted.pop(job_id, None)
        self._previews.pop(job_id, None)
        self._waiting_note.discard(job_id)
        self._queued.discard(job_id)
        self._last_edit.pop(job_id, None)

    async def _undeliverable(self, job: Job, refused: Refused) -> None:
        """No route can show the job: stop it (refunded) if it still runs, tell the member."""
        missing = ", ".join(refused.missing) or "permissions"
        if self.problems is not None and job.channel_id is not None:
            self.problems.record(job.guild_id, job.channel_id, refused.missing, source="delivery")
        if not job.state.terminal and self.cancel is not None:
            log.warning("delivery.undeliverable_cancel", job_id=job.id, missing=missing)
            # The cancel's own event brings the job back here, as a final edit.
            await self.cancel(job.id, reason=t(job.locale, "undeliverable", perms=missing))
            return
        if job.id in self._told:
            return
        self._told.add(job.id)
        key = "undeliverable"
        if job.state is JobState.SUCCEEDED:
            # Paid for and made: hand it over in a direct message if the member takes them.
            note = t(job.locale, "dm_note", channel=f"<#{job.channel_id}>", perms=missing)
            edit = await self.render(job)
            edit.view = None  # the buttons work in the server, not in a DM
            sent = await self.sender.direct(edit, note)
            key = "undeliverable_dm" if sent else "undeliverable_done"
        text = t(job.locale, key, perms=missing)
        told = await self.sender.tell(job, text, via_webhook=self._token_alive(job))
        log.warning(
            "delivery.undeliverable", job_id=job.id, missing=missing, member_told=told, note=key
        )
        self._forget(job.id)


def message_nonce(job: Job, purpose: str) -> str:
    """The nonce of the one message ``purpose`` posts for ``job`` (digits, under Discord's
    25 characters): sent with ``enforce_nonce``, a second post returns the first."""
    digest = hashlib.sha256(f"{job.id}:{purpose}".encode()).hexdigest()
    return str(int(digest[:15], 16))


class DiscordSender:
    """`Sender` on discord.py: webhook edits while the token lives, channel edits after."""

    def __init__(self, client: discord.Client, application_id: int) -> None:
        self.client = client
        self.application_id = application_id

    def _webhook(self, token: str) -> discord.Webhook:
        webhook = discord.Webhook.partial(self.application_id, token, client=self.client)
        # An interaction's webhook (Discord's type 3): it may send ephemeral follow-ups.
        webhook.type = discord.WebhookType.application
        return webhook

    async def edit(self, edit: Edit) -> int | None:
        """Apply ``edit`` through the webhook or the channel endpoint."""
        job = edit.job
        kwargs: dict[str, Any] = {"embed": edit.embed, "attachments": edit.files, "view": edit.view}
        if edit.via_webhook and job.interaction_token:
            webhook = self._webhook(job.interaction_token)
            # Before the bot has recorded the reply's id, "@original" names the same message.
            target = job.message_id if job.message_id is not None else cast(int, "@original")
            try:
                message = await webhook.edit_message(target, **kwargs)
            except discord.HTTPException as exc:
                if exc.status in (401, 404):
                    raise TokenExpired(str(exc)) from exc
                if exc.status == 403:
                    # Interaction webhooks go by @everyone's Attach Files / Embed Links.
                    raise Refused(("Attach Files (@everyone)",), "webhook") from exc
                raise
            if not message.embeds:
                raise Refused(("Embed Links (@everyone)",), "webhook")
            return message.id if job.message_id is None else None
        if job.channel_id is None:
            return None
        channel = self.client.get_partial_messageable(job.channel_id)
        sent: discord.Message
        try:
            if job.message_id is not None:
                sent = await channel.get_partial_message(job.message_id).edit(**kwargs)
                new_id = None
            else:
                del kwargs["attachments"]
                # A retry (or another process catching up) whose first post went out
                # unrecorded gets that message back from Discord, not a second copy.
                sent = await channel.send(
                    files=edit.files, nonce=message_nonce(job, "post"), **kwargs
                )
                new_id = sent.id
        except discord.Forbidden as exc:
            raise Refused(self._missing(job, exc.code, bool(edit.files)), "channel") from exc
        if not sent.embeds:
            # Discord accepted the message but dropped the card: no Embed Links here.
            raise Refused(("Embed Links",), "channel")
        return new_id

    def _missing(self, job: Job, code: int, with_files: bool) -> tuple[str, ...]:
        """Which of gouache's permissions the bot lacks in the job's channel (a best guess
        from the 403 when the channel is not cached: Discord's 50013 names no bit)."""
        channel = self.client.get_channel(job.channel_id) if job.channel_id else None
        if isinstance(channel, discord.abc.GuildChannel):
            missing = missing_permissions(channel.permissions_for(channel.guild.me).value)
            if missing:
                return missing
        if code == 50001:
            return ("View Channel",)
        return ("Attach Files",) if with_files else ("Send Messages",)

    async def direct(self, edit: Edit, note: str) -> bool:
        """The card and image in a direct message to the job's member."""
        job = edit.job
        try:
            dm = await self.client.create_dm(discord.Object(id=job.user_id))
            await dm.send(
                content=note, embed=edit.embed, files=edit.files, nonce=message_nonce(job, "dm")
            )
            return True
        except discord.HTTPException as exc:  # 50007: the member takes no direct messages
            log.info("delivery.direct_failed", job_id=job.id, error=str(exc))
            return False

    async def tell(self, job: Job, text: str, *, via_webhook: bool) -> bool:
        """An ephemeral follow-up while the token lives; else plain text in the channel."""
        if via_webhook and job.interaction_token:
            try:
                await self._webhook(job.interaction_token).send(text, ephemeral=True, wait=True)
                return True
            except discord.HTTPException as exc:
                log.info("delivery.tell_webhook_failed", job_id=job.id, error=str(exc))
        if job.channel_id is None:
            return False
        channel = self.client.get_partial_messageable(job.channel_id)
        mention = f"<@{job.user_id}> {text}"
        try:
            if job.message_id is not None:
                # Text only: no files and no card, so only seeing the channel is needed.
                await channel.get_partial_message(job.message_id).edit(
                    content=mention, embed=None, attachments=[], view=None
                )
            else:
                await channel.send(mention, nonce=message_nonce(job, "tell"))
            return True
        except discord.HTTPException as exc:
            log.info("delivery.tell_channel_failed", job_id=job.id, error=str(exc))
            return False
