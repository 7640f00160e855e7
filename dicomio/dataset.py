"""Data sets on the wire and on disk: encoding per transfer syntax, and Part 10 files.

DIMSE carries data sets encoded in the presentation context's transfer syntax, without
preamble or file meta information (PS3.7 6.3.1). A C-STORE SCP that only stores an instance
never needs to decode it: it writes a file meta header (PS3.10 7.1) and then the received
bytes as they are. A C-STORE SCU sending a file whose transfer syntax was accepted sends
the bytes after the file meta header as they are, read in chunks.

This module does file I/O only in the functions that say so; encoding and decoding are pure.
"""

from __future__ import annotations

import array
import errno
import functools
import os
import stat
import struct
import zlib
from collections.abc import Iterable
from decimal import Decimal
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO

import attrs
from pydicom.charset import (
    STAND_ALONE_ENCODINGS,
    convert_encodings,
    default_encoding,
    encode_string,
    python_encoding,
)
from pydicom.dataelem import (
    DataElement,
    RawDataElement,
    convert_raw_data_element,
    empty_value_for_VR,
)
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import correct_ambiguous_vr, write_dataset, write_file_meta_info
from pydicom.multival import MultiValue
from pydicom.tag import _LUT_DESCRIPTOR_TAGS, BaseTag
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pydicom.valuerep import AMBIGUOUS_VR, EXPLICIT_VR_LENGTH_32, VR, PersonName

__all__ = [
    "FileInfo",
    "part10_header",
    "UNCOMPRESSED",
    "decode_dataset",
    "encode_dataset",
    "file_meta_for",
    "load_file",
    "parse_file_meta",
    "read_file_info",
    "write_part10_header",
]

#: Transfer syntaxes that any uncompressed data set can be converted between.
UNCOMPRESSED: frozenset[UID] = frozenset(
    {
        ImplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
    }
)

#: dicomio's implementation class UID (a UUID-derived UID under 2.25, PS3.5 B.2).
IMPLEMENTATION_CLASS_UID = UID("2.25.203719408394613617014226413963786045915")
IMPLEMENTATION_VERSION_NAME = "DICOMIO_010"


@functools.lru_cache(maxsize=64)
def _encoding(transfer_syntax: str) -> tuple[bool, bool, bool]:
    """(implicit VR, little endian, deflated) for an uncompressed or encapsulated syntax."""
    ts = str(transfer_syntax)
    if ts == ImplicitVRLittleEndian:
        return True, True, False
    if ts == ExplicitVRBigEndian:
        return False, False, False
    if ts == DeflatedExplicitVRLittleEndian:
        return False, True, True
    # Explicit VR Little Endian and every encapsulated (compressed) syntax.
    return False, True, False


def encode_dataset(ds: Dataset, transfer_syntax: UID, *, convert_raw: bool = False) -> bytes:
    """Encode ``ds`` (without file meta) in ``transfer_syntax`` (PS3.5 section 10).

    pydicom writes OB/OW/OL/OF/OD/OV values as the raw bytes it holds, so when the target
    byte order differs from the one those bytes were read in, they are swapped here on a
    copy (PS3.5 7.3): pixel values survive a Little to Big Endian conversion.

    In Little Endian the direct encoder below gives pydicom's bytes without pydicom's
    writer; where it cannot be sure to, pydicom's writer encodes the data set, after
    converting every raw element first if ``convert_raw``.
    """
    implicit, little, deflated = _encoding(transfer_syntax)
    data = _encode_flat(ds, implicit=implicit) if little else None
    if data is None:
        if convert_raw:
            # pydicom's writer fails on a raw element without a VR going to Explicit VR
            # (pydicom's SC_rgb_jpeg.dcm: meta Explicit, body Implicit): converting every
            # element gives each its VR from the dictionary, as reading it would.
            for _ in ds.iterall():
                pass
        fp = DicomBytesIO()
        fp.is_implicit_VR = implicit
        fp.is_little_endian = little
        source_little = _source_little_endian(ds)
        # write_dataset refuses a data set whose own encoding flags disagree with the target.
        ds = _without_meta(ds)
        if source_little != little:
            ds = _byte_swapped(ds, bits_allocated=int(ds.get("BitsAllocated", 16) or 16))
        write_dataset(fp, ds)
        data = fp.getvalue()
    if deflated:
        compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
        data = compressor.compress(data) + compressor.flush()
        # Every value field and PDV fragment is even in length (PS3.5 7.1, PS3.8 E.1); the
        # deflated stream ends wherever zlib stops, so pad it as PS3.5 A.5 allows.
        if len(data) % 2:
            data += b"\x00"
    return data


