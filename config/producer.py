"""Settings of the producer service."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from conveyor.config.broker import BrokerSettings
from conveyor.config.logs import LogSettings
from conveyor.config.runtime import RuntimeSettings
from conveyor.config.scheduling import SchedulingSettings
from conveyor.config.store import StoreSettings
from conveyor.config.tasks import TaskSettings


class ProducerSettings(
    BrokerSettings, LogSettings, RuntimeSettings, TaskSettings, StoreSettings, SchedulingSettings
):
    """Everything the producer (HTTP API, publisher, task store) reads at start."""

    http_host: str = Field(default="0.0.0.0", description="Address the HTTP API listens on.")
    http_port: int = Field(default=8000, ge=1, le=65535, description="Port of the HTTP API.")
    http_protocol: Literal["auto", "httptools", "h11"] = Field(
        default="auto",
        description="uvicorn's HTTP/1.1 parser; auto: httptools when installed, else h11 "
        "(bench/http_single.py measured no clear difference, docs/benchmarks.md).",
    )
    publish_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="Longest wait for the broker's confirm before a publish fails (HTTP 503).",
    )
    confirm_window: int = Field(
        default=256,
        ge=1,
        le=10_000,
        description="Publishes awaiting the broker's confirm at once when publishing many tasks.",
    )
    max_batch_size: int = Field(
        default=1000, ge=1, le=100_000, description="Most tasks in one POST /tasks/batch."
    )
    broker_consumer_timeout_s: float = Field(
        default=1800.0,
        gt=0,
        description="The broker's consumer_timeout (RabbitMQ: 30 min by default): a task "
        "whose timeout_s does not fit under it is refused with 422.",
    )
    max_payload_bytes: int = Field(
        default=1_048_576,
        ge=1_024,
        description="Largest HTTP request body; a larger one is refused with 413.",
    )
    api_tokens: SecretStr | None = Field(
        default=None,
        description="Comma-separated API tokens; when set, every endpoint but /healthz, "
        "/readyz and the dashboard's page and files needs `Authorization: Bearer <token>`.",
    )
    rate_limit_per_s: float | None = Field(
        default=None,
        gt=0,
        description="Submissions (POST /tasks, POST /tasks/batch) a second per client, by API "
        "token or else address, with a burst of one second's worth; more get 429 with "
        "Retry-After. Unset: no limit.",
    )

    def api_token_list(self) -> list[str]:
        """The accepted API tokens (none: the API is open)."""
        if self.api_tokens is None:
            return []
        return [t.strip() for t in self.api_tokens.get_secret_value().split(",") if t.strip()]
