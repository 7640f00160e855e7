"""Encoding and decoding of the seven Upper Layer PDUs (PS3.8 section 9.3, Annex D.1, E.2;
PS3.7 Annex D.3.3).

Every PDU starts with a 6-byte header: PDU type, a reserved byte and a 4-byte big-endian
length of the rest (PS3.8 9.3.1). Items and sub-items have a 4-byte header: item type, a
reserved byte and a 2-byte length; a PDV item (PS3.8 9.3.5.1) has a 4-byte length instead.

``encode`` checks what would make an illegal PDU and raises ``LocalProtocolError``.
``decode`` takes exactly one complete PDU and raises only ``RemoteProtocolError``, carrying
the A-ABORT reason of PS3.8 Table 9-26 that answers the malformation. Reserved fields are
written as zero and never tested when received (PS3.8 9.3.1). UIDs are written without
padding: PS3.5 section 9.1 exempts network negotiation from padding to even length.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, TypeVar

from pydicom import config as pydicom_config
from pydicom.uid import UID

from dicomio.errors import AbortReason, LocalProtocolError, RemoteProtocolError
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
    UserInformationSubItem,
)
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

__all__ = ["decode", "encode", "encode_parts", "single_pdv_header"]

# PS3.8 9.3.1: type, reserved, length. The A-ASSOCIATE-RQ/AC fixed part (9.3.2, 9.3.3):
# protocol version, 2 reserved, called and calling AE titles, 32 reserved.
_PDU_HEADER = struct.Struct(">BxL")
_ASSOCIATE_FIXED = struct.Struct(">BxLHxx16s16s32x")
_ASSOCIATE_FIXED_LENGTH = 68
_ITEM_HEADER = struct.Struct(">BxH")
# PS3.8 Tables 9-13 and 9-18: item header, context ID, reserved, (result,) reserved.
_CONTEXT_RQ_HEADER = struct.Struct(">BxHBxxx")
_CONTEXT_AC_HEADER = struct.Struct(">BxHBxBx")
_CONTEXT_AC_FIELDS = struct.Struct(">BxBx")
# PS3.8 9.3.5.1 and Annex E.2: item length, context ID, message control header.
_PDV_HEADER = struct.Struct(">LBB")
_PDATA_FIRST_HEADER = struct.Struct(">BxLLBB")
_pack_pdata_headers = _PDATA_FIRST_HEADER.pack
_REJECT = struct.Struct(">BxLxBBB")
_ABORT = struct.Struct(">BxLxxBB")
_RELEASE_RQ = _PDU_HEADER.pack(0x05, 4) + bytes(4)
_RELEASE_RP = _PDU_HEADER.pack(0x06, 4) + bytes(4)
_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">L")
_TWO_U8 = struct.Struct(">BB")
_TWO_U16 = struct.Struct(">HH")
_MAXIMUM_LENGTH = struct.Struct(">BxHL")
_ASYNC_WINDOW = struct.Struct(">BxHHH")
_ITEM_AND_U16 = struct.Struct(">BxHH")
_USER_IDENTITY_RQ = struct.Struct(">BxHBBH")

# Message control header bits (PS3.8 E.2); bits 2-7 are reserved and not tested.
_COMMAND_BIT = 0x01
_LAST_BIT = 0x02
#: (is_command, is_last) for each value of the message control header byte.
_CONTROL_FLAGS: tuple[tuple[bool, bool], ...] = tuple(
    (bool(control & _COMMAND_BIT), bool(control & _LAST_BIT)) for control in range(256)
)

#: ``tuple.__new__``: builds a ``PDataTF`` or ``PresentationDataValue`` from its fields, already
#: checked and converted, without the keyword call (the hot paths of the codec and reader).
_new_tuple = tuple.__new__

# Item types that may appear somewhere in an association PDU (PS3.8 Table 9-12): seeing one
# in the wrong place is an "unexpected" parameter, anything else "unrecognized" (Table 9-26).
_KNOWN_ITEM_TYPES = frozenset({0x10, 0x20, 0x21, 0x30, 0x40, 0x50})

_IGNORE = pydicom_config.IGNORE
# NUL plus every ASCII character that str.strip() treats as whitespace.
_UID_PADDING = "\x00 \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"
_Context = TypeVar("_Context", PresentationContextRQ, PresentationContextAC)

#: A-ASSOCIATE-RQs already decoded, by their bytes. A client proposes the same thing
#: association after association, byte for byte, and decoding it is most of an acceptor's
#: work on a short association (tens of microseconds for three contexts, milliseconds for
#: a hundred). The decoded value is immutable, so one serves every association. Bounded
#: in entries and in the size of a PDU remembered (a few clients' proposals; a hundred
#: contexts take about 12 KB): at most a megabyte whatever a peer sends. Emptied when full.
_ASSOCIATE_RQS: dict[bytes, AssociateRQ] = {}
#: A-ASSOCIATE-ACs already encoded, by value, bounded in the same way.
_ASSOCIATE_ACS: dict[AssociateAC, bytes] = {}
#: The requestor's side of the same: A-ASSOCIATE-RQs already encoded, by value (a client
#: proposes the same thing again and again), and A-ASSOCIATE-ACs already decoded, by their
#: bytes (an acceptor answers it the same way each time). Bounded in the same way.
_ASSOCIATE_RQS_ENCODED: dict[AssociateRQ, bytes] = {}
_ASSOCIATE_ACS_DECODED: dict[bytes, AssociateAC] = {}
ASSOCIATE_RQS_REMEMBERED = 16
ASSOCIATE_RQ_REMEMBERED_BYTES = 65536
_INVALID = AbortReason.INVALID_PDU_PARAMETER_VALUE


def _invalid(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(message, abort_reason=_INVALID)


def _misplaced_item(item_type: int, where: str) -> RemoteProtocolError:
    if item_type in _KNOWN_ITEM_TYPES:
        return RemoteProtocolError(
            f"item type 0x{item_type:02X} is not allowed in {where}",
            abort_reason=AbortReason.UNEXPECTED_PDU_PARAMETER,
        )
    return RemoteProtocolError(
        f"unrecognized item type 0x{item_type:02X} in {where}",
        abort_reason=AbortReason.UNRECOGNIZED_PDU_PARAMETER,
    )


def _check_header_length(pdu_type: int, length: int) -> None:
    """Check a PDU header against the fixed lengths of PS3.8 9.3.2-9.3.8.

    Raises ``RemoteProtocolError``: UNRECOGNIZED_PDU for an unknown type (Table 9-26),
    INVALID_PDU_PARAMETER_VALUE for a length the PDU type cannot have.
    """
    if pdu_type == 0x04:
        # One or more PDV items, each with at least a 4-byte length, a context ID and a
        # message control header (PS3.8 9.3.5).
        if length < 6:
            raise _invalid(f"P-DATA-TF length {length} cannot hold a PDV item")
    elif pdu_type in (0x01, 0x02):
        if length < _ASSOCIATE_FIXED_LENGTH:
            raise _invalid(f"A-ASSOCIATE PDU length {length} is shorter than its fixed part")
    elif pdu_type in (0x03, 0x05, 0x06, 0x07):
        if length != 4:
            raise _invalid(f"PDU type 0x{pdu_type:02X} must have length 4, not {length}")
    else:
        raise RemoteProtocolError(
            f"unrecognized PDU type 0x{pdu_type:02X}",
            abort_reason=AbortReason.UNRECOGNIZED_PDU,
        )


# ---------------------------------------------------------------------------------------
# Encoding


def encode(pdu: PDU) -> bytes:
    """Return the wire bytes of one PDU (PS3.8 9.3).

    Raises ``LocalProtocolError`` if the value cannot be sent as a legal PDU.
    """
    if type(pdu) is PDataTF:
        return b"".join(_encode_pdata_parts(pdu))
    kind = type(pdu)
    if kind is AssociateAC or kind is AssociateRQ:
        # An acceptor answers the same proposal with the same A-ASSOCIATE-AC, and a
        # requestor proposes the same thing each time: remembered as the decoded
        # A-ASSOCIATE-RQs are (hashing the value, once, costs a fraction of encoding it).
        table: dict[Any, bytes] = _ASSOCIATE_ACS if kind is AssociateAC else _ASSOCIATE_RQS_ENCODED
        encoded = table.get(pdu)
        if encoded is None:
            encoded = _encode_one(pdu)
            if len(encoded) <= ASSOCIATE_RQ_REMEMBERED_BYTES:
                if len(table) >= ASSOCIATE_RQS_REMEMBERED:
                    table.clear()
                table[pdu] = encoded
        return encoded
    return _encode_one(pdu)


def encode_parts(pdu: PDU) -> list[bytes | memoryview]:
    """Return the wire bytes of one PDU as a list of buffers to write in order.

    For P-DATA-TF the PDV data are the values' own buffers, not copies, so that a transport
    can hand them to ``writelines``; headers are small separate ``bytes``.
    """
    if type(pdu) is PDataTF:
        return _encode_pdata_parts(pdu)
    return [_encode_one(pdu)]


def _encode_one(pdu: PDU) -> bytes:
    try:
        if type(pdu) is AssociateRQ:
            return _encode_associate(0x01, pdu)
        if type(pdu) is AssociateAC:
            return _encode_associate(0x02, pdu)
        if type(pdu) is AssociateRJ:
            return _REJECT.pack(0x03, 4, pdu.result, pdu.source, pdu.reason)
        if type(pdu) is ReleaseRQ:
            return _RELEASE_RQ
        if type(pdu) is ReleaseRP:
            return _RELEASE_RP
        if type(pdu) is Abort:
            return _ABORT.pack(0x07, 4, pdu.source, pdu.reason)
    except (struct.error, OverflowError) as exc:
        # A field out of range, or an item longer than its 2-byte length field can say.
        raise LocalProtocolError(f"cannot encode {type(pdu).__name__}: {exc}") from exc
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(
            f"cannot encode {type(pdu).__name__}: UIDs and names must be ASCII ({exc})"
        ) from exc
    raise TypeError(f"not a PDU: {pdu!r}")


def _check_context_id(context_id: int) -> None:
    # PS3.8 9.3.2.2: presentation context IDs are odd integers between 1 and 255.
    if not (0 < context_id < 256 and context_id & 1):
        raise LocalProtocolError(
            f"presentation context ID {context_id} is not an odd number from 1 to 255"
        )


def _ae_title_field(title: str, name: str, *, strict: bool) -> bytes:
    """Return a 16-byte AE title field, space padded (PS3.8 9.3.2, PS3.5 AE VR)."""
    if len(title) > 16:
        raise LocalProtocolError(f"{name} {title!r} is longer than 16 characters")
    if not strict:
        # The A-ASSOCIATE-AC echoes the request's titles and they are not tested (PS3.8
        # 9.3.3), so whatever was received must be echoable, even a blank title.
        return title.encode("ascii", "replace").ljust(16)
    if not title:
        raise LocalProtocolError(f"{name} must not be empty or all spaces")
    if not (title.isascii() and title.isprintable()) or "\\" in title:
        raise LocalProtocolError(
            f"{name} {title!r} must be ASCII without control characters or backslash"
        )
    return title.encode("ascii").ljust(16)


def _encode_associate(pdu_type: int, pdu: AssociateRQ | AssociateAC) -> bytes:
    strict = pdu_type == 0x01
    called = _ae_title_field(pdu.called_ae_title, "called AE title", strict=strict)
    calling = _ae_title_field(pdu.calling_ae_title, "calling AE title", strict=strict)
    application_context = pdu.application_context.encode("ascii")
    out = [
        b"",  # the fixed part, once the length is known
        _ITEM_HEADER.pack(0x10, len(application_context)),
        application_context,
    ]
    if isinstance(pdu, AssociateRQ):
        out += [_encode_context_rq(context) for context in pdu.presentation_contexts]
    else:
        out += [_encode_context_ac(context) for context in pdu.presentation_contexts]
    user_information = _encode_user_information(pdu.user_information)
    out.append(_ITEM_HEADER.pack(0x50, len(user_information)))
    out.append(user_information)
    length = _ASSOCIATE_FIXED_LENGTH + sum(map(len, out))
    out[0] = _ASSOCIATE_FIXED.pack(pdu_type, length, pdu.protocol_version, called, calling)
    return b"".join(out)


def _encode_context_rq(context: PresentationContextRQ) -> bytes:
    _check_context_id(context.context_id)
    if not context.transfer_syntaxes:
        # PS3.8 9.3.2.2: one abstract syntax and one or more transfer syntaxes.
        raise LocalProtocolError(
            f"presentation context {context.context_id} proposes no transfer syntax"
        )
    abstract = context.abstract_syntax.encode("ascii")
    parts = [_ITEM_HEADER.pack(0x30, len(abstract)), abstract]
    for transfer_syntax in context.transfer_syntaxes:
        raw = transfer_syntax.encode("ascii")
        parts.append(_ITEM_HEADER.pack(0x40, len(raw)))
        parts.append(raw)
    body = b"".join(parts)
    return _CONTEXT_RQ_HEADER.pack(0x20, 4 + len(body), context.context_id) + body


def _encode_context_ac(context: PresentationContextAC) -> bytes:
    """Presentation context item 21H with its one Transfer Syntax sub-item (Table 9-18).

    The sub-item is there even when the context was not accepted: its value is then not
    significant, but a requestor reads the item as "header, result, one sub-item", and
    without it takes the next item (User Information) for the sub-item. ``None`` is written
    as an empty sub-item.
    """
    _check_context_id(context.context_id)
    raw = b"" if context.transfer_syntax is None else context.transfer_syntax.encode("ascii")
    return (
        _CONTEXT_AC_HEADER.pack(0x21, 8 + len(raw), context.context_id, context.result)
        + _ITEM_HEADER.pack(0x40, len(raw))
        + raw
    )


def _encode_user_information(sub_items: tuple[UserInformationSubItem, ...]) -> bytes:
    """User information item 50H body: the sub-items in order (PS3.8 9.3.2.3, PS3.7 D.3.3)."""
    return b"".join([_SUB_ITEM_ENCODERS[type(sub_item)](sub_item) for sub_item in sub_items])


def _uid_with_length(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return _U16.pack(len(raw)) + raw


def _encode_maximum_length(sub_item: MaximumLength) -> bytes:
    return _MAXIMUM_LENGTH.pack(0x51, 4, sub_item.maximum_length)


def _encode_implementation_class_uid(sub_item: ImplementationClassUID) -> bytes:
    raw = sub_item.implementation_class_uid.encode("ascii")
    return _ITEM_HEADER.pack(0x52, len(raw)) + raw


def _encode_async_window(sub_item: AsynchronousOperationsWindow) -> bytes:
    return _ASYNC_WINDOW.pack(
        0x53,
        4,
        sub_item.maximum_number_operations_invoked,
        sub_item.maximum_number_operations_performed,
    )


def _encode_role_selection(sub_item: RoleSelection) -> bytes:
    raw = sub_item.sop_class_uid.encode("ascii")
    return (
        _ITEM_AND_U16.pack(0x54, 4 + len(raw), len(raw))
        + raw
        + _TWO_U8.pack(int(sub_item.scu_role), int(sub_item.scp_role))
    )


def _encode_version_name(sub_item: ImplementationVersionName) -> bytes:
    name = sub_item.implementation_version_name
    # PS3.7 D.3.3.2.3: 1 to 16 ISO 646 (basic G0) characters.
    if not 0 < len(name) <= 16:
        raise LocalProtocolError(f"implementation version name {name!r} must be 1-16 chars")
    raw = name.encode("ascii")
    return _ITEM_HEADER.pack(0x55, len(raw)) + raw


def _encode_extended_negotiation(sub_item: SOPClassExtendedNegotiation) -> bytes:
    body = (
        _uid_with_length(sub_item.sop_class_uid) + sub_item.service_class_application_information
    )
    return _ITEM_HEADER.pack(0x56, len(body)) + body


def _encode_common_extended_negotiation(sub_item: SOPClassCommonExtendedNegotiation) -> bytes:
    related = b"".join([_uid_with_length(uid) for uid in sub_item.related_general_sop_class_uids])
    body = b"".join(
        [
            _uid_with_length(sub_item.sop_class_uid),
            _uid_with_length(sub_item.service_class_uid),
            _U16.pack(len(related)),
            related,
        ]
    )
    # The byte after the item type is the sub-item version, 0 (PS3.7 Table D.3-12).
    return _ITEM_HEADER.pack(0x57, len(body)) + body


def _encode_user_identity_rq(sub_item: UserIdentityRQ) -> bytes:
    primary = sub_item.primary_field
    secondary = sub_item.secondary_field
    return b"".join(
        [
            _USER_IDENTITY_RQ.pack(
                0x58,
                6 + len(primary) + len(secondary),
                sub_item.user_identity_type,
                int(sub_item.positive_response_requested),
                len(primary),
            ),
            primary,
            _U16.pack(len(secondary)),
            secondary,
        ]
    )


def _encode_user_identity_ac(sub_item: UserIdentityAC) -> bytes:
    response = sub_item.server_response
    return _ITEM_AND_U16.pack(0x59, 2 + len(response), len(response)) + response


def _encode_unknown(sub_item: UnknownSubItem) -> bytes:
    return _ITEM_HEADER.pack(sub_item.item_type, len(sub_item.data)) + sub_item.data


_SUB_ITEM_ENCODERS: dict[type, Callable[..., bytes]] = {
    MaximumLength: _encode_maximum_length,
    ImplementationClassUID: _encode_implementation_class_uid,
    AsynchronousOperationsWindow: _encode_async_window,
    RoleSelection: _encode_role_selection,
    ImplementationVersionName: _encode_version_name,
    SOPClassExtendedNegotiation: _encode_extended_negotiation,
    SOPClassCommonExtendedNegotiation: _encode_common_extended_negotiation,
    UserIdentityRQ: _encode_user_identity_rq,
    UserIdentityAC: _encode_user_identity_ac,
    UnknownSubItem: _encode_unknown,
}


def single_pdv_header(context_id: int, size: int, *, is_command: bool, is_last: bool) -> bytes:
    """The 12 bytes that precede a fragment of ``size`` bytes sent alone in a P-DATA-TF.

    They are the PDU header (PS3.8 9.3.5) and the PDV item header with its message control
    header (9.3.5.1, E.2), so ``[header, fragment]`` is the whole PDU on the wire, the same
    bytes ``encode_parts`` gives for it. Every full-size fragment of a message shares one
    such header, which is why it is offered on its own (``dicomio.dimse.fragment_parts``).
    Raises ``LocalProtocolError`` for an illegal context ID or a size too large to encode.
    """
    _check_context_id(context_id)
    if not 0 <= size <= 0xFFFFFFFF - 6:
        raise LocalProtocolError(f"a PDV fragment of {size} bytes does not fit a P-DATA-TF")
    control = (_COMMAND_BIT if is_command else 0) | (_LAST_BIT if is_last else 0)
    return _PDATA_FIRST_HEADER.pack(0x04, size + 6, size + 2, context_id, control)


def _encode_pdata_parts(pdu: PDataTF) -> list[bytes | memoryview]:
    """P-DATA-TF (PS3.8 9.3.5): headers as small bytes, PDV data as the caller's buffers."""
    pdvs = pdu.pdvs
    if len(pdvs) == 1:
        # The usual case, one PDV per PDU (every dicomio sender, and most peers): the
        # checks and packing of single_pdv_header, inline.
        context_id, is_command, is_last, data = pdvs[0]
        size = data.nbytes if type(data) is memoryview else len(data)
        if 0 < context_id < 256 and context_id & 1 and size <= 0xFFFFFFFF - 6:
            control = (_COMMAND_BIT if is_command else 0) | (_LAST_BIT if is_last else 0)
            header = _pack_pdata_headers(0x04, size + 6, size + 2, context_id, control)
        else:
            header = single_pdv_header(context_id, size, is_command=is_command, is_last=is_last)
        return [header, data] if size else [header]
    if not pdvs:
        raise LocalProtocolError("a P-DATA-TF PDU carries one or more PDV items")
    sizes = []
    for pdv in pdvs:
        _check_context_id(pdv.context_id)
        data = pdv.data
        sizes.append(data.nbytes if isinstance(data, memoryview) else len(data))
    # Each PDV item adds a 4-byte length, the context ID and the message control header.
    length = sum(sizes) + 6 * len(sizes)
    if length > 0xFFFFFFFF:
        raise LocalProtocolError(f"P-DATA-TF body of {length} bytes exceeds 2**32 - 1")
    parts: list[bytes | memoryview] = []
    for index, (pdv, size) in enumerate(zip(pdvs, sizes, strict=True)):
        control = (_COMMAND_BIT if pdv.is_command else 0) | (_LAST_BIT if pdv.is_last else 0)
        if index == 0:
            parts.append(_PDATA_FIRST_HEADER.pack(0x04, length, size + 2, pdv.context_id, control))
        else:
            parts.append(_PDV_HEADER.pack(size + 2, pdv.context_id, control))
        if size:
            parts.append(pdv.data)
    return parts


