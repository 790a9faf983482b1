"""A node list in CONVEYOR_AMQP_URL against the real broker: a node that does not answer is
passed over, at the first connect and by the services, and no password is logged."""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx
import pytest

from conveyor.config import BrokerSettings
from conveyor.shared import connection as connections
from conveyor.shared.connection import NodeRotation, connect, connect_plain, host_port
from tests.support import ServiceProcess, free_port, wait_http, wait_until


def dead_node() -> str:
    """The URL of a node that is not there (nothing listens on the port)."""
    return f"amqp://app:hunter2@127.0.0.1:{free_port()}/"


async def test_connect_passes_over_a_node_that_does_not_answer(
    amqp_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(connections, "_ROTATION", NodeRotation(offset=0))  # dead one first
    settings = BrokerSettings(amqp_url=f"{dead_node()},{amqp_url}", reconnect_interval_s=0.1)
    with caplog.at_level(logging.INFO):
        robust = await connect(settings, "conveyor test (multi-node)")
        plain = await connect_plain(settings, "conveyor test (multi-node, plain)")
    try:
        assert robust.url.port == urlsplit(amqp_url).port  # type: ignore[attr-defined]
        assert host_port(plain.url) == host_port(amqp_url)  # type: ignore[attr-defined]
        channel = await robust.channel()
        await channel.close()
    finally:
        await robust.close()
        await plain.close()
    assert "hunter2" not in caplog.text
    assert f"connected to {host_port(amqp_url)}" in caplog.text


async def test_services_given_a_dead_node_first_serve_through_the_live_one(
    amqp_url: str, spawn: Callable[..., ServiceProcess]
) -> None:
    urls = f"{dead_node()},{dead_node()},{amqp_url}"  # most connections start at a dead one
    port = free_port()
    consumer = spawn("consumer", amqp_url=urls, reconnect_interval_s=0.2)
    producer = spawn("producer", amqp_url=urls, http_port=port, http_host="127.0.0.1")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        await wait_http(client, "/readyz", 60)
        response = await client.post("/tasks", json={"task": "echo", "payload": {"n": 1}})
        assert response.status_code == 202, response.text
        task_id = response.json()["id"]

        async def succeeded() -> bool:
            record = (await client.get(f"/tasks/{task_id}")).json()
            return bool(record["status"] == "succeeded")

        await wait_until(succeeded, 60, "the task to succeed")
    for service in (consumer, producer):
        assert "hunter2" not in service.log()
        assert ":***@" in service.log()
