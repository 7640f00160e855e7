"""Command sets (PS3.7 6.3.1, 9.3, 10.3, Annex E): round trips, pydicom/pynetdicom cross
checks, tolerance of what peers send, and a fuzz of the decoder for one invariant."""

from __future__ import annotations

import random
import struct
from io import BytesIO
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.multival import MultiValue
from pynetdicom import dimse_messages, dimse_primitives
from pynetdicom.dsutils import encode as pynetdicom_encode

import dicomio.dimse
from dicomio.dimse import commands
from dicomio.dimse.commands import (
    COMMAND_ELEMENTS,
    MESSAGE_CLASSES,
    CCancelRQ,
    CEchoRQ,
    CEchoRSP,
    CFindRQ,
    CGetRSP,
    CMoveRQ,
    CStoreRQ,
    CStoreRSP,
    Message,
    NActionRQ,
    NGetRQ,
    decode_command,
    encode_command,
    response_class_for,
)
from dicomio.errors import LocalProtocolError, RemoteProtocolError

ALL_CLASSES = sorted(MESSAGE_CLASSES.values(), key=lambda cls: cls.__name__)
ELEMENT_BY_NAME = {name: (element, vr) for element, name, vr in COMMAND_ELEMENTS}

# --------------------------------------------------------------------------------------
# Strategies: one per message class, derived from its fields and the Annex E VRs.

uids = st.from_regex(r"[1-9][0-9]{0,8}(\.(0|[1-9][0-9]{0,8})){0,5}", fullmatch=True)
_text_alphabet = st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="\\")
ae_titles = st.text(_text_alphabet, min_size=1, max_size=16).filter(lambda s: s == s.strip())
long_strings = st.text(_text_alphabet, min_size=1, max_size=64).filter(lambda s: s == s.strip())
us_values = st.integers(0, 0xFFFF)
tag_lists = st.lists(st.integers(0, 0xFFFFFFFF), min_size=1, max_size=8).map(tuple)
VALUES_BY_VR: dict[str, st.SearchStrategy[Any]] = {
    "UI": uids,
    "AE": ae_titles,
    "LO": long_strings,
    "US": us_values,
    "AT": tag_lists,
}


def message_strategy(cls: type[Message]) -> st.SearchStrategy[Message]:
    kwargs: dict[str, st.SearchStrategy[Any]] = {}
    for field in attrs.fields(cls):
        if field.name == "has_dataset":
            kwargs[field.name] = st.booleans()
            continue
        values = VALUES_BY_VR[ELEMENT_BY_NAME[field.name][1]]
        if field.default is not None:  # mandatory, or defaulted to a value
            kwargs[field.name] = values
        else:
            kwargs[field.name] = st.none() | values
    return st.builds(cls, **kwargs)


MESSAGE_STRATEGIES = {cls: message_strategy(cls) for cls in ALL_CLASSES}
messages = st.one_of(*MESSAGE_STRATEGIES.values())


def full_message(cls: type[Message], seed: int = 0) -> Message:
    """A message with every field set, deterministic, for the fuzz corpus."""
    rng = random.Random(seed)
    samples: dict[str, Any] = {
        "UI": lambda: "1.2.840.10008." + ".".join(str(rng.randrange(1, 999)) for _ in range(3)),
        "AE": lambda: rng.choice(["STORESCP", "A", "MOVE_DEST", "ODD"]),
        "LO": lambda: rng.choice(["something failed", "x", "odd length"]),
        "US": lambda: rng.randrange(0x10000),
        "AT": lambda: tuple(rng.randrange(1 << 32) for _ in range(rng.randrange(1, 4))),
    }
    kwargs = {
        field.name: rng.random() < 0.5
        if field.name == "has_dataset"
        else samples[ELEMENT_BY_NAME[field.name][1]]()
        for field in attrs.fields(cls)
    }
    return cls(**kwargs)


