"""The PDU codec against the byte layouts of PS3.8 9.3 and PS3.7 D.3.3.

Golden byte strings are written by hand from the standard's tables, one per PDU type, with
every user information sub-item. Each malformation gives RemoteProtocolError carrying the
A-ABORT reason of PS3.8 Table 9-26.
"""

from __future__ import annotations

import struct
import warnings

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import config
from pydicom.config import IGNORE
from pydicom.uid import UID

from dicomio.errors import AbortReason, LocalProtocolError, RemoteProtocolError
from dicomio.pdu import (
    PDU,
    Abort,
    AssociateAC,
    AssociateRJ,
    AssociateRQ,
    AsynchronousOperationsWindow,
    ImplementationClassUID,
    ImplementationVersionName,
    MaximumLength,
    PDataTF,
    PresentationContextAC,
    PresentationContextRQ,
    PresentationDataValue,
    ReleaseRP,
    ReleaseRQ,
    RoleSelection,
    SOPClassCommonExtendedNegotiation,
    SOPClassExtendedNegotiation,
    UnknownSubItem,
    UserIdentityAC,
    UserIdentityRQ,
    codec,
    decode,
    encode,
    encode_parts,
    single_pdv_header,
)
from dicomio.pdu.items import to_uid
from tests.strategies import associate_ac_pdus, associate_rq_pdus, pdus

INVALID = AbortReason.INVALID_PDU_PARAMETER_VALUE
UNRECOGNIZED_PARAMETER = AbortReason.UNRECOGNIZED_PDU_PARAMETER
UNEXPECTED_PARAMETER = AbortReason.UNEXPECTED_PDU_PARAMETER

VERIFICATION = b"1.2.840.10008.1.1"  # 17 bytes: odd, and written without padding
IMPLICIT_VR = b"1.2.840.10008.1.2"  # 17
EXPLICIT_VR = b"1.2.840.10008.1.2.1"  # 19
STORAGE_SERVICE = b"1.2.840.10008.4.2"  # 17
APPLICATION_CONTEXT = b"1.2.840.10008.3.1.1.1"  # 21


def h(*parts: str | bytes) -> bytes:
    """Join hex strings (spaces allowed) and raw byte strings."""
    return b"".join(bytes.fromhex(p) if isinstance(p, str) else p for p in parts)


# ---------------------------------------------------------------------------------------
# Golden vectors


# PS3.8 Table 9-11 (A-ASSOCIATE-RQ), 9-12, 9-13, 9-14, 9-15, 9-16; D.1; PS3.7 D.3.3.
RQ_BYTES = h(
    "01 00 000000AC",  # PDU type, reserved, length 172
    "0001 0000",  # protocol version 1, reserved
    b"ANY-SCP         ",  # called AE title, space padded to 16
    b"ECHOSCU         ",  # calling AE title
    "00" * 32,  # reserved
    "10 00 0015",
    APPLICATION_CONTEXT,  # application context item, 21 bytes
    "20 00 002E 01 00 00 00",  # presentation context 1, length 46
    "30 00 0011",
    VERIFICATION,  # abstract syntax
    "40 00 0011",
    IMPLICIT_VR,  # transfer syntax
    "50 00 0019",  # user information, length 25
    "51 00 0004 00004000",  # maximum length 16384
    "52 00 0005",
    b"1.2.3",  # implementation class UID
    "55 00 0004",
    b"TEST",  # implementation version name
)
RQ_VALUE = AssociateRQ(
    called_ae_title="ANY-SCP",
    calling_ae_title="ECHOSCU",
    presentation_contexts=[
        PresentationContextRQ(
            context_id=1, abstract_syntax=VERIFICATION, transfer_syntaxes=[IMPLICIT_VR]
        )
    ],
    user_information=[
        MaximumLength(maximum_length=16384),
        ImplementationClassUID(implementation_class_uid="1.2.3"),
        ImplementationVersionName(implementation_version_name="TEST"),
    ],
)