#: Raw-byte VRs whose values are words in the data set's byte order, and their item codes:
#: each swaps within its own word size (PS3.5 6.2). Pixel Data is OB or OW, never OL, so
#: 32-bit pixel cells swap as two 16-bit words, as DCMTK's dcmconv does (pydicom reads Big
#: Endian 32-bit cells whole instead); tests/test_byte_order.py holds this to dcmconv.
_WORD_VRS = {"OW": "H", "OL": "I", "OF": "f", "OD": "d", "OV": "Q"}


def _source_little_endian(ds: Dataset) -> bool:
    """The byte order raw values in ``ds`` are held in: its file's, else as read, else little."""
    meta = getattr(ds, "file_meta", None)
    ts = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if ts is not None:
        return UID(str(ts)) != ExplicitVRBigEndian
    little = ds.original_encoding[1]
    return True if little is None else bool(little)


def _byte_swapped(ds: Dataset, *, bits_allocated: int) -> Dataset:
    """A copy of ``ds`` with every word-valued raw element byte-swapped (sequences too)."""
    copy = Dataset()
    for elem in ds:
        vr = elem.VR
        if vr == "OB or OW":  # Pixel Data read as Implicit VR: words when over 8 bits
            vr = "OW" if bits_allocated > 8 else "OB"
        code = _WORD_VRS.get(vr)
        if code is not None and isinstance(elem.value, bytes) and elem.value:
            words = array.array(code)
            if len(elem.value) % words.itemsize:
                raise ValueError(f"{elem.tag} has a length that is not a whole number of words")
            words.frombytes(elem.value)
            words.byteswap()
            copy.add(DataElement(elem.tag, vr, words.tobytes()))
        elif vr == "SQ":
            copy.add(
                DataElement(
                    elem.tag,
                    "SQ",
                    [_byte_swapped(item, bits_allocated=bits_allocated) for item in elem.value],
                )
            )
        else:
            copy.add(elem)
    return copy


def decode_dataset(data: bytes | memoryview, transfer_syntax: UID) -> Dataset:
    """Decode a data set received in ``transfer_syntax``; elements are read lazily by pydicom."""
    implicit, little, deflated = _encoding(transfer_syntax)
    raw = bytes(data)
    if deflated:
        raw = zlib.decompress(raw, -zlib.MAX_WBITS)
    ds = _decode_flat(raw, implicit=implicit) if little else None
    if ds is None:
        ds = read_dataset(BytesIO(raw), is_implicit_VR=implicit, is_little_endian=little)
        ds.set_original_encoding(implicit, little, ds._character_set)
    return ds


# -- data sets encoded and decoded directly ----------------------------------------------------
#
# A C-FIND SCP answers thousands of small identifiers, each a handful of text and number
# elements. pydicom's writer spends about 60 us on one (a buffer object, a character set
# conversion and a dozen checks per element) and its reader about 15 us: more than all the
# rest of a pending response. A C-STORE SCU sending a Dataset read from a file pays the same
# per element, and copies the pixel data four times through its buffers.
#
# These two functions produce exactly what pydicom produces, for little endian data sets:
# the encoder takes raw elements (written as they stand where pydicom would, converted where
# it would convert them), O* and UN values, encapsulated pixel data, sequences, private tags
# and the character sets below; for anything else (ambiguous VRs, buffered values, lengths
# pydicom would rewrite, character sets it would correct ...) it answers None and the caller
# uses pydicom. The decoder takes flat data sets of defined length only. tests/
# test_dataset_flat.py holds them to pydicom's bytes and values, over a table, over
# Hypothesis-drawn data sets and over pydicom's own test files.


class _Fallback(Exception):
    """Something only pydicom's writer encodes exactly: it encodes the whole data set."""


class _Ambiguous(_Fallback):
    """An element whose VR depends on others (US or SS, OB or OW ..., PS3.5 6.2)."""


#: pydicom's Python codec names whose encoding of ASCII text is that text, with no escape
#: sequence: when one is the data set's first, its ASCII values need no codec at all.
_ASCII_CODECS = frozenset({"iso8859", "latin_1", "UTF8"})
_DEFAULT_CODECS: tuple[str, ...] = (default_encoding,)
#: pydicom's default_encoding, "iso8859", is Python's latin-1 codec; spelt "latin-1",
#: ``str.encode`` takes its built-in fast path instead of a codec registry lookup.
_LATIN_1 = "latin-1"

