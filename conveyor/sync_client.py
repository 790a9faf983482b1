"""The blocking twin of ConveyorClient, for code without an event loop."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import httpx
from pydantic import BaseModel

from conveyor.client import ConveyorClient, RequeueOutcome
from conveyor.config import ClientSettings
from conveyor.shared.errors import ConveyorError
from conveyor.shared.records import (
    DeadLetterPage,
    TaskPage,
    TaskRecord,
    TaskStatus,
    TaskTypeView,
    WorkerView,
)
from conveyor.shared.tasks import Task


class SyncConveyorClient:
    """The blocking twin of ConveyorClient, for code without an event loop.

    It runs a ConveyorClient on a private event loop; do not call it from async code (use
    ConveyorClient there). Use it as a context manager, or call close() when done.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._runner = asyncio.Runner()
        self._client: ConveyorClient | None = ConveyorClient(
            url, token=token, timeout_s=timeout_s, transport=transport
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

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool and the private event loop; safe to call twice."""
        if self._client is not None:
            client, self._client = self._client, None
            self._runner.run(client.aclose())
        self._runner.close()

    def submit(
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
        """Submit one task; see ConveyorClient.submit."""
        return self._runner.run(
            self._async.submit(
                task,
                payload,
                queue=queue,
                idempotency_key=idempotency_key,
                max_retries=max_retries,
                timeout_s=timeout_s,
                delay_s=delay_s,
                eta=eta,
                **fields,
            )
        )

    def cancel(self, task_id: str) -> TaskRecord:
        """Cancel a task; see ConveyorClient.cancel."""
        return self._runner.run(self._async.cancel(task_id))

    def submit_many(self, submissions: Sequence[Mapping[str, Any]]) -> builtins.list[TaskRecord]:
        """Submit several tasks at once; see ConveyorClient.submit_many."""
        return self._runner.run(self._async.submit_many(submissions))

    def get(self, task_id: str) -> TaskRecord:
        """The task's current record; see ConveyorClient.get."""
        return self._runner.run(self._async.get(task_id))

    def wait(self, task_id: str, timeout_s: float | None = None) -> TaskRecord:
        """Block until the task is terminal or `timeout_s` passed; see ConveyorClient.wait."""
        return self._runner.run(self._async.wait(task_id, timeout_s))

    def list(
        self,
        status: TaskStatus | str | None = None,
        task: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> TaskPage:
        """One page of records; see ConveyorClient.list."""
        return self._runner.run(self._async.list(status, task, limit, cursor))

    def iter_tasks(
        self,
        status: TaskStatus | str | None = None,
        task: str | None = None,
        page_size: int | None = None,
        cursor: str | None = None,
    ) -> Iterator[TaskRecord]:
        """Every matching record, newest first, fetched a page at a time."""
        while True:
            page = self.list(status=status, task=task, limit=page_size, cursor=cursor)
            yield from page.items
            if not page.next_cursor or not page.items:
                return
            cursor = page.next_cursor

    def dead_letters(self, limit: int | None = None, cursor: str | None = None) -> DeadLetterPage:
        """One page of dead letters; see ConveyorClient.dead_letters."""
        return self._runner.run(self._async.dead_letters(limit, cursor))

    def task_types(self) -> builtins.list[TaskTypeView]:
        """Every task the producer accepts; see ConveyorClient.task_types."""
        return self._runner.run(self._async.task_types())

    def workers(self) -> builtins.list[WorkerView]:
        """Every consumer the registry knows; see ConveyorClient.workers."""
        return self._runner.run(self._async.workers())

    def requeue(self, task_id: str) -> TaskRecord:
        """Publish a dead task again; see ConveyorClient.requeue."""
        return self._runner.run(self._async.requeue(task_id))

    def requeue_all(self) -> RequeueOutcome:
        """Publish every dead task again; see ConveyorClient.requeue_all."""
        return self._runner.run(self._async.requeue_all())

    def purge_dead_letters(self) -> int:
        """Delete every dead letter; see ConveyorClient.purge_dead_letters."""
        return self._runner.run(self._async.purge_dead_letters())

    @property
    def _async(self) -> ConveyorClient:
        if self._client is None:
            raise ConveyorError("this SyncConveyorClient is closed")
        return self._client
