"""The requestor when things go wrong: every failure is a typed dicomio exception, in time.

The peer is a scripted fake acceptor on a raw socket (``tests.fake_peer``), so that each
failure happens exactly where the test wants it: a refused connection, an A-ASSOCIATE-RJ for
every result/source/reason of PS3.8 Table 9-21, a connection closed in the middle of a
C-STORE, garbage instead of a PDU, a C-FIND that is never answered, an A-ABORT in the
middle of a C-MOVE. Every test is bounded by ``fail_after``: a hang is a failure.
"""

from __future__ import annotations

import time

import anyio
import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicomio import AE, errors
from dicomio.dimse import CCancelRQ, CEchoRQ, CFindRQ, CMoveRQ, CMoveRSP, CStoreRQ
from dicomio.pdu import (
    Abort,
    AssociateAC,
    AssociateRQ,
    PDataTF,
    PresentationContextAC,
    ReleaseRQ,
    encode,
)
from dicomio.sop import (
    CTImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from tests.conftest import free_port
from tests.fake_peer import (
    FAKE_MAX_PDU,
    PeerConnection,
    abort_pdu,
    associate_rj,
    fake_acceptor,
)

pytestmark = [pytest.mark.anyio, pytest.mark.uvloop]

#: Every test must end well within this; the interesting timeouts are a fraction of it.
TEST_DEADLINE = 10.0


def make_ae(**timeouts: float) -> AE:
    ae = AE("FAILSCU")
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(PatientRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    ae.acse_timeout = timeouts.get("acse", 5.0)
    ae.dimse_timeout = timeouts.get("dimse", 5.0)
    ae.connection_timeout = 5.0
    return ae


def big_ct(megabytes: int = 8) -> Dataset:
    """A CT data set large enough to need hundreds of P-DATA-TF PDUs at 16 KiB."""
    side = int((megabytes * 1024 * 1024 / 2) ** 0.5)
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.PatientID = "BIG"
    ds.Rows = side
    ds.Columns = side
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = np.zeros((side, side), dtype=np.uint16).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def find_query() -> Dataset:
    q = Dataset()
    q.QueryRetrieveLevel = "PATIENT"
    q.PatientID = ""
    return q


def context_for(rq: AssociateRQ | None, abstract_syntax: str) -> int:
    assert rq is not None
    return next(
        cx.context_id for cx in rq.presentation_contexts if cx.abstract_syntax == abstract_syntax
    )


# -- before the association exists -----------------------------------------------------------


async def test_connection_refused_is_typed_and_an_oserror() -> None:
    ae = make_ae()
    with anyio.fail_after(TEST_DEADLINE):
        with pytest.raises(errors.ConnectionRefused) as info:
            await ae.associate("127.0.0.1", free_port(), ae_title="NOBODY")
    # Still what a plain socket would raise, for code that catches OSError.
    assert isinstance(info.value, ConnectionRefusedError)
    assert isinstance(info.value, OSError)
    assert isinstance(info.value, errors.DicomioError)


async def test_connection_refused_in_async_with() -> None:
    ae = make_ae()
    with anyio.fail_after(TEST_DEADLINE), pytest.raises(errors.ConnectionRefused):
        async with ae.associate("127.0.0.1", free_port()):
            raise AssertionError("never reached")


async def test_no_associate_response_is_an_acse_timeout() -> None:
    async def silent(conn: PeerConnection) -> None:
        await conn.read_pdu()
        await conn.drain(TEST_DEADLINE)

    ae = make_ae(acse=0.5)
    async with fake_acceptor(silent) as peer:
        started = time.monotonic()
        with anyio.fail_after(TEST_DEADLINE), pytest.raises(errors.TimeoutError):
            await ae.associate("127.0.0.1", peer.port)
        assert time.monotonic() - started < 3.0
        with anyio.fail_after(TEST_DEADLINE):
            await peer.done.wait()
    conn = peer.connections[0]
    assert isinstance(conn.received[0], AssociateRQ)
    # We gave up: the peer is told so before the connection closes.
    assert conn.eof
    assert conn.aborts(), conn.received


async def test_no_release_response_aborts_after_the_acse_timeout() -> None:
    async def no_release_rp(conn: PeerConnection) -> None:
        await conn.accept()
        while await conn.read_pdu(TEST_DEADLINE) is not None:
            pass  # the A-RELEASE-RQ too, answered with nothing

    ae = make_ae(acse=0.5)
    async with fake_acceptor(no_release_rp) as peer:
        with anyio.fail_after(TEST_DEADLINE):
            assoc = await ae.associate("127.0.0.1", peer.port)
            started = time.monotonic()
            await assoc.release()
            assert time.monotonic() - started < 3.0
            assert assoc.is_aborted and not assoc.is_released
            await peer.done.wait()
    conn = peer.connections[0]
    assert any(isinstance(pdu, ReleaseRQ) for pdu in conn.received)
    assert conn.aborts(), conn.received


async def test_connection_closed_before_associate_response() -> None:
    async def hang_up(conn: PeerConnection) -> None:
        await conn.read_pdu()

    ae = make_ae()
    async with fake_acceptor(hang_up) as peer:
        with anyio.fail_after(TEST_DEADLINE), pytest.raises(errors.ConnectionClosed):
            await ae.associate("127.0.0.1", peer.port)


# PS3.8 Table 9-21: result 1 (rejected-permanent) or 2 (rejected-transient), and the reasons
# each source may give.
REJECTIONS = [
    (result, source, reason)
    for result in (1, 2)
    for source, reasons in ((1, (1, 2, 3, 7)), (2, (1, 2)), (3, (1, 2)))
    for reason in reasons
]


@pytest.mark.parametrize(("result", "source", "reason"), REJECTIONS)
async def test_association_rejected(result: int, source: int, reason: int) -> None:
    async def reject(conn: PeerConnection) -> None:
        await conn.read_pdu()
        await conn.send(associate_rj(result, source, reason))
        await conn.drain()

    ae = make_ae()
    async with fake_acceptor(reject) as peer:
        with anyio.fail_after(TEST_DEADLINE):
            with pytest.raises(errors.AssociationRejected) as info:
                await ae.associate("127.0.0.1", peer.port)
            await peer.done.wait()
    assert (info.value.result, info.value.source, info.value.reason) == (result, source, reason)
    conn = peer.connections[0]
    # After A-ASSOCIATE-RJ the requestor just closes (PS3.8 AE-4); no A-ABORT follows.
    assert conn.eof
    assert [type(pdu) for pdu in conn.received] == [AssociateRQ]
    assert not peer.errors


async def test_garbage_instead_of_associate_ac() -> None:
    async def garbage(conn: PeerConnection) -> None:
        await conn.read_pdu()
        # 0x99 is no PDU type (PS3.8 9.3.1): an unrecognized PDU.
        await conn.send(b"\x99\x00\x00\x00\x00\x08GARBAGE!")
        await conn.drain()

    ae = make_ae()
    async with fake_acceptor(garbage) as peer:
        with anyio.fail_after(TEST_DEADLINE):
            with pytest.raises(errors.AssociationAborted) as info:
                await ae.associate("127.0.0.1", peer.port)
            await peer.done.wait()
    assert (info.value.source, info.value.reason) == (2, 1)
    aborts = peer.connections[0].aborts()
    # PS3.8 AA-8: A-ABORT from the service provider, reason "unrecognized PDU" (Table 9-26).
    assert [(a.source, a.reason) for a in aborts] == [(2, 1)], peer.connections[0].received


async def test_garbage_during_c_echo() -> None:
    async def garbage(conn: PeerConnection) -> None:
        await conn.accept()
        command, _ = await conn.read_message()
        assert isinstance(command, CEchoRQ)
        await conn.send(b"\xde\xad\xbe\xef" * 16)
        await conn.drain()

    ae = make_ae()
    async with fake_acceptor(garbage) as peer:
        with anyio.fail_after(TEST_DEADLINE):
            async with ae.associate("127.0.0.1", peer.port) as assoc:
                with pytest.raises(errors.AssociationAborted) as info:
                    await assoc.send_c_echo()
                assert (info.value.source, info.value.reason) == (2, 1)
                assert assoc.is_aborted
                # The association is over: a further request fails at once, typed.
                with pytest.raises(errors.DicomioError):
                    await assoc.send_c_echo()
            await peer.done.wait()
    aborts = peer.connections[0].aborts()
    assert [(a.source, a.reason) for a in aborts] == [(2, 1)], peer.connections[0].received


async def test_malformed_response_among_others_in_one_read() -> None:
    """A well-framed P-DATA-TF whose command set is broken, followed in the same write (so
    the same read, routed as a batch) by a response to no request: the association is
    aborted (source 2) for the waiter, and the peer gets the A-ABORT."""
    from dicomio.dimse import CEchoRSP, encode_command, fragment_parts

    async def broken(conn: PeerConnection) -> None:
        await conn.accept()
        command, _ = await conn.read_message()
        assert isinstance(command, CEchoRQ)
        good = encode_command(
            CEchoRSP(
                message_id_being_responded_to=command.message_id + 1000,
                status=0,
                affected_sop_class_uid=Verification,
            )
        )
        # An element of group 0008 in a command set (PS3.7 6.3.1 allows only 0000).
        bad = bytes.fromhex("08000000 02000000 4142")
        parts = [
            *fragment_parts(conn.context_id, bad, None, FAKE_MAX_PDU),
            *fragment_parts(conn.context_id, good, None, FAKE_MAX_PDU),
        ]
        await conn.send(b"".join(parts))
        await conn.drain()

    ae = make_ae()
    async with fake_acceptor(broken) as peer:
        with anyio.fail_after(TEST_DEADLINE):
            async with ae.associate("127.0.0.1", peer.port) as assoc:
                with pytest.raises(errors.AssociationAborted) as info:
                    await assoc.send_c_echo()
                assert info.value.source == 2
                assert assoc.is_aborted
            await peer.done.wait()
    aborts = peer.connections[0].aborts()
    assert [a.source for a in aborts] == [2], peer.connections[0].received


async def test_no_accepted_context_is_typed() -> None:
    async def accept_nothing(conn: PeerConnection) -> None:
        rq = await conn.read_pdu()
        assert isinstance(rq, AssociateRQ)
        ac = AssociateAC(
            called_ae_title=rq.called_ae_title,
            calling_ae_title=rq.calling_ae_title,
            presentation_contexts=[
                PresentationContextAC(context_id=cx.context_id, result=3)
                for cx in rq.presentation_contexts
            ],
        )
        await conn.send(encode(ac))
        await conn.drain()

    ae = make_ae()
    async with fake_acceptor(accept_nothing) as peer:
        with anyio.fail_after(TEST_DEADLINE):
            async with ae.associate("127.0.0.1", peer.port) as assoc:
                assert assoc.accepted_contexts == ()
                with pytest.raises(errors.NoPresentationContext):
                    await assoc.send_c_echo()
                with pytest.raises(errors.NoPresentationContext):
                    await assoc.send_c_store(big_ct(1))
                with pytest.raises(errors.NoPresentationContext):
                    assoc.send_c_find(find_query(), PatientRootQueryRetrieveInformationModelFind)
            await peer.done.wait()
    # Nothing but the request and the release went out.
    assert [type(p).__name__ for p in peer.connections[0].received] == [
        "AssociateRQ",
        "ReleaseRQ",
    ]


async def test_unanswered_window_proposal_means_one() -> None:
    """An acceptor that ignores our window item leaves the default, 1 and 1 (PS3.7 D.3.3.3)."""

    async def accept(conn: PeerConnection) -> None:
        await conn.accept()
        await conn.drain()

    ae = make_ae()
    ae.async_ops_window = (4, 4)
    async with fake_acceptor(accept) as peer:
        with anyio.fail_after(TEST_DEADLINE):
            async with ae.associate("127.0.0.1", peer.port) as assoc:
                assert assoc.async_ops_window == (1, 1)
            await peer.done.wait()
    rq = peer.connections[0].rq
    assert rq is not None
    windows = [
        i for i in rq.user_information if type(i).__name__ == "AsynchronousOperationsWindow"
    ]
    assert [
        (w.maximum_number_operations_invoked, w.maximum_number_operations_performed)
        for w in windows
    ] == [(4, 4)]


# -- during an operation ---------------------------------------------------------------------


async def test_peer_closes_in_the_middle_of_a_c_store() -> None:
    async def close_midway(conn: PeerConnection) -> None:
        await conn.accept()
        for _ in range(4):
            assert isinstance(await conn.read_pdu(), PDataTF)
        # Leaving the script closes the socket with unread data: the kernel resets it.

    ae = make_ae()
    async with fake_acceptor(close_midway) as peer:
        with anyio.fail_after(TEST_DEADLINE):
            async with ae.associate("127.0.0.1", peer.port) as assoc:
                assert assoc.remote_max_pdu == FAKE_MAX_PDU
                with pytest.raises((errors.ConnectionClosed, errors.AssociationAborted)):
                    await assoc.send_c_store(big_ct(8))
                with pytest.raises(errors.DicomioError):
                    await assoc.send_c_echo()
    assert not peer.errors


def socket_is_closed(assoc: object) -> bool:
    import anyio.abc

    raw = assoc._stream.extra(anyio.abc.SocketAttribute.raw_socket)  # type: ignore[attr-defined]
    return bool(raw.fileno() == -1)


async def test_socket_closed_after_a_failed_write(
    anyio_backend: str, request: pytest.FixtureRequest
) -> None:
    async def close_midway(conn: PeerConnection) -> None:
        await conn.accept()
        await conn.read_pdu()

    ae = make_ae()
    async with fake_acceptor(close_midway) as peer:
        with anyio.fail_after(TEST_DEADLINE):
            assoc = await ae.associate("127.0.0.1", peer.port)
            try:
                with pytest.raises(errors.ConnectionClosed):
                    await assoc.send_c_store(big_ct(8))
                await assoc.abort()
                assert socket_is_closed(assoc)
            finally:
                # Close it anyway, so that the leak does not turn into a ResourceWarning.
                await anyio.aclose_forcefully(assoc._stream)


async def test_connection_loss_ends_is_established() -> None:
    async def close_midway(conn: PeerConnection) -> None:
        await conn.accept()
        await conn.read_pdu()

    ae = make_ae()
    async with fake_acceptor(close_midway) as peer:
        with anyio.fail_after(TEST_DEADLINE):
            async with ae.associate("127.0.0.1", peer.port) as assoc:
                with pytest.raises((errors.ConnectionClosed, errors.AssociationAborted)):
                    await assoc.send_c_store(big_ct(8))
                assert not assoc.is_established


async def test_c_find_never_answered_is_a_dimse_timeout() -> None:
    got: dict[str, object] = {}

    async def never_answer(conn: PeerConnection) -> None:
        await conn.accept()
        command, identifier = await conn.read_message()
        got["find"] = command
        got["identifier"] = identifier
        # Nothing more than the C-CANCEL should come, then an A-ABORT once we give up.
        got["cancel"], _ = await conn.read_message(TEST_DEADLINE)
        got["after"] = await conn.drain(TEST_DEADLINE)

    ae = make_ae(dimse=0.5)
    async with fake_acceptor(never_answer) as peer:
        with anyio.fail_after(TEST_DEADLINE):
            async with ae.associate("127.0.0.1", peer.port) as assoc:
                started = time.monotonic()
                with pytest.raises(errors.DIMSETimeout):
                    async for _ in assoc.send_c_find(
                        find_query(), PatientRootQueryRetrieveInformationModelFind
                    ):
                        raise AssertionError("no response was sent")
                elapsed = time.monotonic() - started
                # The DIMSE timeout, then at most as long again for the C-CANCEL's answer.
                assert 0.4 < elapsed < 2.0, elapsed
                assert assoc.is_aborted
            await peer.done.wait()
    assert not peer.errors, peer.errors
    assert isinstance(got["find"], CFindRQ)
    assert got["identifier"]
    cancel = got["cancel"]
    assert isinstance(cancel, CCancelRQ)
    assert cancel.message_id_being_responded_to == got["find"].message_id
    after = got["after"]
    assert isinstance(after, list) and [type(p) for p in after] == [Abort]


async def test_c_echo_never_answered_is_a_dimse_timeout() -> None:
    async def never_answer(conn: PeerConnection) -> None:
        await conn.accept()
        await conn.read_message()
        await conn.drain(TEST_DEADLINE)

    ae = make_ae(dimse=0.5)
    async with fake_acceptor(never_answer) as peer:
        with anyio.fail_after(TEST_DEADLINE):
            assoc = await ae.associate("127.0.0.1", peer.port)
            try:
                started = time.monotonic()
                with pytest.raises(errors.DIMSETimeout):
                    await assoc.send_c_echo()
                assert time.monotonic() - started < 2.0
                # Also a builtin TimeoutError, for code written against asyncio.
                assert issubclass(errors.DIMSETimeout, TimeoutError)
            finally:
                await assoc.abort()
            await peer.done.wait()


@pytest.mark.parametrize(("source", "reason"), [(0, 0), (2, 0), (2, 6)])
async def test_peer_aborts_during_a_c_move(source: int, reason: int) -> None:
    async def abort_midway(conn: PeerConnection) -> None:
        await conn.accept()
        command, identifier = await conn.read_message()
        assert isinstance(command, CMoveRQ) and identifier
        assert command.move_destination == "ELSEWHERE"
        await conn.send_message(
            CMoveRSP(
                message_id_being_responded_to=command.message_id,
                affected_sop_class_uid=command.affected_sop_class_uid,
                status=0xFF00,
                number_of_remaining_sub_operations=2,
                number_of_completed_sub_operations=1,
                number_of_failed_sub_operations=0,
                number_of_warning_sub_operations=0,
            ),
        )
        await conn.send(abort_pdu(source, reason))
        await conn.drain()

    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = "1.2.3"
    ae = make_ae()
    responses = []
    async with fake_acceptor(abort_midway) as peer:
        with anyio.fail_after(TEST_DEADLINE):
            async with ae.associate("127.0.0.1", peer.port) as assoc:
                with pytest.raises(errors.AssociationAborted) as info:
                    async for status, _ in assoc.send_c_move(
                        query, "ELSEWHERE", StudyRootQueryRetrieveInformationModelMove
                    ):
                        responses.append(status)
                assert assoc.is_aborted
                # The next request fails at once with the same story.
                with pytest.raises(errors.AssociationAborted):
                    await assoc.send_c_echo()
            await peer.done.wait()
    assert (info.value.source, info.value.reason) == (source, reason)
    assert [int(s.Status) for s in responses] == [0xFF00]
    assert responses[0].NumberOfRemainingSuboperations == 2
    assert responses[0].NumberOfCompletedSuboperations == 1
    # An A-ABORT is never answered (PS3.8 AA-3): the requestor only closed the connection.
    assert not peer.connections[0].aborts()


async def test_peer_aborts_while_we_send_a_c_store() -> None:
    async def abort_midway(conn: PeerConnection) -> None:
        await conn.accept()
        first = await conn.read_pdu()
        assert isinstance(first, PDataTF)
        await conn.send(abort_pdu(0, 0))
        await conn.drain()

    ae = make_ae()
    async with fake_acceptor(abort_midway) as peer:
        with anyio.fail_after(TEST_DEADLINE):
            async with ae.associate("127.0.0.1", peer.port) as assoc:
                with pytest.raises((errors.AssociationAborted, errors.ConnectionClosed)):
                    await assoc.send_c_store(big_ct(8))
            await peer.done.wait()
    assert not peer.errors


async def test_c_store_command_reaches_a_fake_peer() -> None:
    """Sanity check of the fake peer itself: a C-STORE arrives whole and is answered."""
    from dicomio.dimse import CStoreRSP

    seen: list[tuple[object, int]] = []

    async def store(conn: PeerConnection) -> None:
        await conn.accept()
        command, data = await conn.read_message()
        assert isinstance(command, CStoreRQ) and data is not None
        seen.append((command, len(data)))
        await conn.send_message(
            CStoreRSP(
                message_id_being_responded_to=command.message_id,
                affected_sop_class_uid=command.affected_sop_class_uid,
                affected_sop_instance_uid=command.affected_sop_instance_uid,
                status=0,
            ),
        )
        await conn.drain()

    ae = make_ae()
    ds = big_ct(1)
    async with fake_acceptor(store) as peer:
        with anyio.fail_after(TEST_DEADLINE):
            async with ae.associate("127.0.0.1", peer.port) as assoc:
                status = await assoc.send_c_store(ds)
                assert status.Status == 0
            await peer.done.wait()
    assert not peer.errors
    command, _ = seen[0]
    assert command.affected_sop_instance_uid == ds.SOPInstanceUID
