"""DIMSE command sets: every DIMSE-C and DIMSE-N message as a value, and its codec.

PS3.7 section 6.3.1 defines the command set: the elements of group 0000, encoded in Implicit
VR Little Endian whatever transfer syntax the presentation context uses, in increasing tag
order, each at most once, with Command Group Length (0000,0000) first. Sections 9.3
(DIMSE-C) and 10.3 (DIMSE-N) list the fields of each message; Annex C adds the status
related fields a response may carry; Annex E registers the elements.

Theory of operation:

1. One literal, ``COMMAND_ELEMENTS``, holds the rows of PS3.7 Table E.1-1 that are not
   retired: element number, field name, VR. Every message class names its fields after
   that table, so the encoder and decoder are driven by it and nothing else.
2. Each message is an immutable ``attrs`` value with a ``command_field`` class variable.
   Fields marked M in PS3.7 are required; U and C fields default to None and are left out
   of the command set when None. ``has_dataset`` stands for Command Data Set Type
   (0000,0800): 0101H means no data set, anything else means one follows.
3. Every response also carries the status related fields of Annex C (Offending Element,
   Error Comment, Error ID, Attribute Identifier List, the affected SOP class and instance),
   so whatever a peer reports about a status survives decoding.
4. ``invalid_field`` checks a received request's values before anyone acts on it: a UID
   that PS3.5 9.1 forbids (over 64 characters, not digits and dots, a leading zero) or an
   AE title over 16 characters cannot be echoed in a response, so the request is refused.
5. ``encode_command`` writes bytes directly with ``struct``: command sets are small and
   regular, and building them through a pydicom Dataset costs far more than the message.
   ``decode_command`` parses them the same way and raises ``RemoteProtocolError`` for
   anything malformed, and nothing else, whatever the input.
"""

from __future__ import annotations

import enum
import operator
import re
import struct
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Final, TypeAlias

import attrs
from pydicom.datadict import keyword_for_tag
from pydicom.uid import UID

from dicomio.errors import LocalProtocolError, RemoteProtocolError
from dicomio.pdu.items import to_uid
from dicomio.pdu.pdus import to_ae_title

__all__ = [
    "COMMAND_ELEMENTS",
    "DATA_SET_PRESENT",
    "MESSAGE_CLASSES",
    "NO_DATA_SET",
    "CCancelRQ",
    "CEchoRQ",
    "CEchoRSP",
    "CFindRQ",
    "CFindRSP",
    "CGetRQ",
    "CGetRSP",
    "CMoveRQ",
    "CMoveRSP",
    "CStoreRQ",
    "CStoreRSP",
    "InvalidField",
    "Message",
    "NActionRQ",
    "NActionRSP",
    "NCreateRQ",
    "NCreateRSP",
    "NDeleteRQ",
    "NDeleteRSP",
    "NEventReportRQ",
    "NEventReportRSP",
    "NGetRQ",
    "NGetRSP",
    "NSetRQ",
    "NSetRSP",
    "Priority",
    "Request",
    "Response",
    "decode_command",
    "encode_command",
    "invalid_field",
    "response_class_for",
]

#: PS3.7 Table E.1-1 without its retired rows: (element number in group 0000, field, VR).
COMMAND_ELEMENTS: Final[tuple[tuple[int, str, str], ...]] = (
    (0x0000, "command_group_length", "UL"),
    (0x0002, "affected_sop_class_uid", "UI"),
    (0x0003, "requested_sop_class_uid", "UI"),
    (0x0100, "command_field", "US"),
    (0x0110, "message_id", "US"),
    (0x0120, "message_id_being_responded_to", "US"),
    (0x0600, "move_destination", "AE"),
    (0x0700, "priority", "US"),
    (0x0800, "command_data_set_type", "US"),
    (0x0900, "status", "US"),
    (0x0901, "offending_element", "AT"),
    (0x0902, "error_comment", "LO"),
    (0x0903, "error_id", "US"),
    (0x1000, "affected_sop_instance_uid", "UI"),
    (0x1001, "requested_sop_instance_uid", "UI"),
    (0x1002, "event_type_id", "US"),
    (0x1005, "attribute_identifier_list", "AT"),
    (0x1008, "action_type_id", "US"),
    (0x1020, "number_of_remaining_sub_operations", "US"),
    (0x1021, "number_of_completed_sub_operations", "US"),
    (0x1022, "number_of_failed_sub_operations", "US"),
    (0x1023, "number_of_warning_sub_operations", "US"),
    (0x1030, "move_originator_application_entity_title", "AE"),
    (0x1031, "move_originator_message_id", "US"),
)

#: Command Data Set Type (0000,0800) meaning "no data set" (PS3.7 Table E.1-1).
NO_DATA_SET: Final = 0x0101
#: The value written when a data set follows; PS3.7 accepts any value but 0101H.
DATA_SET_PRESENT: Final = 0x0001


