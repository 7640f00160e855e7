"""Two qrscp processes (standing in for two machines) sharing one PostgreSQL index and one data
folder (issue #17, acceptance 3): what is stored through one is found and retrieved through
the other, and one SOP Instance UID stored through both at once leaves one consistent file
and index row."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicomio import AE, evt
from tests.conftest import DCMTK_ENV, LOOPBACK, free_port, stop, wait_for_port
from tests.corpus import TRANSFER_SYNTAXES, Corpus

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
EXPLICIT = "1.2.840.10008.1.2.1"


@pytest.fixture
def shared(tmp_path: Path, postgres_server: Any) -> Iterator[dict[str, Any]]:
    """Two ``dicomio qrscp`` processes on one data folder and one new PostgreSQL database;
    C-MOVE destination SINK is a port the test listens on."""
    url = postgres_server.new_database()
    data = tmp_path / "data"
    sink_port = free_port()
    procs = []
    ports = []
    for name in ("A", "B"):
        port = free_port()
        log = open(tmp_path / f"qrscp-{name}.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dicomio",
                "qrscp",
                str(port),
                "--data",
                str(data),
                "--db",
                url,
                "--bind",
                LOOPBACK,
                "-aet",
                "ARCHIVE",
                "--dest",
                f"SINK={LOOPBACK}:{sink_port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=DCMTK_ENV,
        )
        procs.append((proc, log))
        ports.append(port)
    try:
        for port, (proc, _) in zip(ports, procs, strict=True):
            wait_for_port(port, proc, timeout=30)
        yield {"ports": ports, "data": data, "url": url, "sink_port": sink_port}
    finally:
        for proc, log in procs:
            stop(proc)
            log.close()


def requestor() -> AE:
    ae = AE("SCU")
    for sop_class in (CT, MR):
        for syntax in TRANSFER_SYNTAXES:
            ae.add_requested_context(sop_class, str(syntax))
    ae.add_requested_context(SECONDARY_CAPTURE, EXPLICIT)
    ae.add_requested_context(STUDY_FIND)
    ae.add_requested_context(STUDY_MOVE)
    return ae


def find_identifier(level: str, **keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


async def find(port: int, identifier: Dataset) -> list[Dataset]:
    async with requestor().associate(LOOPBACK, port, ae_title="ARCHIVE") as assoc:
        return [ds async for _, ds in assoc.send_c_find(identifier, STUDY_FIND) if ds is not None]


async def test_stored_through_one_found_and_moved_through_the_other(
    shared: dict[str, Any], corpus: Corpus
) -> None:
    a, b = shared["ports"]
    received: list[str] = []

    async def on_store(event: Any) -> int:
        received.append(str(event.request.affected_sop_instance_uid))
        return 0

    sink = AE("SINK")
    for sop_class in (CT, MR):
        sink.add_supported_context(sop_class, [str(ts) for ts in TRANSFER_SYNTAXES])
    with anyio.fail_after(60):
        async with requestor().associate(LOOPBACK, a, ae_title="ARCHIVE") as assoc:
            for instance in corpus.instances:
                assert int((await assoc.send_c_store(instance.path)).Status) == 0
        studies = await find(b, find_identifier("STUDY", StudyInstanceUID="", PatientID=""))
        assert {str(s.StudyInstanceUID) for s in studies} == set(corpus.study_uids)
        first = corpus.study_uids[0]
        images = []
        for series in {i.series_uid for i in corpus.by(study_uid=first)}:
            images += await find(
                b,
                find_identifier(
                    "IMAGE", StudyInstanceUID=first, SeriesInstanceUID=series, SOPInstanceUID=""
                ),
            )
        expected = {i.sop_uid for i in corpus.by(study_uid=corpus.study_uids[0])}
        assert {str(i.SOPInstanceUID) for i in images} == expected
        async with (
            sink.start_server(
                (LOOPBACK, shared["sink_port"]), evt_handlers=[(evt.EVT_C_STORE, on_store)]
            ),
            requestor().associate(LOOPBACK, b, ae_title="ARCHIVE") as assoc,
        ):
            q = find_identifier("STUDY", StudyInstanceUID=corpus.study_uids[0])
            last = [s async for s, _ in assoc.send_c_move(q, "SINK", STUDY_MOVE)][-1]
            assert int(last.Status) == 0
            assert int(last.NumberOfCompletedSuboperations) == len(expected)
    assert sorted(received) == sorted(expected)


def variant(sop_uid: str, which: int, series: str) -> Dataset:
    """One SOP Instance UID, two different instances: another size, series and number."""
    ds = Dataset()
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = sop_uid
    ds.PatientID = "SHARED"
    ds.PatientName = "Both^Machines"
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["shared-study"])
    ds.SeriesInstanceUID = series
    ds.Modality = "OT"
    ds.InstanceNumber = which
    ds.ImageComments = "x" * (1000 * which)
    return ds


async def test_one_instance_stored_through_both_at_once(shared: dict[str, Any]) -> None:
    import psycopg

    ports = shared["ports"]
    rounds = 12
    # Half the rounds put the two versions in one series (one path, replaced in place), half
    # in two series (two paths: the loser's file must go).
    cases = []
    for n in range(rounds):
        sop = str(generate_uid(entropy_srcs=["shared-sop", str(n)]))
        if n % 2:
            series = [
                str(generate_uid(entropy_srcs=["shared-series", str(n), str(k)])) for k in (1, 2)
            ]
        else:
            series = [str(generate_uid(entropy_srcs=["shared-series", str(n)]))] * 2
        cases.append((sop, [variant(sop, k + 1, series[k]) for k in (0, 1)]))
    statuses: list[int] = []

    async def send(port: int, datasets: list[Dataset]) -> None:
        async with requestor().associate(LOOPBACK, port, ae_title="ARCHIVE") as assoc:
            for ds in datasets:
                statuses.append(int((await assoc.send_c_store(ds)).Status))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for k, port in enumerate(ports):
                tg.start_soon(send, port, [versions[k] for _, versions in cases])
    assert statuses == [0] * (2 * rounds)

    files = shared["data"] / "files"
    with psycopg.connect(shared["url"]) as conn:
        rows = conn.execute("SELECT sop_uid, path, size FROM instances").fetchall()
        series_left = conn.execute("SELECT count(*) FROM series").fetchone()
    assert len(rows) == rounds
    by_sop = {sop: (path, size) for sop, path, size in rows}
    on_disk = {p for p in files.rglob("*") if p.is_file()}
    assert on_disk == {files / path for path, _ in by_sop.values()}, "exactly one file each"
    # Series left: those that hold the surviving version of some instance.
    assert series_left is not None and series_left[0] == len(
        {Path(p).parent for p, _ in by_sop.values()}
    )
    for sop, (path, size) in by_sop.items():
        stored = files / path
        assert stored.stat().st_size == size, "the row describes the file in place"
        ds = dcmread(stored)
        assert str(ds.SOPInstanceUID) == sop
        # The C-FIND answer (through either process) agrees with the file.
        for port in ports:
            (answer,) = await find(
                port,
                find_identifier(
                    "IMAGE",
                    StudyInstanceUID=str(ds.StudyInstanceUID),
                    SeriesInstanceUID=str(ds.SeriesInstanceUID),
                    SOPInstanceUID=sop,
                    InstanceNumber="",
                ),
            )
            assert int(answer.InstanceNumber) == int(ds.InstanceNumber)
