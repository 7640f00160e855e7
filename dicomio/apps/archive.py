"""The reference Query/Retrieve archive: received files on disk, indexed in SQLite.

Serves the Storage (PS3.4 Annex B), Verification (Annex A) and Patient Root and Study Root
Query/Retrieve FIND, MOVE and GET SOP classes (Annex C). Layout of the data folder::

    index.sqlite                       patients, studies, series, instances (WAL mode)
    files/<patient>/<study>/<series>/<sop>.dcm   Part 10 files, as received
    incoming/                          data sets being received (moved into files/ when whole)

A received data set is streamed to ``incoming/`` by the association while it arrives, never
decoded in memory, then read up to its pixel data to index it and moved into place. A second
store of the same SOP Instance UID replaces the first (file and index row). Every SQLite call
and every file operation runs in a worker thread (``anyio.to_thread``); writes take one lock, so
stores from several associations at once are safe, and readers use their own connections
(WAL gives each query a consistent snapshot). Matching rules are in
``dicomio.apps.matching``.
"""

from __future__ import annotations

import contextlib
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
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import AllTransferSyntaxes, ExplicitVRLittleEndian

from dicomio import evt, stream_to_disk
from dicomio.ae import AE
from dicomio.apps._common import safe_name
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
from dicomio.events import Event
from dicomio.sop import QR_SOP_CLASSES, STORAGE_SOP_CLASSES

__all__ = ["Archive", "add_archive_contexts", "add_storage_contexts"]

log = logging.getLogger("dicomio.apps.archive")

PENDING = 0xFF00
SUCCESS = 0x0000
#: "Refused: Out of resources" (PS3.4 B.2.3).
OUT_OF_RESOURCES = 0xA700

_SCHEMA = """
CREATE TABLE IF NOT EXISTS patients (
    patient_id TEXT PRIMARY KEY,
    patient_name TEXT NOT NULL DEFAULT '',
    birth_date TEXT NOT NULL DEFAULT '',
    sex TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL REFERENCES patients(patient_id),
    study_date TEXT NOT NULL DEFAULT '',
    study_time TEXT NOT NULL DEFAULT '',
    accession_number TEXT NOT NULL DEFAULT '',
    study_id TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    referring_physician TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS studies_patient ON studies(patient_id);
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
"""

