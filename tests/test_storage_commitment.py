"""Storage Commitment on one association, both directions (issue #12 items 3 and 4).

PS3.4 J.3: the SCU sends N-ACTION (Request Storage Commitment, Action Type ID 1); the SCP
answers it, then reports the result with N-EVENT-REPORT (Event Type ID 1 or 2, the same
Transaction UID), which it may send on the same association (J.3.3.1.2 note 1).

- The acceptor, as SCP of the SOP class, invokes N-EVENT-REPORT on its own association
  without any role selection (PS3.7 10.1.1; default roles, PS3.7 D.3.3.4).
- A requestor waits for requests that come to it with ``assoc.receive_requests()``, which
  runs them through the association's handlers, and releases at once afterwards.

Against pynetdicom 3 in both roles (its servers and calls run in threads), and dicomio
against itself for the concurrency cases.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicomio import AE, Association, errors, evt
from dicomio.sop import StorageCommitmentPushModel, Verification
from tests.conftest import LOOPBACK, free_port

pytestmark = pytest.mark.anyio

#: The well-known Storage Commitment Push Model SOP Instance (PS3.4 J.3.5).
PUSH_INSTANCE = "1.2.840.10008.1.20.1.1"
DEADLINE = 30.0
#: A release "at once": far below the ACSE timeout (30 s) it would otherwise wait out.
PROMPT = 3.0

T = TypeVar("T")


def commitment_request(transaction_uid: str) -> Dataset:
    """Storage Commitment Request action information (PS3.4 Table J.3-1)."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    item.ReferencedSOPInstanceUID = generate_uid()
    ds.ReferencedSOPSequence = [item]
    return ds


def commitment_result(request: Dataset) -> Dataset:
    """Storage Commitment Result event information, all committed (PS3.4 Table J.3-2)."""
    ds = Dataset()
    ds.TransactionUID = request.TransactionUID
    ds.ReferencedSOPSequence = request.ReferencedSOPSequence
    return ds


async def in_thread(func: Callable[..., T], *args: Any) -> T:
    with anyio.fail_after(DEADLINE):
        return await anyio.to_thread.run_sync(functools.partial(func, *args))


def requestor(title: str = "COMMITSCU") -> AE:
    ae = AE(title)
    ae.add_requested_context(StorageCommitmentPushModel)
    ae.add_requested_context(Verification)
    return ae


def acceptor() -> AE:
    ae = AE("COMMITSCP")
    ae.add_supported_context(StorageCommitmentPushModel)
    ae.add_supported_context(Verification)
    return ae


# -- (a) dicomio is the SCU, pynetdicom the SCP ---------------------------------------------


class PyCommitSCP:
    """pynetdicom's Storage Commitment SCP: answers N-ACTION, then, once told that our
    ``send_n_action`` has returned, reports on the same association from another thread."""

    def __init__(self) -> None:
        self.port = free_port()
        #: Set by the test when the N-ACTION response has reached it.
        self.may_report = threading.Event()
        self.report_status: list[Any] = []
        self.errors: list[BaseException] = []
        self.threads: list[threading.Thread] = []

    def on_action(self, event: Any) -> tuple[int, None]:
        request = event.action_information
        assoc = event.assoc

        def report() -> None:
            try:
                if not self.may_report.wait(DEADLINE):
                    raise RuntimeError("the test never said the N-ACTION response arrived")
                status, _ = assoc.send_n_event_report(
                    commitment_result(request), 1, StorageCommitmentPushModel, PUSH_INSTANCE
                )
                self.report_status.append(status)
            except BaseException as exc:  # reported by the test
                self.errors.append(exc)

        thread = threading.Thread(target=report, daemon=True)
        self.threads.append(thread)
        thread.start()
        return 0x0000, None


@pytest.fixture(scope="module")
def pynetdicom_scp() -> Iterator[PyCommitSCP]:
    pynetdicom = pytest.importorskip("pynetdicom")
    peer = PyCommitSCP()
    ae = pynetdicom.AE("PYCOMMIT")
    ae.add_supported_context(StorageCommitmentPushModel)
    ae.add_supported_context(Verification)
    server = ae.start_server(
        (LOOPBACK, peer.port),
        block=False,
        evt_handlers=[(pynetdicom.evt.EVT_N_ACTION, peer.on_action)],
    )
    try:
        yield peer
    finally:
        server.shutdown()


@pytest.fixture
def py_scp(pynetdicom_scp: PyCommitSCP) -> PyCommitSCP:
    pynetdicom_scp.may_report.clear()
    pynetdicom_scp.report_status.clear()
    pynetdicom_scp.errors.clear()
    return pynetdicom_scp


