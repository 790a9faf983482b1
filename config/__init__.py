"""Conveyor's settings: pydantic-settings classes read from CONVEYOR_* environment variables."""

from config.broker import BrokerSettings
from config.consumer import ConsumerSettings
from config.loader import EXIT_BAD_CONFIG, describe_error, load_settings, redact_url
from config.logs import LogSettings
from config.producer import ProducerSettings
from config.runtime import RuntimeSettings
from config.tasks import TaskSettings

__all__ = [
    "EXIT_BAD_CONFIG",
    "BrokerSettings",
    "ConsumerSettings",
    "LogSettings",
    "ProducerSettings",
    "RuntimeSettings",
    "TaskSettings",
    "describe_error",
    "load_settings",
    "redact_url",
]
