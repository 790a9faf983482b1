"""What the producer and the consumer share: catalog, envelope, topology, events, errors."""

from conveyor.shared.builtin_tasks import builtin_catalog
from conveyor.shared.catalog import DEFAULT_QUEUE, Catalog, TaskSpec
from conveyor.shared.connection import connect
from conveyor.shared.envelope import TaskMessage, decode, encode
from conveyor.shared.errors import (
    BrokerUnavailable,
    ConveyorError,
    InvalidPayload,
    NotConfigured,
    PublishFailed,
    SubmissionError,
    TaskFailed,
    UndecodableMessage,
    UnknownTask,
)
from conveyor.shared.events import (
    EVENTS_ROUTING_KEY,
    TaskEvent,
    TaskState,
    decode_events,
    encode_events,
    make_event,
)
from conveyor.shared.ids import new_task_id
from conveyor.shared.logs import configure_logging, log_context
from conveyor.shared.topology import Topology, declare_topology, declare_work_queue

__all__ = [
    "DEFAULT_QUEUE",
    "EVENTS_ROUTING_KEY",
    "BrokerUnavailable",
    "Catalog",
    "ConveyorError",
    "InvalidPayload",
    "NotConfigured",
    "PublishFailed",
    "SubmissionError",
    "TaskEvent",
    "TaskFailed",
    "TaskMessage",
    "TaskSpec",
    "TaskState",
    "Topology",
    "UndecodableMessage",
    "UnknownTask",
    "builtin_catalog",
    "configure_logging",
    "connect",
    "declare_topology",
    "declare_work_queue",
    "decode",
    "decode_events",
    "encode",
    "encode_events",
    "log_context",
    "make_event",
    "new_task_id",
]
