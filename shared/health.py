"""Liveness for containers: services touch a file while their event loop runs.

`python -m shared.health` (the Dockerfile's HEALTHCHECK) exits 0 while the file is fresh.
One mechanism for both roles: a consumer has no HTTP port, and a hung event loop (the
failure that matters) stops touching the file.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from conveyor.config import RuntimeSettings, load_settings

TOUCH_EVERY_S = 5.0
STALE_AFTER_S = 30.0


async def keep_alive(path: Path, every_s: float = TOUCH_EVERY_S) -> None:
    """Touch `path` every `every_s` seconds until cancelled; remove it on the way out."""
    try:
        while True:
            path.touch()
            await asyncio.sleep(every_s)
    finally:
        path.unlink(missing_ok=True)


def is_alive(path: Path, stale_after_s: float = STALE_AFTER_S) -> bool:
    try:
        return time.time() - path.stat().st_mtime < stale_after_s
    except FileNotFoundError:
        return False


if __name__ == "__main__":
    sys.exit(0 if is_alive(load_settings(RuntimeSettings).health_file) else 1)
