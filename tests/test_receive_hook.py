"""The acceptor's receive hook: bytes taken in the event loop's read callback (asyncio).

On asyncio the serving reader installs ``ServiceProviderMixin._take_data`` on its stream:
bytes arriving while it waits are fed to the Upper Layer in the read callback, and default
C-ECHO answers leave from there, without waking the reader task. Everything else those bytes
lead to is handed to the reader. These tests hold the hook to the behaviour of the reader
path on both backends: answers and their order, handlers bound mid-association, requests
that need the reader, the idle (network) timeout, and a release arriving with an echo.
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from dicomio import _transport, evt
from dicomio._scp import ServiceProviderMixin
from dicomio.dataset import IMPLEMENTATION_CLASS_UID, encode_dataset
from dicomio.dimse import CEchoRSP, CStoreRSP
from dicomio.dimse.commands import decode_command
from dicomio.pdu import ImplementationClassUID
from dicomio.ul.connection import ULConnection
from tests.test_scp_robustness import (
    ECHO_CONTEXT,
    NOT_SPECIFIED,
    STORE_CONTEXT,
    echo_rq,
    echo_works,
    pdv_bytes,
    raw_peer,
    scp_ae,
    server_forgets,
    serving,
    store_command,
    valid_rq,
    valid_rq_value,
)

pytestmark = pytest.mark.anyio

RELEASE_RQ = b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00"


def response(pdu: bytes | None) -> Any:
    """The command of a P-DATA-TF holding one whole command PDV."""
    assert pdu is not None and pdu[0] == 0x04, pdu
    assert pdu[11] == 0x03, "not a last command fragment"
    return decode_command(pdu[12:])


@pytest.fixture
def reader_answers(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the C-ECHOs the reader task answers (``_answer_echoes``), not the hook."""
    answered: list[int] = []
    original = ServiceProviderMixin._answer_echoes

    async def counting(self: ServiceProviderMixin) -> None:
        answered.append(len(self._echoes))
        await original(self)

    monkeypatch.setattr(ServiceProviderMixin, "_answer_echoes", counting)
    return answered


async def test_echoes_answered_in_the_read_callback(
    anyio_backend_name: str, reader_answers: list[int]
) -> None:
    """One echo at a time: each answered, in order; on asyncio none by the reader task."""
    async with serving() as server, raw_peer(server.port) as peer:
        await peer.associate()
        for message_id in range(1, 6):
            await peer.send(echo_rq(message_id=message_id))
            rsp = response(await peer.read_pdu())
            assert isinstance(rsp, CEchoRSP)
            assert (rsp.message_id_being_responded_to, rsp.status) == (message_id, 0)
        await peer.send(RELEASE_RQ)
        pdu = await peer.read_pdu()
        assert pdu is not None and pdu[0] == 0x06
        await peer.expect_closed()
        await server_forgets(server)
    if anyio_backend_name == "asyncio":
        assert reader_answers == []
    else:
        assert sum(reader_answers) == 5


async def test_echoes_in_one_write_then_release() -> None:
    """Two echoes in one write: both answered, in order; then the release is answered."""
    async with serving() as server, raw_peer(server.port) as peer:
        await peer.associate()
        await peer.send(echo_rq(message_id=7) + echo_rq(message_id=8))
        ids = [response(await peer.read_pdu()).message_id_being_responded_to for _ in "ab"]
        assert ids == [7, 8]
        await peer.send(RELEASE_RQ)
        pdu = await peer.read_pdu()
        assert pdu is not None and pdu[0] == 0x06
        await peer.expect_closed()
        await server_forgets(server)


async def test_echo_handler_bound_mid_association_is_called() -> None:
    """A handler bound after the first echo answers the next: the default steps aside."""
    calls: list[int] = []

    async def on_echo(event: Any) -> int:
        calls.append(event.request.message_id)
        return 0x0122

    async with serving() as server, raw_peer(server.port) as peer:
        await peer.associate()
        await peer.send(echo_rq(message_id=1))
        assert response(await peer.read_pdu()).status == 0
        (assoc,) = server.associations
        assoc.bind(evt.EVT_C_ECHO, on_echo)
        await peer.send(echo_rq(message_id=2))
        rsp = response(await peer.read_pdu())
        assert (rsp.message_id_being_responded_to, rsp.status) == (2, 0x0122)
        assoc.unbind(evt.EVT_C_ECHO, on_echo)
        await peer.send(echo_rq(message_id=3))
        assert response(await peer.read_pdu()).status == 0
    assert calls == [2]


async def test_store_between_echoes_goes_to_the_reader() -> None:
    """A C-STORE after echoes answered in the callback runs its handler as usual."""
    stored: list[bytes] = []

    async def on_store(event: Any) -> int:
        stored.append(bytes(event.raw or b""))
        return 0

    ds = Dataset()
    ds.PatientName = "HOOK^TEST"
    data = encode_dataset(ds, ExplicitVRLittleEndian)
    async with serving(handlers=[(evt.EVT_C_STORE, on_store)]) as server:
        async with raw_peer(server.port) as peer:
            await peer.associate()
            await peer.send(echo_rq(message_id=1))
            assert response(await peer.read_pdu()).status == 0
            await peer.send(pdv_bytes(STORE_CONTEXT, 0x03, store_command(message_id=2)))
            await peer.send(pdv_bytes(STORE_CONTEXT, 0x02, data))
            rsp = response(await peer.read_pdu())
            assert isinstance(rsp, CStoreRSP)
            assert (rsp.message_id_being_responded_to, rsp.status) == (2, 0)
            await peer.send(echo_rq(message_id=3))
            assert response(await peer.read_pdu()).message_id_being_responded_to == 3
        await server_forgets(server)
    assert stored == [data]


