"""Process runtime settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from config.base import ConveyorSettings


class RuntimeSettings(ConveyorSettings):
    """Which asyncio event loop runs the service."""

    event_loop: Literal["auto", "asyncio", "uvloop"] = Field(
        default="auto",
        description="auto: uvloop when installed (faster), else asyncio's own loop.",
    )