_STRING, _TEXT, _PERSON_NAME, _NUMBER_STRING, _BINARY, _TAG, _SEQUENCE, _BYTES = range(8)
#: VR -> (how its value is written, padding or struct code), following pydicom's writers.
_KINDS: dict[str, tuple[int, Any]] = {
    **{vr: (_STRING, b" ") for vr in ("AE", "AS", "CS", "DA", "DT", "TM", "UR")},
    "UI": (_STRING, b"\x00"),
    **{vr: (_TEXT, b" ") for vr in ("LO", "LT", "SH", "ST", "UC", "UT")},
    "PN": (_PERSON_NAME, b" "),
    "IS": (_NUMBER_STRING, b" "),
    "DS": (_NUMBER_STRING, b" "),
    **{
        vr: (_BINARY, code)
        for vr, code in (
            ("US", "H"),
            ("UL", "L"),
            ("SS", "h"),
            ("SL", "l"),
            ("FL", "f"),
            ("FD", "d"),
            ("SV", "q"),
            ("UV", "Q"),
        )
    },
    "AT": (_TAG, None),
    "SQ": (_SEQUENCE, None),
    # Written as the bytes held; pydicom pads the O* values to even length, never UN.
    **{vr: (_BYTES, b"\x00") for vr in ("OB", "OW", "OF", "OD", "OL", "OV")},
    "UN": (_BYTES, None),
}
#: VRs with a 4-byte length in explicit VR (PS3.5 7.1.2), as pydicom lists them.
_LONG_VRS_STR = frozenset(str(vr) for vr in EXPLICIT_VR_LENGTH_32)
_VR_BYTES = {vr: vr.encode("ascii") for vr in _KINDS}
_VR_NAMES = {vr.encode("ascii"): str(vr) for vr in VR}
_MULTI = (list, tuple, MultiValue)

_IMPLICIT_HEADER = struct.Struct("<HHL")
_SHORT_HEADER = struct.Struct("<HH2sH")
_LONG_HEADER = struct.Struct("<HH2sHL")
_UL_LE = struct.Struct("<L")
#: Item, Item Delimitation and Sequence Delimitation items (PS3.5 7.5), little endian.
_ITEM_TAG = b"\xfe\xff\x00\xe0"
_ITEM_END = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
_SEQUENCE_END = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_UNDEFINED = 0xFFFFFFFF
_CHARSET_TAG = BaseTag(0x00080005)  # Specific Character Set
_PIXEL_DATA = 0x7FE00010


def _encode_flat(ds: Dataset, *, implicit: bool) -> bytes | None:
    """``ds`` (file meta left out) as pydicom writes it in little endian, or None."""
    # A C-FIND identifier has neither: the common case skips pydicom's slow __getattr__.
    state = ds.__dict__
    if ("file_meta" in state or state.get("_read_little") is False) and (
        not _source_little_endian(ds)
    ):
        return None  # its O* values are swapped on the way (encode_dataset)
    for attempt in range(2):
        parts: list[bytes] = []
        conversions = [0]
        try:
            _encode_elements(ds, implicit, None, parts, conversions)
        except _Ambiguous:
            # pydicom's writer resolves the ambiguous VRs in a data set it does not write
            # as read before anything else (a new one: Pixel Data set as bytes is "OB or
            # OW"); resolved the same way, before any raw element was converted, the data
            # set is what pydicom's writer goes on to encode.
            if attempt or conversions[0] or _writes_raw(ds, implicit) or _has_meta(ds):
                return None
            try:
                correct_ambiguous_vr(ds, True)
            except Exception:
                return None  # pydicom's writer raises it again, in its own words
            continue
        except _Fallback:
            return None
        except Exception:
            return None  # converting a raw element failed: pydicom's writer fails the same
        return b"".join(parts)
    return None


def _has_meta(ds: Dataset) -> bool:
    return any(tag >> 16 == 0x0002 for tag in ds._dict)


@functools.lru_cache(maxsize=64)
def _codecs_for_terms(terms: tuple[str, ...]) -> tuple[str, ...] | None:
    """pydicom's codecs for a (0008,0005) value; None where it would correct or warn."""
    if not all(term in python_encoding for term in terms):
        return None  # pydicom corrects a misspelt term, with a warning
    if len(terms) > 1 and any(term in STAND_ALONE_ENCODINGS for term in terms):
        return None  # pydicom drops what cannot be a code extension, with a warning
    codecs = tuple(convert_encodings(list(terms)))
    if len(codecs) > 1 and any(codec in STAND_ALONE_ENCODINGS for codec in codecs):
        # A sequence item inheriting these has them converted again, and "ISO 2022 GBK" is
        # then "GBK", which pydicom drops from a list (with a warning).
        return None
    return codecs


def _codecs_for(charset: Any) -> tuple[str, ...]:
    if charset.__class__ is not DataElement:
        raise _Fallback
    value = charset.value
    if not value:
        return _DEFAULT_CODECS
    if isinstance(value, str):
        terms: tuple[str, ...] = (value,)
    elif isinstance(value, _MULTI) and all(isinstance(term, str) for term in value):
        terms = tuple(value)
    else:
        raise _Fallback
    codecs = _codecs_for_terms(terms)
    if codecs is None:
        raise _Fallback
    return codecs


