"""Where the producer keeps task records, and for how long."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from conveyor.config.base import ConveyorSettings

# Plain URL forms people paste, mapped to the async drivers SQLAlchemy needs.
_ASYNC_DRIVERS = {
    "sqlite://": "sqlite+aiosqlite://",
    "sqlite+aiosqlite://": "sqlite+aiosqlite://",
    "postgresql://": "postgresql+asyncpg://",
    "postgres://": "postgresql+asyncpg://",
    "postgresql+asyncpg://": "postgresql+asyncpg://",
}


def async_database_url(url: str) -> str:
    """`url` with the async driver SQLAlchemy needs (sqlite:// -> sqlite+aiosqlite://, ...)."""
    for plain, driver in _ASYNC_DRIVERS.items():
        if url.startswith(plain):
            return driver + url.removeprefix(plain)
    raise ValueError(
        "the URL must start with sqlite:// or postgresql:// "
        "(or their async forms sqlite+aiosqlite:// and postgresql+asyncpg://)"
    )


class StoreSettings(ConveyorSettings):
    """The task-record database and its retention."""

    database_url: SecretStr = Field(
        default=SecretStr("sqlite+aiosqlite:///conveyor.db"),
        description="Task records: SQLite (default, a file in the working directory) or "
        "PostgreSQL (postgresql://user:pass@host/db); its password is never logged.",
    )
    result_ttl_s: float = Field(
        default=7 * 86_400.0,
        gt=0,
        description="Finished task records older than this are deleted (default 7 days).",
    )
    auto_migrate: bool = Field(
        default=True,
        description="Migrate the task database's schema at start; false: refuse to start "
        "(exit 2) on an older schema, for operators who run `conveyor migrate` as a deploy step.",
    )
    outbox_resend_after_s: float = Field(
        default=30.0,
        gt=0,
        le=86_400,
        description="A record whose publish was never confirmed is published again after this.",
    )

    @field_validator("database_url")
    @classmethod
    def _use_async_driver(cls, url: SecretStr) -> SecretStr:
        return SecretStr(async_database_url(url.get_secret_value()))
