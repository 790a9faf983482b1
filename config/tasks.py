"""Settings that change which tasks exist and how they reach the outside world."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from conveyor.config.base import ConveyorSettings, comma_separated

BUILTIN_TASKS_MODULE = "conveyor.builtin_tasks"


class TaskSettings(ConveyorSettings):
    """Which tasks exist, their default options, and the settings of the built-in tasks."""

    tasks: Annotated[list[str], NoDecode] = Field(
        default=[BUILTIN_TASKS_MODULE],
        min_length=1,
        description="Comma-separated modules whose @task functions this service serves "
        f"(e.g. myapp.tasks,billing.jobs); replaces the built-in {BUILTIN_TASKS_MODULE}.",
    )
    default_queue: str = Field(
        default="default",
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Work queue of tasks that name none (it must be in CONVEYOR_QUEUES).",
    )
    default_max_retries: int = Field(
        default=3, ge=0, le=100, description="Retries of tasks that set no max_retries."
    )
    default_timeout_s: float = Field(
        default=300.0, gt=0, le=86_400, description="Time limit of tasks that set no timeout_s."
    )

    test_tasks: bool = Field(
        default=False, description="Register test-only tasks (crash). Never in production."
    )
    max_result_bytes: int = Field(
        default=1_048_576,
        ge=1,
        description="A task whose result is larger (as JSON) fails with a clear error.",
    )
    smtp_url: SecretStr | None = Field(
        default=None,
        description="SMTP server of send_email: smtp://user:pass@host:port (smtps:// for TLS).",
    )

    @field_validator("tasks", mode="before")
    @classmethod
    def _split_modules(cls, value: object) -> object:
        return comma_separated(value)

    @field_validator("tasks")
    @classmethod
    def _check_module_paths(cls, modules: list[str]) -> list[str]:
        for module in modules:
            if not all(part.isidentifier() for part in module.split(".")):
                raise ValueError(f"{module!r} is not a module path like myapp.tasks")
        return modules

    @field_validator("smtp_url")
    @classmethod
    def _check_smtp_scheme(cls, url: SecretStr | None) -> SecretStr | None:
        if url is not None and not url.get_secret_value().startswith(("smtp://", "smtps://")):
            raise ValueError("the URL must start with smtp:// or smtps://")
        return url
