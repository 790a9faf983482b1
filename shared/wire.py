"""The wire contract between the services: every AMQP header name, the dead-letter reasons,
and the control, cancellation, run-check and dead-letter messages, each encoded and decoded
here and nowhere else.

Deployed producers and consumers of other versions read and write these same bytes, so they
change only in ways every deployed reader accepts (tests/unit/test_wire.py pins them). The
task message itself is `envelope.py` (which takes its header names from here), status events
are `events.py`, a consumer's heartbeat is `workers.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Self, TypeGuard

import orjson

from conveyor.shared.errors import UndecodableMessage

# Headers of a task message (see envelope.py).
HEADER_TASK = "x-conveyor-task"
HEADER_ATTEMPT = "x-conveyor-attempt"
HEADER_VERSION = "x-conveyor-version"
HEADER_MAX_RETRIES = "x-conveyor-max-retries"
HEADER_TIMEOUT_S = "x-conveyor-timeout-s"
HEADER_REQUEST_ID = "x-request-id"
HEADER_RESENT = "x-conveyor-resent"
HEADER_RUNS = "x-conveyor-runs"
HEADER_RETRY_BASE = "x-conveyor-retry-base"
HEADER_QUEUED_AT = "x-conveyor-queued-at"
# Headers a consumer adds to the copy of a message it dead-letters (see DeadLetterNote).
HEADER_REASON = "x-conveyor-reason"
HEADER_ERROR = "x-conveyor-error"
HEADER_DEAD_AT = "x-conveyor-dead-lettered-at"
HEADER_SOURCE_QUEUE = "x-conveyor-queue"
# Headers RabbitMQ sets: deliveries of a quorum queue's message, and why it was dead-lettered.
HEADER_DELIVERY_COUNT = "x-delivery-count"
HEADER_DEATHS = "x-death"

CONVEYOR_HEADER_PREFIX = "x-conveyor-"
# The headers that say why a message is dead, not what task it is: dropped on a requeue.
DEAD_LETTER_HEADERS = frozenset({HEADER_REASON, HEADER_ERROR, HEADER_DEAD_AT, HEADER_SOURCE_QUEUE})
MAX_ERROR_CHARS = 2000  # of a dead letter's error header


def is_conveyor_header(name: str) -> bool:
    """Whether Conveyor wrote header `name` (the ones a dead letter keeps for a requeue)."""
    return name.startswith(CONVEYOR_HEADER_PREFIX) or name == HEADER_REQUEST_ID


class DeadLetterReason(StrEnum):
    """Why a message is in the dead-letter queue (header `x-conveyor-reason`).

    A message the broker dead-lettered carries none; its x-death entry's reason stands in
    (`delivery_limit` for a crash loop, or RabbitMQ's own `rejected`, `expired`, `maxlen`).
    """

    UNDECODABLE = "undecodable"  # not a Conveyor envelope
    UNKNOWN_TASK = "unknown_task"  # no such task in the consumer's catalog
    INVALID_PAYLOAD = "invalid_payload"  # the payload does not fit the task's model
    FAILED = "failed"  # the handler failed for good (no retry left, or permanent)
    DELIVERY_LIMIT = "delivery_limit"  # delivered too often without finishing
    UNKNOWN = "unknown"  # neither the header nor the broker says


@dataclass(frozen=True, slots=True)
class DeadLetterNote:
    """Why a message is dead, in the headers of its copy in the dead-letter queue.

    `reason` is a DeadLetterReason, or a broker's x-death reason for a message no consumer
    dead-lettered: a plain `str`, since RabbitMQ may add reasons.
    """

    reason: str
    error: str = ""
    queue: str | None = None  # the work queue it came from
    dead_at: float | None = None  # epoch seconds, from the dead-lettering consumer's clock

    def encode(self) -> dict[str, Any]:
        """The headers to add to the dead-lettered copy (the error cut to MAX_ERROR_CHARS)."""
        headers: dict[str, Any] = {
            HEADER_REASON: str(self.reason),
            HEADER_ERROR: self.error[:MAX_ERROR_CHARS],
        }
        if self.dead_at is not None:
            headers[HEADER_DEAD_AT] = self.dead_at
        if self.queue is not None:
            headers[HEADER_SOURCE_QUEUE] = self.queue
        return headers

    @classmethod
    def decode(cls, headers: Mapping[str, Any]) -> DeadLetterNote:
        """The note in a dead letter's `headers`, the broker's x-death filling in for a
        message no consumer dead-lettered. Never raises: whatever reaches the dead-letter
        queue must be kept, so a missing or mistyped header reads as unknown."""
        death = _newest_death(headers)
        dead_at = headers.get(HEADER_DEAD_AT)
        return cls(
            reason=(
                lenient_text(headers.get(HEADER_REASON))
                or lenient_text(death.get("reason"))
                or DeadLetterReason.UNKNOWN
            ),
            error=lenient_text(headers.get(HEADER_ERROR)),
            queue=(
                lenient_text(headers.get(HEADER_SOURCE_QUEUE))
                or lenient_text(death.get("queue"))
                or None
            ),
            dead_at=float(dead_at) if _is_number(dead_at) else None,
        )


@dataclass(frozen=True, slots=True)
class _TaskIds:
    """A message that lists task ids under one key of a JSON object."""

    task_ids: tuple[str, ...]
    _key: ClassVar[str]
    _what: ClassVar[str]  # what the message is, for the errors of decode

    def encode(self) -> bytes:
        return orjson.dumps({self._key: list(self.task_ids)})

    @classmethod
    def decode(cls, body: bytes) -> Self:
        ids = _json_object(body, cls._what).get(cls._key)
        if not isinstance(ids, list):
            raise UndecodableMessage(f"{cls._what} has no list {cls._key!r}: {ids!r}")
        return cls(tuple(str(task_id) for task_id in ids))


@dataclass(frozen=True, slots=True)
class CancelNotice(_TaskIds):
    """Tasks cancelled just now, told to every consumer on the `{ns}.control` fanout."""

    _key = "cancel"
    _what = "control message"


@dataclass(frozen=True, slots=True)
class RunCheckRequest:
    """A consumer asks `{ns}.run-checks` whether a task that may have run before should run."""

    task_id: str
    redelivered: bool  # the broker redelivered it (counts against the delivery limit)

    def encode(self) -> bytes:
        return orjson.dumps({"task_id": self.task_id, "redelivered": self.redelivered})


@dataclass(frozen=True, slots=True)
class CancelledSinceRequest:
    """A consumer starting up asks `{ns}.run-checks` for the tasks cancelled since `since`."""

    since: float  # epoch seconds

    def encode(self) -> bytes:
        return orjson.dumps({"cancelled_since": self.since})


def decode_check_request(body: bytes) -> RunCheckRequest | CancelledSinceRequest:
    """One of the two requests that share `{ns}.run-checks`, or UndecodableMessage."""
    data = _json_object(body, "run check")
    if "cancelled_since" in data:
        since = data["cancelled_since"]
        if not _is_number(since):
            raise UndecodableMessage(f"run check 'cancelled_since' is not a number: {since!r}")
        return CancelledSinceRequest(float(since))
    task_id = data.get("task_id")
    if not isinstance(task_id, str):
        raise UndecodableMessage(f"run check has no string 'task_id': {task_id!r}")
    return RunCheckRequest(task_id, data.get("redelivered") is True)


@dataclass(frozen=True, slots=True)
class RunCheckReply:
    """The producers' answer to a RunCheckRequest: run it, or why not."""

    task_id: str
    run: bool
    # The task's status when it must not run; a plain `str`, not a TaskStatus: a producer
    # of a later version may know statuses this one does not.
    status: str | None = None
    dead_letter: bool = False  # redelivered more than CONVEYOR_MAX_DELIVERIES times

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "task_id": self.task_id,
                "run": self.run,
                "status": self.status,
                "dead_letter": self.dead_letter,
            }
        )

    @classmethod
    def decode(cls, body: bytes) -> RunCheckReply:
        """The reply in `body`; anything but an explicit `"run": false` means run it."""
        data = _json_object(body, "run check reply")
        status = data.get("status")
        return cls(
            task_id=str(data.get("task_id", "")),
            run=data.get("run", True) is not False,
            status=str(status) if status else None,
            dead_letter=data.get("dead_letter") is True,
        )


@dataclass(frozen=True, slots=True)
class CancelledSinceReply(_TaskIds):
    """The producers' answer to a CancelledSinceRequest."""

    _key = "cancelled"
    _what = "cancellations reply"


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise UndecodableMessage(f"{what} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise UndecodableMessage(f"{what} is JSON {type(data).__name__}, not an object")
    return data


def _newest_death(headers: Mapping[str, Any]) -> Mapping[str, Any]:
    """The newest x-death entry the broker added (e.g. reason delivery_limit)."""
    deaths = headers.get(HEADER_DEATHS)
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        return deaths[0]
    return {}


def lenient_text(value: Any) -> str:
    """A text header's value; "" when missing or not text (for dead letters, kept whatever
    they carry)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else ""


def lenient_int(value: object) -> int:
    """An integer header's value; 0 when missing or not an integer."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)
