"""The reference archive's C-FIND answers (PS3.4 C.2.2.2 matching, C.4.1 hierarchy).

A table of queries against an archive holding the session corpus (two patients, four studies,
24 images) plus instances made here with Latin-1 person names, an empty birth date, dates
and times at the edges, and SQL-special characters. Each case names the expected matches by
a short label, or the failure status.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from pydicom import config
from pydicom.dataset import Dataset
from pydicom.uid import UID, generate_uid

from dicomio import AE, evt
from dicomio.apps.archive import Archive, add_archive_contexts
from dicomio.apps.matching import Matcher, QueryError
from dicomio.dataset import encode_dataset
from tests.conftest import LOOPBACK
from tests.corpus import Corpus

pytestmark = pytest.mark.timeout(60)

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
MR = "1.2.840.10008.5.1.4.1.1.4"
CT = "1.2.840.10008.5.1.4.1.1.2"
PATIENT_ROOT, STUDY_ROOT = "PATIENT", "STUDY"


def xuid(*parts: object) -> UID:
    return generate_uid(entropy_srcs=["dicomio-test-archive", *map(str, parts)])


def tiny(**attrs: Any) -> Dataset:
    """A small instance without pixel data, Latin-1 declared."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    return ds


#: Patients 2 and 3 (the corpus has 0 and 1): one name in two cases, an empty birth date and
#: sex, dates at the ends of the ranges, a fractional time, '_' and '%' in an accession number.
EXTRAS = [
    tiny(
        SOPClassUID=SECONDARY_CAPTURE,
        SOPInstanceUID=xuid(2, 0, 0, i),
        PatientID="PID002",
        PatientName="Ångström^Åsa",
        PatientBirthDate="",
        PatientSex="F",
        StudyInstanceUID=xuid(2, 0),
        StudyDate="20231231",
        StudyTime="235959",
        AccessionNumber="A_1%",
        StudyID="X1",
        StudyDescription="Knee left",
        SeriesInstanceUID=xuid(2, 0, 0),
        Modality="OT",
        SeriesNumber=1,
        InstanceNumber=i + 1,
    )
    for i in range(2)
] + [
    tiny(
        SOPClassUID=MR,
        SOPInstanceUID=xuid(3, 0, 0, 0),
        PatientID="PID003",
        PatientName="ÅNGSTRÖM^ÅSA",
        PatientBirthDate="19900515",
        PatientSex="",
        StudyInstanceUID=xuid(3, 0),
        StudyDate="20240301",
        StudyTime="080000.5",
        AccessionNumber="ACC30",
        StudyID="X2",
        StudyDescription="Head",
        SeriesInstanceUID=xuid(3, 0, 0),
        Modality="MR",
        SeriesNumber=1,
        InstanceNumber=1,
    ),
]


async def load(archive: Archive, corpus: Corpus) -> None:
    for instance in corpus.instances:
        await archive.store(instance.path)
    for ds in EXTRAS:
        await archive.store(ds)


@pytest.fixture(scope="module")
def archive_dir(
    corpus: Corpus, tmp_path_factory: pytest.TempPathFactory, index_db: str | None
) -> Path:
    root = tmp_path_factory.mktemp("archive")
    archive = Archive(root, db=index_db)
    anyio.run(load, archive, corpus)
    archive.close()
    return root


@pytest.fixture(scope="module")
def archive(archive_dir: Path, index_db: str | None) -> Any:
    archive = Archive(archive_dir, db=index_db)
    yield archive
    archive.close()


def study_uid(patient: int, study: int) -> str:
    from tests.corpus import uid

    return str(uid(patient, study)) if patient < 2 else str(xuid(patient, study))


def series_uid(patient: int, study: int, series: int) -> str:
    from tests.corpus import uid

    return str(uid(patient, study, series)) if patient < 2 else str(xuid(patient, study, series))


def sop_uid(patient: int, study: int, series: int, image: int) -> str:
    from tests.corpus import uid

    return str(uid(patient, study, series, image))


