"""Talking to a producer under test through its HTTP API: submit, read every record, wait."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx

from conveyor.shared.records import TERMINAL_STATUSES
from tests.support import ServiceProcess, wait_until

UNFINISHED = ("queued", "running", "retrying")
PAGE = 500


@dataclass(frozen=True)
class RunningProducer:
    """A producer process under test and a client of its HTTP API."""

    api: httpx.AsyncClient
    process: ServiceProcess


async def submit_batches(
    api: httpx.AsyncClient, tasks: list[dict[str, Any]], batch_size: int = 500
) -> list[str]:
    """POST /tasks/batch in batches, each until accepted (a 503 is retried): the ids, in order.

    Only for a broker that is up: a batch the broker did not confirm may still arrive.
    """
    ids: list[str] = []
    for start in range(0, len(tasks), batch_size):
        chunk = tasks[start : start + batch_size]

        async def accepted(chunk: list[dict[str, Any]] = chunk) -> bool:
            response = await api.post("/tasks/batch", json={"tasks": chunk})
            if response.status_code == 503:
                return False
            assert response.status_code == 202, response.text
            ids.extend(item["id"] for item in response.json()["items"])
            return True

        await wait_until(accepted, 60, f"batch {start // batch_size} to be accepted")
    return ids


async def all_records(api: httpx.AsyncClient, status: str | None = None) -> list[dict[str, Any]]:
    """Every record (of `status`), following `next_cursor`."""
    records: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": PAGE}
    if status is not None:
        params["status"] = status
    while True:
        response = await api.get("/tasks", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        records += page["items"]
        if page["next_cursor"] is None:
            return records
        params["cursor"] = page["next_cursor"]


async def has_unfinished(api: httpx.AsyncClient) -> bool:
    """Whether any record is still queued, running or retrying (one small query each)."""
    for status in UNFINISHED:
        response = await api.get("/tasks", params={"status": status, "limit": 1})
        if response.status_code != 200 or response.json()["items"]:
            return True
    return False


async def settled(api: httpx.AsyncClient, count: int, timeout_s: float) -> bool:
    """Wait until the store holds `count` records or more, none unfinished; False on timeout
    (the caller reports what is missing, then fails)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if not await has_unfinished(api) and len(await all_records(api)) >= count:
                return True
        except httpx.TransportError:
            pass  # the producer is reconnecting: ask again
        await asyncio.sleep(0.5)
    return False


async def wait_record(
    api: httpx.AsyncClient, task_id: str, status: str, timeout_s: float = 60
) -> dict[str, Any]:
    """The record once it shows `status` (long-polls the wait endpoint for terminal ones)."""
    record: dict[str, Any] = {}
    wait = status in TERMINAL_STATUSES

    async def reached() -> bool:
        nonlocal record
        try:
            if wait:
                response = await api.get(f"/tasks/{task_id}/wait", params={"timeout_s": 1})
            else:
                response = await api.get(f"/tasks/{task_id}")
        except httpx.TransportError:
            return False
        record = response.json() if response.status_code == 200 else {}
        return record.get("status") == status

    await wait_until(reached, timeout_s, f"task {task_id} to be {status}")
    return record
