"""The HTTP side of the enqueue comparison: a `python -m conveyor.producer` process, a poster.

The producer process is the service as deployed (uvicorn, the run's event loop) on the same
database as the bench's in-process service, so both enqueue paths write records to one store.
Request bodies are encoded before the clock starts and responses are not parsed: the bench
process should spend its CPU on as little as possible while the producer works.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

from bench.common import CONFIRM_WINDOW, CONVEYOR_QUEUE, Children, Names, child_env

PRODUCER_ARGV = [sys.executable, "-m", "conveyor.producer"]
BATCH_SIZE = 1000  # the API's default CONVEYOR_MAX_BATCH_SIZE
# One request at a time, like a client posting its batches in turn: with 2 or 4 in flight
# the producer process (CPU-bound at ~0.3 ms per task) measured no faster, only noisier.
DEFAULT_CONCURRENCY = 1
REQUEST_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class HttpProducer:
    """A running producer process and a client bound to its API."""

    proc: subprocess.Popen[bytes]
    client: httpx.AsyncClient


def free_port() -> int:
    """A port nobody listens on right now (the OS picks it; a race is unlikely on loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def producer_env(
    url: str,
    names: Names,
    queue_type: str,
    loop: str,
    database_url: str,
    port: int,
    health_file: Path,
) -> dict[str, str]:
    """CONVEYOR_* settings of the bench's producer process: the in-process service's own."""
    return child_env(
        {
            "CONVEYOR_AMQP_URL": url,
            "CONVEYOR_NAMESPACE": names.namespace,
            "CONVEYOR_QUEUE_TYPE": queue_type,
            "CONVEYOR_QUEUES": CONVEYOR_QUEUE,
            "CONVEYOR_DATABASE_URL": database_url,
            "CONVEYOR_HTTP_HOST": "127.0.0.1",
            "CONVEYOR_HTTP_PORT": str(port),
            "CONVEYOR_CONFIRM_WINDOW": str(CONFIRM_WINDOW),
            "CONVEYOR_MAX_BATCH_SIZE": str(BATCH_SIZE),
            "CONVEYOR_EVENT_LOOP": loop,
            "CONVEYOR_HEALTH_FILE": str(health_file),
            "CONVEYOR_LOG_LEVEL": "INFO",
        }
    )


async def _wait_ready(
    client: httpx.AsyncClient,
    children: Children,
    proc: subprocess.Popen[bytes],
    timeout_s: float,
) -> None:
    """Poll GET /readyz until 200: the store is open and the broker connected."""
    async with asyncio.timeout(timeout_s):
        while True:
            children.check_alive([proc])
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            await asyncio.sleep(0.05)


@asynccontextmanager
async def open_http_producer(
    children: Children,
    env: dict[str, str],
    port: int,
    label: str,
    ready_timeout_s: float = 60.0,
    argv: Sequence[str] = PRODUCER_ARGV,
) -> AsyncIterator[HttpProducer]:
    """Start `argv` (`python -m conveyor.producer`), wait until ready; SIGTERM it on exit."""
    proc = children.spawn(argv, env, label)
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=REQUEST_TIMEOUT_S
        ) as client:
            await _wait_ready(client, children, proc, ready_timeout_s)
            yield HttpProducer(proc, client)
    finally:
        await children.stop([proc])


def batch_bodies(tasks: int, batch_size: int = BATCH_SIZE) -> list[bytes]:
    """`POST /tasks/batch` bodies for `tasks` no-op `echo` tasks, `batch_size` per request."""
    return [
        orjson.dumps(
            {
                "tasks": [
                    {"task": "echo", "payload": {"i": i}}
                    for i in range(start, min(start + batch_size, tasks))
                ]
            }
        )
        for start in range(0, tasks, batch_size)
    ]


async def post_batches(
    client: httpx.AsyncClient, bodies: Sequence[bytes], concurrency: int
) -> None:
    """POST every body, `concurrency` requests in flight; each must answer 202 (all accepted)."""
    pending = iter(bodies)

    async def post_in_turn() -> None:
        for body in pending:  # one shared iterator: each body is taken once
            response = await client.post(
                "/tasks/batch", content=body, headers={"Content-Type": "application/json"}
            )
            if response.status_code != 202:
                raise RuntimeError(
                    f"POST /tasks/batch answered {response.status_code}: {response.text[:500]}"
                )

    await asyncio.gather(*(post_in_turn() for _ in range(concurrency)))