@pytest.mark.interop
async def test_requestor_receives_the_report_then_releases_at_once(py_scp: PyCommitSCP) -> None:
    transaction = generate_uid()
    handled: list[tuple[int, str]] = []

    async def on_report(event: evt.Event) -> int:
        handled.append((event.event_type, str(event.event_information.TransactionUID)))
        return 0x0000

    ae = requestor()
    with anyio.fail_after(DEADLINE):
        assoc = await ae.associate(
            LOOPBACK,
            py_scp.port,
            ae_title="PYCOMMIT",
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)],
        )
        status, _ = await assoc.send_n_action(
            commitment_request(transaction), 1, StorageCommitmentPushModel, PUSH_INSTANCE
        )
        assert status.Status == 0x0000
        assert handled == []  # the report comes after the N-ACTION response (J.3.3)
        py_scp.may_report.set()
        received = []
        async for event in assoc.receive_requests(timeout=10):
            received.append(event)
            if event.event is evt.EVT_N_EVENT_REPORT:
                break
        started = anyio.current_time()
        await assoc.release()
        took = anyio.current_time() - started
    assert handled == [(1, transaction)]
    (event,) = received
    assert event.request.event_type_id == 1
    assert event.request.affected_sop_instance_uid == PUSH_INSTANCE
    assert assoc.is_released and not assoc.is_aborted
    assert took < PROMPT, f"release took {took:.1f} s"
    await in_thread(py_scp.threads[-1].join, DEADLINE)
    assert py_scp.errors == []
    ((report_status),) = py_scp.report_status
    assert report_status.Status == 0x0000


# -- (b) dicomio is the SCP, pynetdicom the SCU ---------------------------------------------


def pynetdicom_commit(port: int, transaction: str) -> tuple[Any, list[Any]]:
    """pynetdicom's Storage Commitment SCU, in a worker thread: N-ACTION with default roles
    (no role selection), then wait (bounded) for the report on the same association."""
    import pynetdicom

    reports: list[Any] = []
    got = threading.Event()

    def on_report(event: Any) -> tuple[int, None]:
        reports.append((event.event_type, event.event_information, event.request))
        got.set()
        return 0x0000, None

    ae = pynetdicom.AE("PYSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate(
        LOOPBACK,
        port,
        ae_title="COMMITSCP",
        evt_handlers=[(pynetdicom.evt.EVT_N_EVENT_REPORT, on_report)],
    )
    try:
        assert assoc.is_established
        status, _ = assoc.send_n_action(
            commitment_request(transaction), 1, StorageCommitmentPushModel, PUSH_INSTANCE
        )
        got.wait(DEADLINE)
        return status, reports
    finally:
        assoc.release()
        ae.shutdown()


@pytest.mark.interop
@pytest.mark.parametrize("when", ["in_handler", "after_response"])
async def test_acceptor_reports_on_its_own_association(when: str) -> None:
    """The N-ACTION handler reports, without role selection: inside itself (before its
    response goes out) or from a task it starts (after)."""
    pytest.importorskip("pynetdicom")
    sent: list[Any] = []

    async def report(assoc: Association, request: Dataset) -> None:
        status, _ = await assoc.send_n_event_report(
            commitment_result(request), 1, StorageCommitmentPushModel, PUSH_INSTANCE
        )
        sent.append(status)

    async with anyio.create_task_group() as tg:

        async def on_action(event: evt.Event) -> int:
            assert event.action_type == 1
            if when == "in_handler":
                await report(event.assoc, event.action_information)
            else:
                tg.start_soon(report, event.assoc, event.action_information)
            return 0x0000

        transaction = generate_uid()
        with anyio.fail_after(DEADLINE):
            async with acceptor().start_server(
                (LOOPBACK, 0), evt_handlers=[(evt.EVT_N_ACTION, on_action)]
            ) as server:
                status, reports = await in_thread(pynetdicom_commit, server.port, transaction)
    assert status.Status == 0x0000
    ((event_type, info, request),) = reports
    assert event_type == 1
    assert info.TransactionUID == transaction
    assert request.AffectedSOPClassUID == StorageCommitmentPushModel
    assert request.AffectedSOPInstanceUID == PUSH_INSTANCE
    ((report_status),) = sent
    assert report_status.Status == 0x0000


# -- dicomio on both sides: concurrency, scope exit ------------------------------------------


