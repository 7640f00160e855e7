"""The ``dicomio`` command line against real peers: ``dicomio qrscp`` run as a subprocess and
driven by DCMTK's tools, then dicomio's SCU commands against DCMTK's storescp and dcmqrscp and
against ``dicomio qrscp``. Every process runs on a free loopback port with a timeout.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import types
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from dicomio.apps._common import UsageError, keys_to_dataset
from dicomio.apps._scp_commands import load_config, parse_destination
from dicomio.apps.cli import _event_loop, build_parser
from dicomio.dataset import read_file_info
from tests.conftest import DCMTK_ENV, LOOPBACK, free_port, require_dcmtk, stop, wait_for_port
from tests.corpus import Corpus, Instance, dataset_bytes

pytestmark = [pytest.mark.timeout(120)]

RLE = "1.2.840.10008.1.2.5"
DEFLATED = "1.2.840.10008.1.2.1.99"
Arg = str | bytes


def dicomio(*args: Arg) -> list[Arg]:
    return [sys.executable, "-m", "dicomio", *args]


def run(argv: Sequence[Arg], timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        list(argv), capture_output=True, timeout=timeout, env=DCMTK_ENV, check=False
    )


def text(result: subprocess.CompletedProcess[bytes]) -> str:
    return (result.stdout + result.stderr).decode(errors="replace")


class Process:
    """A server subprocess on a fixed port that can be restarted; output goes to a log file
    (a pipe nobody reads could fill up and stall the server)."""

    def __init__(self, argv: Sequence[Arg], port: int, log: Path) -> None:
        self.argv = list(argv)
        self.port = port
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        #: For qrscp: the ports of its two move destinations.
        self.move_port = 0
        self.self_port = 0

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, env=DCMTK_ENV
            )
        try:
            wait_for_port(self.port, self.proc, timeout=20)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}: {self.output()}") from None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def split_corpus(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The corpus as two folders: uncompressed files, and RLE files (DCMTK sends them apart)."""
    root = tmp_path_factory.mktemp("split")
    unc, rle = root / "unc", root / "rle"
    unc.mkdir()
    rle.mkdir()
    for instance in corpus.instances:
        shutil.copy(
            instance.path, (rle if instance.transfer_syntax == RLE else unc) / instance.path.name
        )
    return unc, rle


@pytest.fixture(scope="module")
def qrscp(
    corpus: Corpus, split_corpus: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Process]:
    """``dicomio qrscp`` (settings partly from a TOML file), loaded by DCMTK storescu."""
    tools = require_dcmtk("storescu")
    root = tmp_path_factory.mktemp("qrscp")
    port = free_port()
    config = root / "qrscp.toml"
    move_port, self_port = free_port(), free_port()
    config.write_text(
        f'[qrscp]\nae_title = "DICOMIO"\nbind = "{LOOPBACK}"\n'
        f'[qrscp.destinations]\nSTORESCP = "{LOOPBACK}:{move_port}"\n'
    )
    server = Process(
        dicomio(
            "qrscp",
            str(port),
            "--data",
            str(root / "data"),
            "--config",
            str(config),
            "--dest",
            f"MOVESELF={LOOPBACK}:{self_port}",
        ),
        port,
        root / "qrscp.log",
    )
    server.move_port = move_port
    server.self_port = self_port
    server.start()
    try:
        unc, rle = split_corpus
        common = [tools["storescu"], "-aet", "STORESCU", "-aec", "DICOMIO", "+sd", "+r"]
        for extra, folder in (([], unc), (["-xr", "-R"], rle)):
            result = run([*common, *extra, LOOPBACK, str(port), str(folder)])
            assert result.returncode == 0, text(result)
        yield server
    finally:
        server.stop()


def series_without_rle(corpus: Corpus) -> str:
    for uid in corpus.series_uids:
        if all(i.transfer_syntax != RLE for i in corpus.by(series_uid=uid)):
            return uid
    raise AssertionError("the corpus has no series without RLE")


def one(corpus: Corpus, **criteria: str) -> Instance:
    return corpus.by(**criteria)[0]


# -- DCMTK's SCUs against dicomio qrscp --------------------------------------------------------


