"""Every data set goes on the wire with even length (#12 item 6).

PS3.8 E.1 wants every PDV fragment even, and PS3.5 7.1 makes every encoded data set even,
except where a Deflated stream ends wherever zlib stops: PS3.5 A.5 pads it with one
trailing 00H. A file holding an odd-length deflated stream (pydicom's own ``image_dfl.dcm``,
4,303 bytes after its meta header) used to go out as it stood, and DCMTK aborts on an odd
fragment ("DIMSE: Odd Fragment Length"), taking the C-MOVE sub-operations queued after it
down too. The pad is added where the last data set fragment is cut (``dicomio.dimse``'s
fragmenter), so that every sender gets it: ``send_c_store`` of a Dataset, of a file read
whole, of a file streamed from disk, C-GET/C-MOVE sub-operations and the CLI.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from dicomio import AE, evt
from dicomio.dataset import encode_dataset, read_file_info
from dicomio.dimse import data_parts, fragment, fragment_parts, max_fragment_size
from dicomio.pdu import PDUReader, encode
from dicomio.pdu.pdus import PDataTF
from dicomio.sop import (
    CTImageStorage,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    SecondaryCaptureImageStorage,
    Verification,
)
from tests.conftest import DCMTK_ENV, LOOPBACK

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
#: A Deflated file whose deflated stream is 4,303 bytes: odd (PS3.5 A.5).
IMAGE_DFL = TEST_FILES / "image_dfl.dcm"
#: An uncompressed instance, to follow it in a C-MOVE.
CT_SMALL = TEST_FILES / "CT_small.dcm"
CLI = [sys.executable, "-m", "dicomio"]
COMMAND = bytes(range(100))  # an even command set; its content does not matter here


def test_image_dfl_is_odd() -> None:
    """The premise: the file's data set really is odd in length."""
    info = read_file_info(IMAGE_DFL)
    assert info is not None and info.transfer_syntax == DeflatedExplicitVRLittleEndian
    assert info.dataset_length == 4303


# -- the fragmenter: every PDV even, the data set padded with one 00H when odd ------------


def _pdvs(wire: bytes) -> list[Any]:
    reader = PDUReader(0)
    reader.feed(wire)
    pdvs = []
    while (pdu := reader.next_pdu()) is not None:
        assert isinstance(pdu, PDataTF)
        pdvs.extend(pdu.pdvs)
    return pdvs


def _check(pdvs: list[Any], data: bytes) -> None:
    assert all(len(pdv.data) % 2 == 0 for pdv in pdvs), [len(p.data) for p in pdvs]
    sent = b"".join(bytes(pdv.data) for pdv in pdvs if not pdv.is_command)
    assert sent == (data + b"\x00" if len(data) % 2 else data)
    data_pdvs = [pdv for pdv in pdvs if not pdv.is_command]
    assert data_pdvs[-1].is_last and not any(pdv.is_last for pdv in data_pdvs[:-1])


@settings(max_examples=300, deadline=None)
@given(length=st.integers(0, 200), max_pdu=st.integers(8, 70))
def test_every_fragment_is_even(length: int, max_pdu: int) -> None:
    """fragment_parts, fragment and data_parts agree, and all give even PDVs."""
    data = bytes(i % 251 + 1 for i in range(length))
    wire = b"".join(bytes(part) for part in fragment_parts(1, COMMAND, data, max_pdu))
    _check(_pdvs(wire), data)
    assert wire == b"".join(encode(pdu) for pdu in fragment(1, COMMAND, data, max_pdu))
    # A streaming sender: whole fragments first, then the (possibly odd) rest, flagged last.
    size = max_fragment_size(max_pdu)
    cut = len(data) - len(data) % size
    if cut == len(data) and cut:
        cut -= size
    streamed = b"".join(
        bytes(part)
        for piece, last in ((data[:cut], False), (data[cut:], True))
        for part in data_parts(1, piece, max_pdu, is_last=last)
    )
    _check(_pdvs(streamed), data)


