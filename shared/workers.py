"""A consumer's heartbeat: who it is, what it runs, how it is doing.

Consumers publish one to `{ns}.heartbeats` when they start, every CONVEYOR_WORKER_HEARTBEAT_S,
and when they exit; the producers keep the latest of each in the worker registry.
"""

from __future__ import annotations

from typing import Literal

import orjson
from pydantic import BaseModel, Field

WorkerState = Literal["online", "offline", "lost"]
MISSED_HEARTBEATS_LOST = 3  # a worker silent for this many intervals is shown as lost


class WorkerIdentity(BaseModel):
    """Who a consumer is: the part of its heartbeat that never changes."""

    id: str
    hostname: str
    address: str | None = Field(
        default=None, description="The IP address the worker reaches the broker from."
    )
    pid: int
    cpu_count: int
    concurrency: int
    queues: list[str]
    tasks: list[str] = Field(default_factory=list, description="The tasks it serves.")
    version: str


class Heartbeat(WorkerIdentity):
    """What a consumer says about itself (times are epoch seconds of its own clock)."""

    started_at: float
    sent_at: float
    heartbeat_s: float = Field(gt=0)
    state: Literal["online", "offline"]
    running: list[str]
    processed: int = Field(description="Runs that ended here, any outcome.")
    failed: int = Field(description="Runs that ended here in an error (retried or failed).")

    def encode(self) -> bytes:
        return orjson.dumps(self.model_dump())

    @classmethod
    def decode(cls, body: bytes) -> Heartbeat:
        return cls.model_validate_json(body)
