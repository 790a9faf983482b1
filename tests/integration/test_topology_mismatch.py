"""A queue that exists with other arguments is reported clearly, never silently."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from aio_pika.abc import AbstractRobustConnection

from conveyor.shared.topology import Topology
from tests.support import ServiceProcess, free_port, wait_http


async def test_queue_type_mismatch_stops_consumer_and_is_logged_by_producer(
    broker: AbstractRobustConnection, namespace: str, spawn: Callable[..., ServiceProcess]
) -> None:
    channel = await broker.channel()
    await channel.declare_queue(
        Topology(namespace).work_queue("default"),
        durable=True,
        arguments={"x-queue-type": "classic"},
    )
    await channel.close()

    consumer = spawn("consumer", queue_type="quorum")
    assert await consumer.wait(60) == 1
    assert "refused our set-up" in consumer.log() and "inequivalent arg" in consumer.log()
    assert "Traceback" not in consumer.log()

    port = free_port()
    producer = spawn("producer", queue_type="quorum", http_port=port, http_host="127.0.0.1")
    await producer.wait_log("producer set-up failed")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        await wait_http(client, "/healthz", 30)
        assert (await client.get("/readyz")).status_code == 503
        reply = await client.post("/tasks", json={"task": "echo"})
        assert reply.status_code == 503 and "Retry-After" in reply.headers
