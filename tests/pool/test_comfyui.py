"""`ComfyUIWorker` against the ComfyUI stand-in (real HTTP + WebSocket on loopback).

Timing-dependent scenarios hold the stand-in at an execution checkpoint
(`ComfyUISandbox.pause_on`) instead of racing the clock; every wait has a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from PIL import Image

from gouache.errors import ConfigError, WorkerUnavailable
from gouache.events import EventBus, Subscription
from gouache.jobs import Action, ErrorCode, Job, JobEventKind, JobState
from gouache.params import MAX_SEED, Params
from gouache.pool.base import (
    Accepted,
    Failed,
    Generated,
    Progress,
    Signal,
    Waiting,
    Worker,
    WorkerState,
)
from gouache.pool.comfyui import (
    ComfyUIRejected,
    ComfyUITimings,
    ComfyUIUnreachable,
    ComfyUIWorker,
)
from gouache.pool.pool import Pool
from gouache.pool.workflows import Workflow, load_shipped
from gouache.queue.dispatcher import AdaptiveLimit, Dispatcher, StageTimeouts
from gouache.storage.base import Store
from gouache.storage.images import ImageStore
from gouache_sandbox.comfyui import Checkpoint, ComfyUISandbox, Faults
from tests.conftest import StoreFactory

S = TypeVar("S", bound=Signal)

FAST = ComfyUITimings(
    request_s=5,
    view_s=5,
    connect_s=2,
    heartbeat_s=5,
    health_interval_s=0.2,
    backoff_initial_s=0.02,
    backoff_max_s=0.2,
    lost_after_s=0.0,
    silence_s=5,
    progress_interval_s=0.0,
    cancel_grace_s=5,
)
SIZE = 96
STEPS = 4


def fast_sdxl() -> Workflow:
    """The shipped SDXL workflow, small and with few steps (the stand-in draws every step)."""
    shipped = load_shipped("default_sdxl")
    graph = shipped.graph
    graph["3"]["inputs"]["steps"] = STEPS
    graph["5"]["inputs"].update(width=SIZE, height=SIZE)
    bindings = {
        name: [{"node": b.node, "input": b.input} for b in targets]
        for name, targets in shipped.bindings.items()
    }
    return Workflow("fast_sdxl", graph, bindings, base_resolution=SIZE)


def failing_workflow() -> Workflow:
    """Built-in nodes plus ComfyUI's TestSyncError, which raises at run time."""
    graph = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": 0},
        },
        "2": {"class_type": "TestSyncError", "inputs": {"value": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}},
        "4": {"class_type": "PrimitiveString", "inputs": {"value": ""}},
        "5": {"class_type": "PreviewAny", "inputs": {"source": ["4", 0]}},
    }
    return Workflow("failing", graph, {"prompt": {"node": "4", "input": "value"}})


def at_sampler_step(step: int) -> Callable[[Checkpoint], bool]:
    return lambda cp: cp.class_type == "KSampler" and cp.step == step


class Sink:
    """A `JobSink` that records every signal and lets a test wait for one."""

    def __init__(self) -> None:
        self.log: list[tuple[str, Signal]] = []
        self._changed = asyncio.Condition()

    async def __call__(self, job: Job, signal: Signal) -> None:
        async with self._changed:
            self.log.append((job.id, signal))
            self._changed.notify_all()

    def of(self, job: Job) -> list[Signal]:
        return [s for j, s in self.log if j == job.id]

    async def first(self, job: Job, kind: type[S], timeout: float = 10) -> S:
        def find() -> S | None:
            return next((s for s in self.of(job) if isinstance(s, kind)), None)

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: find() is not None), timeout)
        found = find()
        assert found is not None
        return found

    async def final(self, job: Job, timeout: float = 10) -> Generated | Failed:
        def find() -> Generated | Failed | None:
            return next((s for s in self.of(job) if isinstance(s, Generated | Failed)), None)

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: find() is not None), timeout)
        found = find()
        assert found is not None
        return found