# ---------------------------------------------------------------------------------------
# Decoding


def decode(data: bytes | memoryview) -> PDU:
    """Decode exactly one complete PDU (PS3.8 9.3).

    PDV data in the result are memoryviews into ``data``, not copies. Raises only
    ``RemoteProtocolError``, with the A-ABORT reason for the malformation (Table 9-26).
    """
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    end = len(view)
    if end < 6:
        raise _invalid(f"{end} bytes cannot hold a PDU header")
    pdu_type, length = _PDU_HEADER.unpack_from(view)
    _check_header_length(pdu_type, length)
    if length != end - 6:
        raise _invalid(f"PDU length field says {length} bytes but {end - 6} follow the header")
    try:
        if pdu_type == 0x04:
            return _decode_pdata(view, end)
        if pdu_type == 0x01:
            return _remembered(_ASSOCIATE_RQS, _decode_associate_rq, view, end)
        if pdu_type == 0x02:
            return _remembered(_ASSOCIATE_ACS_DECODED, _decode_associate_ac, view, end)
        if pdu_type == 0x03:
            result, source, reason = _REJECT.unpack_from(view)[2:]
            return AssociateRJ(result=result, source=source, reason=reason)
        if pdu_type == 0x05:
            return ReleaseRQ()
        if pdu_type == 0x06:
            return ReleaseRP()
        source, reason = _ABORT.unpack_from(view)[2:]
        return Abort(source=source, reason=reason)
    except (struct.error, ValueError, IndexError, OverflowError) as exc:
        # Every bounds check above should already have caught these; this keeps the promise
        # that a peer's bytes can only ever produce RemoteProtocolError.
        raise _invalid(f"malformed PDU: {exc}") from exc


