"""send_c_store(Dataset) sends what was read: the same bytes as sending the file (issue #18).

A Dataset pydicom read from a file holds its elements raw; dicomio's direct encoder writes
them as pydicom's writer would, as they stand, so a C-STORE SCP receives from
``send_c_store(dcmread(path))`` the bytes ``send_c_store(path)`` sends, unless the data set
changed: then the changed elements are encoded anew and the rest stays as read.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import UID, ExplicitVRBigEndian

from dicomio import AE, evt
from dicomio.dataset import read_file_info
from tests.conftest import LOOPBACK

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def _little_endian_files() -> list[tuple[Path, UID, UID]]:
    """pydicom's test files dicomio sends as they are, and pydicom reads back whole."""
    found = []
    for path in sorted(TEST_FILES.glob("*.dcm")):
        info = read_file_info(path)
        if info is None or info.transfer_syntax == ExplicitVRBigEndian:
            continue
        if info.transfer_syntax == "1.2.840.10008.1.2.1.99":  # deflated: re-encoded
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path)
                # A retired group length (PS3.5 7.2) is left out by pydicom's writer.
                if any(tag.element == 0 and tag.group > 6 for tag in ds.keys()):  # noqa: SIM118
                    continue
                if "SOPClassUID" not in ds or "SOPInstanceUID" not in ds:
                    continue  # send_c_store(Dataset) takes them from the data set
        except Exception:
            continue
        found.append((path, info.sop_class_uid, info.transfer_syntax))
    return found


FILES = _little_endian_files()


async def test_a_dataset_read_is_sent_as_its_file_is() -> None:
    received: list[bytes] = []

    async def on_store(event: Any) -> int:
        received.append(bytes(event.raw))
        return 0

    scp = AE("STORESCP")
    scu = AE("STORESCU")
    for _, sop_class, syntax in FILES:
        scp.add_supported_context(sop_class, syntax)
        scu.add_requested_context(sop_class, syntax)
    assert len(FILES) > 20
    sent_differently = []
    async with (
        scp.start_server((LOOPBACK, 0), evt_handlers=[(evt.EVT_C_STORE, on_store)]) as server,
        scu.associate(LOOPBACK, server.port, ae_title="STORESCP") as assoc,
    ):
        for path, _, _ in FILES:
            assert (await assoc.send_c_store(path)).Status == 0
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path)
            status = await assoc.send_c_store(ds)
            if status.Status != 0 or received[-1] != received[-2]:
                sent_differently.append(path.name)
    # Where pydicom's writer does not write what it read: SC_rgb_jpeg.dcm's body is Implicit
    # VR under an Explicit syntax (it cannot be written as read, so its elements are
    # converted first and written anew); the truncated files' last values are shorter than
    # their lengths; rtdose_rle*.dcm hold empty UN elements, which pydicom takes for
    # deferred reads and converts to their dictionary VRs.
    assert sent_differently == [
        "MR_truncated.dcm",
        "SC_rgb_jpeg.dcm",
        "rtdose_rle.dcm",
        "rtdose_rle_1frame.dcm",
        "rtplan_truncated.dcm",
    ]


async def test_a_changed_dataset_is_sent_with_the_change() -> None:
    path = TEST_FILES / "CT_small.dcm"
    info = read_file_info(path)
    assert info is not None
    received: list[bytes] = []

    async def on_store(event: Any) -> int:
        received.append(bytes(event.raw))
        return 0

    scp = AE("STORESCP")
    scp.add_supported_context(info.sop_class_uid, info.transfer_syntax)
    scu = AE("STORESCU")
    scu.add_requested_context(info.sop_class_uid, info.transfer_syntax)
    ds = pydicom.dcmread(path)
    ds.PatientName = "Changed^Name"
    ds.add_new(0x00091010, "LO", "private")
    async with (
        scp.start_server((LOOPBACK, 0), evt_handlers=[(evt.EVT_C_STORE, on_store)]) as server,
        scu.associate(LOOPBACK, server.port, ae_title="STORESCP") as assoc,
    ):
        assert (await assoc.send_c_store(ds)).Status == 0
    back = pydicom.dcmread(pydicom.filebase.DicomBytesIO(received[0]), force=True)
    assert back.PatientName == "Changed^Name"
    assert back[0x00091010].value == "private"
    assert back.PixelData == pydicom.dcmread(path).PixelData
