"""Conveyor: a RabbitMQ work queue with task records, schedules and a dashboard.

What an application needs: `@task` and `TaskContext` to write tasks, `Retry` and
`PermanentFailure` to steer their retries, and the HTTP clients with their error types and
`TaskRecord`. Importing this pulls in neither the services nor their broker and database
drivers: the client is for other people's apps.
"""

from conveyor.client import ConveyorClient
from conveyor.client_errors import (
    ApiError,
    Conflict,
    InvalidRequest,
    RateLimited,
    ServiceUnavailable,
    TaskNotFound,
    Unauthorized,
)
from conveyor.shared.errors import PermanentFailure, Retry
from conveyor.shared.records import TaskRecord, TaskStatus
from conveyor.shared.tasks import Task, TaskContext, task
from conveyor.sync_client import SyncConveyorClient

__all__ = [
    "ApiError",
    "Conflict",
    "ConveyorClient",
    "InvalidRequest",
    "PermanentFailure",
    "RateLimited",
    "Retry",
    "ServiceUnavailable",
    "SyncConveyorClient",
    "Task",
    "TaskContext",
    "TaskNotFound",
    "TaskRecord",
    "TaskStatus",
    "Unauthorized",
    "task",
]
