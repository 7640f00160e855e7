"""One dicomio SCP under many associations at once, and many requests on one (issue #4).

- 1,000 concurrent associations, each doing 10 C-ECHOs, against one server in the same
  process and event loop (dicomio clients), all succeed within a bound.
- With an asynchronous operations window greater than 1 (PS3.7 D.3.3.3) the SCP works on
  that many requests of one association at once; and no more than it granted, even when a
  peer sends more.
"""

from __future__ import annotations

import struct
from typing import Any

import anyio
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian

from dicomio import AE, evt
from dicomio.dimse import CEchoRQ, encode_command
from dicomio.pdu import (
    AssociateRQ,
    AsynchronousOperationsWindow,
    ImplementationClassUID,
    MaximumLength,
    PDataTF,
    PresentationContextRQ,
    PresentationDataValue,
    encode,
)
from dicomio.sop import CTImageStorage, Verification
from tests.conftest import LOOPBACK

pytestmark = [pytest.mark.anyio, pytest.mark.uvloop]

ASSOCIATIONS = 1000
ECHOES = 10


@pytest.mark.slow
async def test_thousand_concurrent_associations() -> None:
    """1,000 associations x 10 C-ECHOs at once against one server; every one succeeds."""
    scp = AE("BUSY")
    scp.maximum_associations = ASSOCIATIONS
    scp.add_supported_context(Verification)
    client = AE("MANY")
    client.add_requested_context(Verification)
    # Everything connects at once: the TCP connect and the A-ASSOCIATE wait in the backlog
    # and the accept queue, so the client-side timeouts are generous; the test's own bound
    # is what decides.
    client.connection_timeout = client.acse_timeout = client.dimse_timeout = 100
    results: list[int] = []
    peak = 0
    established = 0
    everyone_in = anyio.Event()

    async def one(server: Any) -> None:
        nonlocal established, peak
        async with client.associate(LOOPBACK, server.port, ae_title="BUSY") as assoc:
            # A barrier: nobody echoes until all 1,000 associations are open at once.
            established += 1
            if established == ASSOCIATIONS:
                peak = len(server.associations)
                everyone_in.set()
            await everyone_in.wait()
            for _ in range(ECHOES):
                status = await assoc.send_c_echo()
                results.append(int(status.Status))

    start = anyio.current_time()
    with anyio.fail_after(120):
        async with scp.start_server((LOOPBACK, 0), backlog=2048) as server:
            async with anyio.create_task_group() as tg:
                for _ in range(ASSOCIATIONS):
                    tg.start_soon(one, server)
            with anyio.fail_after(10):
                while server.associations:
                    await anyio.sleep(0.01)
    elapsed = anyio.current_time() - start
    assert results == [0] * (ASSOCIATIONS * ECHOES)
    # Not a benchmark, but worth seeing with -s: the time and how many were open at once.
    print(f"{ASSOCIATIONS} associations x {ECHOES} echoes in {elapsed:.1f} s, peak {peak} open")
    assert peak == ASSOCIATIONS


def _ct(n: int) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = f"1.2.3.4.{n}"
    ds.PatientID = "P"
    return ds


@pytest.mark.parametrize("window", [4, 8])
async def test_window_requests_handled_concurrently(window: int) -> None:
    """With a granted window of N, N C-STORE handlers of one association run at once.

    Each handler waits until all N are in flight; with less concurrency than N this
    would never finish (the bound fails the test instead).
    """
    in_flight = 0
    most = 0
    all_in = anyio.Event()

    async def on_store(event: Any) -> int:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        if in_flight == window:
            all_in.set()
        await all_in.wait()
        in_flight -= 1
        return 0

    scp = AE("WINDOW")
    scp.add_supported_context(Verification)
    scp.add_supported_context(CTImageStorage)
    scp.async_ops_window = (window, window)
    client = AE("CLIENT")
    client.add_requested_context(Verification)
    client.add_requested_context(CTImageStorage)
    client.async_ops_window = (window, window)
    statuses: list[int] = []
    with anyio.fail_after(20):
        async with (
            scp.start_server((LOOPBACK, 0), evt_handlers=[(evt.EVT_C_STORE, on_store)]) as server,
            client.associate(LOOPBACK, server.port, ae_title="WINDOW") as assoc,
        ):
            assert assoc.async_ops_window == (window, window)

            async def store(n: int) -> None:
                statuses.append(int((await assoc.send_c_store(_ct(n))).Status))

            async with anyio.create_task_group() as tg:
                for n in range(window):
                    tg.start_soon(store, n)
            assert (await assoc.send_c_echo()).Status == 0
    assert statuses == [0] * window
    assert most == window


async def test_performed_limit_holds_against_a_greedy_peer() -> None:
    """A peer that sends more requests than the window allows gets them performed N at a time.

    The SCP grants a window of 2; a raw peer sends 6 C-ECHO-RQs without waiting. All six
    are answered, never more than two handlers run at once (PS3.7 D.3.3.3).
    """
    in_flight = 0
    most = 0

    async def on_echo(event: Any) -> int:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await anyio.sleep(0.05)
        in_flight -= 1
        return 0

    scp = AE("GREEDY")
    scp.add_supported_context(Verification)
    scp.async_ops_window = (2, 2)
    rq = encode(
        AssociateRQ(
            called_ae_title="GREEDY",
            calling_ae_title="RAW",
            presentation_contexts=[
                PresentationContextRQ(
                    context_id=1,
                    abstract_syntax=Verification,
                    transfer_syntaxes=[ImplicitVRLittleEndian],
                )
            ],
            user_information=[
                MaximumLength(maximum_length=16384),
                ImplementationClassUID(implementation_class_uid="1.2.3.4"),
                AsynchronousOperationsWindow(
                    maximum_number_operations_invoked=8,
                    maximum_number_operations_performed=8,
                ),
            ],
        )
    )
    requests = b"".join(
        encode(
            PDataTF(
                pdvs=[
                    PresentationDataValue(
                        context_id=1,
                        is_command=True,
                        is_last=True,
                        data=encode_command(CEchoRQ(message_id=n)),
                    )
                ]
            )
        )
        for n in range(1, 7)
    )
    with anyio.fail_after(10):
        async with scp.start_server(
            (LOOPBACK, 0), evt_handlers=[(evt.EVT_C_ECHO, on_echo)]
        ) as server:
            stream = await anyio.connect_tcp(LOOPBACK, server.port)
            async with stream:
                await stream.send(rq)
                buffer = bytearray()
                pdus: list[bytes] = []

                async def read_pdus(count: int) -> None:
                    while len(pdus) < count:
                        while len(buffer) >= 6:
                            (length,) = struct.unpack_from(">I", buffer, 2)
                            if len(buffer) < 6 + length:
                                break
                            pdus.append(bytes(buffer[: 6 + length]))
                            del buffer[: 6 + length]
                        if len(pdus) < count:
                            buffer.extend(await stream.receive())

                await read_pdus(1)
                assert pdus[0][0] == 0x02  # A-ASSOCIATE-AC
                await stream.send(requests)
                await read_pdus(7)
    assert [pdu[0] for pdu in pdus[1:]] == [0x04] * 6
    assert most == 2
