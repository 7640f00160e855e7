"""Fuzz ``ULConnection.receive_data`` with random and mutated bytes (h11's fuzz harness).

One invariant: whatever the peer sends, fed whole or in small chunks, in any state where
bytes can arrive, ``receive_data`` returns events and never raises. A peer's error becomes a
``ProviderAbort`` with the matching A-ABORT (source 2) already queued.

Seeded, so a failure names a reproducible case. ``DICOMIO_FUZZ_N`` scales the number of
inputs (default 100,000, which runs in a few seconds) for an opt-in longer run.
"""

from __future__ import annotations

import os
import random
import struct
from collections.abc import Callable

import pytest

from dicomio.pdu.codec import encode
from dicomio.pdu.items import (
    AsynchronousOperationsWindow,
    ImplementationClassUID,
    ImplementationVersionName,
    MaximumLength,
    PresentationContextAC,
    PresentationContextRQ,
    PresentationDataValue,
    RoleSelection,
    SOPClassCommonExtendedNegotiation,
    SOPClassExtendedNegotiation,
    UnknownSubItem,
    UserIdentityAC,
    UserIdentityRQ,
)
from dicomio.pdu.pdus import (
    Abort,
    AssociateAC,
    AssociateRJ,
    AssociateRQ,
    PDataTF,
    ReleaseRP,
    ReleaseRQ,
)
from dicomio.ul import (
    ProviderAbort,
    Role,
    State,
    TransportClosed,
    ULConnection,
)

N = int(os.environ.get("DICOMIO_FUZZ_N", "100000"))
SEED = 0xD1C0

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"

SIMPLE_RQ = AssociateRQ(called_ae_title="ACCEPTOR", calling_ae_title="REQUESTOR")
SIMPLE_AC = AssociateAC(called_ae_title="ACCEPTOR", calling_ae_title="REQUESTOR")

RICH_RQ = AssociateRQ(
    called_ae_title="ANY-SCP",
    calling_ae_title="FUZZ",
    presentation_contexts=[
        PresentationContextRQ(context_id=1, abstract_syntax=CT, transfer_syntaxes=[EXPLICIT]),
        PresentationContextRQ(
            context_id=3,
            abstract_syntax="1.2.840.10008.1.1",
            transfer_syntaxes=[IMPLICIT, EXPLICIT],
        ),
    ],
    user_information=[
        MaximumLength(maximum_length=16384),
        ImplementationClassUID(implementation_class_uid="1.2.3.4"),
        AsynchronousOperationsWindow(
            maximum_number_operations_invoked=2, maximum_number_operations_performed=3
        ),
        RoleSelection(sop_class_uid=CT, scu_role=True, scp_role=False),
        ImplementationVersionName(implementation_version_name="DICOMIO_FUZZ"),
        SOPClassExtendedNegotiation(
            sop_class_uid=CT, service_class_application_information=b"\x01\x00"
        ),
        SOPClassCommonExtendedNegotiation(
            sop_class_uid=CT,
            service_class_uid="1.2.840.10008.4.2",
            related_general_sop_class_uids=[],
        ),
        UserIdentityRQ(
            user_identity_type=2,
            positive_response_requested=True,
            primary_field=b"user",
            secondary_field=b"pass",
        ),
        UnknownSubItem(item_type=0x77, data=b"opaque"),
    ],
)
RICH_AC = AssociateAC(
    called_ae_title="ANY-SCP",
    calling_ae_title="FUZZ",
    presentation_contexts=[
        PresentationContextAC(context_id=1, result=0, transfer_syntax=EXPLICIT),
        PresentationContextAC(context_id=3, result=3),
    ],
    user_information=[
        MaximumLength(maximum_length=0),
        ImplementationClassUID(implementation_class_uid="1.2.3.4.5"),
        UserIdentityAC(server_response=b"token"),
    ],
)


def _pdata(*payloads: bytes) -> PDataTF:
    return PDataTF(
        pdvs=[
            PresentationDataValue(context_id=2 * i + 1, is_command=i == 0, is_last=True, data=p)
            for i, p in enumerate(payloads)
        ]
    )


CORPUS: list[bytes] = [
    encode(pdu)
    for pdu in (
        SIMPLE_RQ,
        RICH_RQ,
        SIMPLE_AC,
        RICH_AC,
        AssociateRJ(result=1, source=1, reason=7),
        _pdata(b"\x00" * 12),
        _pdata(b"command", b"dataset" * 10, b""),
        ReleaseRQ(),
        ReleaseRP(),
        Abort(source=0, reason=0),
        Abort(source=2, reason=6),
    )
]


def _sta2_acceptor() -> ULConnection:
    conn = ULConnection(Role.ACCEPTOR, max_pdu_length=4096)
    conn.connection_made(now=0.0)
    return conn


def _sta5_requestor() -> ULConnection:
    conn = ULConnection(Role.REQUESTOR, max_pdu_length=4096)
    conn.send_associate_rq(SIMPLE_RQ, now=0.0)
    conn.connection_made(now=0.0)
    conn.data_to_send()
    return conn


_SIMPLE_RQ_BYTES = encode(SIMPLE_RQ)
_SIMPLE_AC_BYTES = encode(SIMPLE_AC)


def _sta6_requestor() -> ULConnection:
    conn = _sta5_requestor()
    conn.receive_data(_SIMPLE_AC_BYTES, now=0.0)
    assert conn.state is State.STA6
    return conn


