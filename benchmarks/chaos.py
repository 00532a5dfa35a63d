"""A chaos soak: gouache as real processes under a seeded storm of faults, then an audit.

    python benchmarks/chaos.py --minutes 10 --backend redis --seed 1
    python benchmarks/chaos.py --minutes 10 --backend sqlite --seed 1
    python benchmarks/chaos.py --burst 1000 --backend sqlite

The stand-ins (Discord with its Midjourney bot, two ComfyUI servers, Ollama)
run in this process, built by the demo's `DemoWorld`; gouache runs as
``python -m gouache run -c …`` (two processes sharing a Redis of our own, one
shard each, with ``--backend redis``; one process with ``--backend sqlite``).
A crowd of simulated members imagines, presses U/V/🔄 and cancels, while a
seeded schedule injects faults (``--faults-per-minute``, 24 by default):
SIGKILL or SIGTERM of a gouache process (restarted), a Redis restart (AOF) or
``CLIENT PAUSE``, every gateway fault of the Discord stand-in (drop, zombie,
op 7, op 9 true/false, close codes 4000–4014) on the bot's and the Midjourney
accounts' connections, a ComfyUI crash and restart or HTTP 500s, Discord REST
5xx and 429 bursts, and Midjourney's "Job queued", "Queue full" and a job
stopped part-way by its output filter. An account the gateway disabled (4004,
4010–4014) is enabled again by the "owner" through the admin API.

Then the crowd stops, faults are cleared, everything drains, the processes
stop, and the audit prints one JSON line:

* ``accepted``: jobs whose request the member saw answered (``withdrawn``:
  jobs whose answer Discord refused, so the member saw "This interaction
  failed" — they must end cancelled and refunded, or, if already done, be
  posted in the channel: ``posted_unanswered``);
* ``lost``: accepted jobs whose end never reached the member — the job is
  missing from the store, or its message in the channel does not show a final
  state (a result, or why it failed and that it was refunded) — and jobs whose
  request failed on Discord but which were not withdrawn;
* ``duplicated``: jobs generated twice (two ``generated`` transitions in the
  logs) or whose final image was posted in two messages;
* ``ledger_mismatch``: members whose used-today differs from what their jobs
  charge (succeeded, plus any not yet finished);
* ``stuck``: jobs not in a final state after the drain;
* ``faults_injected`` (and ``faults_per_minute``, ``faults`` by kind);
* ``secrets_in_logs``: configured secrets found in any gouache process's output.

``--burst N`` measures instead how N members sending /imagine within 10 s are
answered: the time from INTERACTION_CREATE to the callback (p50/p99), the
interactions not answered within Discord's 3 s, and the 429s Discord answered
gouache until ``--burst-tail-s`` after the burst (the backlog's edits and
Midjourney calls included).
"""

from __future__ import annotations

import sys

# benchmarks/queue.py would shadow the standard library's `queue` (asyncio needs it).
if sys.path and sys.path[0] and __file__.startswith(sys.path[0]):
    sys.path.pop(0)

import argparse
import asyncio
import contextlib
import json
import random
import shutil
import signal
import socket
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from gouache.app import build_store
from gouache.config import Config, load_config
from gouache.demo.crowd import Crowd
from gouache.demo.members import imagine
from gouache.demo.process import GouacheProcess, with_shard
from gouache.demo.world import DemoOptions, DemoWorld
from gouache.jobs import JobState
from gouache.log import configure_logging
from gouache_sandbox.discord.state import Message

log = structlog.get_logger("chaos")

TERMINAL_COLORS = {
    JobState.SUCCEEDED: 0x2ECC71,
    JobState.FAILED: 0xE74C3C,
    JobState.TIMED_OUT: 0xE67E22,
    JobState.CANCELED: 0x7F8C8D,
}
DISABLING_CLOSES = (4004, 4010, 4011, 4012, 4013, 4014)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- Redis of our own ---------------------------------------------------------------------


