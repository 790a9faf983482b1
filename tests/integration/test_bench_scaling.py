"""`python -m bench.scaling --quick`, the CI smoke run of the scaling bench: it runs
against the test broker, prints the table with the ideal line, and makes its plot."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support import run_bench


@pytest.mark.timeout(240)
def test_the_quick_scaling_run_prints_every_point_and_makes_a_plot(amqp_url: str) -> None:
    if urlsplit(amqp_url).hostname not in ("127.0.0.1", "localhost", "::1"):
        pytest.skip("the bench talks to loopback brokers only")
    done = run_bench("bench.scaling", "--quick", "--amqp-url", amqp_url, timeout_s=220)
    assert done.returncode == 0, done.stderr[-3000:]
    [line] = [x for x in done.stdout.splitlines() if x.startswith("{")]
    points = json.loads(line)["scaling"]
    assert [(p["kind"], p["consumers"]) for p in points] == [
        ("I/O wait 20 ms", 1),
        ("I/O wait 20 ms", 2),
        ("CPU 5 ms", 1),
        ("CPU 5 ms", 2),
    ]
    assert all(p["tasks"] > 0 and p["per_s"] > 0 for p in points)
    assert [p["ideal_per_s"] for p in points] == [50.0, 100.0, 200.0, 400.0]
    assert "| task | consumers | tasks/s | ideal" in done.stdout
    [plot] = re.findall(r"plot in (\S+\.png)", done.stderr)
    assert Path(plot).read_bytes().startswith(b"\x89PNG")
