"""The archive's defects under hostile input, one test or more each (issue #13 items 1, 2, 4, 5).

- Wild card matching takes time linear in value length x pattern length (PS3.4 C.2.2.2.4),
  and no single query stalls the server (a 30-star pattern, 40,000 UIDs in one list).
- File names are an injective function of the identifiers (storescp's too); a SOP Instance
  UID that is not a UID (PS3.5 9.1) is refused; no two index rows share a file.
- Indexing a file reads only the attributes the index needs, whatever else it holds.
- Patients: an empty Patient ID does not merge patients, and each study answers with the
  patient attributes stored with it; an index made by the earlier schema still opens.

Every network case also checks that a fresh association is served promptly meanwhile.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import struct
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydicom import config, dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from dicomio import AE
from dicomio.apps import matching
from dicomio.apps._common import safe_name
from dicomio.apps._receive import Receiver
from dicomio.apps.archive import Archive
from dicomio.apps.matching import Matcher
from tests.conftest import DCMTK_ENV, LOOPBACK, free_port, stop, wait_for_port

pytestmark = pytest.mark.timeout(120)

CT = "1.2.840.10008.5.1.4.1.1.2"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
VERIFICATION = "1.2.840.10008.1.1"
STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
PATIENT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"


def xuid(*parts: object) -> str:
    return str(generate_uid(entropy_srcs=["dicomio-test-hostile", *map(str, parts)]))


def instance(**attrs: Any) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.Modality = "OT"
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    return ds


def query(**keys: Any) -> Dataset:
    ds = Dataset()
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


# -- a qrscp subprocess and the SCU side ------------------------------------------------------


@pytest.fixture
def qrscp_on(tmp_path: Path) -> Iterator[Any]:
    """Start ``python -m dicomio qrscp`` on a data folder; yields a starter, stops it after."""
    procs: list[Any] = []

    def start(data: Path) -> tuple[int, int]:
        import subprocess

        port = free_port()
        log = open(tmp_path / f"qrscp-{port}.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dicomio",
                "qrscp",
                str(port),
                "--data",
                str(data),
                "--bind",
                LOOPBACK,
                "-aet",
                "ARCHIVE",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=DCMTK_ENV,
        )
        procs.append((proc, log))
        wait_for_port(port, proc, timeout=20)
        return port, proc.pid

    yield start
    for proc, log in procs:
        stop(proc)
        log.close()


def scu() -> AE:
    ae = AE("SCU")
    ae.add_requested_context(VERIFICATION)
    # Implicit VR: a list of 40,000 UIDs passes the 64 KiB of an explicit VR UI length field.
    ae.add_requested_context(STUDY_FIND, ImplicitVRLittleEndian)
    ae.add_requested_context(PATIENT_FIND, ImplicitVRLittleEndian)
    ae.add_requested_context(SECONDARY_CAPTURE, ExplicitVRLittleEndian)
    return ae


async def echo_time(port: int) -> float:
    """Seconds a C-ECHO on a new association takes; fails the test beyond 1 s."""
    start = time.monotonic()
    with anyio.fail_after(1.0):
        async with scu().associate(LOOPBACK, port, ae_title="ARCHIVE") as assoc:
            assert int((await assoc.send_c_echo()).Status) == 0
    return time.monotonic() - start


@asynccontextmanager
async def association(port: int) -> AsyncIterator[Any]:
    async with scu().associate(LOOPBACK, port, ae_title="ARCHIVE") as assoc:
        yield assoc


async def find(assoc: Any, identifier: Dataset, model: str = STUDY_FIND) -> tuple[int, list[Any]]:
    answers, final = [], -1
    async for status, ident in assoc.send_c_find(identifier, model):
        if ident is not None and int(status.Status) in (0xFF00, 0xFF01):
            answers.append(ident)
        else:
            final = int(status.Status)
    return final, answers


# -- item 1: wild card matching in linear time ------------------------------------------------


def reference_match(pattern: str, value: str) -> bool:
    """The obvious regular expression, for small inputs only (it can backtrack badly)."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.DOTALL) is not None


