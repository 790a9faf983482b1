"""Logging settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from conveyor.config.base import ConveyorSettings


class LogSettings(ConveyorSettings):
    """Log level and format."""

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", description="Minimum level of log lines."
    )
    log_format: Literal["json", "console"] = Field(
        default="console", description="json: one JSON object a line; console: readable lines."
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value
