"""How a long-running gouache process runs: signals, and settings applied once it has started."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

# Allocations (minus frees) between collections of the youngest generation; Python's default is 700.
GEN0_THRESHOLD = 10_000


def tune_gc(gen0: int = GEN0_THRESHOLD) -> None:
    """Let the cyclic garbage collector run less often, over fewer objects.

    Each request allocates many short-lived objects (futures, frames, job
    copies) that reference counting frees at once; with the default threshold
    the collector still wakes every 700 of them, and every full collection
    walks every live object, the modules and the app built at startup
    included. `gc.freeze` moves what is alive now out of the collector's view
    for good, and the larger first threshold makes collections rarer. Call it
    once startup is done. ``benchmarks/queue.py`` (which calls it too) ran
    about 8 % more jobs per second on Redis with it (its pop loop, ``--mode loop``).
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0, gen1, gen2)


def run_until_signal(main_coro: Coroutine[Any, Any, T]) -> T | None:
    """Run ``main_coro``; SIGINT/SIGTERM cancel it (a graceful stop). Its result, or None if stopped."""

    async def runner() -> T | None:
        task = asyncio.ensure_future(main_coro)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            # Platforms without loop signal handlers (Windows) keep KeyboardInterrupt.
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, task.cancel)
        try:
            return await task
        except asyncio.CancelledError:
            return None

    try:
        return asyncio.run(runner())
    except KeyboardInterrupt:  # a second Ctrl-C while stopping
        sys.exit(130)
