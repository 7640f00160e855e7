"""ULConnection end to end: a requestor and an acceptor wired back to back in memory.

No sockets, no sleeps: bytes are shuttled by hand and time is a number we pass in.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from dicomio.dimse import CEchoRQ, encode_command, fragment, fragment_parts
from dicomio.errors import LocalProtocolError
from dicomio.pdu.codec import encode
from dicomio.pdu.items import PresentationDataValue
from dicomio.pdu.pdus import (
    PDU,
    Abort,
    AssociateAC,
    AssociateRJ,
    AssociateRQ,
    PDataTF,
    ReleaseRP,
    ReleaseRQ,
)
from dicomio.pdu.reader import PDUReader
from dicomio.ul import (
    ProviderAbort,
    Role,
    State,
    TransportClosed,
    ULConnection,
    ULEvent,
)
from tests.strategies import (
    associate_ac_pdus,
    associate_rj_pdus,
    associate_rq_pdus,
    p_data_tf_pdus,
    pdus,
)

ULEventTypes = (
    AssociateRQ,
    AssociateAC,
    AssociateRJ,
    PDataTF,
    ReleaseRQ,
    ReleaseRP,
    Abort,
    ProviderAbort,
    TransportClosed,
)

RQ = AssociateRQ(called_ae_title="ACCEPTOR", calling_ae_title="REQUESTOR")
AC = AssociateAC(called_ae_title="ACCEPTOR", calling_ae_title="REQUESTOR")
RJ = AssociateRJ(result=1, source=1, reason=7)


def pdata(payload: bytes | memoryview = b"\x01\x02\x03\x04", context_id: int = 1) -> PDataTF:
    return PDataTF(
        pdvs=[
            PresentationDataValue(
                context_id=context_id, is_command=False, is_last=True, data=payload
            )
        ]
    )


def drain(conn: ULConnection) -> list[PDU]:
    """The PDUs queued for the peer, decoded."""
    reader = PDUReader(0)
    reader.feed(b"".join(conn.data_to_send()))
    return list(reader)


class ConnectionPair:
    """A requestor and an acceptor connected back to back (h11's ConnectionPair).

    ``chunk`` splits every transfer into pieces of that many bytes, to show that framing
    does not depend on how the transport happens to cut the stream.
    """

    def __init__(self, *, chunk: int | None = None, artim_timeout: float = 30.0) -> None:
        self.requestor = ULConnection(Role.REQUESTOR, artim_timeout=artim_timeout)
        self.acceptor = ULConnection(Role.ACCEPTOR, artim_timeout=artim_timeout)
        self.chunk = chunk
        self.now = 0.0

    def peer(self, conn: ULConnection) -> ULConnection:
        return self.acceptor if conn is self.requestor else self.requestor

    def send(self, conn: ULConnection) -> list[ULEvent]:
        """Deliver everything ``conn`` has queued; return what its peer reports."""
        data = b"".join(conn.data_to_send())
        peer = self.peer(conn)
        if self.chunk is None:
            return peer.receive_data(data, now=self.now) if data else []
        events: list[ULEvent] = []
        for i in range(0, len(data), self.chunk):
            events += peer.receive_data(data[i : i + self.chunk], now=self.now)
        return events

    def close(self, conn: ULConnection) -> list[ULEvent]:
        """``conn`` closes the transport (it flushes first); return what its peer reports."""
        events = self.send(conn)
        return events + self.peer(conn).receive_data(b"", now=self.now)

    def associate(self) -> None:
        self.requestor.send_associate_rq(RQ, now=self.now)
        assert self.requestor.state is State.STA4
        self.requestor.connection_made(now=self.now)
        self.acceptor.connection_made(now=self.now)
        assert self.requestor.state is State.STA5
        assert self.acceptor.state is State.STA2
        assert self.send(self.requestor) == [RQ]
        assert self.acceptor.state is State.STA3
        self.acceptor.send_associate_ac(AC, now=self.now)
        assert self.send(self.acceptor) == [AC]
        assert self.requestor.state is State.STA6
        assert self.acceptor.state is State.STA6
        assert self.requestor.next_deadline() is None
        assert self.acceptor.next_deadline() is None


CHUNKS = [None, 1, 7]


@pytest.mark.parametrize("chunk", CHUNKS)
def test_associate_exchange_release(chunk: int | None) -> None:
    pair = ConnectionPair(chunk=chunk)
    req, acc = pair.requestor, pair.acceptor
    pair.associate()

    req.send_pdata(pdata(b"hello"), now=1.0)
    req.send_pdata(pdata(b"world", context_id=3), now=1.0)
    events = pair.send(req)
    assert [type(e) for e in events] == [PDataTF, PDataTF]
    assert [bytes(e.pdvs[0].data) for e in events if isinstance(e, PDataTF)] == [
        b"hello",
        b"world",
    ]
    acc.send_pdata(pdata(b"reply"), now=1.0)
    assert pair.send(acc) == [pdata(b"reply")]

    req.send_release_rq(now=2.0)
    assert req.state is State.STA7
    assert pair.send(req) == [ReleaseRQ()]
    assert acc.state is State.STA8
    # AR-7: the acceptor may still send data after the release indication, and AR-6: the
    # requestor still receives it while it waits for the A-RELEASE-RP.
    acc.send_pdata(pdata(b"last"), now=2.0)
    acc.send_release_rp(now=2.0)
    assert acc.state is State.STA13
    assert acc.next_deadline() == 32.0
    events = pair.send(acc)
    assert events == [pdata(b"last"), ReleaseRP()]
    assert req.state is State.STA1
    assert req.should_close
    assert pair.close(req) == [TransportClosed()]
    assert acc.state is State.STA1
    assert acc.should_close
    assert acc.next_deadline() is None


def test_received_pdata_is_not_copied() -> None:
    pair = ConnectionPair()
    pair.associate()
    payload = bytes(range(256)) * 64
    pair.requestor.send_pdata(pdata(memoryview(payload)), now=0.0)
    parts = pair.requestor.data_to_send()
    assert any(part.obj is payload for part in parts if isinstance(part, memoryview))
    wire = b"".join(parts)
    (event,) = pair.acceptor.receive_data(wire, now=0.0)
    assert isinstance(event, PDataTF)
    data = event.pdvs[0].data
    assert isinstance(data, memoryview)
    assert data.obj is wire
    assert data == payload


def test_at_rest_only_in_sta6_between_pdus() -> None:
    pair = ConnectionPair()
    req, acc = pair.requestor, pair.acceptor
    assert not req.at_rest and not acc.at_rest  # Sta1
    pair.associate()
    assert req.at_rest and acc.at_rest
    req.send_pdata(pdata(), now=0.0)
    assert not req.at_rest  # a PDU waits to be sent
    wire = b"".join(req.data_to_send())
    assert req.at_rest
    acc.receive_data(wire[:7], now=0.0)
    assert not acc.at_rest  # part of a PDU read
    acc.receive_data(wire[7:], now=0.0)
    assert acc.at_rest
    req.send_release_rq(now=0.0)
    pair.send(req)
    assert not req.at_rest and not acc.at_rest  # Sta7, Sta8


@pytest.mark.parametrize("chunk", CHUNKS)
def test_send_pdata_parts_is_send_pdata_for_each_pdu(chunk: int | None) -> None:
    pair = ConnectionPair(chunk=chunk)
    req, acc = pair.requestor, pair.acceptor
    pair.associate()
    payload = memoryview(bytes(range(256)) * 4)
    command = encode_command(CEchoRQ(message_id=1))
    parts = fragment_parts(5, command, payload, 100)
    req.send_pdata_parts(parts, now=1.0)
    queued = req.data_to_send()
    assert queued == parts
    assert any(part is parts[3] for part in queued)  # queued as they are, not copied
    for pdu in fragment(5, command, payload, 100):
        req.send_pdata(pdu, now=1.0)
    assert b"".join(req.data_to_send()) == b"".join(parts)
    assert acc.receive_data(b"".join(queued), now=1.0) == list(fragment(5, command, payload, 100))
    assert req.state is acc.state is State.STA6
    # AR-7: after a release indication the acceptor may still send data.
    req.send_release_rq(now=2.0)
    pair.send(req)
    acc.send_pdata_parts(fragment_parts(5, command, None, 100), now=2.0)
    acc.send_release_rp(now=2.0)
    events = pair.send(acc)
    assert events == [*fragment(5, command, None, 100), ReleaseRP()]


def test_send_pdata_parts_is_refused_where_send_pdata_is() -> None:
    requestor = ULConnection(Role.REQUESTOR)
    with pytest.raises(LocalProtocolError):
        requestor.send_pdata_parts(fragment_parts(1, b"ab", None, 0), now=0.0)
    pair = ConnectionPair()
    pair.associate()
    pair.requestor.send_release_rq(now=0.0)  # Sta7: no more P-DATA from this side
    with pytest.raises(LocalProtocolError):
        pair.requestor.send_pdata_parts(fragment_parts(1, b"ab", None, 0), now=0.0)


@pytest.mark.parametrize("chunk", CHUNKS)
def test_association_rejected(chunk: int | None) -> None:
    pair = ConnectionPair(chunk=chunk)
    req, acc = pair.requestor, pair.acceptor
    req.send_associate_rq(RQ, now=0.0)
    req.connection_made(now=0.0)
    acc.connection_made(now=0.0)
    assert pair.send(req) == [RQ]
    pair.now = 5.0
    acc.send_associate_rj(RJ, now=5.0)
    assert acc.state is State.STA13
    assert acc.next_deadline() == 35.0
    assert pair.send(acc) == [RJ]
    assert req.state is State.STA1
    assert req.should_close  # AE-4
    assert pair.close(req) == [TransportClosed()]
    assert acc.state is State.STA1  # AR-5
    assert acc.should_close


@pytest.mark.parametrize("chunk", CHUNKS)
def test_release_collision(chunk: int | None) -> None:
    pair = ConnectionPair(chunk=chunk)
    req, acc = pair.requestor, pair.acceptor
    pair.associate()
    req.send_release_rq(now=1.0)
    acc.send_release_rq(now=1.0)
    assert req.state is State.STA7
    assert acc.state is State.STA7
    # Both A-RELEASE-RQs cross on the wire.
    assert pair.send(req) == [ReleaseRQ()]
    assert pair.send(acc) == [ReleaseRQ()]
    assert req.state is State.STA9  # AR-8, requestor side
    assert acc.state is State.STA10  # AR-8, acceptor side
    # The acceptor must wait for the requestor's A-RELEASE-RP before it answers.
    with pytest.raises(LocalProtocolError):
        acc.send_release_rp(now=1.0)
    req.send_release_rp(now=1.0)  # AR-9
    assert req.state is State.STA11
    assert pair.send(req) == [ReleaseRP()]  # AR-10
    assert acc.state is State.STA12
    acc.send_release_rp(now=1.0)  # AR-4
    assert acc.state is State.STA13
    assert pair.send(acc) == [ReleaseRP()]  # AR-3
    assert req.state is State.STA1
    assert req.should_close
    assert pair.close(req) == [TransportClosed()]  # AR-5
    assert acc.state is State.STA1
    assert acc.should_close


@pytest.mark.parametrize("aborter", ["requestor", "acceptor"])
def test_abort(aborter: str) -> None:
    pair = ConnectionPair()
    pair.associate()
    conn = getattr(pair, aborter)
    peer = pair.peer(conn)
    conn.send_abort(now=3.0)  # AA-1
    assert conn.state is State.STA13
    assert conn.next_deadline() == 33.0
    assert not conn.should_close
    assert pair.send(conn) == [Abort(source=0, reason=0)]  # AA-3
    assert peer.state is State.STA1
    assert peer.should_close
    assert pair.close(peer) == [TransportClosed()]  # AR-5
    assert conn.state is State.STA1
    assert conn.should_close


def test_abort_with_source_and_reason() -> None:
    pair = ConnectionPair()
    pair.associate()
    pair.acceptor.send_abort(source=2, reason=6, now=0.0)
    assert pair.send(pair.acceptor) == [Abort(source=2, reason=6)]


def test_abort_while_connecting_closes_without_sending() -> None:
    conn = ULConnection(Role.REQUESTOR)
    conn.send_associate_rq(RQ, now=0.0)
    conn.send_abort(now=0.0)  # AA-2 in Sta4
    assert conn.state is State.STA1
    assert conn.should_close
    assert conn.data_to_send() == []


def test_abort_while_awaiting_ac() -> None:
    pair = ConnectionPair()
    req = pair.requestor
    req.send_associate_rq(RQ, now=0.0)
    req.connection_made(now=0.0)
    req.data_to_send()
    req.send_abort(now=0.0)
    assert drain(req) == [Abort(source=0, reason=0)]
    assert req.state is State.STA13


def test_connect_failed() -> None:
    conn = ULConnection(Role.REQUESTOR)
    conn.send_associate_rq(RQ, now=0.0)
    assert conn.receive_data(b"", now=1.0) == [TransportClosed()]  # Evt17 in Sta4: AA-4
    assert conn.state is State.STA1
    assert conn.should_close


def test_transport_lost_during_association() -> None:
    pair = ConnectionPair()
    pair.associate()
    assert pair.acceptor.receive_data(b"", now=0.0) == [TransportClosed()]  # AA-4
    assert pair.acceptor.state is State.STA1
    assert pair.acceptor.should_close


def test_transport_closed_before_rq() -> None:
    conn = ULConnection(Role.ACCEPTOR)
    conn.connection_made(now=0.0)
    assert conn.receive_data(b"", now=1.0) == [TransportClosed()]  # AA-5
    assert conn.next_deadline() is None
    assert conn.should_close


def test_artim_expires_in_sta2() -> None:
    conn = ULConnection(Role.ACCEPTOR, artim_timeout=10.0)
    conn.connection_made(now=100.0)
    assert conn.next_deadline() == 110.0
    assert conn.handle_timer(now=109.99) == []
    assert conn.state is State.STA2
    (event,) = conn.handle_timer(now=110.0)  # AA-2
    assert isinstance(event, ProviderAbort)
    assert event.reason == 0
    assert conn.state is State.STA1
    assert conn.should_close
    assert conn.data_to_send() == []
    assert conn.next_deadline() is None
    assert conn.handle_timer(now=1e9) == []


def test_artim_stopped_by_rq() -> None:
    pair = ConnectionPair()
    pair.acceptor.connection_made(now=0.0)
    pair.requestor.send_associate_rq(RQ, now=0.0)
    pair.requestor.connection_made(now=0.0)
    pair.send(pair.requestor)
    assert pair.acceptor.next_deadline() is None  # AE-6
    assert pair.acceptor.handle_timer(now=1e9) == []
    assert pair.acceptor.state is State.STA3


def test_artim_expires_in_sta13_after_release() -> None:
    pair = ConnectionPair(artim_timeout=5.0)
    pair.associate()
    pair.requestor.send_release_rq(now=0.0)
    pair.send(pair.requestor)
    pair.acceptor.send_release_rp(now=1.0)
    pair.acceptor.data_to_send()
    # The requestor never closes the transport.
    assert pair.acceptor.handle_timer(now=5.5) == []
    assert not pair.acceptor.should_close
    assert pair.acceptor.handle_timer(now=6.0) == []  # AA-2: nothing to report
    assert pair.acceptor.state is State.STA1
    assert pair.acceptor.should_close


def test_artim_expires_in_sta13_after_reject() -> None:
    conn = ULConnection(Role.ACCEPTOR, artim_timeout=5.0)
    conn.connection_made(now=0.0)
    conn.receive_data(encode(RQ), now=1.0)
    conn.send_associate_rj(RJ, now=2.0)
    assert conn.next_deadline() == 7.0
    assert conn.handle_timer(now=7.0) == []
    assert conn.should_close


def test_version_reject_is_queued_with_no_event_to_report() -> None:
    """AE-6 with protocol version bit 0 clear: A-ASSOCIATE-RJ (1, 2, 2) queued, no event.

    Nothing is reported to the caller, so only ``has_data_to_send`` tells the I/O layer that
    the RJ must go out now rather than when ARTIM fires (PS3.8 9.3.2, Table 9-21).
    """
    conn = ULConnection(Role.ACCEPTOR, artim_timeout=30.0)
    conn.connection_made(now=0.0)
    assert not conn.has_data_to_send
    rq = encode(RQ)
    bad = rq[:6] + b"\x00\x02" + rq[8:]
    assert conn.receive_data(bad, now=1.0) == []
    assert conn.has_data_to_send
    assert drain(conn) == [AssociateRJ(result=1, source=2, reason=2)]
    assert not conn.has_data_to_send
    assert conn.state is State.STA13
    assert conn.next_deadline() == 31.0


def expect_provider_abort(conn: ULConnection, events: list[ULEvent], reason: int) -> None:
    """The A-ABORT (source 2) is queued and ProviderAbort reported with the same reason."""
    assert drain(conn) == [Abort(source=2, reason=reason)]
    assert [type(e) for e in events] == [ProviderAbort]
    assert isinstance(events[0], ProviderAbort)
    assert events[0].reason == reason
    assert events[0].message
    assert conn.state is State.STA13
    assert conn.next_deadline() is not None
    assert not conn.should_close


def test_pdata_before_rq_is_unexpected() -> None:
    conn = ULConnection(Role.ACCEPTOR)
    conn.connection_made(now=0.0)
    events = conn.receive_data(encode(pdata()), now=1.0)  # AA-1 in Sta2
    expect_provider_abort(conn, events, 2)
    assert conn.next_deadline() == 31.0


def test_rq_in_sta6_is_unexpected() -> None:
    pair = ConnectionPair()
    pair.associate()
    events = pair.acceptor.receive_data(encode(RQ), now=0.0)  # AA-8
    expect_provider_abort(pair.acceptor, events, 2)


def test_unasked_release_rp_is_unexpected() -> None:
    pair = ConnectionPair()
    pair.associate()
    events = pair.requestor.receive_data(encode(ReleaseRP()), now=0.0)  # AA-8
    expect_provider_abort(pair.requestor, events, 2)


def test_provider_abort_reaches_the_peer() -> None:
    pair = ConnectionPair()
    pair.associate()
    pair.acceptor.receive_data(encode(RQ), now=0.0)
    assert pair.send(pair.acceptor) == [Abort(source=2, reason=2)]  # an A-P-ABORT, AA-3
    assert pair.requestor.state is State.STA1


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x09\x00\x00\x00\x00\x00", 1),  # unrecognized PDU type
        (b"\x04\x00\x00\x00\x00\x02\x00\x00", 6),  # P-DATA-TF too short for a PDV
        (b"\x05\x00\x00\x00\x00\x05\x00\x00\x00\x00\x00", 6),  # A-RELEASE-RQ of length 5
        (b"\x04\x00\x00\x01\x00\x01", 6),  # P-DATA-TF over our 65536 maximum, header only
    ],
)
def test_malformed_pdu_aborts_with_the_readers_reason(data: bytes, reason: int) -> None:
    pair = ConnectionPair()
    pair.associate()
    events = pair.acceptor.receive_data(data, now=0.0)  # Evt19: AA-8
    expect_provider_abort(pair.acceptor, events, reason)
    # The stream can no longer be framed; what follows is discarded.
    assert pair.acceptor.receive_data(encode(pdata()), now=0.0) == []
    assert pair.acceptor.data_to_send() == []
    assert pair.acceptor.receive_data(b"", now=0.0) == [TransportClosed()]
    assert pair.acceptor.should_close


def test_malformed_pdu_in_sta2_is_aa_1() -> None:
    conn = ULConnection(Role.ACCEPTOR)
    conn.connection_made(now=0.0)
    events = conn.receive_data(b"\x09\x00\x00\x00\x00\x00", now=0.0)
    expect_provider_abort(conn, events, 1)


def test_good_pdus_before_garbage_are_reported() -> None:
    pair = ConnectionPair()
    pair.associate()
    data = encode(pdata(b"a")) + encode(pdata(b"b")) + b"\x09\x00\x00\x00\x00\x00"
    events = pair.acceptor.receive_data(data, now=0.0)
    assert [type(e) for e in events] == [PDataTF, PDataTF, ProviderAbort]


def test_pdus_after_an_abort_in_the_same_read_are_dropped() -> None:
    pair = ConnectionPair()
    pair.associate()
    data = encode(pdata(b"a")) + encode(Abort(source=0, reason=0)) + encode(pdata(b"b"))
    events = pair.acceptor.receive_data(data, now=0.0)
    assert events == [pdata(b"a"), Abort(source=0, reason=0)]
    assert pair.acceptor.should_close
    assert pair.acceptor.receive_data(encode(pdata()), now=0.0) == []


def test_sta13_ignores_pdus_and_answers_rq_with_abort() -> None:
    pair = ConnectionPair()
    pair.associate()
    conn = pair.acceptor
    conn.send_abort(now=0.0)
    conn.data_to_send()
    for pdu in (pdata(), ReleaseRQ(), ReleaseRP(), AC, RJ):
        assert conn.receive_data(encode(pdu), now=0.0) == []  # AA-6
    assert conn.data_to_send() == []
    assert conn.receive_data(encode(RQ), now=0.0) == []  # AA-7
    assert drain(conn) == [Abort(source=2, reason=2)]
    assert conn.state is State.STA13
    assert conn.receive_data(encode(Abort()), now=0.0) == []  # AA-2
    assert conn.should_close


def test_abort_received_in_sta2_closes_silently() -> None:
    conn = ULConnection(Role.ACCEPTOR)
    conn.connection_made(now=0.0)
    assert conn.receive_data(encode(Abort()), now=0.0) == []  # AA-2
    assert conn.should_close
    assert conn.next_deadline() is None


def test_closed_connection_refuses_requests_and_ignores_data() -> None:
    pair = ConnectionPair()
    pair.associate()
    pair.acceptor.send_abort(now=0.0)
    pair.send(pair.acceptor)
    conn = pair.requestor
    assert conn.should_close
    for request in (
        lambda: conn.send_pdata(pdata(), now=0.0),
        lambda: conn.send_abort(now=0.0),
        lambda: conn.send_release_rq(now=0.0),
        lambda: conn.send_associate_rq(RQ, now=0.0),
        lambda: conn.connection_made(now=0.0),
    ):
        with pytest.raises(LocalProtocolError):
            request()
    assert conn.receive_data(encode(pdata()), now=0.0) == []
    assert conn.receive_data(b"", now=0.0) == []
    assert conn.handle_timer(now=1e9) == []
    assert conn.data_to_send() == []
    assert conn.state is State.STA1


def test_local_misuse() -> None:
    acceptor = ULConnection(Role.ACCEPTOR)
    with pytest.raises(LocalProtocolError):
        acceptor.send_associate_rq(RQ, now=0.0)
    with pytest.raises(LocalProtocolError):
        acceptor.receive_data(b"\x01", now=0.0)  # no transport connection yet
    with pytest.raises(LocalProtocolError):
        acceptor.receive_data(b"", now=0.0)
    requestor = ULConnection(Role.REQUESTOR)
    with pytest.raises(LocalProtocolError):
        requestor.connection_made(now=0.0)  # nothing to connect for
    with pytest.raises(LocalProtocolError):
        requestor.send_pdata(pdata(), now=0.0)
    requestor.send_associate_rq(RQ, now=0.0)
    with pytest.raises(LocalProtocolError):
        requestor.receive_data(b"\x01", now=0.0)  # still connecting
    assert requestor.state is State.STA4
    assert acceptor.state is State.STA1
    assert not acceptor.should_close


def test_unencodable_request_changes_nothing() -> None:
    pair = ConnectionPair()
    pair.associate()
    with pytest.raises(LocalProtocolError):
        pair.requestor.send_pdata(PDataTF(pdvs=[]), now=0.0)
    with pytest.raises(LocalProtocolError):
        pair.requestor.send_abort(source=1000, reason=0, now=0.0)
    assert pair.requestor.state is State.STA6
    assert pair.requestor.data_to_send() == []
    assert pair.requestor.next_deadline() is None


# ---------------------------------------------------------------------------------------
# Hypothesis: arbitrary sequences of requests, received PDUs and bytes, time and EOF.


LOCAL_REQUESTS = [
    "connection_made",
    "associate_rq",
    "associate_ac",
    "associate_rj",
    "pdata",
    "release_rq",
    "release_rp",
    "abort",
]
LIKELY_PDUS: list[PDU] = [
    RQ,
    AC,
    RJ,
    pdata(),
    ReleaseRQ(),
    ReleaseRP(),
    Abort(source=0, reason=0),
]


class ULStateMachine(RuleBasedStateMachine):
    """Drive one ULConnection with anything, in any order, and check its invariants.

    Local requests may raise only ``LocalProtocolError``, and then change nothing;
    ``receive_data`` never raises once the transport is open; nothing is queued once
    ``should_close`` was set; ARTIM runs only in Sta2 and Sta13.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conn = ULConnection(Role.REQUESTOR, artim_timeout=10.0)
        self.now = 0.0
        self.transport_open = False
        self.was_closed = False

    @initialize(role=st.sampled_from(Role))
    def start(self, role: Role) -> None:
        self.conn = ULConnection(role, max_pdu_length=1024, artim_timeout=10.0)

    def local(self, request: Callable[[], None]) -> bool:
        conn = self.conn
        before = (conn.state, conn.next_deadline(), conn.should_close)
        try:
            request()
        except LocalProtocolError:
            assert (conn.state, conn.next_deadline(), conn.should_close) == before
            assert conn.data_to_send() == []
            return False
        return True

    def receive(self, data: bytes) -> None:
        conn = self.conn
        if conn.should_close:
            assert conn.receive_data(data, now=self.now) == []
            return
        if not self.transport_open:
            with pytest.raises(LocalProtocolError):
                conn.receive_data(data, now=self.now)
            return
        events = conn.receive_data(data, now=self.now)
        assert all(isinstance(e, ULEventTypes) for e in events)
        if self.was_closed:
            assert events == []

    def step_forward(self, variant: int) -> None:
        """Take a legal step towards (and through) a release, to reach the deep states."""
        conn, now = self.conn, self.now
        state, requestor = conn.state, conn.role is Role.REQUESTOR
        if conn.should_close:
            self.conn = ULConnection(conn.role, max_pdu_length=1024, artim_timeout=10.0)
            self.transport_open = self.was_closed = False
        elif state is State.STA1 and requestor:
            conn.send_associate_rq(RQ, now=now)
        elif state in (State.STA1, State.STA4):
            conn.connection_made(now=now)
            self.transport_open = True
        elif state is State.STA2:
            self.receive(encode(RQ))
        elif state is State.STA3:
            conn.send_associate_ac(AC, now=now)
        elif state is State.STA5:
            self.receive(encode(AC))
        elif state is State.STA6:
            if variant:
                conn.send_release_rq(now=now)
            else:
                self.receive(encode(ReleaseRQ()))
        elif state is State.STA7:
            self.receive(encode(ReleaseRQ() if variant else ReleaseRP()))
        elif state in (State.STA10, State.STA11):
            self.receive(encode(ReleaseRP()))
        elif state is State.STA13:
            assert conn.receive_data(b"", now=now) == [TransportClosed()]
        else:  # Sta8, Sta9, Sta12: the local user answers the release
            conn.send_release_rp(now=now)

    @rule(variant=st.integers(0, 1))
    def forward(self, variant: int) -> None:
        self.step_forward(variant)

    @rule(variant=st.integers(0, 1))
    def forward_again(self, variant: int) -> None:
        self.step_forward(variant)

    @rule(variant=st.integers(0, 1))
    def forward_once_more(self, variant: int) -> None:
        self.step_forward(variant)

    @rule(data=st.data())
    def local_request(self, data: st.DataObject) -> None:
        """Any local request, legal now or not."""
        conn, now = self.conn, self.now
        kind = data.draw(st.sampled_from(LOCAL_REQUESTS))
        if kind == "connection_made":
            if self.local(lambda: conn.connection_made(now=now)):
                self.transport_open = True
        elif kind == "associate_rq":
            rq = data.draw(associate_rq_pdus())
            self.local(lambda: conn.send_associate_rq(rq, now=now))
        elif kind == "associate_ac":
            ac = data.draw(associate_ac_pdus())
            self.local(lambda: conn.send_associate_ac(ac, now=now))
        elif kind == "associate_rj":
            rj = data.draw(associate_rj_pdus())
            self.local(lambda: conn.send_associate_rj(rj, now=now))
        elif kind == "pdata":
            p = data.draw(p_data_tf_pdus())
            self.local(lambda: conn.send_pdata(p, now=now))
        elif kind == "release_rq":
            self.local(lambda: conn.send_release_rq(now=now))
        elif kind == "release_rp":
            self.local(lambda: conn.send_release_rp(now=now))
        else:
            source = data.draw(st.sampled_from([0, 2]))
            reason = data.draw(st.integers(0, 6))
            self.local(lambda: conn.send_abort(source=source, reason=reason, now=now))

    @rule(data=st.data())
    def receive_something(self, data: st.DataObject) -> None:
        """Any PDU (in pieces or whole), a PDU likely to matter, or raw bytes."""
        kind = data.draw(st.sampled_from(["pdu", "likely", "bytes"]))
        if kind == "bytes":
            self.receive(data.draw(st.binary(min_size=1, max_size=40)))
            return
        if kind == "likely":
            pdu: PDU = data.draw(st.sampled_from(LIKELY_PDUS))
        else:
            pdu = data.draw(pdus())
        wire = encode(pdu)
        chunk = data.draw(st.sampled_from([len(wire), 1, 5, 64]))
        for i in range(0, len(wire), chunk):
            self.receive(wire[i : i + chunk])

    @rule()
    def transport_closed(self) -> None:
        conn = self.conn
        if not (self.transport_open or self.was_closed or conn.state is State.STA4):
            with pytest.raises(LocalProtocolError):
                conn.receive_data(b"", now=self.now)
            return
        events = conn.receive_data(b"", now=self.now)
        assert events == ([] if self.was_closed else [TransportClosed()])
        assert conn.should_close

    @rule(dt=st.floats(0.0, 15.0))
    def time_passes(self, dt: float) -> None:
        self.now += dt
        deadline = self.conn.next_deadline()
        events = self.conn.handle_timer(now=self.now)
        if deadline is None or self.now < deadline:
            assert events == []
        else:
            assert self.conn.should_close

    @invariant()
    def invariants(self) -> None:
        conn = self.conn
        assert isinstance(conn.state, State)
        queued = conn.has_data_to_send
        out = conn.data_to_send()
        # The I/O layer flushes on has_data_to_send, so it must say exactly what is queued.
        assert queued == bool(out)
        assert not conn.has_data_to_send
        if self.was_closed:
            assert out == []
            assert conn.should_close
        if conn.next_deadline() is not None:
            assert conn.state in (State.STA2, State.STA13)
        if conn.should_close:
            assert conn.state is State.STA1
            assert conn.next_deadline() is None
        self.was_closed = conn.should_close


ULStateMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=30, deadline=None
)
test_ul_state_machine = ULStateMachine.TestCase
