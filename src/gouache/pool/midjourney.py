"""One Midjourney account as a `Worker`: a Discord user account driving the Midjourney bot.

The account holds one gateway connection (`gouache.pool.gateway`) and talks
REST to Discord (`gouache.pool.midjourney_rest`). A job is an interaction:
``/imagine`` (type 2, with the command id and version looked up at run time
in the guild's application-command index, refreshed once when Discord says
the version is stale) or a button press on a previous result (type 3,
``MJ::JOB::upsample::2::<hash>`` and friends, from ``job.meta["parent"]``),
each with a fresh nonce and the live gateway session id.

Correlation never relies on prompt text (`midjourney_state.Correlator`:
nonce → interaction id → message id → job hash). Each job has a follower
task fed by the gateway handler, so the handler never blocks on a download;
the follower enforces the stage timeouts and reports signals in order.

Account rules enforced here:

- ``concurrency`` jobs at once; ``pause_s`` seconds between two submissions
  (while it runs `capacity` equals the jobs in flight, and a state change
  wakes the pool when it ends); ``daily_cap`` submissions per day (at the cap
  `capacity` is 0 and `can_serve` False until the clock's next day);
- Discord's answer to an interaction is judged by
  `midjourney_verdicts.interaction_verdict` (a pure table: accept, refresh
  the command, wait out a short 429, disable the account, fail the job, or
  raise), and error embeds by `midjourney_verdicts.embed_verdict` (rows of
  `midjourney_wire.ERROR_RULES`); this class only carries verdicts out. A
  failed job gets a member-facing reason; "Job queued" keeps waiting; an account problem
  (captcha, block, subscription, moderator message) quarantines the account
  and alerts the owner; exhausted fast hours switch the account to relax and
  resubmit the job there, or (``on_credits_exhausted="pause"``) take the
  account out for ``credits_pause_s``;
- a job that hears nothing within its stage timeout fails with
  ``ErrorCode.TIMEOUT`` (the dispatcher records TIMED_OUT);
- a gateway that gives up (4004, 4010–4014) or a 401 disables the worker
  with the reason and alerts the owner;
- after a gateway resume Discord replays what was missed; after a *new*
  session the channel's recent messages are read back into the followers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import aiohttp
import structlog
from pydantic import SecretStr

from gouache.actions import content_kind, is_grid, read_buttons
from gouache.errors import GouacheError, WorkerUnavailable
from gouache.jobs import Action, ErrorCode, Job, utcnow
from gouache.pool.base import (
    Accepted,
    AlertSink,
    Failed,
    Generated,
    JobSink,
    Progress,
    Signal,
    StateListeners,
    Waiting,
    WorkerAlert,
    WorkerSnapshot,
    WorkerState,
)
from gouache.pool.gateway import GatewayConnection, GatewaySettings, GatewayStatus
from gouache.pool.gateway_rules import Backoff, IdentifyPacer
from gouache.pool.midjourney_images import COMMANDS, InputLoader, Prepared, body_for, prepare
from gouache.pool.midjourney_modals import MjModal, modal_body, read_modal
from gouache.pool.midjourney_models import bot_for, mode_for
from gouache.pool.midjourney_rest import DiscordUnreachable, TokenRejected, UserApi
from gouache.pool.midjourney_settings import read_remix, settings_body
from gouache.pool.midjourney_state import AccountLimits, Correlator
from gouache.pool.midjourney_verdicts import (
    CANCELLED,
    INTERACTION_FAILED,
    PARENT_GONE,
    STOPPED,
    WENT_OFFLINE,
    AccountAct,
    Act,
    EmbedVerdict,
    JobRefused,
    embed_verdict,
    interaction_verdict,
)
from gouache.pool.midjourney_wire import (
    CAPTCHA,
    MIDJOURNEY_APPLICATION_ID,
    NIJI_APPLICATION_ID,
    CommandRef,
    MessageKind,
    MjMessage,
    NonceFactory,
    button_body,
    custom_id,
    described_prompts,
    parse_message,
)

log = structlog.get_logger(__name__)


def parent_custom_id(parent: Mapping[str, Any], action: Action, index: int | None) -> str | None:
    """The custom id of U``index``/V``index``/🔄 as the parent's message carried it, if kept."""
    kind = {Action.UPSCALE: "upscale", Action.VARIATION: "variation", Action.REROLL: "reroll"}
    want = kind.get(action)
    buttons = parent.get("buttons")
    for raw in buttons if isinstance(buttons, list) else []:
        if not isinstance(raw, dict) or raw.get("kind") != want:
            continue
        if want == "reroll" or raw.get("index") == index:
            cid = raw.get("custom_id")
            return cid if isinstance(cid, str) and cid else None
    return None