def _writes_raw(ds: Dataset, implicit: bool) -> bool:
    """Whether pydicom's ``write_dataset`` writes ``ds``'s raw elements as they stand.

    It does when the data set was read in the target encoding and its character set is
    unchanged; otherwise it converts each raw element and encodes the value anew.
    """
    return ds.original_encoding == (implicit, True) and (
        ds.original_character_set == ds._character_set
    )


def _encode_elements(
    ds: Dataset,
    implicit: bool,
    inherited: tuple[str, ...] | None,
    parts: list[bytes],
    conversions: list[int],
) -> None:
    """Append ``ds``'s elements to ``parts``; an item inherits its parent's character set.

    ``conversions[0]`` counts the raw elements converted on the way.
    """
    elements = ds._dict
    top = inherited is None
    raw_as_is: bool | None = None  # found at the first raw element: most data sets have none
    charset = elements.get(_CHARSET_TAG)
    if charset is not None and charset.__class__ is RawDataElement:
        charset = ds[_CHARSET_TAG]  # pydicom's writer converts it first, in place
    codecs = (inherited or _DEFAULT_CODECS) if charset is None else _codecs_for(charset)
    codec_list = list(codecs)  # what pydicom hands to encode_string and PersonName.encode
    ascii_codec = codecs[0] in _ASCII_CODECS
    kinds, append = _KINDS, parts.append
    # key=int: BaseTag's own ordering is a Python method, slow for a sort's comparisons.
    for tag in sorted(elements, key=int):
        elem = elements[tag]
        group = tag >> 16
        element = tag & 0xFFFF
        if group == 0x0002:
            if not top:
                raise _Fallback
            continue  # file meta: never part of a DIMSE data set (PS3.7 6.3.1)
        if element == 0 and group > 6:
            continue  # retired group lengths, which pydicom does not write (PS3.5 7.2)
        if elem.__class__ is RawDataElement:
            if raw_as_is is None:
                # With file meta in it, encode_dataset gives pydicom a copy without: a new
                # Dataset, every element converted.
                raw_as_is = not (top and _has_meta(ds)) and _writes_raw(ds, implicit)
            # pydicom takes a value of None (how it reads an empty one) for a deferred read,
            # and converts the element: a UN one gets its VR from the dictionary.
            if raw_as_is and elem.value is not None:
                _append_raw(elem, implicit, parts)
                continue
            elem = ds[tag]  # converted (and kept converted) as pydicom's writer does
            conversions[0] += 1
        if elem.__class__ is not DataElement:
            raise _Fallback
        vr = elem.VR
        found = kinds.get(vr)
        if found is None:
            raise _Ambiguous if vr in AMBIGUOUS_VR else _Fallback
        kind, arg = found
        undefined = elem.is_undefined_length
        value = elem._value  # what the ``value`` property returns, without the call
        if kind == _BYTES:
            _append_bytes(tag, vr, value, arg, undefined, implicit, parts)
            continue
        if undefined and kind != _SEQUENCE:
            raise _Fallback
        try:
            if kind == _STRING:  # the usual case: a str is encoded inline
                data = value.encode(_LATIN_1) if isinstance(value, str) else _string_value(value)
            elif kind == _TEXT:
                data = _text_value(value, codec_list, ascii_codec)
            elif kind == _PERSON_NAME:
                data = _person_name_value(value, codec_list)
            elif kind == _NUMBER_STRING:
                data = _number_string_value(value)
            elif kind == _BINARY:
                data = _binary_value(value, arg, tag)
            elif kind == _TAG:
                data = _tag_value(value)
            else:
                data = _sequence_value(value, implicit, codecs, conversions)
        except _Fallback:
            raise
        except Exception:
            raise _Fallback from None  # pydicom raises (or warns) in its own words
        if len(data) % 2 and arg.__class__ is bytes:
            data += arg
        length = _UNDEFINED if undefined else len(data)
        if implicit:
            append(_IMPLICIT_HEADER.pack(group, element, length))
        elif vr in _LONG_VRS_STR:
            append(_LONG_HEADER.pack(group, element, _VR_BYTES[vr], 0, length))
        elif length > 0xFFFF:
            raise _Fallback  # pydicom rewrites it as UN with a warning (PS3.5 6.2.2)
        else:
            append(_SHORT_HEADER.pack(group, element, _VR_BYTES[vr], length))
        if data:
            append(data)
        if undefined:
            append(_SEQUENCE_END)