def test_padding_copies_no_data() -> None:
    """The pad is a buffer of its own: the data set's bytes are still views, not copies."""
    data = bytearray(10_001)
    parts = fragment_parts(1, COMMAND, data, 0)
    assert parts[-1] == b"\x00"
    assert isinstance(parts[-2], memoryview) and parts[-2].obj is data


@settings(max_examples=30, deadline=None)
@given(text=st.text(st.characters(codec="ascii", exclude_categories=["Cc"]), max_size=300))
def test_deflated_encoding_is_even(text: str) -> None:
    ds = Dataset()
    ds.PatientName = "A"
    ds.StudyDescription = text[:64]
    ds.ImageComments = text
    assert len(encode_dataset(ds, DeflatedExplicitVRLittleEndian)) % 2 == 0


# -- DCMTK storescp: the odd Deflated file, sent every way ---------------------------------


def _storer() -> AE:
    ae = AE("DICOMIO")
    ae.add_requested_context(SecondaryCaptureImageStorage, [DeflatedExplicitVRLittleEndian])
    ae.add_requested_context(Verification)
    return ae


def _received_intact(out: Path) -> None:
    """DCMTK wrote the instance, and it decodes to what was sent."""
    files = list(out.glob("*.dcm"))
    assert len(files) == 1, files
    got, sent = dcmread(files[0]), dcmread(IMAGE_DFL)
    assert got.SOPInstanceUID == sent.SOPInstanceUID
    assert got.PixelData == sent.PixelData
    assert got.PatientName == sent.PatientName