DEFAULT_API_BASE = "https://discord.com/api/v9"
DEFAULT_GATEWAY_URL = "wss://gateway.discord.gg"

Mode = Literal["fast", "relax", "turbo"]
CreditsPolicy = Literal["relax", "pause"]


@dataclass(frozen=True, slots=True)
class MidjourneyTimeouts:
    """How long a job may hear nothing in each stage (seconds)."""

    request: float = 30.0  # one REST call to Discord
    first_message: float = 60.0  # accepted (204) → the bot's first message about the job
    start: float = 900.0  # "Waiting to start" / "Job queued" → first progress
    progress: float = 300.0  # between progress messages, until the result
    download: float = 60.0  # fetching the result image


@dataclass(frozen=True, slots=True)
class _Notice:
    """Something about a job that is not a bot message."""

    kind: Literal["cancel", "modal", "interaction_failed", "gone"]
    data: Mapping[str, Any] | None = None  # a modal's payload


_Event = MjMessage | _Notice


@dataclass(eq=False)
class _Track:
    """One job this account follows."""

    job: Job
    report: JobSink
    inbox: asyncio.Queue[_Event] = field(default_factory=asyncio.Queue)
    nonce: str = ""
    stage: str = "first_message"
    mode: str = "fast"  # the speed mode it was last submitted in
    waiting_reported: bool = False
    finished: bool = False  # Generated/Failed was reported; still followed if Midjourney runs it
    credits_retried: bool = False
    task: asyncio.Task[None] | None = None
    prepared: Prepared = field(default_factory=Prepared)  # its input images, uploaded once

    @property
    def parent(self) -> dict[str, Any]:
        parent = self.job.meta.get("parent")
        return parent if isinstance(parent, dict) else {}