_Associate = TypeVar("_Associate", AssociateRQ, AssociateAC)


def _remembered(
    table: dict[bytes, _Associate],
    decode_pdu: Callable[[memoryview, int], _Associate],
    view: memoryview,
    end: int,
) -> _Associate:
    """``decode_pdu(view, end)``, or what it gave for the same bytes before (see above)."""
    if end > ASSOCIATE_RQ_REMEMBERED_BYTES:
        return decode_pdu(view, end)
    key = view.tobytes()
    pdu = table.get(key)
    if pdu is None:
        pdu = decode_pdu(view, end)
        if len(table) >= ASSOCIATE_RQS_REMEMBERED:
            table.clear()
        table[key] = pdu
    return pdu


def _uid(view: memoryview, start: int, stop: int) -> UID:
    # Garbage from the peer must neither raise nor warn here: pydicom validation is off and
    # undecodable bytes become U+FFFD. NUL or space padding is tolerated. Everything that
    # UID() or to_uid() would strip later is stripped now, so neither rebuilds (and
    # validates) the value again.
    return UID(str(view[start:stop], "ascii", "replace").strip(_UID_PADDING), _IGNORE)


def _decode_pdata(view: memoryview, end: int) -> PDataTF:
    pdvs = []
    position = 6
    unpack_pdv = _PDV_HEADER.unpack_from
    flags = _CONTROL_FLAGS
    while position < end:
        if position + 6 > end:
            raise _invalid("truncated PDV item header")
        length, context_id, control = unpack_pdv(view, position)
        stop = position + 4 + length
        if length < 2:
            raise _invalid(f"PDV item length {length} leaves no message control header")
        if stop > end:
            raise _invalid("PDV item overruns the P-DATA-TF PDU")
        if not context_id & 1:
            raise _invalid(f"PDV presentation context ID {context_id} is not odd")
        is_command, is_last = flags[control]
        pdvs.append(
            _new_tuple(
                PresentationDataValue, (context_id, is_command, is_last, view[position + 6 : stop])
            )
        )
        position = stop
    return _new_tuple(PDataTF, (tuple(pdvs),))