class RedisServer:
    """A redis-server with an append-only file, restartable on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("chaos: redis-server not found (apt-get install redis-server)")
        self.proc = await asyncio.create_subprocess_exec(
            binary,
            *("--bind", "127.0.0.1", "--port", str(self.port), "--save", ""),
            *("--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(self.dir)),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert self.proc.stdout is not None
        async with asyncio.timeout(30):
            async for line in self.proc.stdout:
                if b"Ready to accept connections" in line:
                    break
            else:
                raise RuntimeError(f"redis-server exited with {await self.proc.wait()}")
        self._reader = asyncio.create_task(self._drain(self.proc))

    @staticmethod
    async def _drain(proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for _ in proc.stdout:
            pass

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()  # SHUTDOWN: the append-only file is flushed
            await asyncio.wait_for(self.proc.wait(), 30)

    async def restart(self, down_s: float) -> None:
        await self.stop()
        await asyncio.sleep(down_s)
        await self.start()

    async def pause(self, ms: int) -> None:
        import redis.asyncio as redis

        client = redis.Redis.from_url(self.url)
        try:
            await client.execute_command("CLIENT", "PAUSE", str(ms), "ALL")
        finally:
            await client.aclose()


# -- the soak ------------------------------------------------------------------------------


class Soak:
    """The world, the gouache processes, the fault schedule and the audit."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.rng = random.Random(args.seed)
        self.redis: RedisServer | None = None
        self.world: DemoWorld | None = None
        self.processes: list[GouacheProcess] = []
        self.busy: set[int] = set()  # processes a fault is stopping or restarting
        self.faults: Counter[str] = Counter()
        self.unexpected_exits = 0
        self.background: set[asyncio.Task[Any]] = set()
        self.busy_names: set[str] = set()  # other parts a fault is restarting

    # -- setup ---------------------------------------------------------------------------

    async def start(self, *, mj_step_s: float = 0.25, comfy_step_s: float = 1.2) -> None:
        """Redis (if asked for), the stand-ins, the configs and the gouache processes.

        Jobs take a couple of seconds on either backend, so faults land mid-job.
        """
        args = self.args
        if args.backend == "redis":
            self.redis = RedisServer(self.workdir)
            await self.redis.start()
        self.world = DemoWorld(
            DemoOptions(
                port=0,
                admin_port=0,
                workdir=self.workdir,
                daily_limit=args.daily_limit,
                vip_daily_limit=args.daily_limit * 2,
                mj_step_s=mj_step_s,
                comfy_step_s=comfy_step_s,
                log_level="info",
                log_format="json",
                lease_s=args.lease_s,
                redis_url=self.redis.url if self.redis else None,
                heartbeat_interval_ms=5000,
            )
        )
        await self.world.start_standins()
        assert self.world.config_path is not None
        # The stand-ins finish a job in seconds: a job that lost its way times out
        # within the drain instead of minutes later (a timeout is a final state, refunded).
        text = self.world.config_path.read_text().replace(
            "[queue.timeouts]\nsubmit = 30\nstart = 120\nrun = 120\n",
            "[queue.timeouts]\nsubmit = 20\nstart = 45\nrun = 45\n",
        )
        self.world.config_path.write_text(text)
        logs = self.workdir / "logs"
        logs.mkdir(exist_ok=True)
        if args.backend == "redis":
            for shard in (0, 1):
                path = self.workdir / f"gouache-{shard}.toml"
                path.write_text(with_shard(text, shard))
                path.chmod(0o600)
                self.processes.append(GouacheProcess(path, log_path=logs / f"gouache-{shard}.log"))
        else:
            self.processes.append(
                GouacheProcess(self.world.config_path, log_path=logs / "gouache.log")
            )
        for process in self.processes:
            await process.start()

    @property
    def config(self) -> Config:
        assert self.world is not None
        assert self.world.config is not None
        return self.world.config

    def user_ids(self) -> dict[str, int]:
        """Gateway users to break: the bot and each Midjourney account."""
        assert self.world is not None
        assert self.world.sandbox is not None
        state = self.world.sandbox.state
        config = self.config
        assert config.discord is not None
        out = {"bot": state.applications[config.discord.application_id].bot.id}
        for account in config.midjourney.accounts:
            out[account.name] = state.tokens[account.token.get_secret_value()].user.id
        return out

    # -- faults ----------------------------------------------------------------------------

    def spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def _idle_process(self) -> int | None:
        idle = [i for i, p in enumerate(self.processes) if i not in self.busy and p.running]
        return self.rng.choice(idle) if idle else None

    async def _restart(self, index: int, *, sig: int, down_s: float) -> None:
        process = self.processes[index]
        try:
            try:
                await process.stop(sig, timeout=60)
            except Exception as exc:
                log.error("chaos.stop_failed", process=index, error=repr(exc))
                process.kill()
                with contextlib.suppress(Exception):
                    await process.stop(signal.SIGKILL, timeout=30)
            await asyncio.sleep(down_s)
            try:
                await process.start(ready_timeout=90)
            except AssertionError as exc:
                log.error("chaos.start_failed", process=index, error=str(exc)[-2000:])
                process.kill()
            else:
                log.warning("chaos.restarted", process=index, signal=sig)
        finally:
            self.busy.discard(index)

    def fault_kill(self) -> bool:
        index = self._idle_process()
        if index is None:
            return False
        self.busy.add(index)
        self.spawn(self._restart(index, sig=signal.SIGKILL, down_s=self.rng.uniform(0.2, 2.0)))
        return True

    def fault_term(self) -> bool:
        index = self._idle_process()
        if index is None:
            return False
        self.busy.add(index)
        self.spawn(self._restart(index, sig=signal.SIGTERM, down_s=self.rng.uniform(0.2, 1.0)))
        return True

    def fault_redis_restart(self) -> bool:
        if self.redis is None or "redis" in self.busy_names:
            return False
        self.busy_names.add("redis")

        async def go() -> None:
            assert self.redis is not None
            try:
                await self.redis.restart(self.rng.uniform(0.2, 1.5))
            finally:
                self.busy_names.discard("redis")

        self.spawn(go())
        return True

    def fault_redis_pause(self) -> bool:
        if self.redis is None or "redis" in self.busy_names:
            return False
        self.spawn(self.redis.pause(self.rng.randint(500, 3000)))
        return True

    def fault_gateway(self) -> str:
        assert self.world is not None
        assert self.world.sandbox is not None
        faults = self.world.sandbox.gateway_faults
        users = self.user_ids()
        who = self.rng.choice(sorted(users))
        uid = users[who]
        kind = self.rng.choice(
            ["drop", "zombie", "reconnect", "invalid_true", "invalid_false", "close"]
        )
        if kind == "drop":
            faults.drop(user_id=uid)
        elif kind == "zombie":
            faults.set_zombie(True, user_id=uid, mute=self.rng.random() < 0.5)
        elif kind == "reconnect":
            faults.send_reconnect(user_id=uid)
        elif kind == "invalid_true":
            faults.send_invalid_session(True, user_id=uid)
        elif kind == "invalid_false":
            faults.send_invalid_session(False, user_id=uid)
        else:
            code = self.rng.randint(4000, 4014)
            faults.close(code, user_id=uid)
            if code in DISABLING_CLOSES and who != "bot":
                self.spawn(self._owner_enables(who))
            kind = f"close_{code}"
        return f"gateway_{kind}"

    async def _owner_enables(self, account: str) -> None:
        """The owner reads the alert and switches the account back on."""
        await asyncio.sleep(self.rng.uniform(2.0, 5.0))
        await self.enable_everywhere(account)

    async def enable_everywhere(self, worker: str) -> None:
        token = self.config.admin.token
        headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}
        async with aiohttp.ClientSession(headers=headers) as http:
            for process in self.processes:
                url = admin_url(process)
                if url is None or not process.running:
                    continue
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.post(
                        f"{url}/workers/{worker}/enable",
                        json={},
                        timeout=aiohttp.ClientTimeout(total=5),
                    ) as resp:
                        await resp.read()

    def fault_comfy_restart(self) -> bool:
        assert self.world is not None
        candidates = [i for i in range(len(self.world.comfy)) if f"comfy{i}" not in self.busy_names]
        if not candidates:
            return False
        i = self.rng.choice(candidates)
        self.busy_names.add(f"comfy{i}")

        async def go() -> None:
            assert self.world is not None
            server = self.world.comfy[i]
            try:
                await server.crash()
                await asyncio.sleep(self.rng.uniform(0.5, 3.0))
                await server.restart()
            finally:
                self.busy_names.discard(f"comfy{i}")

        self.spawn(go())
        return True

    def fault_comfy_500(self) -> None:
        assert self.world is not None
        server = self.rng.choice(self.world.comfy)
        route = self.rng.choice(["/prompt", "/history", "/view", "/queue"])
        server.faults.http_500[route] = self.rng.randint(1, 4)

    def fault_rest(self, status: int) -> str:
        assert self.world is not None
        assert self.world.sandbox is not None
        route = self.rng.choice(["/channels/*", "/webhooks/*", "/interactions/*"])
        if status == 429:
            self.world.sandbox.fail_route("*", route, 429, times=self.rng.randint(3, 12))
            return "rest_429"
        code = self.rng.choice([500, 502, 503, 504])
        # Half the time Discord carried the call out and only its answer was lost.
        after = self.rng.random() < 0.5
        self.world.sandbox.fail_route(
            "*",
            route,
            code,
            duration=self.rng.uniform(0.3, 2.0),
            times=self.rng.randint(1, 8),
            after=after,
        )
        return "rest_5xx_after" if after else "rest_5xx"

    def fault_mj(self) -> str:
        assert self.world is not None
        assert self.world.sandbox is not None
        mj = self.world.sandbox.midjourney
        assert mj is not None
        users = self.user_ids()
        account = self.rng.choice([n for n in users if n != "bot"])
        uid = users[account]
        kind = self.rng.choice(["job_queued", "queue_full", "failed_job"])
        if kind == "queue_full":
            mj.fail_next(uid, "queue_full")
        elif kind == "failed_job":
            mj.fail_next_run(uid, "output_filtered")
        elif "mj_slow" not in self.busy_names:
            self.busy_names.add("mj_slow")

            async def go() -> None:
                mj.settings.max_concurrent = 1  # the plan's slots are taken: "Job queued"
                try:
                    await asyncio.sleep(self.rng.uniform(3.0, 8.0))
                finally:
                    mj.settings.max_concurrent = 3
                    self.busy_names.discard("mj_slow")

            self.spawn(go())
        return f"mj_{kind}"

    def inject(self) -> str | None:
        """One fault, drawn from the schedule's table; the name of what was done."""
        table: list[tuple[str, float, Callable[[], Any]]] = [
            ("gouache_sigkill", 2, self.fault_kill),
            ("gouache_sigterm", 1, self.fault_term),
            ("redis_restart", 1 if self.redis else 0, self.fault_redis_restart),
            ("redis_pause", 1 if self.redis else 0, self.fault_redis_pause),
            ("gateway", 6, self.fault_gateway),
            ("comfy_restart", 1.5, self.fault_comfy_restart),
            ("comfy_500", 1.5, self.fault_comfy_500),
            ("rest_5xx", 2, lambda: self.fault_rest(500)),
            ("rest_429", 2, lambda: self.fault_rest(429)),
            ("mj", 3, self.fault_mj),
        ]
        names = [t[0] for t in table if t[1] > 0]
        weights = [t[1] for t in table if t[1] > 0]
        for _ in range(5):
            name = self.rng.choices(names, weights)[0]
            action = next(t[2] for t in table if t[0] == name)
            result = action()
            if result is False:
                continue
            label = result if isinstance(result, str) else name
            self.faults[label] += 1
            log.warning("chaos.fault", fault=label)
            return label
        return None

    async def supervise(self) -> None:
        """Restart a process that died on its own (as systemd would), counting it."""
        while True:
            await asyncio.sleep(1.0)
            for i, process in enumerate(self.processes):
                if i in self.busy or process.running:
                    continue
                self.unexpected_exits += 1
                self.busy.add(i)
                self.spawn(self._restart(i, sig=signal.SIGKILL, down_s=0.5))

    async def schedule(self, seconds: float) -> None:
        per_minute = self.args.faults_per_minute
        end = time.monotonic() + seconds
        while True:
            # Jittered, not Poisson: a short run still gets its rate.
            wait = 60.0 / per_minute * self.rng.uniform(0.5, 1.5)
            if time.monotonic() + wait >= end:
                await asyncio.sleep(max(0.0, end - time.monotonic()))
                return
            await asyncio.sleep(wait)
            self.inject()

    # -- the drain -----------------------------------------------------------------------

    async def calm(self) -> None:
        """Take every fault back and bring every part up again."""
        assert self.world is not None
        assert self.world.sandbox is not None
        sandbox = self.world.sandbox
        sandbox.clear_faults()
        sandbox.gateway_faults.set_zombie(False)
        mj = sandbox.midjourney
        assert mj is not None
        for uid in self.user_ids().values():
            acct = mj._account(uid)
            acct.fail_next.clear()
            acct.fail_running.clear()
        for server in self.world.comfy:
            server.faults.http_500.clear()
        deadline = time.monotonic() + 180
        while self.background and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                    await asyncio.gather(*list(self.background), return_exceptions=True)
        for task in list(self.background):
            log.error("chaos.fault_hung", task=repr(task))
            task.cancel()
        log.warning("chaos.calm_faults_done")
        for process in self.processes:
            if not process.running:
                await process.start(ready_timeout=90)
        log.warning("chaos.calm_processes_up")
        for account in self.config.midjourney.accounts:
            await self.enable_everywhere(account.name)

    def replies(self) -> dict[str, Message]:
        """Each job's latest message in the channel, by the 8 characters of its id in the footer."""
        assert self.world is not None
        assert self.world.sandbox is not None
        assert self.world.channel is not None
        out: dict[str, Message] = {}
        for m in self.world.sandbox.messages(self.world.channel.id):
            short = footer_job(m)
            if short is not None:
                out.setdefault(short, m)
        return out

    async def drain(self, timeout: float) -> float:
        """Wait until every job message in the channel shows a final state; seconds waited."""
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            if all(final_state(m) is not None for m in self.replies().values()):
                break
            await asyncio.sleep(1.0)
        # Jobs charged without a message (an interaction answered too late) end in the store.
        await asyncio.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
        return time.monotonic() - started

    async def stop(self) -> list[int]:
        codes = []
        for process in self.processes:
            if process.running:
                codes.append(await process.stop(signal.SIGTERM, timeout=90))
        return codes

    # -- the audit -----------------------------------------------------------------------

    async def audit(self) -> dict[str, Any]:
        assert self.world is not None
        assert self.world.sandbox is not None
        config = load_config(self.processes[0].config)
        store = build_store(config)
        await store.start()
        try:
            jobs = await store.list_jobs(limit=1_000_000)
            today = store_day(config)
            used: dict[int, int] = {}
            for user_id in {j.user_id for j in jobs}:
                status = await store.quota(user_id, daily_limit=10**6)
                used[user_id] = status.used
        finally:
            await store.aclose()

        # Every message of the channel, grouped by the job its footer names.
        assert self.world.channel is not None
        messages = self.world.sandbox.messages(self.world.channel.id)
        by_short: dict[str, list[Message]] = {}
        for m in messages:
            short = footer_job(m)
            if short is not None:
                by_short.setdefault(short, []).append(m)
        shorts = {j.id[:8]: j for j in jobs}

        lost: list[str] = []
        stuck = [j.id for j in jobs if not j.state.terminal]
        by_token = self.world.sandbox.state.interactions_by_token
        accepted = withdrawn = posted_unanswered = 0
        for job in jobs:
            inter = by_token.get(job.interaction_token or "")
            shown = [final_state(m) for m in by_short.get(job.id[:8], [])]
            if inter is None or inter.responded_at is None:
                # The member was told "This interaction failed": the job must be withdrawn
                # (cancelled, refunded), or, if it was done already, its image posted.
                if job.state is JobState.CANCELED:
                    withdrawn += 1
                elif job.state is JobState.SUCCEEDED and JobState.SUCCEEDED in shown:
                    posted_unanswered += 1
                else:
                    lost.append(job.id)
                continue
            accepted += 1
            if job.state.terminal and job.state not in shown:
                lost.append(job.id)
        missing = [s for s in by_short if s not in shorts]  # a reply whose job vanished
        lost += missing

        posted_twice = [
            s
            for s, ms in by_short.items()
            if sum(1 for m in ms if final_state(m) is JobState.SUCCEEDED) > 1
        ]
        generated: Counter[str] = Counter()
        for process in self.processes:
            for line in process.lines:
                event = parse(line)
                if event.get("event") == "job.transition" and event.get("state") == "generated":
                    generated[str(event.get("job_id"))] += 1
        run_twice = [j for j, n in generated.items() if n > 1]

        charged: Counter[int] = Counter()
        for job in jobs:
            if job.quota_day == today and (
                job.state is JobState.SUCCEEDED or not job.state.terminal
            ):
                charged[job.user_id] += job.cost
        mismatched = [u for u in used if used[u] != charged[u]]

        secrets = [s for s in self.config.secrets() if len(s) >= 8]
        leaks = 0
        for path in (self.workdir / "logs").glob("*.log"):
            text = path.read_text(encoding="utf-8", errors="replace")
            leaks += sum(text.count(s) for s in secrets)

        inters = [
            i
            for i in self.world.sandbox.state.interactions.values()
            if self.config.discord is not None
            and i.application_id == self.config.discord.application_id
        ]
        for inter in inters:
            if inter.responded_at is None:  # for the reader of the harness log
                log.warning(
                    "chaos.unanswered",
                    interaction=inter.id,
                    at=datetime.fromtimestamp(inter.created_at, UTC).isoformat(),
                    late_callbacks=inter.late_callbacks,
                )
        return {
            "accepted": accepted,
            "withdrawn": withdrawn,
            "posted_unanswered": posted_unanswered,
            "lost": len(lost),
            "duplicated": len(set(run_twice) | set(posted_twice)),
            "ledger_mismatch": len(mismatched),
            "stuck": len(stuck),
            "secrets_in_logs": leaks,
            "succeeded": sum(j.state is JobState.SUCCEEDED for j in jobs),
            "failed": sum(j.state in (JobState.FAILED, JobState.TIMED_OUT) for j in jobs),
            "canceled": sum(j.state is JobState.CANCELED for j in jobs),
            "interactions": len(inters),
            "interactions_unanswered": sum(1 for i in inters if i.responded_at is None),
            "examples": {
                "lost": lost[:5],
                "stuck": [f"{j.id}:{j.state.value}" for j in jobs if not j.state.terminal][:5],
                "duplicated": (run_twice + posted_twice)[:5],
                "ledger_mismatch": [
                    f"{u}: used {used[u]} charged {charged[u]}" for u in mismatched[:5]
                ],
            },
        }