@settings(max_examples=600, deadline=None)
@given(st.text("ab*?", max_size=8), st.text("ab", max_size=10))
@example("*a*a*a*b", "aaaaaaaaaa")
@example("a*", "a")
@example("?*?", "a")
@example("*?", "")
def test_wildcard_agrees_with_a_reference(pattern: str, value: str) -> None:
    assert matching.wildcard_match(pattern, value) == reference_match(pattern, value)


def test_wildcard_matcher_is_linear() -> None:
    value = "A" * 64
    for stars in (10, 20, 30):
        pattern = "*A" * (stars - 1) + "*B"
        matcher = Matcher.build("PN", [pattern], ignore_case=True)
        start = time.perf_counter()
        assert not matcher.matches(value)
        assert matcher.matches(value[:-1] + "b")
        assert time.perf_counter() - start < 0.05
    # Long values and long patterns: bounded by their product, not their star count.
    pattern = "*" + "?*" * 2000
    start = time.perf_counter()
    assert matching.wildcard_match(pattern, "x" * 5000)
    assert not matching.wildcard_match(pattern, "x" * 1999)
    assert not matching.wildcard_match("*a?" * 3000 + "*c", "ab" * 10000)
    assert time.perf_counter() - start < 1.0


@pytest.mark.anyio
async def test_thirty_star_find_answers_at_once_and_echo_meanwhile(
    tmp_path: Path, qrscp_on: Any
) -> None:
    data = tmp_path / "data"
    async with Archive(data) as archive:
        for n, name in enumerate(("A" * 64, "A" * 63 + "B", "Short^Name")):
            await archive.store(
                instance(
                    SOPInstanceUID=xuid("w", n),
                    PatientID=f"W{n}",
                    PatientName=name,
                    StudyInstanceUID=xuid("w", n, 0),
                    SeriesInstanceUID=xuid("w", n, 0, 0),
                )
            )
    port, _ = qrscp_on(data)
    stars = "*A" * 29 + "*B"
    timings: dict[str, float] = {}

    async def hostile() -> None:
        start = time.monotonic()
        async with association(port) as assoc:
            final, answers = await find(
                assoc, query(QueryRetrieveLevel="STUDY", StudyInstanceUID="", PatientName=stars)
            )
        timings["find"] = time.monotonic() - start
        assert final == 0
        assert [str(a.PatientName) for a in answers] == ["A" * 63 + "B"]

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(hostile)
            timings["echo during"] = await echo_time(port)
        timings["echo after"] = await echo_time(port)
    assert timings["find"] < 1.0, timings


@pytest.mark.anyio
async def test_forty_thousand_uids_in_one_list(tmp_path: Path, qrscp_on: Any) -> None:
    data = tmp_path / "data"
    async with Archive(data) as archive:
        for n in range(3):
            await archive.store(
                instance(
                    SOPInstanceUID=xuid("l", n),
                    PatientID="L",
                    PatientName="List^Patient",
                    StudyInstanceUID=xuid("l", n, 0),
                    SeriesInstanceUID=xuid("l", n, 0, 0),
                )
            )
    port, _ = qrscp_on(data)
    wanted = [xuid("l", 0, 0), xuid("l", 2, 0)]
    uids = [f"1.2.3.{i}" for i in range(40_000)] + wanted
    start = time.monotonic()
    with anyio.fail_after(20):
        async with association(port) as assoc:
            final, answers = await find(
                assoc, query(QueryRetrieveLevel="STUDY", StudyInstanceUID=uids)
            )
    elapsed = time.monotonic() - start
    assert final == 0
    assert sorted(str(a.StudyInstanceUID) for a in answers) == sorted(wanted)
    assert elapsed < 5.0
    await echo_time(port)


# -- item 2: injective names, invalid SOP Instance UIDs refused --------------------------------


_NAME_OK = re.compile(r"[A-Za-z0-9._%_-]+")