def _item_bounds(view: memoryview, position: int, end: int, where: str) -> tuple[int, int, int]:
    """Return (item type, value start, value stop) of the item header at ``position``."""
    if position + 4 > end:
        raise _invalid(f"truncated item header in {where}")
    item_type, length = _ITEM_HEADER.unpack_from(view, position)
    stop = position + 4 + length
    if stop > end:
        raise _invalid(f"item 0x{item_type:02X} overruns {where}")
    return item_type, position + 4, stop


def _decode_associate_variable(
    view: memoryview,
    end: int,
    context_type: int,
    decode_context: Callable[[memoryview, int, int, dict[bytes, UID]], _Context],
    where: str,
) -> tuple[UID, list[_Context], list[UserInformationSubItem]]:
    """Decode the variable items of A-ASSOCIATE-RQ/AC (PS3.8 9.3.2, 9.3.3), in any order."""
    application_context: UID | None = None
    contexts: list[_Context] = []
    uids: dict[bytes, UID] = {}
    user_information: list[UserInformationSubItem] | None = None
    position = 6 + _ASSOCIATE_FIXED_LENGTH
    while position < end:
        item_type, start, stop = _item_bounds(view, position, end, where)
        if item_type == context_type:
            contexts.append(decode_context(view, start, stop, uids))
        elif item_type == 0x10:
            if application_context is not None:
                raise _invalid(f"more than one application context item in {where}")
            application_context = _uid(view, start, stop)
        elif item_type == 0x50:
            if user_information is not None:
                raise _invalid(f"more than one user information item in {where}")
            user_information = _decode_user_information(view, start, stop)
        else:
            raise _misplaced_item(item_type, where)
        position = stop
    if application_context is None:
        raise _invalid(f"{where} has no application context item")
    return application_context, contexts, user_information or []


