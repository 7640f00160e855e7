"""The reference Query/Retrieve archive: received files on disk, indexed in SQLite.

Serves the Storage (PS3.4 Annex B), Verification (Annex A) and Patient Root and Study Root
Query/Retrieve FIND, MOVE and GET SOP classes (Annex C). Layout of the data folder::

    index.sqlite                       studies (with their patient attributes), series,
                                       instances (WAL mode; schema version in user_version)
    files/<patient>/<study>/<series>/<sop>.dcm   Part 10 files, as received
    incoming/                          data sets being received (moved into files/ when whole)

A received data set is streamed to ``incoming/`` by the association while it arrives, never
decoded in memory, then only the attributes the index holds are read from it (other elements
are skipped on disk) and it is moved into place. Names come from ``safe_name``, injective by
construction, and the index's file column is UNIQUE; a SOP Instance UID that is not a UID
(PS3.5 9.1) is refused with 0117H. A second store of the same SOP Instance UID replaces the
first (file and index row).

Who a patient is (``docs/archive.md``): the Patient ID; a study without Patient ID is a
patient of its own. Each study keeps the patient name, birth date and sex stored with it, so
a later study under another name changes no earlier study's answers (a warning is logged);
at the PATIENT level each distinct (Patient ID, name, birth date, sex) answers once.

Every SQLite call and every file operation runs in a worker thread (``anyio.to_thread``);
writes take one lock, so stores from several associations at once are safe, and readers use
their own connections (WAL gives each query a consistent snapshot). Matching rules are in
``dicomio.apps.matching``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sqlite3
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import AllTransferSyntaxes, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomio import evt, stream_to_disk
from dicomio._structure import check_file, truncation
from dicomio.ae import AE
from dicomio.apps._attributes import read_attributes
from dicomio.apps._common import is_valid_uid, safe_name
from dicomio.apps._store_as import convert_in_place, refusal
from dicomio.apps.matching import (
    UNABLE_TO_PROCESS,
    UNIQUE_KEYS,
    Kind,
    Level,
    MatchOptions,
    Model,
    Query,
    QueryError,
    model_for_sop_class,
    parse_query,
    parse_retrieve,
    response_identifier,
)
from dicomio.dataset import write_part10
from dicomio.errors import TranscodeError
from dicomio.events import Event
from dicomio.sop import QR_SOP_CLASSES, STORAGE_SOP_CLASSES

__all__ = ["Archive", "add_archive_contexts", "add_storage_contexts"]

log = logging.getLogger("dicomio.apps.archive")
#: Read connections kept open between queries (each costs a descriptor or three).
MAX_IDLE_READERS = 4

PENDING = 0xFF00
SUCCESS = 0x0000
#: "Refused: Out of resources" (PS3.4 B.2.3).
OUT_OF_RESOURCES = 0xA700
#: "Failure: Invalid SOP Instance" (PS3.7 C.5.x, 0117H): "the SOP Instance UID specified
#: implied a violation of the UID construction rules". More precise than "Cannot
#: understand" (C000H), and listed among C-STORE's statuses (PS3.2 Table N.7-42).
INVALID_SOP_INSTANCE = 0x0117


class InvalidInstanceUID(ValueError):
    """A data set whose SOP Instance UID breaks the UID rules (PS3.5 9.1): not stored."""


def _sop_in_file(path: Path) -> str:
    """The SOP Instance UID a Part 10 file holds, or "" if it cannot be read."""
    try:
        ds = read_attributes(path, ["SOPInstanceUID"])
    except Exception:
        return ""
    return str(ds.get("SOPInstanceUID", "") or "").strip(" \x00")


#: Version 1 of the index (``PRAGMA user_version``). Version 0, the first, had a ``patients``
#: table keyed by Patient ID whose name, birth date and sex every store overwrote; its
#: indexes are migrated on opening (``_migrate``).
_VERSION = 1

_SCHEMA = """
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

#: The attributes indexing reads from a file (PS3.4 C.6.1.1 keys the archive knows, plus
#: what names the file and decodes text). Nothing else is read: a data set's other elements,
#: however large, are skipped on disk.
_INDEXED_TAGS = (
    "SpecificCharacterSet",
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "Modality",
    "ReferringPhysicianName",
    "StudyDescription",
    "SeriesDescription",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "StudyID",
    "SeriesNumber",
    "InstanceNumber",
)


#: The patient attributes kept with each study.
_PATIENT_TAGS = ("PatientName", "PatientBirthDate", "PatientSex")