@settings(max_examples=2000, deadline=None)
@given(st.text(max_size=80), st.text(max_size=80))
@example("9.9/9", "h8049fdf79e7b3925")
@example("unknown", "")
@example("A", "a")
@example("1.2", "1.2.")
@example(".", "..")
def test_safe_name_is_injective(a: str, b: str) -> None:
    for value in (a, b):
        name = safe_name(value)
        assert _NAME_OK.fullmatch(name), name
        assert name not in (".", "..") and not name.startswith(".")
        assert len(name.encode()) <= 200
    if a != b:
        # Distinct even on a file system that ignores case (macOS, Windows).
        assert safe_name(a).lower() != safe_name(b).lower()


@given(st.text(max_size=40))
def test_safe_name_decodes_back(value: str) -> None:
    """A left inverse (below, for the test) proves the mapping injective, hashing aside."""
    name = safe_name(value)
    if not name.startswith("h"):
        assert decode_name(name) == value


def decode_name(name: str) -> str:
    if name[0].isdigit():
        return name  # a valid UID, kept as it is
    assert name[0] == "v"
    out = bytearray()
    i = 1
    while i < len(name):
        c = name[i]
        if c == "%":
            out.append(int(name[i + 1 : i + 3], 16))
            i += 3
        elif c == "_":
            out += name[i + 1].upper().encode()
            i += 2
        else:
            out += c.encode()
            i += 1
    return out.decode("utf-8", "surrogatepass")


@pytest.fixture
def invalid_uids_allowed() -> Iterator[None]:
    """Let pydicom hold and write the invalid UIDs this test sends on purpose."""
    with config.disable_value_validation():
        yield


@pytest.mark.anyio
@pytest.mark.usefixtures("invalid_uids_allowed")
async def test_invalid_sop_instance_uids_are_refused(tmp_path: Path, qrscp_on: Any) -> None:
    data = tmp_path / "data"
    port, _ = qrscp_on(data)
    good = xuid("g")
    statuses: dict[str, int] = {}
    with anyio.fail_after(20):
        async with association(port) as assoc:
            for sop in ("9.9/9", "h8049fdf79e7b3925", "1.2.03", good):
                ds = instance(
                    SOPInstanceUID=sop,
                    PatientID="N",
                    PatientName="Name^Clash",
                    StudyInstanceUID=xuid("n", 0),
                    SeriesInstanceUID=xuid("n", 0, 0),
                )
                statuses[sop] = int((await assoc.send_c_store(ds)).Status)
        await echo_time(port)
    assert statuses == {"9.9/9": 0x0117, "h8049fdf79e7b3925": 0x0117, "1.2.03": 0x0117, good: 0}
    with sqlite3.connect(data / "index.sqlite") as conn:
        rows = conn.execute("SELECT sop_uid, path FROM instances").fetchall()
        unique = [
            row
            for row in conn.execute("PRAGMA index_list(instances)")
            if row[2] and "path" in [c[2] for c in conn.execute(f"PRAGMA index_info({row[1]})")]
        ]
    assert [r[0] for r in rows] == [good]
    assert unique, "the file column has no UNIQUE index"


