"""The embedded index: one SQLite file in WAL mode, zero configuration (the default).

Versioned by ``PRAGMA user_version``. Writes take one lock in the process and an exclusive
``flock`` on ``<index>.lock`` across processes (worker processes on one machine share the WAL
database; SQLite over a network filesystem is not safe, so machines sharing an archive use
PostgreSQL). Readers use their own connections: WAL gives each query a consistent snapshot
and never blocks it behind a writer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dicomio.apps._attributes import read_attributes
from dicomio.apps.index._base import Index, SchemaTooNew, prune
from dicomio.apps.index._sql import SQLITE

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: one process per index there
    fcntl = None  # type: ignore[assignment]

__all__ = ["MAX_IDLE_READERS", "SQLiteIndex"]

log = logging.getLogger("dicomio.apps.archive")
#: Read connections kept open between queries (each costs a descriptor or three).
MAX_IDLE_READERS = 4

#: Version 1 of the index (``PRAGMA user_version``). Version 0, the first, had a ``patients``
#: table keyed by Patient ID whose name, birth date and sex every store overwrote; its
#: indexes are migrated on opening (``_migrate``).
VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL,
    study_date TEXT NOT NULL DEFAULT '',
    study_time TEXT NOT NULL DEFAULT '',
    accession_number TEXT NOT NULL DEFAULT '',
    study_id TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    referring_physician TEXT NOT NULL DEFAULT '',
    patient_key TEXT NOT NULL DEFAULT '',
    patient_name TEXT NOT NULL DEFAULT '',
    birth_date TEXT NOT NULL DEFAULT '',
    sex TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS studies_patient_key ON studies(patient_key);
CREATE TABLE IF NOT EXISTS series (
    series_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL REFERENCES studies(study_uid),
    modality TEXT NOT NULL DEFAULT '',
    series_number TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS series_study ON series(study_uid);
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY,
    series_uid TEXT NOT NULL REFERENCES series(series_uid),
    sop_class_uid TEXT NOT NULL,
    instance_number TEXT NOT NULL DEFAULT '',
    transfer_syntax TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_series ON instances(series_uid);
CREATE UNIQUE INDEX IF NOT EXISTS instances_path ON instances(path);
"""

_PATIENT_TAGS = ("PatientName", "PatientBirthDate", "PatientSex")


def _sop_in_file(path: Path) -> str:
    """The SOP Instance UID a Part 10 file holds, or "" if it cannot be read."""
    try:
        ds = read_attributes(path, ["SOPInstanceUID"])
    except Exception:
        return ""
    return str(ds.get("SOPInstanceUID", "") or "").strip(" \x00")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return "\\".join(str(v) for v in value)
    return str(value).strip(" \x00")


