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


async def test_database_password_and_api_tokens_never_reach_logs_or_replies(
    spawn: Callable[..., ServiceProcess],
) -> None:
    port = free_port()
    # Trust auth ignores the password: the producer connects, and must still never show it.
    database_url = "postgresql://postgres:db-pa55word@127.0.0.1:5432/test-nowhere-db"
    producer = spawn(
        "producer",
        http_port=port,
        http_host="127.0.0.1",
        database_url=database_url,
        api_tokens="tok-alpha,tok-beta",
        log_level="DEBUG",
    )
    await producer.wait_log("test-nowhere-db failed", timeout_s=30)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        await wait_http(client, "/healthz", 30)
        refused = await client.get("/tasks", headers={"Authorization": "Bearer tok-wrong"})
        unavailable = await client.get("/tasks", headers={"Authorization": "Bearer tok-beta"})
    assert refused.status_code == 401
    assert unavailable.status_code == 503 and unavailable.json()["error"] == "store_unavailable"
    log = producer.log()
    assert "postgres:***@127.0.0.1" in log
    for secret in ("db-pa55word", "tok-alpha", "tok-beta", "tok-wrong"):
        assert secret not in log
        assert secret not in refused.text + unavailable.text
