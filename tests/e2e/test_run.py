"""`gouache run -c config.toml` as the owner runs it: a separate process, against the stand-ins.

The stand-ins (Discord with its Midjourney bot, two ComfyUI servers, Ollama)
run in the test process; gouache runs as `python -m gouache run`, reading
only the config file. Members act through the Discord sandbox.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gouache.app import build_store
from gouache.demo.members import buttons, imagine, job_id_of
from gouache.demo.process import GouacheProcess, with_shard
from gouache.demo.world import DemoOptions, DemoWorld
from gouache.jobs import Job, JobState
from gouache_sandbox.discord.state import Message

pytestmark = pytest.mark.timeout(180)

_STARTED: list[GouacheProcess] = []


class Gouache(GouacheProcess):
    """A `gouache run` process this module kills if a test leaves it running."""

    def __init__(self, config: Path) -> None:
        super().__init__(config)
        _STARTED.append(self)

    def placed(self) -> dict[str, str]:
        """The worker each job was last placed on by this process, from its log lines."""
        out: dict[str, str] = {}
        for line in self.lines:
            line = _ANSI.sub("", line)
            if "job.placed" in line:
                job_id, worker = _JOB_ID.search(line), _WORKER.search(line)
                assert job_id and worker, line
                out[job_id[1]] = worker[1]
        return out


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_JOB_ID = re.compile(r"\bjob_id=([0-9a-f]+)")
_WORKER = re.compile(r"\bworker=([\w.-]+)")


async def stored(world: DemoWorld, job_id: str) -> Job:
    """A job as the store holds it (read once no gouache process is running)."""
    assert world.config is not None
    store = build_store(world.config)
    await store.start()
    try:
        job = await store.get(job_id)
    finally:
        await store.aclose()
    assert job is not None
    return job


async def used_today(world: DemoWorld, user_id: int) -> int:
    """How much of ``user_id``'s daily quota the store counts as used."""
    assert world.config is not None
    store = build_store(world.config)
    await store.start()
    try:
        quota = await store.quota(user_id, daily_limit=world.config.queue.daily_limit)
    finally:
        await store.aclose()
    return quota.used


@pytest.fixture(params=["sqlite", "redis"])
async def standins(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DemoWorld]:
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    world = DemoWorld(
        DemoOptions(
            port=0,
            admin_port=0,
            workdir=tmp_path,
            fast=True,
            log_level="info",
            lease_s=3,
            redis_url=redis_url,
        )
    )
    await world.start_standins()
    try:
        yield world
    finally:
        await world.aclose()


@pytest.fixture(autouse=True)
async def no_leftover_processes() -> AsyncIterator[None]:
    """Whatever a test does, no `gouache run` it started outlives it."""
    yield
    for process in list(_STARTED):
        if process.running:
            process.kill()
            assert process.proc is not None
            await process.proc.wait()
    _STARTED.clear()


def finished(message_id: int):  # type: ignore[no-untyped-def]
    return lambda m: (
        m.id == message_id
        and bool(m.attachments)
        and any(b.startswith(("gouache:u:", "gouache:r:")) for b in buttons(m))
    )


def sharded(world: DemoWorld) -> tuple[int, str]:
    """The shard (of 2) Discord sends the demo guild's events to, and the config text."""
    assert world.guild is not None and world.config_path is not None
    return (world.guild.id >> 22) % 2, world.config_path.read_text()


async def answer(world: DemoWorld, interaction_id: int) -> Message:
    assert world.sandbox is not None and world.channel is not None
    return await world.sandbox.wait_for_message(
        world.channel.id,
        lambda m: (
            str((m.interaction_metadata or {}).get("id")) == str(interaction_id)
            and job_id_of(m) is not None
        ),
        timeout=30,
    )


async def test_gouache_run_serves_members_through_both_backends(standins: DemoWorld) -> None:
    world = standins
    assert world.config_path is not None and world.channel is not None and world.sandbox is not None
    gouache = Gouache(world.config_path)
    await gouache.start()
    try:
        alice = world.add_member("alice")
        bob = world.add_member("bob", locale="zh-CN")
        replies = [
            await answer(
                world, imagine(alice, world.channel.id, "a fox --ar 3:2", backend="midjourney").id
            ),
            await answer(world, imagine(bob, world.channel.id, "一只猫", backend="comfyui").id),
        ]
        done = [
            await world.sandbox.wait_for_message(world.channel.id, finished(r.id), timeout=60)
            for r in replies
        ]
        assert all(m.attachments for m in done)
    finally:
        code = await gouache.stop(signal.SIGTERM)
    assert code == 0, gouache.output[-3000:]
    assert "app.stopped" in gouache.output
    # The process logged at info level the whole time; no secret reached a line.
    assert world.config is not None
    for secret in world.config.secrets():
        assert secret not in gouache.output


