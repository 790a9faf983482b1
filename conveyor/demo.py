"""`conveyor demo`: a producer and N consumers on the local RabbitMQ, a few hundred tasks.

It runs the real services as subprocesses in a throwaway namespace (with a throwaway SQLite
store), submits tasks through the HTTP API, follows their status events for a progress bar,
shows who ran how many, and reads the outcome back from the task records.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aio_pika
import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from conveyor.config import ProducerSettings, load_settings, redact_url
from conveyor.shared.connection import connect_plain
from conveyor.shared.events import decode_events
from conveyor.shared.records import TERMINAL_STATUSES, TaskStatus
from conveyor.shared.topology import Topology

console = Console()

START_HINT = (
    "start one with `rabbitmq-server -detached` (Debian: `apt-get install rabbitmq-server`) "
    "or `docker compose up -d rabbitmq`, or point CONVEYOR_AMQP_URL at yours"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _demo_tasks(count: int) -> list[dict[str, Any]]:
    """A mix of quick async tasks, short sleeps and CPU work."""
    kinds: list[dict[str, Any]] = [
        {"task": "echo", "payload": {"greeting": "hello"}},
        {"task": "sleep", "payload": {"seconds": 0.05}},
        {"task": "cpu", "payload": {"ms": 20}},
    ]
    return [dict(kinds[i % len(kinds)]) for i in range(count)]


@contextmanager
def _services(env: dict[str, str], consumers: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """The producer and consumer processes; stopped with SIGTERM (then SIGKILL) on exit."""

    def start(module: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", f"conveyor.{module}"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    procs = [start("producer")] + [start("consumer") for _ in range(consumers)]
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


async def _wait_ready(client: httpx.AsyncClient, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            if (await client.get("/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError("the producer did not become ready")


async def _run(
    settings: ProducerSettings, count: int, consumers: int, store_dir: str
) -> tuple[Counter[str], Counter[str]]:
    topology = Topology.of(settings)
    port = _free_port()
    env = {
        **os.environ,
        "CONVEYOR_NAMESPACE": settings.namespace,
        "CONVEYOR_HTTP_HOST": "127.0.0.1",
        "CONVEYOR_HTTP_PORT": str(port),
        "CONVEYOR_DATABASE_URL": f"sqlite:///{store_dir}/demo.db",
        "CONVEYOR_METRICS_PORT": "0",  # several consumers on this host: any free port each
    }
    per_worker: Counter[str] = Counter()
    connection = await connect_plain(settings, "conveyor demo")
    try:
        channel = await connection.channel()
        events = await channel.declare_exchange(
            topology.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        watch = await channel.declare_queue(exclusive=True, auto_delete=True)
        await watch.bind(events, routing_key="task.*")
        with _services(env, consumers):
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                await _wait_ready(client, 30)
                tasks = _demo_tasks(count)
                for start in range(0, count, 100):
                    reply = await client.post(
                        "/tasks/batch", json={"tasks": tasks[start : start + 100]}
                    )
                    reply.raise_for_status()
                await _follow(watch, count, per_worker)
                statuses = await _recorded(client, count)
        await _delete_namespace(channel, topology)
    finally:
        await connection.close()
    return per_worker, statuses


async def _recorded(client: httpx.AsyncClient, count: int) -> Counter[str]:
    """Status of every task as the store has it, once it recorded them all (or 30 s passed)."""
    deadline = time.monotonic() + 30
    while True:
        statuses: Counter[str] = Counter()
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 500, **({"cursor": cursor} if cursor else {})}
            page = (await client.get("/tasks", params=params)).json()
            statuses.update(item["status"] for item in page["items"])
            if not (cursor := page["next_cursor"]):
                break
        finished = sum(statuses[s] for s in TERMINAL_STATUSES)
        if finished >= count or time.monotonic() > deadline:
            return statuses
        await asyncio.sleep(0.2)


async def _follow(watch: aio_pika.abc.AbstractQueue, count: int, per_worker: Counter[str]) -> None:
    """Advance a progress bar on each finished task until all `count` are done."""
    columns = (TextColumn("[bold]tasks"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    done: set[str] = set()
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("tasks", total=count)
        async with watch.iterator(timeout=60) as messages:
            async for message in messages:
                await message.ack()
                for event in decode_events(message.body):
                    if event.state is TaskStatus.RUNNING or event.task_id in done:
                        continue
                    done.add(event.task_id)
                    per_worker[event.worker] += 1
                    progress.advance(bar)
                if len(done) >= count:
                    break


async def _delete_namespace(channel: aio_pika.abc.AbstractChannel, topology: Topology) -> None:
    """Delete what the demo's services declared, once they stopped: a demo leaves nothing on
    the user's broker. (The demo runs no retries, so it has no retry queues; those expire on
    their own an hour after their last use anyway.)"""
    for queue in (topology.work_queue("default"), *topology.service_queues):
        await channel.queue_delete(queue)
    for exchange in topology.exchanges:
        await channel.exchange_delete(exchange)


async def _reachable(settings: ProducerSettings) -> bool:
    try:
        connection = await connect_plain(settings, "conveyor demo", timeout_s=3)
    except Exception:
        return False
    await connection.close()
    return True


def run_demo(count: int, consumers: int) -> int:
    """Run the demo; 0 when every task finished, 1 when RabbitMQ is missing or tasks stall."""
    settings = load_settings(ProducerSettings)
    settings = settings.model_copy(update={"namespace": f"demo-{secrets.token_hex(4)}"})
    if not asyncio.run(_reachable(settings)):
        console.print(
            f"RabbitMQ is not reachable at {redact_url(settings.amqp_url)}: {START_HINT}.",
            highlight=False,
            soft_wrap=True,
        )
        return 1
    console.print(
        f"Conveyor demo: producer + {consumers} consumers, {count} tasks "
        f"(echo, sleep 50 ms, cpu 20 ms) in namespace [bold]{settings.namespace}[/bold]"
    )
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="conveyor-demo-") as store_dir:
            per_worker, statuses = asyncio.run(_run(settings, count, consumers, store_dir))
    except (TimeoutError, httpx.HTTPError) as error:
        console.print(f"demo failed: {error}")
        return 1
    elapsed = time.monotonic() - started
    table = Table(title=f"{sum(per_worker.values())} tasks in {elapsed:.1f}s")
    table.add_column("consumer")
    table.add_column("tasks run", justify="right")
    table.add_column("share", justify="right")
    for worker, ran in sorted(per_worker.items()):
        table.add_row(worker, str(ran), f"{ran / max(1, count):.0%}")
    console.print(table)
    shown = ", ".join(f"{n} {status}" for status, n in statuses.most_common())
    console.print(f"task records (GET /tasks): {shown or 'none'}")
    return 0 if sum(per_worker.values()) == count and statuses["succeeded"] == count else 1
