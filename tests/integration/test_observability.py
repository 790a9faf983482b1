"""Worker registry, Prometheus metrics and request ids in logs, against real services."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable
from typing import Any

import httpx
import orjson

from tests.integration.conftest import OpenApi, wait_status
from tests.support import ServiceProcess, free_port, wait_until

HEARTBEAT_S = 0.5


async def workers(api: httpx.AsyncClient) -> dict[int, dict[str, Any]]:
    """pid -> worker, as GET /workers shows them."""
    reply = await api.get("/workers")
    assert reply.status_code == 200, reply.text
    return {worker["pid"]: worker for worker in reply.json()["items"]}


async def worker_of(
    api: httpx.AsyncClient, process: ServiceProcess, state: str, timeout_s: float = 20
) -> dict[str, Any]:
    """The registry's entry of `process` once it shows `state`."""
    found: dict[str, Any] = {}

    async def shows() -> bool:
        nonlocal found
        found = (await workers(api)).get(process.pid, {})
        return found.get("state") == state

    await wait_until(shows, timeout_s, f"worker {process.pid} to be {state}")
    return found


async def test_registry_shows_workers_online_then_lost_or_offline(
    open_api: OpenApi, spawn: Callable[..., ServiceProcess]
) -> None:
    api = await open_api()
    killed = spawn("consumer", worker_heartbeat_s=HEARTBEAT_S, concurrency=2)
    stopped = spawn("consumer", worker_heartbeat_s=HEARTBEAT_S, queues="default,other")
    online = await worker_of(api, killed, "online")
    expected = (os.cpu_count(), 2, ["default"])
    assert (online["cpu_count"], online["concurrency"], online["queues"]) == expected
    assert online["address"] == "127.0.0.1"  # the route to the test's broker
    assert (
        online["hostname"] and online["version"] and online["id"].split(":")[1] == str(killed.pid)
    )
    assert (await worker_of(api, stopped, "online"))["queues"] == ["default", "other"]

    # Two long tasks run on the worker about to be killed (the other serves `default` too:
    # whichever runs them, the test reads the registry of that one).
    ids = [
        (await api.post("/tasks", json={"task": "sleep", "payload": {"seconds": 30}})).json()["id"]
        for _ in range(2)
    ]

    async def running_somewhere() -> bool:
        shown = await workers(api)
        return set(ids) <= {t for w in shown.values() for t in w["running"]}

    await wait_until(running_somewhere, 20, "both sleeps to show as running")
    on_killed = set((await workers(api))[killed.pid]["running"])

    killed.signal(signal.SIGKILL)
    lost = await worker_of(api, killed, "lost", timeout_s=20)
    assert lost["heartbeat_age_s"] >= 3 * HEARTBEAT_S  # shown rounded to ms: may equal it
    assert set(lost["running"]) == set(lost["at_risk"]) == on_killed

    stopped.signal(signal.SIGTERM)
    assert await stopped.wait(60) == 0
    offline = await worker_of(api, stopped, "offline")
    assert offline["at_risk"] == [] and offline["running"] == []
    assert {w["state"] for w in (await workers(api)).values()} == {"lost", "offline"}


def samples(text: str) -> dict[str, float]:
    """Prometheus text exposition -> {'name{labels}': value} (labels as written)."""
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            found[key] = float(value)
    return found


def value(found: dict[str, float], name: str, **labels: str) -> float:
    """The sample of `name` whose labels include `labels` (0 if there is none)."""
    total = 0.0
    for key, number in found.items():
        metric, _, rest = key.partition("{")
        pairs = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        if metric == name and all(pairs.get(k) == v for k, v in labels.items()):
            total += number
    return total