def dcmtk_find(
    port: int, model: str, keys: Sequence[Arg], out: Path, called: str = "DICOMIO"
) -> tuple[list[Dataset], str]:
    tools = require_dcmtk("findscu")
    out.mkdir(parents=True, exist_ok=True)
    argv: list[Arg] = [
        tools["findscu"],
        "-v",
        model,
        "-aet",
        "FINDSCU",
        "-aec",
        called,
        "-X",
        "-od",
        str(out),
    ]
    for key in keys:
        argv += ["-k", key]
    result = run([*argv, LOOPBACK, str(port)])
    assert result.returncode == 0, text(result)
    return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))], text(result)


def find_cases(corpus: Corpus) -> list[tuple[str, str, list[Arg], str, set[str]]]:
    p1 = one(corpus, patient_id="PID001")
    s0 = one(corpus, patient_id="PID000")
    p1_studies = {i.study_uid for i in corpus.by(patient_id="PID001")}
    return [
        (
            "patient-root-patient",
            "-P",
            ["QueryRetrieveLevel=PATIENT", "PatientID", "PatientName"],
            "PatientID",
            {"PID000", "PID001"},
        ),
        (
            "patient-root-study",
            "-P",
            ["QueryRetrieveLevel=STUDY", "PatientID=PID001", "StudyInstanceUID"],
            "StudyInstanceUID",
            p1_studies,
        ),
        (
            "patient-root-series",
            "-P",
            [
                "QueryRetrieveLevel=SERIES",
                "PatientID=PID001",
                f"StudyInstanceUID={p1.study_uid}",
                "SeriesInstanceUID",
            ],
            "SeriesInstanceUID",
            {i.series_uid for i in corpus.by(study_uid=p1.study_uid)},
        ),
        (
            "patient-root-image",
            "-P",
            [
                "QueryRetrieveLevel=IMAGE",
                "PatientID=PID000",
                f"StudyInstanceUID={s0.study_uid}",
                f"SeriesInstanceUID={s0.series_uid}",
                "SOPInstanceUID",
            ],
            "SOPInstanceUID",
            {i.sop_uid for i in corpus.by(series_uid=s0.series_uid)},
        ),
        (
            "study-root-study-latin1",
            "-S",
            [
                "SpecificCharacterSet=ISO_IR 100",
                "QueryRetrieveLevel=STUDY",
                "PatientName=M\xfcller*".encode("latin-1"),
                "StudyInstanceUID",
            ],
            "StudyInstanceUID",
            p1_studies,
        ),
        (
            "study-root-study-date-range",
            "-S",
            ["QueryRetrieveLevel=STUDY", "StudyDate=20240201-", "StudyInstanceUID"],
            "StudyInstanceUID",
            {i.study_uid for i in corpus.instances if i.study_date >= "20240201"},
        ),
        (
            "study-root-series",
            "-S",
            [
                "QueryRetrieveLevel=SERIES",
                f"StudyInstanceUID={s0.study_uid}",
                "Modality=MR",
                "SeriesInstanceUID",
            ],
            "SeriesInstanceUID",
            {i.series_uid for i in corpus.by(study_uid=s0.study_uid, modality="MR")},
        ),
        (
            "study-root-image",
            "-S",
            [
                "QueryRetrieveLevel=IMAGE",
                f"StudyInstanceUID={p1.study_uid}",
                f"SeriesInstanceUID={p1.series_uid}",
                "SOPInstanceUID",
            ],
            "SOPInstanceUID",
            {i.sop_uid for i in corpus.by(series_uid=p1.series_uid)},
        ),
    ]


@pytest.mark.interop
def test_dcmtk_findscu_against_qrscp_both_roots_all_levels(
    qrscp: Process, corpus: Corpus, tmp_path: Path
) -> None:
    for name, model, keys, keyword, expected in find_cases(corpus):
        responses, output = dcmtk_find(qrscp.port, model, keys, tmp_path / name)
        got = [str(r[keyword].value) for r in responses]
        assert sorted(got) == sorted(expected), f"{name}: {output}"
    # Study Root has no PATIENT level: refused, no matches.
    responses, output = dcmtk_find(
        qrscp.port, "-S", ["QueryRetrieveLevel=PATIENT", "PatientID"], tmp_path / "refused"
    )
    assert responses == []
    assert "DoesNotMatchSOPClass" in output or "a900" in output.lower(), output


