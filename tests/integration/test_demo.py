"""The README's main job: `conveyor demo` runs tasks on 3 consumers and shows who ran what."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.support import free_port


def _demo(amqp_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor.cli", "demo", *args],
        env={**os.environ, "CONVEYOR_AMQP_URL": amqp_url, "COLUMNS": "120"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_demo_runs_every_task_and_shows_a_row_per_consumer(amqp_url: str) -> None:
    done = _demo(amqp_url, "--tasks", "60", "--consumers", "3")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "60 tasks in" in done.stdout
    counts = [int(n) for n in re.findall(r"│\s+(\d+) │\s+\d+% │", done.stdout)]
    assert len(counts) == 3 and sum(counts) == 60


def test_demo_without_rabbitmq_says_so_in_one_line() -> None:
    done = _demo(f"amqp://guest:hush@127.0.0.1:{free_port()}/")
    assert done.returncode == 1
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and "RabbitMQ is not reachable" in lines[0]
    assert "rabbitmq-server" in lines[0] and "hush" not in done.stdout + done.stderr