@pytest.mark.interop
@pytest.mark.anyio
@pytest.mark.parametrize("form", ["path", "path_streamed", "dataset"])
async def test_store_image_dfl_to_dcmtk(
    dcmtk_storescp: tuple[int, Path], form: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, out = dcmtk_storescp
    payload: Any = IMAGE_DFL
    if form == "path_streamed":
        # Not read whole: its data set is streamed from disk chunk by chunk.
        import dicomio._scu

        monkeypatch.setattr(dicomio._scu, "WHOLE_FILE_LIMIT", 0)
    elif form == "dataset":
        payload = dcmread(IMAGE_DFL)
    with anyio.fail_after(30):
        async with _storer().associate(LOOPBACK, port, ae_title="STORESCP") as assoc:
            status = await assoc.send_c_store(payload)
            assert status.Status == 0
            assert (await assoc.send_c_echo()).Status == 0  # and the association lives on
    _received_intact(out)


@pytest.mark.interop
def test_cli_storescu_image_dfl_to_dcmtk(dcmtk_storescp: tuple[int, Path]) -> None:
    port, out = dcmtk_storescp
    result = subprocess.run(
        [*CLI, "storescu", LOOPBACK, str(port), "-aec", "STORESCP", str(IMAGE_DFL)],
        capture_output=True,
        timeout=60,
        env=DCMTK_ENV,
        check=False,
    )
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode == 0, output
    _received_intact(out)


@pytest.mark.interop
@pytest.mark.anyio
async def test_c_move_sub_operations_to_dcmtk(dcmtk_storescp: tuple[int, Path]) -> None:
    """A dicomio C-MOVE SCP sends the odd file, then another, to DCMTK: both arrive."""
    port, out = dcmtk_storescp

    async def move(event: Any) -> AsyncIterator[Any]:
        yield 2
        yield 0xFF00, IMAGE_DFL
        yield 0xFF00, CT_SMALL

    scp = AE("MOVESCP")
    scp.add_supported_context(PatientRootQueryRetrieveInformationModelMove)
    scp.move_destinations["STORESCP"] = (LOOPBACK, port)
    client = AE("MOVESCU")
    client.add_requested_context(PatientRootQueryRetrieveInformationModelMove)
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    query.PatientID = "X"
    with anyio.fail_after(60):
        async with (
            scp.start_server((LOOPBACK, 0), evt_handlers=[(evt.EVT_C_MOVE, move)]) as server,
            client.associate(LOOPBACK, server.port, ae_title="MOVESCP") as assoc,
        ):
            responses = [
                status
                async for status, _ in assoc.send_c_move(
                    query, "STORESCP", PatientRootQueryRetrieveInformationModelMove
                )
            ]
    final = responses[-1]
    assert final.Status == 0, final
    assert final.NumberOfCompletedSuboperations == 2
    assert final.get("NumberOfFailedSuboperations", 0) == 0
    uids = {str(read_file_info(p).sop_instance_uid) for p in out.glob("*.dcm")}  # type: ignore[union-attr]
    assert uids == {
        str(dcmread(IMAGE_DFL).SOPInstanceUID),
        str(dcmread(CT_SMALL).SOPInstanceUID),
    }


@pytest.mark.interop
@pytest.mark.anyio
async def test_c_get_sub_operations_to_dcmtk_getscu(tmp_path: Path) -> None:
    """A dicomio C-GET SCP sends the odd file, then another, to DCMTK getscu (+xd: it
    prefers Deflated), over getscu's own association: both arrive, none fails."""
    from tests.conftest import require_dcmtk, run_tool, tool_output

    tools = require_dcmtk("getscu")

    async def get(event: Any) -> AsyncIterator[Any]:
        yield 2
        yield 0xFF00, IMAGE_DFL
        yield 0xFF00, CT_SMALL

    scp = AE("GETSCP")
    scp.add_supported_context(PatientRootQueryRetrieveInformationModelGet)
    for sop_class in (SecondaryCaptureImageStorage, CTImageStorage):
        scp.add_supported_context(
            sop_class,
            [DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian],
            scu_role=True,
            scp_role=True,
        )
    out = tmp_path / "getscu-out"
    out.mkdir()
    with anyio.fail_after(60):
        async with scp.start_server((LOOPBACK, 0), evt_handlers=[(evt.EVT_C_GET, get)]) as server:
            result = await run_tool(
                [
                    tools["getscu"],
                    "-v",
                    "-P",
                    "+xd",
                    "-aet",
                    "GETSCU",
                    "-aec",
                    "GETSCP",
                    "-od",
                    str(out),
                    "-k",
                    "QueryRetrieveLevel=PATIENT",
                    "-k",
                    "PatientID=X",
                    LOOPBACK,
                    str(server.port),
                ]
            )
    output = tool_output(result)
    assert result.returncode == 0, output
    assert "Odd Fragment" not in output, output
    assert "Number of Failed Suboperations    : 0" in output, output
    uids = {str(dcmread(p).SOPInstanceUID) for p in out.iterdir()}
    assert uids == {
        str(dcmread(IMAGE_DFL).SOPInstanceUID),
        str(dcmread(CT_SMALL).SOPInstanceUID),
    }, output


@pytest.mark.anyio
async def test_broken_odd_file_is_padded_and_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A non-deflated file whose data set is odd (a 3-byte LO, which PS3.5 7.1 forbids) is
    sent with the same pad and a warning; the receiver parses it, the pad after the last
    element is too short to be read as one."""
    import struct

    broken = tmp_path / "broken.dcm"
    broken.write_bytes(
        CT_SMALL.read_bytes() + struct.pack("<HH2sH", 0x7FE1, 0x0010, b"LO", 3) + b"ABC"
    )
    info = read_file_info(broken)
    assert info is not None and info.dataset_length % 2 == 1
    received: list[Any] = []

    async def store(event: Any) -> int:
        received.append((len(event.raw), event.dataset))
        return 0

    scp = AE("STORE")
    scp.add_supported_context(CTImageStorage, [str(info.transfer_syntax)])
    client = AE("CLIENT")
    client.add_requested_context(CTImageStorage, [str(info.transfer_syntax)])
    with anyio.fail_after(30):
        async with (
            scp.start_server((LOOPBACK, 0), evt_handlers=[(evt.EVT_C_STORE, store)]) as server,
            client.associate(LOOPBACK, server.port, ae_title="STORE") as assoc,
        ):
            assert (await assoc.send_c_store(broken)).Status == 0
    [(length, ds)] = received
    assert length == info.dataset_length + 1
    assert ds[0x7FE10010].value == "ABC"
    assert ds.PixelData == dcmread(CT_SMALL).PixelData
    assert "odd length" in caplog.text
