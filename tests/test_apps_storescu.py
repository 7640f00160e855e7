"""``dicomio storescu`` on many files: a corrupt file is reported and skipped while the rest
go through; progress is a bar on a terminal (checked through a pseudo-terminal) and plain
lines otherwise. The receiver is ``dicomio storescp`` run as a subprocess."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite
from pydicom.uid import UID

from tests.conftest import LOOPBACK, free_port, stop, wait_for_port

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
