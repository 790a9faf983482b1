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
        "checks",  # the run-checks queue's name before it became a quorum queue
        "run-checks",
        "control",
        "scheduler-leader",
        "workers",  # the heartbeats queue's name before it became a quorum queue
        "heartbeats",
    }
)


def split_amqp_urls(value: str) -> list[str]:
    """The node URLs of a comma-separated `CONVEYOR_AMQP_URL` (blanks around commas and empty
    items dropped). A comma inside a password must be percent-encoded (`%2C`)."""
    return [url.strip() for url in value.split(",") if url.strip()]


class BrokerSettings(ConveyorSettings):
    """Connection and topology settings shared by the producer and the consumer."""

    amqp_url: SecretStr = Field(
        default=SecretStr("amqp://guest:guest@localhost:5672/"),
        description="AMQP URL of RabbitMQ (amqp:// or amqps://), or a comma-separated list of "
        "the URLs of a cluster's nodes; passwords are never logged.",
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
    # RabbitMQ refuses a queue re-declared with another value (or with none where one was
    # given): this is part of the work queues' arguments, the same in every service.
    quorum_initial_group_size: int = Field(
        default=3,
        ge=0,
        le=99,
        description="Replicas of each quorum work queue when it is created: this many cluster "
        "nodes, or every node of a smaller cluster; 0 leaves it to RabbitMQ (a replica on "
        "every node) and sends no argument; part of the work queues' arguments.",
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
        urls = split_amqp_urls(url.get_secret_value())
        if not urls:
            raise ValueError("give at least one URL (amqp:// or amqps://)")
        for number, one in enumerate(urls, 1):
            if not one.startswith(("amqp://", "amqps://")):
                where = f"URL {number} of {len(urls)}" if len(urls) > 1 else "the URL"
                raise ValueError(f"{where} must start with amqp:// or amqps://")
        return url

    def amqp_urls(self) -> list[str]:
        """Every node URL of `amqp_url`, in the order given (they hold passwords)."""
        return split_amqp_urls(self.amqp_url.get_secret_value())

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