async def test_acceptor_may_not_report_where_it_has_no_role() -> None:
    """The role check stays for the other N-services: an acceptor is no SCU by default."""
    outcome: list[BaseException] = []

    async def on_action(event: evt.Event) -> int:
        try:
            await event.assoc.send_n_action(None, 1, StorageCommitmentPushModel, PUSH_INSTANCE)
        except errors.NoPresentationContext as exc:
            outcome.append(exc)
        return 0x0000

    with anyio.fail_after(DEADLINE):
        async with (
            acceptor().start_server(
                (LOOPBACK, 0), evt_handlers=[(evt.EVT_N_ACTION, on_action)]
            ) as server,
            requestor().associate(LOOPBACK, server.port, ae_title="X") as assoc,
        ):
            status, _ = await assoc.send_n_action(
                commitment_request(generate_uid()), 1, StorageCommitmentPushModel,
                PUSH_INSTANCE,
            )  # fmt: skip
    assert status.Status == 0
    assert len(outcome) == 1


async def test_pending_call_while_receiving_requests() -> None:
    """C-ECHOs from another task complete while one task waits in receive_requests."""
    server_side: list[Association] = []
    report_now = anyio.Event()

    async def on_action(event: evt.Event) -> int:
        server_side.append(event.assoc)
        report_now.set()
        return 0x0000

    handled: list[str] = []

    async def on_report(event: evt.Event) -> int:
        handled.append(str(event.event_information.TransactionUID))
        return 0x0000

    transaction = generate_uid()
    with anyio.fail_after(DEADLINE):
        async with acceptor().start_server(
            (LOOPBACK, 0), evt_handlers=[(evt.EVT_N_ACTION, on_action)]
        ) as server:
            assoc = await requestor().associate(
                LOOPBACK,
                server.port,
                ae_title="COMMITSCP",
                evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)],
            )
            request = commitment_request(transaction)
            await assoc.send_n_action(request, 1, StorageCommitmentPushModel, PUSH_INSTANCE)
            echoes: list[int] = []
            received: list[evt.Event] = []

            async def receive() -> None:
                async for event in assoc.receive_requests(timeout=10):
                    received.append(event)
                    return

            async def echo_then_report() -> None:
                for _ in range(3):
                    echoes.append(int((await assoc.send_c_echo()).Status))
                await report_now.wait()
                await server_side[0].send_n_event_report(
                    commitment_result(request), 1, StorageCommitmentPushModel, PUSH_INSTANCE
                )

            async with anyio.create_task_group() as tg:
                tg.start_soon(receive)
                tg.start_soon(echo_then_report)
            started = anyio.current_time()
            await assoc.release()
            took = anyio.current_time() - started
    assert echoes == [0, 0, 0]
    assert handled == [transaction]
    assert [e.event for e in received] == [evt.EVT_N_EVENT_REPORT]
    assert took < PROMPT, f"release took {took:.1f} s"


async def test_request_read_by_a_pending_call_reaches_the_receiver() -> None:
    """The SCP reports from its C-ECHO handler, before answering: the requestor's echo task
    is the one reading, runs the report's handler, and the waiting receiver gets it."""
    echo_seen, go = anyio.Event(), anyio.Event()

    async def on_echo(event: evt.Event) -> int:
        echo_seen.set()
        await go.wait()
        await event.assoc.send_n_event_report(
            commitment_result(commitment_request("1.2.3")),
            1,
            StorageCommitmentPushModel,
            PUSH_INSTANCE,
        )
        return 0x0000

    handled: list[int] = []

    async def on_report(event: evt.Event) -> int:
        handled.append(event.event_type)
        return 0x0000

    with anyio.fail_after(DEADLINE):
        async with acceptor().start_server(
            (LOOPBACK, 0), evt_handlers=[(evt.EVT_C_ECHO, on_echo)]
        ) as server:
            assoc = await requestor().associate(
                LOOPBACK,
                server.port,
                ae_title="COMMITSCP",
                evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)],
            )
            echo: list[int] = []
            received: list[evt.Event] = []

            async def send_echo() -> None:
                echo.append(int((await assoc.send_c_echo()).Status))

            async def receive(requests: Any) -> None:
                async for event in requests:
                    received.append(event)
                    return

            async with anyio.create_task_group() as tg:
                tg.start_soon(send_echo)
                await echo_seen.wait()  # the echo task now reads, waiting for its answer
                requests = assoc.receive_requests(timeout=10)
                tg.start_soon(receive, requests)
                go.set()
            started = anyio.current_time()
            await assoc.release()
            took = anyio.current_time() - started
    assert echo == [0]
    assert handled == [1]
    assert [e.event for e in received] == [evt.EVT_N_EVENT_REPORT]
    assert took < PROMPT, f"release took {took:.1f} s"


