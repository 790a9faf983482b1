"""The consumer service: takes tasks from RabbitMQ, runs their handlers, acks when done."""

from consumer.handlers import Handler, TaskContext, builtin_handlers
from consumer.main import serve
from consumer.worker import Worker

__all__ = ["Handler", "TaskContext", "Worker", "builtin_handlers", "serve"]