# --------------------------------------------------------------------------------------
# The table of messages


def test_every_command_field_of_ps3_7_annex_e() -> None:
    expected = {
        0x0001: "CStoreRQ",
        0x8001: "CStoreRSP",
        0x0020: "CFindRQ",
        0x8020: "CFindRSP",
        0x0010: "CGetRQ",
        0x8010: "CGetRSP",
        0x0021: "CMoveRQ",
        0x8021: "CMoveRSP",
        0x0030: "CEchoRQ",
        0x8030: "CEchoRSP",
        0x0FFF: "CCancelRQ",
        0x0100: "NEventReportRQ",
        0x8100: "NEventReportRSP",
        0x0110: "NGetRQ",
        0x8110: "NGetRSP",
        0x0120: "NSetRQ",
        0x8120: "NSetRSP",
        0x0130: "NActionRQ",
        0x8130: "NActionRSP",
        0x0140: "NCreateRQ",
        0x8140: "NCreateRSP",
        0x0150: "NDeleteRQ",
        0x8150: "NDeleteRSP",
    }
    assert {cf: cls.__name__ for cf, cls in MESSAGE_CLASSES.items()} == expected


def test_every_field_is_a_command_element() -> None:
    for cls in ALL_CLASSES:
        for field in attrs.fields(cls):
            assert field.name == "has_dataset" or field.name in ELEMENT_BY_NAME


def test_response_class_for() -> None:
    for cf, cls in MESSAGE_CLASSES.items():
        if cf & 0x8000 or cls is CCancelRQ:
            with pytest.raises(ValueError):
                response_class_for(cls)  # type: ignore[arg-type]
        else:
            assert response_class_for(cls).command_field == cf | 0x8000  # type: ignore[arg-type]
    assert response_class_for(CEchoRQ(message_id=1)) is CEchoRSP


def test_all_lists_every_public_name() -> None:
    for module in (dicomio.dimse, commands):
        public = {
            name
            for name, value in vars(module).items()
            if not name.startswith("_")
            and getattr(value, "__module__", module.__name__).startswith("dicomio.dimse")
            and not isinstance(value, type(dicomio))
        }
        assert set(module.__all__) >= public
        for name in module.__all__:
            assert hasattr(module, name)


def test_friendly_input_is_normalised() -> None:
    msg = CMoveRQ(
        message_id=1,
        affected_sop_class_uid=b"1.2.3\x00",
        move_destination="  DEST ",
    )
    assert msg.affected_sop_class_uid == "1.2.3"
    assert msg.move_destination == "DEST"
    rsp = CStoreRSP(message_id_being_responded_to=1, status=0, error_comment="   ")
    assert rsp.error_comment is None
    assert CGetRSP(
        message_id_being_responded_to=1, status=0, offending_element=0x10
    ).offending_element == (0x10,)


# --------------------------------------------------------------------------------------
# Round trips and encoding rules


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda cls: cls.__name__)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_round_trip(cls: type[Message], data: st.DataObject) -> None:
    msg = data.draw(MESSAGE_STRATEGIES[cls])
    encoded = encode_command(msg)
    assert decode_command(encoded) == msg
    assert decode_command(memoryview(encoded)) == msg
    assert len(encoded) % 2 == 0
    # Command Group Length counts everything after its own element (PS3.7 E.1).
    assert struct.unpack_from("<HHLL", encoded) == (0, 0, 4, len(encoded) - 12)


def _read_with_pydicom(encoded: bytes) -> Dataset:
    return read_dataset(DicomBytesIO(encoded), is_implicit_VR=True, is_little_endian=True)


def _pydicom_value(value: Any) -> Any:
    if isinstance(value, (list, MultiValue)):
        return tuple(int(v) for v in value)
    return value


