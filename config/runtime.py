"""Process runtime settings."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from conveyor.config.base import ConveyorSettings


class RuntimeSettings(ConveyorSettings):
    """Which asyncio event loop runs the service, and where it shows it is alive."""

    event_loop: Literal["auto", "asyncio", "uvloop"] = Field(
        default="auto",
        description="auto: uvloop when installed (faster), else asyncio's own loop.",
    )
    health_file: Path = Field(
        default=Path("/tmp/conveyor-alive"),
        description="Touched every 5 s while the service runs; the container HEALTHCHECK reads it.",
    )