async def test_report_before_the_action_response_is_yielded_by_a_receiver_opened_first() -> None:
    """The documented pattern: open the receiver, send N-ACTION, then iterate.

    The SCP reports from its N-ACTION handler before answering, so ``send_n_action``
    (reading for its response) runs the report's handler; the receiver made before the call
    still yields it, and the loop does not wait for a report that already came.
    """

    async def on_action(event: evt.Event) -> int:
        await event.assoc.send_n_event_report(
            commitment_result(event.action_information),
            1,
            StorageCommitmentPushModel,
            PUSH_INSTANCE,
        )
        return 0x0000

    async def on_report(event: evt.Event) -> int:
        return 0x0000

    with anyio.fail_after(DEADLINE):
        async with (
            acceptor().start_server(
                (LOOPBACK, 0), evt_handlers=[(evt.EVT_N_ACTION, on_action)]
            ) as server,
            requestor().associate(
                LOOPBACK,
                server.port,
                ae_title="COMMITSCP",
                evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)],
            ) as assoc,
        ):
            async with assoc.receive_requests(timeout=PROMPT) as requests:
                status, _ = await assoc.send_n_action(
                    commitment_request("1.2.3"), 1, StorageCommitmentPushModel, PUSH_INSTANCE
                )
                assert status.Status == 0x0000
                event = await requests.__anext__()
            assert event.event is evt.EVT_N_EVENT_REPORT
            assert event.event_information.TransactionUID == "1.2.3"


async def test_receive_requests_ends_when_the_peer_releases() -> None:
    """The acceptor releases instead of reporting (PS3.8 7.2): the loop ends, no error."""
    async with anyio.create_task_group() as tg:

        async def on_action(event: evt.Event) -> int:
            tg.start_soon(event.assoc.release)
            return 0x0000

        with anyio.fail_after(DEADLINE):
            async with acceptor().start_server(
                (LOOPBACK, 0), evt_handlers=[(evt.EVT_N_ACTION, on_action)]
            ) as server:
                assoc = await requestor().associate(LOOPBACK, server.port, ae_title="COMMITSCP")
                await assoc.send_n_action(
                    commitment_request(generate_uid()), 1, StorageCommitmentPushModel,
                    PUSH_INSTANCE,
                )  # fmt: skip
                received = [event async for event in assoc.receive_requests(timeout=10)]
                await assoc.release()  # nothing left to do: returns at once
    assert received == []
    assert assoc.is_released and not assoc.is_aborted


async def test_receive_requests_times_out_and_release_is_prompt() -> None:
    """No request within the timeout: DIMSETimeout; the association goes on as before."""
    with anyio.fail_after(DEADLINE):
        async with acceptor().start_server((LOOPBACK, 0)) as server:
            assoc = await requestor().associate(LOOPBACK, server.port, ae_title="COMMITSCP")
            started = anyio.current_time()
            with pytest.raises(errors.DIMSETimeout):
                async for _ in assoc.receive_requests(timeout=0.3):
                    pytest.fail("no request was sent")
            assert anyio.current_time() - started >= 0.3
            assert (await assoc.send_c_echo()).Status == 0
            started = anyio.current_time()
            await assoc.release()
            took = anyio.current_time() - started
    assert assoc.is_released and not assoc.is_aborted
    assert took < PROMPT, f"release took {took:.1f} s"


async def test_leaving_serve_leaves_release_prompt() -> None:
    """``serve()`` on a requestor (the undocumented way before ``receive_requests``): once
    it is cancelled, release() reads the A-RELEASE-RP itself instead of waiting out the
    ACSE timeout for a reader task that is gone."""
    with anyio.fail_after(DEADLINE):
        async with acceptor().start_server((LOOPBACK, 0)) as server:
            assoc = await requestor().associate(LOOPBACK, server.port, ae_title="COMMITSCP")
            with anyio.move_on_after(0.2):
                await assoc.serve()
            assert (await assoc.send_c_echo()).Status == 0
            started = anyio.current_time()
            await assoc.release()
            took = anyio.current_time() - started
    assert assoc.is_released and not assoc.is_aborted
    assert took < PROMPT, f"release took {took:.1f} s"


# -- the docs example -----------------------------------------------------------------------

EXAMPLE = Path(__file__).parent.parent / "docs" / "examples" / "storage_commitment.py"


async def test_docs_example() -> None:
    spec = importlib.util.spec_from_file_location("storage_commitment_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    started = anyio.current_time()
    with anyio.fail_after(DEADLINE):
        result = await module.main()
    # The whole exchange, release included, is far shorter than the ACSE timeout.
    assert anyio.current_time() - started < PROMPT
    assert result.TransactionUID
    assert len(result.ReferencedSOPSequence) == 1
