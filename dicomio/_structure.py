"""Is an encoded data set whole? A structural check that reads element headers, not values.

A data set cut short (a file truncated on disk, a transfer that stopped) still starts with
good elements, and a reader that stops early may take what it found for the whole. This
module walks the top-level data elements of an encoded data set (PS3.5 7.1: tag, VR in
explicit syntaxes, value length) and checks that each value fits in the bytes there are.
Values of defined length are stepped over, never decoded. A value of undefined length (a
sequence, or encapsulated pixel data, PS3.5 7.5 and A.4) has no length to step over: its
items are walked by their headers until the Sequence Delimitation Item, and the elements of
an item of undefined length likewise until its Item Delimitation Item.

What it cannot see: a data set cut exactly between two top-level elements is a shorter data
set that is whole by its structure (nothing in the encoding says how many elements follow).

Pure: no I/O except ``check_file``, which maps the file so that only the pages holding
element headers are read.
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from pathlib import Path

# One reading of which syntax encodes how, shared with the encoder.
from dicomio.dataset import _encoding, parse_file_meta

__all__ = ["check_file", "truncation"]

#: Explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 Table 7.1-1).
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
#: Nesting deeper than this is refused rather than followed (a crafted data set could
#: otherwise exhaust the stack); real data sets nest a handful of levels.
_MAX_DEPTH = 64

_LE_TAG_LEN = struct.Struct("<HHL")
_BE_TAG_LEN = struct.Struct(">HHL")
_LE_SHORT = struct.Struct("<HH2sH")
_BE_SHORT = struct.Struct(">HH2sH")
_LE_LONG = struct.Struct("<L")
_META_LENGTH = struct.Struct("<L2sHL")
_BE_LONG = struct.Struct(">L")


class _Cut(Exception):
    """The data set is not whole; the message says where."""


def truncation(
    data: bytes | bytearray | memoryview | mmap.mmap, transfer_syntax: str
) -> str | None:
    """Why the encoded data set ``data`` (no file meta) is not whole, or None if it is.

    ``transfer_syntax`` says how it is encoded (PS3.5 section 10 and Annex A); a Deflated
    data set is inflated first (its stream must end, PS3.5 A.5).
    """
    implicit, little, deflated = _encoding(transfer_syntax)
    if deflated:
        inflated, reason = _inflate(data)
        if reason is not None or inflated is None:
            return reason
        data = inflated
    try:
        _elements(data, 0, len(data), implicit, little, top=True, depth=0)
    except _Cut as exc:
        return str(exc)
    return None


#: How much of a Deflated data set is inflated to walk its elements: beyond this only the
#: end of its deflate stream is checked, so that memory stays bounded (an SCP otherwise
#: never inflates what it stores).
INFLATE_LIMIT = 64 << 20
_INFLATE_STEP = 1 << 20


def _inflate(
    data: bytes | bytearray | memoryview | mmap.mmap,
) -> tuple[bytes | None, str | None]:
    """(the inflated data set or None if over ``INFLATE_LIMIT``, why it is not whole)."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    parts: list[bytes] | None = []
    size = 0
    pending: bytes | bytearray | memoryview | mmap.mmap = data
    try:
        while True:
            # max_length bounds each step's output whatever the compression ratio.
            out = inflater.decompress(pending, _INFLATE_STEP)
            size += len(out)
            if parts is not None and size <= INFLATE_LIMIT:
                parts.append(out)
            else:
                parts = None
            pending = inflater.unconsumed_tail
            # A full step may leave output inside zlib with no input left: ask again.
            if inflater.eof or (not pending and len(out) < _INFLATE_STEP):
                break
    except zlib.error as exc:
        return None, f"the deflated data set is corrupt: {exc}"
    if not inflater.eof:
        return None, "the deflated data set ends before its deflate stream does"
    return (b"".join(parts) if parts is not None else None), None


def _elements(
    buf: bytes | bytearray | memoryview | mmap.mmap,
    pos: int,
    end: int,
    implicit: bool,
    little: bool,
    *,
    top: bool,
    depth: int,
) -> int:
    """Step over the elements from ``pos``: to ``end`` (top level, or an item of defined
    length), or past the Item Delimitation Item of an item of undefined length (``end`` is
    then the end of the buffer). Returns where the walk stopped."""
    # One loop per VR encoding, with lookups hoisted: this runs once per element received.
    long_len = (_LE_LONG if little else _BE_LONG).unpack_from
    long_vrs = _LONG_VRS
    if implicit:
        tag_len = (_LE_TAG_LEN if little else _BE_TAG_LEN).unpack_from
        while pos < end:
            if pos + 8 > end:
                raise _Cut(f"an element header at offset {pos} is cut short ({end - pos} bytes)")
            group, element, length = tag_len(buf, pos)
            start = pos + 8
            if group == 0xFFFE:
                return _delimiter(group, element, pos, start, top)
            if length == _UNDEFINED:
                pos = _items(buf, start, end, True, little, depth + 1, group, element)
                continue
            pos = start + length
            if pos > end:
                raise _cut_value(group, element, start - 8, length, end - start)
    else:
        short = (_LE_SHORT if little else _BE_SHORT).unpack_from
        while pos < end:
            if pos + 8 > end:
                raise _Cut(f"an element header at offset {pos} is cut short ({end - pos} bytes)")
            group, element, vr, length = short(buf, pos)
            if group == 0xFFFE:
                # Items and delimiters carry no VR: tag and a 4-byte length (PS3.5 7.5).
                return _delimiter(group, element, pos, pos + 8, top)
            if vr in long_vrs:
                if pos + 12 > end:
                    raise _Cut(f"an element header at offset {pos} is cut short")
                (length,) = long_len(buf, pos + 8)
                start = pos + 12
                if length == _UNDEFINED:
                    # A sequence or encapsulated pixel data; an explicit UN of undefined
                    # length holds a sequence in Implicit VR Little Endian (PS3.5 6.2.2).
                    un = vr == b"UN"
                    pos = _items(buf, start, end, un, little or un, depth + 1, group, element)
                    continue
            else:
                start = pos + 8
            pos = start + length
            if pos > end:
                raise _cut_value(group, element, start - 8, length, end - start)
    if not top:
        raise _Cut("an item of undefined length has no Item Delimitation Item")
    return pos