class SQLiteIndex(Index):
    """The index in the SQLite file ``database``; ``files`` is the archive's files/ folder
    (read once, by the migration from version 0)."""

    dialect = SQLITE
    errors = (sqlite3.Error,)

    def __init__(self, database: str | Path, files: Path) -> None:
        self.database = Path(database)
        self.location = str(self.database)
        self.files = files
        self._write_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        # Read connections not in use, reused by whichever worker thread queries next: a
        # connection per thread would leak one each time anyio retires an idle worker.
        self._idle_readers: list[sqlite3.Connection] = []

    def open(self) -> None:
        self._open()

    def _open(self) -> sqlite3.Connection:
        with self._write_lock:
            if self._writer is None:
                self.database.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(
                    self.database, check_same_thread=False, isolation_level=None, timeout=30
                )
                try:
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute("PRAGMA synchronous=NORMAL")
                    self._migrate(conn)
                    conn.executescript(SCHEMA)
                    conn.execute(f"PRAGMA user_version = {VERSION}")
                except BaseException:
                    conn.close()
                    raise
                if fcntl is not None:
                    self._lock_fd = os.open(
                        f"{self.database}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644
                    )
                self._writer = conn
            return self._writer

    def close(self) -> None:
        with self._write_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
            for conn in self._idle_readers:
                conn.close()
            self._idle_readers.clear()

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """A read connection for this worker thread's query (WAL readers never block).

        Taken from the idle ones or opened, and given back afterwards; at most
        ``MAX_IDLE_READERS`` wait idle, so open connections track concurrent queries, not
        the worker threads that ever ran one.
        """
        self._open()
        with self._write_lock:
            conn = self._idle_readers.pop() if self._idle_readers else None
        if conn is None:
            # One thread at a time uses it, but not always the thread that opened it.
            conn = sqlite3.connect(self.database, timeout=30, check_same_thread=False)
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.rollback()
            with self._write_lock:
                keep = self._writer is not None and len(self._idle_readers) < MAX_IDLE_READERS
                if keep:
                    self._idle_readers.append(conn)
            if not keep:
                conn.close()

    @contextlib.contextmanager
    def _holding(self, sop_uid: str) -> Iterator[sqlite3.Connection]:
        # SQLite has one writer at a time anyway: the hold is on every SOP Instance UID.
        self._open()
        with self._write_lock:
            conn = self._writer
            assert conn is not None
            if self._lock_fd is None or fcntl is None:
                yield conn
                return
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                yield conn
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _transaction(self, conn: sqlite3.Connection) -> Iterator[None]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # the first error is the one
                    conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Bring an index made by an earlier version up to ``VERSION``, in one transaction.

        Version 0 to 1: each study gets a patient key, so studies without Patient ID are no
        longer one patient, and the patient attributes it was stored with, read back from
        its latest instance's file (the old ``patients`` row held only the last store's;
        it is the fallback when the file cannot be read); the ``patients`` table goes.
        Rows that share a file (the old naming could map two instances to one file, the
        second overwriting the first) keep only the instance the file now holds. Reading
        one small part of one file per study is the cost, once.
        """
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > VERSION:
            raise SchemaTooNew(
                f"the index {self.database} has schema version {version}; this dicomio"
                f" knows up to {VERSION}: upgrade dicomio"
            )
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if version >= VERSION or "patients" not in tables:
            return
        log.warning("migrating the index %s to version %d", self.database, VERSION)
        conn.execute("BEGIN IMMEDIATE")
        try:
            for column in ("patient_key", "patient_name", "birth_date", "sex"):
                conn.execute(f"ALTER TABLE studies ADD COLUMN {column} TEXT NOT NULL DEFAULT ''")
            conn.execute(
                "UPDATE studies SET (patient_name, birth_date, sex) = (SELECT p.patient_name,"
                " p.birth_date, p.sex FROM patients p WHERE p.patient_id = studies.patient_id)"
                " WHERE EXISTS (SELECT 1 FROM patients p WHERE p.patient_id = studies.patient_id)"
            )
            conn.execute(
                "UPDATE studies SET patient_key = CASE WHEN patient_id != '' THEN patient_id"
                " ELSE '\\' || study_uid END"
            )
            conn.execute("DROP INDEX IF EXISTS studies_patient")
            conn.execute("DROP TABLE patients")
            shared = conn.execute(
                "SELECT path FROM instances GROUP BY path HAVING count(*) > 1"
            ).fetchall()
            for (path,) in shared:
                holder = _sop_in_file(self.files / path)
                dropped = conn.execute(
                    "SELECT sop_uid, series_uid FROM instances WHERE path = ? AND sop_uid != ?",
                    (path, holder),
                ).fetchall()
                for sop_uid, series_uid in dropped:
                    log.warning(
                        "index migration: %s shared the file %s with another instance, whose"
                        " data the file holds; its row is removed",
                        sop_uid,
                        path,
                    )
                    conn.execute("DELETE FROM instances WHERE sop_uid = ?", (sop_uid,))
                    study = conn.execute(
                        "SELECT study_uid FROM series WHERE series_uid = ?", (series_uid,)
                    ).fetchone()
                    prune(conn.execute, series_uid, study[0] if study else "")
            latest = conn.execute(
                "SELECT st.study_uid, (SELECT i.path FROM instances i JOIN series se"
                " ON se.series_uid = i.series_uid WHERE se.study_uid = st.study_uid"
                " ORDER BY i.rowid DESC LIMIT 1) FROM studies st"
            ).fetchall()
            for study_uid, path in latest:
                if path is None:
                    continue
                try:
                    ds = read_attributes(self.files / path, _PATIENT_TAGS)
                except Exception as exc:
                    log.warning(
                        "index migration: study %s keeps the old patient row (%s)", study_uid, exc
                    )
                    continue
                conn.execute(
                    "UPDATE studies SET patient_name = ?, birth_date = ?, sex = ?"
                    " WHERE study_uid = ?",
                    (*(_text(ds.get(k)) for k in _PATIENT_TAGS), study_uid),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