def _decode_associate_rq(view: memoryview, end: int) -> AssociateRQ:
    version, called, calling = _ASSOCIATE_FIXED.unpack_from(view)[2:]
    application_context, contexts, user_information = _decode_associate_variable(
        view, end, 0x20, _decode_context_rq, "A-ASSOCIATE-RQ"
    )
    return AssociateRQ(
        called_ae_title=called,
        calling_ae_title=calling,
        application_context=application_context,
        presentation_contexts=contexts,
        user_information=user_information,
        protocol_version=version,
    )


def _decode_associate_ac(view: memoryview, end: int) -> AssociateAC:
    version, called, calling = _ASSOCIATE_FIXED.unpack_from(view)[2:]
    application_context, contexts, user_information = _decode_associate_variable(
        view, end, 0x21, _decode_context_ac, "A-ASSOCIATE-AC"
    )
    return AssociateAC(
        called_ae_title=called,
        calling_ae_title=calling,
        application_context=application_context,
        presentation_contexts=contexts,
        user_information=user_information,
        protocol_version=version,
    )


def _context_id(view: memoryview, start: int, stop: int) -> int:
    if stop - start < 4:
        raise _invalid("presentation context item shorter than its fixed fields")
    context_id = view[start]
    if not context_id & 1:
        raise _invalid(f"presentation context ID {context_id} is not odd")
    return context_id


