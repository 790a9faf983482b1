"""Robust AMQP connections with heartbeats, named so operators can tell them apart."""

from __future__ import annotations

import logging

import aio_pika
from aio_pika.abc import AbstractRobustConnection

from conveyor.config import BrokerSettings, redact_url

log = logging.getLogger(__name__)


async def connect(settings: BrokerSettings, name: str) -> AbstractRobustConnection:
    """Connect to RabbitMQ, retrying until it answers; reconnects on its own afterwards.

    `fail_fast=False` keeps retrying the first connect as well, so a service started before
    its broker waits for it instead of exiting.
    """
    log.info("connecting to %s as %r", redact_url(settings.amqp_url), name)
    connection = await aio_pika.connect_robust(
        settings.amqp_url.get_secret_value(),
        heartbeat=settings.heartbeat_s,
        reconnect_interval=settings.reconnect_interval_s,
        fail_fast=False,
        client_properties={"connection_name": name},
    )
    log.info("connected to %s as %r", redact_url(settings.amqp_url), name)
    return connection
