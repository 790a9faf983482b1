"""Fixtures the unit tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conveyor.producer.store.database import TaskStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[TaskStore]:
    """A real task store in a fresh SQLite file."""
    opened = await TaskStore.open(f"sqlite+aiosqlite:///{tmp_path / 'tasks.db'}")
    yield opened
    await opened.close()
