"""Settings that change which tasks exist and how they reach the outside world."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from conveyor.config.base import ConveyorSettings


class TaskSettings(ConveyorSettings):
    """Task catalog switches and the settings of the built-in tasks."""

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

    @field_validator("smtp_url")
    @classmethod
    def _check_smtp_scheme(cls, url: SecretStr | None) -> SecretStr | None:
        if url is not None and not url.get_secret_value().startswith(("smtp://", "smtps://")):
            raise ValueError("the URL must start with smtp:// or smtps://")
        return url
