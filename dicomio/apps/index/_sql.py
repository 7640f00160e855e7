"""The index's SQL, written once for SQLite and PostgreSQL: a ``Dialect`` holds the few
places where they differ (parameter marks, string aggregation, a list parameter, the
numeric sort of IS values, case-insensitive LIKE).

Queries (PS3.4 C.4.1.3): SQL selects a superset of the matches and ``Query.matches`` has the
last word (``dicomio.apps.matching``), so both backends answer alike as long as the superset
holds; ordering is by the C collation on both (PostgreSQL's columns are ``COLLATE "C"``,
SQLite compares bytes), so answers also come in the same order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import attrs

from dicomio.apps.matching import KEYS, UNIQUE_KEYS, Kind, Level, Matcher, Query

__all__ = ["POSTGRES", "SQLITE", "Dialect", "InstanceRecord", "select_paths", "select_rows"]


@attrs.frozen(kw_only=True)
class Dialect:
    """Where SQLite's and PostgreSQL's SQL differ, for the queries here."""

    name: str
    #: SQL for the distinct non-empty modalities of a study, comma-separated (alias x).
    modalities: str
    #: ``{column} IN <this>`` with one parameter holding a list of values.
    in_list: str
    #: An integer sort key for an IS column (``{}`` is the column); non-numbers sort as 0.
    int_order: str
    #: LIKE that ignores ASCII case (SQLite's LIKE does; PostgreSQL needs ILIKE).
    like: str
    #: True where the column (``{}``) holds exactly eight ASCII digits: a DA value in the
    #: form that compares as a string the way ``Query.matches`` compares it.
    eight_digits: str

    def sql(self, text: str) -> str:
        """``text`` with this driver's parameter marks (the SQL here is written with ``?``)."""
        return text if self.name == "sqlite" else text.replace("?", "%s")

    def list_param(self, values: Sequence[str]) -> Any:
        # One parameter whatever the list's length: SQLite caps the number of parameters
        # of a statement (32,766 by default), and a List of UID Matching key (PS3.4
        # C.2.2.2.2) may hold tens of thousands of values.
        return json.dumps(list(values)) if self.name == "sqlite" else list(values)


SQLITE = Dialect(
    name="sqlite",
    modalities="group_concat(DISTINCT x.modality)",
    in_list="(SELECT value FROM json_each(?))",
    int_order="CAST({} AS INTEGER)",
    like="LIKE",
    eight_digits="{} GLOB '[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]'",
)
POSTGRES = Dialect(
    name="postgres",
    modalities="string_agg(DISTINCT x.modality, ',')",
    in_list="(SELECT unnest(?::text[]))",
    # CAST('' AS INTEGER) fails on PostgreSQL; SQLite reads the leading integer, or 0.
    # (No question mark in it: ``Dialect.sql`` turns those into parameter marks.)
    int_order="COALESCE(substring({} from '^ *([-+]{{0,1}}[0-9]{{1,18}})')::bigint, 0)",
    like="ILIKE",
    eight_digits="{} ~ '^[0-9]{{8}}$'",
)


@attrs.frozen(kw_only=True)
class InstanceRecord:
    """One instance's row as the index stores it, with its study's and series' attributes."""

    sop_uid: str
    sop_class_uid: str
    transfer_syntax: str
    path: str  # relative to the archive's files/ folder, POSIX separators
    size: int
    instance_number: str
    series_uid: str
    modality: str
    series_number: str
    series_description: str
    study_uid: str
    study_date: str
    study_time: str
    accession_number: str
    study_id: str
    study_description: str
    referring_physician: str
    patient_id: str
    patient_name: str
    birth_date: str
    sex: str

    @property
    def patient(self) -> tuple[str, str, str, str]:
        return (self.patient_id, self.patient_name, self.birth_date, self.sex)

    @property
    def patient_key(self) -> str:
        """Who the study's patient is: the Patient ID, or, without one, the study alone.

        A backslash cannot occur in a Patient ID (it separates values, PS3.5 6.2), so a key
        made for a study without Patient ID never equals a real Patient ID.
        """
        return self.patient_id if self.patient_id else "\\" + self.study_uid


def _same_patient(alias: str) -> str:
    """SQL: the study ``alias`` belongs to the patient entity ``p`` (see ``FROM``)."""
    return " AND ".join(
        f"{alias}.{c} = p.{c}" for c in ("patient_key", "patient_name", "birth_date", "sex")
    )


#: How each key is read at each query level: an SQL expression over the aliases p (patient),
#: st (study), se (series), i (instance). Counts and Modalities in Study are computed;
#: ``{modalities}`` is the dialect's aggregate.
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
        "(SELECT {modalities} FROM series x WHERE x.study_uid = st.study_uid AND x.modality != '')"
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

