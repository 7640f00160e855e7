"""Fragmentation of a DIMSE message into P-DATA-TF PDUs (PS3.8 Annex E.1, PS3.7 6.3.1).

A message is its command set followed, if Command Data Set Type says so, by its data set.
Each is cut into fragments, each fragment goes into one presentation data value (PDV)
with a message control header (PS3.8 E.2), and here each PDV goes into its own P-DATA-TF.

Sizes come from PS3.8 D.1: the maximum length a peer announces bounds the *variable field*
of the P-DATA-TF PDUs it receives. That field holds the PDV items, and one PDV item costs
6 bytes besides its fragment: a 4-byte item length, the presentation context ID and the
message control header. So a fragment may be at most ``max_pdu_length - 6`` bytes, rounded
down to even because PS3.8 E.1 requires every fragment to have an even number of bytes.

Data set fragments are ``memoryview`` slices of the caller's buffer: nothing is copied.

A data set of odd length is sent padded with one trailing 00H, in its last fragment. An
encoded data set is even (PS3.5 7.1), except a Deflated one, whose stream ends wherever
zlib stops: PS3.5 A.5 pads it with a single trailing NULL, and a peer such as DCMTK aborts
on an odd fragment. Padding here, where the last fragment is cut, covers every sender (a
Dataset, a file read whole or streamed, a sub-operation) and costs no copy: the pad is a
buffer of its own behind the last view. A non-deflated odd data set is a broken file;
it gets the same pad, which a parser sees as one byte after the last element, rather
than a fragment the peer must reject (the sender logs a warning for it).

Two forms of the same fragmentation: ``fragment`` yields ``PDataTF`` values, and
``fragment_parts`` gives the wire bytes of exactly those PDUs, ready for a vectored write:
a 12-byte header before each fragment, with one header object shared by all the full-size
fragments of the data set. The second builds no PDU values at all, which is what a sender
wants for a large data set; ``tests/test_dimse_fragment.py`` holds the two to the same bytes.
``data_pdu`` and ``data_parts`` are the two forms for a sender that streams a data set.
``message_id_template`` is the wire bytes of a command-only message cut around its message
ID, for answers that differ in nothing else (the default C-ECHO-RSP); ``instance_uid_template``
cuts them around its message ID and its Affected SOP Instance UID too (a C-STORE-RSP).
``received_template`` cuts a received PDU the same way, for requests that recur.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Hashable, Iterator
from typing import Any, Final, Generic, TypeVar

import attrs

from dicomio.dimse.commands import Message, encode_command
from dicomio.errors import LocalProtocolError
from dicomio.pdu.codec import single_pdv_header
from dicomio.pdu.items import PresentationDataValue
from dicomio.pdu.pdus import PDataTF

__all__ = [
    "PDV_OVERHEAD",
    "Templates",
    "UNLIMITED_FRAGMENT_SIZE",
    "data_pdu",
    "data_parts",
    "fragment",
    "fragment_parts",
    "max_fragment_size",
    "received_template",
]

#: Bytes a PDV item adds to its fragment inside the P-DATA-TF variable field (PS3.8 9.3.5.1).
PDV_OVERHEAD: Final = 6

#: A P-DATA-TF's header and its first PDV item's header (PS3.8 9.3.5, 9.3.5.1).
_PDATA_HEADERS_LENGTH: Final = 6 + PDV_OVERHEAD

#: Fragment size used when the peer announced no maximum (maximum length 0, PS3.8 D.1).
#: No limit does not mean one PDU per message: a 2 GB data set in one PDU would make a
#: receiver that frames whole PDUs (as most do) buffer all of it before it could use a
#: byte, and the 32-bit PDU length could not even describe a 4 GB one. 4 MiB fragments keep
#: the per-PDU cost (12 header bytes and one call each) negligible while bounding the
#: memory a peer needs per PDU.
UNLIMITED_FRAGMENT_SIZE: Final = 4 * 1024 * 1024


#: The pad that makes an odd data set even (PS3.5 A.5 for Deflated; PS3.8 E.1).
_PAD: Final = b"\x00"

#: A command element's header: group, element, value length (PS3.5 7.1.3, Implicit VR).
_ELEMENT_HEADER: Final = struct.Struct("<HHL")

# Builds a PDataTF or PresentationDataValue from its fields, skipping the keyword call.
_new_tuple = tuple.__new__


def max_fragment_size(max_pdu_length: int) -> int:
    """The largest fragment one PDV may carry to a peer with this maximum length (PS3.8 D.1).

    0 means the peer set no limit, and gives ``UNLIMITED_FRAGMENT_SIZE``. Below 8 no even,
    non-empty fragment fits (PS3.8 E.1), so such a limit raises ``LocalProtocolError``:
    nothing can be sent to that peer.
    """
    if max_pdu_length == 0:
        return UNLIMITED_FRAGMENT_SIZE
    size = (max_pdu_length - PDV_OVERHEAD) & ~1
    if size < 2:
        raise LocalProtocolError(
            f"a maximum PDU length of {max_pdu_length} leaves no room for an even "
            f"fragment after the {PDV_OVERHEAD}-byte PDV header (PS3.8 D.1, E.1)"
        )
    return size


def data_pdu(context_id: int, chunk: bytes | memoryview, is_last: bool) -> PDataTF:
    """One P-DATA-TF with one data set fragment, for callers that stream a data set.

    The caller keeps ``chunk`` within ``max_fragment_size`` and even (PS3.8 E.1).
    """
    return _one_pdv(context_id, False, is_last, chunk)


def _one_pdv(
    context_id: int, is_command: bool, is_last: bool, data: bytes | memoryview
) -> PDataTF:
    pdv = _new_tuple(PresentationDataValue, (context_id, is_command, is_last, data))
    return _new_tuple(PDataTF, ((pdv,),))


def _byte_view(data: bytes | memoryview) -> memoryview:
    view = memoryview(data)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    return view


def fragment(
    context_id: int,
    command: bytes,
    dataset: bytes | memoryview | None,
    max_pdu_length: int,
) -> Iterator[PDataTF]:
    """Yield the P-DATA-TF PDUs that carry one message, one PDV per PDU (PS3.8 E.1).

    ``command`` is an encoded command set (see ``encode_command``); ``dataset`` is the
    encoded data set, or None when Command Data Set Type is 0101H. The command fragments
    come first, the last one flagged as such, then the data set fragments. An empty data
    set still gets one (empty, last) fragment, so that the receiver sees the message end.
    """
    size = max_fragment_size(max_pdu_length)
    one_pdv = _one_pdv
    if len(command) <= size:
        # The usual case: a command set is a hundred bytes or so.
        yield one_pdv(context_id, True, True, command)
    else:
        view = memoryview(command)
        end = len(view)
        for start in range(0, end, size):
            yield one_pdv(context_id, True, start + size >= end, view[start : start + size])
    if dataset is None:
        return
    view = _byte_view(dataset)
    end = len(view)
    if end == 0:
        yield one_pdv(context_id, False, True, view)
        return
    for start in range(0, end, size):
        chunk: bytes | memoryview = view[start : start + size]
        last = start + size >= end
        if last and end & 1:
            chunk = bytes(chunk) + _PAD  # PS3.5 A.5, PS3.8 E.1: see the module docstring
        yield one_pdv(context_id, False, last, chunk)


def fragment_parts(
    context_id: int,
    command: bytes,
    dataset: bytes | memoryview | None,
    max_pdu_length: int,
) -> list[bytes | memoryview]:
    """The wire bytes of the PDUs ``fragment`` yields for the same arguments, as buffers.

    The list alternates a 12-byte header (PDU header, PDV item header, message control
    header; PS3.8 9.3.5, E.2) with the fragment it precedes, except that an empty fragment
    has no buffer of its own and the last fragment of an odd data set is followed by its
    one-byte pad; joined, it equals the encoded PDUs one after another. Data
    set fragments are views of ``dataset``, and every full-size data set fragment shares one
    header object. Raises ``LocalProtocolError`` for an illegal context ID or maximum length.
    """
    size = max_fragment_size(max_pdu_length)
    parts: list[bytes | memoryview] = []
    _add_fragments(
        parts, context_id, True, command if len(command) <= size else memoryview(command), size
    )
    if dataset is not None:
        _add_fragments(parts, context_id, False, _byte_view(dataset), size)
    return parts


def data_parts(
    context_id: int, data: bytes | memoryview, max_pdu_length: int, *, is_last: bool
) -> list[bytes | memoryview]:
    """The wire bytes of P-DATA-TF PDUs carrying ``data`` as data set fragments (PS3.8 E.1).

    For a sender that streams a data set, or sends a large one in batches: ``data`` is cut
    as ``fragment_parts`` cuts a data set, each fragment full size but the last, and the
    last is flagged last only if ``is_last``. An empty ``data`` gives one empty fragment if
    ``is_last``, so that the receiver sees the message end, and nothing otherwise. Fragments
    must be even (PS3.8 E.1), so a caller that is not at the end gives whole multiples of
    ``max_fragment_size``, or at least an even number of bytes.
    """
    parts: list[bytes | memoryview] = []
    _add_fragments(
        parts, context_id, False, _byte_view(data), max_fragment_size(max_pdu_length), is_last
    )
    return parts


def _add_fragments(
    parts: list[bytes | memoryview],
    context_id: int,
    is_command: bool,
    data: bytes | memoryview,
    size: int,
    is_last: bool = True,
) -> None:
    """Append header and fragment for each ``size``-byte fragment of ``data``.

    ``data`` is only sliced if it is longer than ``size``, so it is a memoryview then.
    The last fragment of an odd data set gets one 00H pad (see the module docstring).
    """
    end = len(data)
    last = (end - 1) // size * size if end else 0  # where the last fragment starts
    if last:
        # All but the last are full size, and share one header.
        header = single_pdv_header(context_id, size, is_command=is_command, is_last=False)
        append = parts.append
        for start in range(0, last, size):
            append(header)
            append(data[start : start + size])
    if end or is_last:
        pad = is_last and not is_command and end & 1
        parts.append(
            single_pdv_header(context_id, end - last + pad, is_command=is_command, is_last=is_last)
        )
        if end:
            parts.append(data[last:] if last else data)
        if pad:
            parts.append(_PAD)


def message_id_template(
    context_id: int, message: Message, max_pdu_length: int, field: str
) -> tuple[bytes, bytes] | None:
    """A command set template: ``message``'s P-DATA-TF bytes before and after a message ID.

    ``field`` names the message ID (``message_id``, or ``message_id_being_responded_to``
    in a response). Messages equal to ``message`` but in that field are then ``head +
    value.to_bytes(2, "little") + tail``: no message value, command set encoding or PDU
    framing per message (PS3.7 6.3.1, PS3.8 9.3.5). For a command-only message in one
    PDU; None otherwise. The 2 bytes are found by encoding the message with two values.
    """
    if message.has_dataset:
        return None
    encoded = []
    for value in (0, 0xFFFF):
        changes: dict[str, Any] = {field: value}
        command = encode_command(attrs.evolve(message, **changes))
        encoded.append(b"".join(fragment_parts(context_id, command, None, max_pdu_length)))
    low, high = encoded
    if len(low) - 6 != int.from_bytes(low[2:6], "big"):
        return None  # a command set longer than one PDU
    differ = [i for i, (a, b) in enumerate(zip(low, high, strict=True)) if a != b]
    if len(differ) != 2 or differ[1] != differ[0] + 1:
        return None  # pragma: no cover - the field is a US element: two bytes apart
    at = differ[0]
    return low[:at], low[at + 2 :]


def received_template(pdu: bytes) -> tuple[bytes, bytes] | None:
    """A received command's template: ``pdu`` cut around the value of its Message ID.

    ``pdu`` must be exactly one P-DATA-TF holding one PDV, a whole command set (message
    control header 03H, PS3.8 E.2) whose elements are all of group 0000 and include Message
    ID (0000,0110) as a 2-byte value. Returns ``(head, tail)`` with ``pdu == head + id +
    tail``, where ``id`` is the Message ID's two bytes; None for anything else. Bytes equal
    to ``pdu`` except in those two are the same message with another ID: a requestor that
    repeats a C-ECHO sends exactly that. Read in place, element by element (Implicit VR
    Little Endian, PS3.7 6.3.1): nothing here is sized by a length the peer sent.
    """
    size = len(pdu)
    if (
        size < _PDATA_HEADERS_LENGTH
        or pdu[0] != 0x04
        or int.from_bytes(pdu[2:6], "big") != size - 6
        or int.from_bytes(pdu[6:10], "big") != size - 10
        or pdu[11] != 0x03
    ):
        return None
    at = _PDATA_HEADERS_LENGTH
    while at + 8 <= size:
        group, element, length = _ELEMENT_HEADER.unpack_from(pdu, at)
        if group != 0:
            return None
        if element == 0x0110:
            if length != 2 or at + 10 > size:
                return None
            return pdu[: at + 8], pdu[at + 10 :]
        at += 8 + length
    return None


_Key = TypeVar("_Key", bound=Hashable)


class Templates(Generic[_Key]):
    """Command set templates (``message_id_template``) by key, made on first use and kept.

    A table for the whole process: the same few messages (a context, a SOP class, a peer's
    maximum length) recur association after association. Bounded: once ``kept`` keys have
    one, ``get`` gives None for a new key, whose messages then take the ordinary path.
    """

    __slots__ = ("_made", "kept")

    def __init__(self, kept: int = 64) -> None:
        self._made: dict[_Key, tuple[bytes, bytes] | None] = {}
        self.kept = kept

    def get(
        self, key: _Key, make: Callable[[], tuple[bytes, bytes] | None]
    ) -> tuple[bytes, bytes] | None:
        """The template for ``key``: ``make()`` the first time, while there is room."""
        made = self._made
        try:
            return made[key]
        except KeyError:
            pass
        if len(made) >= self.kept:
            return None
        template = made[key] = make()
        return template


def instance_uid_template(
    context_id: int, response: Message, max_pdu_length: int
) -> tuple[bytes, bytes] | None:
    """``message_id_template`` for a response that ends with its Affected SOP Instance UID.

    Responses equal to ``response`` but in Message ID Being Responded To and in the value of
    Affected SOP Instance UID (0000,1000), of the same padded length, are then ``head +
    message_id.to_bytes(2, "little") + tail + uid`` where ``uid`` is the UID's value as
    encoded (ASCII, padded with one 00H to even length: PS3.5 6.2): their lengths, and so
    Command Group Length and the PDU and PDV item lengths, are the same. A C-STORE-RSP with
    only a status is such a response (PS3.7 9.3.1.2: (0000,1000) is its last element). None
    when ``response`` has anything after that UID, or is not one PDU.
    """
    uid = getattr(response, "affected_sop_instance_uid", None)
    if uid is None:
        return None
    value = uid.encode("ascii")
    value += b"\x00" * (len(value) & 1)
    template = message_id_template(
        context_id, response, max_pdu_length, "message_id_being_responded_to"
    )
    if template is None:
        return None
    head, tail = template
    if not tail.endswith(_ELEMENT_HEADER.pack(0, 0x1000, len(value)) + value):
        return None
    return head, tail[: -len(value)]