class Priority(enum.IntEnum):
    """Priority (0000,0700) of C-STORE, C-FIND, C-GET and C-MOVE requests (PS3.7 E.1)."""

    MEDIUM = 0x0000
    HIGH = 0x0001
    LOW = 0x0002


# Converters: friendly input in, one normal form stored, so that decode(encode(x)) == x.
# An empty optional value is stored as None because a zero-length element and an absent
# one mean the same thing to a receiver.


def _uid(value: str | bytes) -> UID:
    # A UID decoded from the wire is already a UID: taking it as is skips pydicom's
    # validation, which would warn about a peer's malformed UID on every conversion.
    return value if isinstance(value, UID) else to_uid(value)


def _optional_uid(value: str | bytes | None) -> UID | None:
    if value is None:
        return None
    return _uid(value) or None


def _optional_ae(value: str | bytes | None) -> str | None:
    if value is None:
        return None
    return to_ae_title(value) or None


def _optional_text(value: str | None) -> str | None:
    # LO: leading and trailing spaces are insignificant (PS3.5 Table 6.2-1).
    if value is None:
        return None
    return value.strip(" \x00") or None


def _optional_tags(value: Iterable[int] | int | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, int):
        return (int(value),)
    return tuple(int(tag) for tag in value) or None


# ---------------------------------------------------------------------------------------
# pynetdicom's names: a message's fields by their PS3.6 keywords, read-only.

#: PS3.6 keyword (as pydicom and pynetdicom's DIMSE primitives spell it) -> field name, from
#: the dictionary itself so that the two cannot disagree: ``MessageID`` -> ``message_id``.
_FIELD_BY_KEYWORD: Final[Mapping[str, str]] = {
    keyword_for_tag(element): field
    for element, field, _vr in COMMAND_ELEMENTS
    # Command Group Length is computed when encoding, never stored; Command Data Set Type
    # is ``has_dataset``.
    if field not in ("command_group_length", "command_data_set_type")
}
#: pynetdicom's names for a primitive's data set, which dicomio keeps outside the command:
#: reading one raises AttributeError saying where the data set is.
_DATA_SET_NAMES: Final = frozenset(
    {
        "DataSet",
        "Identifier",
        "AttributeList",
        "ModificationList",
        "ActionInformation",
        "ActionReply",
        "EventInformation",
        "EventReply",
    }
)


# ---------------------------------------------------------------------------------------
# Responses share the status related fields of PS3.7 Annex C.


@attrs.frozen(kw_only=True)
class _StatusFields:
    """Fields every response may carry: PS3.7 Annex C (C.1-C.5) and the U(=) SOP UIDs."""

    message_id_being_responded_to: int
    status: int
    affected_sop_class_uid: UID | None = attrs.field(default=None, converter=_optional_uid)
    affected_sop_instance_uid: UID | None = attrs.field(default=None, converter=_optional_uid)
    offending_element: tuple[int, ...] | None = attrs.field(default=None, converter=_optional_tags)
    error_comment: str | None = attrs.field(default=None, converter=_optional_text)
    error_id: int | None = None
    attribute_identifier_list: tuple[int, ...] | None = attrs.field(
        default=None, converter=_optional_tags
    )


@attrs.frozen(kw_only=True)
class _SubOperationFields(_StatusFields):
    """The sub-operation counters of C-GET-RSP and C-MOVE-RSP (PS3.7 Tables 9.3-7, 9.3-9)."""

    number_of_remaining_sub_operations: int | None = None
    number_of_completed_sub_operations: int | None = None
    number_of_failed_sub_operations: int | None = None
    number_of_warning_sub_operations: int | None = None


# ---------------------------------------------------------------------------------------
# DIMSE-C (PS3.7 9.3)


@attrs.frozen(kw_only=True)
class CStoreRQ:
    """C-STORE-RQ (PS3.7 9.3.1.1, Table 9.3-1)."""

    command_field: ClassVar[int] = 0x0001
    message_id: int
    affected_sop_class_uid: UID = attrs.field(converter=_uid)
    affected_sop_instance_uid: UID = attrs.field(converter=_uid)
    priority: int = Priority.MEDIUM
    move_originator_application_entity_title: str | None = attrs.field(
        default=None, converter=_optional_ae
    )
    move_originator_message_id: int | None = None
    has_dataset: bool = True


@attrs.frozen(kw_only=True)
class CStoreRSP(_StatusFields):
    """C-STORE-RSP (PS3.7 9.3.1.2, Table 9.3-2)."""

    command_field: ClassVar[int] = 0x8001
    has_dataset: bool = False