#: The patient attributes live with each study (as stored with it), so a study answers with
#: its own patient's name even when other studies of the same Patient ID say otherwise. A
#: PATIENT-level entity is one Patient ID (or one study without Patient ID) with one set
#: of name, birth date and sex: a patient recorded under two names answers twice. (The
#: patient key determines the Patient ID; grouping by both is what PostgreSQL needs.)
_FROM: dict[Level, str] = {
    Level.PATIENT: (
        "(SELECT patient_key, patient_id, patient_name, birth_date, sex FROM studies"
        " GROUP BY patient_key, patient_id, patient_name, birth_date, sex) p"
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
    Level.SERIES: "st.study_uid, {int:se.series_number}, se.series_uid",
    Level.IMAGE: "se.series_uid, {int:i.instance_number}, i.sop_uid",
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
_PATIENT_ALIAS = re.compile(r"\bp\.")
_INT_ORDER = re.compile(r"\{int:([a-z_.]+)\}")


def _column(keyword: str, level: Level, dialect: Dialect) -> str:
    """The SQL for ``keyword`` in the FROM clause of ``level``: below PATIENT, the patient
    attributes are the study's own (alias ``st``), not the patient entity's (``p``)."""
    expression = _COLUMNS[keyword].replace("{modalities}", dialect.modalities)
    if level is Level.PATIENT:
        return expression
    return _PATIENT_ALIAS.sub("st.", expression)


def _column_level(keyword: str) -> Level:
    if keyword in _COUNTS_LEVEL:
        return _COUNTS_LEVEL[keyword]
    return _ALIAS_LEVEL[_COLUMNS[keyword].split(".", 1)[0]]


def _order(level: Level, dialect: Dialect) -> str:
    return _INT_ORDER.sub(lambda m: dialect.int_order.format(m.group(1)), _ORDER[level])


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


_EIGHT_DIGITS = re.compile(r"[0-9]{8}")


def _date_bounds(matcher: Matcher) -> tuple[str, str] | None:
    """A DA range (or single date) as the inclusive bounds an eight-digit stored date is
    compared with, or None if a bound is not a full date (SQL would then differ from
    ``Query.matches``, which compares at each bound's precision)."""
    ((low, high),) = matcher.ranges
    if any(bound and not _EIGHT_DIGITS.fullmatch(bound) for bound in (low, high)):
        return None
    return low or "00000000", high or "99999999"


def where(
    query: Query, dialect: Dialect, from_level: Level | None = None
) -> tuple[str, list[Any]]:
    """SQL that selects a superset of the matches; ``Query.matches`` has the last word.

    Besides the unique keys, two kinds of condition are pushed into SQL so that the index,
    not Python, discards most rows: an exact value of a key that is single-valued by nature,
    and the ASCII literal prefix of a wildcard (compared ignoring ASCII case, so the prefix
    stops at the first non-ASCII character to stay a superset when names match ignoring
    case). Stored empty values match any key (PS3.4 C.2.2.1.2), so they always pass.
    """
    clauses: list[str] = []
    params: list[Any] = []
    from_level = query.level if from_level is None else from_level
    for level in query.model.levels:
        values = query.unique_values(level)
        if values is None:
            continue
        column = _column(UNIQUE_KEYS[level], from_level, dialect)
        if len(values) == 1:
            clauses.append(f"{column} = ?")
            params.append(values[0])
        else:
            clauses.append(f"{column} IN {dialect.in_list}")
            params.append(dialect.list_param(values))
    for cond in query.conditions:
        if cond.keyword not in _COLUMNS:
            continue
        column = _column(cond.keyword, from_level, dialect)
        if not _PLAIN_COLUMN.fullmatch(column) or _column_level(cond.keyword) > query.level:
            continue
        matcher = cond.matcher
        if len(matcher.values) != 1:
            continue
        if matcher.ranges:
            bounds = _date_bounds(matcher) if KEYS[cond.keyword].vr == "DA" else None
            if bounds is not None:
                # Dates stored in another form (ACR-NEMA's 2024.01.31, a partial or empty
                # value) pass to Query.matches, which normalises them.
                clauses.append(
                    f"({column} BETWEEN ? AND ? OR {column} IS NULL"
                    f" OR NOT ({dialect.eight_digits.format(column)}))"
                )
                params.extend(bounds)
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
                    f"({column} {dialect.like} ? ESCAPE '\\' OR {column} IS NULL OR {column} = '')"
                )
                params.append(_like_escape(prefix) + "%")
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def select_rows(query: Query, dialect: Dialect) -> tuple[str, list[Any], list[str]]:
    """The SELECT for a C-FIND: its SQL, parameters, and the keyword of each column."""
    wanted = dict.fromkeys([*query.return_keys, *(c.keyword for c in query.conditions)])
    keywords = [k for k in wanted if k in _COLUMNS and _column_level(k) <= query.level]
    select = ", ".join(_column(k, query.level, dialect) for k in keywords) or "1"
    clause, params = where(query, dialect)
    sql = (
        f"SELECT {select} FROM {_FROM[query.level]}{clause}"
        f" ORDER BY {_order(query.level, dialect)}"
    )
    return dialect.sql(sql), params, keywords


def select_paths(query: Query, dialect: Dialect) -> tuple[str, list[Any]]:
    """The SELECT for a C-MOVE or C-GET: the relative paths of the instances selected."""
    clause, params = where(query, dialect, Level.IMAGE)
    sql = (
        f"SELECT i.path FROM {_FROM[Level.IMAGE]}{clause} ORDER BY {_order(Level.IMAGE, dialect)}"
    )
    return dialect.sql(sql), params


def matching_rows(query: Query, keywords: list[str], cursor: Any) -> list[dict[str, Any]]:
    """The rows of ``cursor`` (from ``select_rows``) that match ``query``, as dicts."""
    rows = []
    for values in cursor:
        row = dict(zip(keywords, values, strict=True))
        if "ModalitiesInStudy" in row:
            text = row["ModalitiesInStudy"] or ""
            row["ModalitiesInStudy"] = sorted(v for v in text.split(",") if v)
        if query.matches(row):
            rows.append(row)
    return rows