def _append_raw(elem: Any, implicit: bool, parts: list[bytes]) -> None:
    """pydicom's ``write_data_element`` for a raw element: its value as read, unpadded."""
    value = elem.value
    if value.__class__ is not bytes:
        raise _Fallback
    tag = elem.tag
    undefined = elem.length == _UNDEFINED
    if undefined and tag == _PIXEL_DATA and not value.startswith(_ITEM_TAG):
        raise _Fallback  # pydicom refuses Pixel Data of undefined length not encapsulated
    length = _UNDEFINED if undefined else len(value)
    if implicit:
        parts.append(_IMPLICIT_HEADER.pack(tag >> 16, tag & 0xFFFF, length))
    else:
        vr = elem.VR
        if not isinstance(vr, str) or len(vr) != 2:
            raise _Fallback  # read without a VR (pydicom's writer fails on it), or ambiguous
        if vr in _LONG_VRS_STR:
            parts.append(_LONG_HEADER.pack(tag >> 16, tag & 0xFFFF, vr.encode(), 0, length))
        elif undefined or length > 0xFFFF:
            raise _Fallback  # pydicom writes these oddly or as UN, with a warning
        else:
            parts.append(_SHORT_HEADER.pack(tag >> 16, tag & 0xFFFF, vr.encode(), length))
    if value:
        parts.append(value)
    if undefined:
        parts.append(_SEQUENCE_END)


def _append_bytes(
    tag: int,
    vr: str,
    value: Any,
    pad: bytes | None,
    undefined: bool,
    implicit: bool,
    parts: list[bytes],
) -> None:
    """pydicom's ``write_OBvalue``, ``write_OWvalue`` and ``write_UN``: the bytes held."""
    if value is None:
        value = b""
    elif value.__class__ is not bytes:
        raise _Fallback  # a buffered value, a bytearray, a list ...
    if undefined and tag == _PIXEL_DATA and not value.startswith(_ITEM_TAG):
        raise _Fallback  # pydicom refuses Pixel Data of undefined length not encapsulated
    # The pad goes in a part of its own: pixel data is not copied to grow it by a byte.
    padded = pad is not None and len(value) % 2 == 1
    length = _UNDEFINED if undefined else len(value) + padded
    if implicit:
        parts.append(_IMPLICIT_HEADER.pack(tag >> 16, tag & 0xFFFF, length))
    else:
        parts.append(_LONG_HEADER.pack(tag >> 16, tag & 0xFFFF, _VR_BYTES[vr], 0, length))
    if value:
        parts.append(value)
    if padded:
        parts.append(b"\x00")
    if undefined:
        parts.append(_SEQUENCE_END)


def _string_value(value: Any) -> bytes:
    """pydicom's ``write_string`` (AE, AS, CS, DA, DT, TM, UI, UR held as text)."""
    if value is None:
        return b""
    if isinstance(value, str):
        text = value
    elif isinstance(value, _MULTI) and all(isinstance(v, str) for v in value):
        text = "\\".join(value)
    else:
        raise _Fallback  # dates as objects, bytes ...
    return text.encode(_LATIN_1)


def _text_value(value: Any, codecs: list[str], ascii_codec: bool) -> bytes:
    """pydicom's ``write_text`` (LO, LT, SH, ST, UC, UT) in the data set's character set."""
    if value is None:
        return b""
    if isinstance(value, str):
        if ascii_codec and value.isascii():
            return value.encode("ascii")
        return encode_string(value, codecs)
    if isinstance(value, _MULTI) and all(isinstance(v, str) for v in value):
        return b"\\".join(
            [
                v.encode("ascii") if ascii_codec and v.isascii() else encode_string(v, codecs)
                for v in value
            ]
        )
    raise _Fallback


def _person_name_value(value: Any, codecs: list[str]) -> bytes:
    """pydicom's ``write_PN``: each name as ``PersonName.encode`` gives it."""
    if value is None:
        return b""
    if isinstance(value, PersonName):
        return value.encode(codecs) if value else b""
    if isinstance(value, _MULTI):
        if not value:
            return b""
        # pydicom takes a one-item list for a single name, and fails on it.
        if len(value) > 1 and all(isinstance(v, PersonName) for v in value):
            return b"\\".join([v.encode(codecs) for v in value])
    raise _Fallback


def _number_string_value(value: Any) -> bytes:
    """pydicom's ``write_number_string`` (IS, DS): the original string where there is one."""
    if value is None:
        return b""
    if isinstance(value, _MULTI):
        text = "\\".join(
            v.original_string if hasattr(v, "original_string") else str(v) for v in value
        )
    elif isinstance(value, (str, int, float, Decimal)):
        text = value.original_string if hasattr(value, "original_string") else str(value)
    else:
        raise _Fallback
    return bytes(text, _LATIN_1)


