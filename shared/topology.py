"""Exchange and queue names, and declare_topology(): one definition both services declare.

    {ns}.tasks   direct exchange; routing key = queue name -> work queue {ns}.{queue}
    {ns}.dlx     fanout exchange -> {ns}.dead (every work queue dead-letters here)
    {ns}.events  topic exchange for task status events (routing key task.events)
                 -> {ns}.recorder, the durable queue producer replicas apply to the store
    {ns}.finished  fanout exchange: ids of tasks the store saw finish (wakes waiting clients)
    {ns}.run-checks  queue of consumers' "may I run this redelivered task?" requests
    {ns}.heartbeats  queue of consumers' heartbeats, kept in the producers' worker registry
    {ns}.scheduler-leader  exclusive queue held by the scheduler leader's connection
    {ns}.control fanout exchange of cancellations, heard by every consumer

Queue arguments are part of the contract: RabbitMQ refuses (PRECONDITION_FAILED) a queue
re-declared with other arguments, so change them deliberately (under a new name, as when the
run-checks and heartbeats queues, once classic `{ns}.checks` and `{ns}.workers`, became
quorum queues).

Every durable queue has the work queues' type. A classic queue lives on one node: while that
node is down it cannot be declared, and aio-pika re-declares what a channel declared on every
reconnect, so one such queue kept a whole connection from coming back (the producer's recorder,
run checks and worker registry with it) until its node returned.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from aio_pika import ExchangeType
from aio_pika.abc import AbstractChannel, AbstractQueue
from pamqp.common import FieldTable

from conveyor.config.broker import RESERVED_QUEUE_NAMES, BrokerSettings
from conveyor.shared.events import EVENTS_ROUTING_KEY

QueueType = Literal["quorum", "classic"]
CHECK_TTL_MS = 10_000
HEARTBEAT_TTL_MS = 600_000
RETRY_QUEUE_IDLE_MS = 3_600_000
# Retry delays are rounded to these steps (x 10^k ms), so a few queues serve every delay.
RETRY_DELAY_STEPS = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0)
MIN_RETRY_DELAY_MS = 100


def retry_delay_ms(delay_s: float) -> int:
    """`delay_s` rounded to the nearest retry step (at least 100 ms), in milliseconds."""
    wanted_ms = max(delay_s * 1000, MIN_RETRY_DELAY_MS)
    return min(all_retry_delays_ms(wanted_ms * 10), key=lambda step: abs(step - wanted_ms))


def all_retry_delays_ms(up_to_ms: float = 86_400_000) -> list[int]:
    """Every retry delay step from 100 ms up to `up_to_ms` (default a day)."""
    steps = []
    scale = MIN_RETRY_DELAY_MS
    while scale <= up_to_ms:
        steps += [int(step * scale) for step in RETRY_DELAY_STEPS if step * scale <= up_to_ms]
        scale *= 10
    return steps


@dataclass(frozen=True, slots=True)
class Topology:
    """Every name Conveyor uses on the broker, derived from one namespace, and the queue
    arguments both services must declare alike."""

    namespace: str
    queue_type: QueueType = "quorum"
    max_deliveries: int = 5
    max_queue_length: int | None = None
    # Replicas of a quorum work queue at creation (0: RabbitMQ's default, every node).
    quorum_initial_group_size: int = 3

    @classmethod
    def of(cls, settings: BrokerSettings) -> Topology:
        return cls(
            settings.namespace,
            settings.queue_type,
            settings.max_deliveries,
            settings.max_queue_length,
            settings.quorum_initial_group_size,
        )

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
        return f"{self.namespace}.run-checks"

    @property
    def checks_queue_arguments(self) -> FieldTable:
        # Checks are answered within seconds or not at all: nothing worth keeping longer.
        return {"x-queue-type": self.queue_type, "x-message-ttl": CHECK_TTL_MS}

    @property
    def workers_queue(self) -> str:
        return f"{self.namespace}.heartbeats"

    @property
    def workers_queue_arguments(self) -> FieldTable:
        # Heartbeats are news for minutes at most.
        return {"x-queue-type": self.queue_type, "x-message-ttl": HEARTBEAT_TTL_MS}

    @property
    def scheduler_leader_queue(self) -> str:
        """Exclusive queue: the producer replica whose connection declared it leads the
        scheduler (see producer/scheduling/leader.py)."""
        return f"{self.namespace}.scheduler-leader"

    @property
    def control_exchange(self) -> str:
        """Fanout of cancellations: every consumer hears each one."""
        return f"{self.namespace}.control"

    @property
    def service_queues(self) -> tuple[str, ...]:
        """Every queue `declare_topology` declares besides the work queues: with those (and
        the retry queues, which expire on their own), what deleting a namespace deletes."""
        return (
            self.dead_letter_queue,
            self.recorder_queue,
            self.checks_queue,
            self.workers_queue,
        )

    @property
    def exchanges(self) -> tuple[str, ...]:
        """Every exchange `declare_topology` declares: what deleting a namespace deletes."""
        return (
            self.tasks_exchange,
            self.dead_letter_exchange,
            self.events_exchange,
            self.finished_exchange,
            self.control_exchange,
        )

    def work_queue(self, queue: str) -> str:
        """The broker name of work queue `queue`: `{namespace}.{queue}`."""
        if queue in RESERVED_QUEUE_NAMES:
            raise ValueError(f"queue name {queue!r} is reserved")
        return f"{self.namespace}.{queue}"

    def work_queue_arguments(self) -> FieldTable:
        arguments: FieldTable = {
            "x-queue-type": self.queue_type,
            "x-dead-letter-exchange": self.dead_letter_exchange,
        }
        if self.queue_type == "quorum":
            # The broker counts deliveries and dead-letters a crash loop (x-death reason
            # delivery_limit); classic queues have no count, the run check keeps one instead.
            arguments["x-delivery-limit"] = self.max_deliveries
            # Replicated over this many nodes (RabbitMQ takes every node of a smaller cluster):
            # a confirm then means a majority of them wrote the message.
            if self.quorum_initial_group_size:
                arguments["x-quorum-initial-group-size"] = self.quorum_initial_group_size
        if self.max_queue_length is not None:
            arguments["x-max-length"] = self.max_queue_length
            arguments["x-overflow"] = "reject-publish"  # a full queue nacks: HTTP 503
        return arguments

    def retry_queue(self, queue: str, delay_ms: int) -> str:
        """Where retries of `queue` wait `delay_ms` before going back to it."""
        return f"{self.work_queue(queue)}.retry.{delay_ms}"

    def retry_queue_arguments(self, queue: str, delay_ms: int) -> FieldTable:
        """A queue-level TTL (never per message: no head-of-line blocking) that dead-letters
        back to the work queue; unused for an hour past its TTL, the queue deletes itself."""
        arguments: FieldTable = {
            "x-queue-type": self.queue_type,
            "x-message-ttl": delay_ms,
            "x-dead-letter-exchange": self.tasks_exchange,
            "x-dead-letter-routing-key": queue,
            "x-expires": delay_ms + RETRY_QUEUE_IDLE_MS,
        }
        if self.queue_type == "quorum":
            arguments["x-dead-letter-strategy"] = "at-least-once"
            arguments["x-overflow"] = "reject-publish"  # at-least-once requires it
        return arguments


async def declare_work_queue(
    channel: AbstractChannel, topology: Topology, queue: str
) -> AbstractQueue:
    """Declare (idempotently) work queue `queue` and bind it to the tasks exchange."""
    declared = await channel.declare_queue(
        topology.work_queue(queue), durable=True, arguments=topology.work_queue_arguments()
    )
    await declared.bind(topology.tasks_exchange, routing_key=queue)
    return declared


async def declare_retry_queue(
    channel: AbstractChannel, topology: Topology, queue: str, delay_ms: int
) -> str:
    """Declare (idempotently) the retry queue of `queue` for `delay_ms`; its name."""
    name = topology.retry_queue(queue, delay_ms)
    await channel.declare_queue(
        name, durable=True, arguments=topology.retry_queue_arguments(queue, delay_ms)
    )
    return name


async def declare_checks_queue(channel: AbstractChannel, topology: Topology) -> AbstractQueue:
    """The run-checks queue, declared alike by the topology and by the producer's answerer."""
    return await channel.declare_queue(
        topology.checks_queue, durable=True, arguments=topology.checks_queue_arguments
    )


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
    await channel.declare_exchange(topology.control_exchange, ExchangeType.FANOUT, durable=True)
    await declare_checks_queue(channel, topology)
    await channel.declare_queue(
        topology.workers_queue, durable=True, arguments=topology.workers_queue_arguments
    )
    for queue in queues:
        await declare_work_queue(channel, topology, queue)