@pytest.mark.interop
def test_dcmtk_getscu_retrieves_a_series(qrscp: Process, corpus: Corpus, tmp_path: Path) -> None:
    tools = require_dcmtk("getscu")
    series = series_without_rle(corpus)
    study = one(corpus, series_uid=series).study_uid
    out = tmp_path / "get"
    out.mkdir()
    result = run(
        [
            tools["getscu"],
            "-S",
            "-aet",
            "GETSCU",
            "-aec",
            "DICOMIO",
            "-od",
            str(out),
            "-k",
            "QueryRetrieveLevel=SERIES",
            "-k",
            f"StudyInstanceUID={study}",
            "-k",
            f"SeriesInstanceUID={series}",
            LOOPBACK,
            str(qrscp.port),
        ]
    )
    assert result.returncode == 0, text(result)
    got = {str(dcmread(p).SOPInstanceUID) for p in out.iterdir()}
    assert got == {i.sop_uid for i in corpus.by(series_uid=series)}


@pytest.mark.interop
def test_dcmtk_movescu_moves_a_study_to_dcmtk_storescp(
    qrscp: Process, corpus: Corpus, tmp_path: Path
) -> None:
    tools = require_dcmtk("movescu", "storescp")
    out = tmp_path / "moved"
    out.mkdir()
    port = qrscp.move_port
    scp = Process(
        [
            tools["storescp"],
            "-aet",
            "STORESCP",
            "+xa",
            "-pm",
            "-dhl",
            "-od",
            str(out),
            "-fe",
            ".dcm",
            str(port),
        ],
        port,
        tmp_path / "storescp.log",
    )
    scp.start()
    try:
        study = corpus.study_uids[1]
        result = run(
            [
                tools["movescu"],
                "-S",
                "-aet",
                "MOVESCU",
                "-aec",
                "DICOMIO",
                "-aem",
                "STORESCP",
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                f"StudyInstanceUID={study}",
                LOOPBACK,
                str(qrscp.port),
            ]
        )
        assert result.returncode == 0, text(result)
    finally:
        scp.stop()
    got = {str(dcmread(p).SOPInstanceUID) for p in out.glob("*.dcm")}
    assert got == {i.sop_uid for i in corpus.by(study_uid=study)}


@pytest.mark.interop
def test_qrscp_answers_the_same_after_a_restart(
    qrscp: Process, corpus: Corpus, tmp_path: Path
) -> None:
    cases = find_cases(corpus)
    before = {
        name: sorted(
            str(r[kw].value)
            for r in dcmtk_find(qrscp.port, model, keys, tmp_path / f"a-{name}")[0]
        )
        for name, model, keys, kw, _ in cases
    }
    qrscp.restart()
    after = {
        name: sorted(
            str(r[kw].value)
            for r in dcmtk_find(qrscp.port, model, keys, tmp_path / f"b-{name}")[0]
        )
        for name, model, keys, kw, _ in cases
    }
    assert before == after
    assert all(after.values())


# -- dicomio's SCUs against dicomio qrscp --------------------------------------------------------


@pytest.mark.interop
def test_dicomio_echoscu(qrscp: Process, dcmtk_storescp: tuple[int, Path]) -> None:
    result = run(dicomio("echoscu", LOOPBACK, str(qrscp.port), "-aec", "DICOMIO"))
    assert result.returncode == 0 and "Success" in text(result), text(result)
    result = run(
        dicomio("echoscu", LOOPBACK, str(dcmtk_storescp[0]), "-aec", "STORESCP", "-r", "3")
    )
    assert result.returncode == 0 and "3 echoes" in text(result), text(result)
    result = run(dicomio("echoscu", LOOPBACK, str(free_port()), "-to", "5"))
    assert result.returncode == 3, text(result)


@pytest.mark.interop
def test_dicomio_findscu_text_and_json(qrscp: Process, corpus: Corpus) -> None:
    result = run(
        dicomio(
            "findscu",
            LOOPBACK,
            str(qrscp.port),
            "-aec",
            "DICOMIO",
            "-S",
            "--json",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "PatientName=müller*",
            "-k",
            "StudyInstanceUID",
        )
    )
    assert result.returncode == 0, text(result)
    lines = result.stdout.decode().splitlines()
    studies = {json.loads(line)["0020000D"]["Value"][0] for line in lines}
    assert studies == {i.study_uid for i in corpus.by(patient_id="PID001")}
    names = {json.loads(line)["00100010"]["Value"][0]["Alphabetic"] for line in lines}
    assert names == {"Müller^Jürgen"}
    result = run(
        dicomio(
            "findscu",
            LOOPBACK,
            str(qrscp.port),
            "-aec",
            "DICOMIO",
            "-P",
            "-k",
            "QueryRetrieveLevel=PATIENT",
            "-k",
            "PatientID",
        )
    )
    assert result.returncode == 0, text(result)
    assert result.stdout.decode().count("# match") == 2
    assert "[PID000]" in result.stdout.decode()
    # A refused identifier (Study Root has no PATIENT level) fails the command.
    result = run(
        dicomio(
            "findscu",
            LOOPBACK,
            str(qrscp.port),
            "-aec",
            "DICOMIO",
            "-S",
            "-k",
            "QueryRetrieveLevel=PATIENT",
            "-k",
            "PatientID",
        )
    )
    assert result.returncode == 1 and "0xA900" in text(result), text(result)