def _decode_context_rq(
    view: memoryview, start: int, stop: int, uids: dict[bytes, UID]
) -> PresentationContextRQ:
    """Presentation context item 20H (PS3.8 Table 9-13): one 30H, one or more 40H."""
    context_id = _context_id(view, start, stop)
    abstract: UID | None = None
    transfer_syntaxes = []
    position = start + 4
    unpack_item = _ITEM_HEADER.unpack_from
    # The hot loop of a large request: item headers are parsed inline, and a UID seen before
    # in this PDU (transfer syntaxes repeat in every context) is not rebuilt.
    while position < stop:
        if position + 4 > stop:
            raise _invalid("truncated sub-item header in a presentation context item")
        item_type, length = unpack_item(view, position)
        value_start = position + 4
        position = value_start + length
        if position > stop:
            raise _invalid(f"sub-item 0x{item_type:02X} overruns a presentation context item")
        raw = view[value_start:position].tobytes()
        uid = uids.get(raw)
        if uid is None:
            uid = uids[raw] = _uid(view, value_start, position)
        if item_type == 0x40:
            transfer_syntaxes.append(uid)
        elif item_type == 0x30:
            if abstract is not None:
                raise _invalid(f"presentation context {context_id} has two abstract syntaxes")
            abstract = uid
        else:
            raise _misplaced_item(item_type, "a presentation context item")
    if abstract is None:
        raise _invalid(f"presentation context {context_id} has no abstract syntax")
    # No transfer syntax is illegal too, but harmless: negotiation rejects the context.
    return PresentationContextRQ(
        context_id=context_id, abstract_syntax=abstract, transfer_syntaxes=transfer_syntaxes
    )


