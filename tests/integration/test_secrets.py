"""Passwords in URLs never reach the logs of either service."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

import httpx

from tests.support import ServiceProcess, free_port, wait_http


async def test_services_log_the_broker_url_with_its_password_masked(
    amqp_url: str, spawn: Callable[..., ServiceProcess]
) -> None:
    password = urlsplit(amqp_url).password
    assert password, "the test broker URL carries a password"
    port = free_port()
    consumer = spawn("consumer", log_format="json")
    producer = spawn("producer", http_port=port, http_host="127.0.0.1")
    await consumer.wait_log("consuming")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        await wait_http(client, "/readyz", 30)
    for service in (consumer, producer):
        log = service.log()
        assert ":***@" in log
        assert f":{password}@" not in log