@contextlib.asynccontextmanager
async def running(
    comfy: ComfyUISandbox, name: str = "gpu1", **kwargs: Any
) -> AsyncIterator[ComfyUIWorker]:
    kwargs.setdefault("workflow", fast_sdxl())
    kwargs.setdefault("timings", FAST)
    worker = ComfyUIWorker(name, comfy.url, **kwargs)
    await worker.start()
    try:
        await worker.wait_for_state(WorkerState.READY)
        yield worker
    finally:
        await worker.aclose()


@pytest.fixture
async def comfy() -> AsyncIterator[ComfyUISandbox]:
    async with ComfyUISandbox() as sandbox:
        yield sandbox


def history_graph(comfy: ComfyUISandbox, prompt_id: str) -> dict[str, Any]:
    graph: dict[str, Any] = comfy.engine.history[prompt_id]["prompt"][2]
    return graph


# -- the happy path ---------------------------------------------------------------------------


async def test_job_runs_with_progress_previews_and_final_image(comfy: ComfyUISandbox) -> None:
    sink = Sink()
    prompt = 'a "quoted" {cat} \\ with\nnewlines and ünïcødé ✓'
    async with running(comfy) as worker:
        assert isinstance(worker, Worker)
        job = Job(user_id=1, prompt=prompt)
        await worker.submit(job, sink)
        assert worker.in_flight == 1
        done = await sink.final(job)
        signals = sink.of(job)
        assert isinstance(done, Generated), done
        assert isinstance(signals[0], Accepted) and signals[0].external_id
        prompt_id = signals[0].external_id
        progress = [s for s in signals if isinstance(s, Progress)]
        percents = [p.percent for p in progress]
        assert len(progress) >= STEPS and percents == sorted(percents)
        assert percents[-1] < 100 and percents[-1] >= 50
        previews = [p.preview for p in progress if p.preview is not None]
        assert len(previews) == STEPS  # one JPEG per sampler step
        assert all(p.startswith(b"\xff\xd8\xff") for p in previews)
        assert signals[-1] is done
        # The final image: PNG bytes identical to the file the server saved.
        assert len(done.images) == 1 and done.external_id == prompt_id
        files = done.meta["files"]
        assert files == [{"filename": files[0]["filename"], "subfolder": "", "type": "output"}]
        saved = comfy.files.dirs["output"] / files[0]["filename"]
        assert done.images[0] == saved.read_bytes()
        with Image.open(io.BytesIO(done.images[0])) as img:
            assert img.format == "PNG" and img.size == (SIZE, SIZE)
        # Values went into the graph as values: the prompt verbatim, a random seed.
        assert done.meta["prompt_id"] == prompt_id and done.meta["workflow"] == "fast_sdxl"
        seed = done.meta["seed"]
        assert isinstance(seed, int) and 0 <= seed <= MAX_SEED
        graph = history_graph(comfy, prompt_id)
        assert graph["6"]["inputs"]["text"] == prompt
        assert graph["3"]["inputs"]["seed"] == seed
        extra = comfy.engine.history[prompt_id]["prompt"][3]
        assert extra == {"client_id": worker.client_id}
        snap = worker.snapshot()
        assert worker.in_flight == 0 and snap.in_flight == 0 and snap.done_today == 1
        assert snap.state is WorkerState.READY and snap.kind == "comfyui"
        assert snap.latency_ms is not None and snap.latency_ms >= 0


async def test_seed_and_aspect_come_from_the_job(comfy: ComfyUISandbox) -> None:
    sink = Sink()
    async with running(comfy) as worker:
        job = Job(user_id=1, prompt="wide", params=Params(seed=42, aspect=(2, 1), no=("text",)))
        await worker.submit(job, sink)
        done = await sink.final(job)
        assert isinstance(done, Generated) and done.meta["seed"] == 42
        graph = history_graph(comfy, done.meta["prompt_id"])
        assert graph["3"]["inputs"]["seed"] == 42
        assert graph["7"]["inputs"]["text"] == "text"  # --no becomes the negative prompt
        width, height = worker.workflow.size_for((2, 1))
        assert (graph["5"]["inputs"]["width"], graph["5"]["inputs"]["height"]) == (width, height)
        with Image.open(io.BytesIO(done.images[0])) as img:
            assert img.size == (width, height)
        # A re-roll ignores the parent's seed: it asks for a new picture.
        reroll = Job(user_id=1, prompt="wide", params=Params(seed=42), action=Action.REROLL)
        assert worker.can_serve(reroll)
        assert not worker.can_serve(Job(user_id=1, prompt="x", action=Action.UPSCALE, index=1))
        assert not worker.can_serve(Job(user_id=1, prompt="x", backend="midjourney"))
        await worker.submit(reroll, sink)
        again = await sink.final(reroll)
        assert isinstance(again, Generated) and again.meta["seed"] != 42


