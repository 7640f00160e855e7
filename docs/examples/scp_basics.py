"""Services as SCP: C-ECHO, C-STORE (streamed to disk), C-FIND and C-GET in one server.

``docs/services.md`` includes the sections of this file; ``tests/test_docs_examples.py`` runs
it against DCMTK's echoscu, storescu, findscu and getscu, on asyncio and trio.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
from pydicom import dcmread
from pydicom.dataset import Dataset

import dicomio
from dicomio import AE, evt
from dicomio.sop import (
    CTImageStorage,
    MRImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    Verification,
)


# --8<-- [start:ae]
def build_ae() -> AE:
    ae = AE("DICOMIO")
    ae.add_supported_context(Verification)  # C-ECHO is answered with Success by default
    for sop_class in (CTImageStorage, MRImageStorage):
        # scp_role=True: a C-GET SCU takes the Storage SCP role on its own association
        # (role selection, PS3.7 D.3.3.4), and we agree to it.
        ae.add_supported_context(sop_class, scu_role=True, scp_role=True)
    ae.add_supported_context(PatientRootQueryRetrieveInformationModelFind)
    ae.add_supported_context(PatientRootQueryRetrieveInformationModelGet)
    return ae


# --8<-- [end:ae]


# --8<-- [start:store]
def store_handler(folder: Path) -> Any:
    @dicomio.stream_to_disk(folder)  # written to disk as it arrives, never held in memory
    async def on_store(event: evt.Event) -> int:
        assert event.dataset_path is not None  # a complete Part 10 file
        uid = event.request.affected_sop_instance_uid
        event.dataset_path.replace(folder / f"{uid}.dcm")
        return 0x0000  # Success

    return on_store


# --8<-- [end:store]


# --8<-- [start:find]
def matches(folder: Path, query: Dataset) -> list[Dataset]:
    """The stored instances whose patient matches the query (PATIENT level only, for brevity)."""
    found: dict[str, Dataset] = {}
    for path in sorted(folder.glob("*.dcm")):
        ds = dcmread(path, stop_before_pixels=True)
        if query.get("PatientID") in ("", "*", None, ds.PatientID):
            answer = Dataset()
            answer.QueryRetrieveLevel = "PATIENT"
            answer.PatientID = ds.PatientID
            answer.PatientName = ds.PatientName
            found[ds.PatientID] = answer
    return list(found.values())


def find_handler(folder: Path) -> Any:
    async def on_find(event: evt.Event) -> AsyncIterator[tuple[int, Dataset | None]]:
        query = event.identifier
        if query.get("QueryRetrieveLevel") != "PATIENT":
            yield 0xC000, None  # Unable to process
            return
        # Reading files blocks: do it in a worker thread, not on the event loop.
        for answer in await anyio.to_thread.run_sync(matches, folder, query):
            yield 0xFF00, answer  # Pending, with a match
        # Returning ends with Success; a C-CANCEL cancels this task at its next await.

    return on_find


# --8<-- [end:find]


# --8<-- [start:get]
def get_handler(folder: Path) -> Any:
    async def on_get(event: evt.Event) -> AsyncIterator[Any]:
        patient_id = event.identifier.get("PatientID", "")

        def select() -> list[Path]:
            return [
                path
                for path in sorted(folder.glob("*.dcm"))
                if dcmread(path, stop_before_pixels=True).PatientID == patient_id
            ]

        paths = await anyio.to_thread.run_sync(select)
        yield len(paths)  # first the number of C-STORE sub-operations
        for path in paths:
            yield 0xFF00, path  # then each instance: a path is streamed from disk

    return on_get


# --8<-- [end:get]


# --8<-- [start:serve]
async def serve(folder: Path, port: int, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
    ae = build_ae()
    handlers = [
        (evt.EVT_C_STORE, store_handler(folder)),
        (evt.EVT_C_FIND, find_handler(folder)),
        (evt.EVT_C_GET, get_handler(folder)),
    ]
    async with ae.start_server(("127.0.0.1", port), evt_handlers=handlers) as server:
        task_status.started(server.port)  # the bound port (useful with port 0)
        await server.serve_forever()


# --8<-- [end:serve]

if __name__ == "__main__":
    storage = Path("scp-data")
    storage.mkdir(exist_ok=True)
    anyio.run(serve, storage, 11112)
