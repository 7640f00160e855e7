"""The sans-IO core end to end: two ULConnections back to back, no sockets, no sleeps.

Issue #2 acceptance 5: a requestor and an acceptor negotiate an association (PS3.8 7.1,
with dicomio.presentation's pure negotiation), exchange a C-ECHO and a C-STORE of a 10 MB
data set fragmented at a 16 KB maximum PDU (PS3.8 9.3.5, Annex E), then release; and,
separately, one side aborts.
"""

from __future__ import annotations

import random

from dicomio.dimse import (
    CEchoRQ,
    CEchoRSP,
    CStoreRQ,
    CStoreRSP,
    DataFragment,
    MessageAssembler,
    MessageReceived,
    encode_command,
    fragment,
)
from dicomio.pdu import (
    Abort,
    AssociateAC,
    AssociateRQ,
    MaximumLength,
    PDataTF,
    PresentationContextRQ,
    ReleaseRP,
    ReleaseRQ,
)
from dicomio.presentation import build_context, negotiate_as_acceptor
from dicomio.ul import Role, State, TransportClosed, ULConnection

VERIFICATION = "1.2.840.10008.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
MAX_PDU = 16_384


class Pair:
    """A requestor and an acceptor whose outputs are fed to each other, byte for byte."""

    def __init__(self) -> None:
        self.now = 0.0
        self.requestor = ULConnection(Role.REQUESTOR, max_pdu_length=MAX_PDU)
        self.acceptor = ULConnection(Role.ACCEPTOR, max_pdu_length=MAX_PDU)

    def shuttle(self, source: ULConnection, target: ULConnection) -> list[object]:
        """Move everything ``source`` queued into ``target``, one PDU-sized write at a time."""
        events: list[object] = []
        for part in source.data_to_send():
            data = bytes(part)
            events.extend(target.receive_data(data, now=self.now))
        return events

    def to_acceptor(self) -> list[object]:
        return self.shuttle(self.requestor, self.acceptor)

    def to_requestor(self) -> list[object]:
        return self.shuttle(self.acceptor, self.requestor)


def associate(pair: Pair) -> int:
    """Negotiate Verification and CT Image Storage; return the agreed CT context ID."""
    rq = AssociateRQ(
        called_ae_title="ACCEPTOR",
        calling_ae_title="REQUESTOR",
        presentation_contexts=[
            PresentationContextRQ(
                context_id=1, abstract_syntax=VERIFICATION, transfer_syntaxes=[EXPLICIT_LE]
            ),
            PresentationContextRQ(
                context_id=3, abstract_syntax=CT, transfer_syntaxes=[EXPLICIT_LE]
            ),
        ],
        user_information=[MaximumLength(maximum_length=MAX_PDU)],
    )
    pair.acceptor.connection_made(now=pair.now)
    pair.requestor.send_associate_rq(rq, now=pair.now)
    pair.requestor.connection_made(now=pair.now)
    (received,) = pair.to_acceptor()
    assert received == rq
    results, _, contexts = negotiate_as_acceptor(
        received.presentation_contexts,
        [build_context(VERIFICATION, [EXPLICIT_LE]), build_context(CT, [EXPLICIT_LE])],
    )
    assert all(cx.accepted for cx in contexts)
    ac = AssociateAC(
        called_ae_title="ACCEPTOR",
        calling_ae_title="REQUESTOR",
        presentation_contexts=results,
        user_information=[MaximumLength(maximum_length=MAX_PDU)],
    )
    pair.acceptor.send_associate_ac(ac, now=pair.now)
    (confirmation,) = pair.to_requestor()
    assert confirmation == ac
    assert pair.requestor.state is State.STA6 and pair.acceptor.state is State.STA6
    return 3


def send(
    pair: Pair, conn: ULConnection, context_id: int, command: object, dataset: bytes | None = None
) -> None:
    for pdata in fragment(context_id, encode_command(command), dataset, MAX_PDU):
        conn.send_pdata(pdata, now=pair.now)


def deliver(events: list[object], assembler: MessageAssembler) -> list[object]:
    out: list[object] = []
    for event in events:
        assert isinstance(event, PDataTF)
        out.extend(assembler.receive(event))
    return out


