"""The direct reply-to RPC helper against the real broker: answered, timed out, and deaf to
replies that are not its own."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aio_pika import Message
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from aiormq.exceptions import PublishError

from conveyor.shared.errors import UndecodableMessage
from conveyor.shared.rpc import REPLY_TO, RpcClient, send_reply

Answer = Callable[[AbstractChannel, AbstractIncomingMessage], Awaitable[None]]
Serve = Callable[[Answer], Awaitable[str]]


def _text(body: bytes) -> str:
    if body.startswith(b"!"):
        raise UndecodableMessage("starts with !")
    return body.decode()


@pytest.fixture
async def channels(broker: AbstractRobustConnection) -> AsyncIterator[list[AbstractChannel]]:
    """Channels opened by a test, closed after it (their exclusive queues go with them)."""
    opened: list[AbstractChannel] = []
    yield opened
    for channel in opened:
        await channel.close()


@pytest.fixture
async def serve(
    broker: AbstractRobustConnection, namespace: str, channels: list[AbstractChannel]
) -> Serve:
    """`await serve(answer)`: a queue of the test's own whose requests `answer` handles."""

    async def start(answer: Answer) -> str:
        channel = await broker.channel()
        channels.append(channel)
        queue = await channel.declare_queue(f"{namespace}.rpc", exclusive=True)

        async def on_request(request: AbstractIncomingMessage) -> None:
            await answer(channel, request)

        await queue.consume(on_request, no_ack=True)
        return queue.name

    return start


@pytest.fixture
async def client(broker: AbstractRobustConnection, channels: list[AbstractChannel]) -> RpcClient:
    channel = await broker.channel(publisher_confirms=True, on_return_raises=True)
    channels.append(channel)
    return await RpcClient.open(channel)


async def test_a_request_gets_its_answer(client: RpcClient, serve: Serve) -> None:
    async def shout(channel: AbstractChannel, request: AbstractIncomingMessage) -> None:
        assert request.reply_to is not None and request.reply_to.startswith(REPLY_TO)
        await send_reply(channel, request, request.body.upper())

    queue = await serve(shout)
    assert await client.call(queue, b"hello", _text, timeout_s=5) == "HELLO"
    assert await client.call(queue, b"again", _text, timeout_s=5) == "AGAIN"


async def test_a_request_nobody_answers_times_out(
    broker: AbstractRobustConnection,
    namespace: str,
    channels: list[AbstractChannel],
    client: RpcClient,
) -> None:
    channel = await broker.channel()
    channels.append(channel)
    queue = await channel.declare_queue(f"{namespace}.deaf", exclusive=True)  # no consumer
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await client.call(queue.name, b"anyone?", _text, timeout_s=0.5, expiration_s=0.5)
    assert 0.4 < time.monotonic() - started < 3


async def test_replies_to_other_requests_and_undecodable_ones_are_ignored(
    client: RpcClient, serve: Serve
) -> None:
    async def confuse(channel: AbstractChannel, request: AbstractIncomingMessage) -> None:
        assert request.reply_to is not None
        for body, correlation_id in [
            (b"not yours", "someone-else"),
            (b"!garbled", request.correlation_id),
            (b"yours", request.correlation_id),
            (b"too late", request.correlation_id),
        ]:
            await channel.default_exchange.publish(
                Message(body, correlation_id=correlation_id),
                routing_key=request.reply_to,
                mandatory=False,
            )

    queue = await serve(confuse)
    assert await client.call(queue, b"which?", _text, timeout_s=5) == "yours"


async def test_a_request_to_no_queue_is_refused(client: RpcClient, namespace: str) -> None:
    with pytest.raises(PublishError):
        await client.call(f"{namespace}.nobody", b"hello", _text, timeout_s=5)


async def test_abandoning_fails_the_calls_still_waiting(client: RpcClient, serve: Serve) -> None:
    async def ignore(channel: AbstractChannel, request: AbstractIncomingMessage) -> None:
        client.abandon()  # as if the connection went: the call must not wait out its timeout

    queue = await serve(ignore)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await client.call(queue, b"hello", _text, timeout_s=30)
    assert time.monotonic() - started < 5
