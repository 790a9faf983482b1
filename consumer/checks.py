"""Asks the producers whether a task that may have run before already finished.

Only redelivered or re-sent messages ask (the rare case): RPC over RabbitMQ with direct
reply-to, answered by whichever producer replica reads `{ns}.checks`. Consumers never open
the database. No answer in time means "run it": at least once beats never.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass

import orjson
from aio_pika import Message
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from conveyor.shared.topology import Topology

log = logging.getLogger(__name__)

REPLY_TO = "amq.rabbitmq.reply-to"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The producers' answer: run it, or why not."""

    run: bool = True
    finished_as: str | None = None  # the terminal status of a task that already ran
    dead_letter: bool = False  # redelivered more than CONVEYOR_MAX_DELIVERIES times


RUN = Verdict()


class RunCheck:
    """`await check.verdict(task_id, redelivered)`: whether a task that may have run before
    should run now."""

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
        # declare (passive), not get_queue: a robust channel restores consumers only of
        # queues it declared, so after a reconnect no reply would arrive.
        replies = await self._channel.declare_queue(REPLY_TO, passive=True)
        await replies.consume(self._on_reply, no_ack=True)

    async def verdict(self, task_id: str, redelivered: bool) -> Verdict:
        """Ask the producers about `task_id` (twice: a request or its reply can be lost while
        a connection is being restored); RUN when none answers in time."""
        request = {"task_id": task_id, "redelivered": redelivered}
        try:
            try:
                reply = await self._ask(request)
            except TimeoutError:
                log.info("no answer yet whether task %s already ran; asking again", task_id)
                reply = await self._ask(request)
        except Exception as error:
            log.warning(
                "no producer answered whether task %s already ran (%r); running it", task_id, error
            )
            return RUN
        if reply.get("run", True) is not False:
            return RUN
        status = reply.get("status")
        return Verdict(
            run=False,
            finished_as=str(status) if status else None,
            dead_letter=reply.get("dead_letter") is True,
        )

    async def cancelled_since(self, since: float) -> list[str]:
        """Ids of tasks cancelled since `since` (epoch seconds), as the producers know them."""
        reply = await self._ask({"cancelled_since": since})
        ids = reply.get("cancelled")
        return [str(task_id) for task_id in ids] if isinstance(ids, list) else []

    async def _ask(self, request: dict[str, object]) -> dict[str, object]:
        """One RPC to whichever producer reads `{ns}.checks`; TimeoutError if none answers."""
        assert self._channel is not None, "RunCheck.start() was not awaited"
        correlation_id = uuid.uuid4().hex
        future: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._channel.default_exchange.publish(
                    Message(
                        orjson.dumps(request),
                        correlation_id=correlation_id,
                        reply_to=REPLY_TO,
                        expiration=self._timeout_s,
                    ),
                    routing_key=self._topology.checks_queue,
                )
                return await future
        finally:
            self._pending.pop(correlation_id, None)

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
