"""Task ids: UUIDv7, so ids sort by creation time (handy in logs and the store)."""

from __future__ import annotations

import uuid_utils


def new_task_id() -> str:
    """A new, time-sortable task id."""
    return str(uuid_utils.uuid7())
