"""The example application (examples/thumbnails), installed and run as a user runs it: its
own unit tests on conveyor.testing, then a producer and 3 consumers serving its tasks,
started from a directory holding its own `config.py` and `shared/`."""

from __future__ import annotations

import asyncio
import importlib
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from conveyor import ConveyorClient, InvalidRequest, TaskStatus
from tests.support import REPO, ServiceProcess, free_port, wait_http, wait_until

EXAMPLE = REPO / "examples" / "thumbnails"
TASKS = 60


@pytest.fixture(scope="module")
def installed_example() -> Iterator[None]:
    """`pip install examples/thumbnails` into this venv, as its README says."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", str(EXAMPLE)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    importlib.invalidate_caches()
    yield


@pytest.fixture
def foreign_directory(tmp_path: Path) -> Path:
    """An application directory whose own `config.py` and `shared/` would shadow generic
    top-level names: Conveyor must not care."""
    app = tmp_path / "app"
    (app / "shared").mkdir(parents=True)
    (app / "config.py").write_text("raise ImportError('the application config, not ours')\n")
    (app / "shared" / "__init__.py").write_text("raise ImportError('the application shared')\n")
    return app


def test_the_examples_own_unit_tests_pass_on_conveyor_testing(installed_example: None) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "4 passed" in run.stdout


async def test_example_tasks_run_once_each_across_three_consumers(
    installed_example: None,
    spawn: Callable[..., ServiceProcess],
    foreign_directory: Path,
) -> None:
    from thumbnails.tasks import Resize, notify, resize_image  # installed just now

    settings = {"tasks": "thumbnails.tasks", "cwd": foreign_directory, "metrics_port": 0}
    port = free_port()
    producer = spawn("producer", http_port=port, http_host="127.0.0.1", **settings)
    consumers = [spawn("consumer", worker_heartbeat_s=0.5, **settings) for _ in range(3)]
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=url) as http:
        await wait_http(http, "/readyz", 30)
    async with ConveyorClient(url, timeout_s=30) as client:
        await wait_until(
            lambda: _served_by_all(client, 3), 60, "3 consumers serving the example's tasks"
        )
        submitted = [
            await client.submit(resize_image, Resize(url=f"img-{n}", width=8 + n))
            if n % 2
            else await client.submit(notify, user_id=n)
            for n in range(TASKS)
        ]
        with pytest.raises(InvalidRequest) as refused:  # through the API, not checked here
            await client.submit("resize_image", {"url": "u", "width": 0})
        assert refused.value.status == 422
        assert [d.field for d in refused.value.details] == ["payload.width"]
        records = await asyncio.gather(*(client.wait(r.id, timeout_s=60) for r in submitted))
        for consumer in consumers:
            consumer.signal(signal.SIGTERM)
        for consumer in consumers:
            assert await consumer.wait(30) == 0, consumer.log()
        workers = await _final_counts(client)
    assert [r.status for r in records] == [TaskStatus.SUCCEEDED] * TASKS, producer.log()
    assert all(r.attempts == 1 for r in records)
    assert records[1].result["width"] == 9 and records[0].result == {
        "user_id": 0,
        "message": "your thumbnail is ready",
    }
    # The consumers' own tallies: 60 runs in all, some on every consumer.
    assert sum(workers.values()) == TASKS and len(workers) == 3
    assert all(count > 0 for count in workers.values()), workers
    assert len({r.worker for r in records}) == 3
    # The sync task's log lines, written in a child process, carry its task id.
    resized = next(r for r in records if r.task == "resize_image")
    lines = [
        line
        for consumer in consumers
        for line in consumer.log().splitlines()
        if f"resized {resized.payload['url']} to" in line
    ]
    assert len(lines) == 1 and f"task_id={resized.id}" in lines[0], lines


async def _served_by_all(client: ConveyorClient, count: int) -> bool:
    types = {t.name: t.workers for t in await client.task_types()}
    return types == {"resize_image": count, "notify": count}


async def _final_counts(client: ConveyorClient) -> dict[str, int]:
    """processed per worker, once all three said `offline` with their final counts."""
    final: dict[str, int] = {}

    async def all_offline() -> bool:
        workers = await client.workers()
        final.clear()
        final.update({w.id: w.processed for w in workers if w.state == "offline"})
        return len(final) == 3

    await wait_until(all_offline, 30, "3 workers offline")
    return final