@attrs.frozen(kw_only=True)
class CFindRQ:
    """C-FIND-RQ (PS3.7 9.3.2.1, Table 9.3-3); the identifier is the data set."""

    command_field: ClassVar[int] = 0x0020
    message_id: int
    affected_sop_class_uid: UID = attrs.field(converter=_uid)
    priority: int = Priority.MEDIUM
    has_dataset: bool = True


@attrs.frozen(kw_only=True)
class CFindRSP(_StatusFields):
    """C-FIND-RSP (PS3.7 9.3.2.2, Table 9.3-4); Pending responses carry an identifier."""

    command_field: ClassVar[int] = 0x8020
    has_dataset: bool = False


@attrs.frozen(kw_only=True)
class CGetRQ:
    """C-GET-RQ (PS3.7 9.3.3.1, Table 9.3-6)."""

    command_field: ClassVar[int] = 0x0010
    message_id: int
    affected_sop_class_uid: UID = attrs.field(converter=_uid)
    priority: int = Priority.MEDIUM
    has_dataset: bool = True


@attrs.frozen(kw_only=True)
class CGetRSP(_SubOperationFields):
    """C-GET-RSP (PS3.7 9.3.3.2, Table 9.3-7)."""

    command_field: ClassVar[int] = 0x8010
    has_dataset: bool = False


@attrs.frozen(kw_only=True)
class CMoveRQ:
    """C-MOVE-RQ (PS3.7 9.3.4.1, Table 9.3-8)."""

    command_field: ClassVar[int] = 0x0021
    message_id: int
    affected_sop_class_uid: UID = attrs.field(converter=_uid)
    move_destination: str = attrs.field(converter=to_ae_title)
    priority: int = Priority.MEDIUM
    has_dataset: bool = True


@attrs.frozen(kw_only=True)
class CMoveRSP(_SubOperationFields):
    """C-MOVE-RSP (PS3.7 9.3.4.2, Table 9.3-9)."""

    command_field: ClassVar[int] = 0x8021
    has_dataset: bool = False


@attrs.frozen(kw_only=True)
class CEchoRQ:
    """C-ECHO-RQ (PS3.7 9.3.5.1, Table 9.3-12)."""

    command_field: ClassVar[int] = 0x0030
    message_id: int
    affected_sop_class_uid: UID = attrs.field(default=UID("1.2.840.10008.1.1"), converter=_uid)
    has_dataset: bool = False


@attrs.frozen(kw_only=True)
class CEchoRSP(_StatusFields):
    """C-ECHO-RSP (PS3.7 9.3.5.2, Table 9.3-13)."""

    command_field: ClassVar[int] = 0x8030
    has_dataset: bool = False


@attrs.frozen(kw_only=True)
class CCancelRQ:
    """C-CANCEL-RQ (PS3.7 9.3.2.3, 9.3.3.3, 9.3.4.3): cancels a C-FIND, C-GET or C-MOVE."""

    command_field: ClassVar[int] = 0x0FFF
    message_id_being_responded_to: int
    has_dataset: bool = False


# ---------------------------------------------------------------------------------------
# DIMSE-N (PS3.7 10.3)


@attrs.frozen(kw_only=True)
class NEventReportRQ:
    """N-EVENT-REPORT-RQ (PS3.7 10.3.1.1, Table 10.3-1); the event information is the data set."""

    command_field: ClassVar[int] = 0x0100
    message_id: int
    affected_sop_class_uid: UID = attrs.field(converter=_uid)
    affected_sop_instance_uid: UID = attrs.field(converter=_uid)
    event_type_id: int
    has_dataset: bool = False


@attrs.frozen(kw_only=True)
class NEventReportRSP(_StatusFields):
    """N-EVENT-REPORT-RSP (PS3.7 10.3.1.2, Table 10.3-2)."""

    command_field: ClassVar[int] = 0x8100
    event_type_id: int | None = None
    has_dataset: bool = False


@attrs.frozen(kw_only=True)
class NGetRQ:
    """N-GET-RQ (PS3.7 10.3.2.1, Table 10.3-3); no attribute list means all attributes."""

    command_field: ClassVar[int] = 0x0110
    message_id: int
    requested_sop_class_uid: UID = attrs.field(converter=_uid)
    requested_sop_instance_uid: UID = attrs.field(converter=_uid)
    attribute_identifier_list: tuple[int, ...] | None = attrs.field(
        default=None, converter=_optional_tags
    )
    has_dataset: bool = False


@attrs.frozen(kw_only=True)
class NGetRSP(_StatusFields):
    """N-GET-RSP (PS3.7 10.3.2.2, Table 10.3-4); the attribute list is the data set."""

    command_field: ClassVar[int] = 0x8110
    has_dataset: bool = False