def _binary_value(value: Any, code: str, tag: int) -> bytes:
    """pydicom's ``write_numbers`` (US, UL, SS, SL, FL, FD, SV, UV), little endian."""
    if value is None or isinstance(value, str):
        if value:
            raise _Fallback
        return b""
    if isinstance(value, (list, MultiValue)):
        if code == "h" and tag in _LUT_DESCRIPTOR_TAGS:
            raise _Fallback  # pydicom writes the first value as US
        return struct.pack(f"<{len(value)}{code}", *value)
    if isinstance(value, (int, float)):
        return struct.pack("<" + code, value)
    raise _Fallback


def _tag_value(value: Any) -> bytes:
    """pydicom's ``write_ATvalue`` for tags given as numbers: group, then element."""
    if value is None:
        return b""
    if isinstance(value, (list, MultiValue)) and all(isinstance(v, int) for v in value):
        return b"".join([struct.pack("<HH", v >> 16, v & 0xFFFF) for v in value])
    if isinstance(value, int) and 0 <= value <= 0xFFFFFFFF:
        return struct.pack("<HH", value >> 16, value & 0xFFFF)
    raise _Fallback  # keywords, (group, element) pairs ...


def _sequence_value(
    value: Any, implicit: bool, codecs: tuple[str, ...], conversions: list[int]
) -> bytes:
    """pydicom's ``write_sequence``: items of defined length unless marked undefined."""
    if not value:
        return b""
    parts: list[bytes] = []
    for item in value:
        if not isinstance(item, Dataset):
            raise _Fallback
        body: list[bytes] = []
        _encode_elements(item, implicit, codecs, body, conversions)
        data = b"".join(body)
        if getattr(item, "is_undefined_length_sequence_item", False):
            parts += [_ITEM_TAG, b"\xff\xff\xff\xff", data, _ITEM_END]
        else:
            parts += [_ITEM_TAG, _UL_LE.pack(len(data)), data]
    return b"".join(parts)


#: A blank Dataset's instance attributes, so that one can be made without ``__init__``'s
#: dozen ``Dataset.__setattr__`` calls; mutable ones are copied for each new Dataset.
_BLANK = dict(Dataset().__dict__)
_MUTABLE_BLANK = [k for k, v in _BLANK.items() if isinstance(v, (dict, list, set))]
#: Tags as pydicom keys them, made once (a bounded cache): the same few recur in every
#: identifier, and a dict lookup is cheaper than making a BaseTag.
_TAGS: dict[int, BaseTag] = {}


def _new_dataset(elements: dict[BaseTag, Any], implicit: bool) -> Dataset:
    """``Dataset(elements)`` as ``decode_dataset`` leaves it when there is no (0008,0005)."""
    ds = Dataset.__new__(Dataset)
    state = _BLANK.copy()
    for key in _MUTABLE_BLANK:
        state[key] = state[key].copy()
    state["_dict"] = elements
    state["_parent_encoding"] = default_encoding
    # set_original_encoding(implicit, True, default_encoding), without __setattr__.
    state["_read_implicit"] = implicit
    state["_read_little"] = True
    state["_read_charset"] = default_encoding
    ds.__dict__.update(state)
    return ds


def _decode_flat(raw: bytes, *, implicit: bool) -> Dataset | None:
    """What ``decode_dataset`` made of little endian ``raw`` with pydicom, or None.

    Every element is left raw (decoded by pydicom when first used), as pydicom leaves it.
    None for what pydicom reads with care or with a warning: undefined lengths, unknown or
    switched VRs, values cut short, bytes left over.
    """
    end = len(raw)
    if end >= 6 and implicit == (0x40 < raw[4] < 0x5B and 0x40 < raw[5] < 0x5B):
        return None  # pydicom's check of the first element's VR found the other encoding
    elements: dict[BaseTag, Any] = {}
    offset = 0
    vr: str | None = None
    make = tuple.__new__
    while offset + 8 <= end:
        if implicit:
            group, element, length = _IMPLICIT_HEADER.unpack_from(raw, offset)
            offset += 8
        else:
            group, element, vr_bytes, length = _SHORT_HEADER.unpack_from(raw, offset)
            offset += 8
            vr = _VR_NAMES.get(vr_bytes)
            if vr is None:
                return None
            if vr in _LONG_VRS_STR:
                if offset + 4 > end:
                    return None
                (length,) = _UL_LE.unpack_from(raw, offset)
                offset += 4
        number = group << 16 | element
        if length == _UNDEFINED or offset + length > end or number == 0xFFFEE00D:
            return None
        tag = _TAGS.get(number)
        if tag is None:
            tag = BaseTag(number)
            if len(_TAGS) < 4096:
                _TAGS[number] = tag
        value = raw[offset : offset + length] if length else empty_value_for_VR(vr, raw=True)
        # RawDataElement(tag, vr, length, value, offset, implicit, True), minus the
        # keyword-argument handling of a NamedTuple's __new__.
        elements[tag] = make(
            RawDataElement, (tag, vr, length, value, offset, implicit, True, True, False)
        )
        offset += length
    if offset != end:
        return None
    ds = _new_dataset(elements, implicit)
    if _CHARSET_TAG in elements:
        # What read_dataset and decode_dataset do with it, in the same order.
        charset = convert_raw_data_element(elements[_CHARSET_TAG]).value
        ds.set_original_encoding(implicit, True, convert_encodings(charset))
        ds.set_original_encoding(implicit, True, ds._character_set)
    return ds


