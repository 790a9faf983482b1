"""Broker restarts: confirmed tasks survive them, the producer answers 503 while the broker is
down and recovers after, and a running consumer keeps consuming."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path

import aio_pika
import httpx
import pytest
from aio_pika.abc import AbstractConnection

from conveyor.config import ProducerSettings
from conveyor.producer.service import open_submitter
from conveyor.producer.submission.submitter import TaskSubmission
from conveyor.shared.records import TaskStatus
from conveyor.shared.topology import Topology
from tests.support import (
    EventLog,
    RabbitNode,
    ServiceProcess,
    free_port,
    queue_depth,
    wait_http,
    wait_until,
)


async def connect_to(node: RabbitNode, opened: list[AbstractConnection]) -> AbstractConnection:
    """A plain (non-robust) connection to `node`; tests open a fresh one after each restart."""
    connection = await aio_pika.connect(node.url, timeout=10)
    opened.append(connection)
    return connection


async def open_event_log(
    node: RabbitNode, namespace: str, opened: list[AbstractConnection]
) -> EventLog:
    """Every task event of `namespace` on `node`, from now on."""
    connection = await connect_to(node, opened)
    log = EventLog()
    await log.start(await connection.channel(), Topology(namespace))
    return log


async def work_queue_depth(node: RabbitNode, namespace: str) -> int:
    """Ready messages in `{namespace}.default` on `node`; -1 while the queue does not answer."""
    connection = await aio_pika.connect(node.url, timeout=10)
    try:
        channel = await connection.channel()
        return await queue_depth(channel, Topology(namespace).work_queue("default"))
    except aio_pika.exceptions.AMQPError:
        return -1
    finally:
        await connection.close()


async def submit_echoes(
    node: RabbitNode, namespace: str, count: int, label: str, store_dir: Path
) -> set[str]:
    """Publish `count` echo tasks through the Python API (recorded, confirmed); their ids."""
    settings = ProducerSettings(
        amqp_url=node.url, namespace=namespace, database_url=f"sqlite:///{store_dir / 'tasks.db'}"
    )
    async with open_submitter(settings) as submitter:
        records = await submitter.submit_many(
            [TaskSubmission(task="echo", payload={label: n}) for n in range(count)]
        )
    return {record.id for record in records}


def assert_each_succeeded_once(events: EventLog, ids: set[str]) -> None:
    succeeded = events.succeeded_count()
    assert set(succeeded) == ids
    assert all(count == 1 for count in succeeded.values()), succeeded.most_common(3)
    assert events.of_state(TaskStatus.FAILED) == []
    done = [e for e in events.of_state(TaskStatus.SUCCEEDED) if e.task_id in ids]
    assert not any(e.redelivered for e in done)  # each ran once, on its first delivery


async def test_100_confirmed_tasks_survive_a_broker_restart_and_each_succeeds_once(
    running_node: RabbitNode,
    chaos_namespace: str,
    start_service: Callable[..., ServiceProcess],
    node_connections: list[AbstractConnection],
    tmp_path: Path,
) -> None:
    ids = await submit_echoes(running_node, chaos_namespace, 100, "n", tmp_path)
    assert len(ids) == 100
    assert await work_queue_depth(running_node, chaos_namespace) == 100

    await asyncio.to_thread(running_node.restart)

    # The quorum queue may need a moment to elect its leader after the boot.
    depth = -1

    async def queue_answers() -> bool:
        nonlocal depth
        depth = await work_queue_depth(running_node, chaos_namespace)
        return depth >= 0

    await wait_until(queue_answers, 20, "the work queue to answer after the restart")
    assert depth == 100  # all 100 ready, before any consumer started

    events = await open_event_log(running_node, chaos_namespace, node_connections)
    consumer = start_service("consumer")
    await events.wait_finished(ids, timeout_s=60)

    assert_each_succeeded_once(events, ids)
    assert sorted(e.result["n"] for e in events.of_state(TaskStatus.SUCCEEDED)) == list(range(100))
    assert await work_queue_depth(running_node, chaos_namespace) == 0
    consumer.signal(signal.SIGTERM)
    assert await consumer.wait(30) == 0


async def test_producer_api_answers_503_while_its_broker_is_down_and_202_after_it_returns(
    running_node: RabbitNode,
    chaos_namespace: str,
    start_service: Callable[..., ServiceProcess],
) -> None:
    port = free_port()
    producer = start_service("producer", http_port=port, http_host="127.0.0.1")
    task = {"task": "echo", "payload": {"a": 1}}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=15) as client:
        await wait_http(client, "/readyz", 30)
        first = await client.post("/tasks", json=task)
        assert first.status_code == 202, first.text

        await asyncio.to_thread(running_node.stop)

        started = time.monotonic()
        refused = await client.post("/tasks", json=task, timeout=10)
        assert time.monotonic() - started < 10
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"] in {"broker_unavailable", "publish_failed"}
        assert int(refused.headers["Retry-After"]) > 0
        not_ready = await client.get("/readyz")
        assert not_ready.status_code == 503
        assert "Retry-After" in not_ready.headers
        assert producer.proc.poll() is None

        await asyncio.to_thread(running_node.start)

        accepted: list[httpx.Response] = []

        async def accepted_again() -> bool:
            response = await client.post("/tasks", json=task, timeout=10)
            if response.status_code == 202:
                accepted.append(response)
                return True
            assert response.status_code == 503, response.text
            return False

        await wait_until(accepted_again, 30, "POST /tasks to be accepted after the restart")
        assert accepted[0].json()["status"] == "queued"
        assert (await client.get("/readyz")).status_code == 200
    # Both accepted tasks are on the queue: the one from before the stop survived it.
    assert await work_queue_depth(running_node, chaos_namespace) == 2


def restart_broker(node: RabbitNode) -> None:
    node.restart()


def force_close_consumer_connections(node: RabbitNode) -> None:
    closed = node.close_connections("conveyor consumer")
    assert closed == 2  # its consuming and its publishing connection


@pytest.mark.parametrize("disrupt", [restart_broker, force_close_consumer_connections])
async def test_consumer_keeps_consuming_after_the_broker_drops_it(
    disrupt: Callable[[RabbitNode], None],
    running_node: RabbitNode,
    chaos_namespace: str,
    start_service: Callable[..., ServiceProcess],
    node_connections: list[AbstractConnection],
    tmp_path: Path,
) -> None:
    consumer = start_service("consumer")
    await consumer.wait_log("consuming")
    before = await open_event_log(running_node, chaos_namespace, node_connections)
    first = await submit_echoes(running_node, chaos_namespace, 20, "before", tmp_path)
    await before.wait_finished(first, timeout_s=30)
    assert_each_succeeded_once(before, first)

    await asyncio.to_thread(disrupt, running_node)

    after = await open_event_log(running_node, chaos_namespace, node_connections)
    second = await submit_echoes(running_node, chaos_namespace, 20, "after", tmp_path)
    await after.wait_finished(second, timeout_s=60)

    assert_each_succeeded_once(after, second)
    assert {e.worker for e in after.events} == {e.worker for e in before.events}  # same process
    assert consumer.proc.poll() is None
    assert await work_queue_depth(running_node, chaos_namespace) == 0
    consumer.signal(signal.SIGTERM)
    assert await consumer.wait(30) == 0