@attrs.frozen(kw_only=True)
class NSetRQ:
    """N-SET-RQ (PS3.7 10.3.3.1, Table 10.3-5); the modification list is the data set."""

    command_field: ClassVar[int] = 0x0120
    message_id: int
    requested_sop_class_uid: UID = attrs.field(converter=_uid)
    requested_sop_instance_uid: UID = attrs.field(converter=_uid)
    has_dataset: bool = True


@attrs.frozen(kw_only=True)
class NSetRSP(_StatusFields):
    """N-SET-RSP (PS3.7 10.3.3.2, Table 10.3-6)."""

    command_field: ClassVar[int] = 0x8120
    has_dataset: bool = False


@attrs.frozen(kw_only=True)
class NActionRQ:
    """N-ACTION-RQ (PS3.7 10.3.4.1, Table 10.3-7); the action information is the data set."""

    command_field: ClassVar[int] = 0x0130
    message_id: int
    requested_sop_class_uid: UID = attrs.field(converter=_uid)
    requested_sop_instance_uid: UID = attrs.field(converter=_uid)
    action_type_id: int
    has_dataset: bool = False


@attrs.frozen(kw_only=True)
class NActionRSP(_StatusFields):
    """N-ACTION-RSP (PS3.7 10.3.4.2, Table 10.3-8)."""

    command_field: ClassVar[int] = 0x8130
    action_type_id: int | None = None
    has_dataset: bool = False


@attrs.frozen(kw_only=True)
class NCreateRQ:
    """N-CREATE-RQ (PS3.7 10.3.5.1, Table 10.3-9); no instance UID asks the SCP for one."""

    command_field: ClassVar[int] = 0x0140
    message_id: int
    affected_sop_class_uid: UID = attrs.field(converter=_uid)
    affected_sop_instance_uid: UID | None = attrs.field(default=None, converter=_optional_uid)
    has_dataset: bool = False


@attrs.frozen(kw_only=True)
class NCreateRSP(_StatusFields):
    """N-CREATE-RSP (PS3.7 10.3.5.2, Table 10.3-10)."""

    command_field: ClassVar[int] = 0x8140
    has_dataset: bool = False


@attrs.frozen(kw_only=True)
class NDeleteRQ:
    """N-DELETE-RQ (PS3.7 10.3.6.1, Table 10.3-11)."""

    command_field: ClassVar[int] = 0x0150
    message_id: int
    requested_sop_class_uid: UID = attrs.field(converter=_uid)
    requested_sop_instance_uid: UID = attrs.field(converter=_uid)
    has_dataset: bool = False


@attrs.frozen(kw_only=True)
class NDeleteRSP(_StatusFields):
    """N-DELETE-RSP (PS3.7 10.3.6.2, Table 10.3-12)."""

    command_field: ClassVar[int] = 0x8150
    has_dataset: bool = False


Request: TypeAlias = (
    CStoreRQ
    | CFindRQ
    | CGetRQ
    | CMoveRQ
    | CEchoRQ
    | CCancelRQ
    | NEventReportRQ
    | NGetRQ
    | NSetRQ
    | NActionRQ
    | NCreateRQ
    | NDeleteRQ
)
Response: TypeAlias = (
    CStoreRSP
    | CFindRSP
    | CGetRSP
    | CMoveRSP
    | CEchoRSP
    | NEventReportRSP
    | NGetRSP
    | NSetRSP
    | NActionRSP
    | NCreateRSP
    | NDeleteRSP
)
Message: TypeAlias = Request | Response

_ALL_CLASSES: tuple[type[Message], ...] = (
    CStoreRQ,
    CStoreRSP,
    CFindRQ,
    CFindRSP,
    CGetRQ,
    CGetRSP,
    CMoveRQ,
    CMoveRSP,
    CEchoRQ,
    CEchoRSP,
    CCancelRQ,
    NEventReportRQ,
    NEventReportRSP,
    NGetRQ,
    NGetRSP,
    NSetRQ,
    NSetRSP,
    NActionRQ,
    NActionRSP,
    NCreateRQ,
    NCreateRSP,
    NDeleteRQ,
    NDeleteRSP,
)


def _keyword_properties(cls: type[Message]) -> None:
    """Give ``cls`` read-only properties named by PS3.6 keyword, as pynetdicom's DIMSE
    primitives have them: ``request.AffectedSOPInstanceUID`` is
    ``request.affected_sop_instance_uid``.

    Properties, not a ``__getattr__`` fallback: a class with ``__getattr__`` loses
    CPython's fast path for every attribute (``rq.message_id`` took 27 ns instead of
    9), whereas a property costs only its own reads. They are added after the class is
    made, hidden from type checkers, which would otherwise have two names to check for
    each field. Setting one raises, as setting any field of a frozen message does.
    """
    fields = {field.name for field in attrs.fields(cls)} | {"command_field"}
    for keyword, field in _FIELD_BY_KEYWORD.items():
        if field in fields:
            setattr(cls, keyword, property(operator.attrgetter(field), doc=f"``{field}``"))
    if "has_dataset" in fields:
        setattr(cls, "CommandDataSetType", property(_command_data_set_type))  # noqa: B010 (mypy)
    for name in _DATA_SET_NAMES:
        setattr(cls, name, property(_no_data_set(name)))


