"""Facts about one delivery: which run of its task it is, how to settle it, what to report
when its handler raised."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Awaitable

from aio_pika.abc import AbstractIncomingMessage

from conveyor.shared.envelope import TaskMessage
from conveyor.shared.wire import HEADER_DELIVERY_COUNT

log = logging.getLogger(__name__)


async def settle(action: Awaitable[None], message: AbstractIncomingMessage) -> bool:
    """Await an ack/nack/reject; a dead channel means the broker will redeliver. True if sent."""
    try:
        await action
    except Exception as error:
        log.warning(
            "could not settle message %s (%r); broker will redeliver", message.message_id, error
        )
        return False
    return True


def run_number_of(message: AbstractIncomingMessage, task: TaskMessage) -> int:
    """Which start of its task this delivery is: the starts of earlier attempts, plus this
    message's deliveries (quorum queues count earlier ones in `x-delivery-count`; classic
    queues only say whether it was delivered before)."""
    count = (message.headers or {}).get(HEADER_DELIVERY_COUNT)
    if isinstance(count, int) and not isinstance(count, bool):
        return task.runs_before + count + 1
    return task.runs_before + (2 if message.redelivered else 1)


def why(task: TaskMessage) -> str:
    return "published again by the outbox" if task.resent else "redelivered"


TRACEBACK_CHARS = 2_000


def error_info(error: Exception) -> dict[str, str]:
    """What a failed event carries: type, message and the end of the traceback."""
    text = "".join(traceback.format_exception(error))
    return {
        "type": type(error).__name__,
        "message": str(error),
        "traceback": text[-TRACEBACK_CHARS:],
    }