@pytest.mark.interop
def test_dicomio_getscu_and_movescu(qrscp: Process, corpus: Corpus, tmp_path: Path) -> None:
    study = corpus.study_uids[0]
    out = tmp_path / "get"
    result = run(
        dicomio(
            "getscu",
            LOOPBACK,
            str(qrscp.port),
            "-aec",
            "DICOMIO",
            "-S",
            "-od",
            str(out),
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={study}",
        )
    )
    assert result.returncode == 0, text(result)
    expected = {i.sop_uid for i in corpus.by(study_uid=study)}
    assert {p.stem for p in out.glob("*.dcm")} == expected  # RLE files included
    series = corpus.series_uids[2]
    study = one(corpus, series_uid=series).study_uid
    out = tmp_path / "move"
    result = run(
        dicomio(
            "movescu",
            LOOPBACK,
            str(qrscp.port),
            "-aec",
            "DICOMIO",
            "-aet",
            "MOVESELF",
            "--store",
            "--store-bind",
            LOOPBACK,
            "--store-port",
            str(qrscp.self_port),
            "-od",
            str(out),
            "--layout",
            "hierarchy",
            "-S",
            "-k",
            "QueryRetrieveLevel=SERIES",
            "-k",
            f"StudyInstanceUID={study}",
            "-k",
            f"SeriesInstanceUID={series}",
        )
    )
    assert result.returncode == 0, text(result)
    files = list(out.rglob("*.dcm"))
    assert {p.stem for p in files} == {i.sop_uid for i in corpus.by(series_uid=series)}
    assert {p.parent.name for p in files} == {series}
    # An unknown destination: 0xA801, exit status 1.
    result = run(
        dicomio(
            "movescu",
            LOOPBACK,
            str(qrscp.port),
            "-aec",
            "DICOMIO",
            "-aem",
            "NOBODY",
            "-S",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={study}",
        )
    )
    assert result.returncode == 1 and "0xA801" in text(result), text(result)
    # A retrieve identifier without the unique key of its level: 0xA900, exit status 1.
    for command in ("getscu", "movescu"):
        result = run(
            dicomio(
                command,
                LOOPBACK,
                str(qrscp.port),
                "-aec",
                "DICOMIO",
                "-aem",
                "MOVESELF",
                "-od",
                str(tmp_path / "bad"),
                "-S",
                "-k",
                "QueryRetrieveLevel=SERIES",
                "-k",
                f"StudyInstanceUID={study}",
            )
            if command == "movescu"
            else dicomio(
                command,
                LOOPBACK,
                str(qrscp.port),
                "-aec",
                "DICOMIO",
                "-od",
                str(tmp_path / "bad"),
                "-S",
                "-k",
                "QueryRetrieveLevel=SERIES",
                "-k",
                f"StudyInstanceUID={study}",
            )
        )
        assert result.returncode == 1 and "0xA900" in text(result), text(result)


# -- dicomio's SCUs against DCMTK storescp and dcmqrscp -------------------------------------------


@pytest.mark.interop
def test_dicomio_storescu_to_dcmtk_storescp(
    dcmtk_storescp: tuple[int, Path], corpus: Corpus
) -> None:
    port, out = dcmtk_storescp
    result = run(
        dicomio(
            "storescu", LOOPBACK, str(port), "-aec", "STORESCP", "--window", "4", str(corpus.root)
        )
    )
    assert result.returncode == 0, text(result)
    assert f"sent {len(corpus.instances)} of {len(corpus.instances)}" in text(result)
    received = {str(read_file_info(p).sop_instance_uid): p for p in out.glob("*.dcm")}  # type: ignore[union-attr]
    assert set(received) == {i.sop_uid for i in corpus.instances}
    # Sent as they are when DCMTK accepted the file's own syntax (it prefers Explicit VR
    # Little Endian for the uncompressed ones, and dicomio converts those): RLE always is.
    same = 0
    for instance in corpus.instances:
        path = received[instance.sop_uid]
        if instance.transfer_syntax == DEFLATED:
            continue  # DCMTK writes the deflated stream it re-encodes, not the bytes received
        if str(read_file_info(path).transfer_syntax) == instance.transfer_syntax:  # type: ignore[union-attr]
            assert dataset_bytes(path) == dataset_bytes(instance.path)
            same += 1
        else:
            assert instance.transfer_syntax != RLE
    assert same >= len(corpus.by(transfer_syntax=RLE))


