"""Conveyor's exception tree: every error a caller may want to catch derives from ConveyorError,
defined here or, for an error of one module, next to it (e.g. TaskLoadError in task_loader.py,
the HTTP client's ApiError in conveyor/client_errors.py).

(Not quite everything raised: pydantic validators raise ValueError, as pydantic expects, and
internal retry loops pass on the TimeoutError or ConnectionError they retry on.)
"""

from __future__ import annotations

from collections.abc import Sequence


class ConveyorError(Exception):
    """Base of every error Conveyor raises on purpose."""


class SubmissionError(ConveyorError):
    """A task submission is invalid; `field` names the offending part (dotted path)."""

    def __init__(self, message: str, field: str, kind: str = "invalid") -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.kind = kind

    def prefix_fields(self, prefix: str) -> None:
        """Place the error inside a larger body (e.g. `tasks.3.` of a batch)."""
        self.field = prefix + self.field


class UnknownTask(SubmissionError):
    """No task of that name is in the catalog."""


class InvalidPayload(SubmissionError):
    """The payload does not fit the task's model; `errors` holds one entry per bad field."""

    def __init__(self, message: str, errors: list[tuple[str, str, str]]) -> None:
        field = errors[0][0] if errors else "payload"
        super().__init__(message, field)
        self.errors = errors

    @classmethod
    def of(cls, task: str, errors: list[tuple[str, str, str]]) -> InvalidPayload:
        """The error for task `task`'s payload, its message listing every bad field."""
        summary = "; ".join(f"{field}: {msg}" for field, msg, _ in errors)
        return cls(f"invalid payload for task {task!r}: {summary}", errors)

    def prefix_fields(self, prefix: str) -> None:
        super().prefix_fields(prefix)
        self.errors = [(prefix + field, msg, kind) for field, msg, kind in self.errors]


class UndecodableMessage(ConveyorError):
    """An AMQP message is not a Conveyor envelope; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BrokerUnavailable(ConveyorError):
    """RabbitMQ cannot be reached right now; try again later."""


class PublishFailed(ConveyorError):
    """The broker did not confirm a publish (nacked, returned or timed out)."""

    def __init__(self, task_id: str, reason: str) -> None:
        super().__init__(f"task {task_id} was not accepted by the broker: {reason}")
        self.task_id = task_id
        self.reason = reason


class PublishUnconfirmed(PublishFailed):
    """A publish that was sent but not confirmed (timed out, or the connection dropped before
    the confirm): the broker may still have it, e.g. queued behind a memory alarm. Its record
    is kept, so it runs at most once with a record whichever way it reaches the queue.
    `task_ids`: every task of the submission left in that state."""

    def __init__(self, task_id: str, reason: str, task_ids: Sequence[str] = ()) -> None:
        super().__init__(task_id, reason)
        self.task_ids = list(task_ids) or [task_id]


class TaskFailed(ConveyorError):
    """A handler reports that its task failed (e.g. the built-in `fail` task)."""


class NotConfigured(ConveyorError):
    """A task needs a setting that is missing (e.g. send_email without CONVEYOR_SMTP_URL)."""


class Conflict(ConveyorError):
    """The request contradicts the task's state (e.g. requeueing what is no task)."""


class StoreUnavailable(ConveyorError):
    """The task database cannot be reached right now; try again later."""


class TaskNotFound(ConveyorError):
    """No task has that id (never submitted, or purged after its retention time)."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"no task with id {task_id!r}")
        self.task_id = task_id


class InvalidResult(ConveyorError):
    """A handler returned something the store cannot keep: not JSON, or too large."""


class Retry(ConveyorError):
    """Raised by a handler: run this task again later (a control signal, not a failure).

    `delay_s` overrides the backoff; the attempt still counts against `max_retries`.
    """

    def __init__(self, message: str = "retry requested", delay_s: float | None = None) -> None:
        super().__init__(message)
        self.delay_s = delay_s


class PermanentFailure(ConveyorError):
    """Raised by a handler: this task can never succeed; fail it now, without retries."""


class TaskTimedOut(ConveyorError):
    """A task ran past its time limit and was stopped (`stopped` says how)."""

    def __init__(self, timeout_s: float, stopped: str = "its process was killed") -> None:
        super().__init__(f"task ran past its time limit of {timeout_s:g}s and {stopped}")
        self.timeout_s = timeout_s


class ChildMemoryExceeded(ConveyorError):
    """The child process of a sync task grew past CONVEYOR_MAX_CHILD_RSS_MB and was killed."""

    def __init__(self, rss_mb: float, limit_mb: float) -> None:
        super().__init__(
            f"the task's process grew to {rss_mb:.0f} MB of memory (RSS), past "
            f"CONVEYOR_MAX_CHILD_RSS_MB={limit_mb:g}, and was killed"
        )
        self.rss_mb = rss_mb
        self.limit_mb = limit_mb


class ChildDied(ConveyorError):
    """The child process of a sync task died mid-task (crash, os._exit, outside kill);
    `status` puts `exitcode` in words."""

    def __init__(self, exitcode: int | None, status: str) -> None:
        super().__init__(f"the task's process died mid-task ({status})")
        self.exitcode = exitcode


class ChildTaskFailed(TaskFailed):
    """A sync handler raised an exception that cannot cross back from its child process as
    itself (it does not survive pickling), so its type name, message and traceback do."""

    def __init__(self, type_name: str, message: str, child_traceback: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.child_traceback = child_traceback


class ScheduleNotFound(ConveyorError):
    """No schedule has that name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no schedule named {name!r}")
        self.name = name


class ScheduleFileError(ConveyorError):
    """The schedules file (CONVEYOR_SCHEDULES_FILE) cannot be read or defines a bad schedule."""


class SchemaOutdated(ConveyorError):
    """The task database's schema is older than this Conveyor needs, and migrating it was
    left to an operator (CONVEYOR_AUTO_MIGRATE=false)."""

    def __init__(self, current: int, required: int) -> None:
        super().__init__(
            f"the task database has schema version {current}, this Conveyor needs {required}: "
            "run `conveyor migrate` (CONVEYOR_AUTO_MIGRATE=false leaves it to you)"
        )
        self.current = current
        self.required = required
