"""Request and reply over RabbitMQ's direct reply-to, for both sides of an RPC.

The asker consumes the pseudo-queue `amq.rabbitmq.reply-to` (no ack) on a channel and
publishes each request on that same channel with `reply_to` set to it and a fresh
`correlation_id`; the answerer publishes its reply to the `reply_to` address with the
request's `correlation_id`. No reply queue is declared: nothing to clean up when an asker
dies. Used by consumers asking the producers about a task (`{ns}.run-checks`) and by producer
replicas asking who leads the scheduler.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aio_pika import Message
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from conveyor.shared.errors import UndecodableMessage

log = logging.getLogger(__name__)

REPLY_TO = "amq.rabbitmq.reply-to"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Call:
    future: asyncio.Future[Any]
    decode: Callable[[bytes], Any]


class RpcClient:
    """Asks over one channel; each call gets the first reply with its correlation id that
    its `decode` accepts."""

    def __init__(self, channel: AbstractChannel) -> None:
        self.channel = channel
        self._calls: dict[str, _Call] = {}

    @classmethod
    async def open(cls, channel: AbstractChannel) -> RpcClient:
        """An RpcClient consuming its replies on `channel`."""
        client = cls(channel)
        # declare (passive), not get_queue: a robust channel restores consumers only of
        # queues it declared, so after a reconnect no reply would arrive.
        replies = await channel.declare_queue(REPLY_TO, passive=True)
        await replies.consume(client._on_reply, no_ack=True)
        return client

    async def call(
        self,
        routing_key: str,
        body: bytes,
        decode: Callable[[bytes], T],
        *,
        timeout_s: float,
        expiration_s: float | None = None,
    ) -> T:
        """Publish `body` to queue `routing_key` (default exchange, mandatory) and return
        its reply as `decode` reads it.

        Raises TimeoutError when no decodable reply arrives within `timeout_s` (replies
        `decode` refuses with UndecodableMessage are skipped), and the publish's error when
        the broker refuses it (on a channel with `on_return_raises`, PublishError for a
        queue that does not exist). `expiration_s` drops a request nobody took in time.
        """
        correlation_id = uuid.uuid4().hex
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._calls[correlation_id] = _Call(future, decode)
        try:
            async with asyncio.timeout(timeout_s):
                await self.channel.default_exchange.publish(
                    Message(
                        body,
                        correlation_id=correlation_id,
                        reply_to=REPLY_TO,
                        expiration=expiration_s,
                    ),
                    routing_key=routing_key,
                    mandatory=True,
                )
                return await future
        finally:
            self._calls.pop(correlation_id, None)

    def abandon(self) -> None:
        """Fail every call still waiting with TimeoutError (their channel is going away)."""
        for call in self._calls.values():
            if not call.future.done():
                call.future.set_exception(TimeoutError())

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        call = self._calls.get(message.correlation_id or "")
        if call is None or call.future.done():
            return  # a late reply, or one to another asker's request
        try:
            reply = call.decode(message.body)
        except UndecodableMessage as error:
            log.debug("ignored an undecodable reply: %s", error.reason)
            return
        call.future.set_result(reply)


async def send_reply(
    channel: AbstractChannel, request: AbstractIncomingMessage, body: bytes
) -> None:
    """Answer `request` at its reply-to address (nothing to do for a request without one)."""
    if not request.reply_to:
        return
    # Not mandatory: RabbitMQ counts a direct reply-to address as no queue, so it would
    # return every reply it delivers (aiormq logs each as an ERROR). A reply to an asker
    # that is gone is lost either way; the asker's timeout covers that.
    await channel.default_exchange.publish(
        Message(body, correlation_id=request.correlation_id),
        routing_key=request.reply_to,
        mandatory=False,
    )