@pytest.fixture(scope="module")
def dcmqrscp(
    split_corpus: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[int, int]]:
    """DCMTK dcmqrscp seeded by ``dicomio storescu``; yields (port, MOVESCU's receive port)."""
    tools = require_dcmtk("dcmqrscp")
    import getpass
    import grp
    import os

    root = tmp_path_factory.mktemp("dcmqrscp")
    storage = root / "storage"
    storage.mkdir()
    port, move_port = free_port(), free_port()
    config = root / "dcmqrscp.cfg"
    config.write_text(
        f"NetworkTCPPort = {port}\nMaxPDUSize = 16384\nMaxAssociations = 16\n"
        f"UserName = {getpass.getuser()}\nGroupName = {grp.getgrgid(os.getgid()).gr_name}\n"
        f"HostTable BEGIN\nMOVESCU = (MOVESCU, {LOOPBACK}, {move_port})\nHostTable END\n"
        "VendorTable BEGIN\nVendorTable END\n"
        f"AETable BEGIN\nDCMQRSCP {storage} RW (200, 1024mb) ANY\nAETable END\n"
    )
    server = Process(
        [tools["dcmqrscp"], "--fork", "-c", str(config), "-dhl", str(port)],
        port,
        root / "dcmqrscp.log",
    )
    server.start()
    try:
        result = run(
            dicomio("storescu", LOOPBACK, str(port), "-aec", "DCMQRSCP", str(split_corpus[0]))
        )
        assert result.returncode == 0, text(result)
        yield port, move_port
    finally:
        server.stop()


@pytest.mark.interop
def test_dicomio_scus_against_dcmqrscp(
    dcmqrscp: tuple[int, int], split_corpus: tuple[Path, Path], corpus: Corpus, tmp_path: Path
) -> None:
    port, move_port = dcmqrscp
    seeded = {str(read_file_info(p).sop_instance_uid) for p in split_corpus[0].iterdir()}  # type: ignore[union-attr]
    result = run(dicomio("echoscu", LOOPBACK, str(port), "-aec", "DCMQRSCP"))
    assert result.returncode == 0, text(result)
    result = run(
        dicomio(
            "findscu",
            LOOPBACK,
            str(port),
            "-aec",
            "DCMQRSCP",
            "-S",
            "--json",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "StudyInstanceUID",
        )
    )
    assert result.returncode == 0, text(result)
    studies = {
        json.loads(line)["0020000D"]["Value"][0] for line in result.stdout.decode().splitlines()
    }
    assert studies == set(corpus.study_uids)
    series = corpus.series_uids[0]
    study = one(corpus, series_uid=series).study_uid
    expected = {i.sop_uid for i in corpus.by(series_uid=series)} & seeded
    out = tmp_path / "get"
    result = run(
        dicomio(
            "getscu",
            LOOPBACK,
            str(port),
            "-aec",
            "DCMQRSCP",
            "-S",
            "-od",
            str(out),
            "-k",
            "QueryRetrieveLevel=SERIES",
            "-k",
            f"StudyInstanceUID={study}",
            "-k",
            f"SeriesInstanceUID={series}",
        )
    )
    assert result.returncode == 0, text(result)
    assert {p.stem for p in out.glob("*.dcm")} == expected
    out = tmp_path / "move"
    result = run(
        dicomio(
            "movescu",
            LOOPBACK,
            str(port),
            "-aec",
            "DCMQRSCP",
            "-aet",
            "MOVESCU",
            "--store",
            "--store-bind",
            LOOPBACK,
            "--store-port",
            str(move_port),
            "-od",
            str(out),
            "-S",
            "-k",
            "QueryRetrieveLevel=SERIES",
            "-k",
            f"StudyInstanceUID={study}",
            "-k",
            f"SeriesInstanceUID={series}",
        )
    )
    assert result.returncode == 0, text(result)
    assert {p.stem for p in out.glob("*.dcm")} == expected


