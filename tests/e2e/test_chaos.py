"""The chaos soak (benchmarks/chaos.py) in CI: a short run per backend with a fixed seed.

Each run starts gouache as real processes against the stand-ins, injects more
than 20 faults a minute while simulated members imagine, click and cancel,
drains, and audits the store and the channel. Nothing may be lost, run or
posted twice, charged wrongly or left unfinished, and no secret may reach a log.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "chaos.py"
GOAL = ("lost", "duplicated", "ledger_mismatch", "stuck", "secrets_in_logs")

pytestmark = pytest.mark.timeout(420)


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_a_short_soak_under_faults_loses_nothing(backend: str, tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(BENCH),
        *("--minutes", "0.75", "--backend", backend, "--seed", "7"),
        *("--workdir", str(tmp_path), "--drain-s", "120"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 400)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()[-3000:]
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["faults_per_minute"] >= 20, result
    assert result["accepted"] >= 15, result  # the crowd got work through the storm
    assert {k: result[k] for k in GOAL} == dict.fromkeys(GOAL, 0), result


async def test_a_workdir_holding_an_earlier_run_is_refused(tmp_path: Path) -> None:
    """An earlier run's database would be audited as this run's (it once showed 132 lost)."""
    (tmp_path / "gouache.db").write_bytes(b"an earlier run")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(BENCH),
        *("--minutes", "0.1", "--workdir", str(tmp_path)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2 and out == b""
    assert "is not empty" in err.decode()
