"""Everything under tests/integration talks to a real RabbitMQ (and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from tests.support import ServiceProcess, free_port, wait_http, wait_until


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


OpenApi = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def open_api(spawn: Callable[..., ServiceProcess]) -> AsyncIterator[OpenApi]:
    """`await open_api(**settings)`: a producer process on a free port, ready; its client."""
    clients: list[httpx.AsyncClient] = []

    async def start(**settings: Any) -> httpx.AsyncClient:
        port = free_port()
        spawn("producer", http_port=port, http_host="127.0.0.1", **settings)
        client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30)
        clients.append(client)
        await wait_http(client, "/readyz", 30)
        return client

    yield start
    for client in clients:
        await client.aclose()


async def wait_status(
    api: httpx.AsyncClient, task_id: str, status: str, timeout_s: float = 30
) -> dict[str, Any]:
    """The record once it shows `status` (long-polls the wait endpoint for terminal ones)."""
    record: dict[str, Any] = {}

    async def reached() -> bool:
        nonlocal record
        record = (await api.get(f"/tasks/{task_id}/wait", params={"timeout_s": 1})).json()
        return bool(record["status"] == status)

    await wait_until(reached, timeout_s, f"task {task_id} to be {status}")
    return record


async def statuses_seen(
    api: httpx.AsyncClient, task_id: str, until: str, timeout_s: float = 30
) -> list[dict[str, Any]]:
    """Every distinct state of the record, polled quickly until it shows `until`."""
    seen: list[dict[str, Any]] = []

    async def reached() -> bool:
        record = (await api.get(f"/tasks/{task_id}")).json()
        if not seen or (record["status"], record["attempts"]) != (
            seen[-1]["status"],
            seen[-1]["attempts"],
        ):
            seen.append(record)
        return bool(record["status"] == until)

    await wait_until(reached, timeout_s, f"task {task_id} to be {until}")
    return seen