#: How each key is read at each query level: an SQL expression over the aliases p (patient),
#: st (study), se (series), i (instance). Counts and Modalities in Study are computed.
_COLUMNS: dict[str, str] = {
    "PatientID": "p.patient_id",
    "PatientName": "p.patient_name",
    "PatientBirthDate": "p.birth_date",
    "PatientSex": "p.sex",
    "NumberOfPatientRelatedStudies": (
        "(SELECT count(*) FROM studies x WHERE x.patient_id = p.patient_id)"
    ),
    "NumberOfPatientRelatedSeries": (
        "(SELECT count(*) FROM series x JOIN studies y ON x.study_uid = y.study_uid"
        " WHERE y.patient_id = p.patient_id)"
    ),
    "NumberOfPatientRelatedInstances": (
        "(SELECT count(*) FROM instances w JOIN series x ON w.series_uid = x.series_uid"
        " JOIN studies y ON x.study_uid = y.study_uid WHERE y.patient_id = p.patient_id)"
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


_FROM: dict[Level, str] = {
    Level.PATIENT: "patients p",
    Level.STUDY: "studies st JOIN patients p ON p.patient_id = st.patient_id",
    Level.SERIES: (
        "series se JOIN studies st ON st.study_uid = se.study_uid"
        " JOIN patients p ON p.patient_id = st.patient_id"
    ),
    Level.IMAGE: (
        "instances i JOIN series se ON se.series_uid = i.series_uid"
        " JOIN studies st ON st.study_uid = se.study_uid"
        " JOIN patients p ON p.patient_id = st.patient_id"
    ),
}

_ORDER: dict[Level, str] = {
    Level.PATIENT: "p.patient_id",
    Level.STUDY: "p.patient_id, st.study_date, st.study_time, st.study_uid",
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
        self, root: str | Path, *, pn_ignore_case: bool = True, relational: bool = False
    ) -> None:
        self.root = Path(root)
        self.files = self.root / "files"
        self.incoming = self.root / "incoming"
        self.database = self.root / "index.sqlite"
        self.options = MatchOptions(pn_ignore_case=pn_ignore_case, relational=relational)
        self._write_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []

    # -- opening and closing ----------------------------------------------------------------

    def _open_sync(self) -> sqlite3.Connection:
        with self._write_lock:
            if self._writer is None:
                self.files.mkdir(parents=True, exist_ok=True)
                self.incoming.mkdir(parents=True, exist_ok=True)
                for stale in self.incoming.glob(".dicomio-*.part"):
                    stale.unlink(missing_ok=True)
                conn = sqlite3.connect(
                    self.database, check_same_thread=False, isolation_level=None, timeout=30
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.executescript(_SCHEMA)
                self._writer = conn
            return self._writer

    async def open(self) -> Archive:
        """Create the folders and the index if needed (also done on first use)."""
        await anyio.to_thread.run_sync(self._open_sync)
        return self

    def close(self) -> None:
        with self._write_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            for conn in self._readers:
                conn.close()
            self._readers.clear()
            self._local = threading.local()

    async def __aenter__(self) -> Archive:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await anyio.to_thread.run_sync(self.close)

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        """This worker thread's read connection, opened once (WAL readers never block)."""
        self._open_sync()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.database, timeout=30, check_same_thread=False)
            self._local.conn = conn
            with self._write_lock:
                self._readers.append(conn)
        yield conn

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
            ds = dcmread(path, stop_before_pixels=True)
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
        ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
        patient_id = _text(ds, "PatientID")
        study_uid = _text(ds, "StudyInstanceUID")
        series_uid = _text(ds, "SeriesInstanceUID")
        if not study_uid or not series_uid:
            raise ValueError(f"{path}: no Study or Series Instance UID")
        relative = Path(
            safe_name(patient_id or "unknown"),
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
                "SELECT i.path, i.series_uid, se.study_uid, st.patient_id FROM instances i"
                " JOIN series se ON se.series_uid = i.series_uid"
                " JOIN studies st ON st.study_uid = se.study_uid WHERE i.sop_uid = ?",
                (sop_uid,),
            ).fetchone()
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
                    "INSERT INTO patients (patient_id, patient_name, birth_date, sex)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT(patient_id) DO UPDATE SET"
                    " patient_name = excluded.patient_name, birth_date = excluded.birth_date,"
                    " sex = excluded.sex",
                    (
                        patient_id,
                        _text(ds, "PatientName"),
                        _text(ds, "PatientBirthDate"),
                        _text(ds, "PatientSex"),
                    ),
                )
                conn.execute(
                    "INSERT INTO studies (study_uid, patient_id, study_date, study_time,"
                    " accession_number, study_id, description, referring_physician)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(study_uid) DO UPDATE SET"
                    " patient_id = excluded.patient_id, study_date = excluded.study_date,"
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
                    self._prune(conn, old[1], old[2], old[3])
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
    def _prune(conn: sqlite3.Connection, series_uid: str, study_uid: str, patient_id: str) -> None:
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
        conn.execute(
            "DELETE FROM patients WHERE patient_id = ? AND NOT EXISTS"
            " (SELECT 1 FROM studies WHERE patient_id = ?)",
            (patient_id, patient_id),
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
        rows = await anyio.to_thread.run_sync(self._rows_sync, query)
        return [response_identifier(query, row) for row in rows]

    async def paths_for(
        self, level: Level | str | None, identifier: Dataset, model: Model | str
    ) -> list[Path]:
        """C-MOVE/C-GET: the files of every instance the identifier's unique keys select."""
        query = parse_retrieve(_with_level(identifier, level), _coerce_model(model), self.options)
        return await anyio.to_thread.run_sync(self._paths_sync, query)

    def _where(self, query: Query) -> tuple[str, list[str]]:
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
        for level in query.model.levels:
            values = query.unique_values(level)
            if values is None:
                continue
            column = _COLUMNS[UNIQUE_KEYS[level]]
            clauses.append(f"{column} IN ({', '.join('?' for _ in values)})")
            params.extend(values)
        for cond in query.conditions:
            column = _COLUMNS.get(cond.keyword, "")
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
        select = ", ".join(_COLUMNS[k] for k in keywords) or "1"
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
        where, params = self._where(query)
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

    def handlers(self) -> list[tuple[evt.EventType, Any]]:
        """Event handlers serving this archive: C-ECHO, C-STORE, C-FIND, C-GET, C-MOVE.

        C-STORE streams each data set into ``incoming/`` (created here if ``open()`` was not
        awaited yet; the index itself is opened on first use, in a worker thread).
        """
        self.incoming.mkdir(parents=True, exist_ok=True)

        async def on_echo(event: Event) -> int:
            return SUCCESS

        @stream_to_disk(self.incoming)
        async def on_store(event: Event) -> int:
            try:
                if event.dataset_path is not None:
                    await self.store(event.dataset_path, move=True)
                else:
                    ds = event.dataset
                    ds.file_meta = event.file_meta
                    await self.store(ds)
            except ValueError as exc:
                log.warning("refused C-STORE: %s", exc)
                return UNABLE_TO_PROCESS
            except (OSError, sqlite3.OperationalError) as exc:
                # A full disk, an I/O error, or an index that cannot be written (SQLITE_FULL,
                # SQLITE_IOERR, a lock held too long): "Refused: Out of Resources".
                log.error("cannot store: %s", exc)
                return OUT_OF_RESOURCES
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


def add_storage_contexts(ae: AE, *, scp_role_for_get: bool = False) -> None:
    """Accept every Storage SOP class in every transfer syntax pydicom knows.

    With ``scp_role_for_get``, also agree to a C-GET SCU taking the Storage SCP role on
    its association (PS3.7 D.3.3.4), so that the C-STORE sub-operations can be sent.
    Unknown (private) storage classes are accepted through ``ae.accept_any_storage``.
    """
    syntaxes: Sequence[str] = [str(ts) for ts in AllTransferSyntaxes]
    for uid in STORAGE_SOP_CLASSES:
        if scp_role_for_get:
            ae.add_supported_context(uid, syntaxes, scu_role=True, scp_role=True)
        else:
            ae.add_supported_context(uid, syntaxes)
    ae.accept_any_storage = True


def add_archive_contexts(ae: AE) -> None:
    """Verification, all storage, and the Patient and Study Root FIND/MOVE/GET models."""
    ae.add_supported_context("1.2.840.10008.1.1")
    add_storage_contexts(ae, scp_role_for_get=True)
    for uid in QR_SOP_CLASSES:
        if str(uid).startswith(("1.2.840.10008.5.1.4.1.2.1.", "1.2.840.10008.5.1.4.1.2.2.")):
            ae.add_supported_context(uid)
