"""The archive's index interface, and the store algorithm both backends share.

An ``Index`` is blocking: the archive calls it from worker threads (``anyio.to_thread``), as
both drivers are (sqlite3; psycopg's async API runs only on asyncio, and dicomio runs on trio
as well). A backend provides connections for reading, an exclusive hold on one SOP Instance
UID for writing (across threads, processes and, for PostgreSQL, machines), and
transactions; ``put`` does the rest the same way on both.

Replacing an instance (a second store of its SOP Instance UID) while another machine stores
it too: under the hold, the rows are written, the file is renamed into place, and the
transaction commits; an earlier file at another path is removed before the hold is released.
So the file that ends in place is always the one whose row committed last.
"""

from __future__ import annotations

import abc
import logging
import random
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from dicomio.apps.index._sql import (
    Dialect,
    InstanceRecord,
    matching_rows,
    select_paths,
    select_rows,
)
from dicomio.apps.matching import Query

__all__ = ["Index"]

log = logging.getLogger("dicomio.apps.archive")

#: Attempts at one store's transaction when the database asks for a retry (a serialization
#: failure or deadlock between concurrent writers); each waits a little longer, with jitter.
ATTEMPTS = 6


class SchemaTooNew(Exception):
    """The index was written by a newer dicomio, whose schema this one does not know."""


class Index(abc.ABC):
    """Studies (with their patients' attributes), series and instances; see the module."""

    dialect: Dialect
    #: The driver's exceptions for an index that cannot be read or written now (a full
    #: disk, a lost server): the archive answers C-STORE with "Out of Resources".
    errors: tuple[type[Exception], ...]
    #: Where the index is, for messages (never with a password).
    location: str

    # -- what a backend provides --------------------------------------------------------------

    @abc.abstractmethod
    def open(self) -> None:
        """Connect, and create or migrate the schema to the current version (idempotent)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close every connection; ``open`` (or first use) opens again."""

    @abc.abstractmethod
    def _reading(self) -> AbstractContextManager[Any]:
        """A connection for one query."""

    @abc.abstractmethod
    def _holding(self, sop_uid: str) -> AbstractContextManager[Any]:
        """A connection, with no other writer of ``sop_uid`` anywhere until exit."""

    @abc.abstractmethod
    def _transaction(self, conn: Any) -> AbstractContextManager[None]:
        """A write transaction on ``conn``: committed on exit, rolled back on an exception."""

    def _retryable(self, exc: BaseException) -> bool:
        """Whether ``exc`` from a transaction means: run it again."""
        return False

    # -- reading ------------------------------------------------------------------------------

    def rows(self, query: Query) -> list[dict[str, Any]]:
        """C-FIND: the rows matching ``query``, keyword to value."""
        sql, params, keywords = select_rows(query, self.dialect)
        with self._reading() as conn:
            return matching_rows(query, keywords, conn.execute(sql, params))

    def paths(self, query: Query) -> list[str]:
        """C-MOVE/C-GET: the relative paths of the instances the query's unique keys select."""
        sql, params = select_paths(query, self.dialect)
        with self._reading() as conn:
            return [row[0] for row in conn.execute(sql, params)]

    def count(self) -> int:
        """How many instances are indexed."""
        with self._reading() as conn:
            return int(conn.execute("SELECT count(*) FROM instances").fetchone()[0])

    # -- writing ------------------------------------------------------------------------------

    def put(
        self, record: InstanceRecord, place: Callable[[], None], remove: Callable[[str], None]
    ) -> None:
        """Index ``record``, with ``place()`` moving its file into place in the transaction.

        A former instance of the same SOP Instance UID is replaced: its row, its parents
        left empty, and (through ``remove``, given a relative path) its file if elsewhere.
        If the transaction fails after ``place``, the new file is removed again (unless it
        replaced the former one at the same path, which its row still names).
        """
        with self._holding(record.sop_uid) as conn:
            for attempt in range(1, ATTEMPTS + 1):
                placed = False
                old: tuple[str, str, str] | None = None
                try:
                    with self._transaction(conn):
                        old = _write(conn, self.dialect, record)
                        placed = True
                        place()
                except BaseException as exc:
                    if placed:
                        if old is None or old[0] != record.path:
                            remove(record.path)
                    elif attempt < ATTEMPTS and self._retryable(exc):
                        log.info("retrying the store of %s: %s", record.sop_uid, exc)
                        time.sleep(random.uniform(0.005, 0.02) * 2**attempt)
                        continue
                    raise
                break
            if old is not None and old[0] != record.path:
                remove(old[0])