@settings(max_examples=300, deadline=None)
@given(msg=messages)
def test_pydicom_reads_what_we_write(msg: Message) -> None:
    encoded = encode_command(msg)
    ds = _read_with_pydicom(encoded)
    seen = {}
    for elem in ds:
        assert elem.tag.group == 0
        seen[elem.tag.element] = elem.value
    assert seen.pop(0x0000) == len(encoded) - 12
    assert seen.pop(0x0100) == msg.command_field
    assert (seen.pop(0x0800) != 0x0101) == msg.has_dataset
    for field in attrs.fields(type(msg)):
        if field.name == "has_dataset":
            continue
        element, vr = ELEMENT_BY_NAME[field.name]
        value = getattr(msg, field.name)
        if value is None:
            assert element not in seen
            continue
        got = _pydicom_value(seen.pop(element))
        if vr == "AT" and not isinstance(got, tuple):
            got = (int(got),)
        if isinstance(got, str):
            got = got.strip(" \x00")
        assert got == value, field.name
    assert not seen
    # pydicom writes the same dataset back to exactly our bytes: same order, same padding.
    out = DicomBytesIO()
    out.is_implicit_VR = True
    out.is_little_endian = True
    write_dataset(out, ds)
    assert out.getvalue() == encoded


@settings(max_examples=300, deadline=None)
@given(msg=messages, with_group_length=st.booleans())
def test_we_read_what_pydicom_writes(msg: Message, with_group_length: bool) -> None:
    ds = Dataset()
    ds.CommandField = msg.command_field
    ds.CommandDataSetType = 0x0102 if msg.has_dataset else 0x0101
    for field in attrs.fields(type(msg)):
        value = getattr(msg, field.name)
        if field.name == "has_dataset" or value is None:
            continue
        element, _ = ELEMENT_BY_NAME[field.name]
        setattr(ds, keyword_for_tag(element), list(value) if isinstance(value, tuple) else value)
    if with_group_length:
        ds.CommandGroupLength = 0  # the value is not checked by the decoder
    encoded = pynetdicom_encode(ds, True, True)
    assert encoded is not None
    assert decode_command(encoded) == msg


def test_we_read_what_pynetdicom_messages_carry() -> None:
    def command_set(message_cls: Any, primitive: Any) -> bytes:
        message = message_cls()
        message.primitive_to_message(primitive)
        return bytes(pynetdicom_encode(message.command_set, True, True))

    echo = dimse_primitives.C_ECHO()
    echo.MessageID = 7
    echo.AffectedSOPClassUID = "1.2.840.10008.1.1"
    assert decode_command(command_set(dimse_messages.C_ECHO_RQ, echo)) == CEchoRQ(message_id=7)

    store = dimse_primitives.C_STORE()
    store.MessageID = 5
    store.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    store.AffectedSOPInstanceUID = "1.2.3.4"
    store.Priority = 2
    store.MoveOriginatorApplicationEntityTitle = "MOVER"
    store.MoveOriginatorMessageID = 3
    store.DataSet = BytesIO(b"\x00" * 10)
    assert decode_command(command_set(dimse_messages.C_STORE_RQ, store)) == CStoreRQ(
        message_id=5,
        affected_sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        affected_sop_instance_uid="1.2.3.4",
        priority=2,
        move_originator_application_entity_title="MOVER",
        move_originator_message_id=3,
    )

    move = dimse_primitives.C_MOVE()
    move.MessageIDBeingRespondedTo = 5
    move.Status = 0xFF00
    move.NumberOfRemainingSuboperations = 3
    move.NumberOfCompletedSuboperations = 1
    move.ErrorComment = "slow"
    move.OffendingElement = [0x00100010]
    assert decode_command(command_set(dimse_messages.C_MOVE_RSP, move)) == (
        commands.CMoveRSP(
            message_id_being_responded_to=5,
            status=0xFF00,
            number_of_remaining_sub_operations=3,
            number_of_completed_sub_operations=1,
            error_comment="slow",
            offending_element=(0x00100010,),
        )
    )

    action = dimse_primitives.N_ACTION()
    action.MessageID = 9
    action.RequestedSOPClassUID = "1.2.840.10008.5.1.4.34.6.4"
    action.RequestedSOPInstanceUID = "1.2.3"
    action.ActionTypeID = 1
    assert decode_command(command_set(dimse_messages.N_ACTION_RQ, action)) == NActionRQ(
        message_id=9,
        requested_sop_class_uid="1.2.840.10008.5.1.4.34.6.4",
        requested_sop_instance_uid="1.2.3",
        action_type_id=1,
    )