class MidjourneyWorker(StateListeners):
    """A Discord user account that runs Midjourney jobs (see the module docstring)."""

    kind = "midjourney"

    def __init__(  # noqa: PLR0913
        self,
        name: str,
        token: str,
        guild_id: int | str,
        channel_id: int | str,
        *,
        api_base: str | None = None,
        gateway_url: str | None = None,
        application_id: str = MIDJOURNEY_APPLICATION_ID,
        concurrency: int = 3,
        mode: Mode = "fast",
        on_credits_exhausted: CreditsPolicy = "relax",
        credits_pause_s: float = 3600.0,
        pause_s: float = 0.0,
        daily_cap: int | None = None,
        enabled: bool = True,
        timeouts: MidjourneyTimeouts | None = None,
        alert: AlertSink | None = None,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], datetime] = utcnow,
        gateway_options: Mapping[str, Any] | None = None,
        identify_pacer: IdentifyPacer | None = None,
        gateway_backoff: Backoff | None = None,
        inputs: InputLoader | None = None,
        remix: bool | Literal["settings"] = False,
    ) -> None:
        if not token or not token.strip():
            raise ValueError(f"midjourney account {name!r}: the token is empty")
        if concurrency < 1:
            raise ValueError(f"midjourney account {name!r}: concurrency must be ≥ 1")
        if mode not in ("fast", "relax", "turbo"):
            raise ValueError(f"midjourney account {name!r}: mode must be fast, relax or turbo")
        self.name = name
        self._token = SecretStr(token.strip())
        self.guild_id = str(guild_id)
        self.channel_id = str(channel_id)
        self.gateway_url = gateway_url or DEFAULT_GATEWAY_URL
        self.application_id = str(application_id)
        self.concurrency = concurrency
        self.mode: Mode = mode
        self.on_credits_exhausted: CreditsPolicy = on_credits_exhausted
        self.credits_pause_s = credits_pause_s
        self.timeouts = timeouts or MidjourneyTimeouts()
        self.limits = AccountLimits(pause_s=pause_s, daily_cap=daily_cap, clock=clock)
        self.api = UserApi(
            token=self._token,
            api_base=api_base or DEFAULT_API_BASE,
            guild_id=self.guild_id,
            channel_id=self.channel_id,
            application_id=self.application_id,
            request_timeout=self.timeouts.request,
        )
        self._alert_sink = alert
        self.inputs = inputs  # loads a job's input images (None: it takes none)
        self._clock = clock
        self._session = session
        self._own_session = False
        self._gateway_options = dict(gateway_options or {})  # more `GatewaySettings` fields
        self._identify_pacer = identify_pacer
        self._gateway_backoff = gateway_backoff
        self._gateway: GatewayConnection | None = None
        self._gateway_status: GatewayStatus | None = None
        self._disabled_reason: str | None = None if enabled else "disabled in the configuration"
        self._quarantine: str | None = None
        self._last_session: str | None = None
        self._nonces = NonceFactory(lambda: self._clock().timestamp() * 1000)
        self._correlator = Correlator()
        self._tracks: dict[str, _Track] = {}  # job id → track
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wake: asyncio.TimerHandle | None = None
        self._closed = False
        self.last_error: str | None = None
        #: The account's Remix mode (results carry it, so a click knows to ask for a prompt);
        #: with ``remix="settings"`` it is read from /settings each time a session starts.
        self.remix: bool = remix is True
        self.remix_from_settings = remix == "settings"
        self._settings_nonce: str | None = None

    def __repr__(self) -> str:
        return (
            f"MidjourneyWorker(name={self.name!r}, channel_id={self.channel_id}, "
            f"mode={self.mode!r}, state={self.state.value!r})"
        )

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Open the gateway connection (returns once connecting has begun)."""
        if self._disabled_reason is not None or self._gateway is not None:
            self._state_changed()
            return
        self._closed = False
        if self._session is None:
            self._session = aiohttp.ClientSession()
            self._own_session = True
        self.api.session = self._session
        settings = GatewaySettings(
            name=self.name,
            token=self._token,
            gateway_url=self.gateway_url,
            bot=False,
            **self._gateway_options,
        )
        self._gateway = GatewayConnection(
            settings,
            on_dispatch=self._on_dispatch,
            on_status=self._on_status,
            http=self._session,
            identify_pacer=self._identify_pacer,
            backoff=self._gateway_backoff,
        )
        self._gateway_status = GatewayStatus.CONNECTING
        await self._gateway.start()
        log.info("mj.started", worker=self.name, mode=self.mode)
        self._state_changed()

    async def wait_ready(self, timeout: float) -> None:
        """Wait until the gateway session is READY (raises TimeoutError or a gateway error)."""
        if self._gateway is None:
            raise WorkerUnavailable(f"Midjourney account {self.name} is not started.")
        await self._gateway.wait_ready(timeout)

    async def aclose(self) -> None:
        """Stop following jobs, close the gateway and (if ours) the HTTP session."""
        self._closed = True
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        tasks = [t.task for t in self._tracks.values() if t.task is not None]
        tasks += list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._gateway is not None:
            await self._gateway.aclose()
            self._gateway = None
        self._gateway_status = GatewayStatus.CLOSED
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None
        self._state_changed()

    # -- health ------------------------------------------------------------------------

    @property
    def state(self) -> WorkerState:
        """Health: switches and account problems first, then the gateway."""
        if self._disabled_reason is not None:
            return WorkerState.DISABLED
        if self._quarantine is not None:
            return WorkerState.QUARANTINED
        if self.limits.paused_until is not None:
            return WorkerState.DISABLED
        status = self._gateway_status
        if status is None or status is GatewayStatus.CONNECTING:
            return WorkerState.CONNECTING
        if status is GatewayStatus.READY:
            return WorkerState.BUSY if self.in_flight >= self.concurrency else WorkerState.READY
        if status is GatewayStatus.DISABLED:
            return WorkerState.DISABLED
        return WorkerState.OFFLINE  # resuming, backing off, closed

    @property
    def reason(self) -> str | None:
        """Why the account takes no jobs (disabled, quarantined, paused, capped), if it takes none."""
        if self._disabled_reason is not None:
            return self._disabled_reason
        if self._quarantine is not None:
            return self._quarantine
        if (until := self.limits.paused_until) is not None:
            return f"fast hours exhausted; paused until {until.isoformat(timespec='seconds')}"
        if self.limits.capped:
            return f"daily cap of {self.limits.daily_cap} reached"
        if self.limits.pause_remaining() > 0:
            return "pausing between jobs"
        return None

    @property
    def in_flight(self) -> int:
        """Jobs submitted and not yet reported finished."""
        return sum(1 for t in self._tracks.values() if not t.finished)

    @property
    def orphans(self) -> int:
        """Cancelled jobs Midjourney may still be running (they still take an account slot)."""
        return sum(1 for t in self._tracks.values() if t.finished)

    @property
    def capacity(self) -> int:
        """Slots now: 0 at the daily cap, no new ones during the pause, minus cancelled leftovers."""
        return self.limits.capacity(self.concurrency, self.in_flight, self.orphans)

    @property
    def done_today(self) -> int:
        """Jobs that produced images today."""
        return self.limits.done_today

    def can_serve(self, job: Job) -> bool:
        """Midjourney jobs; follow-ups only of this account's results; nothing at the daily cap.

        The pause between jobs is not reflected here (it is seconds long, and a
        job should wait for it, not fail): `capacity` covers it.
        """
        if job.backend not in (None, self.kind) or self._disabled_reason is not None:
            return False
        if job.action.follow_up:
            parent = job.meta.get("parent")
            if not isinstance(parent, dict) or parent.get("worker") != self.name:
                return False
        if job.input_images and self.inputs is None:
            return False
        return not self.limits.capped

    def snapshot(self) -> WorkerSnapshot:
        """This account's row for `gouache pool status`."""
        return WorkerSnapshot(
            name=self.name,
            kind=self.kind,
            state=self.state,
            capacity=self.concurrency,
            in_flight=self.in_flight,
            latency_ms=self._gateway.latency_ms if self._gateway is not None else None,
            done_today=self.done_today,
            last_error=self.last_error,
            reason=self.reason,
            mode=self.mode,
        )

    # -- owner controls and account events ------------------------------------------------------

    def reinstate(self) -> None:
        """Lift a quarantine or a credits pause (the owner solved the captcha, renewed the plan...)."""
        self._quarantine = None
        self.limits.lift_pause()
        log.info("mj.reinstated", worker=self.name)
        self._state_changed()

    def set_mode(self, mode: Mode) -> None:
        """Switch between fast, relax and turbo for the next jobs."""
        if mode not in ("fast", "relax", "turbo"):
            raise ValueError(f"unknown Midjourney mode {mode!r} (fast, relax or turbo)")
        if mode != self.mode:
            log.info("mj.mode", worker=self.name, before=self.mode, after=mode)
            self.mode = mode
            self._state_changed()

    def _quarantine_account(self, reason: str) -> None:
        if self._quarantine is not None:
            return
        self._quarantine = reason
        log.warning("mj.quarantined", worker=self.name, reason=reason)
        self._send_alert(WorkerState.QUARANTINED, reason)
        self._state_changed()

    def _disable(self, reason: str) -> None:
        if self._disabled_reason is not None:
            return
        self._disabled_reason = reason
        self.last_error = reason
        log.error("mj.disabled", worker=self.name, reason=reason)
        self._send_alert(WorkerState.DISABLED, reason)
        for track in self._tracks.values():
            track.inbox.put_nowait(_Notice("gone"))
        self._state_changed()

    def _send_alert(self, state: WorkerState, reason: str) -> None:
        sink = self._alert_sink
        if sink is None:
            return
        alert = WorkerAlert(worker=self.name, state=state, reason=reason, at=self._clock())

        async def deliver() -> None:
            try:
                async with asyncio.timeout(10):
                    await sink(alert)
            except Exception as exc:
                log.error("mj.alert_failed", worker=self.name, error=str(exc))

        self._spawn(deliver())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _arm_wake(self) -> None:
        """Wake the pool (a state change) when the pause, a credits pause or the cap ends."""
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        delay = self.limits.next_change()
        if delay is not None and not self._closed:
            self._wake = asyncio.get_running_loop().call_later(delay, self._on_wake)

    def _on_wake(self) -> None:
        self._wake = None
        self._state_changed()
        self._arm_wake()  # an injected clock may not have moved far enough yet

    # -- submitting ----------------------------------------------------------------------------

    async def submit(self, job: Job, report: JobSink) -> None:
        """Send the job's interaction; returns once Discord accepted it (204) or raises."""
        if not self.can_serve(job):
            raise WorkerUnavailable(f"Midjourney account {self.name} cannot take that job.")
        if self.state not in (WorkerState.READY, WorkerState.BUSY):
            raise WorkerUnavailable(f"Midjourney account {self.name} is {self.state.value}.")
        if self.in_flight >= self.capacity:
            raise WorkerUnavailable(f"Midjourney account {self.name} has no free slot now.")
        if job.id in self._tracks:
            raise WorkerUnavailable(f"Midjourney account {self.name} already runs that job.")
        track = _Track(job=job, report=report)
        self._tracks[job.id] = track
        parent_mid = track.parent.get("message_id") if job.action.follow_up else None
        self._correlator.add(job.id, parent_message_id=str(parent_mid) if parent_mid else None)
        undo = self.limits.note_submit()
        try:
            await self._send(track)
        except JobRefused as refused:
            self.limits.undo(undo)
            await self._emit(track, refused.failed)
            self._forget(track)
            return
        except BaseException:
            self.limits.undo(undo)
            self._forget(track)
            raise
        self._arm_wake()
        log.info(
            "mj.submitted",
            worker=self.name,
            job_id=job.id,
            action=job.action.value,
            mode=track.mode,
            nonce=track.nonce,
        )
        await self._emit(track, Accepted())
        track.task = asyncio.get_running_loop().create_task(
            self._follow(track), name=f"mj-{self.name}-{job.id[:8]}"
        )
        self._state_changed()

    async def _send(self, track: _Track) -> None:
        """POST the interaction, refreshing a stale command once and honouring short 429s."""
        job = track.job
        stale: CommandRef | None = None
        command: CommandRef | None = None
        refreshed = False
        for _attempt in range(6):
            session_id = self._gateway.session_id if self._gateway is not None else None
            if not session_id:
                raise WorkerUnavailable(f"Midjourney account {self.name} is not connected.")
            nonce = self._nonces()
            self._correlator.set_nonce(job.id, nonce)
            track.nonce = nonce
            track.mode = mode_for(job, self.mode)
            try:
                if not job.action.follow_up:
                    await prepare(self.api, job, self.inputs, track.prepared)
                    command = await self.api.command(
                        COMMANDS[job.action],
                        stale=stale,
                        application_id=bot_for(job, self.application_id),
                    )
                    stale = None
                    body = body_for(
                        command,
                        job,
                        track.prepared,
                        mode_for(job, self.mode),
                        guild_id=self.guild_id,
                        channel_id=self.channel_id,
                        session_id=session_id,
                        nonce=nonce,
                    )
                else:
                    body = self._button(track, session_id, nonce)
                resp = await self.api.call("POST", "/interactions", body)
            except TokenRejected as exc:
                self._disable(exc.message)
                raise WorkerUnavailable(f"Midjourney account {self.name} was rejected.") from None
            except DiscordUnreachable as exc:
                self.last_error = exc.message
                raise
            verdict = interaction_verdict(
                resp.status,
                resp.body,
                resp.retry_after,
                follow_up=job.action.follow_up,
                can_refresh=not job.action.follow_up and not refreshed,
                channel=self.channel_id,
            )
            match verdict.act:
                case Act.ACCEPTED:
                    return
                case Act.REFRESH:
                    log.info("mj.command_stale", worker=self.name, job_id=job.id)
                    stale, refreshed = command, True
                case Act.RETRY:
                    await asyncio.sleep(verdict.delay)
                case Act.DISABLE:
                    self._disable(verdict.reason)
                    raise WorkerUnavailable(f"Midjourney account {self.name} {verdict.message}.")
                case Act.REFUSE:
                    assert verdict.failed is not None
                    raise JobRefused(verdict.failed)
                case Act.ERROR:
                    self.last_error = verdict.reason
                    raise GouacheError(verdict.message, code=ErrorCode.WORKER_ERROR)
        raise GouacheError(
            "Discord kept refusing the Midjourney interaction.", code=ErrorCode.WORKER_ERROR
        )

    def _button(self, track: _Track, session_id: str, nonce: str) -> dict[str, Any]:
        parent = track.parent
        message_id, job_hash = parent.get("message_id"), parent.get("job_hash")
        job = track.job
        if job.action is Action.BUTTON:
            # Relayed verbatim: a button gouache has never seen works as Midjourney made it.
            if not message_id or not job.button:
                raise JobRefused(PARENT_GONE)
            cid = job.button
        else:
            if not message_id or not job_hash or parent.get("grid") is False:
                raise JobRefused(PARENT_GONE)
            try:
                cid = parent_custom_id(parent, job.action, job.index) or custom_id(
                    job.action, job.index, str(job_hash)
                )
            except ValueError as exc:
                raise JobRefused(Failed(ErrorCode.INVALID_PARAMETER, str(exc))) from None
        flags = parent.get("flags")
        return button_body(
            application_id=bot_for(track.job, self.application_id),
            guild_id=self.guild_id,
            channel_id=str(parent.get("channel_id") or self.channel_id),
            message_id=str(message_id),
            session_id=session_id,
            nonce=nonce,
            custom_id=cid,
            message_flags=flags if isinstance(flags, int) else 0,
        )

    async def cancel(self, job: Job) -> None:
        """Stop reporting ``job``; a `Failed` CANCELED follows.

        Midjourney offers no reliable way to stop a running job, so the account
        keeps following it silently until it ends, and the slot it takes at
        Midjourney stays counted (`orphans`).
        """
        track = self._tracks.get(job.id)
        if track is not None:
            track.inbox.put_nowait(_Notice("cancel"))

    # -- gateway events --------------------------------------------------------------------------

    def _on_status(self, status: GatewayStatus, reason: str | None) -> None:
        previous, self._gateway_status = self._gateway_status, status
        if status is GatewayStatus.DISABLED:
            self._disable(f"gateway: {reason}" if reason else "the gateway refused the account")
        elif status is GatewayStatus.READY and self._gateway is not None:
            session_id = self._gateway.session_id
            if self._last_session and session_id != self._last_session and self._tracks:
                # A new session missed whatever happened meanwhile: read the channel back.
                self._spawn(self._reconcile())
            if self.remix_from_settings and session_id != self._last_session:
                self._spawn(self._ask_settings())
            self._last_session = session_id
        if previous is not status:
            log.info("mj.gateway", worker=self.name, status=status.value, reason=reason)
            self._state_changed()

    async def _on_dispatch(self, event: str, data: dict[str, Any]) -> None:
        if event in ("MESSAGE_CREATE", "MESSAGE_UPDATE"):
            if self._settings_nonce is not None and str(data.get("nonce")) == self._settings_nonce:
                self._read_settings(data)
                return
            self._route(data)
        elif event in ("INTERACTION_CREATE", "INTERACTION_SUCCESS"):
            self._correlator.interaction(data.get("nonce"), data.get("id"))
        elif event == "INTERACTION_FAILURE":
            self._notify(
                self._correlator.by_nonce(data.get("nonce")), _Notice("interaction_failed")
            )
        elif event in ("INTERACTION_MODAL_CREATE", "INTERACTION_IFRAME_MODAL_CREATE"):
            job_id = self._correlator.by_nonce(data.get("nonce"))
            if job_id is not None:
                form = data if event == "INTERACTION_MODAL_CREATE" else None
                self._notify(job_id, _Notice("modal", form))
            elif str(data.get("application_id")) == self.application_id:
                self._quarantine_account(CAPTCHA.title)

    def _notify(self, job_id: str | None, event: _Event) -> None:
        track = self._tracks.get(job_id) if job_id is not None else None
        if track is not None:
            track.inbox.put_nowait(event)

    def _route(self, data: dict[str, Any]) -> None:
        """Hand a Midjourney bot message in our channel to the job it belongs to."""
        if str(data.get("channel_id")) != self.channel_id:
            return
        author = data.get("author")
        if not isinstance(author, dict) or str(author.get("id")) not in (
            self.application_id,
            NIJI_APPLICATION_ID,
        ):
            return
        msg = parse_message(data)
        self._notify(self._correlator.match(msg), msg)

    async def _ask_settings(self) -> None:
        """Send /settings; its answer (`_read_settings`) tells the account's Remix mode."""
        session_id = self._gateway.session_id if self._gateway is not None else None
        if not session_id:
            return
        try:
            command = await self.api.command("settings")
            nonce = self._settings_nonce = self._nonces()
            body = settings_body(
                command,
                guild_id=self.guild_id,
                channel_id=self.channel_id,
                session_id=session_id,
                nonce=nonce,
            )
            resp = await self.api.call("POST", "/interactions", body)
        except GouacheError as exc:
            log.warning("mj.settings_failed", worker=self.name, error=exc.message)
            return
        if resp.status not in (200, 204):
            log.warning("mj.settings_refused", worker=self.name, status=resp.status)

    def _read_settings(self, data: dict[str, Any]) -> None:
        remix = read_remix(data)
        self._settings_nonce = None
        if remix is None:
            log.warning("mj.settings_unreadable", worker=self.name)
            return
        if remix != self.remix:
            log.info("mj.remix_mode", worker=self.name, remix=remix)
        self.remix = remix
        self._state_changed()

    async def _reconcile(self) -> None:
        try:
            messages = await self.api.recent_messages()
        except GouacheError as exc:
            log.warning("mj.reconcile_failed", worker=self.name, error=exc.message)
            return
        for data in messages:
            data.setdefault("channel_id", self.channel_id)
            self._route(data)
        log.info("mj.reconciled", worker=self.name, messages=len(messages))

    # -- following one job -----------------------------------------------------------------------

    async def _follow(self, track: _Track) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeouts.first_message
        try:
            while True:
                try:
                    async with asyncio.timeout(max(0.0, deadline - loop.time())):
                        event = await track.inbox.get()
                except TimeoutError:
                    log.warning(
                        "mj.stage_timeout", worker=self.name, job_id=track.job.id, stage=track.stage
                    )
                    stage = track.stage.replace("_", " ")
                    await self._emit(
                        track,
                        Failed(ErrorCode.TIMEOUT, f"Midjourney did not answer in time ({stage})."),
                    )
                    return
                extended = await self._handle(track, event)
                if extended is None:
                    return
                deadline = loop.time() + extended
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("mj.follow_crashed", worker=self.name, job_id=track.job.id)
            self.last_error = f"follower crashed: {type(exc).__name__}"
            await self._emit(
                track,
                Failed(ErrorCode.WORKER_ERROR, "The Midjourney account hit an error.", True),
            )
        finally:
            self._forget(track)

    def _stage_timeout(self, track: _Track) -> float:
        if track.stage == "first_message":
            return self.timeouts.first_message
        if track.stage in ("queued", "start"):
            return self.timeouts.start
        return self.timeouts.progress

    async def _handle(self, track: _Track, event: _Event) -> float | None:
        """Act on one event; how long the next stage may stay silent, or None when done."""
        if isinstance(event, _Notice):
            return await self._notice(track, event)
        kind = event.kind
        if kind is MessageKind.ERROR:
            return await self._error(track, event)
        if kind is MessageKind.QUEUED:
            track.stage = "queued"
            if not track.waiting_reported:
                track.waiting_reported = True
                await self._emit(track, Waiting(message="Midjourney queued the request."))
        elif kind is MessageKind.WAITING:
            if track.stage in ("first_message", "queued"):
                track.stage = "start"
        elif kind is MessageKind.PROGRESS:
            track.stage = "progress"
            if not track.finished:
                preview = await self._preview(event.image_url)
                await self._emit(
                    track,
                    Progress(
                        percent=event.percent or 0,
                        preview=preview,
                        preview_url=event.image_url,
                        external_id=self._correlator.job_hash(track.job.id),
                    ),
                )
        elif kind in (MessageKind.DONE, MessageKind.DESCRIBED):
            if not track.finished:
                done = self._done if kind is MessageKind.DONE else self._described
                await done(track, event)
            return None
        elif kind is MessageKind.STOPPED:
            await self._emit(track, STOPPED)
            return None
        return self._stage_timeout(track)

    async def _notice(self, track: _Track, notice: _Notice) -> float | None:
        if notice.kind == "cancel":
            if not track.finished:
                log.info("mj.cancelled", worker=self.name, job_id=track.job.id)
                await self._emit(track, CANCELLED)
            return self._stage_timeout(track)  # keep following: the slot is still taken
        if notice.kind == "modal":
            form = read_modal(notice.data) if notice.data is not None else None
            if form is not None and not track.finished:
                return await self._answer_modal(track, form)
            self._quarantine_account(CAPTCHA.title)
            await self._emit(track, Failed(CAPTCHA.code, CAPTCHA.message, CAPTCHA.retryable))
        elif notice.kind == "interaction_failed":
            await self._emit(track, INTERACTION_FAILED)
        else:
            await self._emit(track, WENT_OFFLINE)
        return None

    async def _answer_modal(self, track: _Track, form: MjModal) -> float | None:
        """Submit Midjourney's form with what the member typed in ours (see `midjourney_modals`)."""
        job = track.job
        session_id = self._gateway.session_id if self._gateway is not None else None
        if not session_id:
            await self._emit(track, WENT_OFFLINE)
            return None
        nonce = self._nonces()
        self._correlator.set_nonce(job.id, nonce)
        track.nonce = nonce
        body = modal_body(
            form,
            job.button_input,
            application_id=bot_for(job, self.application_id),
            guild_id=self.guild_id,
            channel_id=str(track.parent.get("channel_id") or self.channel_id),
            session_id=session_id,
            nonce=nonce,
        )
        try:
            resp = await self.api.call("POST", "/interactions", body)
        except GouacheError as exc:
            await self._emit(track, Failed(ErrorCode.WORKER_ERROR, exc.message, True))
            return None
        log.info(
            "mj.modal_submitted",
            worker=self.name,
            job_id=job.id,
            form=form.kind,
            status=resp.status,
            member_value=job.button_input is not None,
        )
        if resp.status not in (200, 204):
            await self._emit(
                track,
                Failed(ErrorCode.INVALID_PARAMETER, "Midjourney refused the values of this form."),
            )
            return None
        track.stage = "first_message"
        return self.timeouts.first_message

    async def _error(self, track: _Track, msg: MjMessage) -> float | None:
        verdict = embed_verdict(msg, follow_up=track.job.action.follow_up)
        log.info(
            "mj.error_embed",
            worker=self.name,
            job_id=track.job.id,
            title=msg.title,
            outcome=msg.rule.outcome.value if msg.rule is not None else None,
            code=verdict.failed.code.value,
        )
        if verdict.account is AccountAct.QUARANTINE:
            self._quarantine_account(verdict.detail)
        elif verdict.account is AccountAct.CREDITS:
            return await self._credits_exhausted(track, verdict)
        await self._emit(track, verdict.failed)
        return None

    async def _credits_exhausted(self, track: _Track, verdict: EmbedVerdict) -> float | None:
        detail = verdict.detail
        if self.on_credits_exhausted == "relax" and track.mode != "relax":
            if self.mode != "relax":
                self.set_mode("relax")
                self._send_alert(WorkerState.READY, f"{detail} — switched to relax mode.")
            if not track.finished and not track.credits_retried:
                track.credits_retried = True
                try:
                    await self._send(track)
                except JobRefused as refused:
                    await self._emit(track, refused.failed)
                    return None
                except GouacheError as exc:
                    await self._emit(track, Failed(ErrorCode.WORKER_ERROR, exc.message, True))
                    return None
                log.info("mj.resubmitted", worker=self.name, job_id=track.job.id, mode=track.mode)
                track.stage = "first_message"
                return self.timeouts.first_message
        elif self.limits.paused_until is None:
            self.limits.pause_for(self.credits_pause_s)
            log.warning("mj.credits_paused", worker=self.name, seconds=self.credits_pause_s)
            self._send_alert(
                WorkerState.DISABLED, f"{detail} — paused for {self.credits_pause_s:g} s."
            )
            self._arm_wake()
            self._state_changed()
        await self._emit(track, verdict.failed)
        return None

    async def _preview(self, url: str | None) -> bytes | None:
        if not url:
            return None
        try:
            return await self.api.download(url, timeout=min(5.0, self.timeouts.download))
        except GouacheError as exc:
            log.debug("mj.preview_failed", worker=self.name, error=exc.message)
            return None

    async def _done(self, track: _Track, msg: MjMessage) -> None:
        assert msg.image_url is not None
        try:
            image = await self.api.download(
                msg.image_url, timeout=self.timeouts.download, attempts=3
            )
        except GouacheError as exc:
            await self._emit(track, Failed(ErrorCode.WORKER_ERROR, exc.message, True))
            return
        job_hash = msg.job_hash or self._correlator.job_hash(track.job.id)
        buttons = read_buttons(list(msg.components))
        meta: dict[str, Any] = {
            "message_id": msg.message_id,
            "job_hash": job_hash,
            "channel_id": self.channel_id,
            "image_url": msg.image_url,
            "filename": msg.filename,
            "grid": is_grid(buttons) if buttons else track.job.action is not Action.UPSCALE,
            "mode": track.mode,
            "flags": msg.flags,
            "buttons": [b.as_dict() for b in buttons],
            "remix": self.remix,
        }
        made = content_kind(msg.content)
        if made is not None:
            meta["made_by"] = made
        self.limits.note_done()
        log.info("mj.done", worker=self.name, job_id=track.job.id, job_hash=job_hash)
        await self._emit(track, Generated(images=[image], external_id=job_hash, meta=meta))

    async def _described(self, track: _Track, msg: MjMessage) -> None:
        """A describe result: its four prompts, the described image as the job's picture."""
        prompts = described_prompts(msg.description)
        images = track.prepared.images[:1]
        if len(prompts) < 4 or not images:
            await self._emit(track, Failed(ErrorCode.WORKER_ERROR, "Midjourney gave no prompts."))
            return
        meta = {"prompts": prompts, "message_id": msg.message_id, "grid": False}
        self.limits.note_done()
        await self._emit(track, Generated(images=images, external_id=msg.message_id, meta=meta))

    async def _emit(self, track: _Track, signal: Signal) -> None:
        """Report ``signal`` unless the job already ended; the final one frees the slot."""
        if track.finished:
            return
        final = isinstance(signal, Generated | Failed)
        if final:
            track.finished = True
            if isinstance(signal, Failed) and signal.code != ErrorCode.CANCELED:
                self.last_error = signal.message
        try:
            await track.report(track.job, signal)
        except Exception as exc:
            log.error("mj.report_failed", worker=self.name, job_id=track.job.id, error=str(exc))
        if final:
            self._state_changed()

    def _forget(self, track: _Track) -> None:
        if self._tracks.get(track.job.id) is track:
            del self._tracks[track.job.id]
            self._correlator.forget(track.job.id)
            self._state_changed()