# Labels for expected matches: patients "P0".."P3", studies "P0S1", series "P0S1CT"/"P0S1MR"
# (patients 0 and 1; series 0 is CT, series 1 is MR), images "P0S0CT#2" (instance number).
STUDIES = {f"P{p}S{s}": study_uid(p, s) for p in range(2) for s in range(2)}
STUDIES |= {"P2S0": study_uid(2, 0), "P3S0": study_uid(3, 0)}
SERIES = {
    f"P{p}S{s}{m}": series_uid(p, s, n)
    for p in range(2)
    for s in range(2)
    for n, m in enumerate(("CT", "MR"))
}
SERIES |= {"P2S0OT": series_uid(2, 0, 0), "P3S0MR": series_uid(3, 0, 0)}
IMAGES = {
    f"P{p}S{s}{m}#{i + 1}": sop_uid(p, s, n, i)
    for p in range(2)
    for s in range(2)
    for n, m in enumerate(("CT", "MR"))
    for i in range(3)
}
LABELS = {v: k for table in (STUDIES, SERIES, IMAGES) for k, v in table.items()}
ALL_STUDIES = set(STUDIES)


def label(level: str, ds: Dataset) -> str:
    if level == "PATIENT":
        return "P" + str(ds.PatientID)[-1]
    keyword = {
        "STUDY": "StudyInstanceUID",
        "SERIES": "SeriesInstanceUID",
        "IMAGE": "SOPInstanceUID",
    }
    return LABELS[str(ds[keyword[level]].value)]


P0S0, P0S0CT = STUDIES["P0S0"], SERIES["P0S0CT"]

