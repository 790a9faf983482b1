"""The HTTP API: submit tasks, read and wait on their records, health and readiness.

Thin: the work is in Submitter (submissions) and the store's Records (reads).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, FastAPI, Path, Query, Request, Response, status
from pydantic import BaseModel, Field

from conveyor.producer.dead_letters.api import dead_letter_routes
from conveyor.producer.dead_letters.desk import DeadLetterDesk
from conveyor.producer.http.dashboard import dashboard_routes
from conveyor.producer.http.errors import (
    RETRY_AFTER_S,
    error_response,
    error_responses,
    install_error_handlers,
)
from conveyor.producer.http.guards import BearerAuth, BodyLimit, RateLimit, RequestId
from conveyor.producer.http.task_types import document_tasks, task_type_routes
from conveyor.producer.monitoring.api import SystemParts, stats_routes, system_routes
from conveyor.producer.runs.cancellation import Canceller
from conveyor.producer.runs.waiters import Waiters
from conveyor.producer.scheduling.api import schedule_routes
from conveyor.producer.scheduling.desk import ScheduleDesk
from conveyor.producer.store.database import TaskStore
from conveyor.producer.store.records import Records
from conveyor.producer.store.stats import Stats
from conveyor.producer.submission.submitter import Submitter, TaskSubmission
from conveyor.shared.catalog import Catalog
from conveyor.shared.errors import BrokerUnavailable, StoreUnavailable, TaskNotFound
from conveyor.shared.records import RecordBatch, TaskPage, TaskRecord, TaskStatus

MAX_LIST_LIMIT = 500
MAX_WAIT_S = 60.0

# No length or pattern: an id no task has is 404 whatever it looks like, never 422.
TaskId = Annotated[str, Path(description="The task's id.")]
MAX_TASK_ID_CHARS = 64  # the store's column


class Backend(SystemParts, Protocol):
    """What the API needs from the producer service (None while not connected yet)."""

    @property
    def store(self) -> TaskStore | None: ...

    @property
    def submitter(self) -> Submitter | None: ...

    @property
    def waiters(self) -> Waiters: ...

    @property
    def dead_letters(self) -> DeadLetterDesk | None: ...

    @property
    def schedules(self) -> ScheduleDesk | None: ...

    @property
    def canceller(self) -> Canceller | None: ...


class BatchSubmission(BaseModel):
    tasks: Annotated[list[TaskSubmission], Field(min_length=1)]


class _Access:
    """The backend's parts, or the error that says why one is not there yet."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def submitter(self) -> Submitter:
        current = self.backend.submitter
        if current is None or not current.publisher.ready:
            raise BrokerUnavailable("not connected to RabbitMQ")
        return current

    def store(self) -> TaskStore:
        if self.backend.store is None:
            raise StoreUnavailable("the task store is not open yet")
        return self.backend.store

    def records(self) -> Records:
        return self.store().records

    def stats(self) -> Stats:
        return self.store().stats

    def dead_letters(self) -> DeadLetterDesk:
        if self.backend.dead_letters is None:
            raise BrokerUnavailable("not connected to RabbitMQ")
        return self.backend.dead_letters

    def canceller(self) -> Canceller:
        if self.backend.canceller is None:
            raise BrokerUnavailable("not connected to RabbitMQ")
        return self.backend.canceller

    async def record(self, task_id: str) -> TaskRecord:
        if len(task_id) > MAX_TASK_ID_CHARS or "\x00" in task_id:
            raise TaskNotFound(task_id)  # no record can have it (PostgreSQL refuses NUL)
        record = await self.records().get(task_id)
        if record is None:
            raise TaskNotFound(task_id)
        return record


def create_app(
    backend: Backend,
    *,
    max_batch_size: int = 1000,
    max_payload_bytes: int = 1_048_576,
    api_tokens: Sequence[str] = (),
    rate_limit_per_s: float | None = None,
    catalog: Catalog | None = None,
) -> FastAPI:
    """The FastAPI app over `backend`; `catalog` (the tasks it accepts) is documented in
    the OpenAPI document and listed by GET /task-types."""
    app = FastAPI(
        title="Conveyor",
        summary="Submit tasks to RabbitMQ work queues and follow them to their result.",
        version="0.1.0",
        # A body sent without any Content-Type is read as JSON; one of another type (`curl -d`
        # sends form encoding) gets a 422 that asks for application/json.
        strict_content_type=False,
        # Any route: a missing token, a bad parameter, the broker or the store away.
        responses=error_responses(401, 422, 503),
    )
    install_error_handlers(app)
    # The last added runs first: RequestId, BearerAuth, RateLimit, BodyLimit. Every response
    # (401, 429 and 413 included) echoes the request id; a request without a valid token gets
    # 401 and spends no one's rate; a limited one is refused before its body is read.
    app.add_middleware(BodyLimit, max_bytes=max_payload_bytes)
    # Without configured tokens a client could send a new made-up one each time: by address.
    app.add_middleware(RateLimit, per_s=rate_limit_per_s, by_token=bool(api_tokens))
    app.add_middleware(BearerAuth, tokens=api_tokens)
    app.add_middleware(RequestId)
    access = _Access(backend)
    app.include_router(_submission_routes(access, max_batch_size))
    app.include_router(_record_routes(access))
    app.include_router(dead_letter_routes(access.dead_letters, access.records))
    app.include_router(schedule_routes(backend))
    app.include_router(_health_routes(backend))
    app.include_router(system_routes(backend))
    app.include_router(stats_routes(access.stats))
    app.include_router(dashboard_routes())
    catalog = catalog if catalog is not None else Catalog(())
    app.include_router(task_type_routes(catalog, lambda: backend.workers))
    document_tasks(app, catalog, tokens_required=bool(api_tokens))
    return app


