"""The pynetdicom code that ``docs/migration.md`` ports: its "before" column.

These are pynetdicom's own documentation examples (the storage SCP, the Patient Root C-FIND
SCU, the C-GET SCP) and idioms, each wrapped in a function so that importing this file runs
nothing. ``tests/test_docs_examples.py`` compiles and imports it; the ports in
``migration.py`` are what it runs.
"""

# pynetdicom's documentation code, kept as it is written there.
# ruff: noqa: B007
from __future__ import annotations

import os
from typing import Any


def storage_scp() -> None:
    # --8<-- [start:storage_scp]
    from pynetdicom import AE, AllStoragePresentationContexts, evt

    def handle_store(event):
        """Write the received data set to a file named after its SOP Instance UID."""
        with open(event.request.AffectedSOPInstanceUID, "wb") as f:
            f.write(event.encoded_dataset())  # preamble, prefix, file meta, data set
        return 0x0000

    ae = AE()
    ae.supported_contexts = AllStoragePresentationContexts
    ae.start_server(
        ("127.0.0.1", 11112), block=True, evt_handlers=[(evt.EVT_C_STORE, handle_store)]
    )
    # --8<-- [end:storage_scp]


def find_scu() -> None:
    # --8<-- [start:find_scu]
    from pydicom.dataset import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import PatientRootQueryRetrieveInformationModelFind

    ae = AE()
    ae.add_requested_context(PatientRootQueryRetrieveInformationModelFind)
    ds = Dataset()
    ds.PatientName = "CITIZEN^Jan"
    ds.QueryRetrieveLevel = "PATIENT"
    assoc = ae.associate("127.0.0.1", 11112)
    if assoc.is_established:
        responses = assoc.send_c_find(ds, PatientRootQueryRetrieveInformationModelFind)
        for status, identifier in responses:
            if status:
                print(f"C-FIND query status: 0x{status.Status:04X}")
            else:
                print("Connection timed out, was aborted or received invalid response")
        assoc.release()
    else:
        print("Association rejected, aborted or never connected")
    # --8<-- [end:find_scu]


def get_scp() -> None:
    # --8<-- [start:get_scp]
    from pydicom import dcmread
    from pynetdicom import AE, StoragePresentationContexts, evt
    from pynetdicom.sop_class import PatientRootQueryRetrieveInformationModelGet

    def handle_get(event):
        ds = event.identifier
        if "QueryRetrieveLevel" not in ds:
            yield 0xC000, None  # Failure
            return
        fdir = "/path/to/directory"
        instances = [dcmread(os.path.join(fdir, f)) for f in os.listdir(fdir)]
        matching = []
        if ds.QueryRetrieveLevel == "PATIENT" and "PatientID" in ds:
            matching = [inst for inst in instances if inst.PatientID == ds.PatientID]
        yield len(matching)  # the number of C-STORE sub-operations
        for instance in matching:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            yield 0xFF00, instance

    ae = AE()
    ae.add_supported_context(PatientRootQueryRetrieveInformationModelGet)
    for cx in StoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, scp_role=True, scu_role=False)
    ae.start_server(("127.0.0.1", 11112), evt_handlers=[(evt.EVT_C_GET, handle_get)])
    # --8<-- [end:get_scp]


def roles(ae: Any) -> None:
    # --8<-- [start:roles]
    from pynetdicom import build_role
    from pynetdicom.sop_class import CTImageStorage

    cx = ae.requested_contexts[0]
    cx.transfer_syntax = ["1.2.840.10008.1.2.1"]  # contexts are mutable in pynetdicom
    role = build_role(CTImageStorage, scp_role=True)
    assoc = ae.associate("127.0.0.1", 11112, ext_neg=[role])
    assoc.release()
    # --8<-- [end:roles]


def blocking() -> None:
    # --8<-- [start:blocking]
    import time

    def handle_echo(event):
        time.sleep(2)  # pynetdicom runs each association in its own thread
        return 0x0000

    # --8<-- [end:blocking]


def logging_setup() -> None:
    # --8<-- [start:logging]
    from pynetdicom import debug_logger

    debug_logger()
    # --8<-- [end:logging]