def _patient_key(patient_id: str, study_uid: str) -> str:
    """Who a study's patient is: the Patient ID, or, without one, the study alone.

    A backslash cannot occur in a Patient ID (it separates values, PS3.5 6.2), so a key
    made for a study without Patient ID never equals a real Patient ID.
    """
    return patient_id if patient_id else "\\" + study_uid


def _same_patient(alias: str) -> str:
    """SQL: the study ``alias`` belongs to the patient entity ``p`` (see ``_FROM``)."""
    return " AND ".join(
        f"{alias}.{c} = p.{c}" for c in ("patient_key", "patient_name", "birth_date", "sex")
    )


#: How each key is read at each query level: an SQL expression over the aliases p (patient),
#: st (study), se (series), i (instance). Counts and Modalities in Study are computed.
_COLUMNS: dict[str, str] = {
    "PatientID": "p.patient_id",
    "PatientName": "p.patient_name",
    "PatientBirthDate": "p.birth_date",
    "PatientSex": "p.sex",
    "NumberOfPatientRelatedStudies": (
        f"(SELECT count(*) FROM studies x WHERE {_same_patient('x')})"
    ),
    "NumberOfPatientRelatedSeries": (
        "(SELECT count(*) FROM series x JOIN studies y ON x.study_uid = y.study_uid"
        f" WHERE {_same_patient('y')})"
    ),
    "NumberOfPatientRelatedInstances": (
        "(SELECT count(*) FROM instances w JOIN series x ON w.series_uid = x.series_uid"
        f" JOIN studies y ON x.study_uid = y.study_uid WHERE {_same_patient('y')})"
    ),
    "StudyInstanceUID": "st.study_uid",
    "StudyDate": "st.study_date",
    "StudyTime": "st.study_time",
    "AccessionNumber": "st.accession_number",
    "StudyID": "st.study_id",
    "StudyDescription": "st.description",
    "ReferringPhysicianName": "st.referring_physician",
    "ModalitiesInStudy": (
        "(SELECT group_concat(DISTINCT x.modality) FROM series x"
        " WHERE x.study_uid = st.study_uid AND x.modality != '')"
    ),
    "NumberOfStudyRelatedSeries": "(SELECT count(*) FROM series x WHERE x.study_uid = st.study_uid)",
    "NumberOfStudyRelatedInstances": (
        "(SELECT count(*) FROM instances w JOIN series x ON w.series_uid = x.series_uid"
        " WHERE x.study_uid = st.study_uid)"
    ),
    "SeriesInstanceUID": "se.series_uid",
    "Modality": "se.modality",
    "SeriesNumber": "se.series_number",
    "SeriesDescription": "se.description",
    "NumberOfSeriesRelatedInstances": (
        "(SELECT count(*) FROM instances w WHERE w.series_uid = se.series_uid)"
    ),
    "SOPInstanceUID": "i.sop_uid",
    "SOPClassUID": "i.sop_class_uid",
    "InstanceNumber": "i.instance_number",
}

#: Columns that are plain table columns (not computed counts), where SQL can filter.
_PLAIN_COLUMN = re.compile(r"[a-z]+\.[a-z_]+")
#: Keys that hold one value by nature, so an exact SQL comparison equals the DICOM match.
_EXACT_PUSHDOWN = frozenset({"PatientID", "AccessionNumber", "StudyID", "Modality", "SOPClassUID"})


def _literal_prefix(pattern: str) -> str:
    """The characters of a wildcard pattern before its first wildcard or non-ASCII character."""
    prefix = []
    for char in pattern:
        if char in "*?" or not char.isascii():
            break
        prefix.append(char)
    return "".join(prefix)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


#: The patient attributes live with each study (as stored with it), so a study answers with
#: its own patient's name even when other studies of the same Patient ID say otherwise. A
#: PATIENT-level entity is one Patient ID (or one study without Patient ID) with one set
#: of name, birth date and sex: a patient recorded under two names answers twice.
_FROM: dict[Level, str] = {
    Level.PATIENT: (
        "(SELECT patient_key, patient_id, patient_name, birth_date, sex FROM studies"
        " GROUP BY patient_key, patient_name, birth_date, sex) p"
    ),
    Level.STUDY: "studies st",
    Level.SERIES: "series se JOIN studies st ON st.study_uid = se.study_uid",
    Level.IMAGE: (
        "instances i JOIN series se ON se.series_uid = i.series_uid"
        " JOIN studies st ON st.study_uid = se.study_uid"
    ),
}

