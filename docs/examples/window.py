"""The asynchronous operations window and cancellation: ``docs/window.md``.
Run by ``tests/test_docs_examples.py`` against a dicomio server, on asyncio and trio."""

from __future__ import annotations

from typing import Any

import anyio
from pydicom.dataset import Dataset

from dicomio import AE, evt
from dicomio.sop import PatientRootQueryRetrieveInformationModelFind as FIND
from dicomio.sop import Verification


# --8<-- [start:server]
async def slow_echo(event: evt.Event) -> int:
    await anyio.sleep(0.2)  # a slow lookup, say
    return 0x0000


async def endless_find(event: evt.Event) -> Any:
    n = 0
    while True:  # a C-CANCEL cancels this task at its next await
        n += 1
        answer = Dataset()
        answer.PatientID = f"P{n:06d}"
        yield 0xFF00, answer
        await anyio.sleep(0)


def server_ae() -> tuple[AE, list[Any]]:
    ae = AE("WINDOWED")
    ae.add_supported_context(Verification)
    ae.add_supported_context(FIND)
    ae.async_ops_window = (8, 8)  # the most this server grants
    return ae, [(evt.EVT_C_ECHO, slow_echo), (evt.EVT_C_FIND, endless_find)]


# --8<-- [end:server]


# --8<-- [start:window]
async def eight_at_once(host: str, port: int) -> tuple[tuple[int, int], float]:
    ae = AE("MYSCU")
    ae.add_requested_context(Verification)
    ae.async_ops_window = (8, 8)  # propose: up to 8 outstanding operations each way
    async with ae.associate(host, port, ae_title="WINDOWED") as assoc:
        start = anyio.current_time()
        async with anyio.create_task_group() as tasks:
            for _ in range(8):
                tasks.start_soon(assoc.send_c_echo)  # all eight are outstanding together
        elapsed = anyio.current_time() - start
        # As negotiated, from our side: (invoked, performed).
        return assoc.async_ops_window, elapsed


# --8<-- [end:window]


# --8<-- [start:cancel]
async def first_matches(host: str, port: int, count: int) -> list[str]:
    ae = AE("MYSCU")
    ae.add_requested_context(FIND)
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    query.PatientID = "*"
    found: list[str] = []
    async with ae.associate(host, port, ae_title="WINDOWED") as assoc:
        # `async with` waits (bounded by Timeouts.cancel) for the final response after the
        # C-CANCEL that leaving the loop sends.
        async with assoc.send_c_find(query, FIND) as results:
            async for _status, identifier in results:
                if identifier is not None:
                    found.append(identifier.PatientID)
                if len(found) == count:
                    break
        # A cancel scope works the same way: a timeout also sends C-CANCEL.
        with anyio.move_on_after(0.5):
            async for _status, _identifier in assoc.send_c_find(query, FIND):
                pass
    return found


# --8<-- [end:cancel]