def test_encoding_of_c_echo_rq_byte_for_byte() -> None:
    expected = b"".join(
        [
            struct.pack("<HHLL", 0, 0x0000, 4, 56),
            struct.pack("<HHL", 0, 0x0002, 18) + b"1.2.840.10008.1.1\x00",
            struct.pack("<HHLH", 0, 0x0100, 2, 0x0030),
            struct.pack("<HHLH", 0, 0x0110, 2, 1),
            struct.pack("<HHLH", 0, 0x0800, 2, 0x0101),
        ]
    )
    assert encode_command(CEchoRQ(message_id=1)) == expected


def test_padding_uid_with_nul_and_ae_and_text_with_space() -> None:
    encoded = encode_command(
        CMoveRQ(message_id=1, affected_sop_class_uid="1.2.345", move_destination="ODD")
    )
    assert b"1.2.345\x00" in encoded
    assert b"ODD " in encoded
    rsp = encode_command(
        CStoreRSP(message_id_being_responded_to=1, status=0xC000, error_comment="bad")
    )
    assert b"bad " in rsp


@pytest.mark.parametrize(
    "msg",
    [
        CEchoRQ(message_id=0x10000),
        CEchoRQ(message_id=-1),
        CStoreRSP(message_id_being_responded_to=1, status=0, error_comment="caf\u00e9"),
        CMoveRQ(message_id=1, affected_sop_class_uid="1.2", move_destination="X" * 17),
        CGetRSP(message_id_being_responded_to=1, status=0, offending_element=(1 << 32,)),
    ],
)
def test_values_a_command_set_cannot_carry(msg: Message) -> None:
    with pytest.raises(LocalProtocolError):
        encode_command(msg)


# --------------------------------------------------------------------------------------
# Tolerance and strictness of the decoder


def _element(element: int, value: bytes) -> bytes:
    return struct.pack("<HHL", 0, element, len(value)) + value


def _us(element: int, value: int) -> bytes:
    return _element(element, struct.pack("<H", value))


ECHO_BODY = [
    _element(0x0002, b"1.2.840.10008.1.1\x00"),
    _us(0x0100, 0x0030),
    _us(0x0110, 42),
    _us(0x0800, 0x0101),
]


def test_tolerates_missing_group_length_unknown_and_retired_elements() -> None:
    data = b"".join(
        [
            _element(0x0001, struct.pack("<L", 1234)),  # Length to End (retired)
            *ECHO_BODY[:2],
            _element(0x0200, b"INITIATOR "),  # Initiator (retired)
            *ECHO_BODY[2:],
            _us(0x0850, 3),  # Number of Matches (retired)
            _element(0x4000, b"RETIRED "),  # DIALOG Receiver (retired)
            _element(0x7777, b"??"),  # not in the registry at all
        ]
    )
    assert decode_command(data) == CEchoRQ(message_id=42)


def test_tolerates_odd_and_unusual_padding_and_foreign_fields() -> None:
    data = b"".join(
        [
            _element(0x0002, b"1.2.840.10008.1.1"),  # odd length, no padding
            _us(0x0100, 0x0030),
            _us(0x0110, 1),
            _us(0x0700, 2),  # Priority does not belong to C-ECHO-RQ: ignored
            _us(0x0800, 0x0000),
            _element(0x1000, b""),  # empty: the same as absent
        ]
    )
    assert decode_command(data) == CEchoRQ(message_id=1, has_dataset=True)
    spaced = b"".join([_element(0x0002, b"1.2.3 "), *ECHO_BODY[1:]])
    assert decode_command(spaced).affected_sop_class_uid == "1.2.3"  # type: ignore[union-attr]