_ORDER: dict[Level, str] = {
    Level.PATIENT: "p.patient_id, p.patient_key, p.patient_name, p.birth_date, p.sex",
    Level.STUDY: "st.patient_id, st.study_date, st.study_time, st.study_uid",
    Level.SERIES: "st.study_uid, CAST(se.series_number AS INTEGER), se.series_uid",
    Level.IMAGE: "se.series_uid, CAST(i.instance_number AS INTEGER), i.sop_uid",
}

#: Which table a level's columns come from: keys below the query level are not readable.
_ALIAS_LEVEL = {"p": Level.PATIENT, "st": Level.STUDY, "se": Level.SERIES, "i": Level.IMAGE}
_COUNTS_LEVEL = {
    "NumberOfPatientRelatedStudies": Level.PATIENT,
    "NumberOfPatientRelatedSeries": Level.PATIENT,
    "NumberOfPatientRelatedInstances": Level.PATIENT,
    "ModalitiesInStudy": Level.STUDY,
    "NumberOfStudyRelatedSeries": Level.STUDY,
    "NumberOfStudyRelatedInstances": Level.STUDY,
    "NumberOfSeriesRelatedInstances": Level.SERIES,
}


def _column(keyword: str, level: Level) -> str:
    """The SQL for ``keyword`` in the FROM clause of ``level``: below PATIENT, the patient
    attributes are the study's own (alias ``st``), not the patient entity's (``p``)."""
    expression = _COLUMNS[keyword]
    if level is Level.PATIENT:
        return expression
    return _PATIENT_ALIAS.sub("st.", expression)


_PATIENT_ALIAS = re.compile(r"\bp\.")


def _column_level(keyword: str) -> Level:
    if keyword in _COUNTS_LEVEL:
        return _COUNTS_LEVEL[keyword]
    return _ALIAS_LEVEL[_COLUMNS[keyword].split(".", 1)[0]]


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return "\\".join(str(v) for v in value)
    return str(value).strip(" \x00")


def _coerce_model(model: Model | str) -> Model:
    if isinstance(model, Model):
        return model
    text = str(model).upper()
    if text in ("P", "PATIENT", "PATIENT_ROOT"):
        return Model.PATIENT_ROOT
    if text in ("S", "STUDY", "STUDY_ROOT"):
        return Model.STUDY_ROOT
    return model_for_sop_class(str(model))


def _with_level(identifier: Dataset, level: Level | str | None) -> Dataset:
    if level is None:
        return identifier
    name = level.name if isinstance(level, Level) else str(level).upper()
    given = str(identifier.get("QueryRetrieveLevel", "") or "").strip()
    if given and given != name:
        raise QueryError(f"Query/Retrieve Level {given!r} differs from the requested {name}")
    if given:
        return identifier
    copy = Dataset()
    copy.update(identifier)
    copy.QueryRetrieveLevel = name
    return copy


