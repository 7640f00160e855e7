"""Every file pydicom ships for its own tests, through ``dicomio storescu`` into ``dicomio
qrscp`` and back out with ``dicomio getscu`` (issue #12, acceptance 2).

The files are read from the installed package folder, never through
``pydicom.data.get_testdata_file`` (which may download). They are real vendor output, odd and
broken files included, which is the point: what is valid must come back with its data set
byte for byte; what is truncated, not DICOM or not an instance must be named and refused by
storescu; what is an instance the archive cannot file (no Study or Series Instance UID,
DICOMDIRs) is refused by qrscp. The totals of each are asserted.

Several files share a SOP Instance UID (MR_small.dcm in eight encodings): the archive keeps
one instance per UID, so the files go in rounds, each round's files with distinct UIDs, and
each round is retrieved before the next overwrites it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom import dcmread

from dicomio.dataset import read_file_info
from tests.conftest import LOOPBACK, free_port, stop, wait_for_port

pytestmark = [pytest.mark.slow, pytest.mark.interop, pytest.mark.timeout(180)]

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"

#: What storescu must refuse, by kind (file names relative to TEST_FILES).
TRUNCATED = {"MR_truncated.dcm", "rtplan_truncated.dcm", "SC_rgb_jpeg.dcm"}
NOT_DICOM = {
    "README.txt",
    "crayons.icc",
    "dicomdirtests/README.txt",
    "dicomdirtests/TINY_ALPHA/README",
    "no_meta.dcm",  # a stray byte before the first element: no syntax reads it
    "rtplan.dump",
    "rtstruct.dump",
    "test1.json",
    "test_PN.json",
    "zipMR.gz",
}
NOT_AN_INSTANCE = {
    "empty_charset_LEI.dcm",
    "meta_missing_tsyntax.dcm",
    "nested_priv_SQ.dcm",
    "no_meta_group_length.dcm",
}
#: Files sent without a file meta group (storescu detects their syntax).
WITHOUT_META = {"ExplVR_BigEndNoMeta.dcm", "ExplVR_LitEndNoMeta.dcm", "rtstruct.dcm"}


def _run(argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dicomio", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _dataset_bytes(path: Path) -> bytes:
    """The encoded data set of a file: after its file meta group, or the whole file."""
    info = read_file_info(path)
    data = path.read_bytes()
    if info is not None:
        return data[info.dataset_offset :]
    from dicomio.dataset import parse_file_meta

    parsed = parse_file_meta(data)
    return data[parsed[1] :] if parsed is not None else data


def _identity(path: Path) -> tuple[str, str, str, str, str, str]:
    """(SOP Instance UID, SOP Class UID, transfer syntax, Study UID, Series UID, the data
    set's own SOP Instance UID); the first three from the file meta if there is one."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = dcmread(path, force=True, stop_before_pixels=True)
    info = read_file_info(path)
    if info is not None:
        sop, klass, ts = (
            str(info.sop_instance_uid),
            str(info.sop_class_uid),
            str(info.transfer_syntax),
        )
    else:
        sop, klass = str(ds.SOPInstanceUID), str(ds.SOPClassUID)
        ts = (
            str(ds.file_meta.get("TransferSyntaxUID", ""))
            or {
                (True, True): "1.2.840.10008.1.2",
                (False, True): "1.2.840.10008.1.2.1",
                (False, False): "1.2.840.10008.1.2.2",
            }[(bool(ds.original_encoding[0]), bool(ds.original_encoding[1]))]
        )
    return (
        sop,
        klass,
        ts,
        str(ds.get("StudyInstanceUID", "") or ""),
        str(ds.get("SeriesInstanceUID", "") or ""),
        str(ds.get("SOPInstanceUID", "") or ""),
    )


@pytest.fixture
def qrscp(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    log = tmp_path / "qrscp.log"
    with open(log, "wb") as sink:
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
                str(tmp_path / "archive"),
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, proc, timeout=20)
        yield port
    finally:
        stop(proc)


def test_pydicom_test_files_round_trip(qrscp: int, tmp_path: Path) -> None:
    files = sorted(p for p in TEST_FILES.rglob("*") if p.is_file())
    names = {p: str(p.relative_to(TEST_FILES)) for p in files}
    refused_by_scu = TRUNCATED | NOT_DICOM | NOT_AN_INSTANCE
    assert refused_by_scu <= set(names.values())
    valid = [p for p in files if names[p] not in refused_by_scu]
    identities = {p: _identity(p) for p in valid}
    # Instances the archive cannot file: no study or series to put them in (DICOMDIRs and a
    # few test fragments). storescu sends them; qrscp answers a failure status.
    unfileable = {p for p in valid if not (identities[p][3] and identities[p][4])}
    stored = [p for p in valid if p not in unfileable]

    # Rounds of distinct SOP Instance UIDs: the file meta's (which names the C-STORE and so
    # the received file) and the data set's (which the archive files it by) may differ.
    def uids(path: Path) -> set[str]:
        return {identities[path][0], identities[path][5]}

    rounds: list[list[Path]] = []
    for path in valid:
        for files_in_round in rounds:
            if all(not uids(p) & uids(path) for p in files_in_round):
                files_in_round.append(path)
                break
        else:
            rounds.append([path])
    pairs = sorted({(identities[p][1], identities[p][2]) for p in stored})
    classes: dict[str, list[str]] = {}
    for klass, ts in pairs:
        classes.setdefault(klass, []).append(ts)
    proposal = [f"--storage-class={k}:{','.join(v)}" for k, v in classes.items()]
    assert len(pairs) < 127

    sent_total = refused_total = 0
    retrieved: dict[Path, Path] = {}
    odd: list[str] = []
    for number, files_in_round in enumerate(rounds):
        folder = tmp_path / f"round{number}"
        folder.mkdir()
        members = list(files_in_round)
        if number == 0:
            members += [p for p in files if names[p] in refused_by_scu]
        for path in members:
            target = folder / names[path]
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, target)
        result = _run(["storescu", LOOPBACK, str(qrscp), "-aec", "DICOMIO", str(folder)])
        output = result.stdout + result.stderr
        assert result.returncode == 1, output  # some files are always refused
        for path in members:
            if names[path] in refused_by_scu:
                assert f"skipped {folder / names[path]}" in output, (names[path], output)
        failed = {Path(m) for m in re.findall(r"^E: failed (\S+):", output, re.MULTILINE)}
        assert failed == {folder / names[p] for p in files_in_round if p in unfileable}, output
        summary = re.search(r"storescu: sent (\d+) of (\d+) files", output)
        assert summary is not None, output
        sent_total += int(summary.group(1))
        refused_total += len(failed)

        studies = sorted({identities[p][3] for p in files_in_round if p not in unfileable})
        if not studies:
            continue
        out = tmp_path / f"got{number}"
        result = _run(
            [
                "getscu",
                LOOPBACK,
                str(qrscp),
                "-aec",
                "DICOMIO",
                "-S",
                "-od",
                str(out),
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                "StudyInstanceUID=" + "\\".join(studies),
                *proposal,
            ],
            timeout=90,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        got = {read_file_info(p).sop_instance_uid: p for p in out.glob("*.dcm")}  # type: ignore[union-attr]
        for path in files_in_round:
            if path in unfileable:
                continue
            received = got.get(identities[path][0])
            assert received is not None, (names[path], output)
            info = read_file_info(received)
            assert info is not None and str(info.transfer_syntax) == identities[path][2]
            sent = _dataset_bytes(path)
            if len(sent) % 2:
                # An odd-length (Deflated) data set goes out with its one 00H pad (PS3.5
                # A.5; DIMSE data sets are even), so it is stored and retrieved padded.
                sent += b"\x00"
                odd.append(names[path])
            assert _dataset_bytes(received) == sent, names[path]
            retrieved[path] = received

    # The totals: every valid file was sent; every fileable one came back byte-identical.
    assert odd == ["image_dfl.dcm"]
    assert sent_total == len(valid) - refused_total
    assert refused_total == len(unfileable)
    assert set(retrieved) == set(stored)
    assert (len(files), len(valid), len(stored), len(unfileable)) == (176, 159, 145, 14)
    assert {names[p] for p in valid if names[p] in WITHOUT_META} == WITHOUT_META
