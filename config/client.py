"""Settings of the HTTP API's clients: the `conveyor` CLI commands and ConveyorClient."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from conveyor.config.base import ConveyorSettings


class ClientSettings(ConveyorSettings):
    """Where the producer's HTTP API is and how to authenticate to it."""

    api_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Base URL of the producer's HTTP API (http:// or https://).",
    )
    api_token: SecretStr | None = Field(
        default=None,
        description="Bearer token sent to the HTTP API, if it requires one; never printed.",
    )
    api_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Longest wait for one HTTP API reply (a long-poll adds its own wait to it).",
    )

    @field_validator("api_url")
    @classmethod
    def _check_api_scheme(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("the URL must start with http:// or https://")
        return url