@pytest.mark.anyio
@pytest.mark.usefixtures("invalid_uids_allowed")
async def test_storescp_names_colliding_identifiers_apart(tmp_path: Path) -> None:
    """Patient IDs whose old names collided land in two places; a non-UID SOP Instance UID
    (the other half of the old collision) is refused with 0117H before the handler runs
    (issue #12 item 2), so nothing is written for it."""
    from dicomio import evt

    results: dict[str, list[Path]] = {}
    for layout in ("flat", "hierarchy"):
        receiver = Receiver(tmp_path / layout, layout)
        server_ae = AE("STORESCP")
        server_ae.add_supported_context(SECONDARY_CAPTURE, ExplicitVRLittleEndian)
        server_ae.add_supported_context(VERIFICATION)
        with anyio.fail_after(20):
            async with server_ae.start_server(
                (LOOPBACK, 0), evt_handlers=[(evt.EVT_C_STORE, receiver.handler)]
            ) as server:
                async with scu().associate(LOOPBACK, server.port, ae_title="STORESCP") as assoc:
                    for sop, pid in (("1.2.9.1.1", "9.9/9"), ("1.2.9.1.2", "h8049fdf79e7b3925")):
                        ds = instance(
                            SOPInstanceUID=sop,
                            PatientID=pid,
                            StudyInstanceUID="1.2.9",
                            SeriesInstanceUID="1.2.9.1",
                        )
                        assert int((await assoc.send_c_store(ds)).Status) == 0
                    for sop in ("9.9/9", "h8049fdf79e7b3925"):
                        ds = instance(
                            SOPInstanceUID=sop,
                            PatientID="P",
                            StudyInstanceUID="1.2.9",
                            SeriesInstanceUID="1.2.9.1",
                        )
                        assert int((await assoc.send_c_store(ds)).Status) == 0x0117
                async with scu().associate(LOOPBACK, server.port, ae_title="STORESCP") as assoc:
                    assert int((await assoc.send_c_echo()).Status) == 0
        results[layout] = receiver.received
    for layout, paths in results.items():
        assert len(set(paths)) == 2, (layout, paths)
        assert sorted((str(d.SOPInstanceUID), str(d.PatientID)) for d in map(dcmread, paths)) == [
            ("1.2.9.1.1", "9.9/9"),
            ("1.2.9.1.2", "h8049fdf79e7b3925"),
        ]
        files = sorted(p for p in (tmp_path / layout).rglob("*") if p.is_file())
        assert files == sorted(paths), (layout, files)


# -- item 4: indexing memory stays flat -------------------------------------------------------


def write_with_big_private_element(path: Path, sop: str, size: int, nested: bool) -> None:
    """A Part 10 file with a ``size``-byte private OB element, streamed (never in memory);
    with ``nested``, the element is in an item of a private sequence of undefined length."""
    ds = instance(
        SOPInstanceUID=sop,
        PatientID="BIG",
        PatientName="Big^Private",
        StudyInstanceUID=xuid("big", 0),
        SeriesInstanceUID=xuid("big", 0, 0),
    )
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.save_as(path, enforce_file_format=True)
    with open(path, "ab") as fp:
        # (0099,0010) private creator, then (0099,1000) OB of ``size`` bytes (PS3.5 7.8.1),
        # or (0099,1000) SQ of undefined length holding one item with (0099,1001) OB.
        creator = b"DICOMIO TEST"
        fp.write(struct.pack("<HH2sH", 0x0099, 0x0010, b"LO", len(creator)) + creator)
        if nested:
            fp.write(struct.pack("<HH2sHI", 0x0099, 0x1000, b"SQ", 0, 0xFFFFFFFF))
            fp.write(struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF))
            fp.write(struct.pack("<HH2sHI", 0x0099, 0x1001, b"OB", 0, size))
        else:
            fp.write(struct.pack("<HH2sHI", 0x0099, 0x1000, b"OB", 0, size))
        chunk = b"\x5a" * (1 << 20)
        for _ in range(size // len(chunk)):
            fp.write(chunk)
        if nested:
            fp.write(struct.pack("<HHI", 0xFFFE, 0xE00D, 0))  # item delimitation
            fp.write(struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))  # sequence delimitation


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
@pytest.mark.anyio
@pytest.mark.parametrize("nested", [False, True], ids=["element", "in-sequence"])
async def test_indexing_a_large_private_element_keeps_memory_flat(
    tmp_path: Path, qrscp_on: Any, nested: bool
) -> None:
    size = 128 << 20
    big = tmp_path / "big.dcm"
    write_with_big_private_element(big, xuid("big", 0, 0, 0), size, nested)
    port, pid = qrscp_on(tmp_path / "data")
    with anyio.fail_after(60):
        async with association(port) as assoc:
            small = instance(
                SOPInstanceUID=xuid("small"),
                PatientID="S",
                PatientName="Small^Instance",
                StudyInstanceUID=xuid("small", 0),
                SeriesInstanceUID=xuid("small", 0, 0),
            )
            assert int((await assoc.send_c_store(small)).Status) == 0
            before = peak_rss_mib(pid)
            assert int((await assoc.send_c_store(big)).Status) == 0
            after = peak_rss_mib(pid)
        await echo_time(port)
        async with association(port) as assoc:
            final, answers = await find(
                assoc, query(QueryRetrieveLevel="STUDY", StudyInstanceUID="", PatientName="Big*")
            )
    assert final == 0 and len(answers) == 1
    logging.getLogger(__name__).info("qrscp peak RSS %.0f -> %.0f MiB", before, after)
    assert after - before < 32, f"peak RSS rose from {before:.0f} to {after:.0f} MiB"


