"""Status events leave in order, in batches under load, and none is lost: at shutdown or
when the broker does not confirm them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from pamqp.commands import Basic

from conveyor.consumer.reporter import Reporter
from conveyor.shared.events import TaskEvent, decode_events, make_event
from conveyor.shared.records import TaskStatus
from conveyor.shared.topology import Topology


class FakeChannel:
    """Stands in for the events channel (and its aiormq underlay); records publishes."""

    def __init__(self, refuse: float = 0) -> None:
        self.messages: list[tuple[bytes, str, Basic.Properties]] = []
        self.refuse = refuse  # nack this many publishes first, like a broker in trouble
        self.closed = False

    async def close(self) -> None:
        self.closed = True

    async def ready(self) -> None:
        pass

    async def get_underlay_channel(self) -> FakeChannel:
        return self

    async def basic_publish(
        self, body: bytes, *, exchange: str, routing_key: str, properties: Basic.Properties
    ) -> Basic.Ack | Basic.Nack:
        assert exchange == "t.events"
        if self.refuse:
            self.refuse -= 1
            return Basic.Nack()
        self.messages.append((body, routing_key, properties))
        return Basic.Ack()


class FakeConnection:
    """Opens channels that ack everything; keeps them."""

    def __init__(self) -> None:
        self.opened: list[FakeChannel] = []

    async def channel(self, publisher_confirms: bool) -> FakeChannel:
        assert publisher_confirms
        self.opened.append(FakeChannel())
        return self.opened[-1]


def _started(channel: FakeChannel, connection: FakeConnection | None = None) -> Reporter:
    reporter = Reporter(connection or FakeConnection(), Topology("t"), events=True)  # type: ignore[arg-type]
    reporter._events_channel = channel  # type: ignore[assignment]
    reporter._pump.start()
    return reporter


def _bodies(first: FakeChannel, connection: FakeConnection) -> Iterator[bytes]:
    """Every events message published, on the first channel and the ones opened after it."""
    for channel in (first, *connection.opened):
        for body, _, _ in channel.messages:
            yield body


def _event(n: int) -> TaskEvent:
    return make_event(f"task-{n}", "echo", TaskStatus.SUCCEEDED, 1, "w-1", result={"n": n})


async def test_events_under_load_share_messages_and_keep_their_order() -> None:
    channel = FakeChannel()
    reporter = _started(channel)
    for n in range(200):
        reporter.emit(_event(n))
        if n % 10 == 0:
            await asyncio.sleep(0)
    await reporter.close()

    published = [e for body, _, _ in channel.messages for e in decode_events(body)]
    assert [e.task_id for e in published] == [f"task-{n}" for n in range(200)]
    assert [e.result for e in published] == [{"n": n} for n in range(200)]
    assert len(channel.messages) < 20
    assert {key for _, key, _ in channel.messages} == {"task.events"}
    assert {props.delivery_mode for _, _, props in channel.messages} == {2}  # persistent
    assert len({props.message_id for _, _, props in channel.messages}) == len(channel.messages)


async def test_first_event_after_a_quiet_spell_goes_out_at_once() -> None:
    channel = FakeChannel()
    reporter = _started(channel)
    reporter.emit(_event(1))
    for _ in range(20):  # a few loop turns, far less than the linger time
        await asyncio.sleep(0)
    assert len(channel.messages) == 1
    await reporter.close()


def test_a_single_event_object_decodes_too() -> None:
    (event,) = decode_events(
        b'{"task_id":"a","task":"echo","state":"failed","attempt":2,"worker":"w","at":1.5}'
    )
    assert (event.task_id, event.state, event.attempt) == ("a", TaskStatus.FAILED, 2)


async def test_unconfirmed_events_are_sent_again_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("conveyor.consumer.reporter.RETRY_DELAY_S", 0.01)
    channel, connection = FakeChannel(refuse=3), FakeConnection()
    reporter = _started(channel, connection)
    for n in range(50):
        reporter.emit(_event(n))
    await reporter.close()
    published = [e.task_id for body in _bodies(channel, connection) for e in decode_events(body)]
    assert published == [f"task-{n}" for n in range(50)]
    assert len(connection.opened) == 1  # the nack's retry went out on a new channel


async def test_wait_confirmed_returns_only_once_the_broker_took_the_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("conveyor.consumer.reporter.RETRY_DELAY_S", 0.5)
    channel, connection = FakeChannel(refuse=1), FakeConnection()
    reporter = _started(channel, connection)
    first, second = reporter.emit(_event(1)), reporter.emit(_event(2))
    waiting = asyncio.create_task(reporter.wait_confirmed(second))
    await asyncio.sleep(0.05)  # the first publish was nacked: nothing is confirmed yet
    assert not waiting.done() and not list(_bodies(channel, connection))
    await asyncio.wait_for(waiting, 5)
    published = [e.task_id for body in _bodies(channel, connection) for e in decode_events(body)]
    assert published == ["task-1", "task-2"] and (first, second) == (1, 2)
    await reporter.wait_confirmed(first)  # already confirmed: returns at once
    await reporter.close()


async def test_a_channel_that_keeps_nacking_is_replaced_and_the_events_go_out_on_the_new_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("conveyor.consumer.reporter.RETRY_DELAY_S", 0.01)
    stuck = FakeChannel(refuse=float("inf"))  # as after a quorum queue's leader moved
    connection = FakeConnection()
    reporter = _started(stuck, connection)
    for n in range(20):
        reporter.emit(_event(n))
    await reporter.close()
    assert stuck.messages == [] and stuck.closed
    [fresh] = connection.opened
    published = [e.task_id for body, _, _ in fresh.messages for e in decode_events(body)]
    assert published == [f"task-{n}" for n in range(20)]
