"""The index on a PostgreSQL server, for archives served by several processes or machines.

Selected by a URL (``postgresql://user@host:port/db``, libpq's syntax, so ``?host=/socket``
and ``PGPASSWORD`` work as usual). The driver is psycopg 3, used synchronously from worker
threads with a ``psycopg_pool`` connection pool: its async API runs only on asyncio (asyncpg
too), and dicomio runs on trio as well; see docs/archive.md for the measurements.

Schema versions live in the table ``dicomio_schema``; ``MIGRATIONS[n - 1]`` brings version
n - 1 to n, in one transaction, under an advisory lock so that two archives starting at once
do not both migrate. Text columns use the C collation: ordering and LIKE then agree with
SQLite's byte comparison, and the indexes serve prefix matches.

Writes run at READ COMMITTED. One store holds a session advisory lock on its SOP Instance
UID from before its rows are written until its former file (if any) is removed, so two
machines storing one instance at once take turns (``dicomio.apps.index._base``). Concurrent
stores into one study or series can still deadlock (a replaced instance's former parents
are pruned) or trip a foreign key on a parent pruned meanwhile; those transactions are run
again, as is a serialization failure.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import psycopg.errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool

from dicomio.apps.index._base import Index, SchemaTooNew
from dicomio.apps.index._sql import POSTGRES

__all__ = ["MIGRATIONS", "POOL_SIZE", "PostgresIndex"]

log = logging.getLogger("dicomio.apps.archive")

#: Connections kept by one archive process: queries and stores beyond it wait for one.
POOL_SIZE = 10
#: Seconds to wait for a connection (from the pool, or for the server to answer) before a
#: store is refused with "Out of Resources" or a query fails.
CONNECT_TIMEOUT = 30
#: Key of the advisory lock taken while migrating (any constant unlikely to be used by others).
_MIGRATION_LOCK = 0x6469636F6D696F  # "dicomio"

_T = 'TEXT COLLATE "C" NOT NULL'

MIGRATIONS: tuple[str, ...] = (
    # 1: studies (with the patient attributes stored with each), series, instances; the same
    # tables as SQLite's version 1.
    f"""
    CREATE TABLE studies (
        study_uid {_T} PRIMARY KEY,
        patient_id {_T},
        study_date {_T} DEFAULT '',
        study_time {_T} DEFAULT '',
        accession_number {_T} DEFAULT '',
        study_id {_T} DEFAULT '',
        description {_T} DEFAULT '',
        referring_physician {_T} DEFAULT '',
        patient_key {_T} DEFAULT '',
        patient_name {_T} DEFAULT '',
        birth_date {_T} DEFAULT '',
        sex {_T} DEFAULT ''
    );
    CREATE INDEX studies_patient_key ON studies(patient_key);
    CREATE TABLE series (
        series_uid {_T} PRIMARY KEY,
        study_uid {_T} REFERENCES studies(study_uid),
        modality {_T} DEFAULT '',
        series_number {_T} DEFAULT '',
        description {_T} DEFAULT ''
    );
    CREATE INDEX series_study ON series(study_uid);
    CREATE TABLE instances (
        sop_uid {_T} PRIMARY KEY,
        series_uid {_T} REFERENCES series(series_uid),
        sop_class_uid {_T},
        instance_number {_T} DEFAULT '',
        transfer_syntax {_T},
        path {_T},
        size BIGINT NOT NULL
    );
    CREATE INDEX instances_series ON instances(series_uid);
    CREATE UNIQUE INDEX instances_path ON instances(path);
    """,
)
VERSION = len(MIGRATIONS)

#: SQLSTATEs after which a store's transaction is run again: serialization_failure,
#: deadlock_detected, foreign_key_violation (a parent pruned by a concurrent replacement).
_RETRY = (
    psycopg.errors.SerializationFailure,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.ForeignKeyViolation,
)


def redacted(url: str) -> str:
    """``url`` without its password, for messages."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        return "postgresql://?"
    params.pop("password", None)
    return make_conninfo("", **{k: v for k, v in params.items() if v is not None})


class PostgresIndex(Index):
    """The index in the PostgreSQL database at ``url``."""

    dialect = POSTGRES
    errors = (psycopg.Error, TimeoutError)

    def __init__(self, url: str, *, pool_size: int = POOL_SIZE) -> None:
        self.url = url
        self.location = redacted(url)
        self.pool_size = pool_size
        self._pool: ConnectionPool[psycopg.Connection[Any]] | None = None
        self._pool_lock = threading.Lock()

    def open(self) -> None:
        self._connections()

    def _connections(self) -> ConnectionPool[psycopg.Connection[Any]]:
        pool = self._pool
        if pool is not None:
            return pool
        with self._pool_lock:
            if self._pool is not None:  # another thread opened it meanwhile
                return self._pool
            pool = ConnectionPool(
                self.url,
                min_size=1,
                max_size=self.pool_size,
                kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT},
                timeout=CONNECT_TIMEOUT,
                check=ConnectionPool.check_connection,
                open=False,
                name="dicomio-index",
            )
            pool.open(wait=True, timeout=CONNECT_TIMEOUT)
            try:
                with pool.connection() as conn:
                    self._migrate(conn)
            except BaseException:
                pool.close()
                raise
            self._pool = pool
            return pool

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def _migrate(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS dicomio_schema (version INTEGER NOT NULL)")
            row = conn.execute("SELECT max(version) FROM dicomio_schema").fetchone()
            version = int(row[0]) if row is not None and row[0] is not None else 0
            if version > VERSION:
                raise SchemaTooNew(
                    f"the index {self.location} has schema version {version}; this dicomio"
                    f" knows up to {VERSION}: upgrade dicomio"
                )
            for number in range(version + 1, VERSION + 1):
                log.warning("migrating the index %s to version %d", self.location, number)
                with conn.transaction():
                    conn.execute(MIGRATIONS[number - 1])
                    conn.execute("DELETE FROM dicomio_schema")
                    conn.execute("INSERT INTO dicomio_schema (version) VALUES (%s)", (number,))
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))

    @contextlib.contextmanager
    def _reading(self) -> Iterator[psycopg.Connection[Any]]:
        with self._connections().connection() as conn:
            yield conn

    @contextlib.contextmanager
    def _holding(self, sop_uid: str) -> Iterator[psycopg.Connection[Any]]:
        with self._connections().connection() as conn:
            conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (sop_uid,))
            try:
                yield conn
            finally:
                if not conn.closed and not conn.broken:
                    # A lost connection releases the lock with the session.
                    conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (sop_uid,))

    @contextlib.contextmanager
    def _transaction(self, conn: psycopg.Connection[Any]) -> Iterator[None]:
        with conn.transaction():
            yield

    def _retryable(self, exc: BaseException) -> bool:
        return isinstance(exc, _RETRY)
