"""``dicomio storescu`` on many files: a corrupt file is reported and skipped while the rest
go through; progress is a bar on a terminal (checked through a pseudo-terminal) and plain
lines otherwise. The receiver is ``dicomio storescp`` run as a subprocess."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite
from pydicom.uid import UID

from dicomio.dataset import read_file_info
from tests.conftest import LOOPBACK, free_port, stop, wait_for_port
from tests.corpus import dataset_bytes

pytestmark = [pytest.mark.timeout(120)]

CT = "1.2.840.10008.5.1.4.1.1.2"
PREFIX = "1.2.826.0.1.3680043.8.498.77."
COUNT = 1000


def template(uid: str) -> bytes:
    """A tiny CT instance without pixel data, as Part 10 bytes."""
    ds = Dataset()
    ds.SOPClassUID = UID(CT)
    ds.SOPInstanceUID = UID(uid)
    ds.PatientID = "MANY"
    ds.PatientName = "Many^Files"
    ds.StudyInstanceUID = PREFIX + "1"
    ds.SeriesInstanceUID = PREFIX + "2"
    ds.Modality = "CT"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(CT)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(uid)
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.1")
    buffer = DicomBytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def many_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, set[str]]:
    """1,000 small files (the same data set with new SOP Instance UIDs) and one corrupt file.

    UIDs of one length let the bytes be patched instead of encoding each data set again.
    """
    folder = tmp_path_factory.mktemp("many")
    placeholder = PREFIX + "1999999"
    raw = template(placeholder)
    assert raw.count(placeholder.encode()) == 2
    uids = set()
    for i in range(COUNT - 1):
        uid = f"{PREFIX}{1_000_000 + i}"
        uids.add(uid)
        (folder / f"f{i:04d}.dcm").write_bytes(raw.replace(placeholder.encode(), uid.encode()))
    corrupt = folder / "f0500-corrupt.dcm"
    corrupt.write_bytes(b"this is not a DICOM file" * 10)
    return folder, corrupt, uids


@pytest.fixture
def dicomio_storescp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = free_port()
    out = tmp_path / "received"
    log = tmp_path / "storescp.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dicomio",
                "storescp",
                str(port),
                "--bind",
                LOOPBACK,
                "-od",
                str(out),
                "-aet",
                "STORESCP",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, proc, timeout=20)
        yield port, out
    finally:
        stop(proc)
        assert b"listening on" in log.read_bytes()


def test_storescu_1000_files_one_corrupt(
    many_files: tuple[Path, Path, set[str]], dicomio_storescp: tuple[int, Path]
) -> None:
    folder, corrupt, uids = many_files
    port, out = dicomio_storescp
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dicomio",
            "storescu",
            LOOPBACK,
            str(port),
            "-aec",
            "STORESCP",
            "--window",
            "8",
            str(folder),
        ],
        capture_output=True,
        timeout=90,
        check=False,
    )
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode == 1, output
    assert f"sent {COUNT - 1} of {COUNT} files" in output
    assert str(corrupt) in output and "not a DICOM" in output
    # Plain progress lines when not on a terminal: no carriage returns, no bar.
    assert "\r" not in output and f"{COUNT - 1}/{COUNT - 1} files" in output
    received = {p.stem for p in out.glob("*.dcm")}
    assert received == uids
    assert not list(out.glob(".dicomio-*")), "a partial file was left behind"
    assert time.monotonic() - started < 60


def test_storescu_progress_bar_on_a_terminal(
    many_files: tuple[Path, Path, set[str]], dicomio_storescp: tuple[int, Path], tmp_path: Path
) -> None:
    folder, _, _ = many_files
    subset = tmp_path / "subset"
    subset.mkdir()
    for path in sorted(folder.glob("f0*.dcm"))[:150]:
        if "corrupt" not in path.name:
            os.link(path, subset / path.name)
    sent = len(list(subset.iterdir()))
    port, out = dicomio_storescp
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dicomio",
            "storescu",
            LOOPBACK,
            str(port),
            "-aec",
            "STORESCP",
            str(subset),
        ],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        close_fds=True,
    )
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            stop(proc)
        os.close(master)
    screen = b"".join(chunks).decode(errors="replace")
    assert "\r[" in screen and "#" in screen, screen
    assert f"{sent}/{sent} files" in screen and "/s" in screen and "100%" in screen
    assert f"sent {sent} of {sent} files" in screen
    assert len(list(out.glob("*.dcm"))) == sent


# -- truncated files and files without meta (issue #12 items 7 and 8) ---------------------------

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
TRUNCATED = ("MR_truncated.dcm", "rtplan_truncated.dcm")


def storescu(port: int, *paths: Path, backend: str = "asyncio") -> tuple[int, str]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dicomio",
            "storescu",
            "--backend",
            backend,
            LOOPBACK,
            str(port),
            "-aec",
            "STORESCP",
            *map(str, paths),
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    return result.returncode, (result.stdout + result.stderr).decode(errors="replace")


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_storescu_names_and_skips_truncated_files(
    dicomio_storescp: tuple[int, Path], tmp_path: Path, backend: str
) -> None:
    """DCMTK refuses to send these two; so must we: report, skip, count, send the rest."""
    port, out = dicomio_storescp
    folder = tmp_path / "send"
    folder.mkdir()
    for name in (*TRUNCATED, "MR_small.dcm"):
        os.link(TEST_FILES / name, folder / name)
    code, output = storescu(port, folder, backend=backend)
    assert code == 1, output
    for name in TRUNCATED:
        assert re.search(rf"skipped {re.escape(str(folder / name))}: truncated", output), output
    assert "sent 1 of 3 files" in output and "2 skipped (2 truncated or malformed)" in output
    good = read_file_info(TEST_FILES / "MR_small.dcm")
    assert good is not None
    assert [p.stem for p in out.glob("*.dcm")] == [str(good.sop_instance_uid)]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_storescu_sends_data_sets_without_file_meta(
    dicomio_storescp: tuple[int, Path], tmp_path: Path, backend: str
) -> None:
    """A data set without a meta group goes in the syntax it is in, its bytes unchanged;
    only what is not DICOM is skipped."""
    port, out = dicomio_storescp
    folder = tmp_path / "send"
    folder.mkdir()
    bare = {
        "ExplVR_LitEndNoMeta.dcm": "1.2.840.10008.1.2.1",
        "rtstruct.dcm": "1.2.840.10008.1.2",
    }
    for name in (*bare, "README.txt"):
        os.link(TEST_FILES / name, folder / name)
    big_endian = tmp_path / "big" / "ExplVR_BigEndNoMeta.dcm"  # same instance UID as LitEnd
    big_endian.parent.mkdir()
    os.link(TEST_FILES / big_endian.name, big_endian)
    for source, syntaxes in (
        (folder, bare),
        (big_endian, {big_endian.name: "1.2.840.10008.1.2.2"}),
    ):
        code, output = storescu(port, source, backend=backend)
        assert f"sent {len(syntaxes)} of" in output, output
        for name, syntax in syntaxes.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                uid = str(pydicom.dcmread(TEST_FILES / name, force=True).SOPInstanceUID)
            received = out / f"{uid}.dcm"
            info = read_file_info(received)
            assert info is not None and str(info.transfer_syntax) == syntax, name
            data = received.read_bytes()[info.dataset_offset :]
            assert data == (TEST_FILES / name).read_bytes(), name
    assert code == 0, output
    code, output = storescu(port, folder, backend=backend)
    assert code == 1 and re.search(r"skipped \S+README.txt: not a DICOM file", output), output


@pytest.fixture
def dicomio_qrscp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = free_port()
    data = tmp_path / "archive"
    with open(tmp_path / "qrscp.log", "wb") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dicomio",
                "qrscp",
                str(port),
                "--bind",
                LOOPBACK,
                "--data",
                str(data),
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, proc, timeout=20)
        yield port, data
    finally:
        stop(proc)


@pytest.mark.anyio
async def test_scps_refuse_truncated_data_sets_and_keep_nothing(
    dicomio_storescp: tuple[int, Path], dicomio_qrscp: tuple[int, Path]
) -> None:
    """The bytes of a truncated file, sent as they are (the SCU side checks nothing here):
    dicomio storescp and qrscp answer 0xC000 and keep no file and no index row."""
    import anyio

    from dicomio import AE
    from dicomio.sop import PatientRootQueryRetrieveInformationModelFind

    store_port, out = dicomio_storescp
    qr_port, data = dicomio_qrscp
    # MR_truncated.dcm has MR_small.dcm's SOP Instance UID: sent after it, it would replace
    # it if it were kept.
    files = [TEST_FILES / name for name in ("MR_small.dcm", *TRUNCATED)]
    infos = [read_file_info(p) for p in files]
    ae = AE("RAWSCU")
    for info in infos:
        assert info is not None
        ae.add_requested_context(str(info.sop_class_uid), [str(info.transfer_syntax)])
    ae.add_requested_context(PatientRootQueryRetrieveInformationModelFind)
    with anyio.fail_after(60):
        for port, title in ((store_port, "STORESCP"), (qr_port, "DICOMIO")):
            async with ae.associate(LOOPBACK, port, ae_title=title) as assoc:
                statuses = [int((await assoc.send_c_store(p)).Status) for p in files]
                assert statuses == [0x0000, 0xC000, 0xC000], title
                if title == "DICOMIO":
                    found = []
                    for info in infos:
                        assert info is not None
                        query = Dataset()
                        query.QueryRetrieveLevel = "IMAGE"
                        query.SOPInstanceUID = str(info.sop_instance_uid)
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            ds = pydicom.dcmread(info.path, stop_before_pixels=True)
                        query.PatientID = ds.PatientID
                        query.StudyInstanceUID = ds.StudyInstanceUID
                        query.SeriesInstanceUID = ds.SeriesInstanceUID
                        async for status, identifier in assoc.send_c_find(
                            query, PatientRootQueryRetrieveInformationModelFind
                        ):
                            if int(status.Status) in (0xFF00, 0xFF01):
                                found.append(str(identifier.SOPInstanceUID))
                    assert set(found) == {str(infos[0].sop_instance_uid)}  # type: ignore[union-attr]
    good = str(infos[0].sop_instance_uid)  # type: ignore[union-attr]
    kept = [*out.glob("*.dcm"), *data.rglob("*.dcm")]
    assert [p.stem for p in kept] == [good, good]
    for path in kept:
        assert dataset_bytes(path) == dataset_bytes(files[0]), path
    assert not list(out.glob(".*")), "a partial file was left behind"
    assert not [p for p in data.rglob("*.part")], "a partial file was left behind"


@pytest.mark.interop
def test_dcmtk_storescu_with_a_truncated_file(
    dicomio_storescp: tuple[int, Path], tmp_path: Path
) -> None:
    """DCMTK storescu refuses to send the truncated files (so DCMTK cannot exercise our
    SCP's check, which the test above does); nothing of them arrives."""
    from tests.conftest import DCMTK_ENV, require_dcmtk

    tools = require_dcmtk("storescu")
    port, out = dicomio_storescp
    result = subprocess.run(
        [tools["storescu"], "-aec", "STORESCP", LOOPBACK, str(port)]
        + [str(TEST_FILES / name) for name in TRUNCATED],
        capture_output=True,
        timeout=60,
        check=False,
        env=DCMTK_ENV,
    )
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert "E:" in output or "F:" in output or result.returncode != 0, output
    assert not list(out.glob("*.dcm")), output
