"""The application's own tasks: one sync (CPU work, a child process) and one async."""

from __future__ import annotations

import hashlib
import logging

from pydantic import BaseModel, Field

from conveyor import PermanentFailure, TaskContext, task

log = logging.getLogger(__name__)


class Resize(BaseModel):
    url: str = Field(min_length=1, max_length=2_000)
    width: int = Field(gt=0, le=10_000)


@task(queue="default", max_retries=5, timeout_s=120)
def resize_image(payload: Resize, ctx: TaskContext) -> dict[str, object]:
    """Makes a thumbnail (here: a digest standing in for the pixels). A plain def: Conveyor
    runs it in a child process, so the consumer's event loop stays free."""
    if payload.url.startswith("forbidden:"):
        raise PermanentFailure(f"will not fetch {payload.url}")
    digest = hashlib.sha256(f"{payload.url}@{payload.width}".encode()).hexdigest()
    log.info("resized %s to width %d", payload.url, payload.width)
    return {"url": payload.url, "width": payload.width, "digest": digest[:16], "task": ctx.task_id}


@task
async def notify(user_id: int, message: str = "your thumbnail is ready") -> dict[str, object]:
    """Tells a user something (typed parameters: Conveyor derives the payload model)."""
    return {"user_id": user_id, "message": message}