async def test_killed_mid_job_and_restarted_the_job_completes_and_its_message_updates(
    standins: DemoWorld,
) -> None:
    world = standins
    assert world.config_path is not None and world.channel is not None and world.sandbox is not None
    for server in world.comfy:  # slow enough to be killed mid-job
        server.speed.step_delay = 0.3
    first = Gouache(world.config_path)
    await first.start()
    carol = world.add_member("carol")
    reply = await answer(
        world, imagine(carol, world.channel.id, "a slow lighthouse", backend="comfyui").id
    )
    # Wait until the job is visibly running (a progress bar in the live message).
    await world.sandbox.wait_for_message(
        world.channel.id,
        lambda m: m.id == reply.id and "%" in str((m.embeds or [{}])[0].get("description", "")),
        timeout=30,
    )
    assert await first.stop(signal.SIGKILL) == -signal.SIGKILL
    for server in world.comfy:
        server.speed.step_delay = 0.0

    second = Gouache(world.config_path)
    await second.start()
    try:
        done = await world.sandbox.wait_for_message(
            world.channel.id, finished(reply.id), timeout=60
        )
        assert done.attachments
    finally:
        code = await second.stop(signal.SIGTERM)
    assert code == 0, second.output[-3000:]
    assert "app.stopped" in second.output
    # The job ran twice (the killed attempt, then the recovered one) and was charged once.
    job_id = job_id_of(reply)
    assert job_id is not None
    job = await stored(world, job_id)
    assert job.state is JobState.SUCCEEDED and job.attempts == 2
    assert await used_today(world, carol.user.id) == 1


@pytest.mark.parametrize("standins", ["redis"], indirect=True)
async def test_two_processes_share_one_redis_one_answers_the_guild_the_other_runs_the_workers(
    standins: DemoWorld, tmp_path: Path
) -> None:
    world = standins
    assert world.config_path is not None and world.channel is not None and world.sandbox is not None
    guild_shard, text = sharded(world)
    configs = {}
    for shard in (0, 1):
        path = tmp_path / f"shard-{shard}.toml"
        path.write_text(with_shard(text, shard))
        configs[shard] = path
    # The process that does NOT get the guild's interactions starts first and takes every worker.
    workers_process = Gouache(configs[1 - guild_shard])
    await workers_process.start()
    front = Gouache(configs[guild_shard])
    await front.start()
    try:
        erin = world.add_member("erin")
        replies = [
            await answer(
                world, imagine(erin, world.channel.id, f"tide pool {n}", backend=backend).id
            )
            for n, backend in enumerate(["midjourney", "comfyui", None])
        ]
        for reply in replies:
            done = await world.sandbox.wait_for_message(
                world.channel.id, finished(reply.id), timeout=60
            )
            assert done.attachments
    finally:
        codes = [await front.stop(signal.SIGTERM), await workers_process.stop(signal.SIGTERM)]
    assert codes == [0, 0], front.output[-2000:] + workers_process.output[-2000:]
    # The front enqueued; the other process ran every job (it alone held the workers).
    assert front.output.count("job.enqueued") == 3
    assert workers_process.output.count("job.placed") == 3 and "job.placed" not in front.output