# The remaining sub-items of PS3.7 D.3.3 in one request, plus an unknown sub-item.
RQ_SUB_ITEMS_BYTES = h(
    "01 00 000000FC",  # length 68 + 25 + 4 + 155 = 252
    "0001 0000",
    b"SCP             ",
    b"SCU             ",
    "00" * 32,
    "10 00 0015",
    APPLICATION_CONTEXT,
    "50 00 009B",  # user information, length 155
    "53 00 0004 0005 0003",  # asynchronous operations window: invoked 5, performed 3
    "54 00 0015 0011",
    VERIFICATION,
    "01 00",  # role selection: SCU yes, SCP no
    "56 00 0015 0011",
    VERIFICATION,
    "01 02",  # SOP class extended negotiation with 2 bytes of information
    "57 00 003B 0011",
    VERIFICATION,
    "0011",
    STORAGE_SERVICE,
    "0013 0011",
    VERIFICATION,  # common extended negotiation: one related general SOP class
    "58 00 000E 02 01 0004",
    b"user",
    "0004",
    b"pass",  # user identity: type 2, response requested
    "59 00 0006 0004",
    b"resp",  # user identity server response
    "7F 00 0002",
    b"hi",  # unknown sub-item type 7FH
)
RQ_SUB_ITEMS_VALUE = AssociateRQ(
    called_ae_title="SCP",
    calling_ae_title="SCU",
    user_information=[
        AsynchronousOperationsWindow(
            maximum_number_operations_invoked=5, maximum_number_operations_performed=3
        ),
        RoleSelection(sop_class_uid=VERIFICATION, scu_role=True, scp_role=False),
        SOPClassExtendedNegotiation(
            sop_class_uid=VERIFICATION, service_class_application_information=b"\x01\x02"
        ),
        SOPClassCommonExtendedNegotiation(
            sop_class_uid=VERIFICATION,
            service_class_uid=STORAGE_SERVICE,
            related_general_sop_class_uids=[VERIFICATION],
        ),
        UserIdentityRQ(
            user_identity_type=2,
            positive_response_requested=True,
            primary_field=b"user",
            secondary_field=b"pass",
        ),
        UserIdentityAC(server_response=b"resp"),
        UnknownSubItem(item_type=0x7F, data=b"hi"),
    ],
)

# PS3.8 Tables 9-17, 9-18 (A-ASSOCIATE-AC and its presentation context item).
AC_BYTES = h(
    "02 00 0000009E",  # length 158
    "0001 0000",
    b"ANY-SCP         ",
    b"ECHOSCU         ",
    "00" * 32,
    "10 00 0015",
    APPLICATION_CONTEXT,
    "21 00 001B 01 00 00 00",  # context 1 accepted, length 27
    "40 00 0013",
    EXPLICIT_VR,
    "21 00 0008 03 00 03 00",  # context 3: abstract syntax not supported, length 8
    "40 00 0000",  # its Transfer Syntax sub-item: present, empty (value not significant)
    "50 00 0012",
    "51 00 0004 0000FFFE",
    "59 00 0006 0004",
    b"abcd",
)
AC_VALUE = AssociateAC(
    called_ae_title="ANY-SCP",
    calling_ae_title="ECHOSCU",
    presentation_contexts=[
        PresentationContextAC(context_id=1, result=0, transfer_syntax=EXPLICIT_VR),
        PresentationContextAC(context_id=3, result=3),
    ],
    user_information=[
        MaximumLength(maximum_length=0xFFFE),
        UserIdentityAC(server_response=b"abcd"),
    ],
)

GOLDEN: list[tuple[str, bytes, PDU]] = [
    ("A-ASSOCIATE-RQ", RQ_BYTES, RQ_VALUE),
    ("A-ASSOCIATE-RQ sub-items", RQ_SUB_ITEMS_BYTES, RQ_SUB_ITEMS_VALUE),
    ("A-ASSOCIATE-AC", AC_BYTES, AC_VALUE),
    # PS3.8 Table 9-21: reserved, result 1, source 1, reason 7 (called AE not recognized).
    ("A-ASSOCIATE-RJ", h("03 00 00000004 00 01 01 07"), AssociateRJ(result=1, source=1, reason=7)),
    # PS3.8 Table 9-22, 9-23 and Annex E.2: two PDVs, a last command fragment and a data one.
    (
        "P-DATA-TF",
        h("04 00 00000011", "00000006 01 03", b"abcd", "00000003 03 00", b"x"),
        PDataTF(
            pdvs=[
                PresentationDataValue(context_id=1, is_command=True, is_last=True, data=b"abcd"),
                PresentationDataValue(context_id=3, is_command=False, is_last=False, data=b"x"),
            ]
        ),
    ),
    ("A-RELEASE-RQ", h("05 00 00000004 00000000"), ReleaseRQ()),
    ("A-RELEASE-RP", h("06 00 00000004 00000000"), ReleaseRP()),
    # PS3.8 Table 9-26: source 2 (provider), reason 6 (invalid PDU parameter value).
    ("A-ABORT", h("07 00 00000004 0000 02 06"), Abort(source=2, reason=6)),
]


