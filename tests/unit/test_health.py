"""The liveness file: there while the service runs, gone after it stopped."""

from __future__ import annotations

import asyncio
from pathlib import Path

from conveyor.shared.health import AliveFile, is_alive


async def test_alive_file_is_fresh_while_running_and_removed_on_stop(tmp_path: Path) -> None:
    path = tmp_path / "alive"
    alive = AliveFile(path, every_s=0.01)
    alive.start()
    async with asyncio.timeout(5):
        while not path.exists():
            await asyncio.sleep(0.01)
    assert is_alive(path)
    await alive.stop()
    assert not path.exists()
    assert not is_alive(path)
    await alive.stop()  # again: nothing to do