class Archive:
    """Files under ``root`` plus their SQLite index; see the module docstring.

    ``pn_ignore_case`` and ``relational`` are the matching options of
    ``dicomio.apps.matching.MatchOptions``.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        pn_ignore_case: bool = True,
        relational: bool = False,
        store_as: str | None = None,
        allow_lossy: bool = False,
        clean_incoming: bool = True,
    ) -> None:
        self.root = Path(root)
        #: Delete the partial files a crashed run left in ``incoming/`` when opening. False in
        #: the worker processes of ``qrscp --workers``: the other workers' transfers in
        #: progress look just like leftovers, so only their supervisor cleans, before any
        #: worker starts (a restarted worker's leftovers wait for the next start).
        self.clean_incoming = clean_incoming
        #: Convert each received instance to this transfer syntax before storing it
        #: (``dicomio.apps._store_as``); the index records the syntax stored.
        self.store_as = store_as
        self.allow_lossy = allow_lossy
        self.files = self.root / "files"
        self.incoming = self.root / "incoming"
        self.database = self.root / "index.sqlite"
        self.options = MatchOptions(pn_ignore_case=pn_ignore_case, relational=relational)
        self._write_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        # Read connections not in use, reused by whichever worker thread queries next: a
        # connection per thread would leak one each time anyio retires an idle worker.
        self._idle_readers: list[sqlite3.Connection] = []

    # -- opening and closing ----------------------------------------------------------------

    def _open_sync(self) -> sqlite3.Connection:
        with self._write_lock:
            if self._writer is None:
                self.files.mkdir(parents=True, exist_ok=True)
                self.incoming.mkdir(parents=True, exist_ok=True)
                for stale in self.incoming.glob(".dicomio-*.part"):
                    if self.clean_incoming:
                        stale.unlink(missing_ok=True)
                conn = sqlite3.connect(
                    self.database, check_same_thread=False, isolation_level=None, timeout=30
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                self._migrate(conn)
                conn.executescript(_SCHEMA)
                conn.execute(f"PRAGMA user_version = {_VERSION}")
                self._writer = conn
            return self._writer

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Bring an index made by an earlier version up to ``_VERSION``, in one transaction.

        Version 0 to 1: each study gets a patient key, so studies without Patient ID are no
        longer one patient, and the patient attributes it was stored with, read back from
        its latest instance's file (the old ``patients`` row held only the last store's;
        it is the fallback when the file cannot be read); the ``patients`` table goes.
        Rows that share a file (the old naming could map two instances to one file, the
        second overwriting the first) keep only the instance the file now holds. Reading
        one small part of one file per study is the cost, once.
        """
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if version >= _VERSION or "patients" not in tables:
            return
        log.warning("migrating the index %s to version %d", self.database, _VERSION)
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
                    self._prune(conn, series_uid, study[0] if study else "")
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
                    (*(_text(ds, k) for k in _PATIENT_TAGS), study_uid),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def open(self) -> Archive:
        """Create the folders and the index if needed (also done on first use)."""
        await anyio.to_thread.run_sync(self._open_sync)
        return self

    def close(self) -> None:
        with self._write_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            for conn in self._idle_readers:
                conn.close()
            self._idle_readers.clear()

    async def __aenter__(self) -> Archive:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await anyio.to_thread.run_sync(self.close)

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        """A read connection for this worker thread's query (WAL readers never block).

        Taken from the idle ones or opened, and given back afterwards; at most
        ``MAX_IDLE_READERS`` wait idle, so open connections track concurrent queries, not
        the worker threads that ever ran one.
        """
        self._open_sync()
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

    # -- storing ----------------------------------------------------------------------------

    async def store(self, source: str | Path | Dataset, *, move: bool = False) -> Path:
        """Add a Part 10 file (copied, or moved with ``move=True``) or a Dataset; its new path.

        Raises ``ValueError`` if the data set has no SOP Instance UID or cannot be read.
        """
        if isinstance(source, Dataset):
            return await anyio.to_thread.run_sync(self._store_dataset_sync, source)
        return await anyio.to_thread.run_sync(self._store_file_sync, Path(source), move)

    def _store_dataset_sync(self, ds: Dataset) -> Path:
        self._open_sync()
        fd, name = tempfile.mkstemp(prefix=".dicomio-", suffix=".part", dir=self.incoming)
        os.close(fd)
        tmp = Path(name)
        try:
            meta = getattr(ds, "file_meta", None)
            if meta is None or "TransferSyntaxUID" not in meta:
                ds = ds.copy()
                meta = FileMetaDataset()
                meta.TransferSyntaxUID = ExplicitVRLittleEndian
                ds.file_meta = meta
            meta.MediaStorageSOPClassUID = ds.SOPClassUID
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.save_as(tmp, enforce_file_format=True)
            return self._store_file_sync(tmp, True)
        finally:
            tmp.unlink(missing_ok=True)

    def _store_file_sync(self, path: Path, move: bool) -> Path:
        self._open_sync()
        try:
            # Only the indexed attributes are read: any other element, a large private one
            # or a sequence of them, costs a seek or a walk over headers, not its size.
            ds = read_attributes(path, _INDEXED_TAGS)
        except Exception as exc:
            raise ValueError(f"{path}: not a readable DICOM file ({exc})") from exc
        meta = getattr(ds, "file_meta", None)
        sop_uid = _text(ds, "SOPInstanceUID") or (
            str(meta.get("MediaStorageSOPInstanceUID", "")) if meta is not None else ""
        )
        sop_class = _text(ds, "SOPClassUID") or (
            str(meta.get("MediaStorageSOPClassUID", "")) if meta is not None else ""
        )
        if not sop_uid or not sop_class:
            raise ValueError(f"{path}: no SOP Instance UID or SOP Class UID")
        if not is_valid_uid(sop_uid):
            raise InvalidInstanceUID(
                f"{path}: SOP Instance UID {sop_uid!r} is not a UID (PS3.5 9.1)"
            )
        ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
        patient_id = _text(ds, "PatientID")
        study_uid = _text(ds, "StudyInstanceUID")
        series_uid = _text(ds, "SeriesInstanceUID")
        if not study_uid or not series_uid:
            raise ValueError(f"{path}: no Study or Series Instance UID")
        relative = Path(
            safe_name(patient_id),
            safe_name(study_uid),
            safe_name(series_uid),
            safe_name(sop_uid) + ".dcm",
        )
        target = self.files / relative
        size = path.stat().st_size
        with self._write_lock:
            conn = self._writer
            assert conn is not None
            old = conn.execute(
                "SELECT i.path, i.series_uid, se.study_uid FROM instances i"
                " JOIN series se ON se.series_uid = i.series_uid WHERE i.sop_uid = ?",
                (sop_uid,),
            ).fetchone()
            holder = conn.execute(
                "SELECT sop_uid FROM instances WHERE path = ? AND sop_uid != ?",
                (relative.as_posix(), sop_uid),
            ).fetchone()
            if holder is not None:
                # safe_name is injective, so this cannot happen; never overwrite another's file.
                raise ValueError(f"{relative} already holds {holder[0]}")
            patient = (
                patient_id,
                _text(ds, "PatientName"),
                _text(ds, "PatientBirthDate"),
                _text(ds, "PatientSex"),
            )
            self._check_patient(conn, sop_uid, study_uid, patient)
            target.parent.mkdir(parents=True, exist_ok=True)
            if move:
                os.replace(path, target)
            else:
                tmp = target.with_suffix(".part")
                try:
                    with open(path, "rb") as src, open(tmp, "wb") as dst:
                        while chunk := src.read(1 << 20):
                            dst.write(chunk)
                except OSError:
                    tmp.unlink(missing_ok=True)  # a full disk leaves no partial copy
                    raise
                os.replace(tmp, target)
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(
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
                        study_uid,
                        patient_id,
                        _text(ds, "StudyDate"),
                        _text(ds, "StudyTime"),
                        _text(ds, "AccessionNumber"),
                        _text(ds, "StudyID"),
                        _text(ds, "StudyDescription"),
                        _text(ds, "ReferringPhysicianName"),
                        _patient_key(patient_id, study_uid),
                        *patient[1:],
                    ),
                )
                conn.execute(
                    "INSERT INTO series (series_uid, study_uid, modality, series_number,"
                    " description) VALUES (?, ?, ?, ?, ?) ON CONFLICT(series_uid) DO UPDATE SET"
                    " study_uid = excluded.study_uid, modality = excluded.modality,"
                    " series_number = excluded.series_number,"
                    " description = excluded.description",
                    (
                        series_uid,
                        study_uid,
                        _text(ds, "Modality"),
                        _text(ds, "SeriesNumber"),
                        _text(ds, "SeriesDescription"),
                    ),
                )
                conn.execute(
                    "INSERT INTO instances (sop_uid, series_uid, sop_class_uid, instance_number,"
                    " transfer_syntax, path, size) VALUES (?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT(sop_uid) DO UPDATE SET series_uid = excluded.series_uid,"
                    " sop_class_uid = excluded.sop_class_uid,"
                    " instance_number = excluded.instance_number,"
                    " transfer_syntax = excluded.transfer_syntax, path = excluded.path,"
                    " size = excluded.size",
                    (
                        sop_uid,
                        series_uid,
                        sop_class,
                        _text(ds, "InstanceNumber"),
                        ts,
                        relative.as_posix(),
                        size,
                    ),
                )
                if old is not None:
                    self._prune(conn, old[1], old[2])
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):  # the first error is the one
                        conn.execute("ROLLBACK")
                # Not indexed, so not stored: no file without its row (a replaced instance
                # kept at the same path is the exception; its row still names it).
                if old is None or old[0] != relative.as_posix():
                    target.unlink(missing_ok=True)
                raise
            if old is not None and old[0] != relative.as_posix():
                (self.files / old[0]).unlink(missing_ok=True)
        log.debug("stored %s as %s", sop_uid, relative)
        return target

    @staticmethod
    def _check_patient(
        conn: sqlite3.Connection, sop_uid: str, study_uid: str, patient: tuple[str, ...]
    ) -> None:
        """Warn when an instance's patient attributes disagree with those stored before.

        Its own study takes the new attributes (the latest store of a study wins, as for
        the study's other attributes); other studies keep theirs.
        """
        names = ("Patient ID", "name", "birth date", "sex")

        def show(values: Sequence[str]) -> str:
            return ", ".join(f"{n} {v!r}" for n, v in zip(names, values, strict=True))

        stored = conn.execute(
            "SELECT patient_id, patient_name, birth_date, sex FROM studies WHERE study_uid = ?",
            (study_uid,),
        ).fetchone()
        if stored is not None and tuple(stored) != patient:
            log.warning(
                "instance %s of study %s has patient %s; the study had %s, now replaced",
                sop_uid,
                study_uid,
                show(patient),
                show(stored),
            )
        if not patient[0]:
            return  # without Patient ID, each study is its own patient
        others = conn.execute(
            "SELECT DISTINCT patient_name, birth_date, sex FROM studies"
            " WHERE patient_key = ? AND study_uid != ?",
            (patient[0], study_uid),
        ).fetchall()
        differing = [tuple(o) for o in others if tuple(o) != patient[1:]]
        if differing:
            log.warning(
                "instance %s of study %s has patient %s; other studies of Patient ID %r have"
                " %s; each study keeps its own",
                sop_uid,
                study_uid,
                show(patient),
                patient[0],
                "; ".join(show((patient[0], *d)) for d in differing),
            )

    @staticmethod
    def _prune(conn: sqlite3.Connection, series_uid: str, study_uid: str) -> None:
        """Remove a replaced instance's former parents if nothing refers to them any more."""
        conn.execute(
            "DELETE FROM series WHERE series_uid = ? AND NOT EXISTS"
            " (SELECT 1 FROM instances WHERE series_uid = ?)",
            (series_uid, series_uid),
        )
        conn.execute(
            "DELETE FROM studies WHERE study_uid = ? AND NOT EXISTS"
            " (SELECT 1 FROM series WHERE study_uid = ?)",
            (study_uid, study_uid),
        )

    # -- querying ---------------------------------------------------------------------------

    async def find(
        self, level: Level | str | None, identifier: Dataset, model: Model | str
    ) -> list[Dataset]:
        """C-FIND: the response identifiers for ``identifier`` (PS3.4 C.4.1.3).

        ``level`` may be None to take the identifier's Query/Retrieve Level. Raises
        ``QueryError`` (with the failure ``status``) for an identifier the model refuses.
        """
        query = parse_query(_with_level(identifier, level), _coerce_model(model), self.options)

        def answers() -> list[Dataset]:
            # Per-row work, all of it in the worker thread: building the answers of a large
            # result set on the event loop would stall every association meanwhile.
            return [response_identifier(query, row) for row in self._rows_sync(query)]

        return await anyio.to_thread.run_sync(answers)

    async def paths_for(
        self, level: Level | str | None, identifier: Dataset, model: Model | str
    ) -> list[Path]:
        """C-MOVE/C-GET: the files of every instance the identifier's unique keys select."""
        query = parse_retrieve(_with_level(identifier, level), _coerce_model(model), self.options)
        return await anyio.to_thread.run_sync(self._paths_sync, query)

    def _where(self, query: Query, from_level: Level | None = None) -> tuple[str, list[str]]:
        """SQL that selects a superset of the matches; ``Query.matches`` has the last word.

        Besides the unique keys, two kinds of condition are pushed into SQL so that the
        index and SQLite, not Python, discard most rows: an exact value of a key that is
        single-valued by nature, and the ASCII literal prefix of a wildcard (LIKE is
        ASCII-case-insensitive, so the prefix stops at the first non-ASCII character to
        stay a superset when names match ignoring case). Stored empty values match any
        key (PS3.4 C.2.2.1.2), so they always pass.
        """
        clauses: list[str] = []
        params: list[str] = []
        from_level = query.level if from_level is None else from_level
        for level in query.model.levels:
            values = query.unique_values(level)
            if values is None:
                continue
            column = _column(UNIQUE_KEYS[level], from_level)
            if len(values) == 1:
                clauses.append(f"{column} = ?")
                params.append(values[0])
            else:
                # One parameter whatever the list's length: SQLite caps the number of
                # parameters of a statement (32,766 by default), and a List of UID Matching
                # key (PS3.4 C.2.2.2.2) may hold tens of thousands of values.
                clauses.append(f"{column} IN (SELECT value FROM json_each(?))")
                params.append(json.dumps(list(values)))
        for cond in query.conditions:
            if cond.keyword not in _COLUMNS:
                continue
            column = _column(cond.keyword, from_level)
            if not _PLAIN_COLUMN.fullmatch(column) or _column_level(cond.keyword) > query.level:
                continue
            matcher = cond.matcher
            if len(matcher.values) != 1 or matcher.ranges:
                continue
            if (
                matcher.kind is Kind.SINGLE
                and cond.keyword in _EXACT_PUSHDOWN
                and not matcher.ignore_case
            ):
                clauses.append(f"({column} = ? OR {column} IS NULL OR {column} = '')")
                params.append(matcher.values[0])
            elif matcher.kind is Kind.WILDCARD:
                prefix = _literal_prefix(matcher.values[0])
                if prefix:
                    clauses.append(
                        f"({column} LIKE ? ESCAPE '\\' OR {column} IS NULL OR {column} = '')"
                    )
                    params.append(_like_escape(prefix) + "%")
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def _rows_sync(self, query: Query) -> list[dict[str, Any]]:
        wanted = dict.fromkeys([*query.return_keys, *(c.keyword for c in query.conditions)])
        keywords = [k for k in wanted if k in _COLUMNS and _column_level(k) <= query.level]
        select = ", ".join(_column(k, query.level) for k in keywords) or "1"
        where, params = self._where(query)
        sql = f"SELECT {select} FROM {_FROM[query.level]}{where} ORDER BY {_ORDER[query.level]}"
        with self._reader() as conn:
            cursor = conn.execute(sql, params)
            rows = []
            for values in cursor:
                row = dict(zip(keywords, values, strict=True))
                if "ModalitiesInStudy" in row:
                    text = row["ModalitiesInStudy"] or ""
                    row["ModalitiesInStudy"] = sorted(v for v in text.split(",") if v)
                if query.matches(row):
                    rows.append(row)
        return rows

    def _paths_sync(self, query: Query) -> list[Path]:
        where, params = self._where(query, Level.IMAGE)
        sql = f"SELECT i.path FROM {_FROM[Level.IMAGE]}{where} ORDER BY {_ORDER[Level.IMAGE]}"
        with self._reader() as conn:
            return [self.files / row[0] for row in conn.execute(sql, params)]

    async def count(self) -> int:
        """How many instances the archive holds."""

        def run() -> int:
            with self._reader() as conn:
                return int(conn.execute("SELECT count(*) FROM instances").fetchone()[0])

        return await anyio.to_thread.run_sync(run)

    # -- the SCP -------------------------------------------------------------------------------

    async def _store_converted(self, event: Event) -> int | Dataset:
        """C-STORE with ``store_as``: the received file converted, then stored (moved in);
        a failed conversion refuses the instance and leaves nothing for it on disk."""
        assert self.store_as is not None
        sop_uid = str(event.request.affected_sop_instance_uid)
        path = event.dataset_path
        if path is None:
            fd, name = tempfile.mkstemp(prefix=".dicomio-", suffix=".part", dir=self.incoming)
            os.close(fd)
            path = Path(name)
            raw = event.raw or b""
            try:
                await anyio.to_thread.run_sync(write_part10, path, event.file_meta, [raw])
            except OSError as exc:
                path.unlink(missing_ok=True)
                return refusal(sop_uid, exc)
        try:
            try:
                await convert_in_place(path, self.store_as, allow_lossy=self.allow_lossy)
            except (TranscodeError, OSError) as exc:
                return refusal(sop_uid, exc)
            try:
                await self.store(path, move=True)
            except (ValueError, OSError, sqlite3.OperationalError) as exc:
                return _store_failure(exc)
            return SUCCESS
        finally:
            path.unlink(missing_ok=True)  # moved in when stored; otherwise not kept

    def handlers(self) -> list[tuple[evt.EventType, Any]]:
        """Event handlers serving this archive: C-ECHO, C-STORE, C-FIND, C-GET, C-MOVE.

        C-STORE streams each data set into ``incoming/`` (created here if ``open()`` was not
        awaited yet; the index itself is opened on first use, in a worker thread).
        """
        self.incoming.mkdir(parents=True, exist_ok=True)

        async def on_echo(event: Event) -> int:
            return SUCCESS

        @stream_to_disk(self.incoming)
        async def on_store(event: Event) -> int | Dataset:
            # A data set cut short is refused and nothing is kept: the part file is removed
            # when this handler returns without having moved it (dicomio.stream_to_disk).
            reason = await _truncation(event)
            if reason is not None:
                log.warning("refused C-STORE: truncated or malformed data set: %s", reason)
                refused = Dataset()
                refused.Status = UNABLE_TO_PROCESS
                refused.ErrorComment = "truncated or malformed data set"
                return refused
            if self.store_as is not None:
                return await self._store_converted(event)
            try:
                if event.dataset_path is not None:
                    await self.store(event.dataset_path, move=True)
                else:
                    ds = event.dataset
                    ds.file_meta = event.file_meta
                    await self.store(ds)
            except (ValueError, OSError, sqlite3.OperationalError) as exc:
                return _store_failure(exc)
            return SUCCESS

        async def on_find(event: Event) -> AsyncIterator[tuple[int, Dataset | None]]:
            try:
                model = model_for_sop_class(str(event.request.affected_sop_class_uid))
                results = await self.find(None, event.identifier, model)
            except QueryError as exc:
                log.info("C-FIND refused (0x%04X): %s", exc.status, exc)
                yield exc.status, None
                return
            for ds in results:
                yield PENDING, ds

        async def on_retrieve(event: Event) -> AsyncIterator[Any]:
            # C-GET and C-MOVE: the count of sub-operations first, then each file (C-MOVE's
            # destination comes from ae.move_destinations); a refused identifier yields its
            # failure status instead of a count (PS3.4 C.4.2.1.5, C.4.3.1.4).
            try:
                model = model_for_sop_class(str(event.request.affected_sop_class_uid))
                paths = await self.paths_for(None, event.identifier, model)
            except QueryError as exc:
                log.info("%s refused (0x%04X): %s", event.event.name, exc.status, exc)
                yield exc.status, None
                return
            yield len(paths)
            for path in paths:
                yield PENDING, path

        return [
            (evt.EVT_C_ECHO, on_echo),
            (evt.EVT_C_STORE, on_store),
            (evt.EVT_C_FIND, on_find),
            (evt.EVT_C_GET, on_retrieve),
            (evt.EVT_C_MOVE, on_retrieve),
        ]


