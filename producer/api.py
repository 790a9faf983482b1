"""The HTTP API: submit tasks, health and readiness. Thin: the work is in Submitter."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import FastAPI, Request, Response, status
from pydantic import BaseModel, Field

from producer.errors import RETRY_AFTER_S, error_response, install_error_handlers
from producer.submission import Submitter, TaskSubmission
from shared.catalog import TaskSpec
from shared.envelope import TaskMessage
from shared.errors import BrokerUnavailable

REQUEST_ID_HEADER = "X-Request-ID"


class TaskAccepted(BaseModel):
    """A task the broker confirmed."""

    id: str
    task: str
    queue: str
    status: str = "queued"
    payload: dict[str, Any]
    attempts: int = 0
    max_retries: int
    timeout_s: float
    created_at: datetime

    @classmethod
    def of(cls, task: TaskMessage, spec: TaskSpec) -> TaskAccepted:
        """The accepted task, with the spec's defaults where the submission set none."""
        return cls(
            id=task.id,
            task=task.task,
            queue=task.queue,
            payload=task.payload,
            max_retries=spec.max_retries if task.max_retries is None else task.max_retries,
            timeout_s=spec.timeout_s if task.timeout_s is None else task.timeout_s,
            created_at=task.created_at,
        )


class BatchSubmission(BaseModel):
    tasks: Annotated[list[TaskSubmission], Field(min_length=1)]


class BatchAccepted(BaseModel):
    items: list[TaskAccepted]


def create_app(
    get_submitter: Callable[[], Submitter | None], max_batch_size: int = 1000
) -> FastAPI:
    """The FastAPI app; `get_submitter` returns None while the broker is not connected yet."""
    app = FastAPI(
        title="Conveyor",
        summary="Submit tasks to RabbitMQ work queues.",
        version="0.1.0",
        # Parse JSON bodies whatever Content-Type says: `curl -d` sends form encoding.
        strict_content_type=False,
    )
    install_error_handlers(app)

    def submitter() -> Submitter:
        current = get_submitter()
        if current is None or not current.publisher.ready:
            raise BrokerUnavailable("not connected to RabbitMQ")
        return current

    @app.middleware("http")
    async def request_id(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        rid = request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
        request.state.request_id = rid[:200]
        response = await call_next(request)
        response.headers[REQUEST_ID_HEADER] = request.state.request_id
        return response

    @app.post("/tasks", status_code=status.HTTP_202_ACCEPTED, response_model=TaskAccepted)
    async def submit_task(body: TaskSubmission, request: Request) -> TaskAccepted:
        """Validate one task against the catalog and publish it (202 once confirmed)."""
        current = submitter()
        task = await current.submit(body, request.state.request_id)
        return TaskAccepted.of(task, current.catalog.spec(task.task))

    @app.post("/tasks/batch", status_code=status.HTTP_202_ACCEPTED, response_model=BatchAccepted)
    async def submit_batch(body: BatchSubmission, request: Request) -> Any:
        """Validate all tasks (all-or-nothing), then publish them with pipelined confirms."""
        if len(body.tasks) > max_batch_size:
            return error_response(
                422,
                "validation_error",
                f"tasks: at most {max_batch_size} tasks per batch, got {len(body.tasks)}",
                [{"field": "tasks", "message": "too many tasks", "type": "too_long"}],
            )
        current = submitter()
        tasks = await current.submit_many(body.tasks, request.state.request_id)
        return BatchAccepted(
            items=[TaskAccepted.of(task, current.catalog.spec(task.task)) for task in tasks]
        )

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is alive (does not look at the broker)."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Any:
        """Ready to take tasks: connected to RabbitMQ."""
        current = get_submitter()
        if current is None or not current.publisher.ready:
            return error_response(
                503,
                "broker_unavailable",
                "not connected to RabbitMQ",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        return {"status": "ready"}

    return app
