"""Items and sub-items of the association PDUs, as immutable values.

PS3.8 9.3.2.1-9.3.3.3 (application context, presentation context, abstract and transfer
syntax, user information), PS3.8 Annex D.1 (maximum length) and PS3.7 Annex D.3.3
(implementation identification, asynchronous operations window, SCP/SCU role
selection, SOP class extended and common extended negotiation, user identity).

The user information item is kept as an ordered tuple of sub-items so that unknown
sub-items survive a decode/encode round trip (PS3.7 D.3.3 asks that they be ignored,
not that they be destroyed). Values only: the codec lives in ``dicomio.pdu.codec``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from typing import Final, NamedTuple

import attrs
from pydicom.uid import UID

#: Longest UID PS3.5 9.1 allows (also the maximum length of the UI VR, PS3.5 Table 6.2-1).
MAX_UID_LENGTH: Final = 64

# PS3.5 9.1: components of digits separated by periods, none empty, none with a leading
# zero (a component that is zero is "0"). The same rule as pydicom's validator for UI, which
# also uses ASCII digits only; fullmatch, unlike "$", does not accept a trailing newline.
_is_valid_uid = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*").fullmatch

_new_str = str.__new__


def to_uid(value: str | bytes) -> UID:
    """Convert friendly input to a pydicom UID; wire padding (NUL or space) is dropped.

    A valid UID (PS3.5 9.1) is built directly: pydicom's ``UID(value)`` would validate it
    again, which costs twenty times as much as building it and is paid for every UID of every
    message and association. Anything else goes through ``UID(value)``, so that pydicom's
    configured validation (warn, raise or ignore) still decides what happens to it.
    """
    if isinstance(value, UID) and not value.endswith("\x00"):
        # Already converted (pydicom strips spaces): the codec builds UIDs without pydicom's
        # validation, because a malformed UID from the peer must not warn or raise here.
        return value
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    # rstrip() returns an exact str even for a str subclass, so nothing it carries is lost
    # here that UID(value) would have kept.
    value = value.rstrip("\x00 ")
    if len(value) <= MAX_UID_LENGTH and _is_valid_uid(value):
        # What UID(value) returns for a valid value, which it would leave as it is (a valid
        # UID has no whitespace to strip), without a warning in any validation mode.
        return _new_str(UID, value)
    return UID(value)


def to_uids(values: Iterable[str | bytes]) -> tuple[UID, ...]:
    return tuple(to_uid(value) for value in values)


def to_optional_uid(value: str | bytes | None) -> UID | None:
    return None if value is None else to_uid(value)


def to_bytes(value: bytes | bytearray | memoryview) -> bytes:
    return bytes(value)


class PresentationContextResult(enum.IntEnum):
    """Result/reason of a presentation context in A-ASSOCIATE-AC (PS3.8 Table 9-18)."""

    ACCEPTANCE = 0
    USER_REJECTION = 1
    NO_REASON = 2  # provider rejection
    ABSTRACT_SYNTAX_NOT_SUPPORTED = 3
    TRANSFER_SYNTAXES_NOT_SUPPORTED = 4


class UserIdentityType(enum.IntEnum):
    """User identity type of the A-ASSOCIATE-RQ sub-item 58H (PS3.7 Table D.3-14)."""

    USERNAME = 1
    USERNAME_AND_PASSCODE = 2
    KERBEROS = 3
    SAML = 4
    JWT = 5


@attrs.frozen(kw_only=True, cache_hash=True)
class PresentationContextRQ:
    """Presentation context item 20H: one abstract syntax offered with transfer syntaxes."""

    context_id: int
    abstract_syntax: UID = attrs.field(converter=to_uid)
    transfer_syntaxes: tuple[UID, ...] = attrs.field(converter=to_uids)


@attrs.frozen(kw_only=True)
class PresentationContextAC:
    """Presentation context item 21H: the result for one proposed context.

    ``transfer_syntax`` is None when the item's Transfer Syntax sub-item is empty or absent,
    which only a context that was not accepted may have: its value is then not significant
    (PS3.8 Table 9-18). None is encoded as an empty sub-item, never as no sub-item.
    """

    context_id: int
    result: int
    transfer_syntax: UID | None = attrs.field(default=None, converter=to_optional_uid)


@attrs.frozen(kw_only=True)
class MaximumLength:
    """Sub-item 51H: the largest P-DATA-TF PDU *body* the sender can receive; 0 = no limit."""

    maximum_length: int


@attrs.frozen(kw_only=True)
class ImplementationClassUID:
    """Sub-item 52H (PS3.7 D.3.3.2)."""

    implementation_class_uid: UID = attrs.field(converter=to_uid)


@attrs.frozen(kw_only=True)
class AsynchronousOperationsWindow:
    """Sub-item 53H (PS3.7 D.3.3.3); 0 means unlimited."""

    maximum_number_operations_invoked: int
    maximum_number_operations_performed: int


@attrs.frozen(kw_only=True)
class RoleSelection:
    """Sub-item 54H: SCP/SCU role selection for one SOP class (PS3.7 D.3.3.4)."""

    sop_class_uid: UID = attrs.field(converter=to_uid)
    scu_role: bool
    scp_role: bool


@attrs.frozen(kw_only=True)
class ImplementationVersionName:
    """Sub-item 55H (PS3.7 D.3.3.2.3): 1 to 16 characters."""

    implementation_version_name: str


@attrs.frozen(kw_only=True)
class SOPClassExtendedNegotiation:
    """Sub-item 56H (PS3.7 D.3.3.5): service-class-specific application information."""

    sop_class_uid: UID = attrs.field(converter=to_uid)
    service_class_application_information: bytes = attrs.field(converter=to_bytes)


@attrs.frozen(kw_only=True)
class SOPClassCommonExtendedNegotiation:
    """Sub-item 57H (PS3.7 D.3.3.6), sub-item version 0."""

    sop_class_uid: UID = attrs.field(converter=to_uid)
    service_class_uid: UID = attrs.field(converter=to_uid)
    related_general_sop_class_uids: tuple[UID, ...] = attrs.field(default=(), converter=to_uids)


@attrs.frozen(kw_only=True)
class UserIdentityRQ:
    """Sub-item 58H (PS3.7 D.3.3.7.1). ``secondary_field`` is used only for type 2."""

    user_identity_type: int
    positive_response_requested: bool
    primary_field: bytes = attrs.field(converter=to_bytes)
    secondary_field: bytes = attrs.field(default=b"", converter=to_bytes)


@attrs.frozen(kw_only=True)
class UserIdentityAC:
    """Sub-item 59H (PS3.7 D.3.3.7.2): the server response."""

    server_response: bytes = attrs.field(converter=to_bytes)


@attrs.frozen(kw_only=True)
class UnknownSubItem:
    """A user information sub-item this implementation does not know; kept verbatim."""

    item_type: int
    data: bytes = attrs.field(converter=to_bytes)


UserInformationSubItem = (
    MaximumLength
    | ImplementationClassUID
    | AsynchronousOperationsWindow
    | RoleSelection
    | ImplementationVersionName
    | SOPClassExtendedNegotiation
    | SOPClassCommonExtendedNegotiation
    | UserIdentityRQ
    | UserIdentityAC
    | UnknownSubItem
)


def same_type_eq(self: tuple[object, ...], other: object) -> bool:
    """``==`` for the named-tuple values: equal only to a value of the same type.

    A plain named tuple equals any tuple with the same items, so a ``PresentationDataValue``
    would equal ``(1, True, True, b"")``, and a ``PDataTF`` would equal a ``DataRun``.
    """
    return type(other) is type(self) and tuple.__eq__(self, other)


def same_type_ne(self: tuple[object, ...], other: object) -> bool:
    return not same_type_eq(self, other)


class PresentationDataValue(NamedTuple):
    """One PDV item of a P-DATA-TF PDU (PS3.8 9.3.5.1, Annex E.2).

    ``data`` is the message fragment without the 1-byte message control header; it may be a
    memoryview into the received buffer so that large fragments are never copied.

    Unlike the other values this one is a typed named tuple rather than an attrs class: one
    or more are built for every P-DATA-TF sent or received, and a tuple is built (and read)
    several times faster. It keeps what the attrs values promise: immutable, the same field
    names, a readable repr, and equality only with another ``PresentationDataValue`` (never
    with a plain tuple).
    """

    context_id: int
    is_command: bool
    is_last: bool
    data: bytes | memoryview

    def __eq__(self, other: object) -> bool:
        return same_type_eq(self, other)

    def __ne__(self, other: object) -> bool:
        return same_type_ne(self, other)

    def __hash__(self) -> int:
        return tuple.__hash__(self)