def _sta6_acceptor() -> ULConnection:
    conn = _sta2_acceptor()
    conn.receive_data(_SIMPLE_RQ_BYTES, now=0.0)
    conn.send_associate_ac(SIMPLE_AC, now=0.0)
    conn.data_to_send()
    assert conn.state is State.STA6
    return conn


SETUPS: dict[str, Callable[[], ULConnection]] = {
    "sta2-acceptor": _sta2_acceptor,
    "sta5-requestor": _sta5_requestor,
    "sta6-requestor": _sta6_requestor,
    "sta6-acceptor": _sta6_acceptor,
}

# Values that sit on the edges of length checks.
_EDGE_LENGTHS = [
    0,
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    67,
    68,
    69,
    0xFF,
    0x100,
    0x7FFF,
    0xFFFF,
    0x10000,
    0xFFFFFFFF,
]


def mutate(rng: random.Random, data: bytes) -> bytes:
    """Apply one to four random edits to ``data``."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(8)
        if op == 0 and buf:  # flip a bit
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:  # replace a byte
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif op == 2 and buf:  # truncate
            del buf[rng.randrange(len(buf)) :]
        elif op == 3:  # insert random bytes
            i = rng.randint(0, len(buf))
            buf[i:i] = rng.randbytes(rng.randint(1, 8))
        elif op == 4 and buf:  # delete a slice
            i = rng.randrange(len(buf))
            del buf[i : i + rng.randint(1, 8)]
        elif op == 5 and len(buf) >= 6:  # rewrite the PDU length field
            struct.pack_into(">L", buf, 2, rng.choice(_EDGE_LENGTHS) % 2**32)
        elif op == 6 and len(buf) >= 4:  # rewrite some 2-byte item length
            i = rng.randrange(len(buf) - 1)
            struct.pack_into(">H", buf, i, rng.choice(_EDGE_LENGTHS) & 0xFFFF)
        elif op == 7 and buf:  # change the PDU type
            buf[0] = rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 8, 0xFF])
    return bytes(buf)


def make_input(rng: random.Random) -> bytes:
    kind = rng.randrange(10)
    if kind == 0:  # pure noise
        return rng.randbytes(rng.randint(0, 48))
    if kind == 1:  # a header that looks right, then noise
        header = struct.pack(">BxL", rng.randint(1, 7), rng.choice(_EDGE_LENGTHS))
        return header + rng.randbytes(rng.randint(0, 32))
    if kind == 2:  # several valid PDUs back to back
        return b"".join(rng.choice(CORPUS) for _ in range(rng.randint(2, 4)))
    if kind == 3:  # valid PDUs with a mutated one among them
        parts = [rng.choice(CORPUS) for _ in range(rng.randint(1, 3))]
        i = rng.randrange(len(parts))
        parts[i] = mutate(rng, parts[i])
        return b"".join(parts)
    return mutate(rng, rng.choice(CORPUS))


def chunks(rng: random.Random, data: bytes) -> list[bytes]:
    how = rng.randrange(4)
    if how == 0 or not data:
        return [data] if data else []
    if how == 1:
        return [data[i : i + 1] for i in range(len(data))]
    pieces = []
    i = 0
    while i < len(data):
        n = rng.randint(1, 7)
        pieces.append(data[i : i + n])
        i += n
    return pieces


ALLOWED = (
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


def run_one(rng: random.Random, setup: Callable[[], ULConnection], data: bytes) -> None:
    conn = setup()
    eof = rng.random() < 0.2
    events = []
    sent = []
    for piece in chunks(rng, data):
        events += conn.receive_data(piece, now=1.0)
        sent += conn.data_to_send()
        assert isinstance(conn.state, State)
    if eof:
        events += conn.receive_data(b"", now=2.0)
        assert conn.should_close
    for event in events:
        assert isinstance(event, ALLOWED)
    aborts = [e for e in events if isinstance(e, ProviderAbort)]
    if aborts:
        # The A-ABORT answering the first error was queued (before ProviderAbort was
        # returned) with the reason ProviderAbort reports.
        wire = b"".join(sent)
        expected = encode(Abort(source=2, reason=aborts[0].reason))
        assert expected in wire
        assert conn.state in (State.STA13, State.STA1)
    if conn.should_close:
        assert conn.data_to_send() == []
        assert conn.next_deadline() is None


@pytest.mark.parametrize("setup_name", list(SETUPS))
def test_receive_data_never_raises(setup_name: str) -> None:
    setup = SETUPS[setup_name]
    rng = random.Random(f"{SEED}-{setup_name}")
    for index in range(N // len(SETUPS)):
        data = make_input(rng)
        # A fresh generator per case keeps every failure reproducible on its own.
        case_rng = random.Random(f"{SEED}-{setup_name}-{index}")
        try:
            run_one(case_rng, setup, data)
        except Exception as exc:
            raise AssertionError(f"case {index} ({setup_name}), input {data!r}") from exc


def test_corpus_is_valid() -> None:
    """The mutations start from PDUs that a connection in the right state accepts."""
    conn = _sta2_acceptor()
    assert [type(e) for e in conn.receive_data(encode(RICH_RQ), now=0.0)] == [AssociateRQ]
    conn = _sta5_requestor()
    assert [type(e) for e in conn.receive_data(encode(RICH_AC), now=0.0)] == [AssociateAC]