def _without_meta(ds: Dataset) -> Dataset:
    # keys() yields tags without converting raw elements, unlike iterating the Dataset.
    if not any(tag.group == 0x0002 for tag in ds.keys()):  # noqa: SIM118
        return ds
    copy = Dataset()
    for elem in ds:
        if elem.tag.group != 0x0002:
            copy.add(elem)
    return copy


def file_meta_for(
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax: str,
    *,
    source_ae_title: str | None = None,
) -> FileMetaDataset:
    """File meta information for a received instance (PS3.10 7.1)."""
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    if source_ae_title:
        meta.SourceApplicationEntityTitle = source_ae_title
    return meta


def write_part10_header(fp: BinaryIO, meta: FileMetaDataset) -> None:
    """Write the 128-byte preamble, ``DICM`` and the file meta group (PS3.10 7.1)."""
    fp.write(b"\x00" * 128 + b"DICM")
    buf = DicomBytesIO()
    write_file_meta_info(buf, meta, enforce_standard=True)
    fp.write(buf.getvalue())


def _meta_element(tag: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian element of the file meta group (PS3.10 7.1)."""
    group, element = tag >> 16, tag & 0xFFFF
    if vr == b"OB":
        return struct.pack("<HH2sHI", group, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def _padded(text: str, pad: bytes) -> bytes:
    data = text.encode("ascii")
    return data + pad if len(data) % 2 else data


def part10_header(
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax: str,
    *,
    source_ae_title: str | None = None,
) -> bytes:
    """Preamble, ``DICM`` and the file meta group, encoded directly (PS3.10 7.1).

    The same content as ``write_part10_header(file_meta_for(...))`` without building a
    pydicom Dataset: a C-STORE SCP writes one of these per received instance.
    """
    body = b"".join(
        [
            _meta_element(0x00020001, b"OB", b"\x00\x01"),
            _meta_element(0x00020002, b"UI", _padded(sop_class_uid, b"\x00")),
            _meta_element(0x00020003, b"UI", _padded(sop_instance_uid, b"\x00")),
            _meta_element(0x00020010, b"UI", _padded(transfer_syntax, b"\x00")),
            _meta_element(0x00020012, b"UI", _padded(IMPLEMENTATION_CLASS_UID, b"\x00")),
            _meta_element(0x00020013, b"SH", _padded(IMPLEMENTATION_VERSION_NAME, b" ")),
            _meta_element(0x00020016, b"AE", _padded(source_ae_title, b" "))
            if source_ae_title
            else b"",
        ]
    )
    group_length = _meta_element(0x00020000, b"UL", struct.pack("<I", len(body)))
    return b"\x00" * 128 + b"DICM" + group_length + body


def write_part10(path: Path, meta: FileMetaDataset, chunks: Iterable[bytes | memoryview]) -> None:
    """Write a Part 10 file from a meta header and the data set bytes as received."""
    with open(path, "wb") as fp:
        write_part10_header(fp, meta)
        for chunk in chunks:
            fp.write(chunk)


@attrs.frozen(kw_only=True)
class FileInfo:
    """Where a Part 10 file's data set starts, and what it is."""

    path: Path
    sop_class_uid: UID
    sop_instance_uid: UID
    transfer_syntax: UID
    dataset_offset: int
    dataset_length: int


#: VRs whose explicit VR little endian header has a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"}
)