async def test_seeds_come_from_the_injected_rng(comfy: ComfyUISandbox) -> None:
    sink = Sink()
    async with running(comfy, rng=random.Random(7)) as worker:
        job = Job(user_id=1, prompt="x")
        await worker.submit(job, sink)
        done = await sink.final(job)
        assert isinstance(done, Generated)
        assert done.meta["seed"] == random.Random(7).randint(0, MAX_SEED)


async def test_silence_is_measured_on_the_injected_clock(comfy: ComfyUISandbox) -> None:
    """A job nobody heard of for ``silence_s`` is looked up: the clock, not real time, decides."""
    now = 1000.0
    sink = Sink()
    watchful = replace(FAST, silence_s=60.0, health_interval_s=0.02)
    async with running(comfy, timings=watchful, monotonic=lambda: now) as worker:
        job = Job(user_id=1, prompt="x")
        comfy.pause_on(lambda cp: cp.class_type == "VAEDecode")
        await worker.submit(job, sink)
        await comfy.wait_paused()
        prompt_id = (await sink.first(job, Accepted)).external_id
        # Many health checks later, the frozen clock says no time passed: no lookup.
        await comfy.wait_requests("/system_stats", comfy.requests["/system_stats"] + 5)
        assert comfy.requests[f"/history/{prompt_id}"] == 0
        now += 60.0
        await comfy.wait_requests(f"/history/{prompt_id}", 1)
        comfy.resume()
        assert isinstance(await sink.final(job), Generated)


async def test_progress_is_throttled_per_job(comfy: ComfyUISandbox) -> None:
    sink = Sink()
    slow_ui = replace(FAST, progress_interval_s=60.0)
    async with running(comfy, timings=slow_ui) as worker:
        job = Job(user_id=1, prompt="x")
        await worker.submit(job, sink)
        assert isinstance(await sink.final(job), Generated)
        kinds = [type(s).__name__ for s in sink.of(job)]
        assert kinds == ["Accepted", "Progress", "Generated"]


# -- the server's queue and cancelling ------------------------------------------------------------


async def test_waiting_position_then_cancel_pending_and_running(comfy: ComfyUISandbox) -> None:
    sink = Sink()
    async with running(comfy, concurrency=2) as worker:
        first, second = Job(user_id=1, prompt="first"), Job(user_id=2, prompt="second")
        comfy.pause_on(at_sampler_step(1))
        await worker.submit(first, sink)
        await comfy.wait_paused()
        await worker.submit(second, sink)
        waiting = await sink.first(second, Waiting)
        assert waiting.position == 1  # the running prompt is ahead of it
        assert not any(isinstance(s, Waiting) for s in sink.of(first))
        assert worker.snapshot().state is WorkerState.BUSY and worker.in_flight == 2
        second_id = sink.of(second)[0]
        assert isinstance(second_id, Accepted) and second_id.external_id
        # Pending: deleted from the server's queue; it never runs.
        await worker.cancel(second)
        cancelled = await sink.final(second)
        assert isinstance(cancelled, Failed) and cancelled.code == ErrorCode.CANCELED
        assert not cancelled.retryable
        assert comfy.engine.pending() == []
        # Running: interrupted at the next progress tick.
        await worker.cancel(first)
        comfy.resume()
        stopped = await sink.final(first)
        assert isinstance(stopped, Failed) and stopped.code == ErrorCode.CANCELED
        first_id = sink.of(first)[0]
        assert isinstance(first_id, Accepted) and first_id.external_id
        await comfy.wait_idle()
        history = comfy.engine.history
        assert second_id.external_id not in history
        messages = [m[0] for m in history[first_id.external_id]["status"]["messages"]]
        assert "execution_interrupted" in messages
        assert worker.in_flight == 0