#: (id, model, keys, expected labels or failure status[, relational])
CASES: list[tuple[Any, ...]] = [
    # -- PATIENT level, Patient Root ----------------------------------------------------------
    (
        "patient-universal",
        PATIENT_ROOT,
        {"QueryRetrieveLevel": "PATIENT", "PatientID": ""},
        {"P0", "P1", "P2", "P3"},
    ),
    (
        "pn-single",
        PATIENT_ROOT,
        {"QueryRetrieveLevel": "PATIENT", "PatientName": "Doe^Jane"},
        {"P0"},
    ),
    (
        "pn-ignores-case",
        PATIENT_ROOT,
        {"QueryRetrieveLevel": "PATIENT", "PatientName": "doe^JANE"},
        {"P0"},
    ),
    (
        "pn-latin1-wildcard-star",
        PATIENT_ROOT,
        {"QueryRetrieveLevel": "PATIENT", "PatientName": "Müller*"},
        {"P1"},
    ),
    (
        "pn-latin1-wildcard-question",
        PATIENT_ROOT,
        {"QueryRetrieveLevel": "PATIENT", "PatientName": "M?ller^J?rgen"},
        {"P1"},
    ),
    (
        "pn-latin1-case-insensitive",
        PATIENT_ROOT,
        {"QueryRetrieveLevel": "PATIENT", "PatientName": "ångström^åsa"},
        {"P2", "P3"},
    ),
    (
        "pn-inner-wildcard",
        PATIENT_ROOT,
        {"QueryRetrieveLevel": "PATIENT", "PatientName": "*NGSTR*"},
        {"P2", "P3"},
    ),
    (
        "pn-star-is-universal",
        PATIENT_ROOT,
        {"QueryRetrieveLevel": "PATIENT", "PatientName": "*"},
        {"P0", "P1", "P2", "P3"},
    ),
    ("lo-wildcard", PATIENT_ROOT, {"QueryRetrieveLevel": "PATIENT", "PatientID": "*1"}, {"P1"}),
    (
        "lo-case-sensitive",
        PATIENT_ROOT,
        {"QueryRetrieveLevel": "PATIENT", "PatientID": "pid000"},
        set(),
    ),
    ("no-match", PATIENT_ROOT, {"QueryRetrieveLevel": "PATIENT", "PatientID": "NOPE"}, set()),
    (
        "empty-stored-value-matches",
        PATIENT_ROOT,
        {"QueryRetrieveLevel": "PATIENT", "PatientSex": "F"},
        {"P0", "P2", "P3"},
    ),
    (
        "empty-value-matching",
        PATIENT_ROOT,
        {"QueryRetrieveLevel": "PATIENT", "PatientSex": '""'},
        {"P3"},
    ),
    (
        "birth-date-range",
        PATIENT_ROOT,
        {"QueryRetrieveLevel": "PATIENT", "PatientBirthDate": "19600101-19601231"},
        {"P0", "P2"},
    ),
    # -- STUDY level, Study Root --------------------------------------------------------------
    (
        "study-universal",
        STUDY_ROOT,
        {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": ""},
        ALL_STUDIES,
    ),
    (
        "date-closed-range",
        STUDY_ROOT,
        {"QueryRetrieveLevel": "STUDY", "StudyDate": "20240101-20240131"},
        {"P0S0", "P1S0"},
    ),
    (
        "date-open-upper",
        STUDY_ROOT,
        {"QueryRetrieveLevel": "STUDY", "StudyDate": "20240201-"},
        {"P0S1", "P1S1", "P3S0"},
    ),
    (
        "date-open-lower",
        STUDY_ROOT,
        {"QueryRetrieveLevel": "STUDY", "StudyDate": "-20231231"},
        {"P2S0"},
    ),
    (
        "date-single",
        STUDY_ROOT,
        {"QueryRetrieveLevel": "STUDY", "StudyDate": "20240110"},
        {"P0S0"},
    ),
    (
        "time-open-lower",
        STUDY_ROOT,
        {"QueryRetrieveLevel": "STUDY", "StudyTime": "-1000"},
        {"P3S0"},
    ),
    (
        "time-at-precision",
        STUDY_ROOT,
        {"QueryRetrieveLevel": "STUDY", "StudyTime": "2359"},
        {"P2S0"},
    ),
    (
        "time-closed-range",
        STUDY_ROOT,
        {"QueryRetrieveLevel": "STUDY", "StudyTime": "0800-1011"},
        {"P0S0", "P0S1", "P1S0", "P1S1", "P3S0"},
    ),
    (
        "uid-list",
        STUDY_ROOT,
        {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": [STUDIES["P0S1"], STUDIES["P3S0"]]},
        {"P0S1", "P3S0"},
    ),
    (
        "uid-list-with-unknown",
        STUDY_ROOT,
        {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": [STUDIES["P1S1"], "1.2.3.4"]},
        {"P1S1"},
    ),
    (
        "sql-special-characters-are-literal",
        STUDY_ROOT,
        {"QueryRetrieveLevel": "STUDY", "AccessionNumber": "A_1%"},
        {"P2S0"},
    ),
    (
        "underscore-is-not-a-wildcard",
        STUDY_ROOT,
        {"QueryRetrieveLevel": "STUDY", "AccessionNumber": "A_1_"},
        set(),
    ),
    (
        "accession-wildcard",
        STUDY_ROOT,
        {"QueryRetrieveLevel": "STUDY", "AccessionNumber": "ACC1*"},
        {"P1S0", "P1S1"},
    ),
    (
        "modalities-in-study",
        STUDY_ROOT,
        {"QueryRetrieveLevel": "STUDY", "ModalitiesInStudy": "MR"},
        {"P0S0", "P0S1", "P1S0", "P1S1", "P3S0"},
    ),
    (
        "modalities-any-of",
        STUDY_ROOT,
        {"QueryRetrieveLevel": "STUDY", "ModalitiesInStudy": ["OT", "US"]},
        {"P2S0"},
    ),
    (
        "patient-keys-at-study-level",
        STUDY_ROOT,
        {
            "QueryRetrieveLevel": "STUDY",
            "PatientName": "Müller^Jürgen",
            "StudyDate": "20240201-20240229",
        },
        {"P1S1"},
    ),
    (
        "description-wildcard",
        STUDY_ROOT,
        {"QueryRetrieveLevel": "STUDY", "StudyDescription": "Study 0-*"},
        {"P0S0", "P0S1"},
    ),
    ("study-id", STUDY_ROOT, {"QueryRetrieveLevel": "STUDY", "StudyID": "S1"}, {"P0S1", "P1S1"}),
    # -- cases that guard the SQL pre-filter: it must stay a superset of the matches --------
    (
        "wildcard-keeps-empty-stored-values",
        PATIENT_ROOT,
        {"QueryRetrieveLevel": "PATIENT", "PatientSex": "F*"},
        {"P0", "P2", "P3"},
    ),
    (
        "pn-ascii-prefix-ignores-case",
        PATIENT_ROOT,
        {"QueryRetrieveLevel": "PATIENT", "PatientName": "mü*"},
        {"P1"},
    ),
    (
        "pn-non-ascii-first-ignores-case",
        PATIENT_ROOT,
        {"QueryRetrieveLevel": "PATIENT", "PatientName": "åNGSTRÖM*"},
        {"P2", "P3"},
    ),
    (
        "modality-exact-series",
        STUDY_ROOT,
        {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": P0S0, "Modality": "MR"},
        {"P0S0MR"},
    ),
    # -- STUDY level, Patient Root: the PATIENT level's unique key is needed ------------------
    (
        "patient-root-study",
        PATIENT_ROOT,
        {"QueryRetrieveLevel": "STUDY", "PatientID": "PID000", "StudyInstanceUID": ""},
        {"P0S0", "P0S1"},
    ),
    (
        "patient-root-study-needs-patient-id",
        PATIENT_ROOT,
        {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": ""},
        0xA900,
    ),
    (
        "unique-key-above-needs-single-value",
        PATIENT_ROOT,
        {"QueryRetrieveLevel": "STUDY", "PatientID": "PID*", "StudyInstanceUID": ""},
        0xA900,
    ),
    (
        "matching-above-level-is-relational",
        PATIENT_ROOT,
        {"QueryRetrieveLevel": "STUDY", "PatientID": "PID000", "PatientName": "Doe*"},
        0xA900,
    ),
    (
        "relational-matching-above-level",
        PATIENT_ROOT,
        {"QueryRetrieveLevel": "STUDY", "PatientName": "Doe*", "StudyInstanceUID": ""},
        {"P0S0", "P0S1"},
        True,
    ),
    (
        "return-key-above-level-is-fine",
        PATIENT_ROOT,
        {
            "QueryRetrieveLevel": "STUDY",
            "PatientID": "PID001",
            "PatientName": "",
            "StudyDate": "20240201-",
        },
        {"P1S1"},
    ),
    # -- SERIES and IMAGE levels -------------------------------------------------------------
    (
        "series-modality",
        STUDY_ROOT,
        {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": P0S0, "Modality": "CT"},
        {"P0S0CT"},
    ),
    (
        "series-number",
        STUDY_ROOT,
        {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": P0S0, "SeriesNumber": "2"},
        {"P0S0MR"},
    ),
    (
        "series-needs-study-uid",
        STUDY_ROOT,
        {"QueryRetrieveLevel": "SERIES", "Modality": "CT"},
        0xA900,
    ),
    (
        "key-below-level-refused",
        STUDY_ROOT,
        {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": P0S0, "SOPInstanceUID": ""},
        0xA900,
    ),
    (
        "relational-series",
        STUDY_ROOT,
        {"QueryRetrieveLevel": "SERIES", "Modality": "MR"},
        {"P0S0MR", "P0S1MR", "P1S0MR", "P1S1MR", "P3S0MR"},
        True,
    ),
    (
        "image-instance-number",
        STUDY_ROOT,
        {
            "QueryRetrieveLevel": "IMAGE",
            "StudyInstanceUID": P0S0,
            "SeriesInstanceUID": P0S0CT,
            "InstanceNumber": "2",
        },
        {"P0S0CT#2"},
    ),
    (
        "image-uid-list",
        STUDY_ROOT,
        {
            "QueryRetrieveLevel": "IMAGE",
            "StudyInstanceUID": P0S0,
            "SeriesInstanceUID": P0S0CT,
            "SOPInstanceUID": [IMAGES["P0S0CT#1"], IMAGES["P0S0CT#3"]],
        },
        {"P0S0CT#1", "P0S0CT#3"},
    ),
    (
        "patient-root-image",
        PATIENT_ROOT,
        {
            "QueryRetrieveLevel": "IMAGE",
            "PatientID": "PID000",
            "StudyInstanceUID": P0S0,
            "SeriesInstanceUID": P0S0CT,
            "SOPInstanceUID": "",
        },
        {"P0S0CT#1", "P0S0CT#2", "P0S0CT#3"},
    ),
    (
        "image-sop-class",
        STUDY_ROOT,
        {
            "QueryRetrieveLevel": "IMAGE",
            "StudyInstanceUID": P0S0,
            "SeriesInstanceUID": P0S0CT,
            "SOPClassUID": MR,
        },
        set(),
    ),
    (
        "image-wrong-series-for-study",
        STUDY_ROOT,
        {
            "QueryRetrieveLevel": "IMAGE",
            "StudyInstanceUID": STUDIES["P1S0"],
            "SeriesInstanceUID": P0S0CT,
        },
        set(),
    ),
    # -- levels the model does not have ----------------------------------------------------
    (
        "study-root-has-no-patient-level",
        STUDY_ROOT,
        {"QueryRetrieveLevel": "PATIENT", "PatientID": ""},
        0xA900,
    ),
    ("unknown-level", PATIENT_ROOT, {"QueryRetrieveLevel": "FRAME", "PatientID": ""}, 0xA900),
    ("no-level", PATIENT_ROOT, {"PatientID": ""}, 0xA900),
]


def identifier(keys: dict[str, Any]) -> Dataset:
    """An identifier; query syntax such as '""' or '2024-' is not a valid value of its VR."""
    ds = Dataset()
    if any(isinstance(v, str) and not v.isascii() for v in keys.values()):
        ds.SpecificCharacterSet = "ISO_IR 100"
    with config.disable_value_validation():
        for keyword, value in keys.items():
            setattr(ds, keyword, value if value != "" else None)
    return ds


UNIQUE = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}


def run_case(archive: Archive, model: str, keys: dict[str, Any]) -> list[Dataset]:
    """C-FIND ``keys``, also asking for the level's unique key (to label the answers)."""
    unique = UNIQUE.get(keys.get("QueryRetrieveLevel", ""))
    if unique is not None and unique not in keys:
        keys = {**keys, unique: ""}
    return anyio.run(archive.find, None, identifier(keys), model)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_find(
    archive: Archive, archive_dir: Path, index_db: str | None, case: tuple[Any, ...]
) -> None:
    _name, model, keys, expected, *rest = case
    if rest and rest[0]:
        archive = Archive(archive_dir, db=index_db, relational=True)
    try:
        if isinstance(expected, int):
            with pytest.raises(QueryError) as info:
                run_case(archive, model, keys)
            assert info.value.status == expected
            return
        results = run_case(archive, model, keys)
    finally:
        if rest and rest[0]:
            archive.close()
    level = keys["QueryRetrieveLevel"]
    labels = [label(level, ds) for ds in results]
    assert len(labels) == len(set(labels)), "an entity was returned twice"
    assert set(labels) == expected


def test_enough_cases() -> None:
    assert len(CASES) >= 30


def test_return_keys_are_the_requested_ones(archive: Archive) -> None:
    keys = {
        "QueryRetrieveLevel": "STUDY",
        "StudyInstanceUID": P0S0,
        "PatientName": "",
        "ModalitiesInStudy": "",
        "NumberOfStudyRelatedSeries": "",
        "NumberOfStudyRelatedInstances": "",
        "StudyDate": "",
        "OtherPatientIDs": "",
    }
    (ds,) = run_case(archive, STUDY_ROOT, keys)
    assert {e.keyword for e in ds} == set(keys)
    assert ds.PatientName == "Doe^Jane"
    assert list(ds.ModalitiesInStudy) == ["CT", "MR"]
    assert int(ds.NumberOfStudyRelatedSeries) == 2
    assert int(ds.NumberOfStudyRelatedInstances) == 6
    assert ds.StudyDate == "20240110"
    assert ds.OtherPatientIDs in (None, "")  # not indexed: returned with zero length


def test_latin1_names_are_returned_in_latin1(archive: Archive) -> None:
    (ds,) = run_case(
        archive,
        PATIENT_ROOT,
        {
            "QueryRetrieveLevel": "PATIENT",
            "PatientID": "PID002",
            "PatientName": "",
            "NumberOfPatientRelatedInstances": "",
        },
    )
    assert ds.SpecificCharacterSet == "ISO_IR 100"
    assert str(ds.PatientName) == "Ångström^Åsa"
    assert int(ds.NumberOfPatientRelatedInstances) == 2
    raw = encode_dataset(ds, UID("1.2.840.10008.1.2.1"))
    assert "Ångström^Åsa".encode("latin-1") in raw


def test_retrieve_paths(archive: Archive) -> None:
    q = identifier(
        {
            "QueryRetrieveLevel": "SERIES",
            "StudyInstanceUID": P0S0,
            "SeriesInstanceUID": [P0S0CT, SERIES["P0S0MR"]],
        }
    )
    paths = anyio.run(archive.paths_for, None, q, STUDY_ROOT)
    assert len(paths) == 6 and all(p.is_file() for p in paths)
    q = identifier({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": P0S0})
    with pytest.raises(QueryError):
        anyio.run(archive.paths_for, None, q, PATIENT_ROOT)  # needs PatientID


@pytest.mark.parametrize(
    ("vr", "query", "stored", "expected"),
    [
        ("DT", "20240101-20240102", "20240101120000-0500", True),
        ("DT", "20240101120000-0500", "20240101120000", True),
        ("DT", "2023-", "20240101", True),
        ("TM", "10:10-", "101010", True),
        ("DA", "2024.01.10", "20240110", True),
        ("CS", "C?", "CT", True),
        ("IS", "2", " 2", True),
        ("LO", "a*b", "a*b", True),
        ("LO", "a?b", "ab", False),
    ],
)
def test_matcher(vr: str, query: str, stored: str, expected: bool) -> None:
    assert Matcher.build(vr, [query]).matches(stored) is expected


def test_restart_answers_the_same(
    archive: Archive, archive_dir: Path, index_db: str | None
) -> None:
    """A new Archive on the same folder and index (as after a restart) gives the same
    answers, in the same order."""
    archive.close()
    again = Archive(archive_dir, db=index_db)
    try:
        for case in CASES:
            _name, model, keys, expected, *rest = case
            if isinstance(expected, int) or rest:
                continue
            level = keys["QueryRetrieveLevel"]
            before = [label(level, d) for d in run_case(archive, model, keys)]
            after = [label(level, d) for d in run_case(again, model, keys)]
            assert before == after
            assert set(after) == expected
    finally:
        again.close()


def test_second_store_replaces_the_first(tmp_path: Path, empty_index_db: str | None) -> None:
    archive = Archive(tmp_path / "a", db=empty_index_db)
    sop = xuid("replace")
    first = tiny(
        SOPClassUID=CT,
        SOPInstanceUID=sop,
        PatientID="R1",
        PatientName="First^One",
        StudyInstanceUID=xuid("r", 1),
        SeriesInstanceUID=xuid("r", 1, 1),
        Modality="CT",
        InstanceNumber=1,
    )
    second = tiny(
        SOPClassUID=CT,
        SOPInstanceUID=sop,
        PatientID="R2",
        PatientName="Second^Two",
        StudyInstanceUID=xuid("r", 2),
        SeriesInstanceUID=xuid("r", 2, 1),
        Modality="CT",
        InstanceNumber=7,
    )

    async def main() -> tuple[Path, Path, list[Dataset], list[Dataset]]:
        a = await archive.store(first)
        b = await archive.store(second)
        patients = await archive.find(
            "PATIENT", identifier({"PatientID": "", "PatientName": ""}), PATIENT_ROOT
        )
        images = await archive.find(
            "IMAGE",
            identifier(
                {
                    "StudyInstanceUID": str(xuid("r", 2)),
                    "SeriesInstanceUID": str(xuid("r", 2, 1)),
                    "InstanceNumber": "",
                }
            ),
            STUDY_ROOT,
        )
        return a, b, patients, images

    try:
        old, new, patients, images = anyio.run(main)
        assert anyio.run(archive.count) == 1
        assert not old.exists() and new.is_file()
        assert [str(p.PatientID) for p in patients] == ["R2"]  # the orphaned parents are gone
        assert [int(i.InstanceNumber) for i in images] == [7]
    finally:
        archive.close()


#: Stored StudyDate values in every form the index may hold, and the date ranges asked for:
#: the SQL filter on dates must pass every study that Query.matches accepts.
STORED_DATES = ["20240215", "2024.02.16", "", "202402", "20240301", "20231231", "2024021"]
DATE_QUERIES = [
    "20240201-20240229",
    "20240215",
    "20240216",
    "-20231231",
    "20240301-",
    "2024-2025",  # bounds that are not full dates: matched in Python alone
    "20240201-20240215",
]


def test_date_ranges_filtered_in_sql_answer_as_matching_does(
    tmp_path: Path, empty_index_db: str | None
) -> None:
    archive = Archive(tmp_path / "a", db=empty_index_db)
    studies = {str(xuid("date", i)): date for i, date in enumerate(STORED_DATES)}

    async def main() -> dict[str, set[str]]:
        for i, (study, date) in enumerate(studies.items()):
            await archive.store(
                tiny(
                    SOPClassUID=CT,
                    SOPInstanceUID=xuid("date", i, 1, 1),
                    PatientID=f"D{i}",
                    StudyInstanceUID=study,
                    StudyDate=date,
                    SeriesInstanceUID=xuid("date", i, 1),
                    Modality="CT",
                )
            )
        answers = {}
        for query in DATE_QUERIES:
            found = await archive.find(
                "STUDY", identifier({"StudyInstanceUID": "", "StudyDate": query}), STUDY_ROOT
            )
            answers[query] = {str(ds.StudyInstanceUID) for ds in found}
        return answers

    try:
        # 2024.02.16 is not a valid DA to pydicom, stored or answered.
        with config.disable_value_validation():
            answers = anyio.run(main)
    finally:
        archive.close()
    for query in DATE_QUERIES:
        matcher = Matcher.build("DA", [query])
        expected = {study for study, date in studies.items() if matcher.matches(date)}
        assert answers[query] == expected, query
    # The forms the SQL filter cannot compare are among the answers where they match.
    assert str(xuid("date", 1)) in answers["20240216"]  # 2024.02.16
    assert str(xuid("date", 2)) in answers["20240215"]  # empty: matches any date
    assert answers["20240215"] == {str(xuid("date", 0)), str(xuid("date", 2))}


# -- concurrent stores over the network -----------------------------------------------------


@pytest.mark.anyio
async def test_concurrent_stores_from_several_associations(
    tmp_path: Path, empty_index_db: str | None
) -> None:
    archive = await Archive(tmp_path / "a", db=empty_index_db).open()
    scp = AE("ARCHIVE")
    add_archive_contexts(scp)
    scp.async_ops_window = (8, 8)
    associations, per_association = 6, 20

    def make(n: int, i: int) -> Dataset:
        return tiny(
            SOPClassUID=CT,
            SOPInstanceUID=xuid("c", n, i),
            PatientID=f"C{n % 2}",
            PatientName=f"Conc^{n % 2}",
            StudyInstanceUID=xuid("c", n % 3),
            SeriesInstanceUID=xuid("c", n % 3, n),
            Modality="CT",
            InstanceNumber=i + 1,
        )

    statuses: list[int] = []

    async def client(n: int, port: int) -> None:
        scu = AE(f"SCU{n}")
        scu.add_requested_context(CT, "1.2.840.10008.1.2.1")
        scu.async_ops_window = (4, 1)

        async def one(assoc: Any, i: int) -> None:
            statuses.append(int((await assoc.send_c_store(make(n, i))).Status))

        async with (
            scu.associate(LOOPBACK, port, ae_title="ARCHIVE") as assoc,
            anyio.create_task_group() as tg,
        ):
            for i in range(per_association):
                tg.start_soon(one, assoc, i)

    try:
        with anyio.fail_after(40):
            async with (
                scp.start_server((LOOPBACK, 0), evt_handlers=archive.handlers()) as server,
                anyio.create_task_group() as tg,
            ):
                for n in range(associations):
                    tg.start_soon(client, n, server.port)
        assert statuses == [0] * (associations * per_association)
        assert await archive.count() == associations * per_association
        series = await archive.find(
            "STUDY",
            identifier({"StudyInstanceUID": "", "NumberOfStudyRelatedInstances": ""}),
            STUDY_ROOT,
        )
        assert sorted(int(s.NumberOfStudyRelatedInstances) for s in series) == [40, 40, 40]
        assert not list((tmp_path / "a" / "incoming").iterdir())
    finally:
        archive.close()


# -- the archive's C-FIND, C-GET and C-MOVE over the network ----------------------------------------


@pytest.mark.anyio
async def test_find_get_move_over_the_network(
    archive_dir: Path, index_db: str | None, corpus: Corpus, tmp_path: Path
) -> None:
    archive = Archive(archive_dir, db=index_db)
    scp = AE("ARCHIVE")
    add_archive_contexts(scp)
    received: list[str] = []

    async def on_store(event: Any) -> int:
        received.append(str(event.request.affected_sop_instance_uid))
        return 0

    sink = AE("SINK")
    sink.add_supported_context(
        CT,
        [
            "1.2.840.10008.1.2.1",
            "1.2.840.10008.1.2",
            "1.2.840.10008.1.2.2",
            "1.2.840.10008.1.2.1.99",
            "1.2.840.10008.1.2.5",
        ],
    )
    sink.add_supported_context(
        MR,
        [
            "1.2.840.10008.1.2.1",
            "1.2.840.10008.1.2",
            "1.2.840.10008.1.2.2",
            "1.2.840.10008.1.2.1.99",
            "1.2.840.10008.1.2.5",
        ],
    )
    find = "1.2.840.10008.5.1.4.1.2.2.1"
    move = "1.2.840.10008.5.1.4.1.2.2.2"
    try:
        with anyio.fail_after(40):
            async with sink.start_server(
                (LOOPBACK, 0), evt_handlers=[(evt.EVT_C_STORE, on_store)]
            ) as sink_server:
                scp.move_destinations = {"SINK": (LOOPBACK, sink_server.port)}
                async with scp.start_server(
                    (LOOPBACK, 0), evt_handlers=archive.handlers()
                ) as server:
                    scu = AE("SCU")
                    scu.add_requested_context(find)
                    scu.add_requested_context(move)
                    async with scu.associate(LOOPBACK, server.port, ae_title="ARCHIVE") as assoc:
                        q = identifier(
                            {
                                "QueryRetrieveLevel": "STUDY",
                                "StudyInstanceUID": "",
                                "PatientName": "Müller*",
                            }
                        )
                        found = [
                            ident
                            async for status, ident in assoc.send_c_find(q, find)
                            if ident is not None
                        ]
                        assert {label("STUDY", d) for d in found} == {"P1S0", "P1S1"}
                        bad = identifier({"QueryRetrieveLevel": "PATIENT", "PatientID": ""})
                        finals = [int(s.Status) async for s, _ in assoc.send_c_find(bad, find)]
                        assert finals == [0xA900]
                        q = identifier(
                            {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": STUDIES["P1S0"]}
                        )
                        last = [s async for s, _ in assoc.send_c_move(q, "SINK", move)][-1]
                        assert int(last.Status) == 0
                        assert int(last.NumberOfCompletedSuboperations) == 6
                        # A retrieve without the unique key of its level is refused.
                        q = identifier(
                            {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": STUDIES["P1S0"]}
                        )
                        codes = [
                            int(s.Status) async for s, _ in assoc.send_c_move(q, "SINK", move)
                        ]
                        assert codes == [0xA900]
    finally:
        archive.close()
    assert sorted(received) == sorted(i.sop_uid for i in corpus.by(study_uid=STUDIES["P1S0"]))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts /proc/self/fd")
def test_queries_from_many_worker_threads_keep_few_connections_open(archive: Archive) -> None:
    """Each ``anyio.run`` has its own worker threads, as a server's loop gets new ones when
    anyio retires idle workers: queries from 40 threads must not leave 40 connections."""

    def open_fds() -> int:
        return len(list(Path("/proc/self/fd").iterdir()))

    expected = anyio.run(archive.count)
    before = open_fds()
    for _ in range(40):
        assert anyio.run(archive.count) == expected
    # SQLite in WAL mode holds up to three descriptors per connection (db, -wal, -shm).
    assert open_fds() - before <= 3 * 4