def _submission_routes(access: _Access, max_batch_size: int) -> APIRouter:
    router = APIRouter(tags=["submit"])

    @router.post(
        "/tasks",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=TaskRecord,
        responses={
            200: {"description": "Known idempotency key: the original task."},
            **error_responses(400, 413, 429),
        },
    )
    async def submit_task(body: TaskSubmission, request: Request, response: Response) -> Any:
        """Validate, record and publish one task (202 once the broker confirmed it)."""
        [(record, created)] = await access.submitter().accept(
            [body], request.state.request_id, field_prefix=""
        )
        if not created:
            response.status_code = status.HTTP_200_OK
        return record

    @router.post(
        "/tasks/batch",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=RecordBatch,
        responses=error_responses(400, 413, 429),
    )
    async def submit_batch(body: BatchSubmission, request: Request) -> Any:
        """Validate all tasks (all-or-nothing), then record and publish them."""
        if len(body.tasks) > max_batch_size:
            return error_response(
                422,
                "validation_error",
                f"tasks: at most {max_batch_size} tasks per batch, got {len(body.tasks)}",
                [{"field": "tasks", "message": "too many tasks", "type": "too_long"}],
            )
        records = await access.submitter().submit_many(body.tasks, request.state.request_id)
        return RecordBatch(items=records)

    return router


def _record_routes(access: _Access) -> APIRouter:
    router = APIRouter(tags=["records"])

    @router.get("/tasks", response_model=TaskPage)
    async def list_tasks(
        status: TaskStatus | None = None,
        task: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, description=f"At most {MAX_LIST_LIMIT}.")] = 50,
        cursor: Annotated[str | None, Query(description="`next_cursor` of the last page.")] = None,
    ) -> TaskPage:
        """Tasks, newest first; follow `next_cursor` for the next page."""
        return await access.records().list(
            status=status, task=task, limit=min(limit, MAX_LIST_LIMIT), cursor=cursor
        )

    @router.get("/tasks/{task_id}", response_model=TaskRecord, responses=error_responses(404))
    async def get_task(task_id: TaskId) -> TaskRecord:
        """One task's record."""
        return await access.record(task_id)

    @router.get("/tasks/{task_id}/wait", response_model=TaskRecord, responses=error_responses(404))
    async def wait_task(
        task_id: TaskId,
        timeout_s: Annotated[float, Query(ge=0, description=f"At most {MAX_WAIT_S:g}.")] = 30.0,
    ) -> TaskRecord:
        """The record once the task is terminal, or as it is when `timeout_s` passed."""
        record = await access.record(task_id)
        if record.status.terminal:
            return record
        with access.backend.waiters.watch(task_id) as finished:
            record = await access.record(task_id)  # it may have finished before we watched
            if not record.status.terminal:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(finished, min(timeout_s, MAX_WAIT_S))
                record = await access.record(task_id)
        return record

    @router.post(
        "/tasks/{task_id}/cancel", response_model=TaskRecord, responses=error_responses(404, 409)
    )
    async def cancel_task(task_id: TaskId) -> TaskRecord:
        """Cancel a task that has not finished: a delayed one is never published, a queued
        one is acked unrun, a running one is stopped. 409 if it already finished."""
        await access.record(task_id)  # 404 before anything else
        record = await access.canceller().cancel(task_id)
        access.backend.waiters.notify([task_id])
        return record

    return router


def _health_routes(backend: Backend) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is alive (looks at neither broker nor database)."""
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz() -> Any:
        """Ready to take tasks: the store is open and RabbitMQ connected."""
        current = backend.submitter
        if backend.store is None or current is None or not current.publisher.ready:
            what = "the task store" if backend.store is None else "RabbitMQ"
            return error_response(
                503,
                "not_ready",
                f"not connected to {what} yet",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        return {"status": "ready"}

    return router
