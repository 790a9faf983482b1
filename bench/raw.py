"""The raw ceiling's broker side: its topology and a minimal confirmed publisher.

The raw work queue is declared like Conveyor's (durable, same x-queue-type, a dead-letter
exchange), so the broker does the same work for both and only the client code differs.
"""

from __future__ import annotations

import asyncio
import sys
import time
from itertools import count

import orjson
from aio_pika import DeliveryMode, ExchangeType, Message
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
)

from bench.common import CONFIRM_WINDOW, RAW_ROUTING_KEY, Names


async def declare_raw(channel: AbstractChannel, names: Names, queue_type: str) -> None:
    """Declare the raw exchange, its dead-letter exchange and its durable work queue."""
    await channel.declare_exchange(names.raw_dlx, ExchangeType.FANOUT, durable=True)
    exchange = await channel.declare_exchange(names.raw_exchange, ExchangeType.DIRECT, durable=True)
    queue = await channel.declare_queue(
        names.raw_queue,
        durable=True,
        arguments={"x-queue-type": queue_type, "x-dead-letter-exchange": names.raw_dlx},
    )
    await queue.bind(exchange, routing_key=RAW_ROUTING_KEY)


class RawPublisher:
    """Persistent, mandatory publishes with publisher confirms: what Conveyor's Publisher does."""

    def __init__(self, exchange: AbstractExchange) -> None:
        self._exchange = exchange
        self._ids = count()

    @classmethod
    async def open(cls, connection: AbstractConnection, names: Names) -> RawPublisher:
        """A confirmed channel that raises on returned (unroutable) messages, like Conveyor's."""
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        return cls(await channel.get_exchange(names.raw_exchange, ensure=False))

    async def publish(self, i: int, reply_to: str | None = None) -> str:
        """Publish task `i` and wait for its confirm; returns its message id."""
        message_id = f"raw-{next(self._ids)}"
        message = Message(
            body=orjson.dumps({"i": i}),
            content_type="application/json",
            delivery_mode=DeliveryMode.PERSISTENT,
            message_id=message_id,
            reply_to=reply_to,
        )
        await self._exchange.publish(message, routing_key=RAW_ROUTING_KEY, mandatory=True)
        return message_id

    async def publish_many(self, tasks: int, window: int = CONFIRM_WINDOW) -> None:
        """Publish `tasks` tasks with up to `window` confirms outstanding (semaphore + gather)."""
        slots = asyncio.Semaphore(window)

        async def publish_one(i: int) -> None:
            async with slots:
                await self.publish(i)

        await asyncio.gather(*(publish_one(i) for i in range(tasks)))


async def subscribe_replies(
    channel: AbstractChannel, completions: dict[str, float]
) -> AbstractQueue:
    """A server-named exclusive queue for the raw consumers' completion messages."""
    queue = await channel.declare_queue("", exclusive=True, auto_delete=True)

    async def on_reply(message: AbstractIncomingMessage) -> None:
        at = time.perf_counter()
        completions[message.body.decode()] = at

    await queue.consume(on_reply, no_ack=True)
    return queue


def raw_consumer_argv(url: str, names: Names, loop: str) -> list[str]:
    """The command line of one raw consumer process."""
    return [
        sys.executable,
        "-m",
        "bench.raw_consumer",
        "--url",
        url,
        "--queue",
        names.raw_queue,
        "--loop",
        loop,
    ]
