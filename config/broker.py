"""How to reach RabbitMQ and how Conveyor's topology is shaped there."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from conveyor.config.base import ConveyorSettings, comma_separated

# Names Conveyor itself uses beside the work queues ({namespace}.dead and the exchanges).
RESERVED_QUEUE_NAMES = frozenset(
    {
        "tasks",
        "dlx",
        "dead",
        "events",
        "recorder",
        "finished",
        "checks",
        "control",
        "scheduler-leader",
        "workers",
    }
)


class BrokerSettings(ConveyorSettings):
    """Connection and topology settings shared by the producer and the consumer."""

    amqp_url: SecretStr = Field(
        default=SecretStr("amqp://guest:guest@localhost:5672/"),
        description="AMQP URL of RabbitMQ (amqp:// or amqps://); its password is never logged.",
    )
    namespace: str = Field(
        default="conveyor",
        pattern=r"^[A-Za-z0-9_.-]{1,100}$",
        description="Prefix of every exchange and queue name.",
    )
    # Quorum queues are RabbitMQ's recommended durable, replicated queue type: they survive
    # node loss, count deliveries (crash-loop protection) and never lose confirmed messages.
    queue_type: Literal["quorum", "classic"] = Field(
        default="quorum", description="Type of the work queues: quorum or classic."
    )
    queues: Annotated[list[str], NoDecode] = Field(
        default=["default"],
        min_length=1,
        description="Comma-separated work queues: the producer declares, consumers serve.",
    )
    max_deliveries: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="A task redelivered more often (e.g. it crashes its consumer) is "
        "dead-lettered instead of crash-looping; part of the work queues' arguments.",
    )
    max_queue_length: int | None = Field(
        default=None,
        ge=1,
        description="Bound on each work queue; when full, publishes are refused (HTTP 503) "
        "instead of growing broker memory; part of the work queues' arguments.",
    )
    heartbeat_s: int = Field(
        default=10, ge=1, le=600, description="AMQP heartbeat interval in seconds."
    )
    reconnect_interval_s: float = Field(
        default=1.0, gt=0, le=60, description="Pause between reconnect attempts."
    )

    @field_validator("amqp_url")
    @classmethod
    def _check_amqp_scheme(cls, url: SecretStr) -> SecretStr:
        # The message never repeats the URL: it may hold a password.
        if not url.get_secret_value().startswith(("amqp://", "amqps://")):
            raise ValueError("the URL must start with amqp:// or amqps://")
        return url

    @field_validator("queues", mode="before")
    @classmethod
    def _split_queues(cls, value: object) -> object:
        return comma_separated(value)

    @field_validator("queues")
    @classmethod
    def _check_queue_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not name.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"queue name {name!r} may hold only letters, digits, _ and -")
            if name in RESERVED_QUEUE_NAMES:
                raise ValueError(f"queue name {name!r} is reserved")
        return names
