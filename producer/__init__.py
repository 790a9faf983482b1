"""The producer service: records task submissions and publishes them with confirms."""

from conveyor.producer.client import ConveyorClient
from conveyor.producer.publisher import Publisher
from conveyor.producer.records import TaskRecord, TaskStatus
from conveyor.producer.service import ProducerService, open_submitter
from conveyor.producer.submission import Submitter, TaskSubmission
from conveyor.producer.sync_client import SyncConveyorClient

__all__ = [
    "ConveyorClient",
    "ProducerService",
    "Publisher",
    "Submitter",
    "SyncConveyorClient",
    "TaskRecord",
    "TaskStatus",
    "TaskSubmission",
    "open_submitter",
]
