"""DCMTK's command line tools as clients of a dicomio SCP (issue #4).

Each test starts a dicomio server in the test's own event loop on a free loopback port and
runs a DCMTK tool against it as a subprocess (``run_tool``, so the loop keeps serving).
Stored data sets must arrive byte for byte as they were sent, in the transfer syntax they
were sent in; Q/R answers come from ``tests.qr_index`` over the shared corpus.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from dicomio import AE, Server, evt, stream_to_disk
from dicomio.dataset import read_file_info, write_part10_header
from dicomio.sop import (
    CTImageStorage,
    MRImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from tests.conftest import (
    LOOPBACK,
    free_port,
    require_dcmtk,
    run_tool,
    tool_output,
)
from tests.corpus import (
    TRANSFER_SYNTAXES,
    UNCOMPRESSED,
    Corpus,
    Instance,
    dataset_bytes,
    same_content,
)
from tests.qr_index import QRIndex, find_handler, get_handler, move_handler

pytestmark = [pytest.mark.interop, pytest.mark.anyio, pytest.mark.uvloop]

SCP_AET = "DICOMIO"

#: storescu options that make it send files of each transfer syntax as they are (INTEROP.md).
STORESCU_OPTIONS = {
    ImplicitVRLittleEndian: ["-xi"],
    ExplicitVRLittleEndian: ["-xe"],
    ExplicitVRBigEndian: ["-xb"],
    DeflatedExplicitVRLittleEndian: ["-xd"],
    RLELossless: ["-xr"],
}

QR_MODELS = (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)


def dcmtk(
    tool: str,
    *words: str | Path,
    port: int,
    keys: Sequence[str] = (),
    files: Sequence[str | Path] = (),
) -> list[str]:
    """A DCMTK command line: options (each ``str`` split at spaces, each Path kept whole),
    ``-k`` for each query key, the peer, then any files."""
    argv = [tool]
    for word in words:
        argv += word.split() if isinstance(word, str) else [str(word)]
    for key in keys:
        argv += ["-k", key]
    return [*argv, LOOPBACK, str(port), *map(str, files)]


def scp_ae() -> AE:
    """An SCP for verification, CT/MR storage in every corpus syntax, and Q/R."""
    ae = AE(SCP_AET)
    ae.require_called_aet = True  # catches a wrong -aec
    ae.add_supported_context(Verification)
    for sop_class in (CTImageStorage, MRImageStorage):
        # scp_role: a C-GET SCU takes the Storage SCP role on its own association.
        ae.add_supported_context(sop_class, TRANSFER_SYNTAXES, scu_role=True, scp_role=True)
    for model in QR_MODELS:
        ae.add_supported_context(model)
    return ae


@asynccontextmanager
async def serving(ae: AE, handlers: Sequence[Any] = ()) -> AsyncIterator[Server]:
    async with ae.start_server((LOOPBACK, 0), evt_handlers=list(handlers)) as server:
        yield server


def stored_matches(stored: Path, original: Path, *, written_by_dcmtk: bool = False) -> None:
    """``stored`` holds the data set of ``original`` byte for byte, in its transfer syntax.

    A file a DCMTK tool wrote is its own re-encoding of what it received; for a Deflated
    data set that differs from the sender's stream (DCMTK writes the deflated stream without
    the trailing pad byte), so there the inflated data sets are compared instead.
    """
    info, want = read_file_info(stored), read_file_info(original)
    assert info is not None and want is not None
    assert info.transfer_syntax == want.transfer_syntax, stored
    assert info.sop_instance_uid == want.sop_instance_uid
    if written_by_dcmtk and info.transfer_syntax == DeflatedExplicitVRLittleEndian:
        assert dcmread(stored) == dcmread(original), stored
        return
    assert dataset_bytes(stored) == dataset_bytes(original), stored


def moved_matches(stored: Path, instance: Instance, uncompressed: dict[str, set[str]]) -> None:
    """A C-MOVEd instance as the destination wrote it: a compressed one as it was sent; an
    uncompressed one in the one syntax accepted for its SOP class (one context per class
    for every uncompressed instance, issue #12 item 5), converted if need be."""
    if instance.transfer_syntax not in UNCOMPRESSED:
        stored_matches(stored, instance.path, written_by_dcmtk=True)
        return
    info = read_file_info(stored)
    assert info is not None
    syntaxes = uncompressed.setdefault(instance.sop_class, set())
    syntaxes.add(str(info.transfer_syntax))
    assert len(syntaxes) == 1, (instance.sop_class, syntaxes)
    assert same_content(dataset_bytes(stored), str(info.transfer_syntax), instance.path), stored


# -- C-ECHO ---------------------------------------------------------------------------------


async def test_echoscu() -> None:
    tools = require_dcmtk("echoscu")
    calls: list[str] = []

    async def on_echo(event: Any) -> int:
        calls.append(event.assoc.remote_ae_title)
        return 0

    async with serving(scp_ae(), [(evt.EVT_C_ECHO, on_echo)]) as server:
        result = await run_tool(
            dcmtk(tools["echoscu"], f"-v -aet ECHOSCU -aec {SCP_AET}", port=server.port)
        )
    out = tool_output(result)
    assert result.returncode == 0, out
    # echoscu exits 0 even when the peer aborts after accepting (INTEROP.md): read the log.
    assert "Received Echo Response (Success)" in out, out
    assert "Abort" not in out and "Failed" not in out, out
    assert calls == ["ECHOSCU"]


async def test_echoscu_wrong_called_aet_is_rejected() -> None:
    tools = require_dcmtk("echoscu")
    async with serving(scp_ae()) as server:
        result = await run_tool(
            dcmtk(tools["echoscu"], "-aet ECHOSCU -aec NOT-ME", port=server.port)
        )
    out = tool_output(result)
    assert result.returncode == 1, out
    assert "Called AE Title Not Recognized" in out, out


# -- C-STORE --------------------------------------------------------------------------------


def _write_handler(out: Path) -> Any:
    async def on_store(event: Any) -> int:
        path = out / f"{event.request.affected_sop_instance_uid}.dcm"
        with open(path, "wb") as fp:
            write_part10_header(fp, event.file_meta)
            fp.write(event.raw)
        return 0

    return on_store


def _stream_handler(out: Path, spool: Path) -> Any:
    @stream_to_disk(spool)
    async def on_store(event: Any) -> int:
        assert event.raw is None and event.dataset_path is not None
        event.dataset_path.rename(out / f"{event.request.affected_sop_instance_uid}.dcm")
        return 0

    return on_store


@pytest.mark.parametrize("mode", ["raw", "stream_to_disk"])
async def test_storescu_corpus_as_is(corpus: Corpus, tmp_path: Path, mode: str) -> None:
    """Every corpus file, sent as-is (``-R`` and the matching ``-x``), is stored unchanged."""
    tools = require_dcmtk("storescu")
    out, spool = tmp_path / "out", tmp_path / "spool"
    out.mkdir()
    spool.mkdir()
    handler = _write_handler(out) if mode == "raw" else _stream_handler(out, spool)
    async with serving(scp_ae(), [(evt.EVT_C_STORE, handler)]) as server:
        for ts, options in STORESCU_OPTIONS.items():
            files = [str(i.path) for i in corpus.instances if i.transfer_syntax == ts]
            assert files
            result = await run_tool(
                dcmtk(
                    tools["storescu"],
                    f"-aet STORESCU -aec {SCP_AET} -R",
                    *options,
                    port=server.port,
                    files=files,
                )
            )
            assert result.returncode == 0, tool_output(result)
    for instance in corpus.instances:
        stored_matches(out / f"{instance.sop_uid}.dcm", instance.path)
    assert len(list(out.iterdir())) == len(corpus.instances)
    assert list(spool.iterdir()) == []  # nothing partial or left behind


async def test_storescu_accepts_an_ac_with_rejected_contexts(
    corpus: Corpus, tmp_path: Path
) -> None:
    """storescu without ``-R`` proposes every storage class it knows; the SCP supports two.

    The A-ASSOCIATE-AC then carries well over a hundred rejected context items, each with
    its Transfer Syntax sub-item (PS3.8 9.3.3.2); storescu must read them all and store on
    the one context that was accepted (issue #12 item 11).
    """
    tools = require_dcmtk("storescu")
    out = tmp_path / "out"
    out.mkdir()
    instance = corpus.by(transfer_syntax=ExplicitVRLittleEndian)[0]
    async with serving(scp_ae(), [(evt.EVT_C_STORE, _write_handler(out))]) as server:
        result = await run_tool(
            dcmtk(
                tools["storescu"],
                f"-v -aet STORESCU -aec {SCP_AET}",
                port=server.port,
                files=[instance.path],
            )
        )
    text = tool_output(result)
    assert result.returncode == 0, text
    assert "Association Accepted" in text, text
    stored = read_file_info(out / f"{instance.sop_uid}.dcm")
    assert stored is not None and stored.sop_instance_uid == instance.sop_uid


async def test_storescu_failure_status_reported(corpus: Corpus) -> None:
    """A handler's failure status reaches storescu, which reports it."""
    tools = require_dcmtk("storescu")

    async def refuse(event: Any) -> int:
        return 0xA700  # Refused: out of resources (PS3.4 B.2.3)

    instance = corpus.by(transfer_syntax=ExplicitVRLittleEndian)[0]
    async with serving(scp_ae(), [(evt.EVT_C_STORE, refuse)]) as server:
        result = await run_tool(
            dcmtk(
                tools["storescu"],
                f"-v -aet STORESCU -aec {SCP_AET} -xe -R",
                port=server.port,
                files=[instance.path],
            )
        )
    out = tool_output(result)
    assert "0xa700" in out.lower() or "Refused: OutOfResources" in out, out


# -- C-FIND ---------------------------------------------------------------------------------


async def _findscu(
    tools: dict[str, str], port: int, out: Path, model: str, keys: Sequence[str]
) -> list[Any]:
    out.mkdir(exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    argv = dcmtk(
        tools["findscu"], f"{model} -aet FINDSCU -aec {SCP_AET} -X -od", out, port=port, keys=keys
    )
    result = await run_tool(argv)
    assert result.returncode == 0, tool_output(result)
    return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


async def test_findscu(corpus: Corpus, tmp_path: Path) -> None:
    tools = require_dcmtk("findscu")
    index = QRIndex.from_corpus(corpus)
    out = tmp_path / "rsp"
    patient = corpus.instances[0]
    study = patient.study_uid
    async with serving(scp_ae(), [(evt.EVT_C_FIND, find_handler(index))]) as server:
        port = server.port

        # Patient Root, PATIENT level, universal matching.
        found = await _findscu(
            tools,
            port,
            out,
            "-P",
            [
                "QueryRetrieveLevel=PATIENT",
                "PatientID",
                "PatientName",
            ],
        )
        assert sorted(ds.PatientID for ds in found) == ["PID000", "PID001"]
        assert {str(ds.PatientName) for ds in found} == {"Doe^Jane", "Müller^Jürgen"}

        # Patient Root, STUDY level under one patient, single value matching.
        found = await _findscu(
            tools,
            port,
            out,
            "-P",
            [
                "QueryRetrieveLevel=STUDY",
                f"PatientID={patient.patient_id}",
                "StudyInstanceUID",
                "StudyDate",
            ],
        )
        expected = {i.study_uid for i in corpus.by(patient_id=patient.patient_id)}
        assert {ds.StudyInstanceUID for ds in found} == expected
        assert all(ds.QueryRetrieveLevel == "STUDY" for ds in found)

        # Study Root, STUDY level, wildcard on a patient attribute.
        found = await _findscu(
            tools,
            port,
            out,
            "-S",
            [
                "QueryRetrieveLevel=STUDY",
                "PatientName=Doe*",
                "StudyInstanceUID",
                "PatientID",
            ],
        )
        assert {ds.StudyInstanceUID for ds in found} == {
            i.study_uid for i in corpus.by(patient_name="Doe^Jane")
        }
        assert {ds.PatientID for ds in found} == {"PID000"}

        # Study Root, SERIES level.
        found = await _findscu(
            tools,
            port,
            out,
            "-S",
            [
                "QueryRetrieveLevel=SERIES",
                f"StudyInstanceUID={study}",
                "SeriesInstanceUID",
                "Modality",
            ],
        )
        assert sorted(ds.Modality for ds in found) == ["CT", "MR"]
        single = await _findscu(
            tools,
            port,
            out,
            "-S",
            [
                "QueryRetrieveLevel=SERIES",
                f"StudyInstanceUID={study}",
                "SeriesInstanceUID",
                "Modality=M?",
            ],
        )
        assert [ds.Modality for ds in single] == ["MR"]
        assert {ds.SeriesInstanceUID for ds in found} == {
            i.series_uid for i in corpus.by(study_uid=study)
        }

        # Study Root, IMAGE level.
        series = patient.series_uid
        found = await _findscu(
            tools,
            port,
            out,
            "-S",
            [
                "QueryRetrieveLevel=IMAGE",
                f"StudyInstanceUID={study}",
                f"SeriesInstanceUID={series}",
                "SOPInstanceUID",
                "InstanceNumber",
            ],
        )
        assert {ds.SOPInstanceUID for ds in found} == {
            i.sop_uid for i in corpus.by(series_uid=series)
        }

        # No match: only the final Success, no pending responses.
        found = await _findscu(
            tools,
            port,
            out,
            "-S",
            [
                "QueryRetrieveLevel=STUDY",
                "PatientID=NOBODY",
                "StudyInstanceUID",
            ],
        )
        assert found == []


# -- C-GET ----------------------------------------------------------------------------------


async def _getscu(
    tools: dict[str, str], port: int, out: Path, options: Sequence[str], keys: Sequence[str]
) -> tuple[Any, dict[str, Path]]:
    argv = dcmtk(
        tools["getscu"], f"-v -aet GETSCU -aec {SCP_AET} -od", out, *options, port=port, keys=keys
    )
    result = await run_tool(argv)
    received = {dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in out.iterdir()}
    return result, received


def same_instance(received: Path, original: Path) -> None:
    """Same instance and pixels, whatever syntax it travelled in."""
    got, want = dcmread(received), dcmread(original)
    assert got.SOPInstanceUID == want.SOPInstanceUID
    assert got.PatientName == want.PatientName
    # Compare values: pydicom gives Big Endian pixel data a big-endian dtype, so the raw
    # bytes of equal arrays differ.
    assert np.array_equal(got.pixel_array, want.pixel_array)


@pytest.mark.parametrize("model", ["-P", "-S"])
async def test_getscu_series(corpus: Corpus, tmp_path: Path, model: str) -> None:
    """getscu retrieves a series over its own association (Storage SCP role selection).

    getscu proposes one context per storage class with several syntaxes; dicomio accepts
    the first (Explicit VR Little Endian), so the SCP converts Implicit, Big Endian and
    Deflated instances to it.
    """
    tools = require_dcmtk("getscu")
    index = QRIndex.from_corpus(corpus)
    series = next(
        s
        for s in corpus.series_uids
        if all(i.transfer_syntax != RLELossless for i in corpus.by(series_uid=s))
    )
    wanted = corpus.by(series_uid=series)
    keys = [
        "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={wanted[0].study_uid}",
        f"SeriesInstanceUID={series}",
    ]
    if model == "-P":
        keys.append(f"PatientID={wanted[0].patient_id}")
    async with serving(scp_ae(), [(evt.EVT_C_GET, get_handler(index))]) as server:
        result, received = await _getscu(tools, server.port, tmp_path, [model], keys)
    out = tool_output(result)
    assert result.returncode == 0, out
    assert "Received C-GET Response (Success)" in out, out
    assert "Number of Failed Suboperations    : 0" in out, out
    assert set(received) == {i.sop_uid for i in wanted}, out
    for instance in wanted:
        same_instance(received[instance.sop_uid], instance.path)


async def test_getscu_rle_as_is(corpus: Corpus, tmp_path: Path) -> None:
    """An RLE instance, retrieved by a getscu that prefers RLE, arrives unchanged."""
    tools = require_dcmtk("getscu")
    index = QRIndex.from_corpus(corpus)
    instance = corpus.by(transfer_syntax=RLELossless)[0]
    keys = [
        "QueryRetrieveLevel=IMAGE",
        f"StudyInstanceUID={instance.study_uid}",
        f"SeriesInstanceUID={instance.series_uid}",
        f"SOPInstanceUID={instance.sop_uid}",
    ]
    async with serving(scp_ae(), [(evt.EVT_C_GET, get_handler(index))]) as server:
        result, received = await _getscu(tools, server.port, tmp_path, ["-S", "+xr"], keys)
    assert result.returncode == 0, tool_output(result)
    assert list(received) == [instance.sop_uid], tool_output(result)
    stored_matches(received[instance.sop_uid], instance.path, written_by_dcmtk=True)


async def test_getscu_rle_decompressed(corpus: Corpus, tmp_path: Path) -> None:
    """A study with RLE instances, retrieved by a getscu that proposes only uncompressed
    syntaxes, arrives whole: the RLE instances are decompressed (PS3.5 A.4.2, lossless) to
    the syntax getscu accepted, and decode to the same pixels (issue #14)."""
    tools = require_dcmtk("getscu")
    index = QRIndex.from_corpus(corpus)
    study = next(
        s
        for s in corpus.study_uids
        if any(i.transfer_syntax == RLELossless for i in corpus.by(study_uid=s))
    )
    wanted = corpus.by(study_uid=study)
    rle = {i.sop_uid for i in wanted if i.transfer_syntax == RLELossless}
    keys = ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study}"]
    async with serving(scp_ae(), [(evt.EVT_C_GET, get_handler(index))]) as server:
        result, received = await _getscu(tools, server.port, tmp_path, ["-S"], keys)
    out = tool_output(result)
    assert result.returncode == 0, out
    assert "Received C-GET Response (Success)" in out, out
    assert "Number of Failed Suboperations    : 0" in out, out
    assert set(received) == {i.sop_uid for i in wanted}, out
    for instance in wanted:
        same_instance(received[instance.sop_uid], instance.path)
        if instance.sop_uid in rle:
            info = read_file_info(received[instance.sop_uid])
            assert info is not None and info.transfer_syntax in UNCOMPRESSED


# -- C-MOVE ---------------------------------------------------------------------------------


async def test_movescu_to_storescp(
    corpus: Corpus, tmp_path: Path, dcmtk_storescp: tuple[int, Path]
) -> None:
    """C-MOVE of a study to a DCMTK storescp named in ``ae.move_destinations``."""
    tools = require_dcmtk("movescu")
    store_port, store_out = dcmtk_storescp
    index = QRIndex.from_corpus(corpus)
    ae = scp_ae()
    ae.move_destinations["STORESCP"] = (LOOPBACK, store_port)
    study = corpus.instances[-1].study_uid
    async with serving(ae, [(evt.EVT_C_MOVE, move_handler(index))]) as server:
        result = await run_tool(
            dcmtk(
                tools["movescu"],
                f"-S -aet MOVESCU -aec {SCP_AET} -aem STORESCP",
                port=server.port,
                keys=["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study}"],
            )
        )
    assert result.returncode == 0, tool_output(result)
    wanted = corpus.by(study_uid=study)
    uncompressed: dict[str, set[str]] = {}
    for instance in wanted:
        stored = store_out / f"{instance.modality}.{instance.sop_uid}.dcm"
        moved_matches(stored, instance, uncompressed)
    assert len(list(store_out.glob("*.dcm"))) == len(wanted)


@pytest.mark.parametrize("model", ["-P", "-S"])
async def test_movescu_to_itself(corpus: Corpus, tmp_path: Path, model: str) -> None:
    """C-MOVE to the requesting movescu, which listens on ``--port`` for the sub-association."""
    tools = require_dcmtk("movescu")
    index = QRIndex.from_corpus(corpus)
    out = tmp_path / "moved"
    out.mkdir()
    receive_port = free_port()
    ae = scp_ae()
    ae.move_destinations["MOVESCU"] = (LOOPBACK, receive_port)
    series = corpus.instances[0]
    keys = [
        "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={series.study_uid}",
        f"SeriesInstanceUID={series.series_uid}",
    ]
    if model == "-P":
        keys.append(f"PatientID={series.patient_id}")
    async with serving(ae, [(evt.EVT_C_MOVE, move_handler(index))]) as server:
        result = await run_tool(
            dcmtk(
                tools["movescu"],
                f"{model} -aet MOVESCU -aec {SCP_AET} +xa --port {receive_port}",
                "-od",
                out,
                port=server.port,
                keys=keys,
            )
        )
    assert result.returncode == 0, tool_output(result)
    wanted = corpus.by(series_uid=series.series_uid)
    assert len(list(out.iterdir())) == len(wanted), tool_output(result)
    uncompressed: dict[str, set[str]] = {}
    for instance in wanted:
        moved_matches(out / f"{instance.modality}.{instance.sop_uid}", instance, uncompressed)


async def test_movescu_unknown_destination(corpus: Corpus) -> None:
    """An unknown move destination gives 0xA801, and movescu exits with its failure code."""
    tools = require_dcmtk("movescu")
    index = QRIndex.from_corpus(corpus)
    study = corpus.instances[0].study_uid
    async with serving(scp_ae(), [(evt.EVT_C_MOVE, move_handler(index))]) as server:
        result = await run_tool(
            dcmtk(
                tools["movescu"],
                f"-v -S -aet MOVESCU -aec {SCP_AET} -aem NOWHERE",
                port=server.port,
                keys=["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study}"],
            )
        )
    out = tool_output(result)
    assert result.returncode == 69, out
    assert "Refused: MoveDestinationUnknown" in out, out
