"""`POST /tasks` one task per request from concurrent keep-alive clients, next to raw.

A `python -m conveyor.producer` process on the run's database; `clients` coroutines in the
bench process, each with its own keep-alive connection, post in turn. Every reply must be a
202 (record written, confirm in). Request bodies are encoded before the clock starts. The
raw baseline is the same run's raw pipelined confirms (`in_flight_raw`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from bench.calls import Rate, Send, in_flight
from bench.common import Children, Names
from bench.http_producer import free_port, open_http_producer, producer_env
from bench.measure import cpu_seconds, percentile

if TYPE_CHECKING:
    from bench.single_submit import Options


async def post_singles(
    base_url: str, bodies: list[bytes], clients: int
) -> tuple[float, list[float]]:
    """POST every body from `clients` keep-alive clients; (seconds, per-request ms).

    One httpx client (one connection) per concurrent client: a single client's pool with 64
    connections spent ~8 ms of the bench's CPU per request (httpcore scans its pool under a
    lock), making the bench, not the producer, the bottleneck.
    """
    todo = iter(bodies)
    latencies_ms: list[float] = []
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    headers = {"Content-Type": "application/json"}
    async with AsyncExitStack() as stack:
        pool = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60.0)
            )
            for _ in range(clients)
        ]
        # Open the connections before the clock starts.
        await asyncio.gather(*(client.get("/healthz") for client in pool))

        async def post_in_turn(client: httpx.AsyncClient) -> None:
            for body in todo:
                t0 = time.perf_counter()
                reply = await client.post("/tasks", content=body, headers=headers)
                latencies_ms.append((time.perf_counter() - t0) * 1000)
                if reply.status_code != 202:
                    raise RuntimeError(f"POST /tasks answered {reply.status_code}: {reply.text}")

        t0 = time.perf_counter()
        await asyncio.gather(*(post_in_turn(client) for client in pool))
        return time.perf_counter() - t0, latencies_ms


async def measure_http(
    opts: Options,
    names: Names,
    database_url: str,
    children: Children,
    raw: Send,
    keep: Callable[[str, Rate], None],
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Rounds of raw in flight and POST /tasks, alternating; latency figures of the HTTP side."""
    port = free_port()
    env = producer_env(
        opts.url,
        names,
        "classic",
        opts.loop,
        database_url,
        port,
        children.log_dir / "producer-alive",
    )
    env.update(extra_env or {})
    latencies: list[float] = []
    cpu_s = 0.0
    async with open_http_producer(children, env, port, f"producer-http-{opts.loop}") as http:
        bodies = [orjson.dumps({"task": "echo", "payload": {"i": i}}) for i in range(opts.tasks)]
        base = f"http://127.0.0.1:{port}"
        await post_singles(base, bodies[:200], opts.http_clients)  # warm up
        for round_ in range(opts.rounds):
            for side in ("raw", "http") if round_ % 2 == 0 else ("http", "raw"):
                if side == "raw":
                    keep("in_flight_raw", await in_flight(raw, opts.tasks, opts.callers))
                    continue
                cpu0 = cpu_seconds([http.proc])
                seconds, round_ms = await post_singles(base, bodies, opts.http_clients)
                cpu_s = cpu_seconds([http.proc]) - cpu0
                latencies += round_ms
                keep("http_conveyor", Rate(len(bodies), seconds, cpu_s))
    return {
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
    }
