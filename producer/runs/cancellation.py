"""Cancelling a task wherever it is: in the store, and in every consumer.

The record turns `cancelled` at once (a task that already finished is refused with 409).
A delayed task is then never published. Every consumer hears the cancellation on the
`{ns}.control` fanout exchange: one that receives the task later acks it without running it,
one running it stops it. Consumers that start later ask for recent cancellations first.
"""

from __future__ import annotations

import logging
import time

from aio_pika import DeliveryMode, Message
from aio_pika.abc import AbstractExchange, AbstractRobustConnection
from prometheus_client import Counter

from conveyor.producer.store.cancellations import Cancellations
from conveyor.producer.store.records import Records
from conveyor.shared.errors import Conflict, TaskNotFound
from conveyor.shared.records import TaskRecord, TaskStatus
from conveyor.shared.topology import Topology
from conveyor.shared.wire import CancelNotice

log = logging.getLogger(__name__)


class Canceller:
    """`await canceller.cancel(task_id)`: the cancelled record, or why not."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        topology: Topology,
        records: Records,
        cancellations: Cancellations,
        counter: Counter | None = None,
    ) -> None:
        self._counter = counter  # conveyor_tasks_cancelled_total
        self._connection = connection
        self._topology = topology
        self._records = records
        self._cancellations = cancellations
        self._exchange: AbstractExchange | None = None

    async def start(self) -> None:
        channel = await self._connection.channel(publisher_confirms=True)
        self._exchange = await channel.get_exchange(self._topology.control_exchange, ensure=False)

    async def cancel(self, task_id: str) -> TaskRecord:
        before = await self._records.get(task_id)
        if before is None:
            raise TaskNotFound(task_id)
        if before.status.terminal:
            raise Conflict(f"task {task_id!r} is already {before.status.value}")
        record = await self._cancellations.cancel(task_id, time.time())
        if record is None or record.status is not TaskStatus.CANCELLED:
            status = record.status.value if record else "gone"
            raise Conflict(f"task {task_id!r} is already {status}")
        if before.status is not TaskStatus.SCHEDULED:  # a delayed task was never published
            await self._tell_consumers(task_id)
        log.info("task %s cancelled (was %s)", task_id, before.status.value)
        if self._counter is not None:
            self._counter.labels(record.task).inc()
        return record

    async def _tell_consumers(self, task_id: str) -> None:
        assert self._exchange is not None, "Canceller.start() was not awaited"
        body = CancelNotice((task_id,)).encode()
        try:
            await self._exchange.publish(
                Message(body, delivery_mode=DeliveryMode.NOT_PERSISTENT), routing_key=""
            )
        except Exception as error:
            # The record says cancelled: a consumer's redelivery or start-up check still sees
            # it; a consumer already holding the message runs it, and its result is ignored.
            log.warning("could not tell consumers task %s is cancelled: %r", task_id, error)
