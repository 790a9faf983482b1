"""Asks the producers whether a task that may have run before already finished.

Only redelivered or re-sent messages ask (the rare case): RPC over RabbitMQ with direct
reply-to, answered by whichever producer replica reads `{ns}.checks`. Consumers never open
the database. No answer in time means "run it": at least once beats never.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import orjson
from aio_pika import Message
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from shared.topology import Topology

log = logging.getLogger(__name__)

REPLY_TO = "amq.rabbitmq.reply-to"


class RunCheck:
    """`await check.finished(task_id)`: the task's terminal status, or None if it may run."""

    def __init__(
        self, connection: AbstractRobustConnection, topology: Topology, timeout_s: float = 5.0
    ) -> None:
        self._connection = connection
        self._topology = topology
        self._timeout_s = timeout_s
        self._channel: AbstractChannel | None = None
        self._pending: dict[str, asyncio.Future[dict[str, object]]] = {}

    async def start(self) -> None:
        self._channel = await self._connection.channel(publisher_confirms=False)
        replies = await self._channel.get_queue(REPLY_TO, ensure=False)
        await replies.consume(self._on_reply, no_ack=True)

    async def finished(self, task_id: str) -> str | None:
        """The status of `task_id` if it already reached a terminal one, else None."""
        assert self._channel is not None, "RunCheck.start() was not awaited"
        correlation_id = uuid.uuid4().hex
        future: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._channel.default_exchange.publish(
                    Message(
                        orjson.dumps({"task_id": task_id}),
                        correlation_id=correlation_id,
                        reply_to=REPLY_TO,
                        expiration=self._timeout_s,
                    ),
                    routing_key=self._topology.checks_queue,
                )
                reply = await future
        except Exception as error:
            log.warning(
                "no producer answered whether task %s already ran (%r); running it", task_id, error
            )
            return None
        finally:
            self._pending.pop(correlation_id, None)
        status = reply.get("status")
        return None if reply.get("run", True) else str(status)

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._pending.get(message.correlation_id or "")
        if future is None or future.done():
            return
        try:
            reply = orjson.loads(message.body)
        except orjson.JSONDecodeError:
            return
        if isinstance(reply, dict):
            future.set_result(reply)
