"""One ComfyUI server as a `Worker`: HTTP to submit, cancel and fetch; one WebSocket to follow.

The worker speaks ComfyUI's own API (0.3.x, see docs/protocols.md, "ComfyUI"), so pointing it
at a real server only takes its ``url``:

* **submit** — the workflow is rendered with the job's values (a random seed
  when the job has none, reported back in ``meta``) and sent with ``POST
  /prompt {prompt, client_id, prompt_id}``. The prompt id is chosen here, so the
  job is known before any WebSocket message about it can arrive; a 400 with
  ``node_errors`` fails the job at once with a readable reason.
* **follow** — one WebSocket per server (``/ws?clientId=<stable id>``), opened
  again with exponential backoff and jitter whenever it drops; while the server
  does not answer at all, ``/system_stats`` is probed every ``offline_probe_s``
  and the socket reopened as soon as it does. Any frame or pong proves the link
  alive (aiohttp's heartbeat pings after ``heartbeat_s`` of quiet); silence
  alone does not, since a node without progress sends nothing. Messages map to
  signals: ``execution_start``/``executing``/``progress`` and binary preview
  frames → `Progress` (throttled to one per ``progress_interval_s``),
  ``status`` → `Waiting` with the position in the server's queue,
  ``execution_success`` → `Generated` (images fetched with ``/view``),
  ``execution_error``/``execution_interrupted`` → `Failed`. Unknown message
  types and binary frames are ignored.
* **recover** — the server drops messages for a client that is not connected,
  so after any gap only ``/history/<prompt_id>`` is trusted: every job that
  lived through a gap is reconciled with it (and with ``/queue``) once the
  socket is back, and a job nobody heard of for ``silence_s`` is looked up too
  (a prompt ``/queue`` says still runs keeps its socket).
  A server that forgot a job (it restarted) or stays unreachable for
  ``lost_after_s`` fails the job with ``retryable=True``: the dispatcher gives
  it to another server.
* **cancel** — a pending prompt is deleted from the queue (``POST /queue
  {"delete": [id]}``), a running one interrupted (``POST /interrupt
  {"prompt_id": id}``; the outcome still arrives as a message, because an
  interrupt during the last node is ignored by the server).
* **health** — ``GET /system_stats`` every ``health_interval_s`` measures the
  latency; an unreachable server is OFFLINE, and READY again once the socket
  is back.

Results are taken from ``output``-type images (SaveImage); ``temp`` previews
count only when a workflow saves nothing else.

The worker holds the socket, the tasks and the timers only: the HTTP calls
are `gouache.pool.comfyui_client.ComfyUIClient`'s (which turns transport
failures into `ComfyUIError`), what the socket's messages mean for our prompts
is `gouache.pool.comfyui_tracker.RunTracker`'s (it returns effects, carried
out here), reconnect delays come from `gouache.pool.gateway_rules.Backoff`,
and time and randomness are injected (``monotonic``, ``rng``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Final

import aiohttp
import structlog
from yarl import URL

from gouache.actions import comfyui_buttons
from gouache.channels.graph import bind_models, comfy_fits, loader_of
from gouache.errors import ConfigError, GouacheError, InvalidParameter
from gouache.jobs import Action, ErrorCode, Job
from gouache.params import MAX_SEED
from gouache.pool.base import (
    Accepted,
    Failed,
    Generated,
    JobSink,
    Progress,
    Signal,
    StateListeners,
    Waiting,
    WorkerSnapshot,
    WorkerState,
)
from gouache.pool.comfyui_client import (
    ComfyUIClient,
    ComfyUIError,
    ComfyUIRejected,
    ComfyUITooLarge,
    ComfyUIUnreachable,
)
from gouache.pool.comfyui_inputs import (
    InputLoader,
    denoise_for,
    lost_file,
    lost_input,
    prepare_inputs,
    workflow_for,
)
from gouache.pool.comfyui_parents import ParentImageMissing, ParentImages
from gouache.pool.comfyui_tracker import (
    Effect,
    Ended,
    Errored,
    Finished,
    Heard,
    Interrupted,
    Progressed,
    QueueChanged,
    RunTracker,
    Started,
    Unknown,
    execution_failure,
)
from gouache.pool.comfyui_uploads import ImageUploads
from gouache.pool.comfyui_wire import (
    clip,
    describe_rejection,
    history_outcome,
    output_files,
    queue_place,
)
from gouache.pool.gateway_rules import Backoff
from gouache.pool.workflows import RenderValues, Workflow

__all__ = [
    "KIND",
    "ComfyUIError",
    "ComfyUIRejected",
    "ComfyUITimings",
    "ComfyUITooLarge",
    "ComfyUIUnreachable",
    "ComfyUIWorker",
]

log = structlog.get_logger(__name__)

KIND: Final = "comfyui"
_MAX_WS_MESSAGE: Final = 64 * 2**20
_MAX_ABANDONED: Final = 200
_LOST = "The image server went away while making this image."
_CANCELLED = "Cancelled."


@dataclass(frozen=True, slots=True)
class ComfyUITimings:
    """How long the worker waits for things, and how often it looks (seconds)."""

    request_s: float = 30.0  # one HTTP call (submit, queue, history, cancel)
    view_s: float = 120.0  # downloading one result image
    connect_s: float = 10.0  # opening the WebSocket
    heartbeat_s: float = 20.0  # quiet this long: ping; no frame or pong in half that: reopen
    health_interval_s: float = 10.0  # GET /system_stats and the silence check
    backoff_initial_s: float = 0.5  # first reconnect delay (doubles; jitter keeps 50-100 %)
    backoff_max_s: float = 30.0
    offline_probe_s: float = 1.0  # unreachable: probe this often, reconnect once it answers
    lost_after_s: float = 10.0  # unreachable this long: in-flight jobs fail (retryable)
    silence_s: float = 20.0  # nothing heard about a job this long: ask /history, /queue
    echo_s: float = 5.0  # no frame at all this long after a submit: re-open the socket
    progress_interval_s: float = 0.5  # at most one Progress per job per interval
    cancel_grace_s: float = 30.0  # after cancel, stop waiting for the server's word


# -- one job on the server ---------------------------------------------------------------


@dataclass(eq=False)
class _Run:
    """What the worker knows about one submitted prompt (its protocol state is the tracker's)."""

    job: Job
    report: JobSink
    prompt_id: str
    seed: int
    heard: float  # monotonic time of the last news about it
    accepted: bool = False
    backlog: list[Signal] = field(default_factory=list)  # signals before Accepted
    started: bool = False
    closing: bool = False  # a terminal signal is being produced
    cancel_requested: bool = False
    cancel_deadline: float | None = None
    position: int | None = None
    percent: int = 0
    last_emit: float = float("-inf")
    dirty: bool = False
    preview: bytes | None = None
    flush: asyncio.Task[None] | None = None
    upload: str | None = None  # the input image's LoadImage name (a button's parent)
    lost_upload: bool = False  # the server said it does not have that file (it restarted)


# -- the worker ----------------------------------------------------------------------------


class ComfyUIWorker(StateListeners):
    """One ComfyUI server: ``concurrency`` jobs at once, queued on the server beyond the first.

    ``clock`` gives the wall time (for "done today"), ``monotonic`` the time
    every timeout is measured with, ``rng`` the seeds and the reconnect jitter.
    """

    kind: str = KIND

    def __init__(  # noqa: PLR0913
        self,
        name: str,
        url: str,
        *,
        workflow: Workflow,
        concurrency: int = 1,
        enabled: bool = True,
        session: aiohttp.ClientSession | None = None,
        timings: ComfyUITimings | None = None,
        client_id: str | None = None,
        clock: Callable[[], datetime] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        actions: Mapping[str, Workflow] | None = None,
        inputs: InputLoader | None = None,
        parents: ParentImages | None = None,
    ) -> None:
        base = URL(url)
        if base.scheme not in ("http", "https") or not base.host:
            problem = f"expected http(s)://host[:port], not a {base.scheme or 'relative'} URL"
            raise ConfigError([f"workers.{name}.url: {problem}"])
        if concurrency < 1:
            raise ConfigError([f"workers.{name}.concurrency: must be at least 1"])
        self.name = name
        self.workflow = workflow
        self.has_loader = loader_of(workflow.graph) is not None  # a checkpoint can be chosen
        self.enabled = enabled
        self.timings = timings or ComfyUITimings()
        self.client_id = client_id or f"gouache-{uuid.uuid4().hex}"
        self._concurrency = concurrency
        self._secret = base.password or ""
        self._ws_url = (base / "ws").with_scheme("wss" if base.scheme == "https" else "ws")
        self._ws_url = self._ws_url.with_query(clientId=self.client_id)
        self._shown_url = str(base.with_user(None))
        self._clock = clock or (lambda: datetime.now(UTC))
        self._monotonic = monotonic
        self._rng = rng or random.Random()
        t = self.timings
        self.client = ComfyUIClient(
            name,
            base,
            request_s=t.request_s,
            view_s=t.view_s,
            connect_s=t.connect_s,
            session=session,
        )
        self._tracker = RunTracker(redact=self._redact)
        #: Workflows of the actions this server offers (``img2img``, ``blend``, the buttons').
        self.actions: dict[str, Workflow] = dict(actions or {})
        self.inputs = inputs  # loads a job's input images (None: it takes none)
        self.parents = parents  # finds a result's image for its buttons (None: no buttons)
        self.uploads = ImageUploads(self.client)
        self._backoff = Backoff(
            base=t.backoff_initial_s, cap=t.backoff_max_s, jitter=0.5, rng=self._rng
        )
        self._state = WorkerState.DISABLED if not enabled else WorkerState.CONNECTING
        self._state_event = asyncio.Event()
        self._runs: dict[str, _Run] = {}  # prompt id -> run
        self._by_job: dict[str, _Run] = {}  # job id -> run
        self._abandoned: list[str] = []  # prompt ids we gave up on (delete them when back)
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._heard_ws = 0.0  # monotonic time of the last frame
        self._submitted_at = 0.0  # monotonic time of the last POST /prompt
        self._current: str | None = None  # the prompt the server runs now, as far as we know
        self._offline_since: float | None = None
        self._positions_task: asyncio.Task[None] | None = None
        self._positions_again = False
        self._loops: list[asyncio.Task[None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._done_day: date | None = None
        self._done = 0
        self.latency_ms: float | None = None
        self.last_error: str | None = None
        self.connections = 0  # WebSocket connections made (1 + reconnects)
        self.recovered = 0  # jobs whose outcome came from /history

    def __repr__(self) -> str:
        return f"ComfyUIWorker({self.name!r}, {self._shown_url!r}, state={self.state.value})"

    # -- Worker protocol -------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """How many jobs it may hold at once (beyond one they wait in the server's queue)."""
        return self._concurrency

    @property
    def in_flight(self) -> int:
        """Jobs submitted and not finished."""
        return len(self._by_job)

    @property
    def state(self) -> WorkerState:
        """DISABLED, CONNECTING, READY or OFFLINE."""
        return WorkerState.DISABLED if not self.enabled else self._state

    def can_serve(self, job: Job) -> bool:
        """Text-to-image and re-rolls; image prompts, blends and result buttons where configured."""
        if not self.enabled or job.backend not in (None, KIND):
            return False
        if job.action is Action.BUTTON:
            return job.button in self.actions and self.parents is not None
        return (
            comfy_fits(
                job.meta,
                server=self.name,
                workflow=self.workflow.name,
                has_loader=self.has_loader,
            )
            and workflow_for(job, self.workflow, self.actions, self.inputs is not None) is not None
        )

    def snapshot(self) -> WorkerSnapshot:
        """Its row for `gouache pool status`."""
        state = self.state
        if state is WorkerState.READY and self.in_flight >= self._concurrency:
            state = WorkerState.BUSY
        return WorkerSnapshot(
            name=self.name,
            kind=KIND,
            state=state,
            capacity=self._concurrency,
            in_flight=self.in_flight,
            latency_ms=None if self.latency_ms is None else round(self.latency_ms, 1),
            done_today=self._done_today(),
            last_error=self.last_error,
            reason=None if self.enabled else "disabled in the configuration",
        )

    async def start(self) -> None:
        """Begin connecting (WebSocket loop and health checks); returns at once."""
        if not self.enabled or self._loops:
            return
        self.client.open()
        self._set_state(WorkerState.CONNECTING)
        self._loops = [
            asyncio.create_task(self._connection_loop(), name=f"comfyui-ws-{self.name}"),
            asyncio.create_task(self._health_loop(), name=f"comfyui-health-{self.name}"),
        ]
        log.info("comfyui.starting", worker=self.name, url=self._shown_url)

    async def aclose(self) -> None:
        """Stop the loops, close the socket (and the session if it is ours)."""
        tasks = [*self._loops, *self._tasks]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._loops = []
        self._tasks.clear()
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
            self._ws = None
        await self.client.aclose()
        if self.enabled:
            self._set_state(WorkerState.OFFLINE)

    async def submit(self, job: Job, report: JobSink) -> None:
        """Send the job's workflow; returns once the server queued it (raises if unreachable)."""
        if not self.enabled:
            raise ComfyUIUnreachable(f"The image server {self.name} is disabled.")
        seed = self._seed_for(job)
        prepared = await self._prepare(job, seed)
        if isinstance(prepared, Failed):
            await report(job, prepared)
            return
        graph, names = prepared
        run = _Run(
            job=job,
            report=report,
            prompt_id=str(uuid.uuid4()),
            seed=seed,
            heard=self._monotonic(),
            upload=names[0] if names and self._acts_on_parent(job) else None,
        )
        self._runs[run.prompt_id] = run
        self._by_job[job.id] = run
        self._tracker.track(run.prompt_id, frozenset(graph), gap=self._ws is None)
        self._submitted_at = self._monotonic()
        try:
            reply = await self.client.submit(
                graph, client_id=self.client_id, prompt_id=run.prompt_id
            )
        except ComfyUIError:
            self._forget(run)
            self._abandon(run.prompt_id)  # it may have been queued after all
            raise
        status, answer = reply.status, reply.body
        if status == 200 and isinstance(answer, dict) and answer.get("prompt_id"):
            given = str(answer["prompt_id"])
            if given != run.prompt_id:  # a server that ignores client-chosen ids
                self._runs.pop(run.prompt_id, None)
                self._tracker.rename(run.prompt_id, given)
                run.prompt_id = given
                self._runs[given] = run
            if answer.get("node_errors") and await self._outputs_dropped(run, answer):
                return
            log.info(
                "comfyui.submitted", worker=self.name, job_id=job.id, prompt_id=given, seed=seed
            )
            await self._accept(run)
            if run.cancel_requested and not run.closing:
                self._spawn(self._cancel_on_server(run), "cancel")
            elif not run.closing:
                self._want_positions()
            return
        self._forget(run)
        if status == 400 and isinstance(answer, dict) and "error" in answer:
            await report(job, self._rejected(run, answer))
            return
        raise ComfyUIRejected(
            f"The image server {self.name} answered HTTP {status} to a new prompt."
        )

    async def _prepare(
        self, job: Job, seed: int
    ) -> tuple[dict[str, Any], tuple[str, ...]] | Failed:
        """The graph to send and the uploaded images in it, or why the job cannot run."""
        try:
            names = await self._images_for(job)
            return self._render(job, seed, names), names
        except InvalidParameter as exc:
            return Failed(ErrorCode.INVALID_PARAMETER, exc.message)
        except ParentImageMissing as exc:
            return Failed(ErrorCode.PARENT_UNAVAILABLE, exc.message)
        except ComfyUIError:
            raise
        except GouacheError as exc:  # an input image is gone or no longer passes the checks
            return Failed(ErrorCode.INVALID_PROMPT, exc.message)

    def _rejected(self, run: _Run, answer: Mapping[str, Any]) -> Failed:
        """A 400 to ``POST /prompt``: the job fails, or is retried if the server lost our image."""
        if self._check_upload(run, answer):
            return Failed(ErrorCode.WORKER_ERROR, _LOST_INPUT, retryable=True)
        reason = describe_rejection(answer)
        self.last_error = reason
        log.warning("comfyui.prompt_rejected", worker=self.name, job_id=run.job.id, reason=reason)
        return lost_input(run.job, reason, self.uploads)

    async def _outputs_dropped(self, run: _Run, answer: Mapping[str, Any]) -> bool:
        """A 200 that dropped invalid outputs; True when that was the job's lost input image."""
        reason = describe_rejection(answer)
        log.warning("comfyui.outputs_dropped", worker=self.name, job_id=run.job.id, reason=reason)
        if self._check_upload(run, answer):  # a button's parent image the server lost
            lost = Failed(ErrorCode.WORKER_ERROR, _LOST_INPUT, retryable=True)
        elif lost_file(run.job, reason):
            lost = lost_input(run.job, reason, self.uploads)
        else:
            return False
        self._forget(run)  # its image output is gone: upload again and retry
        self._abandon(run.prompt_id)
        await run.report(run.job, lost)
        return True

    async def cancel(self, job: Job) -> None:
        """Delete the job from the server's queue, or interrupt it if it runs."""
        run = self._by_job.get(job.id)
        if run is None or run.closing:
            return
        run.cancel_requested = True
        run.cancel_deadline = self._monotonic() + self.timings.cancel_grace_s
        if run.accepted:  # else submit() cancels once the server has answered
            await self._cancel_on_server(run)

    # -- helpers for owners and tests ----------------------------------------------------------

    async def wait_for_state(self, *states: WorkerState, timeout: float = 10.0) -> WorkerState:
        """Wait until the worker is in one of ``states``; TimeoutError after ``timeout``."""
        async with asyncio.timeout(timeout):
            while self.state not in states:
                await self._state_event.wait()
        return self.state

    # -- state -----------------------------------------------------------------------------

    def _set_state(self, state: WorkerState) -> None:
        if state is self._state:
            return
        log.info("comfyui.state", worker=self.name, state=state.value, was=self._state.value)
        self._state = state
        event, self._state_event = self._state_event, asyncio.Event()
        event.set()
        self._state_changed()

    def _done_today(self) -> int:
        return self._done if self._done_day == self._clock().date() else 0

    def _count_done(self) -> None:
        today = self._clock().date()
        if self._done_day != today:
            self._done_day, self._done = today, 0
        self._done += 1

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def _describe(self, exc: BaseException) -> str:
        cause = exc.__cause__ or exc
        return clip(self._redact(f"{type(cause).__name__}: {cause}".rstrip(": ")), 300)

    def _reachable(self) -> None:
        if self._offline_since is not None:
            log.info("comfyui.reachable", worker=self.name)
        self._offline_since = None
        self._set_state(WorkerState.READY if self._ws is not None else WorkerState.CONNECTING)

    async def _unreachable(self, reason: str) -> None:
        self.last_error = reason
        now = self._monotonic()
        if self._offline_since is None:
            self._offline_since = now
            log.warning("comfyui.unreachable", worker=self.name, reason=reason)
        self._set_state(WorkerState.OFFLINE)
        if now - self._offline_since >= self.timings.lost_after_s:
            for run in list(self._runs.values()):
                if run.accepted and not run.closing:
                    self._abandon(run.prompt_id)
                    await self._end(run, self._lost(run))

    def _lost(self, run: _Run) -> Failed:
        if run.cancel_requested:
            return Failed(ErrorCode.CANCELED, _CANCELLED)
        return Failed(ErrorCode.WORKER_ERROR, _LOST, retryable=True)

    # -- HTTP ------------------------------------------------------------------------------

    async def _probe(self) -> bool:
        """GET /system_stats: health and latency."""
        started = self._monotonic()
        try:
            await self.client.system_stats()
        except ComfyUIError as exc:
            await self._unreachable(self._describe(exc))
            return False
        self.latency_ms = (self._monotonic() - started) * 1000
        self._reachable()
        return True

    # -- rendering -------------------------------------------------------------------------

    def _seed_for(self, job: Job) -> int:
        if job.params.seed is not None and job.action is not Action.REROLL:
            return job.params.seed
        return self._rng.randint(0, MAX_SEED)

    def _check_upload(self, run: _Run, answer: Mapping[str, Any]) -> bool:
        """Whether the server refused our input image (it lost it): forget it, to send it again."""
        if run.upload is None or run.upload not in describe_rejection(answer):
            return False
        log.warning("comfyui.upload_lost", worker=self.name, image=run.upload)
        self.uploads.forget()
        run.lost_upload = True
        return True

    def _workflow(self, job: Job) -> Workflow | None:
        """A button's action workflow, a configured ``reroll``, else what `workflow_for` says."""
        if job.action is Action.BUTTON:
            return self.actions.get(job.button or "")
        if job.action is Action.REROLL and "reroll" in self.actions and not job.input_images:
            return self.actions["reroll"]
        return workflow_for(job, self.workflow, self.actions, self.inputs is not None)

    def _acts_on_parent(self, job: Job) -> bool:
        workflow = self._workflow(job)
        on_result = job.action is Action.BUTTON or (
            job.action is Action.REROLL and "reroll" in self.actions
        )
        return on_result and workflow is not None and workflow.image_slots > 0

    async def _images_for(self, job: Job) -> tuple[str, ...]:
        """Upload what the job starts from: a button's parent image, or the member's images."""
        if not self._acts_on_parent(job):
            return await prepare_inputs(job, self.inputs, self.uploads)
        if self.parents is None:
            raise ParentImageMissing("This server cannot read the image the button acts on.")
        data = await self.parents.parent_image(job, self.client.session())
        return (await self.uploads.ensure(data),)

    def _render(self, job: Job, seed: int, images: tuple[str, ...] = ()) -> dict[str, Any]:
        workflow = self._workflow(job)
        if workflow is None:
            raise InvalidParameter(f"The image server {self.name} cannot do {job.action.value}.")
        on_parent = self._acts_on_parent(job)
        width = height = None
        if job.params.aspect is not None and not on_parent:
            width, height = workflow.size_for(job.params.aspect)
        image_weight = denoise_for(job.params.image_weight) if images and not on_parent else None
        graph = workflow.render_values(
            RenderValues(
                prompt=job.prompt,
                negative=", ".join(job.params.no) if job.params.no else None,
                seed=seed,
                width=width,
                height=height,
                images=images,
                denoise=image_weight,
            )
        )
        # A chosen checkpoint or LoRAs (channel settings, /imagine model:) go into the graph.
        return bind_models(
            graph, checkpoint=job.meta.get("checkpoint"), loras=job.meta.get("loras") or ()
        )

    # -- signals ---------------------------------------------------------------------------

    async def _report(self, run: _Run, signal: Signal) -> None:
        if not run.accepted:
            run.backlog.append(signal)
            return
        try:
            await run.report(run.job, signal)
        except Exception:  # a broken sink must not stop the socket reader
            log.exception("comfyui.report_failed", worker=self.name, job_id=run.job.id)

    async def _accept(self, run: _Run) -> None:
        await run.report(run.job, Accepted(external_id=run.prompt_id))
        while run.backlog:
            await run.report(run.job, run.backlog.pop(0))
        run.accepted = True

    def _forget(self, run: _Run) -> None:
        self._runs.pop(run.prompt_id, None)
        self._tracker.forget(run.prompt_id)
        if self._by_job.get(run.job.id) is run:
            del self._by_job[run.job.id]

    def _abandon(self, prompt_id: str) -> None:
        self._abandoned.append(prompt_id)
        del self._abandoned[:-_MAX_ABANDONED]

    def _claim(self, run: _Run) -> bool:
        """Take the right to end ``run``; False if another path already did."""
        if run.closing:
            return False
        run.closing = True
        self._tracker.end(run.prompt_id)
        if run.flush is not None:
            run.flush.cancel()
            run.flush = None
        return True

    async def _finish(self, run: _Run, signal: Generated | Failed) -> None:
        self._forget(run)
        if isinstance(signal, Failed) and run.upload is not None and _lost_input(signal):
            # The server lost its input folder (a restart): upload again on the retry.
            self.uploads.forget()
            signal = Failed(signal.code, signal.message, True, signal.detail)
        if isinstance(signal, Generated):
            self._count_done()
        else:
            log.info(
                "comfyui.job_failed",
                worker=self.name,
                job_id=run.job.id,
                prompt_id=run.prompt_id,
                code=signal.code,
                retryable=signal.retryable,
                reason=signal.message,
                detail=signal.detail,
            )
        await self._report(run, signal)

    async def _end(self, run: _Run, signal: Failed) -> None:
        if self._claim(run):
            await self._finish(run, signal)

    async def _progress(self, run: _Run, percent: int, preview: bytes | None = None) -> None:
        """Note progress; report it now, or once ``progress_interval_s`` has passed."""
        run.percent = percent
        if preview is not None:
            run.preview = preview
        run.dirty = True
        wait = run.last_emit + self.timings.progress_interval_s - self._monotonic()
        if wait <= 0:
            await self._flush(run)
        elif run.flush is None:
            run.flush = self._spawn(self._flush_later(run, wait), "progress")

    async def _flush_later(self, run: _Run, delay: float) -> None:
        await asyncio.sleep(delay)
        run.flush = None
        await self._flush(run)

    async def _flush(self, run: _Run) -> None:
        if run.closing or not run.dirty:
            return
        run.dirty = False
        run.last_emit = self._monotonic()
        preview, run.preview = run.preview, None
        await self._report(
            run, Progress(percent=run.percent, preview=preview, external_id=run.prompt_id)
        )

    # -- background tasks ------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None], what: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=f"comfyui-{self.name}-{what}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, ComfyUIError):
            log.warning(
                "comfyui.task_failed",
                worker=self.name,
                task=task.get_name(),
                error=self._describe(exc),
            )
        elif exc is not None:
            log.error("comfyui.task_crashed", worker=self.name, task=task.get_name(), exc_info=exc)

    def _next_delay(self) -> float:
        """The next reconnect delay (jitter: servers restarted together are not hammered together)."""
        delay = self._backoff.next_delay()
        if self._offline_since is not None and any(r.accepted for r in self._runs.values()):
            # Do not sleep past the moment in-flight jobs must be given up.
            due = self._offline_since + self.timings.lost_after_s - self._monotonic()
            delay = min(delay, max(due, 0.01))
        return delay

    async def _connection_loop(self) -> None:
        while True:
            try:
                ws = await self.client.connect(
                    self._ws_url, heartbeat=self.timings.heartbeat_s, max_msg_size=_MAX_WS_MESSAGE
                )
            except ComfyUIUnreachable as exc:
                log.debug("comfyui.ws_connect_failed", worker=self.name, error=self._describe(exc))
                if await self._probe():  # HTTP answers; only the socket refused
                    self.last_error = f"WebSocket: {self._describe(exc)}"
                    await asyncio.sleep(self._next_delay())
                else:
                    await self._until_reachable(self._next_delay())
                continue
            self._backoff.reset()
            self.connections += 1
            self._ws = ws
            self._heard_ws = self._monotonic()
            log.info("comfyui.connected", worker=self.name, connections=self.connections)
            self._reachable()
            self._spawn(self._after_connect(), "reconcile")
            try:
                await self._read(ws)
            finally:
                self._ws = None
                self._tracker.disconnected()
                with contextlib.suppress(Exception):
                    await ws.close()
            log.warning("comfyui.disconnected", worker=self.name, code=ws.close_code)
            if self._state is WorkerState.READY:
                self._set_state(WorkerState.CONNECTING)
            # A drop after a good connection waits the first delay, and the
            # attempts that follow start over from it too.
            delay = self._next_delay()
            self._backoff.reset()
            await self._until_reachable(delay)

    async def _until_reachable(self, delay: float) -> None:
        """Wait ``delay`` before the next connection attempt, or less once HTTP answers.

        The backoff grows while a server is down; probing /system_stats every
        ``offline_probe_s`` meanwhile lets a server that is back be used at once
        instead of after the rest of a backoff of up to ``backoff_max_s``.
        """
        deadline = self._monotonic() + delay
        while (left := deadline - self._monotonic()) > 0:
            if left <= self.timings.offline_probe_s:
                await asyncio.sleep(left)
                return
            await asyncio.sleep(self.timings.offline_probe_s)
            if await self._probe():
                return

    async def _health_loop(self) -> None:
        while True:
            if await self._probe() and self._abandoned and self._ws is not None:
                self._spawn(self._drop_abandoned(), "drop-abandoned")
            now = self._monotonic()
            if (
                self._ws is not None
                and self._heard_ws < self._submitted_at <= now - self.timings.echo_s
            ):
                # Every queue change is broadcast as `status`; silence after a submit
                # means the server no longer knows our socket (a stale socket with our
                # clientId closed after a reconnect). A fresh connection registers it.
                log.warning("comfyui.socket_silent", worker=self.name, after="submit")
                self._submitted_at = 0.0
                self._spawn(self._recycle(), "recycle")
            for run in list(self._runs.values()):
                if not run.accepted or run.closing:
                    continue
                if run.cancel_deadline is not None and now >= run.cancel_deadline:
                    await self._end(run, Failed(ErrorCode.CANCELED, _CANCELLED))
                elif now - run.heard >= self.timings.silence_s:
                    run.heard = now
                    self._spawn(self._reconcile(run, silent=True), "silence")
            await asyncio.sleep(self.timings.health_interval_s)

    async def _drop_abandoned(self) -> None:
        """Delete (or interrupt) prompts we gave up on, so the server does not run them for nobody."""
        if not self._abandoned:
            return
        ids, self._abandoned = self._abandoned, []
        try:
            await self.client.delete(ids)
            queue = await self.client.queue()
            for prompt_id in ids:
                if queue_place(queue, prompt_id)[0] == "running":
                    await self.client.interrupt(prompt_id)
        except ComfyUIError:
            self._abandoned[:0] = ids  # try again when the server answers
            raise

    async def _after_connect(self) -> None:
        """After (re)connecting: drop abandoned prompts; reconcile jobs that lived through a gap."""
        try:
            await self._drop_abandoned()
        except ComfyUIError as exc:
            log.warning("comfyui.drop_failed", worker=self.name, error=self._describe(exc))
        for run in list(self._runs.values()):
            if run.accepted and self._tracker.in_gap(run.prompt_id) and not run.closing:
                try:
                    await self._reconcile(run)
                except ComfyUIError as exc:  # the silence check asks again later
                    log.warning(
                        "comfyui.reconcile_failed",
                        worker=self.name,
                        job_id=run.job.id,
                        error=self._describe(exc),
                    )

    async def _reconcile(self, run: _Run, *, silent: bool = False) -> None:
        """Ask /history (then /queue) what became of ``run`` and report it if it ended."""
        entry = await self.client.history(run.prompt_id)
        where = "absent"
        if entry is None:
            where = queue_place(await self.client.queue(), run.prompt_id)[0]
            if where == "absent":  # it may have finished between the two calls
                entry = await self.client.history(run.prompt_id)
        if run.closing:
            return
        if entry is not None:
            self.recovered += 1
            await self._conclude(run, entry)
        elif where == "absent":
            log.warning("comfyui.prompt_unknown", worker=self.name, prompt_id=run.prompt_id)
            await self._end(run, self._lost(run))
        elif silent and where == "running":
            # A node without progress sends nothing for as long as it runs (tens of
            # seconds is normal), so silence is no sign of a dead socket: keep it and
            # the frames still to come. A dead link is the heartbeat's to find: any
            # frame or pong keeps it alive, a ping unanswered closes it.
            log.debug("comfyui.still_running", worker=self.name, prompt_id=run.prompt_id)

    async def _recycle(self) -> None:
        """Close the socket (not with 1000: we mean to come back); the loop reconnects."""
        if self._ws is not None:
            await self._ws.close(code=4000)

    async def _conclude(self, run: _Run, entry: Mapping[str, Any]) -> None:
        outcome, data = history_outcome(entry)
        if outcome == "success":
            outputs = entry.get("outputs")
            if self._claim(run):
                await self._collect(
                    run, output_files(outputs if isinstance(outputs, Mapping) else {})
                )
        elif outcome == "interrupted":
            await self._end(run, self._interrupted(run))
        else:
            await self._end(run, execution_failure(data, self._redact))

    def _interrupted(self, run: _Run) -> Failed:
        if run.cancel_requested:
            return Failed(ErrorCode.CANCELED, _CANCELLED)
        return Failed(ErrorCode.WORKER_ERROR, "The image server interrupted this image.")

    async def _collect(self, run: _Run, files: list[dict[str, str]]) -> None:
        """Fetch the result files (``run`` is claimed) and report `Generated`."""
        if not files:
            if run.lost_upload:
                await self._finish(run, Failed(ErrorCode.WORKER_ERROR, _LOST_INPUT, True))
                return
            await self._finish(
                run,
                Failed(ErrorCode.WORKER_ERROR, "The workflow finished without saving an image."),
            )
            return
        try:
            images = [await self.client.view(ref) for ref in files]
        except ComfyUIError as exc:
            self.last_error = self._describe(exc)
            await self._finish(run, Failed(ErrorCode.WORKER_ERROR, exc.message, retryable=True))
            return
        meta = {
            "prompt_id": run.prompt_id,
            "files": files,
            "seed": run.seed,
            "workflow": (self._workflow(run.job) or self.workflow).name,
            "buttons": [b.as_dict() for b in comfyui_buttons([*self.actions, "reroll"])],
        }
        log.info("comfyui.generated", worker=self.name, job_id=run.job.id, images=len(images))
        await self._finish(run, Generated(images=images, external_id=run.prompt_id, meta=meta))

    async def _cancel_on_server(self, run: _Run) -> None:
        where = queue_place(await self.client.queue(), run.prompt_id)[0]
        if where == "pending":
            await self.client.delete([run.prompt_id])
            where = queue_place(await self.client.queue(), run.prompt_id)[0]
            if where == "absent" and not run.started:
                log.info("comfyui.deleted", worker=self.name, job_id=run.job.id)
                await self._reconcile(run)  # in /history if it slipped through, else cancelled
                return
        if where == "running":
            log.info("comfyui.interrupting", worker=self.name, job_id=run.job.id)
            await self.client.interrupt(run.prompt_id)
            return  # execution_interrupted (or success, if too late) follows
        await self._reconcile(run)

    def _want_positions(self) -> None:
        if self._positions_task is None or self._positions_task.done():
            self._positions_task = self._spawn(self._refresh_positions(), "positions")
        else:
            self._positions_again = True

    async def _refresh_positions(self) -> None:
        while True:
            self._positions_again = False
            waiting = [r for r in self._runs.values() if r.accepted and not r.started]
            if not waiting:
                return
            queue = await self.client.queue()
            for run in waiting:
                where, ahead = queue_place(queue, run.prompt_id)
                if run.started or run.closing or where != "pending" or ahead < 1:
                    continue
                if ahead != run.position:
                    run.position = ahead
                    await self._report(
                        run, Waiting(position=ahead, message=f"{ahead} ahead on the image server")
                    )
            if not self._positions_again:
                return

    # -- WebSocket messages --------------------------------------------------------------------

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            self._heard_ws = self._monotonic()
            try:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    await self._apply(self._tracker.receive(json.loads(msg.data)))
                elif msg.type is aiohttp.WSMsgType.BINARY:
                    await self._apply(self._tracker.receive_binary(msg.data))
                elif msg.type is aiohttp.WSMsgType.ERROR:
                    break
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                log.warning("comfyui.bad_message", worker=self.name, error=str(exc))

    async def _apply(self, effects: list[Effect]) -> None:  # noqa: PLR0912
        """Carry out what the tracker made of a message."""
        for effect in effects:
            if isinstance(effect, QueueChanged):
                if any(r.accepted and not r.started for r in self._runs.values()):
                    self._want_positions()
                continue
            if isinstance(effect, Unknown):
                log.debug("comfyui.unknown_prompt", worker=self.name, prompt_id=effect.prompt_id)
                continue
            run = self._runs.get(effect.prompt_id)
            if run is None or run.closing:
                continue
            match effect:
                case Heard():
                    run.heard = self._monotonic()
                case Started():
                    run.started = True
                case Progressed(percent=percent, preview=preview):
                    await self._progress(run, percent, preview)
                case Finished(files=files):
                    if self._claim(run):
                        self._spawn(self._collect(run, files), "collect")
                case Ended():
                    self._spawn(self._reconcile(run), "done")
                case Errored(failed=failed):
                    await self._end(run, failed)
                case Interrupted():
                    await self._end(run, self._interrupted(run))


_LOST_INPUT = "The image server lost the input image; it is sent again on the retry."


def _lost_input(failed: Failed) -> bool:
    """Whether a failure says LoadImage found no such file (the server lost our upload)."""
    text = f"{failed.message} {failed.detail or ''}"
    return "No such file" in text or "Invalid image file" in text