# -- small pure parts of the command line ----------------------------------------------------------


def test_keys_and_destinations_and_config(tmp_path: Path) -> None:
    ds = keys_to_dataset(
        ["QueryRetrieveLevel=STUDY", "PatientName", "(0020,000D)=1.2\\1.3", "0008,0020=20240101-"]
    )
    assert ds.QueryRetrieveLevel == "STUDY" and ds.PatientName in (None, "")
    assert list(ds.StudyInstanceUID) == ["1.2", "1.3"] and ds.StudyDate == "20240101-"
    assert keys_to_dataset(["PatientName=Jürgen*"]).SpecificCharacterSet == "ISO_IR 192"
    with pytest.raises(UsageError):
        keys_to_dataset(["NotAKeyword=1"])
    assert parse_destination("STORE=127.0.0.1:104") == ("STORE", ("127.0.0.1", 104))
    with pytest.raises(UsageError):
        parse_destination("STORE=nowhere")
    ini = tmp_path / "q.ini"
    ini.write_text("[qrscp]\nport = 4242\nae_title = ARCH\n[destinations]\nStoreMe = h:1\n")
    assert load_config(ini) == {
        "port": "4242",
        "ae_title": "ARCH",
        "destinations": {"StoreMe": "h:1"},
    }
    toml = tmp_path / "q.toml"
    toml.write_text('port = 4243\n[destinations]\nX = "h:2"\n')
    assert load_config(toml) == {"port": 4243, "destinations": {"X": "h:2"}}


def test_usage_errors_exit_2() -> None:
    result = run(dicomio("findscu", LOOPBACK, "1", "-k", "PatientID"))
    assert result.returncode == 2 and "QueryRetrieveLevel" in text(result), text(result)
    result = run(dicomio("echoscu"))
    assert result.returncode == 2
    result = run(dicomio("--help"))
    assert result.returncode == 0 and "qrscp" in text(result)
    result = run(dicomio("echoscu", "--uvloop", "--backend", "trio", LOOPBACK, "1"))
    assert result.returncode == 2 and "--uvloop" in text(result), text(result)


def test_uvloop_flag_chooses_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = build_parser()
    plain = parser.parse_args(["echoscu", LOOPBACK, "1"])
    assert _event_loop(plain) == ("asyncio", {})
    assert _event_loop(parser.parse_args(["echoscu", "--backend", "trio", LOOPBACK, "1"])) == (
        "trio",
        {},
    )
    fast = parser.parse_args(["qrscp", "--uvloop", "1"])
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if not installed
    with pytest.raises(UsageError, match=r"pip install 'dicomio\[uvloop\]'"):
        _event_loop(fast)
    monkeypatch.setitem(sys.modules, "uvloop", types.ModuleType("uvloop"))
    assert _event_loop(fast) == ("asyncio", {"use_uvloop": True})


# -- TLS -----------------------------------------------------------------------------------------


