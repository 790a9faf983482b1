"""The consumer service: takes tasks from RabbitMQ, runs them, acks when done."""

from conveyor.consumer.main import serve
from conveyor.consumer.worker import Worker

__all__ = ["Worker", "serve"]
