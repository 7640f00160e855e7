"""The C-FIND SCP runs its handler ahead of the network and sends what is ready at once.

dicomio to dicomio on loopback, on asyncio and trio: every match arrives, in order; the first
one leaves before a slow handler has finished; a handler that fails after some matches
still delivers them, then the failure; a C-CANCEL stops the handler even when the socket is
full (and never cuts a write in half), answered by the Cancel status; and the buffer between
handler and writer is bounded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from pydicom.dataset import Dataset

from dicomio import AE, evt
from dicomio._scp import _Ahead
from dicomio.sop import StudyRootQueryRetrieveInformationModelFind, Verification

pytestmark = pytest.mark.anyio

FIND = StudyRootQueryRetrieveInformationModelFind


def identifier(n: int) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "IMAGE"
    ds.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.{n}"
    ds.InstanceNumber = n
    ds.PatientName = f"Name^{n}"
    return ds


def query() -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "IMAGE"
    ds.SOPInstanceUID = ""
    ds.InstanceNumber = None
    return ds


def scp_ae() -> AE:
    ae = AE("SCP")
    ae.add_supported_context(FIND)
    ae.add_supported_context(Verification)
    return ae


def scu_ae() -> AE:
    ae = AE("SCU")
    ae.add_requested_context(FIND)
    ae.add_requested_context(Verification)
    return ae


async def test_every_match_arrives_in_order() -> None:
    count = 5000

    async def on_find(event: evt.Event) -> AsyncIterator[tuple[int, Dataset | None]]:
        for n in range(count):
            yield 0xFF00, identifier(n)
        yield 0xFF01, None  # pending with a warning, without an identifier

    async with scp_ae().start_server(
        ("127.0.0.1", 0), evt_handlers=[(evt.EVT_C_FIND, on_find)]
    ) as server:
        with anyio.fail_after(30):
            async with scu_ae().associate("127.0.0.1", server.port, ae_title="SCP") as assoc:
                got: list[tuple[int, Any]] = []
                async for status, ds in assoc.send_c_find(query(), FIND):
                    got.append((status.Status, ds))
    assert [s for s, _ in got] == [0xFF00] * count + [0xFF01, 0x0000]
    assert [int(ds.InstanceNumber) for _, ds in got[:count]] == list(range(count))
    assert str(got[1234][1].PatientName) == "Name^1234"
    assert got[count][1] is None and got[-1][1] is None


async def test_each_response_has_its_own_status_dataset() -> None:
    """The client copies one status Dataset for the repeated pending responses: each copy
    is what response_status builds, and changing one changes no other."""

    async def on_find(event: evt.Event) -> AsyncIterator[tuple[int, Dataset]]:
        for n in range(5):
            yield 0xFF00, identifier(n)

    async with scp_ae().start_server(
        ("127.0.0.1", 0), evt_handlers=[(evt.EVT_C_FIND, on_find)]
    ) as server:
        with anyio.fail_after(10):
            async with scu_ae().associate("127.0.0.1", server.port, ae_title="SCP") as assoc:
                statuses = [s async for s, _ in assoc.send_c_find(query(), FIND)]
    first, second = statuses[0], statuses[1]
    assert first is not second and first._dict is not second._dict
    first.Status = 0x1234
    first.ErrorComment = "changed"
    assert second.Status == 0xFF00 and "ErrorComment" not in second
    assert all(s.AffectedSOPClassUID == FIND for s in statuses)
    assert [s.Status for s in statuses[1:]] == [0xFF00] * 4 + [0x0000]


async def test_first_match_leaves_before_a_slow_handler_finishes() -> None:
    """Batching never holds a response back waiting for more: the handler here cannot go on
    until the client has seen its first match."""
    seen_first = anyio.Event()

    async def on_find(event: evt.Event) -> AsyncIterator[tuple[int, Dataset]]:
        yield 0xFF00, identifier(0)
        await seen_first.wait()
        yield 0xFF00, identifier(1)

    async with scp_ae().start_server(
        ("127.0.0.1", 0), evt_handlers=[(evt.EVT_C_FIND, on_find)]
    ) as server:
        with anyio.fail_after(10):
            async with scu_ae().associate("127.0.0.1", server.port, ae_title="SCP") as assoc:
                statuses = []
                async for status, _ds in assoc.send_c_find(query(), FIND):
                    statuses.append(status.Status)
                    seen_first.set()
    assert statuses == [0xFF00, 0xFF00, 0x0000]


async def test_matches_before_a_failure_are_delivered_then_the_failure() -> None:
    async def on_find(event: evt.Event) -> AsyncIterator[tuple[int, Dataset]]:
        for n in range(300):
            yield 0xFF00, identifier(n)
        raise RuntimeError("the database went away")

    async with scp_ae().start_server(
        ("127.0.0.1", 0), evt_handlers=[(evt.EVT_C_FIND, on_find)]
    ) as server:
        with anyio.fail_after(10):
            async with scu_ae().associate("127.0.0.1", server.port, ae_title="SCP") as assoc:
                statuses = [s.Status async for s, _ in assoc.send_c_find(query(), FIND)]
                assert (await assoc.send_c_echo()).Status == 0
    assert statuses == [0xFF00] * 300 + [0xC000]


async def test_cancel_with_a_full_socket_stops_the_handler_and_keeps_the_stream_whole() -> None:
    """The client stops reading until the SCP's socket is full (its writer blocked halfway
    through a write), then cancels: the handler stops, the Cancel status comes back, and the
    association carries on, so no PDU was cut short."""
    produced = 0
    stopped = anyio.Event()

    async def on_find(event: evt.Event) -> AsyncIterator[tuple[int, Dataset]]:
        nonlocal produced
        try:
            for n in range(10_000_000):
                produced += 1
                yield 0xFF00, identifier(n)
        finally:
            stopped.set()

    async with scp_ae().start_server(
        ("127.0.0.1", 0), evt_handlers=[(evt.EVT_C_FIND, on_find)]
    ) as server:
        with anyio.fail_after(30):
            async with scu_ae().associate("127.0.0.1", server.port, ae_title="SCP") as assoc:
                async with assoc.send_c_find(query(), FIND) as results:
                    async for status, _ds in results:
                        assert status.Status == 0xFF00
                        # Let the SCP fill the socket buffers and block on its write.
                        last, stalled = -1, 0
                        while stalled < 5:
                            await anyio.sleep(0.05)
                            stalled = stalled + 1 if produced == last else 0
                            last = produced
                        break
                # Leaving the block waited for the final response: Cancel, not an abort.
                assert stopped.is_set()
                assert not assoc.is_aborted
                assert (await assoc.send_c_echo()).Status == 0
                assert (await assoc.send_c_echo()).Status == 0
    assert produced < 10_000_000


async def test_handler_waits_while_the_buffer_is_full() -> None:
    ahead = _Ahead(1000)
    item = (None, b"x" * 100, None)
    with anyio.fail_after(5):
        for _ in range(10):
            await ahead.put(item, 100)  # 1,000 bytes: the limit is reached, not passed
        blocked = True

        async def eleventh() -> None:
            nonlocal blocked
            await ahead.put(item, 100)
            blocked = False

        async with anyio.create_task_group() as tg:
            tg.start_soon(eleventh)
            await anyio.sleep(0.05)
            assert blocked
            batch = await ahead.take()
            assert batch is not None and len(batch) == 10
        assert not blocked
        ahead.close()
        assert await ahead.take() == [item]
        assert await ahead.take() is None