# -- item 5: patient identity -----------------------------------------------------------------


def patient_cases() -> list[Dataset]:
    """Two studies without Patient ID, and two studies of one ID under two names."""
    return [
        instance(
            SOPInstanceUID=xuid("p", 0),
            PatientName="Nobody^First",
            PatientBirthDate="19700101",
            StudyInstanceUID=xuid("p", 0, 0),
            SeriesInstanceUID=xuid("p", 0, 0, 0),
            StudyDate="20200101",
        ),
        instance(
            SOPInstanceUID=xuid("p", 1),
            PatientID="",
            PatientName="Nobody^Second",
            PatientBirthDate="19800101",
            StudyInstanceUID=xuid("p", 1, 0),
            SeriesInstanceUID=xuid("p", 1, 0, 0),
            StudyDate="20210101",
        ),
        instance(
            SOPInstanceUID=xuid("p", 2),
            PatientID="ID7",
            PatientName="Maiden^Name",
            PatientSex="F",
            StudyInstanceUID=xuid("p", 2, 0),
            SeriesInstanceUID=xuid("p", 2, 0, 0),
            StudyDate="20100101",
        ),
        instance(
            SOPInstanceUID=xuid("p", 3),
            PatientID="ID7",
            PatientName="Married^Name",
            PatientSex="F",
            StudyInstanceUID=xuid("p", 3, 0),
            SeriesInstanceUID=xuid("p", 3, 0, 0),
            StudyDate="20220101",
        ),
    ]


async def check_patient_answers(archive: Archive) -> None:
    studies = await archive.find(
        "STUDY",
        query(StudyInstanceUID="", PatientID="", PatientName="", PatientBirthDate=""),
        "STUDY",
    )
    by_study = {str(s.StudyInstanceUID): str(s.PatientName) for s in studies}
    assert by_study == {
        xuid("p", 0, 0): "Nobody^First",
        xuid("p", 1, 0): "Nobody^Second",
        xuid("p", 2, 0): "Maiden^Name",
        xuid("p", 3, 0): "Married^Name",
    }
    patients = await archive.find(
        "PATIENT",
        query(PatientID="", PatientName="", PatientBirthDate="", NumberOfPatientRelatedStudies=""),
        "PATIENT",
    )
    got = sorted(
        (str(p.PatientID or ""), str(p.PatientName), int(p.NumberOfPatientRelatedStudies))
        for p in patients
    )
    assert got == [
        ("", "Nobody^First", 1),
        ("", "Nobody^Second", 1),
        ("ID7", "Maiden^Name", 1),
        ("ID7", "Married^Name", 1),
    ]
    for name in ("Maiden^Name", "Married^Name", "Nobody^First", "Nobody^Second"):
        found = await archive.find("PATIENT", query(PatientName=name, PatientID=""), "PATIENT")
        assert [str(p.PatientName) for p in found] == [name]
    # Patient Root, hierarchically: both studies of ID7, each with its own name.
    studies = await archive.find(
        "STUDY", query(PatientID="ID7", StudyInstanceUID="", PatientName=""), "PATIENT"
    )
    assert sorted(str(s.PatientName) for s in studies) == ["Maiden^Name", "Married^Name"]


