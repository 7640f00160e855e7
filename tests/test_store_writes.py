"""How a C-STORE of an in-memory data set is written: in batches of whole PDUs.

The command and the first ``SEND_BATCH`` bytes of fragments leave in one write (one
``sendmsg`` on the lean asyncio stream); a larger data set follows a batch per write, so
that what the kernel does not take at once, which the transport copies, stays bounded.
Loopback only, every wait bounded.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicomio import AE, evt
from dicomio.association import SEND_BATCH, Association
from tests.conftest import LOOPBACK

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def _instance(pixel_bytes: int) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.BitsAllocated = 8
    ds.PixelData = bytes(pixel_bytes)
    return ds


async def _writes(monkeypatch: pytest.MonkeyPatch, pixel_bytes: int) -> list[int]:
    """The size of every write the requestor makes while storing one instance."""
    sizes: list[int] = []
    received: list[int] = []
    write = Association._write
    requestor: list[Association] = []

    async def counting(self: Association, parts: list[Any]) -> None:
        if self in requestor:  # not the acceptor's answer (the same class, in this process)
            sizes.append(sum(len(part) for part in parts))
        await write(self, parts)

    async def on_store(event: Any) -> int:
        received.append(len(event.raw))
        return 0

    scp = AE("STORESCP")
    scp.add_supported_context(CT_IMAGE_STORAGE, ExplicitVRLittleEndian)
    scu = AE("STORESCU")
    scu.add_requested_context(CT_IMAGE_STORAGE, ExplicitVRLittleEndian)
    async with (
        scp.start_server((LOOPBACK, 0), evt_handlers=[(evt.EVT_C_STORE, on_store)]) as server,
        scu.associate(LOOPBACK, server.port, ae_title="STORESCP") as assoc,
    ):
        requestor.append(assoc)
        monkeypatch.setattr(Association, "_write", counting)
        status = await assoc.send_c_store(_instance(pixel_bytes))
        monkeypatch.setattr(Association, "_write", write)
    assert status.Status == 0
    assert len(received) == 1 and received[0] > pixel_bytes
    return sizes


async def test_a_half_megabyte_instance_leaves_in_one_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Command, two full fragments of the default maximum PDU and the rest: one write.
    sizes = await _writes(monkeypatch, 512 * 1024)
    assert len(sizes) == 1
    assert sizes[0] > 512 * 1024


async def test_a_larger_instance_leaves_a_batch_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sizes = await _writes(monkeypatch, 5 * SEND_BATCH // 2)
    assert len(sizes) == 3
    # Each write: at most a batch of fragments, their PDU headers and (first) the command.
    assert all(size <= SEND_BATCH + 4096 for size in sizes)
    assert sum(sizes) > 5 * SEND_BATCH // 2
