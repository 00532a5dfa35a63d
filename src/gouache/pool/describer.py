"""/describe without Midjourney: an Ollama vision model as a worker (``[describe]`` in config).

A `Worker` that takes only DESCRIBE jobs: the member's image (from the image
store) goes to ``POST /api/chat`` with the image in the user message's
``images`` (base64), non-streaming, asking for four numbered prompts. The
answer's numbered lines become the job's ``meta["prompts"]`` and the described
image its picture, exactly as a Midjourney describe is reported, so the bot
shows the same buttons either way. A model that answers fewer than four
prompts, an HTTP error or the timeout fails the job (refunded).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
from collections.abc import Awaitable, Callable
from typing import Any, Final

import aiohttp
import structlog
from yarl import URL

from gouache.errors import GouacheError
from gouache.jobs import Action, ErrorCode, InputImage, Job
from gouache.pool.base import (
    Accepted,
    Failed,
    Generated,
    JobSink,
    StateListeners,
    WorkerSnapshot,
    WorkerState,
)

__all__ = ["KIND", "OllamaDescriber", "numbered_prompts"]

log = structlog.get_logger(__name__)

KIND: Final = "ollama"
INSTRUCTION: Final = (
    "Describe this image as four different prompts for an image generator. "
    "Answer with exactly four lines numbered 1. to 4., one prompt a line, nothing else."
)
_LINE: Final = re.compile(r"^\s*(?:\*\*)?([1-4])(?:\ufe0f?\u20e3|[.):])(?:\*\*)?\s*(.+?)\s*$")
InputLoader = Callable[[InputImage], Awaitable[bytes]]


def numbered_prompts(answer: str) -> list[str]:
    """The lines ``1. …`` to ``4. …`` of a model's answer, in order (empty if not all four)."""
    found: dict[int, str] = {}
    for line in answer.splitlines():
        m = _LINE.match(line)
        if m and m.group(2).strip():
            found.setdefault(int(m.group(1)), " ".join(m.group(2).split()))
    return [found[n] for n in range(1, 5)] if len(found) == 4 else []


class OllamaDescriber(StateListeners):
    """Describes images with an Ollama vision model; ``concurrency`` at once."""

    kind: str = KIND

    def __init__(  # noqa: PLR0913
        self,
        name: str,
        url: str,
        *,
        model: str,
        inputs: InputLoader,
        timeout_s: float = 60.0,
        concurrency: int = 2,
    ) -> None:
        self.name = name
        self.model = model
        self.inputs = inputs
        self.timeout_s = timeout_s
        self._url = URL(url) / "api" / "chat"
        self._concurrency = concurrency
        self._session: aiohttp.ClientSession | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._state = WorkerState.CONNECTING
        self.last_error: str | None = None
        self.done = 0

    # -- Worker protocol --------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """How many descriptions may run at once."""
        return self._concurrency

    @property
    def in_flight(self) -> int:
        """Descriptions running now."""
        return len(self._tasks)

    @property
    def state(self) -> WorkerState:
        """READY once started."""
        return self._state

    def can_serve(self, job: Job) -> bool:
        """Only /describe (with its image)."""
        return job.action is Action.DESCRIBE and job.backend in (None, KIND) and bool(job.inputs())

    def snapshot(self) -> WorkerSnapshot:
        """Its row for `gouache pool status`."""
        return WorkerSnapshot(
            name=self.name,
            kind=KIND,
            state=self.state,
            capacity=self._concurrency,
            in_flight=self.in_flight,
            done_today=self.done,
            last_error=self.last_error,
            reason=f"describes with {self.model}",
        )

    async def start(self) -> None:
        """Open the HTTP session."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        self._state = WorkerState.READY
        self._state_changed()

    async def aclose(self) -> None:
        """Cancel running descriptions and close the session."""
        for task in list(self._tasks.values()):
            task.cancel()
        for task in list(self._tasks.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._state = WorkerState.OFFLINE

    async def submit(self, job: Job, report: JobSink) -> None:
        """Start describing; returns at once (the answer comes as `Generated` or `Failed`)."""
        await report(job, Accepted())
        task = asyncio.get_running_loop().create_task(self._run(job, report))
        self._tasks[job.id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(job.id, None))
        self._state_changed()

    async def cancel(self, job: Job) -> None:
        """Stop a description; `Failed` CANCELED follows."""
        task = self._tasks.get(job.id)
        if task is not None:
            task.cancel()

    # -- one description --------------------------------------------------------------------

    async def _run(self, job: Job, report: JobSink) -> None:
        try:
            image = await self.inputs(job.inputs()[0])
            prompts = numbered_prompts(await self._ask(image))
            if not prompts:
                raise GouacheError("The describer did not answer with four prompts.")
        except asyncio.CancelledError:
            await report(job, Failed(ErrorCode.CANCELED, "Cancelled."))
            return
        except (GouacheError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.last_error = str(exc) if isinstance(exc, GouacheError) else type(exc).__name__
            log.warning("describe.failed", worker=self.name, job_id=job.id, error=self.last_error)
            await report(
                job, Failed(ErrorCode.WORKER_ERROR, "The image could not be described.", True)
            )
            return
        finally:
            self._state_changed()
        self.done += 1
        meta: dict[str, Any] = {"prompts": prompts, "grid": False, "model": self.model}
        await report(job, Generated(images=[image], meta=meta))

    async def _ask(self, image: bytes) -> str:
        if self._session is None:
            raise GouacheError("The describer is not started.")
        body = {
            "model": self.model,
            "stream": False,
            "messages": [
                {
                    "role": "user",
                    "content": INSTRUCTION,
                    "images": [base64.b64encode(image).decode()],
                }
            ],
            "options": {"temperature": 0},
        }
        async with (
            asyncio.timeout(self.timeout_s),
            self._session.post(self._url, json=body) as resp,
        ):
            payload = await resp.json(content_type=None)
            if resp.status != 200 or not isinstance(payload, dict):
                error = payload.get("error") if isinstance(payload, dict) else None
                raise GouacheError(f"Ollama answered HTTP {resp.status}: {error or ''}".strip())
            message = payload.get("message")
            content = message.get("content") if isinstance(message, dict) else None
            return content if isinstance(content, str) else ""