def test_patients_without_id_are_not_merged_and_studies_keep_their_names(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with Archive(tmp_path / "a") as archive:
            for ds in patient_cases():
                await archive.store(ds)
            await check_patient_answers(archive)

    with caplog.at_level(logging.WARNING, logger="dicomio.apps.archive"):
        anyio.run(main)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("ID7" in w and "Married^Name" in w for w in warnings), warnings
    assert not any("Nobody" in w for w in warnings), warnings


#: The schema of the index before patient attributes moved to the studies (commit 1fac4c8).
OLD_SCHEMA = """
CREATE TABLE patients (patient_id TEXT PRIMARY KEY, patient_name TEXT NOT NULL DEFAULT '',
    birth_date TEXT NOT NULL DEFAULT '', sex TEXT NOT NULL DEFAULT '');
CREATE TABLE studies (study_uid TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL REFERENCES patients(patient_id),
    study_date TEXT NOT NULL DEFAULT '', study_time TEXT NOT NULL DEFAULT '',
    accession_number TEXT NOT NULL DEFAULT '', study_id TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '', referring_physician TEXT NOT NULL DEFAULT '');
CREATE INDEX studies_patient ON studies(patient_id);
CREATE TABLE series (series_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL REFERENCES studies(study_uid), modality TEXT NOT NULL DEFAULT '',
    series_number TEXT NOT NULL DEFAULT '', description TEXT NOT NULL DEFAULT '');
CREATE INDEX series_study ON series(study_uid);
CREATE TABLE instances (sop_uid TEXT PRIMARY KEY,
    series_uid TEXT NOT NULL REFERENCES series(series_uid), sop_class_uid TEXT NOT NULL,
    instance_number TEXT NOT NULL DEFAULT '', transfer_syntax TEXT NOT NULL,
    path TEXT NOT NULL, size INTEGER NOT NULL);
CREATE INDEX instances_series ON instances(series_uid);
"""


def test_an_index_made_by_the_old_schema_opens_and_is_migrated(tmp_path: Path) -> None:
    root = tmp_path / "old"
    files = root / "files"
    files.mkdir(parents=True)
    conn = sqlite3.connect(root / "index.sqlite")
    conn.executescript(OLD_SCHEMA)
    # As the old code left it: one merged patient '' and one patient ID7, each with the last
    # name stored; two rows pointing at one file (the old naming collision: the file holds
    # 1.2.3.5); study 1.2.4's file gone. The files hold the names each study came with.
    conn.execute("INSERT INTO patients VALUES ('', 'Nobody^Second', '19800101', '')")
    conn.execute("INSERT INTO patients VALUES ('ID7', 'Married^Name', '', 'F')")
    rows = [("", "1.2.1"), ("", "1.2.2"), ("ID7", "1.2.3"), ("ID7", "1.2.4")]
    for pid, study in rows:
        conn.execute("INSERT INTO studies (study_uid, patient_id) VALUES (?, ?)", (study, pid))
        conn.execute(
            "INSERT INTO series (series_uid, study_uid) VALUES (?, ?)", (study + ".1", study)
        )
    for sop, series, path, name in (
        ("1.2.1.1.1", "1.2.1.1", "a/1.2.1.1.1.dcm", "Nobody^First"),
        ("1.2.2.1.1", "1.2.2.1", "a/1.2.2.1.1.dcm", "Nobody^Second"),
        ("1.2.3.4", "1.2.3.1", "a/shared.dcm", ""),
        ("1.2.3.5", "1.2.3.1", "a/shared.dcm", "Maiden^Name"),
        ("1.2.4.1.1", "1.2.4.1", "a/gone.dcm", ""),
    ):
        if name:
            ds = instance(
                SOPInstanceUID=sop,
                PatientName=name,
                StudyInstanceUID=series[:-2],
                SeriesInstanceUID=series,
            )
            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            (files / path).parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(files / path, enforce_file_format=True)
        conn.execute(
            "INSERT INTO instances VALUES (?, ?, ?, '', ?, ?, 1)",
            (sop, series, SECONDARY_CAPTURE, ExplicitVRLittleEndian, path),
        )
    conn.commit()
    conn.close()

    async def main() -> tuple[list[Dataset], list[Dataset], int]:
        async with Archive(root) as archive:
            studies = await archive.find(
                "STUDY", query(StudyInstanceUID="", PatientID="", PatientName=""), "STUDY"
            )
            patients = await archive.find(
                "PATIENT", query(PatientID="", PatientName=""), "PATIENT"
            )
            # New stores work on the migrated index.
            for ds in patient_cases():
                await archive.store(ds)
            return studies, patients, await archive.count()

    studies, patients, count = anyio.run(main)
    # Each study's patient attributes come back from its files; without a file, from the
    # old patient row (all the old index knew).
    assert sorted((str(s.StudyInstanceUID), str(s.PatientName)) for s in studies) == [
        ("1.2.1", "Nobody^First"),
        ("1.2.2", "Nobody^Second"),
        ("1.2.3", "Maiden^Name"),
        ("1.2.4", "Married^Name"),
    ]
    # The two studies without ID are two patients now; ID7 answers under both its names.
    assert sorted((str(p.PatientID or ""), str(p.PatientName)) for p in patients) == [
        ("", "Nobody^First"),
        ("", "Nobody^Second"),
        ("ID7", "Maiden^Name"),
        ("ID7", "Married^Name"),
    ]
    assert count == 4 + 4  # the row whose file another instance overwrote is gone
    with sqlite3.connect(root / "index.sqlite") as check:
        assert check.execute("PRAGMA user_version").fetchone()[0] >= 1
        paths = [r[0] for r in check.execute("SELECT path FROM instances")]
    assert len(paths) == len(set(paths))


def test_read_attributes_agrees_with_pydicom_on_its_test_files() -> None:
    """The direct walk reads the same values as pydicom from real vendor files (explicit and
    implicit VR, big endian, deflated, encapsulated pixel data, nested sequences)."""
    from pydicom.data import get_testdata_file

    from dicomio.apps._attributes import read_attributes
    from dicomio.apps.archive import _INDEXED_TAGS

    names = [
        "CT_small.dcm",
        "MR_small.dcm",
        "rtplan.dcm",
        "SC_rgb_jpeg_dcmtk.dcm",
        "JPEG-lossy.dcm",
        "SC_rgb_rle.dcm",
        "image_dfl.dcm",
        "ExplVR_BigEnd.dcm",
        "MR_small_implicit.dcm",
        "nested_priv_SQ.dcm",
    ]
    checked = 0
    for name in names:
        path = get_testdata_file(name, download=False)
        if path is None:
            continue
        with config.disable_value_validation():
            expected = dcmread(path, stop_before_pixels=True)
            got = read_attributes(path, _INDEXED_TAGS)
            for keyword in _INDEXED_TAGS:
                assert got.get(keyword) == expected.get(keyword), (name, keyword)
        assert got.file_meta.TransferSyntaxUID == expected.file_meta.TransferSyntaxUID
        checked += 1
    assert checked == len(names)


def test_one_query_cannot_ask_for_unbounded_matching_work(tmp_path: Path) -> None:
    """Many wild card values in one key, or one enormous value, against many rows: the
    archive answers or refuses (C000H "Unable to process") at once, never grinds."""
    from dicomio.apps.matching import QueryError

    async def main() -> dict[str, tuple[float, int]]:
        results: dict[str, tuple[float, int]] = {}
        async with Archive(tmp_path / "a") as archive:
            for n in range(200):
                await archive.store(
                    instance(
                        SOPInstanceUID=xuid("b", n),
                        PatientID=f"B{n}",
                        PatientName="X" * 60 + f"{n:04d}",
                        StudyInstanceUID=xuid("b", n, 0),
                        SeriesInstanceUID=xuid("b", n, 0, 0),
                    )
                )
            cases = {
                "many values": ["*X?X*Y*Z"] * 20_000,
                "long value": "*" + "X?*" * 20_000,
            }
            for name, value in cases.items():
                start = time.monotonic()
                try:
                    with config.disable_value_validation():
                        identifier = query(StudyInstanceUID="", PatientName=value)
                    found = await archive.find("STUDY", identifier, "STUDY")
                    status = 0 if not found else -1
                except QueryError as exc:
                    status = exc.status
                results[name] = (time.monotonic() - start, status)
        return results

    results = anyio.run(main)
    for name, (elapsed, status) in results.items():
        assert status in (0, 0xC000), (name, status)
        assert elapsed < 2.0, (name, elapsed)


@pytest.mark.anyio
async def test_per_row_work_of_a_find_stays_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Building the answers is work per matching row: done on the event loop, a large
    result set would stall every association of the server for its whole duration."""
    import dicomio.apps.archive as archive_module
    from dicomio.apps.archive import add_archive_contexts

    real = archive_module.response_identifier

    def slow(*args: Any, **kwargs: Any) -> Dataset:
        time.sleep(0.75)  # stands for a large result set's worth of work
        return real(*args, **kwargs)

    monkeypatch.setattr(archive_module, "response_identifier", slow)
    async with Archive(tmp_path / "a") as archive:
        for n in range(2):
            await archive.store(
                instance(
                    SOPInstanceUID=xuid("r", n),
                    PatientID="R",
                    PatientName="Row^Work",
                    StudyInstanceUID=xuid("r", n, 0),
                    SeriesInstanceUID=xuid("r", n, 0, 0),
                )
            )
        scp = AE("ARCHIVE")
        add_archive_contexts(scp)
        answers: list[Any] = []
        gaps: list[float] = []
        done = anyio.Event()

        async def finder(port: int) -> None:
            async with association(port) as assoc:
                identifier = query(QueryRetrieveLevel="STUDY", StudyInstanceUID="")
                answers.extend((await find(assoc, identifier))[1])
            done.set()

        async def heartbeat() -> None:
            # How long the event loop went without running this task (it asks every 10 ms).
            last = time.monotonic()
            while not done.is_set():
                await anyio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        with anyio.fail_after(20):
            async with (
                scp.start_server((LOOPBACK, 0), evt_handlers=archive.handlers()) as server,
                anyio.create_task_group() as tg,
            ):
                tg.start_soon(heartbeat)
                tg.start_soon(finder, server.port)
                tg.start_soon(echo_time, server.port)
    assert len(answers) == 2
    assert max(gaps) < 0.5, f"the event loop stalled for {max(gaps):.2f} s"


@pytest.mark.anyio
async def test_storescp_receiver_remembers_a_bounded_number_of_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long-running storescp counts what it filed but keeps only the last few paths (the
    soak saw its memory grow with every instance while it kept them all)."""
    from dicomio import evt
    from dicomio.apps import _receive

    monkeypatch.setattr(_receive, "RECENT", 3)
    receiver = Receiver(tmp_path, "flat")
    server_ae = AE("STORESCP")
    server_ae.add_supported_context(SECONDARY_CAPTURE, ExplicitVRLittleEndian)
    sops = [f"1.2.77.{n}" for n in range(5)]
    with anyio.fail_after(20):
        async with (
            server_ae.start_server(
                (LOOPBACK, 0), evt_handlers=[(evt.EVT_C_STORE, receiver.handler)]
            ) as server,
            scu().associate(LOOPBACK, server.port, ae_title="STORESCP") as assoc,
        ):
            for sop in sops:
                ds = instance(SOPInstanceUID=sop, PatientID="P", StudyInstanceUID="1.2.77")
                assert int((await assoc.send_c_store(ds)).Status) == 0
    assert receiver.count == 5
    assert [p.name for p in receiver.received] == [f"{sop}.dcm" for sop in sops[2:]]
    assert len(list(tmp_path.glob("*.dcm"))) == 5