def test_any_data_set_type_but_0101h_means_present() -> None:
    for value, present in [(0x0101, False), (0x0000, True), (0x0001, True), (0xFEFE, True)]:
        data = b"".join([*ECHO_BODY[:3], _us(0x0800, value)])
        assert decode_command(data).has_dataset is present


def test_ignores_a_wrong_group_length() -> None:
    data = b"".join([_element(0x0000, struct.pack("<L", 9999)), *ECHO_BODY])
    assert decode_command(data) == CEchoRQ(message_id=42)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"".join(ECHO_BODY)[:-1], "truncated"),
        (b"".join(ECHO_BODY)[:-9] + b"\x00\x00", "truncated"),
        (b"".join([*ECHO_BODY[:1], *ECHO_BODY[2:]]), "Command Field"),
        (b"".join([ECHO_BODY[0], _us(0x0100, 0x0031), *ECHO_BODY[2:]]), "unknown Command Field"),
        (b"".join([*ECHO_BODY[:2], *ECHO_BODY[3:]]), "message_id"),
        (b"".join([_us(0x0100, 0x0020), *ECHO_BODY[2:]]), "affected_sop_class_uid"),
        (b"".join(ECHO_BODY[:3]), "Command Data Set Type"),
        (b"".join([*ECHO_BODY, struct.pack("<HHL", 8, 0x10, 0)]), "group 0000"),
        (b"".join([*ECHO_BODY, _element(0x0900, b"\x00\x00\x00\x00")]), "US"),
        (b"".join([*ECHO_BODY, _element(0x0901, b"\x10\x00\x10")]), "AT"),
        (b"".join([*ECHO_BODY, struct.pack("<HHL", 0, 0x0902, 0xFFFFFFFF)]), "truncated"),
        (b"", "Command Field"),
    ],
)
def test_malformed_command_sets(data: bytes, reason: str) -> None:
    with pytest.raises(RemoteProtocolError, match=reason):
        decode_command(data)


def test_missing_mandatory_fields_of_responses_and_cancel() -> None:
    no_status = b"".join([_us(0x0100, 0x8001), _us(0x0120, 1), _us(0x0800, 0x0101)])
    with pytest.raises(RemoteProtocolError, match="status"):
        decode_command(no_status)
    cancel = b"".join([_us(0x0100, 0x0FFF), _us(0x0800, 0x0101)])
    with pytest.raises(RemoteProtocolError, match="message_id_being_responded_to"):
        decode_command(cancel)
    cancel += _us(0x0120, 3)
    assert decode_command(cancel) == CCancelRQ(message_id_being_responded_to=3)


def test_verification_sop_class_defaults_when_absent() -> None:
    assert decode_command(b"".join(ECHO_BODY[1:])) == CEchoRQ(message_id=42)


def test_priority_defaults_to_medium_when_absent() -> None:
    data = b"".join(
        [_element(0x0002, b"1.2\x00"), _us(0x0100, 0x0020), _us(0x0110, 3), _us(0x0800, 1)]
    )
    assert decode_command(data) == CFindRQ(message_id=3, affected_sop_class_uid="1.2")


def test_n_get_attribute_identifier_list() -> None:
    msg = NGetRQ(
        message_id=1,
        requested_sop_class_uid="1.2",
        requested_sop_instance_uid="1.2.3",
        attribute_identifier_list=[0x00100010, 0x7FE00010],
    )
    encoded = encode_command(msg)
    assert b"\x10\x00\x10\x00\xe0\x7f\x10\x00" in encoded
    assert decode_command(encoded) == msg