def _command_data_set_type(message: Message) -> int:
    """Command Data Set Type (0000,0800) as it is encoded (PS3.7 Table E.1-1)."""
    return DATA_SET_PRESENT if message.has_dataset else NO_DATA_SET


def _no_data_set(name: str) -> Callable[[Message], Any]:
    def read(message: Message) -> Any:
        raise AttributeError(
            f"{type(message).__name__} has no {name}: the data set is not part of the "
            "command; use event.dataset (decoded), event.raw or event.encoded_dataset()",
            name=name,
            obj=message,
        )

    return read


for _cls in _ALL_CLASSES:
    _keyword_properties(_cls)


#: Command Field (0000,0100) value -> message class (PS3.7 Table E.1-1).
MESSAGE_CLASSES: Final[Mapping[int, type[Message]]] = {
    cls.command_field: cls for cls in _ALL_CLASSES
}


def response_class_for(request: Request | type[Request]) -> type[Response]:
    """The response class answering a request or request class (Command Field | 8000H).

    C-CANCEL-RQ has no response of its own (PS3.7 9.3.2.3): its effect is seen in the
    response to the cancelled operation, so asking for one raises ValueError.
    """
    command_field = request.command_field
    cls = MESSAGE_CLASSES.get(command_field | 0x8000)
    if command_field & 0x8000 or cls is None:
        raise ValueError(f"{_name_of(request)} is not a request that has a response")
    return cls  # type: ignore[return-value]


def _name_of(obj: object) -> str:
    return obj.__name__ if isinstance(obj, type) else type(obj).__name__


# ---------------------------------------------------------------------------------------
# Encoding (PS3.7 6.3.1; PS3.5 7.1.3 Implicit VR, 6.2 value padding)

_HEADER = struct.Struct("<HHL")
_US_ELEMENT = struct.Struct("<HHLH")
_UL_ELEMENT = struct.Struct("<HHLL")
_TAG = struct.Struct("<HH")


def _encode_us(element: int) -> Callable[[Any], bytes]:
    def encode(value: int) -> bytes:
        return _US_ELEMENT.pack(0, element, 2, value)

    return encode


def _encode_string(element: int, pad: bytes, max_length: int) -> Callable[[Any], bytes]:
    # The default character repertoire only (PS3.7 6.3.1, PS3.5 6.1.2): ascii, strictly,
    # and no longer than the VR allows (PS3.5 Table 6.2-1), so a peer never sees junk.
    def encode(value: str) -> bytes:
        raw = value.encode("ascii")
        if len(raw) > max_length:
            raise ValueError(f"{len(raw)} characters, more than the {max_length} allowed")
        if len(raw) & 1:
            raw += pad
        return _HEADER.pack(0, element, len(raw)) + raw

    return encode


def _encode_tags(element: int) -> Callable[[Any], bytes]:
    def encode(tags: tuple[int, ...]) -> bytes:
        raw = b"".join([_TAG.pack(tag >> 16, tag & 0xFFFF) for tag in tags])
        return _HEADER.pack(0, element, len(raw)) + raw

    return encode


_DATA_SET_TYPE = {
    True: _US_ELEMENT.pack(0, 0x0800, 2, DATA_SET_PRESENT),
    False: _US_ELEMENT.pack(0, 0x0800, 2, NO_DATA_SET),
}


def _encode_has_dataset(value: bool) -> bytes:
    return _DATA_SET_TYPE[bool(value)]


_ENCODERS: dict[str, Callable[[int], Callable[[Any], bytes]]] = {
    "US": _encode_us,
    "UI": lambda element: _encode_string(element, b"\x00", 64),
    "AE": lambda element: _encode_string(element, b" ", 16),
    "LO": lambda element: _encode_string(element, b" ", 64),
    "AT": _encode_tags,
}


def _encoding_plan(cls: type[Message]) -> tuple[tuple[str, Callable[[Any], bytes]], ...]:
    """(attribute, element encoder) for each element of ``cls``, in increasing tag order."""
    names = {field.name for field in attrs.fields(cls)} | {"command_field"}
    plan: list[tuple[str, Callable[[Any], bytes]]] = []
    for element, name, vr in COMMAND_ELEMENTS:
        if name == "command_data_set_type":
            plan.append(("has_dataset", _encode_has_dataset))
        elif name in names:
            plan.append((name, _ENCODERS[vr](element)))
    return tuple(plan)