async def test_interrupt_that_lands_too_late_still_delivers_the_image() -> None:
    async with ComfyUISandbox(faults=Faults(interrupt="ignore")) as comfy:
        sink = Sink()
        async with running(comfy) as worker:
            job = Job(user_id=1, prompt="stubborn")
            comfy.pause_on(at_sampler_step(2))
            await worker.submit(job, sink)
            await comfy.wait_paused()
            await worker.cancel(job)
            comfy.resume()
            assert isinstance(await sink.final(job), Generated)


# -- errors -------------------------------------------------------------------------------------


async def test_node_errors_fail_the_job_with_a_readable_reason() -> None:
    async with ComfyUISandbox(checkpoints=()) as comfy:  # the SDXL checkpoint is missing
        sink = Sink()
        async with running(comfy) as worker:
            job = Job(user_id=1, prompt="x")
            await worker.submit(job, sink)
            assert [type(s) for s in sink.of(job)] == [Failed]
            failed = sink.of(job)[0]
            assert isinstance(failed, Failed)
            assert failed.code == ErrorCode.INVALID_PROMPT and not failed.retryable
            assert failed.message.startswith("ComfyUI rejected the workflow")
            assert "CheckpointLoaderSimple" in failed.message and "ckpt_name" in failed.message
            assert worker.in_flight == 0 and worker.snapshot().last_error == failed.message
            assert worker.state is WorkerState.READY  # the server is fine; the graph is not


async def test_execution_error_fails_the_job(comfy: ComfyUISandbox) -> None:
    sink = Sink()
    async with running(comfy, workflow=failing_workflow()) as worker:
        job = Job(user_id=1, prompt="boom")
        await worker.submit(job, sink)
        failed = await sink.final(job)
        assert isinstance(sink.of(job)[0], Accepted)
        assert isinstance(failed, Failed) and failed.code == ErrorCode.WORKER_ERROR
        assert not failed.retryable
        # The member reads one short line: where and what kind, no paths, no traceback.
        assert failed.message == "The image server failed in TestSyncError (RuntimeError)."
        # The owner gets all of it: the message and the server's own paths.
        assert failed.detail is not None
        assert "Intentional sync execution error" in failed.detail
        assert str(comfy.files.root.resolve()) in failed.detail


async def test_http_500_on_submit_raises_and_holds_nothing(comfy: ComfyUISandbox) -> None:
    async with running(comfy) as worker:
        comfy.faults.http_500["/prompt"] = 1
        with pytest.raises(ComfyUIRejected, match="HTTP 500"):
            await worker.submit(Job(user_id=1, prompt="x"), Sink())
        assert worker.in_flight == 0


async def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ConfigError, match="url"):
        ComfyUIWorker("w", "ftp://example", workflow=fast_sdxl())
    with pytest.raises(ConfigError, match="concurrency"):
        ComfyUIWorker("w", "http://127.0.0.1:1", workflow=fast_sdxl(), concurrency=0)
    worker = ComfyUIWorker(
        "w", "http://owner:hunter2@127.0.0.1:1", workflow=fast_sdxl(), enabled=False
    )
    await worker.start()
    assert worker.state is WorkerState.DISABLED and not worker.can_serve(Job(user_id=1, prompt="x"))
    assert "hunter2" not in repr(worker)
    assert worker.snapshot().reason
    with pytest.raises(ComfyUIUnreachable):
        await worker.submit(Job(user_id=1, prompt="x"), Sink())
    await worker.aclose()


# -- gaps, crashes, health ------------------------------------------------------------------------