@pytest.mark.parametrize(("name", "wire", "value"), GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden_encode(name: str, wire: bytes, value: PDU) -> None:
    assert encode(value) == wire
    assert b"".join(encode_parts(value)) == wire


@pytest.mark.parametrize(("name", "wire", "value"), GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden_decode(name: str, wire: bytes, value: PDU) -> None:
    assert decode(wire) == value
    assert decode(memoryview(wire)) == value
    assert decode(bytearray(wire)) == value  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------
# Round trips


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pdus())
def test_round_trip(pdu: PDU) -> None:
    wire = encode(pdu)
    assert decode(wire) == pdu
    assert b"".join(encode_parts(pdu)) == wire
    assert encode(decode(wire)) == wire


def test_unknown_sub_items_preserved_in_order() -> None:
    decoded = decode(RQ_SUB_ITEMS_BYTES)
    assert isinstance(decoded, AssociateRQ)
    assert decoded.user_information[-1] == UnknownSubItem(item_type=0x7F, data=b"hi")
    assert encode(decoded) == RQ_SUB_ITEMS_BYTES


def test_pdv_data_are_views_not_copies() -> None:
    wire = GOLDEN[4][1]
    pdu = decode(wire)
    assert isinstance(pdu, PDataTF)
    for pdv in pdu.pdvs:
        assert isinstance(pdv.data, memoryview)
        assert pdv.data.obj is wire


def test_single_pdv_header_is_what_encode_puts_before_the_fragment() -> None:
    for data, is_command, is_last in [
        (b"abcd", True, True),
        (b"", False, True),
        (b"xy", False, False),
    ]:
        pdu = PDataTF(
            pdvs=[
                PresentationDataValue(
                    context_id=255, is_command=is_command, is_last=is_last, data=data
                )
            ]
        )
        header = single_pdv_header(255, len(data), is_command=is_command, is_last=is_last)
        assert header + data == encode(pdu)
    assert single_pdv_header(3, 2, is_command=False, is_last=True) == h(
        "04 00 00000008 00000004 03 02"
    )
    for context_id, size in [(0, 2), (4, 2), (257, 2), (1, -1), (1, 2**32 - 6)]:
        with pytest.raises(LocalProtocolError):
            single_pdv_header(context_id, size, is_command=False, is_last=True)


def test_pdata_values_are_immutable_values_not_tuples() -> None:
    pdv = PresentationDataValue(context_id=1, is_command=True, is_last=False, data=b"ab")
    pdu = PDataTF(pdvs=[pdv])  # any iterable, stored as a tuple
    assert pdu.pdvs == (pdv,)
    assert pdu == PDataTF(pdvs=(pdv,))
    assert hash(pdu) == hash(PDataTF(pdvs=(pdv,)))
    assert pdv == PresentationDataValue(
        context_id=1, is_command=True, is_last=False, data=memoryview(b"ab")
    )
    # Equal only to their own kind, in either order, as attrs values are.
    assert pdv != (1, True, False, b"ab")
    assert (1, True, False, b"ab") != pdv  # noqa: SIM300
    assert not pdv == (1, True, False, b"ab")  # noqa: SIM201
    assert pdu != ((pdv,),)
    assert pdv != PresentationDataValue(context_id=3, is_command=True, is_last=False, data=b"ab")
    assert repr(pdu) == (
        "PDataTF(pdvs=(PresentationDataValue(context_id=1, is_command=True, is_last=False, "
        "data=b'ab'),))"
    )
    with pytest.raises(AttributeError):
        pdv.context_id = 3  # type: ignore[misc]
    with pytest.raises(AttributeError):
        pdu.pdvs = ()  # type: ignore[misc]


def test_encode_parts_does_not_copy_pdv_data() -> None:
    big = memoryview(bytes(100_000))
    small = b"abc"
    pdu = PDataTF(
        pdvs=[
            PresentationDataValue(context_id=1, is_command=False, is_last=False, data=big),
            PresentationDataValue(context_id=1, is_command=False, is_last=True, data=small),
        ]
    )
    parts = encode_parts(pdu)
    assert parts[1] is big
    assert parts[3] is small
    assert all(len(part) <= 12 for index, part in enumerate(parts) if index % 2 == 0)
    assert b"".join(parts) == encode(pdu)
    assert struct.unpack_from(">L", parts[0], 2)[0] == 100_000 + 3 + 12


def test_reserved_fields_are_not_tested() -> None:
    # PS3.8 9.3.1: reserved fields are sent as zero but not tested when received.
    noisy = bytearray(RQ_BYTES)
    noisy[1] = 0xFF  # PDU header reserved byte
    noisy[8:10] = b"\xff\xff"  # after the protocol version
    noisy[42:74] = b"\xee" * 32
    noisy[74 + 1] = 0xAA  # application context item reserved byte
    noisy[74 + 25 + 5 : 74 + 25 + 8] = b"\x01\x02\x03"  # context item reserved bytes
    assert decode(bytes(noisy)) == RQ_VALUE
    assert decode(h("03 FF 00000004 FF 01 01 07")) == AssociateRJ(result=1, source=1, reason=7)
    assert decode(h("05 FF 00000004 FFFFFFFF")) == ReleaseRQ()
    assert decode(h("07 00 00000004 ABCD 00 00")) == Abort(source=0, reason=0)
    # Annex E.2: bits 2-7 of the message control header are reserved.
    pdu = decode(h("04 00 00000007 00000003 01 FD", b"z"))
    assert pdu == PDataTF(
        pdvs=[PresentationDataValue(context_id=1, is_command=True, is_last=False, data=b"z")]
    )


def test_uid_padding_tolerated() -> None:
    # Some implementations pad UIDs to even length with NUL or space; PS3.5 9.1 exempts
    # network negotiation from padding, but a receiver loses nothing by tolerating it.
    padded = context_rq(1, h("30 00 0012", VERIFICATION, "00"), h("40 00 0012", IMPLICIT_VR, "20"))
    pdu = decode(rq(APP_ITEM, padded))
    assert isinstance(pdu, AssociateRQ)
    assert pdu.presentation_contexts == RQ_VALUE.presentation_contexts


def test_garbage_uids_and_titles_do_not_raise_or_warn() -> None:
    # filterwarnings=error: a pydicom validation warning would fail this test.
    garbage = b"\xff\x00not a uid\x01 \n"
    wire = bytearray(
        rq(
            APP_ITEM,
            context_rq(1, h("30 00", struct.pack(">H", len(garbage)), garbage), TRANSFER),
            user_info(h("52 00", struct.pack(">H", len(garbage)), garbage)),
        )
    )
    wire[10:13] = b"\xff\xfe\x00"  # non-ASCII called AE title
    decoded = decode(bytes(wire))
    assert isinstance(decoded, AssociateRQ)
    assert isinstance(decoded.user_information[0], ImplementationClassUID)
    assert decoded.called_ae_title == "\ufffd\ufffd\x00-SCP"


# ---------------------------------------------------------------------------------------
# Malformations


def with_length(pdu_type: int, body: bytes) -> bytes:
    return struct.pack(">BxL", pdu_type, len(body)) + body


RQ_FIXED = RQ_BYTES[6:74]
APP_ITEM = h("10 00 0015", APPLICATION_CONTEXT)
UI_ITEM = h("50 00 0000")


def rq(*items: bytes) -> bytes:
    return with_length(0x01, RQ_FIXED + b"".join(items))


def ac(*items: bytes) -> bytes:
    return with_length(0x02, RQ_FIXED + b"".join(items))


def context_rq(context_id: int, *subs: bytes) -> bytes:
    body = bytes([context_id, 0, 0, 0]) + b"".join(subs)
    return struct.pack(">BxH", 0x20, len(body)) + body


ABSTRACT = h("30 00 0011", VERIFICATION)
TRANSFER = h("40 00 0011", IMPLICIT_VR)


def user_info(*subs: bytes) -> bytes:
    body = b"".join(subs)
    return struct.pack(">BxH", 0x50, len(body)) + body


MALFORMED: list[tuple[str, bytes, AbortReason]] = [
    # PDU header and fixed lengths
    ("empty", b"", INVALID),
    ("short header", h("01 00 0000"), INVALID),
    ("unknown PDU type 08", h("08 00 00000004 00000000"), AbortReason.UNRECOGNIZED_PDU),
    ("unknown PDU type 00", h("00 00 00000000"), AbortReason.UNRECOGNIZED_PDU),
    ("unknown PDU type FF", h("FF 00 00000004 00000000"), AbortReason.UNRECOGNIZED_PDU),
    ("length field too long", h("05 00 00000004 000000"), INVALID),
    ("trailing bytes", h("05 00 00000004 0000000000"), INVALID),
    ("release RQ length 5", h("05 00 00000005 0000000000"), INVALID),
    ("release RP length 3", h("06 00 00000003 000000"), INVALID),
    ("reject length 5", h("03 00 00000005 0001010700"), INVALID),
    ("abort length 6", h("07 00 00000006 000000000000"), INVALID),
    ("RQ shorter than fixed part", with_length(0x01, RQ_FIXED[:67]), INVALID),
    ("AC shorter than fixed part", with_length(0x02, RQ_FIXED[:10]), INVALID),
    ("P-DATA-TF empty", h("04 00 00000000"), INVALID),
    # items of the variable part
    ("item overruns PDU", rq(APP_ITEM, h("50 00 0010 51000004")), INVALID),
    ("truncated item header", rq(APP_ITEM, UI_ITEM, h("50 00")), INVALID),
    ("unknown item type", rq(APP_ITEM, UI_ITEM, h("60 00 0000")), UNRECOGNIZED_PARAMETER),
    ("AC context item in RQ", rq(APP_ITEM, h("21 00 0004 01000000")), UNEXPECTED_PARAMETER),
    (
        "RQ context item in AC",
        ac(APP_ITEM, context_rq(1, ABSTRACT, TRANSFER)),
        UNEXPECTED_PARAMETER,
    ),
    ("sub-item type at PDU level", rq(APP_ITEM, h("51 00 0004 00004000")), UNRECOGNIZED_PARAMETER),
    ("no application context", rq(UI_ITEM), INVALID),
    ("two application contexts", rq(APP_ITEM, APP_ITEM, UI_ITEM), INVALID),
    ("two user information items", rq(APP_ITEM, UI_ITEM, UI_ITEM), INVALID),
    # presentation context items
    ("even context ID", rq(APP_ITEM, context_rq(2, ABSTRACT, TRANSFER)), INVALID),
    ("zero context ID", rq(APP_ITEM, context_rq(0, ABSTRACT, TRANSFER)), INVALID),
    ("even AC context ID", ac(APP_ITEM, h("21 00 0004 04 00 00 00")), INVALID),
    ("context item too short", rq(APP_ITEM, h("20 00 0002 0100")), INVALID),
    ("no abstract syntax", rq(APP_ITEM, context_rq(1, TRANSFER)), INVALID),
    ("two abstract syntaxes", rq(APP_ITEM, context_rq(1, ABSTRACT, ABSTRACT, TRANSFER)), INVALID),
    (
        "sub-item overruns context",
        rq(APP_ITEM, context_rq(1, ABSTRACT, h("40 00 0020"), IMPLICIT_VR)),
        INVALID,
    ),
    (
        "truncated sub-item header",
        rq(APP_ITEM, context_rq(1, ABSTRACT, TRANSFER, h("40 00"))),
        INVALID,
    ),
    (
        "unknown sub-item in context",
        rq(APP_ITEM, context_rq(1, ABSTRACT, h("33 00 0000"))),
        UNRECOGNIZED_PARAMETER,
    ),
    (
        "AC context with abstract syntax",
        ac(APP_ITEM, h("21 00 0019 01 00 00 00 30 00 0011", VERIFICATION)),
        UNEXPECTED_PARAMETER,
    ),
    (
        "AC context with two transfer syntaxes",
        ac(APP_ITEM, h("21 00 002A 01 00 00 00"), TRANSFER, TRANSFER),
        INVALID,
    ),
    ("AC context sub-item overrun", ac(APP_ITEM, h("21 00 0008 01 00 00 00 40 00 0011")), INVALID),
    # user information sub-items
    (
        "sub-item overruns user information",
        rq(APP_ITEM, user_info(h("52 00 0010"), b"1.2")),
        INVALID,
    ),
    ("maximum length of length 3", rq(APP_ITEM, user_info(h("51 00 0003 000040"))), INVALID),
    ("async window of length 5", rq(APP_ITEM, user_info(h("53 00 0005 0001000100"))), INVALID),
    ("role selection UID overrun", rq(APP_ITEM, user_info(h("54 00 0004 0011 0100"))), INVALID),
    (
        "role selection without roles",
        rq(APP_ITEM, user_info(h("54 00 0005 0003", b"1.2"))),
        INVALID,
    ),
    ("role selection truncated", rq(APP_ITEM, user_info(h("54 00 0001 00"))), INVALID),
    ("extended negotiation truncated", rq(APP_ITEM, user_info(h("56 00 0001 00"))), INVALID),
    (
        "common extended trailing bytes",
        rq(APP_ITEM, user_info(h("57 00 000B 0001", b"1", "0001", b"2", "0000 FFFF"))),
        INVALID,
    ),
    (
        "common extended related overrun",
        rq(APP_ITEM, user_info(h("57 00 000C 0001", b"1", "0001", b"2", "0004 0005 3132"))),
        INVALID,
    ),
    (
        "user identity without secondary length",
        rq(APP_ITEM, user_info(h("58 00 0005 01 00 0001", b"u"))),
        INVALID,
    ),
    (
        "user identity trailing bytes",
        rq(APP_ITEM, user_info(h("58 00 0008 01 00 0001", b"u", "0000 FF"))),
        INVALID,
    ),
    ("user identity truncated", rq(APP_ITEM, user_info(h("58 00 0001 01"))), INVALID),
    ("server response overrun", rq(APP_ITEM, user_info(h("59 00 0002 0009"))), INVALID),
    # PDV items
    ("PDV length 0", h("04 00 00000006 00000000 0100"), INVALID),
    ("PDV length 1", h("04 00 00000006 00000001 0100"), INVALID),
    ("PDV overruns PDU", h("04 00 00000007 00000009 0103 00"), INVALID),
    ("truncated PDV header", h("04 00 0000000A 00000003 0103 00 000000"), INVALID),
    ("PDV even context ID", h("04 00 00000007 00000003 0203 00"), INVALID),
    ("PDV zero context ID", h("04 00 00000007 00000003 0003 00"), INVALID),
]


@pytest.mark.parametrize(("name", "wire", "reason"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed(name: str, wire: bytes, reason: AbortReason) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode(wire)
    assert info.value.abort_reason == reason
    assert info.value.abort_source == 2  # the service provider answers with the abort


def test_well_formed_variants_accepted() -> None:
    # Items may come in any order, and user information may be absent or empty.
    pdu = decode(rq(context_rq(1, TRANSFER, ABSTRACT), UI_ITEM, APP_ITEM))
    assert isinstance(pdu, AssociateRQ)
    assert pdu.presentation_contexts[0].abstract_syntax == VERIFICATION.decode()
    assert decode(rq(APP_ITEM)) == decode(rq(APP_ITEM, UI_ITEM))
    # A context proposed without transfer syntaxes is left for negotiation to reject.
    pdu = decode(rq(APP_ITEM, context_rq(1, ABSTRACT)))
    assert isinstance(pdu, AssociateRQ)
    assert pdu.presentation_contexts[0].transfer_syntaxes == ()
    # The AE titles of an AC are not tested (PS3.8 9.3.3): all spaces is fine.
    blank = bytearray(AC_BYTES)
    blank[10:42] = b" " * 32
    pdu = decode(bytes(blank))
    assert isinstance(pdu, AssociateAC)
    assert pdu.called_ae_title == ""
    assert encode(pdu) == bytes(blank)


def _ac_with_context_items(*items: bytes) -> bytes:
    """AC_BYTES with its presentation context items replaced, the PDU length fixed."""
    fixed_and_app = AC_BYTES[6 : 6 + 68 + 4 + len(APPLICATION_CONTEXT)]
    user_information = AC_BYTES[AC_BYTES.index(b"\x50\x00\x00\x12") :]
    body = fixed_and_app + b"".join(items) + user_information
    return bytes([0x02, 0]) + len(body).to_bytes(4, "big") + body


def test_rejected_context_item_always_has_a_transfer_syntax_sub_item() -> None:
    """PS3.8 9.3.3.2, Table 9-18: each 21H item holds one 40H sub-item, accepted or not.

    A rejected context without a syntax is written with an empty sub-item; one with a
    syntax keeps it. Each rejected item is 8 + len(UID) bytes long, never 4.
    """
    accepted = h("21 00 001B 01 00 00 00", "40 00 0013", EXPLICIT_VR)
    reasons = (1, 2, 3, 4)
    value = attrs.evolve(
        AC_VALUE,
        presentation_contexts=[
            PresentationContextAC(context_id=1, result=0, transfer_syntax=EXPLICIT_VR),
            *(PresentationContextAC(context_id=2 * r + 1, result=r) for r in reasons),
            PresentationContextAC(context_id=11, result=4, transfer_syntax=IMPLICIT_VR),
        ],
    )
    expected = _ac_with_context_items(
        accepted,
        *(bytes([0x21, 0, 0, 8, 2 * r + 1, 0, r, 0, 0x40, 0, 0, 0]) for r in reasons),
        h("21 00 0019 0B 00 04 00", "40 00 0011", IMPLICIT_VR),
    )
    assert encode(value) == expected
    assert decode(expected) == value


def test_rejected_context_item_without_sub_item_still_decodes() -> None:
    """The old 4-byte form (no sub-item), which some peers send, reads as no syntax."""
    old_form = _ac_with_context_items(
        h("21 00 001B 01 00 00 00", "40 00 0013", EXPLICIT_VR), h("21 00 0004 03 00 03 00")
    )
    assert decode(old_form) == AC_VALUE
    # DCMTK 3.6.7 (measured) puts Implicit VR Little Endian in every rejected item:
    # kept as sent, and not significant (negotiate_as_requestor drops it).
    dcmtk_form = _ac_with_context_items(
        h("21 00 001B 01 00 00 00", "40 00 0013", EXPLICIT_VR),
        h("21 00 0019 03 00 03 00", "40 00 0011", IMPLICIT_VR),
    )
    pdu = decode(dcmtk_form)
    assert isinstance(pdu, AssociateAC)
    assert pdu.presentation_contexts[1].transfer_syntax == IMPLICIT_VR.decode()
    # Two sub-items are still refused, an empty one included.
    two = _ac_with_context_items(h("21 00 000C 03 00 03 00", "40 00 0000", "40 00 0000"))
    with pytest.raises(RemoteProtocolError):
        decode(two)


# ---------------------------------------------------------------------------------------
# Encoding refuses values that would make an illegal PDU


def _rq(**changes: object) -> AssociateRQ:
    fields: dict[str, object] = {"called_ae_title": "SCP", "calling_ae_title": "SCU"}
    fields.update(changes)
    return AssociateRQ(**fields)  # type: ignore[arg-type]


def _pdata(context_id: int) -> PDataTF:
    return PDataTF(
        pdvs=[
            PresentationDataValue(context_id=context_id, is_command=True, is_last=True, data=b"")
        ]
    )


def _context(
    context_id: int, transfer_syntaxes: tuple[str, ...] = ("1.2",)
) -> PresentationContextRQ:
    return PresentationContextRQ(
        context_id=context_id, abstract_syntax="1.2.3", transfer_syntaxes=transfer_syntaxes
    )


ILLEGAL: list[tuple[str, PDU]] = [
    ("called AE title of 17 chars", _rq(called_ae_title="A" * 17)),
    ("calling AE title of 17 chars", _rq(calling_ae_title="A" * 17)),
    ("empty called AE title", _rq(called_ae_title="")),
    ("blank calling AE title", _rq(calling_ae_title="    ")),
    ("non-ASCII AE title", _rq(called_ae_title="SCPé")),
    ("backslash in AE title", _rq(called_ae_title="A\\B")),
    ("control character in AE title", _rq(called_ae_title="A\tB")),
    ("AC AE title of 17 chars", AssociateAC(called_ae_title="A" * 17, calling_ae_title="B")),
    ("even context ID", _rq(presentation_contexts=[_context(2)])),
    ("zero context ID", _rq(presentation_contexts=[_context(0)])),
    ("context ID 257", _rq(presentation_contexts=[_context(257)])),
    ("no transfer syntax", _rq(presentation_contexts=[_context(1, ())])),
    (
        "AC even context ID",
        AssociateAC(
            called_ae_title="A",
            calling_ae_title="B",
            presentation_contexts=[PresentationContextAC(context_id=4, result=0)],
        ),
    ),
    ("PDV even context ID", _pdata(2)),
    ("PDV context ID 0", _pdata(0)),
    ("PDV context ID 256", _pdata(256)),
    ("no PDVs", PDataTF(pdvs=[])),
    (
        "version name of 17 chars",
        _rq(user_information=[ImplementationVersionName(implementation_version_name="V" * 17)]),
    ),
    (
        "empty version name",
        _rq(user_information=[ImplementationVersionName(implementation_version_name="")]),
    ),
    ("maximum length 2**32", _rq(user_information=[MaximumLength(maximum_length=2**32)])),
    ("non-ASCII UID", _rq(application_context=UID("1.2.é", IGNORE))),
    ("UID too long for an item", _rq(application_context=UID("1" * 70000, IGNORE))),
    ("reject reason 256", AssociateRJ(result=1, source=1, reason=256)),
    ("abort source -1", Abort(source=-1, reason=0)),
]


@pytest.mark.parametrize(("name", "pdu"), ILLEGAL, ids=[i[0] for i in ILLEGAL])
def test_encode_refuses_illegal_values(name: str, pdu: PDU) -> None:
    with pytest.raises(LocalProtocolError):
        encode(pdu)
    with pytest.raises(LocalProtocolError):
        encode_parts(pdu)


# ---------------------------------------------------------------------------------------
# to_uid: valid UIDs are built directly, anything else still goes through pydicom


@pytest.mark.parametrize(
    "value",
    [
        "1.2.840.10008.1.2",
        "0",
        "0.0.0",
        "2.25.329800735698586629295641978511506172918",
        "1." * 31 + "2",  # 64 characters, the most PS3.5 9.1 allows
        "1.2.840.10008.1.2\x00",
        "1.2.840.10008.1.2 ",
        b"1.2.840.10008.1.2\x00",
    ],
)
def test_to_uid_valid_is_built_directly(value: str | bytes) -> None:
    text = value.decode() if isinstance(value, bytes) else value
    uid = to_uid(value)
    assert type(uid) is UID
    assert uid == UID(text.rstrip("\x00 "))
    assert uid.name == UID(text.rstrip("\x00 ")).name


@pytest.mark.parametrize(
    "value",
    [
        "1.02",  # leading zero
        "1..2",  # empty component
        ".1.2",
        "1.2.",
        "1.2\n",  # "$" in pydicom's pattern would take the newline; fullmatch does not
        " 1.2",
        "1.2a",
        "1.\u0663",  # ARABIC-INDIC DIGIT THREE: a digit, but not an ASCII one
        "1." * 32 + "2",  # 66 characters
    ],
)
@pytest.mark.parametrize("mode", [config.WARN, config.RAISE])
def test_to_uid_invalid_keeps_pydicoms_behaviour(value: str, mode: int) -> None:
    previous = config.settings.reading_validation_mode
    config.settings.reading_validation_mode = mode
    try:
        if mode == config.RAISE:
            with pytest.raises(ValueError):
                to_uid(value)
        else:
            with pytest.warns(UserWarning):
                uid = to_uid(value)
            assert uid == value.strip()
    finally:
        config.settings.reading_validation_mode = previous


@given(st.text(alphabet="0123456789.\x00 \n\ta", max_size=70))
def test_to_uid_agrees_with_pydicom(value: str) -> None:
    # Whatever the text: the same value and type as UID(), and a warning exactly when
    # pydicom would warn (filterwarnings=error turns an unexpected one into a failure).
    with warnings.catch_warnings(record=True) as ours:
        warnings.simplefilter("always")
        uid = to_uid(value)
    with warnings.catch_warnings(record=True) as theirs:
        warnings.simplefilter("always")
        expected = UID(value.rstrip("\x00 "))
    assert type(uid) is UID
    assert uid == expected
    assert len(ours) == len(theirs)


# -- remembered A-ASSOCIATE-RQs --------------------------------------------------------------


# An acceptor decodes the same A-ASSOCIATE-RQ and encodes the same A-ASSOCIATE-AC again and
# again, and a requestor encodes the same RQ and decodes the same AC: each is remembered.
_ASSOCIATE_PDUS = {"RQ": associate_rq_pdus(), "AC": associate_ac_pdus()}
_DECODED = {"RQ": codec._ASSOCIATE_RQS, "AC": codec._ASSOCIATE_ACS_DECODED}
_ENCODED = {"RQ": codec._ASSOCIATE_RQS_ENCODED, "AC": codec._ASSOCIATE_ACS}


@pytest.mark.parametrize("kind", ["RQ", "AC"])
@given(data=st.data())
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_a_remembered_associate_pdu_is_what_decoding_gives(kind: str, data: st.DataObject) -> None:
    pdu = data.draw(_ASSOCIATE_PDUS[kind])
    wire = encode(pdu)
    _DECODED[kind].clear()
    first = decode(wire)
    again = decode(bytearray(wire))  # the reader hands over views and bytearrays too
    assert again is first or len(wire) > codec.ASSOCIATE_RQ_REMEMBERED_BYTES
    assert again == first == pdu


@pytest.mark.parametrize("kind", ["RQ", "AC"])
@given(data=st.data())
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_a_remembered_associate_pdu_is_what_encoding_gives(kind: str, data: st.DataObject) -> None:
    pdu = data.draw(_ASSOCIATE_PDUS[kind])
    _ENCODED[kind].clear()
    first = encode(pdu)
    assert encode(attrs.evolve(pdu)) == first == codec._encode_one(pdu)
    assert decode(first) == pdu
    assert len(_ENCODED[kind]) <= codec.ASSOCIATE_RQS_REMEMBERED


def test_remembered_associate_rqs_are_bounded() -> None:
    codec._ASSOCIATE_RQS.clear()
    proposals = [
        encode(
            AssociateRQ(
                called_ae_title="ANY-SCP",
                calling_ae_title=f"SCU{n}",
                presentation_contexts=[
                    PresentationContextRQ(
                        context_id=1, abstract_syntax=VERIFICATION, transfer_syntaxes=[IMPLICIT_VR]
                    )
                ],
            )
        )
        for n in range(codec.ASSOCIATE_RQS_REMEMBERED * 3)
    ]
    for data in proposals:
        assert decode(data).calling_ae_title == data[26:42].decode().strip()
        assert len(codec._ASSOCIATE_RQS) <= codec.ASSOCIATE_RQS_REMEMBERED
    big = AssociateRQ(
        called_ae_title="ANY-SCP",
        calling_ae_title="BIG",
        presentation_contexts=[
            PresentationContextRQ(
                context_id=n, abstract_syntax=VERIFICATION, transfer_syntaxes=[IMPLICIT_VR] * 40
            )
            for n in range(1, 256, 2)
        ],
    )
    data = encode(big)
    assert len(data) > codec.ASSOCIATE_RQ_REMEMBERED_BYTES
    codec._ASSOCIATE_RQS.clear()
    assert decode(data) == big
    assert not codec._ASSOCIATE_RQS  # too large to keep


def test_remembered_associate_acs_are_bounded() -> None:
    codec._ASSOCIATE_ACS_DECODED.clear()
    for n in range(codec.ASSOCIATE_RQS_REMEMBERED * 3):
        ac = AssociateAC(called_ae_title=f"SCP{n}", calling_ae_title="ANY-SCU")
        assert decode(encode(ac)) == ac
        assert len(codec._ASSOCIATE_ACS_DECODED) <= codec.ASSOCIATE_RQS_REMEMBERED
