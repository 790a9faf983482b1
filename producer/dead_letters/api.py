"""HTTP routes of the dead letters: list, requeue one or all, purge."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel

from conveyor.producer.dead_letters.desk import DeadLetterDesk
from conveyor.producer.http.errors import error_responses
from conveyor.producer.store.records import Records
from conveyor.shared.errors import TaskNotFound
from conveyor.shared.records import DeadLetterPage, TaskRecord

MAX_LIST_LIMIT = 500


class Requeued(BaseModel):
    requeued: int
    skipped: int  # dead letters that are no task (undecodable): purge them


class Purged(BaseModel):
    purged: int


def dead_letter_routes(
    desk: Callable[[], DeadLetterDesk], records: Callable[[], Records]
) -> APIRouter:
    """Routes over the desk and records the producer service holds (503 until they exist)."""
    router = APIRouter(tags=["dead letters"])

    @router.get("/dead-letters", response_model=DeadLetterPage)
    async def list_dead_letters(
        limit: Annotated[int, Query(ge=1, description=f"At most {MAX_LIST_LIMIT}.")] = 50,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
    ) -> DeadLetterPage:
        """Dead letters, newest first, with why each landed there."""
        return await desk().letters.page(min(limit, MAX_LIST_LIMIT), cursor)

    @router.post("/dead-letters/requeue", response_model=Requeued)
    async def requeue_all() -> Requeued:
        """Publish every dead task again (each with a fresh retry budget)."""
        requeued, skipped = await desk().requeue_all()
        return Requeued(requeued=requeued, skipped=skipped)

    @router.post(
        "/dead-letters/{task_id}/requeue",
        response_model=TaskRecord,
        responses=error_responses(404, 409),
    )
    async def requeue_one(task_id: Annotated[str, Path(max_length=200)]) -> TaskRecord:
        """Publish one dead task again: same id, next attempt, a fresh retry budget."""
        await desk().requeue(task_id)
        record = await records().get(task_id)
        if record is None:  # a task published without a record (e.g. by another tool)
            raise TaskNotFound(task_id)
        return record

    @router.delete("/dead-letters", response_model=Purged)
    async def purge() -> Purged:
        """Delete every dead letter."""
        return Purged(purged=await desk().letters.purge())

    return router
