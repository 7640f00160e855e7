"""Reading a few top-level attributes of a Part 10 file, and nothing else (PS3.5 7, PS3.10 7).

An archive indexes a handful of attributes; a data set may also hold elements of hundreds of
megabytes (private OB data, sequences of them). pydicom's ``specific_tags`` skips the
defined-length elements it is not asked for, but still parses every sequence of undefined
length, items and all, into memory. Here the data set is walked element by element: an
element that is not wanted is passed by a seek, a sequence of undefined length by walking
its item and delimiter headers (PS3.5 7.5) without reading any value. Only the wanted
elements' bytes are read, then decoded by pydicom.

Files that are not Part 10, or whose data set is deflated (no seeking in a zlib stream),
are read by pydicom with ``specific_tags`` instead.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

from pydicom import dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from dicomio.dataset import parse_file_meta

__all__ = ["read_attributes"]

#: Explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2, Table 7.1-1).
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
_SPECIFIC_CHARACTER_SET = 0x00080005
#: A wanted value longer than this is not one the index can use (the longest of its VRs, LO
#: and PN, hold 64 characters a component group); it is passed by like the others.
_MAX_VALUE = 64 * 1024
#: Sequences nested deeper than this are refused rather than followed.
_MAX_DEPTH = 32
#: The Part 10 header (preamble and group 0002) is read in one piece of this size.
_HEAD = 64 * 1024


def read_attributes(path: str | Path, keywords: Iterable[str]) -> Dataset:
    """The top-level attributes ``keywords`` of a DICOM file, with its ``file_meta``.

    Raises ``ValueError`` for a file whose structure is broken (cut short, an item where an
    element should be, sequences nested without end).
    """
    wanted = {_SPECIFIC_CHARACTER_SET}
    for keyword in keywords:
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise ValueError(f"{keyword} is not a DICOM keyword")
        wanted.add(tag)
    with open(path, "rb") as fp:
        parsed = parse_file_meta(fp.read(_HEAD))
        if parsed is not None:
            meta_elements, offset = parsed
            syntax = meta_elements.get(0x00020010, b"").rstrip(b"\x00 ").decode("ascii", "replace")
            if syntax != DeflatedExplicitVRLittleEndian:
                implicit = syntax == ImplicitVRLittleEndian
                little = syntax != ExplicitVRBigEndian
                fp.seek(132)
                meta_bytes = fp.read(offset - 132)
                fp.seek(offset)
                raw = _wanted_elements(fp, implicit=implicit, little=little, wanted=wanted)
                ds = read_dataset(BytesIO(raw), implicit, little)
                ds.file_meta = FileMetaDataset(read_dataset(BytesIO(meta_bytes), False, True))
                return ds
    return dcmread(path, stop_before_pixels=True, specific_tags=sorted(wanted), defer_size=1024)


def _wanted_elements(fp: BinaryIO, *, implicit: bool, little: bool, wanted: set[int]) -> bytes:
    """The encoded bytes (header and value) of the wanted top-level elements, in order."""
    out = bytearray()
    while True:
        start = fp.tell()
        header = _element_header(fp, implicit=implicit, little=little)
        if header is None:
            break
        tag, vr, length = header
        if tag == _PIXEL_DATA:
            break
        if tag >> 16 == 0xFFFE:
            raise ValueError(f"an item or delimiter at the top level, at byte {start}")
        if length == _UNDEFINED:
            # A sequence (or UN, or encapsulated data) of undefined length: walk past it. The
            # contents of explicit VR UN of undefined length are implicit VR (PS3.5 6.2.2).
            _skip_items(fp, implicit=implicit or vr == b"UN", little=little, depth=1)
            continue
        if tag in wanted and length <= _MAX_VALUE:
            end = fp.tell() + length
            fp.seek(start)
            chunk = fp.read(end - start)
            if len(chunk) < end - start:
                raise ValueError("the data set is cut short")
            out += chunk
        else:
            fp.seek(length, 1)
    return bytes(out)


def _element_header(
    fp: BinaryIO, *, implicit: bool, little: bool
) -> tuple[int, bytes, int] | None:
    """(tag, VR or b"", length) of the next element, or None at the end of the file."""
    endian = "<" if little else ">"
    head = fp.read(8)
    if len(head) < 8:
        if head:
            raise ValueError("the data set is cut short in an element header")
        return None
    group, element = struct.unpack(endian + "HH", head[:4])
    tag = (group << 16) | element
    if implicit or group == 0xFFFE:
        # Items and delimiters have no VR in either encoding (PS3.5 7.5).
        return tag, b"", struct.unpack(endian + "I", head[4:])[0]
    vr = head[4:6]
    if vr in _LONG_VRS:
        more = fp.read(4)
        if len(more) < 4:
            raise ValueError("the data set is cut short in an element header")
        return tag, vr, struct.unpack(endian + "I", more)[0]
    return tag, vr, struct.unpack(endian + "H", head[6:])[0]


def _skip_items(fp: BinaryIO, *, implicit: bool, little: bool, depth: int) -> None:
    """Pass the items of a value of undefined length, up to its Sequence Delimitation Item."""
    if depth > _MAX_DEPTH:
        raise ValueError(f"sequences nested deeper than {_MAX_DEPTH}")
    while True:
        header = _element_header(fp, implicit=True, little=little)
        if header is None:
            raise ValueError("the data set ends inside a sequence")
        tag, _, length = header
        if tag == _SEQUENCE_END:
            return
        if tag != _ITEM:
            raise ValueError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) where an item should be")
        if length != _UNDEFINED:
            fp.seek(length, 1)  # an item of defined length, or a fragment of encapsulated data
            continue
        _skip_item_elements(fp, implicit=implicit, little=little, depth=depth)


def _skip_item_elements(fp: BinaryIO, *, implicit: bool, little: bool, depth: int) -> None:
    """Pass the elements of an item of undefined length, up to its Item Delimitation Item."""
    while True:
        header = _element_header(fp, implicit=implicit, little=little)
        if header is None:
            raise ValueError("the data set ends inside an item")
        tag, vr, length = header
        if tag == _ITEM_END:
            return
        if length == _UNDEFINED:
            _skip_items(fp, implicit=implicit or vr == b"UN", little=little, depth=depth + 1)
        else:
            fp.seek(length, 1)
