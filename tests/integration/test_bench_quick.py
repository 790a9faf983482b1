"""The speed benches still run end to end (`bench.targets --quick`: bench.single_submit and
bench.run in their quick modes); their speed is never asserted."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGETS = 7  # issue 12: serial, in flight, POST /tasks, drain, consumer CPU, p50, p99


async def test_the_targets_bench_quick_mode_judges_every_target() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.targets",
        "--quick",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(240):
            stdout, stderr = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, stderr.decode()[-3000:]
    rows = json.loads(stdout.decode().strip().splitlines()[-1])["rows"]
    assert len(rows) == TARGETS
    for row in rows:
        assert row["raw"] > 0 and row["conveyor"] > 0, row
        assert isinstance(row["met"], bool)
    # Both benches printed their own tables and JSON lines on the way (to stderr).
    progress = stderr.decode()
    assert '"bench": "single-submit"' in progress and '"bench": "conveyor-vs-raw"' in progress