def admin_url(process: GouacheProcess) -> str | None:
    """The admin API's address from the current run's ``admin.started`` line."""
    for line in reversed(process.lines):
        event = parse(line)
        if event.get("event") == "admin.started":
            return str(event.get("url"))
    return None


def parse(line: str) -> dict[str, Any]:
    try:
        event = json.loads(line)
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}


def footer_job(message: Message) -> str | None:
    """The 8-character job id in a gouache message's footer (``imagine · 1a2b3c4d``)."""
    for embed in message.embeds:
        text = str((embed.get("footer") or {}).get("text", ""))
        _, sep, short = text.rpartition(" · ")
        if sep and len(short) == 8:
            return short
    return None


def final_state(message: Message) -> JobState | None:
    """The final state a job's message shows, if it shows one (a success needs its image)."""
    for embed in message.embeds:
        color = embed.get("color")
        for state, value in TERMINAL_COLORS.items():
            if color == value:
                if state is JobState.SUCCEEDED and not message.attachments:
                    return None
                return state
    return None


def store_day(config: Config) -> str:
    from gouache.queue.quota import QuotaPolicy

    return QuotaPolicy(config.queue.timezone).day_key(datetime.now(UTC))


# -- the runs --------------------------------------------------------------------------------


async def soak(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    run = Soak(args, workdir)
    crowd: Crowd | None = None
    supervisor: asyncio.Task[None] | None = None
    try:
        await run.start()
        assert run.world is not None
        crowd = Crowd(run.world, members=args.members, rate=args.rate, seed=args.seed)
        crowd.start()
        supervisor = asyncio.create_task(run.supervise())
        started = time.monotonic()
        log.warning("chaos.storm", minutes=args.minutes)
        await run.schedule(args.minutes * 60)
        elapsed = time.monotonic() - started
        log.warning("chaos.calm", faults=sum(run.faults.values()))
        await crowd.aclose()
        crowd = None
        supervisor.cancel()
        await run.calm()
        log.warning("chaos.drain")
        drained = await run.drain(args.drain_s)
        log.warning("chaos.stop", drained_s=round(drained, 1))
        codes = await run.stop()
        log.warning("chaos.audit")
        result = await run.audit()
        faults = sum(run.faults.values())
        return {
            "benchmark": "chaos",
            "backend": args.backend,
            "seed": args.seed,
            "minutes": round(elapsed / 60, 2),
            **{k: v for k, v in result.items() if k != "examples"},
            "faults_injected": faults,
            "faults_per_minute": round(faults / max(elapsed / 60, 1e-9), 1),
            "unexpected_exits": run.unexpected_exits,
            "exit_codes": codes,
            "drain_s": round(drained, 1),
            "faults": dict(sorted(run.faults.items())),
            "examples": result["examples"],
        }
    finally:
        if supervisor is not None:
            supervisor.cancel()
        if crowd is not None:
            await crowd.aclose()
        for process in run.processes:
            process.kill()
        for task in list(run.background):
            task.cancel()
        if run.world is not None:
            await run.world.aclose()
        if run.redis is not None:
            await run.redis.stop()


async def burst(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """``args.burst`` members each send /imagine once within ``args.burst_s`` seconds."""
    run = Soak(args, workdir)
    try:
        await run.start()
        world = run.world
        assert world is not None
        assert world.sandbox is not None
        assert world.channel is not None
        members = [world.add_member(f"m{n}") for n in range(args.burst)]
        sandbox = world.sandbox
        before = sandbox.rest.statuses[429]
        started = time.monotonic()
        rng = random.Random(args.seed)
        offsets = sorted(rng.uniform(0, args.burst_s) for _ in members)
        interactions = []
        for member, offset in zip(members, offsets, strict=True):
            delay = started + offset - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            interactions.append(imagine(member, world.channel.id, f"a lighthouse no. {member.id}"))
        sent_s = time.monotonic() - started
        # Discord's deadline: three seconds after the last one, every answer is in or never comes.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await asyncio.gather(*(i.responded.wait() for i in interactions))
        answered = [i for i in interactions if i.responded_at is not None]
        # The backlog the burst left keeps gouache busy (edits, Midjourney calls): count its 429s too.
        await asyncio.sleep(args.burst_tail_s)
        latencies = sorted((i.responded_at - i.created_at) * 1000 for i in answered)  # type: ignore[operator]
        over = sum(1 for ms in latencies if ms > 3000)
        return {
            "benchmark": "chaos_burst",
            "backend": args.backend,
            "members": args.burst,
            "sent_s": round(sent_s, 2),
            "answered": len(answered),
            "failed_interactions": len(interactions) - len(answered) + over,
            "late_callbacks": sum(i.late_callbacks for i in interactions),
            "callback_p50_ms": round(statistics.median(latencies), 1) if latencies else None,
            "callback_p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 1)
            if latencies
            else None,
            "callback_max_ms": round(latencies[-1], 1) if latencies else None,
            "rest_429": sandbox.rest.statuses[429] - before,
            "rest_429_routes": dict(
                Counter(f"{m} {t}" for m, t, status in sandbox.rest.calls if status == 429)
            ),
        }
    finally:
        for process in run.processes:
            process.kill()
        if run.world is not None:
            await run.world.aclose()
        if run.redis is not None:
            await run.redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--backend", choices=["sqlite", "redis"], default="sqlite")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--faults-per-minute", type=float, default=24.0)
    parser.add_argument("--members", type=int, default=12)
    parser.add_argument("--rate", type=float, default=60.0, help="requests a minute, all members")
    parser.add_argument("--daily-limit", type=int, default=60)
    parser.add_argument("--lease-s", type=float, default=5.0)
    parser.add_argument("--drain-s", type=float, default=150.0)
    parser.add_argument("--burst", type=int, default=0, help="measure a burst of N members")
    parser.add_argument("--burst-s", type=float, default=10.0)
    parser.add_argument(
        "--burst-tail-s", type=float, default=30.0, help="keep counting 429s this long after"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="keep logs and data here")
    args = parser.parse_args()

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="gouache-chaos-")
        workdir = Path(tmp.name)
    else:
        workdir = args.workdir
        if workdir.exists() and any(workdir.iterdir()):
            # An earlier run's database and logs would be audited as this run's.
            parser.error(f"--workdir {workdir} is not empty: give a new or empty directory")
        workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "logs").mkdir(exist_ok=True)
    # The stand-ins log here; stdout carries only the result line.
    harness_log = (workdir / "logs" / "harness.txt").open("a", encoding="utf-8")
    configure_logging("warning", stream=harness_log)
    try:
        result = asyncio.run(burst(args, workdir) if args.burst else soak(args, workdir))
    finally:
        harness_log.close()
        if tmp is not None:
            tmp.cleanup()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
