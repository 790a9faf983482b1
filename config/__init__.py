"""Conveyor's settings: pydantic-settings classes read from CONVEYOR_* environment variables."""

from config.broker import BrokerSettings
from config.client import ClientSettings
from config.consumer import ConsumerSettings
from config.loader import EXIT_BAD_CONFIG, describe_error, load_settings, redact_text, redact_url
from config.logs import LogSettings
from config.producer import ProducerSettings
from config.runtime import RuntimeSettings
from config.scheduling import SchedulingSettings
from config.store import StoreSettings, async_database_url
from config.tasks import TaskSettings

__all__ = [
    "EXIT_BAD_CONFIG",
    "BrokerSettings",
    "ClientSettings",
    "ConsumerSettings",
    "LogSettings",
    "ProducerSettings",
    "RuntimeSettings",
    "SchedulingSettings",
    "StoreSettings",
    "TaskSettings",
    "async_database_url",
    "describe_error",
    "load_settings",
    "redact_text",
    "redact_url",
]
