"""The producer's side of the worker registry: consumes `{ns}.heartbeats` into the store.

Every producer replica consumes the one queue; each beat is kept once (acked after the
write). A beat that cannot be read is dropped with a log line: the next one replaces it.
"""

from __future__ import annotations

import logging

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from pydantic import ValidationError

from conveyor.producer.workers.store import WorkerStore
from conveyor.shared.background import InFlight
from conveyor.shared.topology import Topology
from conveyor.shared.workers import Heartbeat

log = logging.getLogger(__name__)

PREFETCH = 50


class WorkerRegistry:
    """Keeps the heartbeats consumers send."""

    def __init__(
        self, connection: AbstractRobustConnection, topology: Topology, store: WorkerStore
    ) -> None:
        self._connection = connection
        self._topology = topology
        self._store = store
        self._channel: AbstractChannel | None = None
        self._keeping = InFlight()

    async def start(self) -> None:
        self._channel = channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        # declare (passive), not get_queue: a robust channel restores consumers only of
        # queues it declared, so after a reconnect this one would stop consuming.
        queue = await channel.declare_queue(self._topology.workers_queue, passive=True)
        await queue.consume(self._keeping.track(self._keep))

    async def stop(self) -> None:
        """Stop consuming, then end the writes under way (their messages are requeued)."""
        await self._keeping.stop(self._channel)

    async def _keep(self, message: AbstractIncomingMessage) -> None:
        try:
            beat = Heartbeat.decode(message.body)
        except ValidationError as error:
            log.warning("dropped a heartbeat that is not one: %s", str(error)[:300])
            await message.ack()
            return
        try:
            await self._store.record(beat)
        except Exception as error:
            log.warning("could not keep the heartbeat of %s: %r", beat.id, error)
            await message.nack(requeue=True)
            return
        await message.ack()