_PLANS: dict[type[Message], tuple[tuple[str, Callable[[Any], bytes]], ...]] = {
    cls: _encoding_plan(cls) for cls in _ALL_CLASSES
}


def encode_command(message: Message) -> bytes:
    """Encode a message's command set: group 0000, Implicit VR Little Endian (PS3.7 6.3.1).

    Elements go in increasing tag order behind Command Group Length (0000,0000); UIDs are
    padded with NUL and AE titles and text with a space to even length (PS3.5 6.2). A value
    the command set cannot carry (out of range, not ASCII) raises ``LocalProtocolError``.
    """
    plan = _PLANS.get(type(message))
    if plan is None:
        raise TypeError(f"not a DIMSE message: {message!r}")
    parts: list[bytes] = []
    name = ""
    try:
        for name, encode in plan:
            value = getattr(message, name)
            if value is not None:
                parts.append(encode(value))
    except (struct.error, ValueError, TypeError, AttributeError) as exc:
        raise LocalProtocolError(
            f"{type(message).__name__}.{name} cannot be encoded in a command set: {exc}"
        ) from exc
    body = b"".join(parts)
    return _UL_ELEMENT.pack(0, 0x0000, 4, len(body)) + body


# ---------------------------------------------------------------------------------------
# Decoding


# How decode_command reads each element's value, by VR (PS3.5 6.2; PS3.7 Table E.1-1).
_US, _UI, _TEXT, _AT = range(4)
_KIND_OF_VR = {"US": _US, "UI": _UI, "AE": _TEXT, "LO": _TEXT, "AT": _AT}

# Command Group Length is not decoded: its value is redundant with the PDV framing, and
# PS3.7 is silent on a wrong one, so trusting it could only reject otherwise good input.
_ELEMENTS: dict[int, tuple[str, int]] = {
    element: (name, _KIND_OF_VR[vr]) for element, name, vr in COMMAND_ELEMENTS if vr != "UL"
}

_new_str = str.__new__

_FIELD_NAMES: dict[type[Message], frozenset[str]] = {
    cls: frozenset(field.name for field in attrs.fields(cls)) for cls in _ALL_CLASSES
}
_REQUIRED: dict[type[Message], frozenset[str]] = {
    cls: frozenset(
        field.name
        for field in attrs.fields(cls)
        if field.default is attrs.NOTHING and field.name != "has_dataset"
    )
    for cls in _ALL_CLASSES
}


#: Elements that number a message: Message ID (0000,0110) in requests, Message ID Being
#: Responded To (0000,0120) in responses.
_MESSAGE_NUMBERS = frozenset({0x0110, 0x0120})

#: Command sets decoded lately, one per length: (the bytes before the value of the message's
#: number, the bytes between it and the value of the Affected SOP Instance UID, the bytes after
#: that, where that UID's value lies, the class, the name of the number, every other field, the
#: last message made). A peer sends the same command set over and over with only the number
#: changed (C-ECHO-RQ, C-FIND-RQ, C-ECHO-RSP ...), or the number and the instance UID (a
#: C-STORE-RQ per instance, its C-STORE-RSP): a command set that is one of these byte for byte
#: outside those two values decodes to the same message with that number and that UID (read
#: as the parser reads it), whatever their bytes, so decode_command builds it without parsing;
#: with the same values too (the pending responses of one C-FIND) it is the last message
#: itself, an immutable value. A command set without that UID, or with it before the number,
#: has an empty UID slot at its end. Bounded; emptied when full.
_RECENT: dict[
    int, tuple[bytes, bytes, bytes, int, int, type[Message], str, dict[str, Any], Message]
] = {}
_RECENT_COMMAND_SETS = 32