async def test_job_finished_while_disconnected_is_picked_up_from_history(
    comfy: ComfyUISandbox,
) -> None:
    sink = Sink()
    async with running(comfy) as worker:
        job = Job(user_id=1, prompt="gap")
        comfy.pause_on(lambda cp: cp.class_type == "VAEDecode")
        await worker.submit(job, sink)
        await comfy.wait_paused()
        comfy.faults.http_500["/ws"] = -1  # the socket cannot come back for now
        comfy.drop_websockets()
        await worker.wait_for_state(WorkerState.CONNECTING)
        comfy.resume()
        await comfy.wait_idle()  # finished, and every message about it was dropped
        assert not any(isinstance(s, Generated | Failed) for s in sink.of(job))
        del comfy.faults.http_500["/ws"]
        done = await sink.final(job)
        assert isinstance(done, Generated) and len(done.images) == 1
        assert done.images[0].startswith(b"\x89PNG")
        assert worker.recovered == 1 and worker.connections == 2
        assert worker.state is WorkerState.READY


async def test_socket_silenced_by_a_stale_client_is_reopened(comfy: ComfyUISandbox) -> None:
    """ComfyUI's quirk: a second socket with our clientId that closes unregisters ours."""
    sink = Sink()
    quick = replace(FAST, echo_s=0.3, silence_s=60)
    async with running(comfy, timings=quick) as worker:
        async with aiohttp.ClientSession() as http:
            stale = await http.ws_connect(comfy.ws_url(worker.client_id))
            await stale.receive_json(timeout=5)  # the server registered it (status)
            await stale.close()  # ...and now unregisters the id: our socket hears nothing
        job = Job(user_id=1, prompt="still there?")
        await worker.submit(job, sink)
        done = await sink.final(job)
        assert isinstance(done, Generated) and done.images[0].startswith(b"\x89PNG")
        assert worker.connections == 2  # the silent socket was replaced


async def test_a_long_silent_node_keeps_the_socket_and_its_frames(comfy: ComfyUISandbox) -> None:
    """A node without progress sends nothing while it runs; that is not a dead socket."""
    sink = Sink()
    watchful = replace(FAST, silence_s=0.1, health_interval_s=0.02)
    async with running(comfy, timings=watchful) as worker:
        job = Job(user_id=1, prompt="slow decode")
        comfy.pause_on(lambda cp: cp.class_type == "VAEDecode")
        await worker.submit(job, sink)
        await comfy.wait_paused()
        prompt_id = (await sink.first(job, Accepted)).external_id
        # Silent for several of the worker's silence checks: each asks /history
        # (and /queue, which says the prompt still runs).
        await comfy.wait_requests(f"/history/{prompt_id}", 4)
        assert comfy.requests["/queue"] >= 3
        comfy.resume()
        done = await sink.final(job)
        assert isinstance(done, Generated)
        assert worker.connections == 1  # the socket was kept...
        assert worker.recovered == 0  # ...and the outcome came over it, not from /history


async def test_a_link_that_stops_answering_pings_is_replaced(comfy: ComfyUISandbox) -> None:
    """Life is any frame or pong: with neither for a heartbeat, the socket is opened again."""
    async with running(comfy, timings=replace(FAST, heartbeat_s=0.5)) as worker:
        assert worker.connections == 1
        comfy.faults.answer_pings = False
        await worker.wait_for_state(WorkerState.CONNECTING)
        comfy.faults.answer_pings = True
        await worker.wait_for_state(WorkerState.READY)
        assert worker.connections >= 2
        sink = Sink()
        job = Job(user_id=1, prompt="after the gap")
        await worker.submit(job, sink)
        assert isinstance(await sink.final(job), Generated)


async def test_server_crash_mid_job_is_a_retryable_failure_then_it_comes_back() -> None:
    async with ComfyUISandbox(faults=Faults(crash_on_node="KSampler")) as comfy:
        sink = Sink()
        async with running(comfy) as worker:
            job = Job(user_id=1, prompt="x")
            await worker.submit(job, sink)
            failed = await sink.final(job)
            assert isinstance(failed, Failed) and failed.retryable
            assert failed.code == ErrorCode.WORKER_ERROR
            assert worker.state is WorkerState.OFFLINE and worker.in_flight == 0
            snap = worker.snapshot()
            assert snap.state is WorkerState.OFFLINE and snap.last_error
            comfy.faults.crash_on_node = None
            await comfy.restart()
            await worker.wait_for_state(WorkerState.READY)
            again = Job(user_id=1, prompt="x")
            await worker.submit(again, sink)
            assert isinstance(await sink.final(again), Generated)


