"""A Python client of the producer's HTTP API: submit tasks, read and wait on their records,
list, requeue and purge dead letters.

Use it from any process other than the producer's own (another service, a script, the
`conveyor` CLI): it talks HTTP, so it gets task records, the API's auth and its error codes,
and the caller needs neither RabbitMQ credentials nor the task catalog. Services written in
other languages use the same API with their own HTTP client. Python code running inside the
producer's process uses the in-process `Submitter` instead: no HTTP hop, same validation.

`ConveyorClient` is async; `SyncConveyorClient` offers the same methods for blocking code.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import httpx
import orjson
from pydantic import BaseModel, ValidationError

from conveyor.client_errors import (
    ApiError,
    Conflict,
    ErrorDetail,
    InvalidRequest,
    RateLimited,
    ServiceUnavailable,
    TaskNotFound,
    Unauthorized,
    error_from,
    invalid_payload,
)
from conveyor.config import ClientSettings, redact_url
from conveyor.shared.errors import InvalidPayload
from conveyor.shared.records import (
    DeadLetterPage,
    RecordBatch,
    TaskPage,
    TaskRecord,
    TaskStatus,
    TaskTypePage,
    TaskTypeView,
    WorkerPage,
    WorkerView,
)
from conveyor.shared.tasks import Task

__all__ = [
    "ApiError",
    "Conflict",
    "ConveyorClient",
    "ErrorDetail",
    "InvalidRequest",
    "RateLimited",
    "RequeueOutcome",
    "ServiceUnavailable",
    "TaskNotFound",
    "Unauthorized",
]

# The server holds one wait request for at most this long; longer waits are several requests.
MAX_POLL_S = 60.0
# A server that answers a wait at once (no long-poll) is polled no faster than this.
MIN_POLL_INTERVAL_S = 0.25

ModelT = TypeVar("ModelT", bound=BaseModel)


class RequeueOutcome(BaseModel):
    """What `requeue_all` did: dead letters published again, and those that are no task."""

    requeued: int
    skipped: int  # undecodable or naming no queue: only purging removes them


class _Purged(BaseModel):
    purged: int


def _without_none(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The server applies its own defaults to absent fields; None would be a value."""
    return {key: value for key, value in fields.items() if value is not None}