# --------------------------------------------------------------------------------------
# Fuzz: any bytes give a message or RemoteProtocolError, never anything else.

KNOWN_ELEMENTS = [element for element, _, _ in COMMAND_ELEMENTS] + [0x0001, 0x4000, 0x5010]


def _random_element(rng: random.Random) -> bytes:
    element = rng.choice(KNOWN_ELEMENTS) if rng.random() < 0.8 else rng.randrange(0x10000)
    group = 0 if rng.random() < 0.97 else rng.randrange(0x10000)
    kind = rng.random()
    if kind < 0.4:
        value = struct.pack("<H", rng.choice([0x0030, 0x8001, 0x0101, rng.randrange(0x10000)]))
    elif kind < 0.7:
        value = rng.choice([b"1.2.840.10008.1.1\x00", b"AE ", b"", b"\xff\xfe", b"1.2.3 "])
    else:
        value = rng.randbytes(rng.randrange(12))
    length = len(value) if rng.random() < 0.95 else rng.randrange(1 << 32)
    return struct.pack("<HHL", group, element, length) + value


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        op = rng.randrange(5)
        if op == 0 and buf:
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif op == 1:
            del buf[rng.randrange(len(buf) + 1) :]
        elif op == 2:
            at = rng.randrange(len(buf) + 1)
            buf[at:at] = rng.randbytes(rng.randrange(1, 9))
        elif op == 3 and len(buf) >= 8:
            at = rng.randrange(0, len(buf) - 7, 2)
            struct.pack_into("<L", buf, at + 4, rng.choice([0, 1, 2, 3, 0xFFFFFFFF]))
        else:
            at = rng.randrange(len(buf) + 1)
            buf[at:at] = _random_element(rng)
    return bytes(buf)


def _check(data: bytes) -> None:
    try:
        msg = decode_command(data)
    except RemoteProtocolError:
        return
    assert type(msg) in MESSAGE_CLASSES.values()
    try:
        encoded = encode_command(msg)
    except LocalProtocolError:
        return  # a peer's non-ASCII or oversized value: we would not send it on
    assert decode_command(encoded) == msg


def test_fuzz_decode_command() -> None:
    rng = random.Random(20240611)
    corpus = [encode_command(full_message(cls, seed)) for cls in ALL_CLASSES for seed in range(3)]
    cases = 0
    for _ in range(12_000):
        _check(_mutate(rng, rng.choice(corpus)))
        cases += 1
    for _ in range(5_000):
        _check(b"".join(_random_element(rng) for _ in range(rng.randrange(8))))
        cases += 1
    for _ in range(4_000):
        _check(rng.randbytes(rng.randrange(40)))
        cases += 1
    assert cases >= 20_000


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_fuzz_decode_command_hypothesis(data: bytes) -> None:
    _check(data)


# --------------------------------------------------------------------------------------
# Command sets decoded lately (commands._RECENT): the same answers as decoding afresh.


def _fresh(data: bytes) -> Message | str:
    """What decode_command gives with nothing remembered: a message or the error's text."""
    saved = dict(commands._RECENT)
    commands._RECENT.clear()
    try:
        return decode_command(data)
    except RemoteProtocolError as exc:
        return f"RemoteProtocolError: {exc}"
    finally:
        commands._RECENT.clear()
        commands._RECENT.update(saved)


def _remembered(data: bytes) -> Message | str:
    try:
        return decode_command(data)
    except RemoteProtocolError as exc:
        return f"RemoteProtocolError: {exc}"


@settings(max_examples=300, deadline=None)
@given(msg=messages, numbers=st.lists(us_values, min_size=1, max_size=4))
def test_renumbered_command_sets_decode_as_afresh(msg: Message, numbers: list[int]) -> None:
    """A message decoded, then the same with other numbers: each as decoding afresh gives."""
    commands._RECENT.clear()
    number = "message_id" if hasattr(msg, "message_id") else "message_id_being_responded_to"
    for value in [None, *numbers]:
        data = encode_command(msg if value is None else attrs.evolve(msg, **{number: value}))
        assert _remembered(data) == _fresh(data)