async def test_every_metric_moves_as_expected_for_a_small_run(
    open_api: OpenApi, spawn: Callable[..., ServiceProcess], namespace: str
) -> None:
    api = await open_api(test_tasks="true")
    port = free_port()
    consumer = spawn("consumer", metrics_port=port, metrics_host="127.0.0.1", test_tasks="true")
    await worker_of(api, consumer, "online")
    echoes = [
        (await api.post("/tasks", json={"task": "echo", "payload": {"n": n}})).json()["id"]
        for n in range(3)
    ]
    failing = (
        await api.post("/tasks", json={"task": "fail", "payload": {"times": 5}, "max_retries": 1})
    ).json()["id"]
    delayed = (await api.post("/tasks", json={"task": "echo", "delay_s": 600})).json()["id"]
    assert (await api.post(f"/tasks/{delayed}/cancel")).status_code == 200
    for task_id in echoes:
        await wait_status(api, task_id, "succeeded")
    await wait_status(api, failing, "failed")

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as scraper:
        consumed = samples((await scraper.get("/metrics")).text)
    assert value(consumed, "conveyor_tasks_started_total", task="echo") == 3
    assert value(consumed, "conveyor_tasks_succeeded_total", task="echo") == 3
    assert value(consumed, "conveyor_tasks_started_total", task="fail") == 2
    assert value(consumed, "conveyor_tasks_retried_total", task="fail") == 1
    assert value(consumed, "conveyor_tasks_failed_total", task="fail") == 1
    assert value(consumed, "conveyor_tasks_dead_lettered_total", task="fail") == 1
    assert value(consumed, "conveyor_tasks_succeeded_total", task="fail") == 0
    runs = "conveyor_task_run_seconds_count"
    assert value(consumed, runs, task="echo", outcome="succeeded") == 3
    assert value(consumed, runs, task="fail", outcome="failed") == 2
    assert value(consumed, "conveyor_task_queue_wait_seconds_count", task="echo") == 3
    assert value(consumed, "conveyor_task_queue_wait_seconds_count", task="fail") == 2
    assert value(consumed, "conveyor_worker_tasks_running") == 0

    async def produced() -> dict[str, float]:
        return samples((await api.get("/metrics")).text)

    async def gauges_caught_up() -> bool:  # the watch looks every few seconds
        found = await produced()
        return (
            value(found, "conveyor_dead_letters") == 1
            and value(found, "conveyor_workers", state="online") == 1
            and value(found, "conveyor_queue_consumers", queue="default") == 1
        )

    await wait_until(gauges_caught_up, 20, "the producer's gauges to show the run")
    found = await produced()
    assert value(found, "conveyor_tasks_submitted_total", task="echo") == 4
    assert value(found, "conveyor_tasks_submitted_total", task="fail") == 1
    assert value(found, "conveyor_tasks_cancelled_total", task="echo") == 1
    assert value(found, "conveyor_publish_seconds_count") == 4  # the delayed one waits
    assert value(found, "conveyor_queue_messages", queue="default") == 0
    assert value(found, "conveyor_oldest_queued_task_age_seconds") == 0
    assert value(found, "conveyor_workers", state="lost") == 0
    # running + succeeded for each echo at least; a few events per fail attempt.
    assert value(found, "conveyor_event_store_lag_seconds_count") >= 3
    assert (await api.get("/queues")).json()["items"][0] | {"messages": 0} == {
        "name": "default",
        "queue": f"{namespace}.default",
        "messages": 0,
        "consumers": 1,
    }


async def test_the_request_id_travels_to_the_consumer_s_log_lines(
    open_api: OpenApi, spawn: Callable[..., ServiceProcess]
) -> None:
    api = await open_api(test_tasks="true")
    consumer = spawn("consumer", log_format="json", test_tasks="true")
    body = {"task": "fail", "payload": {"times": 1}, "max_retries": 0}
    task_id = (await api.post("/tasks", json=body, headers={"X-Request-ID": "req-77"})).json()["id"]
    await wait_status(api, task_id, "failed")
    await wait_until(lambda: task_id in consumer.log(), 10, "the consumer to log the failure")
    lines = [orjson.loads(line) for line in consumer.log().splitlines() if task_id in line]
    assert lines and all(line["request_id"] == "req-77" for line in lines), lines
    assert {line["task"] for line in lines} == {"fail"}
    assert all(line["worker"].split(":")[1] == str(consumer.pid) for line in lines)
