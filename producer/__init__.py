"""The producer service: records task submissions and publishes them with confirms."""

from producer.client import ConveyorClient
from producer.publisher import Publisher
from producer.records import TaskRecord, TaskStatus
from producer.service import ProducerService, open_submitter
from producer.submission import Submitter, TaskSubmission
from producer.sync_client import SyncConveyorClient

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