def decode_command(data: bytes | bytearray | memoryview) -> Message:
    """Decode a command set (PS3.7 6.3.1) into its message value.

    Tolerant where PS3.7 leaves room or peers commonly stray: unknown and retired group
    0000 elements are skipped, Command Group Length may be absent (and is not checked),
    padding may be NUL or space, and elements that do not belong to the message (such as
    Priority in a C-ECHO-RQ) are ignored; a repeated element keeps its last value.

    Strict where a value could not be trusted: an element outside group 0000, a
    truncated element, a wrong value length, an unknown Command Field, or a missing
    field that PS3.7 marks mandatory (Command Data Set Type included, because without it
    nobody knows whether a data set follows) raise ``RemoteProtocolError``. The two
    mandatory fields with an unambiguous default are the exception: a missing Priority
    reads as MEDIUM, and a C-ECHO-RQ without Affected SOP Class UID as Verification.
    """
    raw = bytes(data)
    size = len(raw)
    recent = _RECENT.get(size)
    if recent is not None:
        head, middle, tail, uid_at, uid_end, known_class, number, fields, last = recent
        at = len(head)
        if raw.startswith(head) and raw.endswith(tail) and raw[at + 2 : uid_at] == middle:
            numbered = raw[at] | raw[at + 1] << 8
            uid: Any = None
            if uid_at != uid_end:
                # As the parser reads a UI value; an empty one (the element as if absent)
                # is left to it.
                text = raw[uid_at:uid_end].decode("latin-1").strip(" \x00")
                if text:
                    uid = _new_str(UID, text.strip())
            if uid is not None or uid_at == uid_end:
                if getattr(last, number) == numbered and (
                    uid is None or last.affected_sop_instance_uid == uid  # type: ignore[union-attr]
                ):
                    return last
                renumbered: dict[str, Any] = fields.copy()
                renumbered[number] = numbered
                if uid is not None:
                    renumbered["affected_sop_instance_uid"] = uid
                message = known_class(**renumbered)
                _RECENT[size] = (*recent[:-1], message)
                return message
    values: dict[str, Any] = {}
    unpack_header = _HEADER.unpack_from
    elements = _ELEMENTS
    offset = 0
    # Where the message's number lies, if it is there once with a 2-byte value (_RECENT).
    number_at = -1
    numbers = 0
    # Where the value of Affected SOP Instance UID (0000,1000) lies, if it is there once.
    uid_at = uid_end = -1
    uids = 0
    while offset < size:
        if size - offset < 8:
            raise RemoteProtocolError(
                f"command set truncated: {size - offset} bytes left where an element "
                "header needs 8"
            )
        group, element, length = unpack_header(raw, offset)
        offset += 8
        end = offset + length
        if group or end > size:
            if group:
                raise RemoteProtocolError(
                    f"command set holds element ({group:04X},{element:04X}); PS3.7 6.3.1 "
                    "allows only group 0000"
                )
            raise RemoteProtocolError(
                f"command set truncated: element (0000,{element:04X}) has length "
                f"{length} but only {size - offset} bytes remain"
            )
        spec = elements.get(element)
        if spec is not None:
            # Inline, one branch per VR: a dozen elements per message, every message.
            name, kind = spec
            value: Any = None  # an empty value is the same as an absent element
            if kind == _US:
                if element in _MESSAGE_NUMBERS:
                    numbers += 1
                    number_at = offset if length == 2 else -1
                if length == 2:
                    value = raw[offset] | raw[offset + 1] << 8
                elif length:
                    raise RemoteProtocolError(
                        f"command element (0000,{element:04X}) is US but has {length} bytes, not 2"
                    )
            elif kind == _AT:
                if length % 4:
                    raise RemoteProtocolError(
                        f"command element (0000,{element:04X}) is AT but its {length} "
                        "bytes are not a multiple of 4"
                    )
                if length:
                    value = tuple(
                        (tag_group << 16) | tag_element
                        for tag_group, tag_element in _TAG.iter_unpack(raw[offset:end])
                    )
            else:
                if element == 0x1000:
                    uids += 1
                    uid_at, uid_end = offset, end
                # latin-1 maps every byte to a character, so a peer's stray non-ASCII byte
                # decodes instead of failing; NUL or space padding (even misused) is dropped.
                text = raw[offset:end].decode("latin-1").strip(" \x00")
                if text:
                    # A UID is not validated: a peer's malformed UID is its business until
                    # someone uses it, and pydicom would warn (or raise, as configured) here.
                    # What UID(text, validation_mode=IGNORE) returns, without the call.
                    value = _new_str(UID, text.strip()) if kind == _UI else text
            if value is None:
                values.pop(name, None)
            else:
                values[name] = value
        offset = end

    command_field = values.pop("command_field", None)
    if command_field is None:
        raise RemoteProtocolError("command set has no Command Field (0000,0100)")
    cls = MESSAGE_CLASSES.get(command_field)
    if cls is None:
        raise RemoteProtocolError(f"unknown Command Field (0000,0100) {command_field:#06x}")
    data_set_type = values.pop("command_data_set_type", None)
    if data_set_type is None:
        raise RemoteProtocolError(f"{cls.__name__} has no Command Data Set Type (0000,0800)")
    names = _FIELD_NAMES[cls]
    # Usually every element belongs to the message, and no copy is needed.
    kwargs = values if values.keys() <= names else {k: v for k, v in values.items() if k in names}
    required = _REQUIRED[cls]
    if not kwargs.keys() >= required:
        missing = ", ".join(sorted(required - kwargs.keys()))
        raise RemoteProtocolError(f"{cls.__name__} lacks mandatory field(s) {missing}")
    kwargs["has_dataset"] = data_set_type != NO_DATA_SET
    try:
        message = cls(**kwargs)
    except (TypeError, ValueError) as exc:  # pragma: no cover - converters accept any str
        raise RemoteProtocolError(f"invalid {cls.__name__}: {exc}") from exc
    if numbers == 1 and number_at >= 0:
        number = _ELEMENTS[raw[number_at - 6] | raw[number_at - 5] << 8][0]
        if number in kwargs:
            fields = {name: value for name, value in kwargs.items() if name != number}
            if len(_RECENT) >= _RECENT_COMMAND_SETS:
                _RECENT.clear()
            if not (uids == 1 and uid_at > number_at and "affected_sop_instance_uid" in kwargs):
                uid_at = uid_end = size  # no UID slot: everything after the number is fixed
            _RECENT[size] = (
                raw[:number_at],
                raw[number_at + 2 : uid_at],
                raw[uid_end:],
                uid_at,
                uid_end,
                cls,
                number,
                fields,
                message,
            )
    return message


