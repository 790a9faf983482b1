"""What the services log: one line per finished task in the consumer, and no ERROR line in a
clean run of producer and consumers."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import httpx
import orjson
from aio_pika.abc import AbstractRobustConnection

from conveyor.shared.topology import Topology
from tests.integration.conftest import OpenApi, wait_status
from tests.integration.test_dead_letters import envelope_headers, inject
from tests.support import ServiceProcess, free_port, wait_http, wait_until

WORKER_LOGGER = "conveyor.consumer.worker"


def json_lines(process: ServiceProcess) -> list[dict[str, Any]]:
    """The process's log lines that are JSON objects (CONVEYOR_LOG_FORMAT=json)."""
    lines = []
    for line in process.log().splitlines():
        if line.startswith("{"):
            lines.append(orjson.loads(line))
    return lines


def task_lines(process: ServiceProcess, task_id: str) -> list[dict[str, Any]]:
    """The consumer's lines saying how a delivery of `task_id` ended."""
    return [
        line
        for line in json_lines(process)
        if line["logger"] == WORKER_LOGGER
        and line.get("task_id") == task_id
        and f"[{task_id}] " in line["message"]
    ]


async def submit(api: httpx.AsyncClient, body: dict[str, Any], request_id: str = "") -> str:
    headers = {"X-Request-ID": request_id} if request_id else {}
    reply = await api.post("/tasks", json=body, headers=headers)
    assert reply.status_code == 202, reply.text
    return str(reply.json()["id"])


async def test_consumer_logs_one_line_per_finished_task_with_its_fields(
    open_api: OpenApi,
    spawn: Callable[..., ServiceProcess],
    broker: AbstractRobustConnection,
    topology: Topology,
) -> None:
    api = await open_api()
    cancelled = await submit(api, {"task": "echo", "payload": {}}, "req-cancelled")
    assert (await api.post(f"/tasks/{cancelled}/cancel")).status_code == 200
    consumer = spawn("consumer", log_format="json", retry_backoff_s=0.2)
    await consumer.wait_log("consuming")
    echo = await submit(api, {"task": "echo", "payload": {"n": 1}}, "req-echo")
    failed = await submit(api, {"task": "fail", "payload": {"permanent": True}}, "req-failed")
    retried = await submit(
        api, {"task": "fail", "payload": {"times": 1}, "max_retries": 1}, "req-retried"
    )
    unknown = await inject(broker, topology, b"{}", envelope_headers("no_such_task"))
    marker = await submit(api, {"task": "echo", "payload": {}})  # after the cancelled one
    for task_id, status in ((echo, "succeeded"), (failed, "failed"), (retried, "succeeded")):
        await wait_status(api, task_id, status)
    await wait_status(api, marker, "succeeded")
    await wait_until(lambda: bool(task_lines(consumer, unknown)), 20, "the dead letter's line")
    await wait_until(lambda: bool(task_lines(consumer, cancelled)), 20, "the cancelled line")

    def outcomes(task_id: str) -> list[tuple[str, str, int]]:
        return [
            (line["level"], line["message"].split("] ", 1)[1], line["attempt"])
            for line in task_lines(consumer, task_id)
        ]

    succeeded = outcomes(echo)
    assert len(succeeded) == 1 and succeeded[0][0] == "info"
    assert succeeded[0][1].startswith("succeeded in ") and succeeded[0][1].endswith(" s")
    assert outcomes(failed) == [("warning", "failed: PermanentFailure: failed on purpose", 1)]
    retry, success = outcomes(retried)
    assert (retry[0], retry[2]) == ("warning", 1)
    assert retry[1].startswith("retrying in ") and "TaskFailed" in retry[1]
    assert (success[0], success[2]) == ("info", 2) and success[1].startswith("succeeded in")
    dead = outcomes(unknown)
    assert len(dead) == 1 and dead[0][:1] == ("warning",)
    assert dead[0][1].startswith("dead-lettered: unknown_task: ")
    assert outcomes(cancelled) == [("info", "cancelled (before it ran)", 1)]

    worker = {line["worker"] for line in json_lines(consumer) if "worker" in line}
    assert len(worker) == 1
    for task_id, name, request_id in (
        (echo, "echo", "req-echo"),
        (failed, "fail", "req-failed"),
        (retried, "fail", "req-retried"),
        (cancelled, "echo", "req-cancelled"),
        (unknown, "no_such_task", None),
    ):
        for line in task_lines(consumer, task_id):
            assert (line["task"], line.get("request_id"), line["worker"]) == (
                name,
                request_id,
                *worker,
            )


async def test_log_tasks_false_drops_the_info_lines_but_not_the_failures(
    open_api: OpenApi, spawn: Callable[..., ServiceProcess]
) -> None:
    api = await open_api()
    consumer = spawn("consumer", log_format="json", log_tasks="false")
    echo = await submit(api, {"task": "echo", "payload": {}})
    failed = await submit(api, {"task": "fail", "payload": {"permanent": True}})
    await wait_status(api, echo, "succeeded")
    await wait_status(api, failed, "failed")
    await wait_until(lambda: bool(task_lines(consumer, failed)), 20, "the failure's line")
    assert task_lines(consumer, echo) == []
    assert [line["level"] for line in task_lines(consumer, failed)] == ["warning"]


async def test_a_clean_run_logs_no_error_in_producer_or_consumers(
    spawn: Callable[..., ServiceProcess],
) -> None:
    """A producer, two consumers, tasks that succeed, fail (a WARNING) and retry, then a
    graceful stop: no line at ERROR or above, and no traceback, in any of their logs.

    It caught a producer that answered run checks with `mandatory` set (RabbitMQ returns
    every direct reply-to reply so published, aiormq logged each as an ERROR)."""
    port = free_port()
    producer = spawn("producer", http_port=port, http_host="127.0.0.1", log_format="json")
    consumers = [spawn("consumer", log_format="json", retry_backoff_s=0.2) for _ in range(2)]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as api:
        await wait_http(api, "/readyz", 30)
        for consumer in consumers:
            await consumer.wait_log("consuming")
        ids = [await submit(api, {"task": "echo", "payload": {"n": n}}) for n in range(10)]
        failed = await submit(api, {"task": "fail", "payload": {"permanent": True}})
        retried = await submit(api, {"task": "fail", "payload": {"times": 1}, "max_retries": 1})
        for task_id in ids:
            await wait_status(api, task_id, "succeeded")
        await wait_status(api, failed, "failed")
        await wait_status(api, retried, "succeeded")
    for process in (*consumers, producer):
        process.signal(signal.SIGTERM)
        assert await process.wait(60) == 0, process.log()[-2000:]  # a graceful stop: exit 0
    for process in (producer, *consumers):
        text = process.log()
        bad = [
            line
            for line in json_lines(process)
            if line["level"] in ("error", "critical") or "exc_info" in line
        ]
        assert bad == [], f"{process.module}: {bad}"
        assert "Traceback" not in text, text[-3000:]
        plain = [line for line in text.splitlines() if line and not line.startswith("{")]
        assert plain == [], f"{process.module} wrote lines that are not JSON: {plain[:5]}"
