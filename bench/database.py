"""The task-record database of one event loop's measurements, and how the bench reads it.

Every loop gets a fresh database (a SQLite file in a temporary directory, or a PostgreSQL
database named bench_*), so both loops start from an empty table and nothing is left behind.
The bench sees that the store caught up by counting `succeeded` rows: the one query it runs
on the producer's table, through the in-process service's own engine.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from bench.common import StoreKind
from conveyor.config.store import async_database_url
from conveyor.producer.store.database import TaskStore
from conveyor.producer.store.schema import tasks
from conveyor.shared.records import TaskStatus

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
_DATABASE_NAME = re.compile(r"^bench_[a-z0-9_]{1,50}$")


def database_name(namespace: str, loop: str) -> str:
    """`bench_<run id>_<loop>`: the only PostgreSQL databases the bench creates or drops."""
    name = f"bench_{namespace.removeprefix('bench-')}_{loop}".replace("-", "_").lower()
    if not _DATABASE_NAME.match(name):
        raise ValueError(f"unexpected bench database name {name!r}")
    return name


def _with_database(url: str, name: str) -> str:
    """`url` (a PostgreSQL server URL) pointing at database `name` instead."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


async def _admin(postgres_url: str, statement: str) -> None:
    """Run one statement outside a transaction (CREATE/DROP DATABASE refuse to run in one)."""
    engine = create_async_engine(async_database_url(postgres_url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


async def drop_postgres(postgres_url: str, name: str) -> None:
    """Drop database `name` if it exists (FORCE: a killed child may still hold a session)."""
    if not _DATABASE_NAME.match(name):
        raise ValueError(f"refusing to drop {name!r}: not a bench database")
    await _admin(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def run_database(kind: StoreKind, postgres_url: str, name: str) -> AsyncIterator[str]:
    """A fresh, empty database; yields its URL (plain form, for settings and children alike).

    Removed on exit, also on errors: the SQLite directory, or the PostgreSQL database.
    """
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix=f"{name}-") as directory:
            yield f"sqlite:///{directory}/tasks.db"
        return
    await drop_postgres(postgres_url, name)
    await _admin(postgres_url, f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(postgres_url, name)
    finally:
        await drop_postgres(postgres_url, name)


async def count_succeeded(store: TaskStore) -> int:
    """How many records are `succeeded` (an index-only count on (status, id))."""
    query = (
        select(func.count()).select_from(tasks).where(tasks.c.status == TaskStatus.SUCCEEDED.value)
    )
    async with store.engine.connect() as connection:
        return int((await connection.execute(query)).scalar_one())
