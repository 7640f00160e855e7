"""Data sets encoded and decoded without pydicom's writer and reader, to the same bytes.

pydicom's writer and reader are exact but slow per element: a C-FIND SCP's identifiers and
a C-STORE SCU's data sets spend most of their time in them. The encoder here gives
pydicom's bytes for little endian data sets (PS3.5 7.1, 7.5) and declines (None) where it
cannot be sure to; the decoder gives what pydicom's reader gives for flat data sets.
``dicomio.dataset`` uses them first and pydicom's own otherwise.
"""

from __future__ import annotations

import functools
import struct
import warnings
from decimal import Decimal
from typing import Any

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
from pydicom.dataset import Dataset
from pydicom.filewriter import correct_ambiguous_vr
from pydicom.multival import MultiValue
from pydicom.tag import _LUT_DESCRIPTOR_TAGS, BaseTag
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
)
from pydicom.valuerep import AMBIGUOUS_VR, EXPLICIT_VR_LENGTH_32, VR, PersonName


def _source_little_endian(ds: Dataset) -> bool:
    """The byte order raw values in ``ds`` are held in: its file's, else as read, else little."""
    meta = getattr(ds, "file_meta", None)
    ts = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if ts is not None:
        return UID(str(ts)) != ExplicitVRBigEndian
    little = ds.original_encoding[1]
    return True if little is None else bool(little)


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
    encodings = None
    if _CHARSET_TAG in elements:
        encodings = _encodings(elements[_CHARSET_TAG])
        if encodings is None:
            return None
    ds = _new_dataset(elements, implicit)
    if encodings is not None:
        # What read_dataset and decode_dataset do with it, in the same order.
        ds.set_original_encoding(implicit, True, encodings)
        ds.set_original_encoding(implicit, True, ds._character_set)
    return ds


#: Specific Character Set values seen (VR and raw value) and the Python encodings they
#: name, or None; a few dozen at most are kept.
_CHARSETS: dict[tuple[str | None, bytes], tuple[str, ...] | None] = {}


def _encodings(raw: RawDataElement) -> list[str] | None:
    """The Python encodings a raw Specific Character Set (0008,0005) names, as pydicom's
    reader converts it; None if pydicom would warn or fail on it (not CS, values that are
    no character set): the data set is then left to pydicom, which says so its own way."""
    key = (raw.VR, bytes(raw.value or b""))
    try:
        known = _CHARSETS[key]
    except KeyError:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                known = tuple(convert_encodings(convert_raw_data_element(raw).value))
        except Exception:
            known = None
        if len(_CHARSETS) < 64:
            _CHARSETS[key] = known
    return None if known is None else list(known)
