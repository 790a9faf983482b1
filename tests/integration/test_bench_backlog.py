"""`python -m bench.backlog --quick`, the CI smoke run of the backlog bench: it starts the
services, fills the store, and prints every row with its target; speed is never asserted."""

from __future__ import annotations

import json
import os
from urllib.parse import urlsplit

import pytest

from bench.backlog import probes
from tests.conftest import POSTGRES_ADMIN_URL
from tests.support import run_bench

QUICK_TASKS = 2000


@pytest.mark.timeout(180)
def test_the_quick_backlog_run_prints_every_row_with_its_target(amqp_url: str) -> None:
    if urlsplit(amqp_url).hostname not in ("127.0.0.1", "localhost", "::1"):
        pytest.skip("the bench talks to loopback brokers only")
    done = run_bench(
        "bench.backlog",
        "--quick",
        "--amqp-url",
        amqp_url,
        "--postgres-url",
        os.environ.get("CONVEYOR_TEST_POSTGRES_URL", POSTGRES_ADMIN_URL),
        timeout_s=160,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [line] = [x for x in done.stdout.splitlines() if x.startswith("{")]
    results = json.loads(line)["results"]
    labels = [probe.label for probe in probes("cursor", "cursor")]
    for phase in ("idle", "backlog"):
        assert list(results["latency_ms"][phase]) == labels
        assert all(
            t["requests"] == 20 and t["max_ms"] > 0 for t in results["latency_ms"][phase].values()
        )
    processes = ["producer", "consumer 1", "consumer 2"]
    assert list(results["rss_mib"]["idle"]) == list(results["rss_mib"]["backlog"]) == processes
    assert results["store_counts"]["scheduled"] == QUICK_TASKS
    assert results["fill"]["queued"]["tasks"] == QUICK_TASKS
    table = [row for row in done.stdout.splitlines() if row.endswith(("PASS", "FAIL"))]
    assert len(table) == len(processes) + len(labels)
    assert all(f"ms p50 / max, {label}" in done.stdout for label in labels)
