"""pynetdicom's documentation examples ported to dicomio: the "after" column of
``docs/migration.md``.

``tests/test_docs_examples.py`` runs each port against DCMTK: storescu sends to the storage
SCP, the C-FIND SCU queries dcmqrscp, getscu retrieves from the C-GET SCP.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import attrs
from pydicom import dcmread
from pydicom.dataset import Dataset

from dicomio import AE, evt
from dicomio.sop import StoragePresentationContexts


# --8<-- [start:storage_scp]
def storage_scp(folder: Path) -> tuple[AE, list[Any]]:
    from dicomio.sop import AllStoragePresentationContexts

    async def handle_store(event: evt.Event) -> int:
        """Write the received data set to a file named after its SOP Instance UID."""
        uid = event.request.affected_sop_instance_uid  # or AffectedSOPInstanceUID, as before
        data = event.encoded_dataset()  # preamble, prefix, file meta, data set
        await anyio.Path(folder / f"{uid}.dcm").write_bytes(data)  # off the event loop
        return 0x0000

    ae = AE()
    ae.supported_contexts = AllStoragePresentationContexts
    return ae, [(evt.EVT_C_STORE, handle_store)]


async def run_storage_scp(
    folder: Path, port: int, *, task_status: Any = anyio.TASK_STATUS_IGNORED
) -> None:
    ae, handlers = storage_scp(folder)
    async with ae.start_server(("127.0.0.1", port), evt_handlers=handlers) as server:
        task_status.started(server.port)
        await server.serve_forever()  # pynetdicom's block=True


# --8<-- [end:storage_scp]


# --8<-- [start:find_scu]
async def find_scu(host: str, port: int, ae_title: str, patient_name: str) -> list[Dataset]:
    from dicomio import AssociationRejected, DicomioError
    from dicomio.sop import PatientRootQueryRetrieveInformationModelFind

    ae = AE()
    ae.add_requested_context(PatientRootQueryRetrieveInformationModelFind)
    ds = Dataset()
    ds.PatientName = patient_name
    ds.PatientID = ""  # a return key, so that the matches say who they are
    ds.QueryRetrieveLevel = "PATIENT"
    matches = []
    try:
        async with ae.associate(host, port, ae_title=ae_title) as assoc:
            responses = assoc.send_c_find(ds, PatientRootQueryRetrieveInformationModelFind)
            async for status, identifier in responses:
                # Every status is a real response: a timeout or an abort raises instead.
                print(f"C-FIND query status: 0x{status.Status:04X}")
                if identifier is not None:
                    matches.append(identifier)
        # released here; aborted instead if the block raised
    except AssociationRejected as exc:
        print(f"Association rejected: {exc}")
        raise
    except DicomioError as exc:  # aborted, timed out, connection lost...
        print(f"Association failed: {exc!r}")
        raise
    return matches


# --8<-- [end:find_scu]


# --8<-- [start:get_scp]
def get_scp(fdir: Path) -> tuple[AE, list[Any]]:
    from dicomio.sop import PatientRootQueryRetrieveInformationModelGet

    def matching_paths(ds: Dataset) -> list[Path]:  # blocking file reads: run in a thread
        if ds.QueryRetrieveLevel != "PATIENT" or "PatientID" not in ds:
            return []
        paths = sorted(fdir.iterdir())
        return [p for p in paths if dcmread(p, stop_before_pixels=True).PatientID == ds.PatientID]

    async def handle_get(event: evt.Event) -> AsyncIterator[Any]:
        ds = event.identifier
        if "QueryRetrieveLevel" not in ds:
            yield 0xC000, None  # Failure
            return
        matching = await anyio.to_thread.run_sync(matching_paths, ds)
        yield len(matching)  # the number of C-STORE sub-operations
        for path in matching:
            # No is_cancelled check needed: a C-CANCEL cancels this task at its next await
            # and the final response carries Cancel. A path is streamed from disk.
            yield 0xFF00, path

    ae = AE()
    ae.add_supported_context(PatientRootQueryRetrieveInformationModelGet)
    for cx in StoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, scp_role=True, scu_role=False)
    return ae, [(evt.EVT_C_GET, handle_get)]


async def run_get_scp(
    fdir: Path, port: int, *, task_status: Any = anyio.TASK_STATUS_IGNORED
) -> None:
    ae, handlers = get_scp(fdir)
    async with ae.start_server(("127.0.0.1", port), evt_handlers=handlers) as server:
        task_status.started(server.port)
        await server.serve_forever()


# --8<-- [end:get_scp]


def roles(ae: AE) -> tuple[list[Any], list[Any]]:
    # --8<-- [start:roles]
    from dicomio import build_role
    from dicomio.presentation import FrozenContextError
    from dicomio.sop import CTImageStorage

    cx = ae.requested_contexts[0]
    try:
        cx.transfer_syntaxes = ("1.2.840.10008.1.2.1",)  # type: ignore[misc]
    except FrozenContextError as exc:
        print(exc)  # names attrs.evolve, build_context, add_supported_context, build_role
    # A changed copy, put back in the AE's list:
    ae.requested_contexts[0] = attrs.evolve(cx, transfer_syntaxes=("1.2.840.10008.1.2.1",))
    # Roles are proposed as role selection items, as in pynetdicom:
    ext_neg = [build_role(CTImageStorage, scp_role=True)]
    # then: ae.associate(host, port, ext_neg=ext_neg, evt_handlers=[(evt.EVT_C_STORE, ...)])
    # --8<-- [end:roles]
    return ae.requested_contexts, ext_neg


# --8<-- [start:blocking]
def slow_lookup(patient_id: str) -> str:
    """A blocking call: a database driver, a file system walk, a sleep."""
    import time

    time.sleep(0.2)
    return patient_id


async def handle_echo(event: evt.Event) -> int:
    # Handlers run on the event loop shared by every association: a blocking call here
    # would stall them all. Run it in a worker thread instead.
    await anyio.to_thread.run_sync(slow_lookup, "PID000")
    return 0x0000


# --8<-- [end:blocking]


def logging_setup() -> logging.Logger:
    # --8<-- [start:logging]
    import dicomio

    logger = dicomio.debug_logger()  # the "dicomio" logger, DEBUG, to stderr
    # --8<-- [end:logging]
    return logger


# --8<-- [start:typed_handlers]
async def on_store(event: evt.Event, folder: Path) -> int:
    uid = event.request.AffectedSOPInstanceUID  # pynetdicom's name still reads
    await anyio.Path(folder / f"{uid}.dcm").write_bytes(event.encoded_dataset())
    return 0x0000


async def on_find(event: evt.Event) -> AsyncIterator[tuple[int, Dataset]]:
    match = Dataset()
    match.PatientID = "PID000"
    yield 0xFF00, match


def typed_handlers(folder: Path) -> list[evt.HandlerEntry]:
    return [
        evt.handler(evt.EVT_C_STORE, on_store, folder),  # was (EVT_C_STORE, on_store, [folder])
        (evt.EVT_C_FIND, on_find),  # checked as it is
    ]


# --8<-- [end:typed_handlers]