def parse_file_meta(
    data: bytes | bytearray | memoryview,
) -> tuple[dict[int, bytes], int] | None:
    """The file meta elements of a Part 10 file's first bytes, and where the data set starts.

    A direct parse of group 0002 (explicit VR little endian, PS3.10 7.1): no pydicom
    Dataset. None when the bytes are not a Part 10 header or are cut short.
    """
    view = memoryview(data)
    if len(view) < 144 or bytes(view[128:132]) != b"DICM":
        return None
    elements: dict[int, bytes] = {}
    offset = 132
    while offset + 8 <= len(view):
        group, element = struct.unpack_from("<HH", view, offset)
        if group != 0x0002:
            return elements, offset
        vr = bytes(view[offset + 4 : offset + 6])
        if vr in _LONG_VRS:
            if offset + 12 > len(view):
                return None
            (length,) = struct.unpack_from("<I", view, offset + 8)
            start = offset + 12
        else:
            (length,) = struct.unpack_from("<H", view, offset + 6)
            start = offset + 8
        if start + length > len(view):
            return None
        elements[(group << 16) | element] = bytes(view[start : start + length])
        offset = start + length
    return elements, offset


def load_file(
    path: str | Path, whole_limit: int
) -> tuple[FileInfo, bytes | bytearray | None] | None:
    """A Part 10 file's ``FileInfo`` and, if its size is at most ``whole_limit``, its bytes.

    One open and read, for the C-STORE SCU: a small file is read whole and its meta group
    parsed from memory; a larger one has only its head read. None if it is not Part 10.
    """
    path = Path(path)
    with open(path, "rb") as fp:
        size = os.fstat(fp.fileno()).st_size
        data = fp.read() if size <= whole_limit else fp.read(65536)
    return file_info(path, data, size, whole=size <= whole_limit)


#: os.preadv's flag for "only what the page cache holds" (Linux 4.14+), None elsewhere.
_RWF_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None) if hasattr(os, "preadv") else None


def read_if_cached(path: Path, limit: int) -> bytearray | None:
    """The whole file, if it is at most ``limit`` bytes and all in the page cache; else None.

    For reading on the event loop: the read itself never waits for a disk (``preadv`` with
    ``RWF_NOWAIT`` fails instead), so a hop to a worker thread, which costs as much as
    reading a 0.5 MB instance from memory, is left for files that need one. Opening the
    file and ``fstat`` are done here too; they touch only metadata, which the system caches
    as well. None on any error or where the flag is missing; the caller's thread path then
    does the real read and reports what is wrong.
    """
    global _RWF_NOWAIT
    flag = _RWF_NOWAIT
    if flag is None:
        return None
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (reads of a regular file
        # ignore the flag); anything but a regular file is left to the thread path.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        status = os.fstat(fd)
        size = status.st_size
        if size > limit or not stat.S_ISREG(status.st_mode):
            return None
        data = bytearray(size)
        view = memoryview(data)
        done = 0
        while done < size:
            count = os.preadv(fd, [view[done:]], done, flag)
            if count <= 0:
                return None  # the file shrank meanwhile
            done += count
        return data
    except BlockingIOError:
        return None  # not (all) in the page cache
    except OSError as exc:
        if exc.errno == errno.EOPNOTSUPP:
            _RWF_NOWAIT = None  # this system will not do it: stop asking
        return None
    finally:
        os.close(fd)


def file_info(
    path: Path, data: bytes | bytearray, size: int, *, whole: bool = True
) -> tuple[FileInfo, bytes | bytearray | None] | None:
    """``load_file``'s result from bytes already read: the file whole, or its head."""
    parsed = parse_file_meta(data)
    if parsed is None:
        return None
    elements, offset = parsed

    def uid(tag: int) -> UID | None:
        value = elements.get(tag)
        return UID(value.decode("ascii", "replace").rstrip("\x00 ")) if value else None

    sop_class, sop_instance, ts = uid(0x00020002), uid(0x00020003), uid(0x00020010)
    if sop_class is None or sop_instance is None or ts is None:
        return None
    info = FileInfo(
        path=path,
        sop_class_uid=sop_class,
        sop_instance_uid=sop_instance,
        transfer_syntax=ts,
        dataset_offset=offset,
        dataset_length=size - offset,
    )
    return info, (data if whole else None)


def read_file_info(path: str | Path) -> FileInfo | None:
    """Read a Part 10 file's meta header only (PS3.10 7.1), without touching the data set.

    Returns None when the file has no ``DICM`` prefix or no usable meta group, in which case
    the caller falls back to a full read. Reads at most the meta group.
    """
    path = Path(path)
    with open(path, "rb") as fp:
        head = fp.read(132 + 12)
        if len(head) < 144 or head[128:132] != b"DICM":
            return None
        # (0002,0000) UL, explicit VR little endian: tag, 'UL', length 4, value.
        tag, vr, length, group_length = struct.unpack_from("<I2sHI", head, 132)
        if tag != 0x00000002 or vr != b"UL" or length != 4:
            return None
        body = fp.read(group_length)
        if len(body) != group_length:
            return None
        size = os.fstat(fp.fileno()).st_size
    loaded = file_info(path, head + body, size, whole=False)
    return None if loaded is None else loaded[0]