class ConveyorClient:
    """Async client of the producer's HTTP API; use as `async with ConveyorClient(url) as c:`.

    `transport` replaces the network (tests pass an `httpx.MockTransport`).
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._token = token
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.AsyncClient(
            base_url=url, headers=headers, timeout=timeout_s, transport=transport
        )

    @classmethod
    def from_settings(
        cls, settings: ClientSettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> Self:
        """A client for the API that `settings` (CONVEYOR_API_*) point at."""
        token = settings.api_token.get_secret_value() if settings.api_token else None
        return cls(
            settings.api_url, token=token, timeout_s=settings.api_timeout_s, transport=transport
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

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
        """Submit one task (delayed by `delay_s`, or until `eta`, a timezone-aware time);
        with an idempotency key already used, the original record.

        `task` is a task's name, or the `@task` itself: then the payload (a model, a
        mapping or keyword `fields`) is validated here first, and a bad one raises
        InvalidRequest naming the field, as the API's 422 would, without a request.
        """
        name, body_payload = submission_payload(task, payload, fields)
        body = _without_none(
            {
                "task": name,
                "payload": body_payload,
                "queue": queue,
                "idempotency_key": idempotency_key,
                "max_retries": max_retries,
                "timeout_s": timeout_s,
                "delay_s": delay_s,
                "eta": eta.isoformat() if eta is not None else None,
            }
        )
        return await self._call(TaskRecord, "POST", "/tasks", json=body)

    async def cancel(self, task_id: str) -> TaskRecord:
        """Cancel a task that has not finished; its record. Conflict if it already did."""
        return await self._call(TaskRecord, "POST", _task_path(task_id) + "/cancel")

    async def submit_many(
        self, submissions: Sequence[Mapping[str, Any]]
    ) -> builtins.list[TaskRecord]:
        """Submit several tasks at once (all or none); records in the order submitted.

        Each submission has the keys of `submit`'s arguments (`task`, `payload`, ...).
        """
        body = {"tasks": [_without_none(item) for item in submissions]}
        return (await self._call(RecordBatch, "POST", "/tasks/batch", json=body)).items

    async def get(self, task_id: str) -> TaskRecord:
        """The task's current record; TaskNotFound if the id is unknown."""
        return await self._call(TaskRecord, "GET", _task_path(task_id))

    async def wait(self, task_id: str, timeout_s: float | None = None) -> TaskRecord:
        """The record once the task is terminal or `timeout_s` passed (None: no limit).

        The record may still be non-terminal after a timeout: check `record.status.terminal`.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + max(timeout_s, 0.0)
        path = _task_path(task_id) + "/wait"
        while True:
            started = loop.time()
            poll_s = MAX_POLL_S if deadline is None else min(MAX_POLL_S, deadline - started)
            poll_s = max(poll_s, 0.0)
            record = await self._call(
                TaskRecord,
                "GET",
                path,
                params={"timeout_s": round(poll_s, 3)},
                # The server holds the request for up to poll_s before it starts to answer.
                timeout=poll_s + self.timeout_s,
            )
            now = loop.time()
            if record.status.terminal or (deadline is not None and now >= deadline):
                return record
            if now - started < MIN_POLL_INTERVAL_S:
                pause_s = MIN_POLL_INTERVAL_S - (now - started)
                if deadline is not None:
                    pause_s = min(pause_s, deadline - now)
                await asyncio.sleep(pause_s)

    async def list(
        self,
        status: TaskStatus | str | None = None,
        task: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> TaskPage:
        """One page of records, newest first; pass `next_cursor` as `cursor` for the next."""
        params = _without_none({"status": status, "task": task, "limit": limit, "cursor": cursor})
        return await self._call(TaskPage, "GET", "/tasks", params=params)

    async def iter_tasks(
        self,
        status: TaskStatus | str | None = None,
        task: str | None = None,
        page_size: int | None = None,
        cursor: str | None = None,
    ) -> AsyncIterator[TaskRecord]:
        """Every matching record, newest first, fetched a page (`page_size`) at a time."""
        while True:
            page = await self.list(status=status, task=task, limit=page_size, cursor=cursor)
            for record in page.items:
                yield record
            if not page.next_cursor or not page.items:
                return
            cursor = page.next_cursor

    async def dead_letters(
        self, limit: int | None = None, cursor: str | None = None
    ) -> DeadLetterPage:
        """One page of dead letters, newest first, each with why it landed there."""
        params = _without_none({"limit": limit, "cursor": cursor})
        return await self._call(DeadLetterPage, "GET", "/dead-letters", params=params)

    async def task_types(self) -> builtins.list[TaskTypeView]:
        """Every task the producer accepts, with how many online workers serve it."""
        return (await self._call(TaskTypePage, "GET", "/task-types")).items

    async def workers(self) -> builtins.list[WorkerView]:
        """Every consumer the worker registry knows: online, lost or offline."""
        return (await self._call(WorkerPage, "GET", "/workers")).items

    async def requeue(self, task_id: str) -> TaskRecord:
        """Publish a dead task again (same id, a fresh retry budget); its record, queued.

        TaskNotFound if no dead letter has that id; Conflict if the dead letter is no task
        it can publish (undecodable, or naming no queue): purge it instead.
        """
        return await self._call(TaskRecord, "POST", _dead_letter_path(task_id) + "/requeue")

    async def requeue_all(self) -> RequeueOutcome:
        """Publish every dead task again; how many were, and how many are no task."""
        return await self._call(RequeueOutcome, "POST", "/dead-letters/requeue")

    async def purge_dead_letters(self) -> int:
        """Delete every dead letter for good; how many there were."""
        return (await self._call(_Purged, "DELETE", "/dead-letters")).purged

    async def _call(
        self,
        model: type[ModelT],
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> ModelT:
        """Send one request; the reply parsed as `model`, or the ApiError it stands for."""
        try:
            reply = await self._http.request(
                method,
                path,
                content=None if json is None else orjson.dumps(json),
                headers=None if json is None else {"Content-Type": "application/json"},
                params=params,
                timeout=self.timeout_s if timeout is None else timeout,
            )
        except httpx.TimeoutException:
            raise self._unreachable("no reply in time") from None
        except httpx.TransportError as error:
            raise self._unreachable(str(error) or type(error).__name__) from None
        if reply.is_error:
            raise error_from(reply)
        try:
            return model.model_validate_json(reply.content)
        except ValidationError as error:
            raise ApiError(
                reply.status_code,
                "bad_response",
                f"the API at {self._shown_url()} sent an unexpected reply "
                f"({error.error_count()} problems); is CONVEYOR_API_URL right?",
                request_id=reply.headers.get("X-Request-ID"),
            ) from None

    def _unreachable(self, reason: str) -> ServiceUnavailable:
        if self._token:
            reason = reason.replace(self._token, "***")
        message = f"the API at {self._shown_url()} is unreachable: {reason}"
        return ServiceUnavailable(None, "unreachable", message)

    def _shown_url(self) -> str:
        return redact_url(self.url)


def _task_path(task_id: str) -> str:
    return "/tasks/" + quote(task_id, safe="")


def _dead_letter_path(task_id: str) -> str:
    return "/dead-letters/" + quote(task_id, safe="")


def submission_payload(
    task: str | Task, payload: Mapping[str, Any] | BaseModel | None, fields: Mapping[str, Any]
) -> tuple[str, Any]:
    """(task name, payload as JSON-able data): a Task's payload validated here."""
    if not isinstance(task, Task):
        if fields:
            raise TypeError("keyword payload fields need the @task itself, not its name")
        if isinstance(payload, BaseModel):
            return task, payload.model_dump(mode="json")
        return task, payload
    try:
        if isinstance(payload, BaseModel) or payload is None:
            model = task.payload(payload, **fields)
        else:
            model = task.payload(**{**payload, **fields})
    except InvalidPayload as error:
        raise invalid_payload(error) from None
    return task.name, model.model_dump(mode="json")
