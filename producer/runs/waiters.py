"""Long-polling clients (`GET /tasks/{id}/wait`) woken when their task finishes.

Whichever replica applies a task's final event announces the id on the `{ns}.finished`
fanout exchange; every replica hears it and wakes its own waiters, who then read the record
once. No waiting client polls the database: a single sweep per replica every few seconds
covers notices missed around a reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator

import orjson
from aio_pika import ExchangeType, Message
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustConnection,
)

from conveyor.producer.store.records import Records
from conveyor.shared.background import BackgroundLoop
from conveyor.shared.topology import Topology

log = logging.getLogger(__name__)

SWEEP_EVERY_S = 2.0


class Waiters:
    """Futures of waiting requests, by task id."""

    def __init__(self) -> None:
        self._waiting: defaultdict[str, set[asyncio.Future[None]]] = defaultdict(set)

    @contextlib.contextmanager
    def watch(self, task_id: str) -> Iterator[asyncio.Future[None]]:
        """A future resolved when `task_id` is announced finished (register before reading)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[task_id].add(future)
        try:
            yield future
        finally:
            futures = self._waiting.get(task_id)
            if futures is not None:
                futures.discard(future)
                if not futures:
                    del self._waiting[task_id]

    def notify(self, ids: Iterable[str]) -> None:
        for task_id in ids:
            for future in self._waiting.get(task_id, ()):
                if not future.done():
                    future.set_result(None)

    def watched(self) -> list[str]:
        return list(self._waiting)


class FinishedNotices:
    """Sends and hears the `{ns}.finished` announcements, and sweeps for missed ones."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        topology: Topology,
        records: Records,
        waiters: Waiters,
    ) -> None:
        self._connection = connection
        self._topology = topology
        self._records = records
        self._waiters = waiters
        self._exchange: AbstractExchange | None = None
        self._sweeping = BackgroundLoop(
            "conveyor-waiters",
            self._sweep_missed,
            every_s=SWEEP_EVERY_S,
            wait_first=True,
            logger=log,
        )

    async def start(self) -> None:
        channel = await self._connection.channel(publisher_confirms=False)
        # Declared here (not durable): after a broker restart the robust channel declares it
        # again before it re-binds our queue.
        self._exchange = await channel.declare_exchange(
            self._topology.finished_exchange, ExchangeType.FANOUT
        )
        # Server-named, exclusive: each replica hears every notice; gone when it disconnects.
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(self._exchange)
        await queue.consume(self._on_notice, no_ack=True)
        self._sweeping.start()

    async def stop(self) -> None:
        await self._sweeping.stop()

    async def announce(self, ids: set[str]) -> None:
        """Tell every replica these tasks finished (a hint: losing one delays a waiter)."""
        self._waiters.notify(ids)
        if self._exchange is None:
            return
        try:
            # Not mandatory: with no replica listening (all of them reconnecting) a returned
            # hint would only be an ERROR line in aiormq's log.
            await self._exchange.publish(
                Message(orjson.dumps(sorted(ids))), routing_key="", mandatory=False
            )
        except Exception as error:
            log.info("could not announce %d finished tasks: %r", len(ids), error)

    async def _on_notice(self, message: AbstractIncomingMessage) -> None:
        try:
            ids = orjson.loads(message.body)
        except orjson.JSONDecodeError:
            return
        if isinstance(ids, list):
            self._waiters.notify(str(task_id) for task_id in ids)

    async def _sweep_missed(self) -> None:
        """Wake the waiters of tasks that finished without a notice reaching us."""
        watched = self._waiters.watched()
        if watched:
            self._waiters.notify(await self._records.terminal(watched))
