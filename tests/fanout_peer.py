"""A scripted dicomio C-FIND SCP in a process of its own, for the fan-out tests.

``python -m tests.fanout_peer BEHAVIOUR PORT LOG [STUDY ...]`` listens on 127.0.0.1:PORT
as ``FANSCP`` and writes one line to LOG per event the test counts (``connection``,
``requested``, ``established``, ``find``). Behaviours:

- ``healthy``: answers with one match per STUDY;
- ``slow``: answers after 20 seconds (past any deadline of the tests);
- ``abort``: sends the first match, then aborts the association;
- ``busy``: answers every other C-FIND (the first, the third...) with A700H (Refused: Out
  of Resources), the others as healthy;
- ``transient``: rejects every other association request (the first, the third...)
  rejected-transient (2/3/1), and serves the others as healthy;
- ``permanent``: rejects every association not called ``FANSCP`` (1/1/7).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.abc
from pydicom.dataset import Dataset

from dicomio import AE, evt
from dicomio.sop import PatientRootQueryRetrieveInformationModelFind, Verification
from tests.fake_peer import associate_rj

LOOPBACK = "127.0.0.1"


async def serve(behaviour: str, port: int, log_path: str, studies: list[str]) -> None:
    log = open(log_path, "a", buffering=1)  # noqa: SIM115 - open for the process's life
    finds = 0

    async def on_find(event: evt.Event) -> AsyncIterator[tuple[int, Dataset | None]]:
        nonlocal finds
        finds += 1
        log.write("find\n")
        if behaviour == "busy" and finds % 2 == 1:
            yield 0xA700, None
            return
        if behaviour == "slow":
            await anyio.sleep(20)
        for n, study in enumerate(studies):
            if behaviour == "abort" and n == 1:
                await event.assoc.abort()
                return
            ds = Dataset()
            ds.QueryRetrieveLevel = "STUDY"
            ds.PatientID = "P1"
            ds.StudyInstanceUID = study
            yield 0xFF00, ds

    async def on_established(event: evt.Event) -> None:
        log.write("established\n")

    async def on_open(event: evt.Event) -> None:
        log.write("connection\n")

    async def on_requested(event: evt.Event) -> None:
        # An A-ASSOCIATE-RQ: what the fan-out tried, unlike a readiness probe's connection
        # (which may be logged after the test has taken its counts).
        log.write("requested\n")

    ae = AE("FANSCP")
    ae.add_supported_context(Verification)
    ae.add_supported_context(PatientRootQueryRetrieveInformationModelFind)
    ae.require_called_aet = behaviour == "permanent"
    handlers: list[Any] = [
        (evt.EVT_C_FIND, on_find),
        (evt.EVT_ESTABLISHED, on_established),
        (evt.EVT_CONN_OPEN, on_open),
        (evt.EVT_REQUESTED, on_requested),
    ]
    if behaviour != "transient":
        async with ae.start_server((LOOPBACK, port), evt_handlers=handlers):
            await anyio.sleep_forever()
    # A gate on PORT: the first connection is rejected, the later ones go to the server.
    async with ae.start_server((LOOPBACK, 0), evt_handlers=handlers) as server:
        connections = 0

        async def pipe(a: anyio.abc.ByteStream, b: anyio.abc.ByteStream) -> None:
            try:
                async for chunk in a:
                    await b.send(chunk)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                pass
            finally:
                await b.aclose()

        async def handle(client: anyio.abc.SocketStream) -> None:
            nonlocal connections
            async with client:
                try:
                    first = await client.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    return  # a probe that only connected: not an association request
                connections += 1
                if connections % 2 == 1:
                    log.write("connection\n")
                    await client.send(associate_rj(2, 3, 1))
                    return
                async with (
                    await anyio.connect_tcp(LOOPBACK, server.port) as upstream,
                    anyio.create_task_group() as tg,
                ):
                    await upstream.send(first)
                    tg.start_soon(pipe, client, upstream)
                    await pipe(upstream, client)

        listener = await anyio.create_tcp_listener(local_host=LOOPBACK, local_port=port)
        await listener.serve(handle)


if __name__ == "__main__":
    behaviour, port, log_path, *studies = sys.argv[1:]
    anyio.run(serve, behaviour, int(port), log_path, studies)
