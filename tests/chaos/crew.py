"""A crew of consumer processes that a test kills at random and replaces."""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import Callable
from typing import Any

from tests.support import ServiceProcess


class ConsumerCrew:
    """`size` consumers started with `settings`; `kill_one()` SIGKILLs a random one and
    starts its replacement at once (a supervisor restarting it)."""

    def __init__(
        self,
        start: Callable[..., ServiceProcess],
        size: int,
        rng: random.Random,
        **settings: Any,
    ) -> None:
        self._start = start
        self._rng = rng
        self._settings = settings
        self.members = [start("consumer", **settings) for _ in range(size)]
        self.kills = 0
        self.crashes: list[str] = []  # members that exited on their own: exit code, log tail

    def replace_crashed(self) -> None:
        """Start a replacement for every member that exited on its own, as a supervisor
        would; what each one said last is kept in `crashes`."""
        for index, member in enumerate(self.members):
            if member.proc.poll() is not None:
                self.crashes.append(f"exit code {member.proc.returncode}:\n{member.log()[-3000:]}")
                self.members[index] = self._start("consumer", **self._settings)

    async def kill_one(self) -> None:
        self.replace_crashed()
        index = self._rng.randrange(len(self.members))
        victim = self.members[index]
        victim.signal(signal.SIGKILL)
        assert await victim.wait(10) == -signal.SIGKILL
        self.members[index] = self._start("consumer", **self._settings)
        self.kills += 1

    async def kill_every(self, interval_s: float, until: Callable[[], bool]) -> None:
        """Kill a random member every `interval_s` until `until()` holds (the scenario's
        pace, not a wait for a condition); crashed members are replaced meanwhile."""
        loop = asyncio.get_running_loop()
        while not until():
            next_kill = loop.time() + interval_s
            while loop.time() < next_kill and not until():
                self.replace_crashed()
                await asyncio.sleep(0.05)
            if not until():
                await self.kill_one()

    def alive(self) -> int:
        return sum(1 for member in self.members if member.proc.poll() is None)
