"""Test-only tasks, loaded beside CONVEYOR_TASKS when CONVEYOR_TEST_TASKS=true. Never in
production: `crash` kills the consumer that runs it."""

from __future__ import annotations

import os

from pydantic import Field

from conveyor.builtin_tasks import StrictPayload
from conveyor.shared.tasks import task


class CrashPayload(StrictPayload):
    exit_code: int = Field(default=1, ge=0, le=255)


@task(max_retries=0, description="Kills its consumer (os._exit).")
async def crash(payload: CrashPayload) -> None:
    """Kill the whole consumer process, unacked task and all (crash-loop tests only)."""
    os._exit(payload.exit_code)
