"""Many Discord user accounts from one process: memory, idle CPU, heartbeats and a mass resume.

    python benchmarks/gateway.py --accounts 1000 --minutes 2

The Discord sandbox runs in a subprocess (so RSS and CPU measure only our
side) with a short heartbeat interval. This process connects every account
with `gouache.pool.gateway.GatewayConnection` (one shared aiohttp session and
identify pacer, zlib-stream on), idles for ``--minutes`` while heartbeats flow,
then has the sandbox drop every connection at once and times until all of them
have RESUMED. Prints one JSON line:

- ``rss_mb``: resident memory at the end of the idle phase (``rss_peak_mb``: the high-water mark);
- ``cpu_percent_idle``: our CPU time over wall time during the idle phase (100 = one core);
- ``missed_heartbeats``: zombie detections (a heartbeat that found the previous one unacked);
- ``resume_all_s``: from the drop until the last account is READY again via RESUME;
- ``reidentified``: accounts that had to IDENTIFY more than once.

Targets for 1,000 accounts: RSS <= 200 MB, 0 missed heartbeats, all resumed within 5 s,
none re-identified.
"""

from __future__ import annotations

import sys

# Run as a script, this folder comes first on sys.path, and benchmarks/queue.py would
# shadow the standard library's `queue` (which asyncio needs). Drop it first.
if sys.path and sys.path[0] and __file__.startswith(sys.path[0]):
    sys.path.pop(0)

import argparse
import asyncio
import json
import logging
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from pydantic import SecretStr

from gouache.pool.gateway import GatewayConnection, GatewaySettings, GatewayStatus, IdentifyPacer


def quiet_logs() -> None:
    """Warnings and errors to stderr; stdout carries only the result line."""
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size in MB, from /proc."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return round(fields["VmRSS"], 1), round(fields["VmHWM"], 1)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- the sandbox side (a subprocess) ----------------------------------------------------------------


async def serve(args: argparse.Namespace) -> None:
    """Run the sandbox with ``--accounts`` user accounts; print where, then wait for stdin to close."""
    from gouache_sandbox.discord import DiscordSandbox

    sandbox = DiscordSandbox(
        heartbeat_interval_ms=args.heartbeat_ms, with_midjourney=False, resume_window=600.0
    )
    await sandbox.start()
    tokens = []
    for i in range(args.accounts):
        user, token = sandbox.add_user_account(f"mj-{i}")
        guild = sandbox.add_guild(f"g{i}")
        sandbox.add_channel(guild, "imagine")
        sandbox.join(guild, user)
        tokens.append(token)
    print(
        json.dumps(
            {"gateway_url": sandbox.gateway_url, "base_url": sandbox.base_url, "tokens": tokens}
        ),
        flush=True,
    )
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.read()  # EOF: the parent is done
    await sandbox.aclose()


# -- our side --------------------------------------------------------------------------------------


class Tracker:
    """Counts accounts that are READY via RESUMED (after the drop)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.resumed: set[int] = set()
        self.all_resumed = asyncio.Event()
        self.armed = False
        self.unexpected_drops = 0

    def on_status(self, index: int) -> Any:
        def callback(status: GatewayStatus, reason: str | None) -> None:
            if status is GatewayStatus.BACKOFF and not self.armed:
                self.unexpected_drops += 1
            if self.armed and status is GatewayStatus.READY and reason == "resumed":
                self.resumed.add(index)
                if len(self.resumed) == self.total:
                    self.all_resumed.set()

        return callback


async def _noop(t: str, d: dict[str, Any]) -> None:
    del t, d


async def run(args: argparse.Namespace) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve",
        "--accounts",
        str(args.accounts),
        "--heartbeat-ms",
        str(args.heartbeat_ms),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=1 << 26,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 120)
        info = json.loads(line)
        return await measure(args, info)
    finally:
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def measure(args: argparse.Namespace, info: dict[str, Any]) -> dict[str, Any]:
    tokens: list[str] = info["tokens"]
    tracker = Tracker(len(tokens))
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    pacer = IdentifyPacer(max_concurrency=args.identifies_per_5s, window=5.0)
    conns = [
        GatewayConnection(
            GatewaySettings(
                name=f"mj-{i}",
                token=SecretStr(token),
                gateway_url=info["gateway_url"],
                compress=not args.no_compress,
            ),
            on_dispatch=_noop,
            on_status=tracker.on_status(i),
            http=http,
            identify_pacer=pacer,
        )
        for i, token in enumerate(tokens)
    ]
    try:
        t0 = time.monotonic()
        for conn in conns:
            await conn.start()
        await asyncio.gather(*(c.wait_ready(args.connect_timeout) for c in conns))
        connect_s = time.monotonic() - t0

        cpu0, wall0 = cpu_seconds(), time.monotonic()
        await asyncio.sleep(args.minutes * 60)
        cpu_idle = (cpu_seconds() - cpu0) / (time.monotonic() - wall0) * 100
        rss, _ = rss_mb()
        latencies = sorted(c.latency_ms for c in conns if c.latency_ms is not None)
        missed_idle = sum(c.counters.missed_heartbeats for c in conns)
        beats_idle = sum(c.counters.heartbeats for c in conns)

        tracker.armed = True
        async with http.post(f"{info['base_url']}/_sandbox/gateway/drop", json={}) as resp:
            dropped = (await resp.json())["result"]
        t_drop = time.monotonic()
        try:
            await asyncio.wait_for(tracker.all_resumed.wait(), args.resume_timeout)
            resume_all_s: float | None = round(time.monotonic() - t_drop, 3)
        except TimeoutError:
            resume_all_s = None
        _, rss_peak = rss_mb()
        return {
            "accounts": len(conns),
            "rss_mb": rss,
            "cpu_percent_idle": round(cpu_idle, 2),
            "missed_heartbeats": sum(c.counters.missed_heartbeats for c in conns),
            "resume_all_s": resume_all_s,
            "reidentified": sum(1 for c in conns if c.counters.identifies > 1),
            # context
            "resumed": len(tracker.resumed),
            "dropped": dropped,
            "missed_heartbeats_idle": missed_idle,
            "unexpected_drops_idle": tracker.unexpected_drops,
            "heartbeats_idle": beats_idle,
            "heartbeat_interval_ms": args.heartbeat_ms,
            "latency_ms_p50": round(statistics.median(latencies), 2) if latencies else None,
            "latency_ms_max": round(latencies[-1], 2) if latencies else None,
            "connect_s": round(connect_s, 2),
            "rss_peak_mb": rss_peak,
            "compress": not args.no_compress,
            "idle_minutes": args.minutes,
        }
    finally:
        await asyncio.gather(*(c.aclose() for c in conns))
        await http.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=2.0, help="idle phase length")
    parser.add_argument("--heartbeat-ms", type=int, default=2000, help="sandbox HELLO interval")
    parser.add_argument("--identifies-per-5s", type=int, default=500, help="shared identify pacer")
    parser.add_argument("--no-compress", action="store_true", help="no zlib-stream")
    parser.add_argument("--connect-timeout", type=float, default=300.0)
    parser.add_argument("--resume-timeout", type=float, default=60.0)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    quiet_logs()
    raise_fd_limit()
    if args.serve:
        asyncio.run(serve(args))
        return
    print(json.dumps(asyncio.run(run(args))), flush=True)


if __name__ == "__main__":
    main()
