"""`POST /tasks` one task per request from concurrent keep-alive clients, next to raw.

A `python -m conveyor.producer` process on the run's database; `clients` coroutines in the
bench process, each with its own keep-alive connection (KeepAliveClient), post in turn.
Every reply must be a 202 (record written, confirm in). Bodies are encoded before the clock
starts. The
raw baseline is the same run's raw pipelined confirms (`in_flight_raw`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import orjson

from bench.calls import Rate, Send, in_flight
from bench.common import Children, Names
from bench.http_producer import free_port, open_http_producer, producer_env
from bench.measure import cpu_seconds, percentile

if TYPE_CHECKING:
    from bench.single_submit import Options


class KeepAliveClient:
    """A minimal HTTP/1.1 keep-alive client: one connection, one request at a time.

    httpx spent 1-2 ms of the bench process's CPU per request (8 ms with 64 connections in
    one pool), more than the producer it measures, so the bench process, sharing 2 cores
    with the producer, PostgreSQL and RabbitMQ, was the bottleneck. This one sends pre-encoded
    requests and reads the status line, headers and Content-Length body: tens of µs.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> KeepAliveClient:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        """Send one encoded request; (status, body) of its response."""
        self._writer.write(raw)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return status, await self._reader.readexactly(length)

    async def close(self) -> None:
        self._writer.close()
        await self._writer.wait_closed()


def post_request(port: int, body: bytes) -> bytes:
    """`POST /tasks` with `body`, encoded once."""
    return (
        f"POST /tasks HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def post_singles(
    ports: list[int], bodies: list[bytes], clients: int
) -> tuple[float, list[float]]:
    """POST every body from `clients` keep-alive connections, spread over the producers at
    `ports` in turn; (seconds, per-request ms)."""
    requests = iter([post_request(ports[0], body) for body in bodies])  # Host: is not checked
    latencies_ms: list[float] = []
    pool = [
        await KeepAliveClient.open("127.0.0.1", ports[index % len(ports)])
        for index in range(clients)
    ]

    async def post_in_turn(client: KeepAliveClient) -> None:
        for raw in requests:
            t0 = time.perf_counter()
            status, reply = await client.request(raw)
            latencies_ms.append((time.perf_counter() - t0) * 1000)
            if status != 202:
                raise RuntimeError(f"POST /tasks answered {status}: {reply[:500]!r}")

    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(post_in_turn(client) for client in pool))
        return time.perf_counter() - t0, latencies_ms
    finally:
        for client in pool:
            await client.close()


async def measure_http(
    opts: Options,
    names: Names,
    database_url: str,
    children: Children,
    raw: Send,
    keep: Callable[[str, Rate], None],
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Rounds of raw in flight and POST /tasks, alternating; latency figures of the HTTP side.

    `opts.http_producers` producer processes (replicas on one database, each its own port)
    share the clients; their CPU is summed.
    """
    latencies: list[float] = []
    cpu_s = 0.0
    async with AsyncExitStack() as stack:
        ports, procs = [], []
        for index in range(opts.http_producers):
            port = free_port()
            env = producer_env(
                opts.url,
                names,
                "classic",
                opts.loop,
                database_url,
                port,
                children.log_dir / f"producer-alive-{index}",
            )
            env.update(extra_env or {})
            label = f"producer-http-{opts.loop}-{index}"
            http = await stack.enter_async_context(open_http_producer(children, env, port, label))
            ports.append(port)
            procs.append(http.proc)
        bodies = [orjson.dumps({"task": "echo", "payload": {"i": i}}) for i in range(opts.tasks)]
        await post_singles(ports, bodies[:200], opts.http_clients)  # warm up
        for round_ in range(opts.rounds):
            for side in ("raw", "http") if round_ % 2 == 0 else ("http", "raw"):
                if side == "raw":
                    keep("in_flight_raw", await in_flight(raw, opts.tasks, opts.callers))
                    continue
                cpu0 = cpu_seconds(procs)
                seconds, round_ms = await post_singles(ports, bodies, opts.http_clients)
                cpu_s = cpu_seconds(procs) - cpu0
                latencies += round_ms
                keep("http_conveyor", Rate(len(bodies), seconds, cpu_s))
    return {
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
    }