@pytest.mark.parametrize("standins", ["sqlite"], indirect=True)
async def test_a_refused_bot_token_is_one_clear_line_and_exit_2(
    standins: DemoWorld, tmp_path: Path
) -> None:
    assert standins.config_path is not None and standins.config is not None
    assert standins.config.discord is not None
    token = standins.config.discord.token.get_secret_value()
    bad = tmp_path / "bad-token.toml"
    bad.write_text(standins.config_path.read_text().replace(token, "not-the-token"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gouache",
        "run",
        "-c",
        str(bad),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 2, out.decode() + err.decode()
    assert (
        "gouache run: discord.token: Discord refused the bot token (401 Unauthorized)"
        in err.decode()
    )
    assert "Traceback" not in err.decode() + out.decode()
    assert "not-the-token" not in err.decode() + out.decode()


@pytest.mark.parametrize("standins", ["redis"], indirect=True)
async def test_follow_ups_run_in_the_process_that_holds_the_parents_account(
    standins: DemoWorld, tmp_path: Path
) -> None:
    world = standins
    assert world.config_path is not None and world.channel is not None and world.sandbox is not None
    guild_shard, text = sharded(world)
    # Each process's config switches on one Midjourney account: the accounts are split.
    configs = {}
    for shard, keep in ((guild_shard, "mj-1"), (1 - guild_shard, "mj-2")):
        body = with_shard(text, shard)
        blocks = body.split("[[")
        for i, block in enumerate(blocks):
            if (
                block.startswith(("midjourney.accounts]]", "comfyui.servers]]"))
                and f'"{keep}"' not in block
            ):
                header, _, rest = block.partition("\n")
                blocks[i] = f"{header}\nenabled = false\n{rest}"
        path = tmp_path / f"split-{shard}.toml"
        path.write_text("[[".join(blocks))
        configs[shard] = path
    front, back = Gouache(configs[guild_shard]), Gouache(configs[1 - guild_shard])
    await front.start()
    await back.start()
    try:
        fay = world.add_member("fay")
        # Enough imagines that both accounts make one (least loaded, turns among equals).
        parents = [
            await answer(
                world, imagine(fay, world.channel.id, f"reef {n}", backend="midjourney").id
            )
            for n in range(4)
        ]
        try:
            done = [
                await world.sandbox.wait_for_message(world.channel.id, finished(p.id), timeout=60)
                for p in parents
            ]
        except TimeoutError:
            raise AssertionError(front.output[-3000:] + "\n-----\n" + back.output[-3000:]) from None
        jobs = [job_id_of(m) for m in done]
        clicks = [fay.click(m, f"gouache:u:{j}:1") for m, j in zip(done, jobs, strict=True)]
        upscales: list[tuple[int, str | None]] = []  # message id, job id (read at once:
        for click in clicks:  # the finished message's buttons need not carry it)
            message = await answer(world, click.id)
            upscales.append((message.id, job_id_of(message)))
        for message_id, _ in upscales:
            await world.sandbox.wait_for_message(
                world.channel.id,
                lambda m, i=message_id: m.id == i and bool(m.attachments),
                timeout=30,
            )
    finally:
        codes = [await front.stop(signal.SIGTERM), await back.stop(signal.SIGTERM)]
    assert codes == [0, 0], front.output[-2000:] + back.output[-2000:]
    # Where each job ran: the process that placed it, and on which account.
    where = {j: ("front", w) for j, w in front.placed().items()}
    where |= {j: ("back", w) for j, w in back.placed().items()}
    for parent, (_, follow_up) in zip(jobs, upscales, strict=True):
        assert parent is not None and follow_up is not None
        assert where[follow_up] == where[parent], (parent, follow_up, where)
        record = await stored(world, follow_up)
        assert record.state is JobState.SUCCEEDED
        assert record.worker == (await stored(world, parent)).worker == where[parent][1]
    # Both processes ran parents, so a follow-up had a process to go wrong to.
    assert {where[p][0] for p in jobs if p is not None} == {"front", "back"}


@pytest.mark.parametrize("standins", ["sqlite"], indirect=True)
async def test_a_gateway_discord_ends_for_good_stops_the_process_with_a_clear_line(
    standins: DemoWorld,
) -> None:
    """4004 and 4010–4014 are never resumed: a deaf process must not pretend to serve."""
    world = standins
    assert world.config_path is not None and world.sandbox is not None
    assert world.config is not None and world.config.discord is not None
    gouache = Gouache(world.config_path)
    await gouache.start()
    bot = world.sandbox.state.applications[world.config.discord.application_id].bot
    assert world.sandbox.close_connections(4012, user_id=bot.id) == 1
    assert gouache.proc is not None
    code = await asyncio.wait_for(gouache.proc.wait(), 60)
    await gouache.stop()
    assert code == 1, gouache.output[-2000:]
    assert (
        "gouache run: Discord closed the bot's gateway connection with code 4012" in gouache.output
    )
    assert "app.stopped" in gouache.output and "Traceback" not in gouache.output
