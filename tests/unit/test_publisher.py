"""Publisher: a nack fails only its own task, and moves publishing to a new channel (at most one
per RENEW_AFTER_NACK_S), because a channel can keep being nacked after a quorum queue's leader
moved while the queue itself takes publishes again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from aio_pika.exceptions import DeliveryError
from pamqp.commands import Basic

from conveyor.producer.submission import publisher as publisher_module
from conveyor.producer.submission.publisher import Publisher
from conveyor.shared.envelope import TaskMessage
from conveyor.shared.errors import PublishFailed
from conveyor.shared.ids import new_task_id
from conveyor.shared.topology import Topology


class FakeUnderlay:
    """aiormq's channel: basic_publish awaits the confirm, raises DeliveryError on a nack."""

    def __init__(self, channel: FakeChannel) -> None:
        self._channel = channel

    async def basic_publish(self, body: bytes, **options: object) -> Basic.Ack:
        assert options["mandatory"] and options["exchange"] == "t.tasks"
        if self._channel.nacks:
            raise DeliveryError(None, Basic.Nack())
        self._channel.published += 1
        return Basic.Ack()


class FakeChannel:
    """A confirmed channel that nacks every publish (`nacks`) or takes them all."""

    def __init__(self, nacks: bool) -> None:
        self.nacks = nacks
        self.published = 0
        self.is_closed = False

    async def get_underlay_channel(self) -> FakeUnderlay:
        return FakeUnderlay(self)

    async def close(self) -> None:
        self.is_closed = True


class FakeConnection:
    """Its first channel is stuck nacking; the channels opened after it take publishes."""

    def __init__(self, all_nack: bool = False) -> None:
        self.connected = asyncio.Event()
        self.connected.set()
        self.opened: list[FakeChannel] = []
        self.all_nack = all_nack  # the new channels nack too

    async def channel(self, publisher_confirms: bool, on_return_raises: bool) -> FakeChannel:
        assert publisher_confirms and on_return_raises
        self.opened.append(FakeChannel(nacks=self.all_nack or not self.opened))
        return self.opened[-1]


def _task() -> TaskMessage:
    return TaskMessage(id=new_task_id(), task="echo", queue="default", payload={})


async def _until(condition: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(5):
            while not condition():
                await asyncio.sleep(0.001)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def test_a_nack_fails_its_task_and_later_publishes_go_out_on_a_new_channel() -> None:
    connection = FakeConnection()
    publisher = Publisher(connection, Topology("t"), confirm_timeout_s=0.05)  # type: ignore[arg-type]
    await publisher.start()
    [stuck] = connection.opened

    nacked = _task()
    with pytest.raises(PublishFailed, match="nacked") as raised:
        await publisher.publish(nacked)
    assert raised.value.task_id == nacked.id
    await _until(lambda: len(connection.opened) == 2, "a new channel")
    fresh = connection.opened[1]
    outcomes = await publisher.publish_all([_task() for _ in range(10)])
    assert outcomes == [None] * 10 and fresh.published == 10 and stuck.published == 0
    await _until(lambda: stuck.is_closed, "the stuck channel closed after its confirms")
    await publisher.stop()


async def test_nacks_in_a_burst_open_one_new_channel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publisher_module, "RENEW_AFTER_NACK_S", 60.0)
    connection = FakeConnection()
    publisher = Publisher(connection, Topology("t"), confirm_timeout_s=0.05)  # type: ignore[arg-type]
    await publisher.start()
    connection.opened[0].nacks = True
    outcomes = await publisher.publish_all([_task() for _ in range(20)])
    assert all(isinstance(outcome, PublishFailed) for outcome in outcomes)
    await _until(lambda: len(connection.opened) == 2, "a new channel")
    connection.opened[1].nacks = True  # still nacking: no further channel within the minute
    with pytest.raises(PublishFailed):
        await publisher.publish(_task())
    await asyncio.sleep(0.01)
    assert len(connection.opened) == 2
    await publisher.stop()


async def test_a_new_channel_still_nacked_a_moment_later_is_replaced_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(publisher_module, "RENEW_AFTER_NACK_S", 0.01)
    connection = FakeConnection(all_nack=True)
    publisher = Publisher(connection, Topology("t"), confirm_timeout_s=30)  # type: ignore[arg-type]
    await publisher.start()
    for opened in (2, 3):
        with pytest.raises(PublishFailed):
            await publisher.publish(_task())
        await _until(lambda: len(connection.opened) == opened, f"channel {opened}")  # noqa: B023
        await asyncio.sleep(0.02)  # past RENEW_AFTER_NACK_S
    # The old channels stay open until their confirms had the confirm timeout to come in.
    assert [channel.is_closed for channel in connection.opened] == [False] * 3
    await publisher.stop()