@settings(max_examples=300, deadline=None)
@given(
    msg=messages.filter(lambda m: getattr(m, "affected_sop_instance_uid", None) is not None),
    others=st.lists(
        st.tuples(us_values, st.binary(min_size=1, max_size=1) | st.none(), st.integers(0, 63)),
        min_size=1,
        max_size=4,
    ),
)
def test_command_sets_with_other_instance_uids_decode_as_afresh(
    msg: Message, others: list[tuple[int, bytes | None, int]]
) -> None:
    """A message with an Affected SOP Instance UID decoded, then the same command set with
    another number and other bytes in that UID's value (any bytes: NUL, spaces, non-ASCII,
    all padding), its length kept: each as decoding afresh gives."""
    commands._RECENT.clear()
    number = "message_id" if hasattr(msg, "message_id") else "message_id_being_responded_to"
    original = encode_command(msg)
    _remembered(original)
    uid = msg.affected_sop_instance_uid.encode()  # type: ignore[attr-defined]
    uid += b"\x00" * (len(uid) & 1)
    element = struct.pack("<HHL", 0, 0x1000, len(uid))
    at = original.index(element + uid) + len(element)
    for value, byte, where in others:
        data = bytearray(encode_command(attrs.evolve(msg, **{number: value})))
        if byte is not None:
            data[at + where % len(uid)] = byte[0]
        elif where % 3 == 0:
            data[at : at + len(uid)] = b"\x00" * len(uid)  # empty: as if absent
        elif where % 3 == 1:
            data[at : at + len(uid)] = b" \t" * (len(uid) // 2)
        assert _remembered(bytes(data)) == _fresh(bytes(data))


def test_c_store_rq_with_other_instance_uids_is_built_from_memory() -> None:
    """The case it is for: C-STORE-RQs whose instance UIDs have one length."""
    commands._RECENT.clear()
    sop_class = "1.2.840.10008.5.1.4.1.1.2"
    for n in range(100, 110):
        msg = CStoreRQ(
            message_id=n,
            affected_sop_class_uid=sop_class,
            affected_sop_instance_uid=f"1.2.3.4.{n}",
            has_dataset=True,
        )
        assert decode_command(encode_command(msg)) == msg
    assert len(commands._RECENT) == 1
    (entry,) = commands._RECENT.values()
    uid_at, uid_end = entry[3], entry[4]
    assert uid_end - uid_at == 12  # the slot: the UID, 11 characters, and its NUL


def test_remembered_command_sets_against_hostile_input() -> None:
    """Mutations of command sets just decoded (the number, the bytes around it, lengths,
    elements added or cut): whatever is remembered, each gives what decoding afresh gives."""
    rng = random.Random(20261207)
    corpus = [encode_command(full_message(cls, seed)) for cls in ALL_CLASSES for seed in range(3)]
    corpus += [encode_command(CEchoRQ(message_id=n)) for n in (1, 0xFFFF)]
    commands._RECENT.clear()
    for _ in range(6_000):
        original = rng.choice(corpus)
        _remembered(original)  # remember its shape (or not)
        if rng.random() < 0.5:
            data = bytearray(original)
            data[rng.randrange(len(data))] = rng.randrange(256)
            data = bytes(data)
        else:
            data = _mutate(rng, original)
        assert _remembered(data) == _fresh(data)
    assert len(commands._RECENT) <= commands._RECENT_COMMAND_SETS


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=120), seed=st.sampled_from(ALL_CLASSES))
def test_remembered_command_sets_against_any_bytes(data: bytes, seed: type[Message]) -> None:
    commands._RECENT.clear()
    _remembered(encode_command(full_message(seed)))
    assert _remembered(data) == _fresh(data)
