"""An in-process stand-in image backend: the `Worker` protocol with no network.

Used by the dispatcher tests and `benchmarks/e2e.py`, where the subject is
the queue and the dispatcher, not a backend's wire protocol (the Midjourney
and ComfyUI stand-ins cover those). It can be told to be slow, to fail, to
hang, or to say "Job queued", so every path of the dispatcher is reachable.
"""

from __future__ import annotations

import asyncio
import io
import zlib
from dataclasses import dataclass, field

from gouache.jobs import ErrorCode, Job
from gouache.pool.base import (
    Accepted,
    Failed,
    Generated,
    JobSink,
    Progress,
    StateListeners,
    Waiting,
    WorkerSnapshot,
    WorkerState,
)


def tiny_png(seed: int) -> bytes:
    """A valid 8×8 PNG whose colour depends on ``seed`` (no Pillow needed on the hot path)."""
    r, g, b = seed & 0xFF, (seed >> 8) & 0xFF, (seed >> 16) & 0xFF
    raw = b"".join(b"\x00" + bytes((r, g, b)) * 8 for _ in range(8))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = (8).to_bytes(4, "big") * 2 + bytes((8, 2, 0, 0, 0))
    out = io.BytesIO()
    out.write(b"\x89PNG\r\n\x1a\n")
    out.write(chunk(b"IHDR", header))
    out.write(chunk(b"IDAT", zlib.compress(raw)))
    out.write(chunk(b"IEND", b""))
    return out.getvalue()


@dataclass
class Behaviour:
    """What the stand-in does with the next jobs (tests flip these)."""

    steps: int = 2
    step_delay_s: float = 0.0
    fail_next: int = 0
    fail_code: ErrorCode = ErrorCode.WORKER_ERROR
    fail_retryable: bool = False
    hang_next: int = 0
    queued_notice_next: int = 0
    refuse_submit_next: int = 0
    kinds: set[str] = field(default_factory=lambda: {"instant"})


class InstantWorker(StateListeners):
    """A `Worker` that "generates" a tiny PNG after a few progress steps."""

    def __init__(
        self, name: str, *, capacity: int = 4, kind: str = "instant", latency_ms: float = 0.0
    ) -> None:
        self.name = name
        self.kind = kind
        self._capacity = capacity
        self._latency_ms = latency_ms
        self._state = WorkerState.CONNECTING
        self.reason: str | None = None
        self.behaviour = Behaviour(kinds={kind})
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.submitted: list[str] = []
        self.cancelled: list[str] = []
        self.cancel_seen = asyncio.Event()
        self.done = 0

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    @property
    def state(self) -> WorkerState:
        return self._state

    def set_state(self, state: WorkerState, reason: str | None = None) -> None:
        """Change health (as a real backend's connection would)."""
        self._state, self.reason = state, reason
        self._state_changed()

    async def start(self) -> None:
        self.set_state(WorkerState.READY)

    async def aclose(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        self._tasks.clear()
        self._state = WorkerState.OFFLINE

    def can_serve(self, job: Job) -> bool:
        return job.backend is None or job.backend in self.behaviour.kinds

    def snapshot(self) -> WorkerSnapshot:
        return WorkerSnapshot(
            name=self.name,
            kind=self.kind,
            state=self._state,
            capacity=self._capacity,
            in_flight=self.in_flight,
            done_today=self.done,
            latency_ms=self._latency_ms,
            reason=self.reason,
        )

    async def submit(self, job: Job, report: JobSink) -> None:
        b = self.behaviour
        if b.refuse_submit_next > 0:
            b.refuse_submit_next -= 1
            raise ConnectionError("backend refused the submission")
        self.submitted.append(job.id)
        task = asyncio.create_task(self._run(job, report))
        self._tasks[job.id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(job.id, None))

    async def _run(self, job: Job, report: JobSink) -> None:
        """What the backend does with one job (subclasses draw other pictures or pace)."""
        b = self.behaviour
        await report(job, Accepted(external_id=f"{self.name}-{job.id[:8]}"))
        if b.hang_next > 0:
            b.hang_next -= 1
            await asyncio.Event().wait()  # never answers; the stage timeout must catch it
        if b.queued_notice_next > 0:
            b.queued_notice_next -= 1
            await report(job, Waiting(position=1, message="Job queued"))
        if b.fail_next > 0:
            b.fail_next -= 1
            await report(
                job,
                Failed(b.fail_code, "The stand-in failed on purpose.", retryable=b.fail_retryable),
            )
            return
        for step in range(1, b.steps + 1):
            if b.step_delay_s:
                await asyncio.sleep(b.step_delay_s)
            await report(job, Progress(percent=step * 100 // (b.steps + 1), preview=tiny_png(step)))
        self.done += 1
        await report(
            job,
            Generated(
                images=[tiny_png(hash(job.id) & 0xFFFFFF)], meta={"hash": job.id, "grid": True}
            ),
        )

    async def cancel(self, job: Job) -> None:
        self.cancelled.append(job.id)
        self.cancel_seen.set()
        task = self._tasks.pop(job.id, None)
        if task is not None:
            task.cancel()
