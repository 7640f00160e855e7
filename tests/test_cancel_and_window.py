"""Cancellation (C-CANCEL) and the asynchronous operations window, dicomio to dicomio.

Issue #3 acceptance 2 and 3: leaving a C-FIND early sends C-CANCEL and the association
stays usable; cancelling the caller's scope mid C-GET leaves no task and no socket; with a
granted window of 8, eight C-STOREs from eight tasks are outstanding at once at the peer.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from pydicom.dataset import Dataset

from dicomio import AE, evt
from dicomio.presentation import build_role
from dicomio.sop import (
    CTImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    Verification,
)

pytestmark = [pytest.mark.anyio, pytest.mark.uvloop]

FIND = PatientRootQueryRetrieveInformationModelFind
GET = PatientRootQueryRetrieveInformationModelGet


def _ct(n: int) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = f"1.2.3.4.{n}"
    ds.PatientID = "P"
    return ds


FIND_MATCHES = 1_000_000


class Recorder:
    """What the SCP saw: cancellations, and how many stores were in flight at once."""

    def __init__(self) -> None:
        self.find_sent = 0
        self.find_cancelled = anyio.Event()
        self.get_cancelled = anyio.Event()
        self.in_flight = 0
        self.max_in_flight = 0
        self.all_in = anyio.Event()
        self.expect_together = 0


def scp_ae(window: tuple[int, int] | None = None) -> AE:
    ae = AE("SCP")
    for uid in (Verification, CTImageStorage, FIND):
        ae.add_supported_context(uid)
    ae.add_supported_context(GET)
    ae.add_supported_context(CTImageStorage, scu_role=True, scp_role=True)
    ae.async_ops_window = window
    return ae


def handlers(rec: Recorder) -> list[Any]:
    async def on_find(event: evt.Event) -> AsyncIterator[tuple[int, Dataset]]:
        # More matches than can go out before the C-CANCEL comes back: the SCP runs its
        # handler ahead of the network, and a short list in memory may legitimately be
        # finished (final status Success) by the time the peer's C-CANCEL arrives.
        try:
            for i in range(FIND_MATCHES):
                ds = Dataset()
                ds.PatientID = f"P{i:04d}"
                ds.QueryRetrieveLevel = "PATIENT"
                rec.find_sent += 1
                yield 0xFF00, ds
        except BaseException:
            rec.find_cancelled.set()
            raise

    async def on_get(event: evt.Event) -> AsyncIterator[Any]:
        yield 1000
        try:
            for i in range(1000):
                await anyio.sleep(0.01)
                yield 0xFF00, _ct(i)
        except BaseException:
            rec.get_cancelled.set()
            raise

    async def on_store(event: evt.Event) -> int:
        rec.in_flight += 1
        rec.max_in_flight = max(rec.max_in_flight, rec.in_flight)
        try:
            if rec.expect_together and rec.in_flight >= rec.expect_together:
                rec.all_in.set()
            if rec.expect_together:
                with anyio.fail_after(5):
                    await rec.all_in.wait()
            else:
                await anyio.sleep(0.01)
        finally:
            rec.in_flight -= 1
        return 0

    return [(evt.EVT_C_FIND, on_find), (evt.EVT_C_GET, on_get), (evt.EVT_C_STORE, on_store)]


def scu_ae(window: tuple[int, int] | None = None) -> AE:
    ae = AE("SCU")
    for uid in (Verification, CTImageStorage, FIND, GET):
        ae.add_requested_context(uid)
    ae.async_ops_window = window
    return ae


async def test_break_out_of_find_sends_cancel_and_association_stays_usable() -> None:
    rec = Recorder()
    async with scp_ae().start_server(("127.0.0.1", 0), evt_handlers=handlers(rec)) as server:
        with anyio.fail_after(20):
            async with scu_ae().associate("127.0.0.1", server.port, ae_title="SCP") as assoc:
                query = Dataset()
                query.QueryRetrieveLevel = "PATIENT"
                query.PatientID = "*"
                seen = []
                async for status, identifier in assoc.send_c_find(query, FIND):
                    assert status.Status == 0xFF00
                    seen.append(identifier.PatientID)
                    if len(seen) == 3:
                        break
                gc.collect()  # not needed on CPython; makes the test honest elsewhere
                status = await assoc.send_c_echo()
                assert status.Status == 0
                await rec.find_cancelled.wait()
                # A second echo also works: the cancelled find's trailing responses are gone.
                assert (await assoc.send_c_echo()).Status == 0
            assert seen == ["P0000", "P0001", "P0002"]
            assert rec.find_sent < FIND_MATCHES
            assert assoc.is_released


async def test_find_as_context_manager_waits_for_final_cancel_status() -> None:
    rec = Recorder()
    async with scp_ae().start_server(("127.0.0.1", 0), evt_handlers=handlers(rec)) as server:
        with anyio.fail_after(20):
            async with scu_ae().associate("127.0.0.1", server.port, ae_title="SCP") as assoc:
                query = Dataset()
                query.QueryRetrieveLevel = "PATIENT"
                async with assoc.send_c_find(query, FIND) as results:
                    async for _status, _identifier in results:
                        break
                assert rec.find_cancelled.is_set()
                assert not assoc._ops  # the final (Cancel) response was consumed
                assert (await assoc.send_c_echo()).Status == 0


@pytest.mark.parametrize("how", ["stream", "association"])
async def test_explicit_cancel_lets_the_caller_see_the_final_cancel_status(how: str) -> None:
    # pynetdicom's way: C-CANCEL by Message ID and go on reading to the final response.
    rec = Recorder()
    async with scp_ae().start_server(("127.0.0.1", 0), evt_handlers=handlers(rec)) as server:
        with anyio.fail_after(20):
            async with scu_ae().associate("127.0.0.1", server.port, ae_title="SCP") as assoc:
                query = Dataset()
                query.QueryRetrieveLevel = "PATIENT"
                results = assoc.send_c_find(query, FIND)
                assert results.message_id is None
                statuses: list[int] = []
                async for status, _identifier in results:
                    statuses.append(status.Status)
                    if len(statuses) == 2:
                        assert results.message_id is not None
                        if how == "stream":
                            await results.cancel()
                        else:
                            await assoc.send_c_cancel(results.message_id, query_model=FIND)
                assert statuses[-1] == 0xFE00  # Cancel, seen by the caller
                assert set(statuses[:-1]) == {0xFF00}
                assert rec.find_cancelled.is_set() and rec.find_sent < FIND_MATCHES
                assert not assoc._ops
                await results.cancel()  # after the final response: nothing is sent
                assert (await assoc.send_c_echo()).Status == 0


async def test_send_c_cancel_checks_its_arguments() -> None:
    rec = Recorder()
    async with scp_ae().start_server(("127.0.0.1", 0), evt_handlers=handlers(rec)) as server:
        with anyio.fail_after(20):
            async with scu_ae().associate("127.0.0.1", server.port, ae_title="SCP") as assoc:
                with pytest.raises(ValueError):
                    await assoc.send_c_cancel(1)
                with pytest.raises(ValueError):
                    await assoc.send_c_cancel(0x10000, query_model=FIND)
                with pytest.raises(ValueError):
                    await assoc.send_c_cancel(1, context_id=255)
                # A C-CANCEL for nothing outstanding is harmless: the SCP ignores it.
                (find_context,) = [
                    cx.context_id for cx in assoc.accepted_contexts if cx.abstract_syntax == FIND
                ]
                await assoc.send_c_cancel(7, context_id=find_context)
                assert (await assoc.send_c_echo()).Status == 0


async def test_cancelling_the_scope_mid_get_leaves_no_task_and_no_socket() -> None:
    rec = Recorder()
    received: list[str] = []

    async def on_store(event: evt.Event) -> int:
        received.append(str(event.request.affected_sop_instance_uid))
        return 0

    scu = scu_ae()
    async with scp_ae().start_server(("127.0.0.1", 0), evt_handlers=handlers(rec)) as server:
        with anyio.fail_after(20):
            await anyio.sleep(0.05)  # let the listener's own tasks start before counting
            tasks_before = _task_count()
            query = Dataset()
            query.QueryRetrieveLevel = "PATIENT"
            query.PatientID = "P"
            with anyio.move_on_after(0.5) as scope:
                async with scu.associate(
                    "127.0.0.1",
                    server.port,
                    ae_title="SCP",
                    ext_neg=[build_role(CTImageStorage, scp_role=True)],
                    evt_handlers=[(evt.EVT_C_STORE, on_store)],
                ) as assoc:
                    async for _status, _identifier in assoc.send_c_get(query, GET):
                        pass
            assert scope.cancelled_caught
            assert 0 < len(received) < 1000
            assert assoc._transport_closed
            # The client side never starts a task; the server's side ends once it sees the
            # abort. Afterwards nothing of the association is left running anywhere.
            with anyio.fail_after(5):
                while server.associations:
                    await anyio.sleep(0.01)
            assert _task_count() == tasks_before, _task_names()
            await rec.get_cancelled.wait()


def _task_count() -> int:
    try:
        import asyncio

        return len(asyncio.all_tasks())
    except RuntimeError:
        import trio

        return len(trio.lowlevel.current_root_task().child_nurseries[0].child_tasks)


@pytest.mark.parametrize("window", [8, 1])
async def test_window_lets_that_many_stores_be_outstanding(window: int) -> None:
    rec = Recorder()
    rec.expect_together = 8 if window == 8 else 0
    async with scp_ae((window, window)).start_server(
        ("127.0.0.1", 0), evt_handlers=handlers(rec)
    ) as server:
        with anyio.fail_after(20):
            async with scu_ae((8, 8)).associate("127.0.0.1", server.port, ae_title="SCP") as assoc:
                assert assoc.async_ops_window[0] == window
                statuses: dict[int, int] = {}

                async def store(n: int) -> None:
                    statuses[n] = int((await assoc.send_c_store(_ct(n))).Status)

                async with anyio.create_task_group() as tg:
                    for n in range(8):
                        tg.start_soon(store, n)
    assert statuses == dict.fromkeys(range(8), 0)
    assert rec.max_in_flight == window


def _task_names() -> list[str]:
    try:
        import asyncio

        out = []
        for t in asyncio.all_tasks():
            coro = t.get_coro()
            chain = []
            while coro is not None and len(chain) < 30:
                frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
                if frame is not None:
                    chain.append(frame.f_code.co_qualname)
                coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None)
            out.append(">".join(chain))
        return out
    except RuntimeError:
        return []
