"""The single-submission bench still runs end to end (--quick); its speed is never asserted."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


async def test_single_submit_bench_quick_mode_prints_every_row() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.single_submit",
        "--quick",
        "--http",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(100):
            stdout, stderr = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, stderr.decode()[-3000:]
    result = json.loads(stdout.decode().strip().splitlines()[-1])
    rows = result["results"]
    for key in ("serial_raw", "serial_conveyor", "in_flight_raw", "in_flight_conveyor"):
        assert rows[key]["tasks"] > 0 and rows[key]["per_s"] > 0
    assert rows["http_conveyor"]["tasks"] == 1000 and rows["http_conveyor"]["p99_ms"] > 0
    assert "ratio" in stdout.decode()
