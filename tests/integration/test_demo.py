"""The README's main job: `conveyor demo` runs tasks on 3 consumers and shows who ran what."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys

import aio_pika
from aio_pika.abc import AbstractRobustConnection

from conveyor.shared.topology import Topology
from tests.support import free_port


def _demo(amqp_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor.cli", "demo", *args],
        env={**os.environ, "CONVEYOR_AMQP_URL": amqp_url, "COLUMNS": "120"},
        capture_output=True,
        text=True,
        timeout=120,
    )


async def _left_behind(broker: AbstractRobustConnection, topology: Topology) -> list[str]:
    """The queues and exchanges of `topology` that still exist on the broker."""
    queues = (topology.work_queue("default"), *topology.service_queues)
    left = []
    for name in (*queues, *topology.exchanges):
        channel = await broker.channel()
        try:
            if name in queues:
                await channel.declare_queue(name, passive=True)
            else:
                await channel.declare_exchange(name, passive=True)
            left.append(name)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            pass  # deleted, as it should be
        finally:
            if not channel.is_closed:
                await channel.close()
    return left


async def test_demo_runs_every_task_shows_a_row_per_consumer_and_cleans_up(
    amqp_url: str, broker: AbstractRobustConnection
) -> None:
    done = await asyncio.to_thread(_demo, amqp_url, "--tasks", "60", "--consumers", "3")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "60 tasks in" in done.stdout
    counts = [int(n) for n in re.findall(r"│\s+(\d+) │\s+\d+% │", done.stdout)]
    assert len(counts) == 3 and sum(counts) == 60
    found = re.search(r"namespace (demo-[0-9a-f]+)", done.stdout)
    assert found, done.stdout
    # A demo leaves nothing of its own on the user's broker (run it as often as you like).
    assert await _left_behind(broker, Topology(found.group(1))) == []


def test_demo_without_rabbitmq_says_so_in_one_line() -> None:
    done = _demo(f"amqp://guest:hush@127.0.0.1:{free_port()}/")
    assert done.returncode == 1
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and "RabbitMQ is not reachable" in lines[0]
    assert "rabbitmq-server" in lines[0] and "hush" not in done.stdout + done.stderr