async def test_echoes_answered_in_the_callback_restart_the_idle_clock() -> None:
    """Traffic answered without waking the reader still counts as traffic (network timeout)."""
    ae = scp_ae()
    ae.network_timeout = 0.6
    async with serving(ae) as server:
        async with raw_peer(server.port) as peer:
            await peer.associate()
            start = anyio.current_time()
            message_id = 0
            while anyio.current_time() - start < 1.5:  # longer than the timeout, with traffic
                message_id += 1
                await peer.send(echo_rq(ECHO_CONTEXT, message_id=message_id))
                assert response(await peer.read_pdu()).status == 0
                quiet = anyio.current_time()
                await anyio.sleep(0.15)
            await peer.expect_abort(NOT_SPECIFIED)
            assert 0.5 <= anyio.current_time() - quiet < 2.5
        await server_forgets(server)
        await echo_works(server.port)


async def test_error_in_the_callback_is_raised_by_the_reader(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug met while routing the bytes ends the association as it would in the reader."""
    from dicomio.association import Association

    def broken(self: Association, item: Any) -> None:
        raise RuntimeError("routing failed")

    async with serving() as server, raw_peer(server.port) as peer:
        await peer.associate()
        monkeypatch.setattr(Association, "_on_dimse", broken)
        await peer.send(echo_rq(message_id=1))
        await peer.expect_abort(NOT_SPECIFIED)
        await server_forgets(server)
    assert "association task failed" in caplog.text
    assert "routing failed" in caplog.text


@pytest.fixture
def acks(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Records each immediate acknowledgement (``_transport.ack_now``) the server makes."""
    if _transport.TCP_QUICKACK is None:
        pytest.skip("no TCP_QUICKACK on this system: nothing is acknowledged at once")
    made: list[object] = []
    original = _transport.ack_now

    def recording(sock: Any) -> None:
        made.append(sock)
        original(sock)

    monkeypatch.setattr(_transport, "ack_now", recording)
    return made


async def test_answered_reads_are_not_acknowledged_separately(acks: list[object]) -> None:
    """An answer carries the ACK of what it answers: a pure ACK segment before it (TCP_QUICKACK)
    would only add a segment per exchange. The A-ASSOCIATE-RQ, each echo and the A-RELEASE-RQ
    are answered before the server waits for more."""
    async with serving() as server, raw_peer(server.port) as peer:
        await peer.associate()
        for message_id in range(1, 4):
            await peer.send(echo_rq(message_id=message_id))
            assert response(await peer.read_pdu()).message_id_being_responded_to == message_id
        await peer.send(RELEASE_RQ)
        pdu = await peer.read_pdu()
        assert pdu is not None and pdu[0] == 0x06
        await peer.expect_closed()
        await server_forgets(server)
    assert acks == []


def ack_test_data() -> bytes:
    """A small data set for the C-STORE of the acknowledgement tests."""
    ds = Dataset()
    ds.PatientName = "ACK^TEST"
    return encode_dataset(ds, ExplicitVRLittleEndian)


async def store_succeeds(event: Any) -> int:
    return 0


async def test_part_of_a_message_is_acknowledged_at_once(acks: list[object]) -> None:
    """A C-STORE command set without its data set is not answered: the server acknowledges it
    at once, for a peer whose Nagle's algorithm holds the data set until the ACK comes."""
    data = ack_test_data()
    async with serving(handlers=[(evt.EVT_C_STORE, store_succeeds)]) as server:
        async with raw_peer(server.port) as peer:
            await peer.associate()
            await peer.send(pdv_bytes(STORE_CONTEXT, 0x03, store_command(message_id=1)))
            with anyio.fail_after(5):
                while not acks:
                    await anyio.lowlevel.checkpoint()
            await peer.send(pdv_bytes(STORE_CONTEXT, 0x02, data))
            rsp = response(await peer.read_pdu())
            assert (rsp.message_id_being_responded_to, rsp.status) == (1, 0)
            assert len(acks) == 1  # the answered data set was not acknowledged on its own
        await server_forgets(server)


async def test_a_dicomio_peer_is_acknowledged_at_once_too(
    acks: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only for Nagle's algorithm: at the start of a connection a sender's buffer (Linux:
    16 KiB) is smaller than one loopback segment (64 KiB), so a peer with Nagle off, dicomio
    itself, also waits for the ACK of what it wrote before it writes more; leaving it to the
    delayed ACK made each C-FIND of 100 matches between two dicomio ends take 40 ms instead
    of 4. A peer that says it is dicomio is acknowledged like any other."""
    reads: list[int] = []
    original = ULConnection.receive_data

    def recording(self: ULConnection, data: Any, *, now: float) -> Any:
        reads.append(len(data))
        return original(self, data, now=now)

    monkeypatch.setattr(ULConnection, "receive_data", recording)
    items = valid_rq_value().user_information
    user_information = [
        ImplementationClassUID(implementation_class_uid=IMPLEMENTATION_CLASS_UID)
        if isinstance(item, ImplementationClassUID)
        else item
        for item in items
    ]
    async with serving(handlers=[(evt.EVT_C_STORE, store_succeeds)]) as server:
        async with raw_peer(server.port) as peer:
            await peer.associate(valid_rq(user_information=user_information))
            command = pdv_bytes(STORE_CONTEXT, 0x03, store_command(message_id=1))
            await peer.send(command)
            with anyio.fail_after(5):
                # The server has read the command set alone: the data set is not sent yet.
                while len(command) not in reads:
                    await anyio.lowlevel.checkpoint()
            await peer.send(pdv_bytes(STORE_CONTEXT, 0x02, ack_test_data()))
            rsp = response(await peer.read_pdu())
            assert rsp.message_id_being_responded_to == 1
        await server_forgets(server)
    assert len(acks) == 1