def _delimiter(group: int, element: int, pos: int, after: int, top: bool) -> int:
    """An item or delimiter tag among elements: the end of an item of undefined length if
    it is an Item Delimitation Item there; anywhere else the structure is broken."""
    if (group << 16) | element == _ITEM_END and not top:
        return after
    raise _Cut(f"an item or delimiter tag ({group:04X},{element:04X}) at offset {pos}")


def _cut_value(group: int, element: int, offset: int, length: int, remain: int) -> _Cut:
    return _Cut(
        f"element ({group:04X},{element:04X}) at offset {offset} has a value of {length} "
        f"bytes; {remain} remain"
    )


def _items(
    buf: bytes | bytearray | memoryview | mmap.mmap,
    pos: int,
    end: int,
    implicit: bool,
    little: bool,
    depth: int,
    group: int,
    element: int,
) -> int:
    """Step over the items of a value of undefined length, past its Sequence Delimitation
    Item (PS3.5 7.5.2, A.4); returns the position after it."""
    if depth > _MAX_DEPTH:
        raise _Cut(f"sequences nested deeper than {_MAX_DEPTH} levels")
    tag_len = _LE_TAG_LEN if little else _BE_TAG_LEN
    where = f"({group:04X},{element:04X})"
    while True:
        if pos + 8 > end:
            raise _Cut(f"{where} of undefined length ends before its Sequence Delimitation Item")
        item_group, item_element, length = tag_len.unpack_from(buf, pos)
        tag = (item_group << 16) | item_element
        pos += 8
        if tag == _SEQUENCE_END:
            return pos
        if tag != _ITEM:
            raise _Cut(
                f"{where}: ({item_group:04X},{item_element:04X}) at offset {pos - 8} is not an item"
            )
        if length == _UNDEFINED:
            pos = _elements(buf, pos, end, implicit, little, top=False, depth=depth)
            continue
        pos += length
        if pos > end:
            raise _Cut(f"an item of {where} has {length} bytes; {end - pos + length} remain")


def check_file(path: str | Path, transfer_syntax: str | None = None) -> str | None:
    """``truncation`` for the data set of the Part 10 file at ``path``.

    The file is mapped, not read: stepping over a value of defined length touches no page of
    it, so a large image costs a few page reads. With ``transfer_syntax`` the data set
    starts after the file meta group if there is one, else at the start of the file;
    without it the file must have a meta group naming its syntax.
    """
    with open(path, "rb") as fp:
        size = os.fstat(fp.fileno()).st_size
        if size == 0:
            return "the file is empty"
        try:
            mapped = mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            # A file system that cannot map files (some FUSE and network mounts): read it.
            return _check_mapped(memoryview(fp.read()), transfer_syntax)
        with mapped:
            view = memoryview(mapped)
            try:
                return _check_mapped(view, transfer_syntax)
            finally:
                view.release()


def _check_mapped(view: memoryview, transfer_syntax: str | None) -> str | None:
    if transfer_syntax is not None and len(view) >= 144 and bytes(view[128:132]) == b"DICM":
        # The meta group's length (0002,0000), always first (PS3.10 7.1), says where the
        # data set starts: no need to walk the group when the syntax is known.
        tag, vr, length, group_length = _META_LENGTH.unpack_from(view, 132)
        if tag == 0x00000002 and vr == b"UL" and length == 4:
            offset = 144 + group_length
            if offset <= len(view):
                return truncation(view[offset:], transfer_syntax)
    parsed = parse_file_meta(view)
    offset = 0
    if parsed is not None:
        elements, offset = parsed
        if transfer_syntax is None and 0x00020010 in elements:
            value = elements[0x00020010]
            transfer_syntax = value.decode("ascii", "replace").rstrip("\x00 ")
    if transfer_syntax is None:
        return "no transfer syntax: no file meta group names one"
    return truncation(view[offset:], transfer_syntax)
