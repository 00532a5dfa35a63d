"""Run the ComfyUI stand-in on its own: ``python -m gouache_sandbox.comfyui --port 8188``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib

import structlog

from gouache_sandbox.comfyui.engine import Speed
from gouache_sandbox.comfyui.server import ComfyUISandbox

log = structlog.get_logger(__name__)


async def _serve(args: argparse.Namespace) -> None:
    speed = Speed(node_delay=args.node_delay, step_delay=args.step_delay)
    sandbox = ComfyUISandbox(root=args.root, speed=speed)
    await sandbox.start(args.host, args.port)
    log.info("comfyui.sandbox_ready", url=sandbox.url)
    try:
        # Serve until interrupted; wake periodically so the wait has a bound.
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sandbox.crashed.wait(), 3600)
            if sandbox.crashed.is_set():
                await sandbox.restart()
    finally:
        await sandbox.aclose()


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and serve until Ctrl-C."""
    parser = argparse.ArgumentParser(description="gouache's ComfyUI stand-in")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--root", default=None, help="folder for output/temp/input files")
    parser.add_argument("--node-delay", type=float, default=0.2, help="seconds per slow node")
    parser.add_argument("--step-delay", type=float, default=0.1, help="seconds per sampler step")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