async def test_server_that_restarted_and_forgot_the_job_fails_it_retryably(
    comfy: ComfyUISandbox,
) -> None:
    sink = Sink()
    patient = replace(FAST, lost_after_s=30.0)
    async with running(comfy, timings=patient) as worker:
        job = Job(user_id=1, prompt="x")
        comfy.pause_on(at_sampler_step(1))
        await worker.submit(job, sink)
        await comfy.wait_paused()
        await comfy.crash()
        await comfy.restart()  # same port, empty queue and history
        failed = await sink.final(job)
        assert isinstance(failed, Failed) and failed.retryable
        await worker.wait_for_state(WorkerState.READY)


async def test_health_goes_offline_and_back(comfy: ComfyUISandbox) -> None:
    states: list[WorkerState] = []
    async with running(comfy) as worker:
        worker.add_listener(lambda: states.append(worker.state))
        await comfy.crash()
        await worker.wait_for_state(WorkerState.OFFLINE)
        assert worker.snapshot().last_error
        assert worker.snapshot().state is WorkerState.OFFLINE
        await comfy.restart()
        await worker.wait_for_state(WorkerState.READY)
        assert states[0] in (WorkerState.CONNECTING, WorkerState.OFFLINE)
        assert WorkerState.OFFLINE in states and states[-1] is WorkerState.READY
        assert worker.connections == 2


async def test_a_server_back_from_an_outage_is_used_again_at_once(comfy: ComfyUISandbox) -> None:
    """The reconnect backoff may have grown long; a short probe of /system_stats cuts it."""
    patient = replace(FAST, backoff_initial_s=60.0, backoff_max_s=60.0, offline_probe_s=0.05)
    async with running(comfy, timings=patient) as worker:
        await comfy.crash()
        await worker.wait_for_state(WorkerState.OFFLINE)
        await comfy.restart()
        # Without the probe the worker would sleep 30-60 s before its next try.
        await worker.wait_for_state(WorkerState.READY, timeout=10)
        assert worker.connections == 2
        sink = Sink()
        job = Job(user_id=1, prompt="back")
        await worker.submit(job, sink)
        assert isinstance(await sink.final(job), Generated)


# -- several servers -------------------------------------------------------------------------------


async def test_pool_places_on_the_least_loaded_server() -> None:
    async with ComfyUISandbox() as one, ComfyUISandbox() as two:
        a = ComfyUIWorker("a", one.url, workflow=fast_sdxl(), concurrency=2, timings=FAST)
        b = ComfyUIWorker("b", two.url, workflow=fast_sdxl(), concurrency=1, timings=FAST)
        pool = Pool([a, b])
        await pool.start()
        try:
            await a.wait_for_state(WorkerState.READY)
            await b.wait_for_state(WorkerState.READY)
            one.pause_on(at_sampler_step(1))
            two.pause_on(at_sampler_step(1))
            sink = Sink()
            jobs = [Job(user_id=i, prompt=f"job {i}") for i in range(3)]
            placed = [(await pool.submit(job, sink)).name for job in jobs]
            assert placed == ["a", "b", "a"]
            await one.wait_paused()
            await two.wait_paused()
            with pytest.raises(WorkerUnavailable):
                await pool.submit(Job(user_id=9, prompt="no room"), sink)
            assert (a.in_flight, b.in_flight) == (2, 1)
            rows = {r.name: r for r in pool.snapshot()}
            assert rows["a"].state is WorkerState.BUSY and rows["b"].state is WorkerState.BUSY
            one.resume()
            two.resume()
            for job in jobs:
                assert isinstance(await sink.final(job), Generated)
        finally:
            await pool.aclose()


# -- failover through the dispatcher -----------------------------------------------------------------