def _decode_context_ac(
    view: memoryview, start: int, stop: int, uids: dict[bytes, UID]
) -> PresentationContextAC:
    """Presentation context item 21H (PS3.8 Table 9-18): result and at most one 40H.

    An empty Transfer Syntax sub-item, or none at all (which some peers send for a context
    they did not accept), decodes as ``transfer_syntax=None``.
    """
    context_id = _context_id(view, start, stop)
    result = view[start + 2]
    transfer_syntax: UID | None = None
    seen = False
    position = start + 4
    while position < stop:
        item_type, value_start, value_stop = _item_bounds(
            view, position, stop, "a presentation context item"
        )
        if item_type != 0x40:
            raise _misplaced_item(item_type, "an accepted presentation context item")
        if seen:
            raise _invalid(f"presentation context {context_id} has two transfer syntaxes")
        seen = True
        raw = view[value_start:value_stop].tobytes()
        transfer_syntax = uids.get(raw)
        if transfer_syntax is None:
            transfer_syntax = uids[raw] = _uid(view, value_start, value_stop)
        position = value_stop
    return PresentationContextAC(
        context_id=context_id, result=result, transfer_syntax=transfer_syntax or None
    )


def _decode_user_information(
    view: memoryview, position: int, end: int
) -> list[UserInformationSubItem]:
    """User information item 50H (PS3.8 9.3.2.3): sub-items of PS3.8 D.1 and PS3.7 D.3.3.

    Unknown sub-items are kept as ``UnknownSubItem``: PS3.7 D.3.3 has receivers ignore them.
    """
    sub_items: list[UserInformationSubItem] = []
    while position < end:
        item_type, start, stop = _item_bounds(view, position, end, "the user information item")
        decoder = _SUB_ITEM_DECODERS.get(item_type)
        if decoder is None:
            sub_items.append(UnknownSubItem(item_type=item_type, data=bytes(view[start:stop])))
        else:
            sub_items.append(decoder(view, start, stop))
        position = stop
    return sub_items


def _fixed_length(start: int, stop: int, length: int, name: str) -> None:
    if stop - start != length:
        raise _invalid(f"{name} sub-item has length {stop - start}, not {length}")


def _read_with_length(view: memoryview, position: int, stop: int, name: str) -> tuple[int, int]:
    """Return (start, stop) of a field preceded by its 2-byte length, within ``stop``."""
    if position + 2 > stop:
        raise _invalid(f"{name} sub-item is truncated")
    field_stop = position + 2 + _U16.unpack_from(view, position)[0]
    if field_stop > stop:
        raise _invalid(f"a field overruns the {name} sub-item")
    return position + 2, field_stop


