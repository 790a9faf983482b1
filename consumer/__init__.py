"""The consumer service: takes tasks from RabbitMQ, runs their handlers, acks when done."""

from conveyor.consumer.handlers import Handler, TaskContext, builtin_handlers
from conveyor.consumer.main import serve
from conveyor.consumer.worker import Worker

__all__ = ["Handler", "TaskContext", "Worker", "builtin_handlers", "serve"]