def _write(conn: Any, dialect: Dialect, record: InstanceRecord) -> tuple[str, str, str] | None:
    """The rows of ``record``, inserted or updated; the former (path, series, study)."""

    def run(sql: str, params: Sequence[Any]) -> Any:
        return conn.execute(dialect.sql(sql), params)

    old = run(
        "SELECT i.path, i.series_uid, se.study_uid FROM instances i"
        " JOIN series se ON se.series_uid = i.series_uid WHERE i.sop_uid = ?",
        (record.sop_uid,),
    ).fetchone()
    holder = run(
        "SELECT sop_uid FROM instances WHERE path = ? AND sop_uid != ?",
        (record.path, record.sop_uid),
    ).fetchone()
    if holder is not None:
        # safe_name is injective, so this cannot happen; never overwrite another's file.
        raise ValueError(f"{record.path} already holds {holder[0]}")
    _check_patient(run, record)
    run(
        "INSERT INTO studies (study_uid, patient_id, study_date, study_time,"
        " accession_number, study_id, description, referring_physician,"
        " patient_key, patient_name, birth_date, sex)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(study_uid) DO UPDATE"
        " SET patient_id = excluded.patient_id, patient_key = excluded.patient_key,"
        " patient_name = excluded.patient_name, birth_date = excluded.birth_date,"
        " sex = excluded.sex, study_date = excluded.study_date,"
        " study_time = excluded.study_time,"
        " accession_number = excluded.accession_number,"
        " study_id = excluded.study_id, description = excluded.description,"
        " referring_physician = excluded.referring_physician",
        (
            record.study_uid,
            record.patient_id,
            record.study_date,
            record.study_time,
            record.accession_number,
            record.study_id,
            record.study_description,
            record.referring_physician,
            record.patient_key,
            record.patient_name,
            record.birth_date,
            record.sex,
        ),
    )
    run(
        "INSERT INTO series (series_uid, study_uid, modality, series_number,"
        " description) VALUES (?, ?, ?, ?, ?) ON CONFLICT(series_uid) DO UPDATE SET"
        " study_uid = excluded.study_uid, modality = excluded.modality,"
        " series_number = excluded.series_number,"
        " description = excluded.description",
        (
            record.series_uid,
            record.study_uid,
            record.modality,
            record.series_number,
            record.series_description,
        ),
    )
    run(
        "INSERT INTO instances (sop_uid, series_uid, sop_class_uid, instance_number,"
        " transfer_syntax, path, size) VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT(sop_uid) DO UPDATE SET series_uid = excluded.series_uid,"
        " sop_class_uid = excluded.sop_class_uid,"
        " instance_number = excluded.instance_number,"
        " transfer_syntax = excluded.transfer_syntax, path = excluded.path,"
        " size = excluded.size",
        (
            record.sop_uid,
            record.series_uid,
            record.sop_class_uid,
            record.instance_number,
            record.transfer_syntax,
            record.path,
            record.size,
        ),
    )
    if old is None:
        return None
    prune(run, old[1], old[2])
    return (str(old[0]), str(old[1]), str(old[2]))


def prune(run: Callable[[str, Sequence[Any]], Any], series_uid: str, study_uid: str) -> None:
    """Remove a replaced instance's former parents if nothing refers to them any more."""
    run(
        "DELETE FROM series WHERE series_uid = ? AND NOT EXISTS"
        " (SELECT 1 FROM instances WHERE series_uid = ?)",
        (series_uid, series_uid),
    )
    run(
        "DELETE FROM studies WHERE study_uid = ? AND NOT EXISTS"
        " (SELECT 1 FROM series WHERE study_uid = ?)",
        (study_uid, study_uid),
    )


def _check_patient(run: Callable[[str, Sequence[Any]], Any], record: InstanceRecord) -> None:
    """Warn when an instance's patient attributes disagree with those stored before.

    Its own study takes the new attributes (the latest store of a study wins, as for the
    study's other attributes); other studies keep theirs.
    """
    names = ("Patient ID", "name", "birth date", "sex")
    patient = record.patient

    def show(values: Sequence[str]) -> str:
        return ", ".join(f"{n} {v!r}" for n, v in zip(names, values, strict=True))

    stored = run(
        "SELECT patient_id, patient_name, birth_date, sex FROM studies WHERE study_uid = ?",
        (record.study_uid,),
    ).fetchone()
    if stored is not None and tuple(stored) != patient:
        log.warning(
            "instance %s of study %s has patient %s; the study had %s, now replaced",
            record.sop_uid,
            record.study_uid,
            show(patient),
            show(stored),
        )
    if not record.patient_id:
        return  # without Patient ID, each study is its own patient
    others = run(
        "SELECT DISTINCT patient_name, birth_date, sex FROM studies"
        " WHERE patient_key = ? AND study_uid != ?",
        (record.patient_id, record.study_uid),
    ).fetchall()
    differing = [tuple(o) for o in others if tuple(o) != patient[1:]]
    if differing:
        log.warning(
            "instance %s of study %s has patient %s; other studies of Patient ID %r have"
            " %s; each study keeps its own",
            record.sop_uid,
            record.study_uid,
            show(patient),
            record.patient_id,
            "; ".join(show((record.patient_id, *d)) for d in differing),
        )
