"""Shared behaviour of every Conveyor settings class: env prefix, .env file, secret files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
)

ENV_PREFIX = "CONVEYOR_"
# Docker and Kubernetes mount secrets here; a file named like the variable holds its value.
DEFAULT_SECRETS_DIR = "/run/secrets"


class FileEnvSource(PydanticBaseSettingsSource):
    """Reads `CONVEYOR_<NAME>_FILE`: the value of a setting from a file (container secrets)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        path = os.environ.get(f"{ENV_PREFIX}{field_name.upper()}_FILE")
        if not path:
            return None, field_name, False
        return Path(path).read_text().strip(), field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for field_name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, field_name)
            if value is not None:
                values[key] = value
        return values


class ConveyorSettings(BaseSettings):
    """Base of all settings: `CONVEYOR_*` env vars > `*_FILE` files > `.env` > secrets dir.

    The secrets dir is `CONVEYOR_SECRETS_DIR` (default /run/secrets) and holds one file per
    setting, named like its variable (`CONVEYOR_AMQP_URL`, case-insensitive).
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = [init_settings, env_settings, FileEnvSource(settings_cls), dotenv_settings]
        secrets_dir = Path(os.environ.get(f"{ENV_PREFIX}SECRETS_DIR", DEFAULT_SECRETS_DIR))
        if secrets_dir.is_dir():  # pydantic-settings warns about a missing one
            sources.append(SecretsSettingsSource(settings_cls, secrets_dir=secrets_dir))
        return tuple(sources)


def comma_separated(value: object) -> object:
    """`a, b,,c` -> ["a", "b", "c"] for list settings given as one env string."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value
