"""The task store, opened: one engine over the task database, and one query object per
concern that uses it.

The producer owns the database; consumers never open it. `TaskStore` only opens, tunes and
closes the engine: the queries are in the parts it holds (`submissions`, `records`,
`events`, `delays`, `cancellations`, `redeliveries`, `retention`, `stats`), each in its
own module, and each part of the service is handed the ones it needs.
"""

from __future__ import annotations

import time

import orjson
from sqlalchemy import event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from conveyor.producer.store.cancellations import Cancellations
from conveyor.producer.store.delays import Delays
from conveyor.producer.store.direct import PING_IDLE_S
from conveyor.producer.store.events import Events
from conveyor.producer.store.records import Records
from conveyor.producer.store.redeliveries import Redeliveries
from conveyor.producer.store.retention import Retention
from conveyor.producer.store.schema import (
    check_version,
    current_version,
    json_dumps,
    latest_version,
    migrate,
)
from conveyor.producer.store.stats import Stats
from conveyor.producer.store.submissions import Submissions


class TaskStore:
    """Task records in SQLite (aiosqlite) or PostgreSQL (asyncpg), through SQLAlchemy Core."""

    def __init__(self, engine: AsyncEngine, max_result_bytes: int) -> None:
        self.engine = engine
        self.submissions = Submissions(engine)
        self.records = Records(engine)
        self.events = Events(engine, max_result_bytes)
        self.delays = Delays(engine)
        self.cancellations = Cancellations(engine)
        self.redeliveries = Redeliveries(engine)
        self.retention = Retention(engine)
        self.stats = Stats(engine)

    @classmethod
    async def open(
        cls, url: str, max_result_bytes: int = 1_048_576, *, auto_migrate: bool = True
    ) -> TaskStore:
        """Connect to the database at `url` (async driver form) and migrate its schema;
        without `auto_migrate`, SchemaOutdated if it needs migrating."""
        engine = _engine(url)
        store = cls(engine, max_result_bytes)
        try:
            async with engine.begin() as connection:
                await (migrate(connection) if auto_migrate else check_version(connection))
        except BaseException:
            await engine.dispose()
            raise
        return store

    async def close(self) -> None:
        """Dispose of the engine, after the background work that may hold a connection."""
        await self.stats.close()
        await self.submissions.close()
        await self.events.close()
        await self.engine.dispose()


async def migrate_database(url: str) -> tuple[int, int]:
    """Bring the database at `url` to the schema this code needs (`conveyor migrate`):
    (the version it had, the version it has now)."""
    engine = _engine(url)
    try:
        async with engine.begin() as connection:
            before = await current_version(connection)
            await migrate(connection)
    finally:
        await engine.dispose()
    return before, latest_version()


async def schema_versions(url: str) -> tuple[int, int]:
    """(the database's schema version, the one this code needs), changing nothing."""
    engine = _engine(url)
    try:
        async with engine.connect() as connection:
            return await current_version(connection), latest_version()
    finally:
        await engine.dispose()


def _engine(url: str) -> AsyncEngine:
    engine = create_async_engine(url, json_serializer=json_dumps, json_deserializer=orjson.loads)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _tune_sqlite)
    else:
        # A server can drop idle connections; a SQLite file cannot.
        _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: AsyncEngine) -> None:
    """Check a pooled connection at checkout only if it sat idle for PING_IDLE_S or more.

    SQLAlchemy's pool_pre_ping checks every checkout, and on asyncpg its ping is three round
    trips (BEGIN, a query, ROLLBACK): more than the INSERT of a submission. A connection used
    a moment ago is alive as far as a ping can tell; one the server may have dropped while it
    sat in the pool is checked, and replaced if dead (the pool retries the checkout).
    """

    @event.listens_for(engine.sync_engine, "checkin")
    def _checked_in(_: DBAPIConnection, record: ConnectionPoolEntry) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checked_out(
        connection: DBAPIConnection, record: ConnectionPoolEntry, _: PoolProxiedConnection
    ) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_IDLE_S:
            return
        try:
            connection.ping()
        except Exception as error:
            raise DisconnectionError(f"pooled connection is dead: {error!r}") from error


def _tune_sqlite(connection: DBAPIConnection, _: ConnectionPoolEntry) -> None:
    """WAL lets readers run beside the writer; NORMAL sync is safe with WAL and much faster."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
