"""Cancelling a task in each state; delayed tasks wait in the store until due."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from datetime import datetime

import httpx

from tests.integration.conftest import OpenApi, wait_status
from tests.support import EventLog, ServiceProcess, free_port, wait_http


async def cancel(api: httpx.AsyncClient, task_id: str) -> httpx.Response:
    return await api.post(f"/tasks/{task_id}/cancel")


async def test_cancelling_a_scheduled_task_means_it_is_never_published(
    open_api: OpenApi, spawn: Callable[..., ServiceProcess], events: EventLog
) -> None:
    api = await open_api()
    spawn("consumer")
    delayed = (await api.post("/tasks", json={"task": "echo", "delay_s": 1.0})).json()
    assert delayed["status"] == "scheduled" and delayed["eta"]
    reply = await cancel(api, delayed["id"])
    assert reply.status_code == 200 and reply.json()["status"] == "cancelled"
    # A marker due after it: once the marker ran, the cancelled one would have too.
    marker = (await api.post("/tasks", json={"task": "echo", "delay_s": 1.5})).json()
    await wait_status(api, marker["id"], "succeeded")
    record = (await api.get(f"/tasks/{delayed['id']}")).json()
    assert (record["status"], record["attempts"]) == ("cancelled", 0)
    assert events.runs_of(delayed["id"]) == []


async def test_cancelling_a_queued_task_acks_it_unrun_even_for_a_later_consumer(
    open_api: OpenApi, spawn: Callable[..., ServiceProcess], events: EventLog
) -> None:
    api = await open_api()
    queued = (await api.post("/tasks", json={"task": "echo", "payload": {"n": 1}})).json()
    assert (await cancel(api, queued["id"])).json()["status"] == "cancelled"
    marker = (await api.post("/tasks", json={"task": "echo", "payload": {"n": 2}})).json()
    consumer = spawn("consumer")  # starts after the cancellation: it asks for it first
    await wait_status(api, marker["id"], "succeeded")
    await consumer.wait_log(f"{queued['id']}] cancelled (before it ran)")
    assert events.runs_of(queued["id"]) == []
    again = await cancel(api, marker["id"])
    assert again.status_code == 409 and "already succeeded" in again.json()["message"]
    assert (await cancel(api, "no-such-task")).status_code == 404


async def test_cancelling_running_tasks_stops_them_and_the_consumer_serves_the_next(
    open_api: OpenApi, spawn: Callable[..., ServiceProcess]
) -> None:
    api = await open_api()
    consumer = spawn("consumer", report_running_after_s=0)
    for body in (
        {"task": "sleep", "payload": {"seconds": 60}},
        {"task": "cpu", "payload": {"ms": 60_000}},
    ):
        running = (await api.post("/tasks", json=body)).json()
        await wait_status(api, running["id"], "running")
        asked = time.monotonic()
        assert (await cancel(api, running["id"])).json()["status"] == "cancelled"
        await consumer.wait_log(f"{running['id']}] cancelled (stopped while running)")
        assert time.monotonic() - asked < 5  # stopped promptly (async: well under 1 s)
        follower = (await api.post("/tasks", json={"task": "echo", "payload": body})).json()
        assert (await wait_status(api, follower["id"], "succeeded"))["attempts"] == 1
        record = (await api.get(f"/tasks/{running['id']}")).json()
        assert record["status"] == "cancelled" and record["error"]["type"] == "Cancelled"


RESEND_AFTER_S = 2.0


async def test_delayed_tasks_start_within_a_second_of_their_time_across_a_producer_restart(
    spawn: Callable[..., ServiceProcess], events: EventLog, postgres_url: str
) -> None:
    async with contextlib.AsyncExitStack() as clients:

        async def producer() -> tuple[ServiceProcess, httpx.AsyncClient]:
            port = free_port()
            process = spawn(
                "producer",
                http_port=port,
                http_host="127.0.0.1",
                database_url=postgres_url,
                outbox_resend_after_s=RESEND_AFTER_S,
            )
            client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30)
            await clients.enter_async_context(client)
            await wait_http(client, "/readyz", 30)
            return process, client

        (first, api), _ = await producer(), await producer()
        consumer = spawn("consumer", concurrency=4)
        await consumer.wait_log("consuming")
        delays = [0.5 + 4.5 * n / 199 for n in range(200)]  # spread over 5 s
        batch = [{"task": "echo", "payload": {"n": n}, "delay_s": d} for n, d in enumerate(delays)]
        items = (await api.post("/tasks/batch", json={"tasks": batch})).json()["items"]
        assert {item["status"] for item in items} == {"scheduled"}
        due = {
            item["id"]: datetime.fromisoformat(item["created_at"]).timestamp() + delay
            for item, delay in zip(items, delays, strict=True)
        }
        # Restart a producer in the middle; the store holds what is not due yet.
        await asyncio.sleep(2)
        first.signal(signal.SIGKILL)
        await producer()
        await events.wait_finished(set(due), timeout_s=30)
    late = {
        event.task_id: event.started_at - due[event.task_id]
        for event in events.events
        if event.task_id in due and event.started_at is not None
    }
    assert len(late) == 200  # none lost
    assert min(late.values()) > -0.05  # none started early
    # Tasks the killed replica had claimed but not published yet wait for the outbox sweeper
    # (CONVEYOR_OUTBOX_RESEND_AFTER_S, swept every half of it); every other one is on time.
    on_time = [seconds for seconds in late.values() if seconds < 1.0]
    assert len(on_time) >= 190, sorted(late.values())[-12:]
    assert max(late.values()) < RESEND_AFTER_S * 1.5 + 1.0, sorted(late.values())[-5:]
