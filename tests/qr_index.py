"""A small in-memory Query/Retrieve index over the test corpus, and handlers that serve it.

Enough of PS3.4 Annex C for interoperability tests, not an archive: the four levels of the
Patient Root and Study Root information models (C.6.1, C.6.2), and single value, universal,
wildcard, list of UID and date range matching (C.2.2.2.1-C.2.2.2.5). Keys below the query
level are ignored; keys the index does not know are returned empty, as C.2.2.1.1 allows for
unsupported optional keys. The reference archive of ``dicomio.apps`` is a later piece of work.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID

from dicomio.apps.matching import wildcard_match
from tests.corpus import Corpus

__all__ = [
    "LEVEL_KEYS",
    "PATIENT_ROOT",
    "QRIndex",
    "STUDY_ROOT",
    "find_handler",
    "get_handler",
    "move_handler",
]

PATIENT_ROOT = {
    "1.2.840.10008.5.1.4.1.2.1.1",  # Patient Root FIND
    "1.2.840.10008.5.1.4.1.2.1.2",  # Patient Root MOVE
    "1.2.840.10008.5.1.4.1.2.1.3",  # Patient Root GET
}
STUDY_ROOT = {
    "1.2.840.10008.5.1.4.1.2.2.1",
    "1.2.840.10008.5.1.4.1.2.2.2",
    "1.2.840.10008.5.1.4.1.2.2.3",
}

#: The attributes each level holds (PS3.4 C.6.1.1 / C.6.2.1, the subset the corpus has).
LEVEL_KEYS: dict[str, tuple[str, ...]] = {
    "PATIENT": ("PatientID", "PatientName", "PatientBirthDate", "PatientSex"),
    "STUDY": (
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "StudyID",
        "AccessionNumber",
        "StudyDescription",
    ),
    "SERIES": ("SeriesInstanceUID", "Modality", "SeriesNumber"),
    "IMAGE": ("SOPInstanceUID", "SOPClassUID", "InstanceNumber"),
}
_ORDER = ("PATIENT", "STUDY", "SERIES", "IMAGE")
_UNIQUE = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}
_UIDS = {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"}
_DATES = {"StudyDate", "PatientBirthDate"}

# Status codes (PS3.4 C.4.1.1.4): identifier does not match SOP class.
IDENTIFIER_MISMATCH = 0xA900


class QueryError(ValueError):
    """The identifier cannot be answered (bad level, level not in the model)."""


@dataclass(frozen=True)
class Record:
    """One instance: its attribute values as strings, its file and its transfer syntax."""

    values: dict[str, str]
    path: Path
    transfer_syntax: UID


def _levels(model: str) -> tuple[str, ...]:
    return _ORDER[1:] if str(model) in STUDY_ROOT else _ORDER


def _keys_at_and_above(level: str, model: str) -> list[str]:
    levels = _levels(model)
    keys: list[str] = []
    if str(model) in STUDY_ROOT:
        # Study Root puts the patient attributes at the study level (PS3.4 C.6.2.1).
        keys.extend(LEVEL_KEYS["PATIENT"])
    for name in levels[: levels.index(level) + 1]:
        keys.extend(LEVEL_KEYS[name])
    return keys


def matches(keyword: str, wanted: str, value: str) -> bool:
    """One key of PS3.4 C.2.2.2: universal, single value, list of UIDs, wildcard, range."""
    if wanted in ("", "*"):
        return True
    if keyword in _UIDS and "\\" in wanted:
        return value in wanted.split("\\")
    if keyword in _DATES and "-" in wanted:
        low, _, high = wanted.partition("-")
        return (not low or value >= low) and (not high or value <= high)
    if "*" in wanted or "?" in wanted:
        # Not a '.*'-per-star regex: that backtracks exponentially in the number of stars.
        return wildcard_match(wanted, value)
    return value == wanted


def _query_value(element: Any) -> str:
    value = element.value
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


class QRIndex:
    """The corpus as Q/R records, answering C-FIND identifiers and C-GET/C-MOVE keys."""

    def __init__(self, records: Iterable[Record]) -> None:
        self.records = list(records)

    @classmethod
    def from_corpus(cls, corpus: Corpus) -> QRIndex:
        records = []
        every_key = [k for keys in LEVEL_KEYS.values() for k in keys]
        for instance in corpus.instances:
            ds = dcmread(instance.path, stop_before_pixels=True)
            values = {k: str(ds[k].value) for k in every_key if k in ds}
            values["SpecificCharacterSet"] = str(ds.get("SpecificCharacterSet", ""))
            records.append(Record(values, instance.path, UID(str(ds.file_meta.TransferSyntaxUID))))
        return cls(records)

    def _level(self, identifier: Dataset, model: str) -> str:
        level = str(identifier.get("QueryRetrieveLevel", "")).strip()
        if level not in _levels(model):
            raise QueryError(f"query level {level!r} is not one of {_levels(model)}")
        return level

    def _matching(self, identifier: Dataset, model: str) -> tuple[str, list[Record]]:
        level = self._level(identifier, model)
        keys = [k for k in _keys_at_and_above(level, model) if k in identifier]
        wanted = {k: _query_value(identifier[k]) for k in keys}
        found = [
            r
            for r in self.records
            if all(matches(k, v, r.values.get(k, "")) for k, v in wanted.items())
        ]
        return level, found

    def find(self, identifier: Dataset, model: str) -> list[Dataset]:
        """The C-FIND responses to ``identifier``: one per matching entity at its level."""
        level, found = self._matching(identifier, model)
        allowed = set(_keys_at_and_above(level, model))
        unique = _UNIQUE[level]
        seen: set[str] = set()
        responses = []
        for record in found:
            key = record.values[unique]
            if key in seen:
                continue
            seen.add(key)
            ds = Dataset()
            charset = record.values.get("SpecificCharacterSet")
            if charset:
                ds.SpecificCharacterSet = charset
            ds.QueryRetrieveLevel = level
            for element in identifier:
                keyword = element.keyword
                if not keyword or keyword in ("QueryRetrieveLevel", "SpecificCharacterSet"):
                    continue
                value = record.values.get(keyword) if keyword in allowed else None
                setattr(ds, keyword, value if value is not None else None)
            responses.append(ds)
        return responses

    def retrieve(self, identifier: Dataset, model: str) -> list[Record]:
        """The instances a C-GET or C-MOVE with ``identifier`` retrieves (PS3.4 C.4.2, C.4.3)."""
        _, found = self._matching(identifier, model)
        return found


def find_handler(index: QRIndex) -> Any:
    """A C-FIND handler serving ``index``."""

    async def on_find(event: Any) -> AsyncIterator[tuple[int, Dataset | None]]:
        model = str(event.request.affected_sop_class_uid)
        try:
            responses = index.find(event.identifier, model)
        except QueryError:
            yield IDENTIFIER_MISMATCH, None
            return
        for ds in responses:
            yield 0xFF00, ds

    return on_find


def get_handler(index: QRIndex) -> Any:
    """A C-GET handler: the sub-operation count, then each matching file."""

    async def on_get(event: Any) -> AsyncIterator[Any]:
        model = str(event.request.affected_sop_class_uid)
        try:
            records = index.retrieve(event.identifier, model)
        except QueryError:
            yield IDENTIFIER_MISMATCH, None
            return
        yield len(records)
        for record in records:
            yield 0xFF00, record.path

    return on_get


def move_handler(index: QRIndex, destination: tuple[str, int] | None = None) -> Any:
    """A C-MOVE handler; without ``destination`` the AE's ``move_destinations`` decide."""

    async def on_move(event: Any) -> AsyncIterator[Any]:
        model = str(event.request.affected_sop_class_uid)
        if destination is not None:
            yield destination
        try:
            records = index.retrieve(event.identifier, model)
        except QueryError:
            yield IDENTIFIER_MISMATCH, None
            return
        yield len(records)
        for record in records:
            yield 0xFF00, record.path

    return on_move