@contextlib.asynccontextmanager
async def dispatching(
    store: Store,
    tmp_path: Path,
    servers: dict[str, ComfyUISandbox],
    workflow: Callable[[], Workflow] = fast_sdxl,
) -> AsyncIterator[Subscription]:
    workers = [
        ComfyUIWorker(name, comfy.url, workflow=workflow(), timings=FAST)
        for name, comfy in servers.items()
    ]
    pool = Pool(workers)
    await pool.start()
    bus = EventBus()
    events = bus.subscribe(size=10_000)
    dispatcher = Dispatcher(
        store,
        pool,
        ImageStore(tmp_path / "images"),
        bus,
        timeouts=StageTimeouts(submit=5, start=5, run=5, store=5),
        lease_s=30,
        max_attempts=2,  # a job whose server died is tried once more, elsewhere
        limit=AdaptiveLimit(initial=4, cooldown_s=0),
    )
    try:
        for worker in workers:
            await worker.wait_for_state(WorkerState.READY)
        await dispatcher.start()
        yield events
    finally:
        await dispatcher.aclose()
        await pool.aclose()


async def follow(events: Subscription, job_id: str, timeout: float = 15) -> list[JobState]:
    """The states a job goes through, up to its terminal one."""
    states: list[JobState] = []
    async with asyncio.timeout(timeout):
        while not states or not states[-1].terminal:
            event = await events.get()
            if event.job_id == job_id and event.kind is JobEventKind.STATE:
                states.append(event.state)
    return states


async def test_job_on_a_dying_server_is_requeued_once_and_succeeds_elsewhere(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    store = await make_store(max_attempts=2)
    async with (
        ComfyUISandbox(faults=Faults(crash_on_node="KSampler")) as dying,
        ComfyUISandbox() as healthy,
        dispatching(store, tmp_path, {"a": dying, "b": healthy}) as events,
    ):
        job = (await store.enqueue(Job(user_id=7, prompt="survivor"), daily_limit=5)).job
        states = await follow(events, job.id)
        assert dying.crashed.is_set()
        assert states.count(JobState.SUBMITTED) == 2 and JobState.QUEUED in states
        assert states[-1] is JobState.SUCCEEDED
        final = await store.get(job.id)
        assert final is not None and final.worker == "b" and final.attempts == 2
        assert len(final.results) == 1 and final.meta["prompt_id"] == final.external_id
        assert (await store.quota(7, daily_limit=5)).used == 1


async def test_job_fails_and_is_refunded_when_both_servers_die(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    store = await make_store(max_attempts=2)
    async with (
        ComfyUISandbox(faults=Faults(crash_on_node="KSampler")) as one,
        ComfyUISandbox(faults=Faults(crash_on_node="KSampler")) as two,
        dispatching(store, tmp_path, {"a": one, "b": two}) as events,
    ):
        job = (await store.enqueue(Job(user_id=7, prompt="doomed"), daily_limit=5)).job
        states = await follow(events, job.id)
        assert one.crashed.is_set() and two.crashed.is_set()
        assert states[-1] is JobState.FAILED and states.count(JobState.SUBMITTED) == 2
        final = await store.get(job.id)
        assert final is not None and final.attempts == 2
        assert final.error_code == ErrorCode.ATTEMPTS_EXHAUSTED
        assert final.error_message and "went away" in final.error_message
        assert (await store.quota(7, daily_limit=5)).used == 0


async def test_an_execution_error_is_stored_whole_for_the_owner_and_short_for_the_member(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    store = await make_store()
    async with (
        ComfyUISandbox() as comfy,
        dispatching(store, tmp_path, {"a": comfy}, workflow=failing_workflow) as events,
    ):
        job = (await store.enqueue(Job(user_id=7, prompt="boom"), daily_limit=5)).job
        states = await follow(events, job.id)
        assert states[-1] is JobState.FAILED
        final = await store.get(job.id)
        assert final is not None and final.error_code == ErrorCode.WORKER_ERROR
        assert final.error_message == "The image server failed in TestSyncError (RuntimeError)."
        assert final.error_detail is not None
        assert "RuntimeError: Intentional sync execution error" in final.error_detail
        assert "Traceback:" in final.error_detail
        assert str(comfy.files.root.resolve()) in final.error_detail