def _store_failure(exc: Exception) -> int:
    """The C-STORE status for an instance ``Archive.store`` refused."""
    if isinstance(exc, InvalidInstanceUID):
        log.warning("refused C-STORE: %s", exc)
        return INVALID_SOP_INSTANCE
    if isinstance(exc, ValueError):
        log.warning("refused C-STORE: %s", exc)
        return UNABLE_TO_PROCESS
    # A full disk, an I/O error, or an index that cannot be written (SQLITE_FULL,
    # SQLITE_IOERR, a lock held too long): "Refused: Out of Resources".
    log.error("cannot store: %s", exc)
    return OUT_OF_RESOURCES


async def _truncation(event: Event) -> str | None:
    """Why the received data set is not whole, or None (dicomio._structure)."""
    syntax = str(event.context.transfer_syntax) if event.context else ImplicitVRLittleEndian
    if event.dataset_path is not None:
        return await anyio.to_thread.run_sync(check_file, event.dataset_path, syntax)
    return truncation(event.raw or b"", syntax)


def add_storage_contexts(
    ae: AE, *, scp_role_for_get: bool = False, syntaxes: Sequence[str] | None = None
) -> None:
    """Accept every Storage SOP class in ``syntaxes`` (default: every one pydicom knows).

    With ``scp_role_for_get``, also agree to a C-GET SCU taking the Storage SCP role on
    its association (PS3.7 D.3.3.4), so that the C-STORE sub-operations can be sent.
    Unknown (private) storage classes are accepted through ``ae.accept_any_storage``.
    """
    if syntaxes is None:
        syntaxes = [str(ts) for ts in AllTransferSyntaxes]
    for uid in STORAGE_SOP_CLASSES:
        if scp_role_for_get:
            ae.add_supported_context(uid, syntaxes, scu_role=True, scp_role=True)
        else:
            ae.add_supported_context(uid, syntaxes)
    ae.accept_any_storage = True


def add_archive_contexts(ae: AE, *, syntaxes: Sequence[str] | None = None) -> None:
    """Verification, all storage (in ``syntaxes``, default all), and the Patient and Study
    Root FIND/MOVE/GET models."""
    ae.add_supported_context("1.2.840.10008.1.1")
    add_storage_contexts(ae, scp_role_for_get=True, syntaxes=syntaxes)
    for uid in QR_SOP_CLASSES:
        if str(uid).startswith(("1.2.840.10008.5.1.4.1.2.1.", "1.2.840.10008.5.1.4.1.2.2.")):
            ae.add_supported_context(uid)
