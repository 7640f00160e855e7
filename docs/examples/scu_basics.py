"""Services as SCU: C-ECHO, C-STORE, C-FIND (and leaving it early), C-GET.

``docs/services.md`` includes the sections of this file; ``tests/test_docs_examples.py`` runs
them against the SCP of ``scp_basics.py``, on asyncio and trio.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydicom.dataset import Dataset

from dicomio import AE, evt
from dicomio.presentation import storage_scp_roles
from dicomio.sop import (
    CTImageStorage,
    MRImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    Verification,
)


# --8<-- [start:echo_store]
async def echo_and_store(host: str, port: int, paths: Sequence[Path]) -> list[int]:
    ae = AE("MYSCU")
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(MRImageStorage)
    statuses = []
    async with ae.associate(host, port, ae_title="DICOMIO") as assoc:
        status = await assoc.send_c_echo()
        statuses.append(status.Status)
        for path in paths:
            # A path is streamed from disk in its own transfer syntax (converted if the
            # peer did not accept it, docs/transcoding.md); a Dataset is encoded first.
            status = await assoc.send_c_store(path)
            statuses.append(status.Status)
    return statuses  # released on leaving the block


# --8<-- [end:echo_store]


# --8<-- [start:find]
async def find_patients(host: str, port: int, *, first_only: bool = False) -> list[str]:
    ae = AE("MYSCU")
    ae.add_requested_context(PatientRootQueryRetrieveInformationModelFind)
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    query.PatientID = "*"
    query.PatientName = ""
    found = []
    async with ae.associate(host, port, ae_title="DICOMIO") as assoc:
        results = assoc.send_c_find(query, PatientRootQueryRetrieveInformationModelFind)
        async for _status, identifier in results:
            if identifier is not None:  # Pending: a match
                found.append(str(identifier.PatientID))
                if first_only:
                    break  # leaving the loop sends C-CANCEL (PS3.7 9.3.2.3)
            # The last status is the final one (Success, Cancel or a failure), no identifier.
        # After a C-CANCEL the association goes on: more requests may follow here.
    return found


# --8<-- [end:find]


# --8<-- [start:get]
async def get_patient(host: str, port: int, patient_id: str, folder: Path) -> int:
    received = []

    async def on_store(event: evt.Event) -> int:  # the C-STORE sub-operations
        path = folder / f"{event.request.affected_sop_instance_uid}.dcm"
        path.write_bytes(event.encoded_dataset())  # a Part 10 file, never decoded
        received.append(path)
        return 0x0000

    ae = AE("MYSCU")
    ae.add_requested_context(PatientRootQueryRetrieveInformationModelGet)
    for sop_class in (CTImageStorage, MRImageStorage):
        ae.add_requested_context(sop_class)
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    query.PatientID = patient_id
    async with ae.associate(
        host,
        port,
        ae_title="DICOMIO",
        # Propose the Storage SCP role for each storage context (PS3.4 C.4.3).
        ext_neg=storage_scp_roles(ae.requested_contexts),
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    ) as assoc:
        responses = assoc.send_c_get(query, PatientRootQueryRetrieveInformationModelGet)
        statuses = [status async for status, _ in responses]  # the last one is final
    assert statuses[-1].Status == 0x0000, hex(statuses[-1].Status)
    return len(received)


# --8<-- [end:get]
