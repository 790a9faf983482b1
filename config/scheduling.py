"""Settings of cron schedules: where file-defined schedules live, and leader failover time."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from conveyor.config.base import ConveyorSettings


class SchedulingSettings(ConveyorSettings):
    """Schedules defined in a file, and how fast another replica takes over the scheduler."""

    schedules_file: Path | None = Field(
        default=None,
        description="Schedules to load at start: TOML, or YAML (.yaml/.yml); one table per "
        "schedule name with the fields of PUT /schedules/{name}.",
    )
    leader_timeout_s: float = Field(
        default=10.0,
        ge=1.0,
        le=3600.0,
        description="Longest time without a scheduler leader after the leader died: other "
        "replicas try to take over every third of it.",
    )
