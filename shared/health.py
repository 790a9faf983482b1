"""Liveness for containers: services touch a file while their event loop runs.

`python -m shared.health` (the Dockerfile's HEALTHCHECK) exits 0 while the file is fresh.
One mechanism for both roles: a consumer has no HTTP port, and a hung event loop (the
failure that matters) stops touching the file.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from conveyor.config import RuntimeSettings, load_settings
from conveyor.shared.background import BackgroundLoop

log = logging.getLogger(__name__)

TOUCH_EVERY_S = 5.0
STALE_AFTER_S = 30.0


class AliveFile:
    """Touches `path` every `every_s` seconds from `start()`; `stop()` removes it."""

    def __init__(self, path: Path, every_s: float = TOUCH_EVERY_S) -> None:
        self._path = path
        self._touching = BackgroundLoop("conveyor-alive", self._touch, every_s=every_s, logger=log)

    def start(self) -> None:
        self._touching.start()

    async def stop(self) -> None:
        await self._touching.stop()
        self._path.unlink(missing_ok=True)

    async def _touch(self) -> None:
        self._path.touch()


def is_alive(path: Path, stale_after_s: float = STALE_AFTER_S) -> bool:
    try:
        return time.time() - path.stat().st_mtime < stale_after_s
    except FileNotFoundError:
        return False


if __name__ == "__main__":
    sys.exit(0 if is_alive(load_settings(RuntimeSettings).health_file) else 1)
