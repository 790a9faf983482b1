"""Status events leave in order, in batches under load, and none is lost at shutdown."""

from __future__ import annotations

import asyncio
from typing import Any

from aio_pika import Message

from consumer.reporter import Reporter
from shared.events import TaskEvent, TaskState, decode_events, make_event
from shared.topology import Topology


class FakeExchange:
    """Records what would be published."""

    def __init__(self) -> None:
        self.messages: list[tuple[Message, str]] = []

    async def publish(self, message: Message, routing_key: str, **_: Any) -> None:
        self.messages.append((message, routing_key))


def _started(exchange: FakeExchange) -> Reporter:
    reporter = Reporter(None, Topology("t"), events=True)  # type: ignore[arg-type]
    reporter._events = exchange  # type: ignore[assignment]
    reporter._pump = asyncio.create_task(reporter._publish_events())
    return reporter


def _event(n: int) -> TaskEvent:
    return make_event(f"task-{n}", "echo", TaskState.SUCCEEDED, 1, "w-1", result={"n": n})


async def test_events_under_load_share_messages_and_keep_their_order() -> None:
    exchange = FakeExchange()
    reporter = _started(exchange)
    for n in range(200):
        reporter.emit(_event(n))
        if n % 10 == 0:
            await asyncio.sleep(0)
    await reporter.close()

    published = [e for message, _ in exchange.messages for e in decode_events(message.body)]
    assert [e.task_id for e in published] == [f"task-{n}" for n in range(200)]
    assert [e.result for e in published] == [{"n": n} for n in range(200)]
    assert len(exchange.messages) < 20
    assert {key for _, key in exchange.messages} == {"task.events"}


async def test_first_event_after_a_quiet_spell_goes_out_at_once() -> None:
    exchange = FakeExchange()
    reporter = _started(exchange)
    reporter.emit(_event(1))
    for _ in range(20):  # a few loop turns, far less than the linger time
        await asyncio.sleep(0)
    assert len(exchange.messages) == 1
    await reporter.close()


def test_a_single_event_object_decodes_too() -> None:
    (event,) = decode_events(
        b'{"task_id":"a","task":"echo","state":"failed","attempt":2,"worker":"w","at":1.5}'
    )
    assert (event.task_id, event.state, event.attempt) == ("a", TaskState.FAILED, 2)
