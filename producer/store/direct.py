"""One asyncpg connection of its own, for the statements on every submission's path.

Through SQLAlchemy, a submission's INSERT cost twice the work of the statement itself: a pool
checkout and return (each with its own bookkeeping), statement compilation, then asyncpg.
Measured on this machine (single-row INSERT, uvloop): 0.65 ms wall and 0.29 ms CPU through
the engine's pool, 0.34 ms and 0.08 ms on a connection kept open. The published marks'
UPDATE, with its list of ids expanded into bind parameters, cost more still.

Group commit (producer/submission/group_commit.py) writes one group at a time and the marks
go out one batch at a time, so one connection each carries them all: opened as the engine
opens its own, replaced when it breaks. A lock keeps a batch submission from sharing the
INSERT connection with a group mid-statement. The Recorder's event updates, one batch at a
time too, have one of their own (producer/store/events.py). Every other query stays with
SQLAlchemy.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from conveyor.shared.errors import StoreUnavailable

# Options of SQLAlchemy's asyncpg adapter, not of asyncpg.connect.
_ENGINE_ONLY = ("prepared_statement_cache_size", "prepared_statement_name_func", "async_creator_fn")
CLOSE_TIMEOUT_S = 5.0
# A connection idle this long is pinged before use: the server (or a proxy) may have dropped
# it meanwhile. The engine's pool does the same (producer/store/database.py).
PING_IDLE_S = 1.0


class DirectConnection:
    """Runs statements one at a time on its own connection to the engine's database."""

    def __init__(self, engine: AsyncEngine) -> None:
        # The engine's own translation of its URL (host, credentials, SSL, timeouts) into
        # asyncpg.connect arguments, so this connection goes where the pool's go.
        args, kwargs = engine.dialect.create_connect_args(engine.url)
        for option in _ENGINE_ONLY:
            kwargs.pop(option, None)
        self._args, self._kwargs = list(args), dict(kwargs)
        self._connection: asyncpg.Connection | None = None
        self._used_at = 0.0
        self._lock = asyncio.Lock()

    async def execute(self, statement: str, *args: Any) -> None:
        """One statement, as its own transaction."""
        async with self._using() as connection:
            await connection.execute(statement, *args)

    async def executemany(self, statement: str, values: Iterable[tuple[Any, ...]]) -> None:
        """One statement for each of `values`, all in one implicit transaction (asyncpg makes
        an executemany outside a transaction atomic): all rows are written, or none."""
        async with self._using() as connection:
            await connection.executemany(statement, values)

    async def close(self) -> None:
        async with self._lock:
            if self._connection is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._connection.close(), CLOSE_TIMEOUT_S)
                self._connection = None

    @contextlib.asynccontextmanager
    async def _using(self) -> AsyncIterator[asyncpg.Connection]:
        """The connection, one statement at a time. Database errors surface as
        StoreUnavailable, as the engine's do (the API answers 503), but for those the caller
        settles: a duplicate key, a lost race (deadlock, serialization failure)."""
        async with self._lock:
            try:
                connection = await self._open()
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                raise StoreUnavailable(f"cannot connect to the task database: {error!r}") from error
            try:
                yield connection
                self._used_at = time.monotonic()
            except (asyncpg.UniqueViolationError, asyncpg.TransactionRollbackError):
                raise
            except BaseException as error:
                if not _leaves_it_usable(connection, error):
                    # Broken, or cancelled mid-statement: the next statement gets a fresh one.
                    self._connection = None
                    connection.terminate()
                if isinstance(error, Exception):
                    raise StoreUnavailable(f"task database error: {error!r}") from error
                raise

    async def _open(self) -> asyncpg.Connection:
        """The connection, alive as far as a ping can tell; a new one if it was not."""
        connection = self._connection
        if connection is not None and not connection.is_closed():
            if time.monotonic() - self._used_at < PING_IDLE_S:
                return connection
            try:
                await connection.execute("SELECT 1")
                return connection
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                connection.terminate()
        self._connection = None
        self._connection = await asyncpg.connect(*self._args, **self._kwargs)
        return self._connection


def _leaves_it_usable(connection: asyncpg.Connection, error: BaseException) -> bool:
    """A statement the server refused (bad data, say) leaves the connection as it was."""
    return (
        isinstance(error, asyncpg.PostgresError)
        and not isinstance(error, asyncpg.PostgresConnectionError)
        and not connection.is_closed()
    )
