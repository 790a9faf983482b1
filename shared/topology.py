"""Exchange and queue names, and declare_topology(): one definition both services declare.

    {ns}.tasks   direct exchange; routing key = queue name -> work queue {ns}.{queue}
    {ns}.dlx     fanout exchange -> {ns}.dead (every work queue dead-letters here)
    {ns}.events  topic exchange for task status events (routing key task.events)
                 -> {ns}.recorder, the durable queue producer replicas apply to the store
    {ns}.finished  fanout exchange: ids of tasks the store saw finish (wakes waiting clients)
    {ns}.checks  queue of consumers' "may I run this redelivered task?" requests

Queue arguments are part of the contract: RabbitMQ refuses (PRECONDITION_FAILED) a queue
re-declared with other arguments, so change them deliberately.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from aio_pika import ExchangeType
from aio_pika.abc import AbstractChannel, AbstractQueue
from pamqp.common import FieldTable

from config.broker import RESERVED_QUEUE_NAMES
from shared.events import EVENTS_ROUTING_KEY

QueueType = Literal["quorum", "classic"]
CHECK_TTL_MS = 10_000


@dataclass(frozen=True, slots=True)
class Topology:
    """Every name Conveyor uses on the broker, derived from one namespace."""

    namespace: str
    queue_type: QueueType = "quorum"

    @property
    def tasks_exchange(self) -> str:
        return f"{self.namespace}.tasks"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.namespace}.dlx"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.namespace}.dead"

    @property
    def events_exchange(self) -> str:
        return f"{self.namespace}.events"

    @property
    def recorder_queue(self) -> str:
        return f"{self.namespace}.recorder"

    @property
    def finished_exchange(self) -> str:
        return f"{self.namespace}.finished"

    @property
    def checks_queue(self) -> str:
        return f"{self.namespace}.checks"

    def work_queue(self, queue: str) -> str:
        """The broker name of work queue `queue`: `{namespace}.{queue}`."""
        if queue in RESERVED_QUEUE_NAMES:
            raise ValueError(f"queue name {queue!r} is reserved")
        return f"{self.namespace}.{queue}"

    def work_queue_arguments(self) -> FieldTable:
        return {
            "x-queue-type": self.queue_type,
            "x-dead-letter-exchange": self.dead_letter_exchange,
        }


async def declare_work_queue(
    channel: AbstractChannel, topology: Topology, queue: str
) -> AbstractQueue:
    """Declare (idempotently) work queue `queue` and bind it to the tasks exchange."""
    declared = await channel.declare_queue(
        topology.work_queue(queue), durable=True, arguments=topology.work_queue_arguments()
    )
    await declared.bind(topology.tasks_exchange, routing_key=queue)
    return declared


async def declare_topology(
    channel: AbstractChannel, topology: Topology, queues: Iterable[str]
) -> None:
    """Declare exchanges, the dead-letter queue and the given work queues; safe to repeat."""
    await channel.declare_exchange(topology.tasks_exchange, ExchangeType.DIRECT, durable=True)
    await channel.declare_exchange(topology.events_exchange, ExchangeType.TOPIC, durable=True)
    dlx = await channel.declare_exchange(
        topology.dead_letter_exchange, ExchangeType.FANOUT, durable=True
    )
    dead = await channel.declare_queue(
        topology.dead_letter_queue,
        durable=True,
        arguments={"x-queue-type": topology.queue_type},
    )
    await dead.bind(dlx)
    # Declared by consumers too: events sent before any producer started must wait here.
    recorder = await channel.declare_queue(
        topology.recorder_queue, durable=True, arguments={"x-queue-type": topology.queue_type}
    )
    await recorder.bind(topology.events_exchange, routing_key=EVENTS_ROUTING_KEY)
    await channel.declare_exchange(topology.finished_exchange, ExchangeType.FANOUT)
    # Checks are answered within seconds or not at all: nothing to keep across a restart.
    await channel.declare_queue(topology.checks_queue, arguments={"x-message-ttl": CHECK_TTL_MS})
    for queue in queues:
        await declare_work_queue(channel, topology, queue)
