"""Task ids: UUIDv7, so ids sort by creation time (handy in logs and the store)."""

from __future__ import annotations

import hashlib
import uuid

import uuid_utils


def is_task_id(text: str) -> bool:
    """Whether `text` is shaped like the ids Conveyor gives out (a canonical UUID)."""
    if len(text) != 36:
        return False
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def new_task_id() -> str:
    """A new, time-sortable task id."""
    return str(uuid_utils.uuid7())


def tick_task_id(schedule: str, tick_s: float) -> str:
    """The id of the task a schedule fires for the tick at `tick_s` (epoch seconds).

    Deterministic, so that two scheduler leaders firing the same tick produce the same id,
    and UUIDv7-shaped (48 bits of the tick's milliseconds, then hash bits of the schedule
    name and tick), so the ids sort by tick time beside those of submitted tasks.
    """
    tick_ms = round(tick_s * 1000)
    digest = hashlib.sha256(f"{schedule}\x00{tick_ms}".encode()).digest()
    value = bytearray(tick_ms.to_bytes(6, "big") + digest[:10])
    value[6] = 0x70 | (value[6] & 0x0F)  # version 7
    value[8] = 0x80 | (value[8] & 0x3F)  # RFC 9562 variant
    return str(uuid.UUID(bytes=bytes(value)))