# ---------------------------------------------------------------------------------------
# Validation of received requests (PS3.5 9.1 UIDs, PS3.5 Table 6.2-1 AE)

#: PS3.5 9.1: components of digits, separated by dots, no component with a leading zero
#: (except the component "0" itself); length is checked separately (at most 64).
_UID_PATTERN: Final = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")
_uid_match = _UID_PATTERN.fullmatch
#: SOP class UIDs found valid: a few per process (the classes a provider supports), asked
#: about in every request, so each is matched once. Instance UIDs are not kept (each is
#: new), and the set stops growing at ``_VALID_CLASSES_KEPT``.
_valid_classes: set[str] = set()
_VALID_CLASSES_KEPT: Final = 64

#: The UID fields of requests, by (0000,eeee) element number: what a provider checks.
_UID_FIELDS: Final[tuple[tuple[str, int], ...]] = (
    ("affected_sop_class_uid", 0x0002),
    ("requested_sop_class_uid", 0x0003),
    ("affected_sop_instance_uid", 0x1000),
    ("requested_sop_instance_uid", 0x1001),
)
#: AE title fields of requests: at most 16 characters of the default repertoire, no
#: backslash and no control characters (PS3.5 Table 6.2-1).
_AE_FIELDS: Final[tuple[tuple[str, int], ...]] = (
    ("move_destination", 0x0600),
    ("move_originator_application_entity_title", 0x1030),
)
_AE_PATTERN: Final = re.compile(r"[\x20-\x5b\x5d-\x7e]{1,16}")
_ae_match = _AE_PATTERN.fullmatch
#: Per message class, the fields ``invalid_field`` checks, in the order above: (name,
#: element, is a UID). Class UIDs come before instance UIDs, so that a response to an
#: invalid instance UID may still echo the class.
_CHECKED: Final[dict[type[Message], tuple[tuple[str, int, bool], ...]]] = {
    cls: tuple(
        (name, element, is_uid)
        for fields, is_uid in ((_UID_FIELDS, True), (_AE_FIELDS, False))
        for name, element in fields
        if name in _FIELD_NAMES[cls]
    )
    for cls in _ALL_CLASSES
}


@attrs.frozen(kw_only=True)
class InvalidField:
    """A request field whose value PS3.5 forbids: its name and tag, why, and the value."""

    name: str
    tag: int
    reason: str
    value: str


def invalid_field(request: Message) -> InvalidField | None:
    """The first field of a received request whose value breaks PS3.5, or None.

    Checked: every SOP class and instance UID (PS3.5 9.1: at most 64 characters, digits
    and dots, no empty component, no leading zero) and the Move Destination and Move
    Originator AE titles (at most 16 characters, no backslash, no control characters).
    A provider refuses such a request before acting on it: it could not echo the value in
    its response, and nothing it names can exist. Mandatory fields are present already:
    ``decode_command`` refuses a message without them. O(1): a few regular expression
    matches over at most 64 characters each. ``reason`` is short ASCII, fit for an Error
    Comment (LO, 64 characters).
    """
    for name, element, is_uid in _CHECKED[type(request)]:
        value = getattr(request, name)
        if value is None:
            continue
        if is_uid:
            if value in _valid_classes:
                continue
            if len(value) > 64 or _uid_match(value) is None:
                problem = "over 64 characters" if len(value) > 64 else "not a valid UID"
                return InvalidField(name=name, tag=element, reason=problem, value=value)
            if element < 0x1000 and len(_valid_classes) < _VALID_CLASSES_KEPT:
                _valid_classes.add(value)  # (0000,0002), (0000,0003): a SOP class UID
        elif _ae_match(value) is None:
            problem = "over 16 characters" if len(value) > 16 else "a forbidden character"
            return InvalidField(name=name, tag=element, reason=f"AE title {problem}", value=value)
    return None
