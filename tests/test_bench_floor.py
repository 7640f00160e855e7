"""benchmarks.floor_scp, the measuring stick for the S3 server: it must really answer what a
client sends it (associate, C-STOREs of a multi-PDU data set, release), or its CPU figure
would mean nothing."""

from __future__ import annotations

import asyncio

from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, generate_uid

from benchmarks.floor_scp import FloorProtocol
from dicomio import AE


def _instance(size: int) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.PatientID = "FLOOR"
    ds.EncapsulatedDocument = bytes(size)  # OB: any size, no image attributes needed
    return ds


async def _store_three() -> list[tuple[int, str, str]]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FloorProtocol, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    answers = []
    async with server:
        ae = AE("FLOORTEST")
        ae.add_requested_context(CTImageStorage)
        async with ae.associate("127.0.0.1", port, ae_title="FLOOR") as assoc:
            # 600 KB: three P-DATA-TF PDUs of the floor's 256 KiB maximum, over several reads.
            for size in (600_000, 10, 70_000):
                ds = _instance(size)
                status = await assoc.send_c_store(ds)
                answers.append((status.Status, status.AffectedSOPInstanceUID, ds.SOPInstanceUID))
        assert assoc.is_released
    return answers


def test_the_floor_answers_each_store_with_its_own_instance_uid() -> None:
    answers = asyncio.run(asyncio.wait_for(_store_three(), 30))
    assert [status for status, _, _ in answers] == [0, 0, 0]
    assert all(answered == sent for _, answered, sent in answers)