def test_tls_with_client_certificates(corpus: Corpus, tmp_path: Path) -> None:
    """storescp requiring a client certificate; echoscu and storescu with and without one."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ]
    )
    assert made.returncode == 0, text(made)
    port = free_port()
    tls = ["--tls-cert", str(cert), "--tls-key", str(key), "--tls-ca", str(cert)]
    server = Process(
        dicomio(
            "storescp",
            str(port),
            "--bind",
            LOOPBACK,
            "-od",
            str(tmp_path / "rx"),
            *tls,
            "--tls-require-client-cert",
        ),
        port,
        tmp_path / "storescp.log",
    )
    server.start()
    try:
        result = run(dicomio("echoscu", LOOPBACK, str(port), *tls))
        assert result.returncode == 0 and "Success" in text(result), text(result)
        result = run(dicomio("echoscu", LOOPBACK, str(port), "--tls-ca", str(cert), "-ta", "5"))
        assert result.returncode == 3, text(result)  # no client certificate
        result = run(dicomio("echoscu", LOOPBACK, str(port), "-ta", "5"))
        assert result.returncode == 3, text(result)  # no TLS at all
        result = run(dicomio("storescu", LOOPBACK, str(port), *tls, str(corpus.root)))
        assert result.returncode == 0, text(result)
    finally:
        server.stop()
    assert len(list((tmp_path / "rx").glob("*.dcm"))) == len(corpus.instances)


def test_storescu_splits_over_128_contexts(tmp_path: Path) -> None:
    from dicomio.apps._scu_commands import SendItem, plan_associations

    items = [
        SendItem(tmp_path / f"{n}.dcm", f"1.2.3.{n}", "1.2.840.10008.1.2.1", 10)
        for n in range(130)
    ]
    items.append(SendItem(tmp_path / "x.dcm", "1.2.3.0", "1.2.840.10008.1.2.1.99", 10))
    plans = plan_associations(items)
    assert [len(contexts) for contexts, _ in plans] == [128, 3]
    assert sum(len(files) for _, files in plans) == len(items)
    # Each file travels on the association that proposes its SOP class and syntax.
    for contexts, files in plans:
        offered = {(str(c.abstract_syntax), str(c.transfer_syntaxes[0])) for c in contexts}
        assert {(f.sop_class, f.transfer_syntax) for f in files} <= offered


# -- the default information model (issue #12 item 10) -------------------------------------------

PATIENT_ROOT = {
    "findscu": "1.2.840.10008.5.1.4.1.2.1.1",
    "movescu": "1.2.840.10008.5.1.4.1.2.1.2",
    "getscu": "1.2.840.10008.5.1.4.1.2.1.3",
}


def test_parser_defaults_to_patient_root() -> None:
    from dicomio.apps.cli import build_parser

    parser = build_parser()
    for command in PATIENT_ROOT:
        assert parser.parse_args([command, LOOPBACK, "1"]).study_root is False
        assert parser.parse_args([command, LOOPBACK, "1", "-P"]).study_root is False
        assert parser.parse_args([command, LOOPBACK, "1", "-S"]).study_root is True


@pytest.mark.anyio
@pytest.mark.parametrize("command", sorted(PATIENT_ROOT))
async def test_retrieve_and_find_default_to_patient_root(command: str, tmp_path: Path) -> None:
    """Without -P or -S, each tool asks a strict SCP (Patient Root models only) with Patient
    Root, as its --help says, and the SCP sees the request on that model."""
    import anyio

    from dicomio import AE, evt
    from dicomio.events import Event

    seen: list[str] = []

    async def on_find(event: Event) -> Iterator[tuple[int, Dataset | None]]:
        seen.append(str(event.request.affected_sop_class_uid))
        match = Dataset()
        match.QueryRetrieveLevel = "PATIENT"
        match.PatientID = "P1"
        return iter([(0xFF00, match)])

    async def on_retrieve(event: Event) -> Iterator[int]:
        seen.append(str(event.request.affected_sop_class_uid))
        return iter([0])

    ae = AE("STRICT")
    for uid in PATIENT_ROOT.values():
        ae.add_supported_context(uid)
    ae.move_destinations = {"NOWHERE": (LOOPBACK, 9)}
    handlers = [(evt.EVT_C_FIND, on_find), (evt.EVT_C_GET, on_retrieve)]
    handlers.append((evt.EVT_C_MOVE, on_retrieve))
    with anyio.fail_after(60):
        async with ae.start_server((LOOPBACK, 0), evt_handlers=handlers) as server:
            argv = dicomio(
                command,
                LOOPBACK,
                str(server.port),
                "-aec",
                "STRICT",
                "-k",
                "QueryRetrieveLevel=PATIENT",
                "-k",
                "PatientID=P1",
                *{
                    "findscu": [],
                    "getscu": ["-od", str(tmp_path)],
                    "movescu": ["-aem", "NOWHERE"],
                }[command],
            )
            result = await anyio.run_process([str(a) for a in argv], check=False)
    assert result.returncode == 0, text(result)
    assert seen == [PATIENT_ROOT[command]]


# -- getscu receives compressed instances as stored (issue #12 item 9) ---------------------------

COMPRESSED_FILES = {
    "SC_rgb_jpeg_dcmtk.dcm": "1.2.840.10008.1.2.4.50",  # JPEG Baseline, SC
    "SC_rgb_rle.dcm": "1.2.840.10008.1.2.5",  # RLE, SC
    "JPEG2000.dcm": "1.2.840.10008.1.2.4.91",  # JPEG 2000, SC
    "J2K_pixelrep_mismatch.dcm": "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless, CT
    "MR_small_jpeg_ls_lossless.dcm": "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless, MR
}


@pytest.mark.interop
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_getscu_retrieves_compressed_instances_as_stored(tmp_path: Path, backend: str) -> None:
    """JPEG, JPEG-LS, JPEG 2000 and RLE instances stored in dicomio qrscp come back through
    dicomio getscu in their own syntax, byte for byte: by default for common image classes,
    and for any syntax with --storage-class."""
    import pydicom

    test_files = Path(pydicom.__file__).parent / "data" / "test_files"
    folder = tmp_path / "send"
    folder.mkdir()
    extra = "JPEG-lossy.dcm"  # JPEG Extended: not among the default compressed syntaxes
    for name in (*COMPRESSED_FILES, extra):
        shutil.copy(test_files / name, folder / name)
    infos = {name: read_file_info(folder / name) for name in (*COMPRESSED_FILES, extra)}
    assert len({str(i.sop_instance_uid) for i in infos.values() if i}) == len(infos)
    port = free_port()
    server = Process(
        dicomio("qrscp", str(port), "--bind", LOOPBACK, "--data", str(tmp_path / "archive")),
        port,
        tmp_path / "qrscp.log",
    )
    server.start()
    try:
        result = run(dicomio("storescu", LOOPBACK, str(port), "-aec", "DICOMIO", str(folder)))
        assert result.returncode == 0, text(result)
        studies = set()
        for name in infos:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                studies.add(str(dcmread(folder / name, stop_before_pixels=True).StudyInstanceUID))

        def getscu(out: Path, *options: str) -> subprocess.CompletedProcess[bytes]:
            return run(
                dicomio(
                    "getscu",
                    "--backend",
                    backend,
                    LOOPBACK,
                    str(port),
                    "-aec",
                    "DICOMIO",
                    "-S",
                    "-od",
                    str(out),
                    "-k",
                    "QueryRetrieveLevel=STUDY",
                    "-k",
                    "StudyInstanceUID=" + "\\".join(sorted(studies)),
                    *options,
                )
            )

        result = getscu(tmp_path / "default")
        for name, syntax in COMPRESSED_FILES.items():
            info = infos[name]
            assert info is not None
            received = tmp_path / "default" / f"{info.sop_instance_uid}.dcm"
            assert received.exists(), (name, text(result))
            got = read_file_info(received)
            assert got is not None and str(got.transfer_syntax) == syntax, name
            assert dataset_bytes(received) == dataset_bytes(folder / name), name
        sc = "1.2.840.10008.5.1.4.1.1.7"
        result = getscu(tmp_path / "sc", f"--storage-class={sc}")
        lossy = infos[extra]
        assert lossy is not None
        received = tmp_path / "sc" / f"{lossy.sop_instance_uid}.dcm"
        assert received.exists(), text(result)
        assert dataset_bytes(received) == dataset_bytes(folder / extra)
        sc_files = {n for n, i in infos.items() if i and str(i.sop_class_uid) == sc}
        assert {p.stem for p in (tmp_path / "sc").glob("*.dcm")} == {
            str(infos[n].sop_instance_uid)  # type: ignore[union-attr]
            for n in sc_files
        }
    finally:
        server.stop()


def test_retrieval_contexts_fit_one_association() -> None:
    from dicomio.apps._scu_commands import retrieval_contexts
    from dicomio.presentation import assign_context_ids

    default = retrieval_contexts()
    assert len(default) == 127  # and the Q/R model's makes 128 (PS3.8 9.3.2.2)
    pairs = {(str(c.abstract_syntax), str(c.transfer_syntaxes[0])) for c in default}
    for syntax in COMPRESSED_FILES.values():
        for sop_class in ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4"):
            assert (sop_class, syntax) in pairs
    one = retrieval_contexts(["1.2.840.10008.5.1.4.1.1.7"])
    assert len(one) == 39 and all(len(c.transfer_syntaxes) == 1 for c in one)
    many = retrieval_contexts([f"1.2.3.{n}" for n in range(20)])
    assert len(many) == 127
    # Round robin: every class gets its first two syntaxes before any gets a seventh.
    per_class = {f"1.2.3.{n}": 0 for n in range(20)}
    for cx in many:
        per_class[str(cx.abstract_syntax)] += 1
    assert min(per_class.values()) >= 6
    listed = retrieval_contexts(["1.2.3.4:1.2.840.10008.1.2.4.51,1.2.840.10008.1.2"])
    assert [str(c.transfer_syntaxes[0]) for c in listed] == [
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2",
    ]
    with pytest.raises(UsageError):
        retrieval_contexts(["not-a-uid"])
    assert assign_context_ids([default[0], *default])[-1].context_id == 255
