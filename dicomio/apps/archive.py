"""The reference Query/Retrieve archive: received files on disk, and their index.

Serves the Storage (PS3.4 Annex B), Verification (Annex A) and Patient Root and Study Root
Query/Retrieve FIND, MOVE and GET SOP classes (Annex C). Layout of the data folder::

    index.sqlite                       the SQLite index (the default; ``dicomio.apps.index``)
    files/<patient>/<study>/<series>/<sop>.dcm   Part 10 files, as received
    incoming/                          data sets being received (moved into files/ when whole)

The index is SQLite in the data folder unless ``db`` names a PostgreSQL database
(``dicomio.apps.index``), which lets several processes or machines share one archive: the
data folder on a shared filesystem, the index on the server.

A received data set is streamed to ``incoming/`` by the association while it arrives, never
decoded in memory, then only the attributes the index holds are read from it (other elements
are skipped on disk) and it is renamed into place (atomic on one filesystem; a copy is
written under a unique temporary name beside its target first). Names come from
``safe_name``, injective by construction and the same on every machine, and the index's
file column is UNIQUE; a SOP Instance UID that is not a UID (PS3.5 9.1) is refused with
0117H. A second store of the same SOP Instance UID replaces the first (file and index row),
even from two machines at once: the index holds the UID while the file is renamed and the
row written (``dicomio.apps.index._base``).

Who a patient is (``docs/archive.md``): the Patient ID; a study without Patient ID is a
patient of its own. Each study keeps the patient name, birth date and sex stored with it, so
a later study under another name changes no earlier study's answers (a warning is logged);
at the PATIENT level each distinct (Patient ID, name, birth date, sex) answers once.

Every index call and every file operation runs in a worker thread (``anyio.to_thread``).
Matching rules are in ``dicomio.apps.matching``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
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
from dicomio.apps.index import Index, InstanceRecord, open_index
from dicomio.apps.matching import (
    UNABLE_TO_PROCESS,
    Level,
    MatchOptions,
    Model,
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
#: A part file in ``incoming/`` untouched this long is left over from a process that
#: stopped mid-transfer, and removed on opening. Younger ones may be another process's, or
#: another machine's on a shared data folder, still receiving: a transfer touches its file
#: with every PDU, and the network timeouts are far shorter.
STALE_PART_SECONDS = 3600

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
    """Files under ``root`` plus their index; see the module docstring.

    ``db`` selects the index (``dicomio.apps.index.open_index``): None for SQLite in
    ``root``, or a ``postgresql://`` URL. ``pn_ignore_case`` and ``relational`` are the
    matching options of ``dicomio.apps.matching.MatchOptions``.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        db: str | None = None,
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
        self.index: Index = open_index(db, self.root)
        #: What ``store`` raises for an instance it refuses (``_store_failure`` gives the status).
        self._store_errors: tuple[type[Exception], ...] = (ValueError, OSError, *self.index.errors)
        self.options = MatchOptions(pn_ignore_case=pn_ignore_case, relational=relational)

    # -- opening and closing ----------------------------------------------------------------

    def _open_sync(self) -> None:
        self.files.mkdir(parents=True, exist_ok=True)
        self.incoming.mkdir(parents=True, exist_ok=True)
        if self.clean_incoming:
            # Only part files nobody has written to for an hour: another process (a worker,
            # another machine on a shared store) may be receiving into the others.
            cutoff = time.time() - STALE_PART_SECONDS
            for stale in self.incoming.glob(".dicomio-*.part"):
                try:
                    if stale.stat().st_mtime < cutoff:
                        stale.unlink()
                except FileNotFoundError:
                    pass  # finished meanwhile, by whichever process was receiving it
        self.index.open()

    async def open(self) -> Archive:
        """Create the folders and the index if needed (the index is also opened on first use)."""
        await anyio.to_thread.run_sync(self._open_sync)
        return self

    def close(self) -> None:
        self.index.close()

    async def __aenter__(self) -> Archive:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await anyio.to_thread.run_sync(self.close)

    # -- storing ----------------------------------------------------------------------------

    async def store(self, source: str | Path | Dataset, *, move: bool = False) -> Path:
        """Add a Part 10 file (copied, or moved with ``move=True``) or a Dataset; its new path.

        Raises ``ValueError`` if the data set has no SOP Instance UID or cannot be read, and
        one of ``self.index.errors`` if the index cannot be written.
        """
        if isinstance(source, Dataset):
            return await anyio.to_thread.run_sync(self._store_dataset_sync, source)
        return await anyio.to_thread.run_sync(self._store_file_sync, Path(source), move)

    def _store_dataset_sync(self, ds: Dataset) -> Path:
        self.incoming.mkdir(parents=True, exist_ok=True)
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

    def _record(self, path: Path) -> InstanceRecord:
        """What the index keeps of the Part 10 file ``path``; ValueError if it cannot say."""
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
        return InstanceRecord(
            sop_uid=sop_uid,
            sop_class_uid=sop_class,
            transfer_syntax=str(meta.get("TransferSyntaxUID", "")) if meta is not None else "",
            path=relative.as_posix(),
            size=path.stat().st_size,
            instance_number=_text(ds, "InstanceNumber"),
            series_uid=series_uid,
            modality=_text(ds, "Modality"),
            series_number=_text(ds, "SeriesNumber"),
            series_description=_text(ds, "SeriesDescription"),
            study_uid=study_uid,
            study_date=_text(ds, "StudyDate"),
            study_time=_text(ds, "StudyTime"),
            accession_number=_text(ds, "AccessionNumber"),
            study_id=_text(ds, "StudyID"),
            study_description=_text(ds, "StudyDescription"),
            referring_physician=_text(ds, "ReferringPhysicianName"),
            patient_id=patient_id,
            patient_name=_text(ds, "PatientName"),
            birth_date=_text(ds, "PatientBirthDate"),
            sex=_text(ds, "PatientSex"),
        )

    def _store_file_sync(self, path: Path, move: bool) -> Path:
        record = self._record(path)
        target = self.files / record.path

        def place() -> None:
            # Renamed into place, atomically: a reader on any machine sees the former file
            # or the new one, never a part. A copy is written beside the target first under
            # a name no other process or machine can pick (O_EXCL, random).
            target.parent.mkdir(parents=True, exist_ok=True)
            if move:
                os.replace(path, target)
                return
            fd, name = tempfile.mkstemp(prefix=".dicomio-", suffix=".part", dir=target.parent)
            try:
                with open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                os.replace(name, target)
            except BaseException:
                Path(name).unlink(missing_ok=True)  # a full disk leaves no partial copy
                raise

        def remove(relative: str) -> None:
            (self.files / relative).unlink(missing_ok=True)

        self.index.put(record, place, remove)
        log.debug("stored %s as %s", record.sop_uid, record.path)
        return target

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
            return [response_identifier(query, row) for row in self.index.rows(query)]

        return await anyio.to_thread.run_sync(answers)

    async def paths_for(
        self, level: Level | str | None, identifier: Dataset, model: Model | str
    ) -> list[Path]:
        """C-MOVE/C-GET: the files of every instance the identifier's unique keys select."""
        query = parse_retrieve(_with_level(identifier, level), _coerce_model(model), self.options)
        relative = await anyio.to_thread.run_sync(self.index.paths, query)
        return [self.files / p for p in relative]

    async def count(self) -> int:
        """How many instances the archive holds."""
        return await anyio.to_thread.run_sync(self.index.count)

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
            except self._store_errors as exc:
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
            except self._store_errors as exc:
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
    Unknown (private) storage classes are accepted through ``ae.accept_any_storage``, in
    ``syntaxes`` too when they are given.
    """
    ae.any_storage_syntaxes = None if syntaxes is None else tuple(syntaxes)
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
