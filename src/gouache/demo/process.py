"""`gouache run -c config.toml` as a separate process, the way an owner runs it.

Used by the end-to-end tests and the chaos soak (``benchmarks/chaos.py``): the
stand-ins run in the caller's process, gouache in its own, reading only its
config file. Every line the process prints is kept (and, with ``log_path``,
appended to a file, so secrets can be looked for afterwards).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

__all__ = ["GouacheProcess", "with_shard"]


class GouacheProcess:
    """One `gouache run` process (started again after each stop) and the lines it printed."""

    def __init__(self, config: Path, *, log_path: Path | None = None) -> None:
        self.config = config
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self.starts = 0
        self._seen = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None
        self._mark = 0  # where the current run's lines begin

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self.proc is not None and self.proc.returncode is None

    async def start(self, *, ready_timeout: float = 60) -> None:
        """Start the process and wait until it logged ``app.started``."""
        async with self._seen:
            self._mark = len(self.lines)
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gouache",
            "run",
            "-c",
            str(self.config),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.starts += 1
        self._reader = asyncio.create_task(self._read(self.proc))
        await self.wait_for("app.started", timeout=ready_timeout)

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        sink = (
            self.log_path.open("a", encoding="utf-8", buffering=1)  # a line at a time
            if self.log_path is not None
            else None
        )
        try:
            async for raw in proc.stdout:
                line = raw.decode(errors="replace")
                if sink is not None:
                    sink.write(line)
                async with self._seen:
                    self.lines.append(line)
                    self._seen.notify_all()
        finally:
            if sink is not None:
                sink.close()
            async with self._seen:
                self._seen.notify_all()

    async def wait_for(self, text: str, timeout: float) -> None:
        """Wait until this run printed a line containing ``text`` (AssertionError if it exits first)."""

        def found() -> bool:
            return any(text in line for line in self.lines[self._mark :])

        def seen() -> bool:
            exited = self.proc is not None and self.proc.returncode is not None
            return exited or found()

        try:
            async with asyncio.timeout(timeout), self._seen:
                await self._seen.wait_for(seen)
        except TimeoutError:
            raise AssertionError(
                f"no {text!r} within {timeout} s:\n" + "".join(self.lines[-30:])
            ) from None
        if not found():
            # The process ended without it; the reader may still be draining its last lines.
            if self._reader is not None:
                await asyncio.wait_for(asyncio.shield(self._reader), timeout)
            assert found(), "".join(self.lines[-40:])

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send ``sig`` and wait for the process (and its output) to end; the exit code."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        if self._reader is not None:
            await asyncio.wait_for(self._reader, timeout)
        return code

    def kill(self) -> None:
        """SIGKILL at once, without waiting (cleanup)."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()

    @property
    def output(self) -> str:
        """Everything printed so far, over every run."""
        return "".join(self.lines)


def with_shard(text: str, shard: int, count: int = 2) -> str:
    """``text`` (a config file) as shard ``shard`` of ``count``."""
    return text.replace("[discord]\n", f"[discord]\nshard_id = {shard}\nshard_count = {count}\n", 1)
