"""The wire format: what encode writes, decode reads back, and what decode refuses."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from aio_pika import DeliveryMode, Message

from conveyor.shared.envelope import SCHEMA_VERSION, TaskMessage, decode, encode, encode_frame
from conveyor.shared.errors import UndecodableMessage
from conveyor.shared.ids import new_task_id
from conveyor.shared.wire import HEADER_ATTEMPT, HEADER_QUEUED_AT, HEADER_TASK, HEADER_VERSION


def _task(**overrides: Any) -> TaskMessage:
    values: dict[str, Any] = {
        "id": new_task_id(),
        "task": "echo",
        "queue": "default",
        "payload": {"text": "héllo", "n": [1, 2.5, None]},
        "attempt": 2,
        "max_retries": 5,
        "timeout_s": 12.5,
        "created_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "request_id": "req-1",
    }
    values.update(overrides)
    return TaskMessage(**values)


def test_encode_sets_the_amqp_properties_of_the_envelope() -> None:
    task = _task()
    message = encode(task)
    assert message.message_id == task.id
    assert message.content_type == "application/json"
    assert message.delivery_mode == DeliveryMode.PERSISTENT
    assert message.timestamp is not None
    assert message.headers[HEADER_TASK] == "echo"
    assert message.headers[HEADER_ATTEMPT] == 2
    assert message.headers[HEADER_VERSION] == SCHEMA_VERSION
    assert message.body == '{"text":"héllo","n":[1,2.5,null]}'.encode()


def test_decode_reads_back_what_encode_wrote() -> None:
    task = _task()
    before = time.time()
    decoded = decode(encode(task), "default")
    assert decoded.queued_at is not None and before <= decoded.queued_at <= time.time()
    assert replace(decoded, queued_at=None) == task


def test_queued_at_is_a_later_time_given_never_a_copied_earlier_one() -> None:
    later = time.time() + 60
    assert decode(encode(_task(queued_at=later)), "default").queued_at == later
    stale = decode(encode(_task(queued_at=1.0)), "default").queued_at
    assert stale is not None and stale >= time.time() - 5  # a requeue: queued now


def test_task_ids_sort_by_creation_time() -> None:
    ids = [new_task_id() for _ in range(100)]
    assert ids == sorted(ids) and len(set(ids)) == 100


def _message(body: bytes = b"{}", **props: Any) -> Message:
    headers = props.pop("headers", {HEADER_TASK: "echo"})
    props.setdefault("message_id", "m-1")
    return Message(body=body, headers=headers, **props)


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (_message(b"not json"), "not valid JSON"),
        (_message(b"[1, 2]"), "not an object"),
        (_message(headers={}), "x-conveyor-task"),
        (_message(message_id=None), "message_id"),
        (_message(headers={HEADER_TASK: "echo", HEADER_VERSION: 99}), "version 99"),
        (_message(headers={HEADER_TASK: "echo", HEADER_ATTEMPT: "x"}), "integer"),
        (_message(headers={HEADER_TASK: "echo", HEADER_ATTEMPT: 0}), ">= 1"),
        (_message(headers={HEADER_TASK: "echo", HEADER_ATTEMPT: None}), "integer"),
        (_message(content_type="text/plain"), "content_type"),
    ],
)
def test_decode_refuses_a_message_that_is_not_an_envelope(message: Message, reason: str) -> None:
    with pytest.raises(UndecodableMessage, match=reason):
        decode(message, "default")


def test_decode_accepts_a_minimal_hand_written_message() -> None:
    task = decode(_message(b'{"a": 1}'), "default")
    assert (task.id, task.task, task.payload, task.attempt) == ("m-1", "echo", {"a": 1}, 1)
    assert (task.max_retries, task.timeout_s) == (None, None)  # the task spec's defaults


def test_options_not_overridden_travel_as_no_header() -> None:
    message = encode(_task(max_retries=None, timeout_s=None, request_id=None))
    assert set(message.headers) == {HEADER_TASK, HEADER_ATTEMPT, HEADER_VERSION, HEADER_QUEUED_AT}


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"resent": True, "runs_before": 2, "retry_base": 1},
        {"max_retries": None, "request_id": None},
    ],
)
def test_encode_frame_puts_the_same_bytes_on_the_wire_as_encode(overrides: dict[str, Any]) -> None:
    # queued_at in the future: both take it as it is, not their own time.time().
    task = _task(queued_at=time.time() + 3600, **overrides)
    body, properties = encode_frame(task)
    message = encode(task)
    assert body == message.body
    assert properties.marshal() == message.properties.marshal()
