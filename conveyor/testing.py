"""`InMemoryConveyor`: run your own tasks in your unit tests, without RabbitMQ or a database.

    async with InMemoryConveyor(tasks=["myapp.tasks"]) as conveyor:
        record = await conveyor.submit("resize_image", {"url": "u", "width": 64})
        await conveyor.drain()
        done = await conveyor.get(record.id)   # a TaskRecord, "succeeded", its result set

The tasks load as CONVEYOR_TASKS loads them, submissions are validated as the HTTP API
validates them (a bad one raises the client's InvalidRequest naming the field), and runs
follow the services' rules: `Retry`, `PermanentFailure`, `max_retries`, time limits of async
tasks, JSON results. Retry delays and delayed tasks are fast-forwarded by `drain()`. Sync
tasks run in-process. It reads no CONVEYOR_* setting: your tests' environment may point at
servers that are not there.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import orjson
from pydantic import BaseModel, ValidationError

from conveyor.client import submission_payload
from conveyor.client_errors import (
    Conflict,
    ErrorDetail,
    InvalidRequest,
    TaskNotFound,
)
from conveyor.consumer.deliveries import error_info
from conveyor.producer.http.errors import submission_error_body
from conveyor.producer.submission.submitter import TaskSubmission, prepare_task
from conveyor.shared.errors import PermanentFailure, SubmissionError, TaskTimedOut
from conveyor.shared.records import TaskError, TaskRecord, TaskStatus
from conveyor.shared.task_loader import TaskDefaults, catalog_of, load_tasks
from conveyor.shared.tasks import Task, TaskContext

WORKER_ID = "in-memory"


class InMemoryConveyor:
    """Tasks of `tasks` (module paths, or @task objects) run here, one at a time, on
    `drain()`. `queue`, `max_retries` and `timeout_s` are the defaults of tasks that set
    none (the services' CONVEYOR_DEFAULT_* settings)."""

    def __init__(
        self,
        tasks: Iterable[str | Task],
        *,
        queue: str = "default",
        max_retries: int = 3,
        timeout_s: float = 300.0,
    ) -> None:
        items = list(tasks)
        loaded = load_tasks([item for item in items if isinstance(item, str)])
        loaded.update({item.name: item for item in items if isinstance(item, Task)})
        self.tasks = loaded
        self.catalog = catalog_of(loaded, TaskDefaults(queue, max_retries, timeout_s))
        self._queues = self.catalog.queues | {queue}
        self._records: dict[str, TaskRecord] = {}
        self._keys: dict[str, str] = {}  # idempotency key -> task id
        self._pending: list[str] = []  # task ids in the order they are due

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._pending.clear()

    async def submit(
        self,
        task: str | Task,
        payload: Mapping[str, Any] | BaseModel | None = None,
        *,
        queue: str | None = None,
        idempotency_key: str | None = None,
        max_retries: int | None = None,
        timeout_s: float | None = None,
        delay_s: float | None = None,
        eta: datetime | None = None,
        **fields: Any,
    ) -> TaskRecord:
        """Validate and enqueue one task, as ConveyorClient.submit does against the API."""
        name, data = submission_payload(task, payload, fields)
        known = self._keys.get(idempotency_key) if idempotency_key else None
        if known is not None:
            return self._records[known]
        try:
            submission = TaskSubmission(
                task=name,
                payload=data if data is not None else {},
                queue=queue,
                idempotency_key=idempotency_key,
                max_retries=max_retries,
                timeout_s=timeout_s,
                delay_s=delay_s,
                eta=eta,
            )
            message = prepare_task(self.catalog, self._queues, submission)
        except ValidationError as error:
            raise _invalid_submission(error) from None
        except SubmissionError as error:
            code, details = submission_error_body(error)
            problems = [ErrorDetail.model_validate(detail) for detail in details]
            raise InvalidRequest(422, code, error.message, problems) from None
        assert message.max_retries is not None and message.timeout_s is not None
        due = submission.due_at(message.created_at.timestamp())
        record = TaskRecord(
            id=message.id,
            task=message.task,
            queue=message.queue,
            status=TaskStatus.SCHEDULED if due is not None else TaskStatus.QUEUED,
            payload=message.payload,
            attempts=0,
            max_retries=message.max_retries,
            timeout_s=message.timeout_s,
            idempotency_key=idempotency_key,
            created_at=message.created_at,
            eta=datetime.fromtimestamp(due, UTC) if due is not None else None,
        )
        self._records[record.id] = record
        if idempotency_key:
            self._keys[idempotency_key] = record.id
        self._pending.append(record.id)
        return record

    async def drain(self, max_runs: int = 100_000) -> int:
        """Run every queued, delayed and retrying task until none is left; the number of
        runs. A task that keeps asking for retries ends within its max_retries."""
        runs = 0
        while self._pending:
            if runs >= max_runs:
                raise RuntimeError(f"drain() stopped after {max_runs} runs; tasks are left")
            task_id = self._pending.pop(0)
            if self._records[task_id].status.terminal:
                continue  # cancelled while it waited
            await self._run(task_id)
            runs += 1
        return runs

    async def get(self, task_id: str) -> TaskRecord:
        """The task's record; TaskNotFound (the client's) if the id is unknown."""
        try:
            return self._records[task_id]
        except KeyError:
            raise TaskNotFound(404, "not_found", f"no task with id {task_id!r}") from None

    async def list(self, status: TaskStatus | str | None = None) -> builtins.list[TaskRecord]:
        """Every record, newest first, of one status if given."""
        records = reversed(self._records.values())
        return [r for r in records if status is None or r.status == TaskStatus(status)]

    async def cancel(self, task_id: str) -> TaskRecord:
        """Cancel a task that has not run yet (here nothing runs between two drains)."""
        record = await self.get(task_id)
        if record.status.terminal:
            raise Conflict(409, "conflict", f"task {task_id} is already {record.status}")
        return self._update(task_id, status=TaskStatus.CANCELLED, finished_at=_now())

    async def _run(self, task_id: str) -> None:
        record = self._records[task_id]
        task = self.tasks[record.task]
        attempt = record.attempts + 1
        ctx = TaskContext(task_id, record.task, attempt, WORKER_ID, record.request_id)
        self._update(
            task_id,
            status=TaskStatus.RUNNING,
            attempts=attempt,
            started_at=_now(),
            worker=WORKER_ID,
            next_attempt_at=None,
        )
        try:
            result = await self._call(task, record, ctx)
            orjson.dumps(result)  # the services keep only JSON results
        except Exception as error:
            self._failed(task_id, attempt, error)
            return
        self._update(
            task_id, status=TaskStatus.SUCCEEDED, result=result, error=None, finished_at=_now()
        )

    async def _call(self, task: Task, record: TaskRecord, ctx: TaskContext) -> Any:
        if not task.is_async:
            return task.run(record.payload, ctx)
        try:
            async with asyncio.timeout(record.timeout_s):
                return await task.run(record.payload, ctx)
        except TimeoutError:
            raise TaskTimedOut(record.timeout_s, "it was cancelled") from None

    def _failed(self, task_id: str, attempt: int, error: Exception) -> None:
        record = self._records[task_id]
        info = TaskError.model_validate(error_info(error))  # as a consumer reports it
        if isinstance(error, PermanentFailure) or attempt > record.max_retries:
            self._update(task_id, status=TaskStatus.FAILED, error=info, finished_at=_now())
            return
        # The delay is fast-forwarded: the next attempt is due now.
        self._update(task_id, status=TaskStatus.RETRYING, error=info, next_attempt_at=_now())
        self._pending.append(task_id)

    def _update(self, task_id: str, **changes: Any) -> TaskRecord:
        record = self._records[task_id].model_copy(update=changes)
        self._records[task_id] = record
        return record


def _now() -> datetime:
    return datetime.now(UTC)


def _invalid_submission(error: ValidationError) -> InvalidRequest:
    details = [
        ErrorDetail(
            field=".".join(str(part) for part in item["loc"]) or "body",
            message=item["msg"],
            type=item["type"],
        )
        for item in error.errors()
    ]
    message = "; ".join(f"{d.field}: {d.message}" for d in details)
    return InvalidRequest(422, "validation_error", message, details)