def _decode_maximum_length(view: memoryview, start: int, stop: int) -> MaximumLength:
    _fixed_length(start, stop, 4, "maximum length")
    return MaximumLength(maximum_length=_U32.unpack_from(view, start)[0])


def _decode_implementation_class_uid(
    view: memoryview, start: int, stop: int
) -> ImplementationClassUID:
    return ImplementationClassUID(implementation_class_uid=_uid(view, start, stop))


def _decode_async_window(view: memoryview, start: int, stop: int) -> AsynchronousOperationsWindow:
    _fixed_length(start, stop, 4, "asynchronous operations window")
    invoked, performed = _TWO_U16.unpack_from(view, start)
    return AsynchronousOperationsWindow(
        maximum_number_operations_invoked=invoked, maximum_number_operations_performed=performed
    )


def _decode_role_selection(view: memoryview, start: int, stop: int) -> RoleSelection:
    uid_start, uid_stop = _read_with_length(view, start, stop, "SCP/SCU role selection")
    _fixed_length(uid_stop, stop, 2, "SCP/SCU role selection roles of the")
    scu_role, scp_role = _TWO_U8.unpack_from(view, uid_stop)
    return RoleSelection(
        sop_class_uid=_uid(view, uid_start, uid_stop),
        scu_role=bool(scu_role),
        scp_role=bool(scp_role),
    )


def _decode_version_name(view: memoryview, start: int, stop: int) -> ImplementationVersionName:
    return ImplementationVersionName(
        implementation_version_name=str(view[start:stop], "ascii", "replace")
    )


def _decode_extended_negotiation(
    view: memoryview, start: int, stop: int
) -> SOPClassExtendedNegotiation:
    uid_start, uid_stop = _read_with_length(view, start, stop, "SOP class extended negotiation")
    return SOPClassExtendedNegotiation(
        sop_class_uid=_uid(view, uid_start, uid_stop),
        service_class_application_information=bytes(view[uid_stop:stop]),
    )


def _decode_common_extended_negotiation(
    view: memoryview, start: int, stop: int
) -> SOPClassCommonExtendedNegotiation:
    name = "SOP class common extended negotiation"
    sop_start, sop_stop = _read_with_length(view, start, stop, name)
    service_start, service_stop = _read_with_length(view, sop_stop, stop, name)
    related_start, related_stop = _read_with_length(view, service_stop, stop, name)
    if related_stop != stop:
        raise _invalid(f"{name} sub-item has bytes after its last field")
    related = []
    position = related_start
    while position < related_stop:
        uid_start, position = _read_with_length(view, position, related_stop, name)
        related.append(_uid(view, uid_start, position))
    return SOPClassCommonExtendedNegotiation(
        sop_class_uid=_uid(view, sop_start, sop_stop),
        service_class_uid=_uid(view, service_start, service_stop),
        related_general_sop_class_uids=related,
    )


def _decode_user_identity_rq(view: memoryview, start: int, stop: int) -> UserIdentityRQ:
    name = "user identity negotiation"
    if stop - start < 2:
        raise _invalid(f"{name} sub-item is truncated")
    identity_type, positive = _TWO_U8.unpack_from(view, start)
    primary_start, primary_stop = _read_with_length(view, start + 2, stop, name)
    # The secondary field length is always present, 0 unless the type is 2 (Table D.3-14).
    secondary_start, secondary_stop = _read_with_length(view, primary_stop, stop, name)
    if secondary_stop != stop:
        raise _invalid(f"{name} sub-item has bytes after its last field")
    return UserIdentityRQ(
        user_identity_type=identity_type,
        positive_response_requested=bool(positive),
        primary_field=bytes(view[primary_start:primary_stop]),
        secondary_field=bytes(view[secondary_start:secondary_stop]),
    )


def _decode_user_identity_ac(view: memoryview, start: int, stop: int) -> UserIdentityAC:
    response_start, response_stop = _read_with_length(view, start, stop, "user identity")
    if response_stop != stop:
        raise _invalid("user identity server response sub-item has bytes after its response")
    return UserIdentityAC(server_response=bytes(view[response_start:response_stop]))


_SUB_ITEM_DECODERS: dict[int, Callable[[memoryview, int, int], UserInformationSubItem]] = {
    0x51: _decode_maximum_length,
    0x52: _decode_implementation_class_uid,
    0x53: _decode_async_window,
    0x54: _decode_role_selection,
    0x55: _decode_version_name,
    0x56: _decode_extended_negotiation,
    0x57: _decode_common_extended_negotiation,
    0x58: _decode_user_identity_rq,
    0x59: _decode_user_identity_ac,
}
