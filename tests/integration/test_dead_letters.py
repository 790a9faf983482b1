"""Messages a consumer cannot run end in `{ns}.dead` with why; the consumer carries on.

These run consumers only (no producer drains `{ns}.dead` here), so the test reads the
dead-letter queue itself; test_dead_letter_api.py covers the producer's side.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from conveyor.shared.records import TaskStatus
from conveyor.shared.topology import Topology
from conveyor.shared.wire import (
    HEADER_ATTEMPT,
    HEADER_ERROR,
    HEADER_MAX_RETRIES,
    HEADER_REASON,
    HEADER_TASK,
    HEADER_VERSION,
)
from tests.support import EventLog, ServiceProcess, queue_depth, wait_until


def header_text(message: AbstractIncomingMessage, name: str) -> str:
    value = (message.headers or {}).get(name)
    if isinstance(value, bytes):
        return value.decode()
    assert isinstance(value, str), f"header {name} is {value!r}"
    return value


async def inject(
    broker: AbstractRobustConnection,
    topology: Topology,
    body: bytes,
    headers: dict[str, Any],
) -> str:
    """Publish straight to `{ns}.default` through the default exchange; the message id."""
    message_id = f"injected-{secrets.token_hex(4)}"
    channel = await broker.channel()
    await channel.default_exchange.publish(
        aio_pika.Message(
            body=body,
            headers=headers,
            message_id=message_id,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ),
        routing_key=topology.work_queue("default"),
    )
    await channel.close()
    return message_id


async def dead_letters(
    broker: AbstractRobustConnection, topology: Topology, count: int
) -> dict[str, AbstractIncomingMessage]:
    """Take (unacked) `count` messages from `{ns}.dead`, by message id; fail if fewer arrive."""
    channel = await broker.channel()
    queue = await channel.declare_queue(topology.dead_letter_queue, passive=True)
    taken: dict[str, AbstractIncomingMessage] = {}

    async def take_one() -> bool:
        message = await queue.get(no_ack=False, fail=False)
        if message is not None:
            assert message.message_id is not None
            taken[message.message_id] = message
        return len(taken) >= count

    await wait_until(take_one, 20, f"{count} dead letters")
    assert await queue.get(no_ack=False, fail=False) is None  # and no more than that
    return taken


def envelope_headers(task: str | None) -> dict[str, Any]:
    headers: dict[str, Any] = {HEADER_ATTEMPT: 1, HEADER_VERSION: 1}
    if task is not None:
        headers[HEADER_TASK] = task
    return headers


async def test_bad_messages_are_dead_lettered_with_their_reason_and_the_consumer_carries_on(
    broker: AbstractRobustConnection,
    topology: Topology,
    events: EventLog,
    spawn: Callable[..., ServiceProcess],
) -> None:
    consumer = spawn("consumer")
    await consumer.wait_log("consuming")

    not_json = await inject(broker, topology, b"{not json", envelope_headers("echo"))
    no_task = await inject(broker, topology, b"{}", envelope_headers(None))
    unknown = await inject(broker, topology, b"{}", envelope_headers("no_such_task"))
    invalid = await inject(broker, topology, b'{"seconds": "x"}', envelope_headers("sleep"))
    good = await inject(broker, topology, b'{"hello": "world"}', envelope_headers("echo"))
    after = await inject(broker, topology, b'{"after": true}', envelope_headers("echo"))

    await events.wait_finished({good, after}, timeout_s=20)
    dead = await dead_letters(broker, topology, 4)

    expected = {
        not_json: ("undecodable", "not valid JSON"),
        no_task: ("undecodable", HEADER_TASK),
        unknown: ("unknown_task", "no_such_task"),
        invalid: ("invalid_payload", "payload.seconds"),
    }
    assert set(dead) == set(expected)
    for message_id, (reason, error_part) in expected.items():
        assert header_text(dead[message_id], HEADER_REASON) == reason, message_id
        assert error_part in header_text(dead[message_id], HEADER_ERROR), message_id
        assert message_id in consumer.log()
    assert dead[invalid].body == b'{"seconds": "x"}'  # the original body, unchanged

    # Only the two good messages ran, once each.
    assert {e.task_id for e in events.events} == {good, after}
    assert events.succeeded_count() == {good: 1, after: 1}
    results = {e.task_id: e.result for e in events.of_state(TaskStatus.SUCCEEDED)}
    assert results == {good: {"hello": "world"}, after: {"after": True}}
    channel = await broker.channel()
    assert await queue_depth(channel, topology.work_queue("default")) == 0
    await channel.close()
    assert consumer.proc.poll() is None


async def test_failing_handler_reports_failed_event_and_dead_letters_with_reason_failed(
    broker: AbstractRobustConnection,
    topology: Topology,
    events: EventLog,
    spawn: Callable[..., ServiceProcess],
) -> None:
    spawn("consumer")
    no_retries = {**envelope_headers("fail"), HEADER_MAX_RETRIES: 0}
    task_id = await inject(broker, topology, b'{"message": "boom on purpose"}', no_retries)

    await events.wait_finished({task_id}, timeout_s=20)

    failed = events.of_state(TaskStatus.FAILED)
    assert len(failed) == 1 and failed[0].task_id == task_id
    error = failed[0].error
    assert error is not None
    assert (error["type"], error["message"]) == ("TaskFailed", "boom on purpose")
    assert error["traceback"].startswith("Traceback") and "TaskFailed" in error["traceback"]
    assert events.of_state(TaskStatus.SUCCEEDED) == []
    assert failed[0].started_at is not None and failed[0].started_at <= failed[0].at
    dead = await dead_letters(broker, topology, 1)
    assert set(dead) == {task_id}
    assert header_text(dead[task_id], HEADER_REASON) == "failed"
    assert "TaskFailed" in header_text(dead[task_id], HEADER_ERROR)
    assert "boom on purpose" in header_text(dead[task_id], HEADER_ERROR)
    assert orjson.loads(dead[task_id].body)["message"] == "boom on purpose"
