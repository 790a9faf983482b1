"""Conveyor's settings: pydantic-settings classes read from CONVEYOR_* environment variables."""

from conveyor.config.broker import BrokerSettings, split_amqp_urls
from conveyor.config.client import ClientSettings
from conveyor.config.consumer import ConsumerSettings
from conveyor.config.loader import (
    EXIT_BAD_CONFIG,
    describe_error,
    load_settings,
    redact_text,
    redact_url,
)
from conveyor.config.logs import LogSettings
from conveyor.config.producer import ProducerSettings
from conveyor.config.runtime import RuntimeSettings
from conveyor.config.scheduling import SchedulingSettings
from conveyor.config.store import StoreSettings, async_database_url
from conveyor.config.tasks import TaskSettings

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
    "split_amqp_urls",
]