def test_echo_and_10mb_store_then_release() -> None:
    pair = Pair()
    ct = associate(pair)
    at_acceptor = MessageAssembler()
    at_requestor = MessageAssembler()

    # C-ECHO (PS3.7 9.1.5)
    send(pair, pair.requestor, 1, CEchoRQ(message_id=1))
    (echo,) = deliver(pair.to_acceptor(), at_acceptor)
    assert isinstance(echo, MessageReceived) and echo.command == CEchoRQ(message_id=1)
    send(
        pair,
        pair.acceptor,
        1,
        CEchoRSP(message_id_being_responded_to=1, status=0, affected_sop_class_uid=VERIFICATION),
    )
    (echo_rsp,) = deliver(pair.to_requestor(), at_requestor)
    assert echo_rsp.command.status == 0

    # C-STORE of 10 MB at a 16 KB maximum PDU (PS3.7 9.1.1)
    dataset = random.Random(2).randbytes(10 * 1024 * 1024)
    store = CStoreRQ(
        message_id=2, affected_sop_class_uid=CT, affected_sop_instance_uid="1.2.3.4", priority=0
    )
    send(pair, pair.requestor, ct, store, dataset)
    parts = pair.requestor.data_to_send()
    # Every P-DATA-TF respects the peer's maximum (its 6-byte PDU header aside).
    assert all(len(p) <= MAX_PDU for p in parts if len(p) > 12)
    events: list[object] = []
    for part in parts:
        events.extend(pair.acceptor.receive_data(bytes(part), now=pair.now))
    (stored,) = deliver(events, at_acceptor)
    assert stored.command == store and stored.dataset == dataset
    send(
        pair,
        pair.acceptor,
        ct,
        CStoreRSP(
            message_id_being_responded_to=2,
            status=0,
            affected_sop_class_uid=CT,
            affected_sop_instance_uid="1.2.3.4",
        ),
    )
    (store_rsp,) = deliver(pair.to_requestor(), at_requestor)
    assert store_rsp.command.status == 0

    # A-RELEASE (PS3.8 7.2)
    pair.requestor.send_release_rq(now=pair.now)
    assert pair.to_acceptor() == [ReleaseRQ()]
    pair.acceptor.send_release_rp(now=pair.now)
    assert pair.to_requestor() == [ReleaseRP()]
    assert pair.requestor.should_close and pair.requestor.state is State.STA1
    assert pair.acceptor.receive_data(b"", now=pair.now) == [TransportClosed()]
    assert pair.acceptor.state is State.STA1


def test_streamed_store_in_fragments() -> None:
    """The acceptor can take the 10 MB data set as fragments, never holding it whole."""
    pair = Pair()
    ct = associate(pair)
    assembler = MessageAssembler(stream_if=lambda command: isinstance(command, CStoreRQ))
    dataset = random.Random(3).randbytes(10 * 1024 * 1024)
    send(
        pair,
        pair.requestor,
        ct,
        CStoreRQ(
            message_id=1,
            affected_sop_class_uid=CT,
            affected_sop_instance_uid="1.2.3.5",
            priority=0,
        ),
        dataset,
    )
    received = bytearray()
    largest = 0
    for part in pair.requestor.data_to_send():
        for event in pair.acceptor.receive_data(bytes(part), now=pair.now):
            for item in assembler.receive(event):  # type: ignore[arg-type]
                if isinstance(item, DataFragment):
                    largest = max(largest, len(item.data))
                    received += item.data
    assert received == dataset
    assert largest <= MAX_PDU - 6


def test_abort_from_either_side() -> None:
    for aborting in ("requestor", "acceptor"):
        pair = Pair()
        associate(pair)
        if aborting == "requestor":
            pair.requestor.send_abort(source=0, reason=0, now=pair.now)
            assert pair.to_acceptor() == [Abort(source=0, reason=0)]
            assert pair.acceptor.state is State.STA1 and pair.acceptor.should_close
        else:
            pair.acceptor.send_abort(source=0, reason=0, now=pair.now)
            assert pair.to_requestor() == [Abort(source=0, reason=0)]
            assert pair.requestor.state is State.STA1 and pair.requestor.should_close
