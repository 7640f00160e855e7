"""The direct encoder and decoder of flat data sets give exactly what pydicom gives.

``dicomio._direct`` (used by ``dicomio.dataset``) encodes and decodes data sets itself (C-FIND
identifiers, a C-STORE SCU's data sets read from files) and falls back to pydicom for
anything it cannot do exactly. Two invariants, over a table of realistic data sets, over
Hypothesis-drawn data sets of every VR, values of every shape, character sets and nested
sequences, as made and as read, and over pydicom's own test files:

- encoding: the direct encoder either declines (None) or returns pydicom's bytes, byte for
  byte, in Implicit and Explicit VR Little Endian; where pydicom raises, it declines;
- decoding: the direct decoder either declines or returns a Dataset equal in every
  attribute to the one pydicom's ``read_dataset`` makes (raw elements, encodings), as
  ``decode_dataset`` leaves it.
"""

from __future__ import annotations

import codecs
import copy
import functools
import warnings
from collections.abc import Callable
from decimal import Decimal
from io import BytesIO
from pathlib import Path
from typing import Any
from unittest import mock

import pydicom
import pytest
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from pydicom import config, dcmread
from pydicom.charset import convert_encodings, default_encoding, python_encoding
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.filereader import read_dataset
from pydicom.filewriter import correct_ambiguous_vr
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pydicom.valuerep import DSfloat

from dicomio import _direct
from dicomio import dataset as dataset_module
from dicomio._direct import _codecs_for_terms, _decode_flat, _encode_flat
from dicomio.dataset import decode_dataset, encode_dataset

LITTLE = [ImplicitVRLittleEndian, ExplicitVRLittleEndian]
ALL_UNCOMPRESSED = [*LITTLE, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian]


# -- the reference: pydicom, as encode_dataset and decode_dataset used it before -------------


def pydicom_encode(ds: Dataset, transfer_syntax: str) -> bytes:
    with mock.patch.object(dataset_module, "_encode_flat", lambda ds, implicit: None):
        return encode_dataset(ds, transfer_syntax)


def pydicom_decode(raw: bytes, implicit: bool) -> Dataset:
    ds = read_dataset(BytesIO(raw), is_implicit_VR=implicit, is_little_endian=True)
    ds.set_original_encoding(implicit, True, ds._character_set)
    return ds


def same_dataset(fast: Dataset, slow: Dataset) -> None:
    """Equal elements (raw as read), equal state; only the element dict object differs."""
    assert list(fast._dict.items()) == list(slow._dict.items())
    assert [type(e) for e in fast._dict.values()] == [type(e) for e in slow._dict.values()]
    fast_state = {k: v for k, v in fast.__dict__.items() if k != "_dict"}
    slow_state = {k: v for k, v in slow.__dict__.items() if k != "_dict"}
    assert fast_state == slow_state
    assert fast.original_encoding == slow.original_encoding
    assert fast.original_character_set == slow.original_character_set


def quietly(fn: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    """``fn()``'s result or exception, with pydicom's warnings (replacement characters ...) off."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return fn(), None
        except Exception as exc:
            return None, exc


def check_encoding(build: Callable[[], Dataset], transfer_syntax: str) -> bytes | None:
    """Encode two copies of one data set (pydicom alters some values as it writes them)."""
    implicit = transfer_syntax == ImplicitVRLittleEndian
    fast, fast_error = quietly(lambda: _encode_flat(build(), implicit=implicit))
    slow, slow_error = quietly(lambda: pydicom_encode(build(), transfer_syntax))
    assert fast_error is None, fast_error
    if slow_error is not None:
        assert fast is None, f"pydicom raised {slow_error!r}; the direct encoder did not"
        return None
    if fast is not None:
        assert fast == slow
    return fast


# -- a table of realistic identifiers ------------------------------------------------------


def _image_level() -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "IMAGE"
    ds.RetrieveAETitle = "ARCHIVE"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.1.2"
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.1.2.3"
    ds.InstanceNumber = 17
    return ds


def _study_level() -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientName = "Müller^Jürgen"
    ds.PatientID = "PID-0001"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "M"
    ds.StudyDate = "20240131"
    ds.StudyTime = "101530.25"
    ds.AccessionNumber = ""
    ds.StudyDescription = "CT Thorax"
    ds.ModalitiesInStudy = ["CT", "SR"]
    ds.NumberOfStudyRelatedInstances = 120
    ds.NumberOfStudyRelatedSeries = "3"
    ds.ReferringPhysicianName = None
    ds.StudyInstanceUID = "1.2.3.4"
    return ds


def _utf8() -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Wang^XiaoDong=王^小東"
    ds.PatientID = "名前"
    ds.StudyDescription = ["a", "Über"]
    return ds


def _iso2022() -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    ds.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    ds.PatientID = "ABC"
    ds.InstitutionName = "病院"
    return ds


def _worklist() -> Dataset:
    ds = Dataset()
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "W1"
    step = Dataset()
    step.Modality = "MR"
    step.ScheduledStationAETitle = "MR1"
    step.ScheduledProcedureStepStartDate = "20240301"
    step.ScheduledProcedureStepStartTime = "0800"
    step.ScheduledPerformingPhysicianName = ""
    code = Dataset()
    code.CodeValue = "X1"
    code.CodingSchemeDesignator = "L"
    code.CodeMeaning = "Knee"
    step.ScheduledProtocolCodeSequence = [code]
    ds.ScheduledProcedureStepSequence = [step]
    ds.RequestedProcedureID = "RP1"
    ds.ReferencedStudySequence = []
    return ds


def _numbers() -> Dataset:
    ds = Dataset()
    ds.Rows = 512
    ds.Columns = 512
    ds.PixelSpacing = [0.5, 0.5]
    ds.SliceThickness = DSfloat("1.250")
    ds.ImagePositionPatient = ["-100", "-100.5", "30"]
    ds.SamplesPerPixel = 1
    ds.RescaleSlope = Decimal("1.0")
    ds.FrameIncrementPointer = None
    ds.add_new(0x00209165, "AT", 0x00100020)  # Dimension Index Pointer
    ds.add_new(0x00209167, "AT", [0x00100010, 0x00200013])  # Functional Group Pointer
    ds.add_new(0x00181310, "US", [0, 256, 256, 0])  # Acquisition Matrix
    ds.add_new(0x00081163, "FD", [3.25, -1e300])  # Time Range
    ds.add_new(0x00089459, "FL", 1.5)  # Recommended Display Frame Rate in Float
    ds.add_new(0x00189219, "SS", -5)  # Tag Angle Second Axis
    ds.add_new(0x00080309, "UL", [70000, 1])  # Private Data Element Value Multiplicity
    return ds


def _undefined_lengths() -> Dataset:
    ds = _worklist()
    ds["ScheduledProcedureStepSequence"].is_undefined_length = True
    ds.ScheduledProcedureStepSequence[0].is_undefined_length_sequence_item = True
    return ds


def _private_and_group_lengths() -> Dataset:
    ds = _image_level()
    block = ds.private_block(0x0009, "DICOMIO TEST", create=True)
    block.add_new(0x01, "LO", "private value")
    block.add_new(0x02, "UL", 7)
    ds.add_new(0x00080000, "UL", 123)  # a retired group length: pydicom leaves it out
    return ds


def _with_meta() -> Dataset:
    ds = _image_level()
    ds.add_new(0x00020010, "UI", "1.2.840.10008.1.2.1")  # file meta in the data set: left out
    return ds


SUPPORTED = {
    "image level": _image_level,
    "study level, ISO_IR 100": _study_level,
    "ISO_IR 192": _utf8,
    "ISO 2022 IR 87": _iso2022,
    "worklist with sequences": _worklist,
    "numbers": _numbers,
    "undefined length sequence and item": _undefined_lengths,
    "private elements, group length": _private_and_group_lengths,
    "file meta elements": _with_meta,
}


@pytest.mark.parametrize("transfer_syntax", LITTLE)
@pytest.mark.parametrize("name", sorted(SUPPORTED))
def test_table_is_encoded_directly_and_exactly(name: str, transfer_syntax: str) -> None:
    fast = check_encoding(SUPPORTED[name], transfer_syntax)
    assert fast is not None, "the direct encoder declined a data set it is meant for"


def _with_ob() -> Dataset:
    ds = _image_level()
    ds.add_new(0x00290010, "OB", b"\x01\x02\x03")  # odd: padded with a zero byte
    return ds


def _with_un() -> Dataset:
    ds = _image_level()
    ds.add_new(0x00291010, "UN", b"\x01\x02\x03")  # odd: pydicom does not pad UN
    return ds


def _with_raw() -> Dataset:
    return decode_dataset(
        encode_dataset(_image_level(), ImplicitVRLittleEndian), ImplicitVRLittleEndian
    )


def _ct_image() -> Dataset:
    """What a C-STORE SCU sends: an image read from a file, pixel data and all."""
    ds = _study_level()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.update(_numbers())
    ds.BitsAllocated = 16
    ds.add_new(0x00281050, "DS", "40")  # Window Center
    ds.add_new(0x00281052, "DS", "-1024.0")  # Rescale Intercept
    ds.add_new(0x00091001, "OW", bytes(range(200)))  # private, unknown to the dictionary
    ds.update(_worklist())
    ds.PixelData = bytes(range(256)) * 64
    ds["PixelData"].VR = "OW"
    return ds


def _read_back(build: Callable[[], Dataset], transfer_syntax: str) -> Callable[[], Dataset]:
    """A data set as pydicom reads it from bytes in ``transfer_syntax``: raw elements."""
    raw = pydicom_encode(build(), transfer_syntax)

    def read() -> Dataset:
        implicit = transfer_syntax == ImplicitVRLittleEndian
        return pydicom_decode(raw, implicit)

    return read


def _encapsulated() -> Dataset:
    ds = _image_level()
    ds.BitsAllocated = 8
    ds.PixelData = encapsulate([b"\xff\xd8\x01\x02\x03\xff\xd9", b"\x00\x01"])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return ds


def _file_meta_and_raw() -> Dataset:
    ds = _read_back(_ct_image, ExplicitVRLittleEndian)()
    ds.add_new(0x00020010, "UI", "1.2.840.10008.1.2.1")
    return ds


def _charset_changed() -> Dataset:
    """Read with one character set, given another: pydicom converts every raw element."""
    ds = _read_back(_study_level, ExplicitVRLittleEndian)()
    ds.SpecificCharacterSet = "ISO_IR 192"
    return ds


def _new_image() -> Dataset:
    """A data set made in memory: Pixel Data set as bytes is "OB or OW" until written."""
    ds = _image_level()
    ds.SamplesPerPixel = 1
    ds.BitsAllocated = 16
    ds.PixelRepresentation = 1
    ds.Rows = ds.Columns = 4
    ds.SmallestImagePixelValue = -3  # "US or SS": SS, as Pixel Representation says
    ds.PixelData = bytes(range(32))
    item = Dataset()
    item.add_new(0x00281101, "US or SS", [4, 0, 16])  # a LUT descriptor in an item
    ds.add_new(0x00283010, "SQ", [item])
    return ds


SUPPORTED.update(
    {
        "new image, ambiguous VRs": _new_image,
        "OB value": _with_ob,
        "UN value": _with_un,
        "raw elements": _with_raw,
        "CT image": _ct_image,
        "CT image read from Explicit VR": _read_back(_ct_image, ExplicitVRLittleEndian),
        "CT image read from Implicit VR": _read_back(_ct_image, ImplicitVRLittleEndian),
        "worklist read back": _read_back(_undefined_lengths, ExplicitVRLittleEndian),
        "encapsulated pixel data": _encapsulated,
        "encapsulated pixel data read back": _read_back(_encapsulated, ExplicitVRLittleEndian),
        "file meta and raw elements": _file_meta_and_raw,
        "character set changed after reading": _charset_changed,
    }
)


def _with_ambiguous() -> Dataset:
    """Read, then given an element of ambiguous VR: pydicom leaves it as it is (and fails
    in Explicit VR)."""
    ds = _read_back(_image_level, ExplicitVRLittleEndian)()
    ds.add_new(0x00280106, "US or SS", 3)
    return ds


def _ambiguous_after_conversion() -> Dataset:
    """Read in Implicit VR, then given an element of ambiguous VR: pydicom resolves it
    before converting the raw elements, which the direct encoder cannot replay."""
    ds = _read_back(_image_level, ImplicitVRLittleEndian)()
    ds.PixelRepresentation = 0
    ds.add_new(0x00280106, "US or SS", 3)
    return ds


def _bad_charset() -> Dataset:
    ds = _image_level()
    ds.SpecificCharacterSet = "ISO-IR 100"  # misspelt: pydicom corrects it with a warning
    ds.PatientName = "Ä^B"
    return ds


def _buffered() -> Dataset:
    ds = _image_level()
    ds.PixelData = BytesIO(b"\x00\x01\x02\x03")  # pydicom 3 reads it while writing
    ds["PixelData"].VR = "OB"
    return ds


def _not_encapsulated() -> Dataset:
    ds = _image_level()
    ds.PixelData = b"\x00\x01"
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True  # pydicom refuses it: not encapsulated
    return ds


def _big_endian_source() -> Dataset:
    ds = decode_dataset(encode_dataset(_ct_image(), ExplicitVRBigEndian), ExplicitVRBigEndian)
    return ds


def _long_short_vr() -> Dataset:
    ds = _image_level()
    ds.add_new(0x00081030, "LO", "x" * 0x10000)  # pydicom writes it as UN, with a warning
    return ds


DECLINED = {
    "ambiguous VR": _with_ambiguous,
    "ambiguous VR after a raw element": _ambiguous_after_conversion,
    "misspelt character set": _bad_charset,
    "buffered value": _buffered,
    "undefined length pixel data not encapsulated": _not_encapsulated,
    "big endian source": _big_endian_source,
}


@pytest.mark.parametrize("transfer_syntax", LITTLE)
@pytest.mark.parametrize("name", sorted(DECLINED))
def test_what_only_pydicom_does_is_left_to_it(name: str, transfer_syntax: str) -> None:
    assert check_encoding(DECLINED[name], transfer_syntax) is None
    # ... and encode_dataset still gives pydicom's bytes, or raises as pydicom does.
    fast, fast_error = quietly(lambda: encode_dataset(DECLINED[name](), transfer_syntax))
    slow, slow_error = quietly(lambda: pydicom_encode(DECLINED[name](), transfer_syntax))
    assert fast == slow
    assert repr(fast_error) == repr(slow_error)


def test_long_short_vr_value_is_left_to_pydicom_in_explicit_vr_only() -> None:
    """In Explicit VR pydicom writes it as UN, with a warning; Implicit VR has no VR."""
    assert check_encoding(_long_short_vr, ExplicitVRLittleEndian) is None
    assert check_encoding(_long_short_vr, ImplicitVRLittleEndian) is not None


@pytest.mark.parametrize("transfer_syntax", ALL_UNCOMPRESSED)
@pytest.mark.parametrize("name", sorted(SUPPORTED))
def test_round_trip_in_every_uncompressed_syntax(name: str, transfer_syntax: str) -> None:
    if "encapsulated" in name and transfer_syntax == ExplicitVRBigEndian:
        return  # encapsulated pixel data is little endian only (PS3.5 A.4): pydicom refuses
    raw = encode_dataset(SUPPORTED[name](), transfer_syntax)
    assert raw == pydicom_encode(SUPPORTED[name](), transfer_syntax)
    decoded = decode_dataset(raw, transfer_syntax)
    expected = correct_ambiguous_vr(SUPPORTED[name](), True)  # as written: US or SS is SS ...
    for elem in expected:
        if elem.tag.group == 0x0002 or (elem.tag.element == 0 and elem.tag.group > 6):
            continue
        if elem.tag.is_private and transfer_syntax == ImplicitVRLittleEndian:
            continue  # an unknown private VR cannot survive Implicit VR
        if elem.is_empty:
            assert decoded[elem.tag].is_empty, elem.tag
        elif elem.VR in ("OB", "OW"):
            if transfer_syntax != ExplicitVRBigEndian:  # words are swapped in Big Endian
                # Odd values are padded with a zero byte (PS3.5 7.1).
                assert decoded[elem.tag].value.removesuffix(b"\x00") == elem.value.removesuffix(
                    b"\x00"
                ), elem.tag
        else:
            assert decoded[elem.tag].value == elem.value, elem.tag


@pytest.mark.parametrize("transfer_syntax", LITTLE)
@pytest.mark.parametrize("name", sorted(SUPPORTED))
def test_table_is_decoded_as_pydicom_decodes_it(name: str, transfer_syntax: str) -> None:
    implicit = transfer_syntax == ImplicitVRLittleEndian
    raw = pydicom_encode(SUPPORTED[name](), transfer_syntax)
    fast = _decode_flat(raw, implicit=implicit)
    slow = pydicom_decode(raw, implicit)
    if "undefined length" in name or "encapsulated" in name or "worklist read" in name:
        assert fast is None
        return
    assert fast is not None
    same_dataset(fast, slow)


def test_pydicoms_default_encoding_is_latin_1() -> None:
    """The direct encoder writes default-encoded values with Python's latin-1 fast path."""
    assert codecs.lookup(default_encoding) == codecs.lookup(_direct._LATIN_1)


def test_inherited_codecs_convert_to_themselves() -> None:
    """An item without (0008,0005) gets its parent's converted codecs, which pydicom converts
    again: the direct encoder relies on that being the identity, and warning-free, for every
    character set it accepts."""
    terms = sorted(python_encoding)
    extensions = [t for t in terms if t.startswith("ISO 2022")]
    candidates = [(t,) for t in terms] + [
        (first, second) for first in ["", *extensions] for second in extensions
    ]
    accepted = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for charset in candidates:
            codecs = _codecs_for_terms(charset)
            if codecs is None:
                continue
            accepted += 1
            assert convert_encodings(list(codecs)) == list(codecs), charset
    assert accepted > len(terms)


# -- Hypothesis: data sets of every VR and value shape ---------------------------------------

ASCII = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12)
ANY_TEXT = st.text(st.characters(blacklist_categories=("Cs",), max_codepoint=0x30FF), max_size=8)
TEXTS = st.one_of(ASCII, ANY_TEXT)


def _multi(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(values, st.lists(values, max_size=3))


def _values(vr: str) -> st.SearchStrategy[Any]:
    none_or_empty = st.sampled_from([None, ""])
    if vr in ("AE", "AS", "CS", "DA", "DT", "TM", "UR", "UI"):
        return st.one_of(none_or_empty, _multi(TEXTS))
    if vr in ("LO", "LT", "SH", "ST", "UC", "UT", "PN"):
        return st.one_of(none_or_empty, _multi(TEXTS))
    if vr == "IS":
        number = st.one_of(st.integers(-(2**31), 2**31 - 1), st.from_regex(r"\A[0-9]{1,6}\Z"))
        return st.one_of(none_or_empty, _multi(number))
    if vr == "DS":
        number = st.one_of(
            st.floats(allow_nan=False, allow_infinity=False, width=32),
            st.from_regex(r"\A-?[0-9]{1,4}(\.[0-9]{1,3})?\Z"),
            st.decimals(
                allow_nan=False, allow_infinity=False, places=3, min_value=-1000, max_value=1000
            ),
        )
        return st.one_of(none_or_empty, _multi(number))
    if vr in ("US", "UL", "SS", "SL", "SV", "UV"):
        return st.one_of(none_or_empty, _multi(st.integers(-(2**40), 2**40)))
    if vr in ("FL", "FD"):
        return st.one_of(none_or_empty, _multi(st.floats(width=32) | st.integers(-5, 5)))
    if vr in BYTES_VRS:
        return st.one_of(st.none(), st.binary(max_size=9))
    if vr == "AT":
        return st.integers(0, 0xFFFFFFFF)
    return st.just(None)


SIMPLE_VRS = [
    "AE",
    "AS",
    "CS",
    "DA",
    "DT",
    "TM",
    "UR",
    "UI",
    "LO",
    "LT",
    "SH",
    "ST",
    "UC",
    "UT",
    "PN",
    "IS",
    "DS",
    "US",
    "UL",
    "SS",
    "SL",
    "SV",
    "UV",
    "FL",
    "FD",
]
BYTES_VRS = ["OB", "OW", "OF", "OD", "OL", "OV", "UN"]
ODD_VRS = ["AT", "US or SS", "OB or OW"]
TAGS = st.builds(
    lambda group, element: group << 16 | element,
    st.sampled_from([0x0002, 0x0008, 0x0009, 0x0010, 0x0020, 0x0040, 0x0051]),
    st.integers(0, 0x0200),
)
CHARSETS = st.sampled_from(
    [
        None,
        "",
        "ISO_IR 6",
        "ISO_IR 100",
        "ISO_IR 192",
        "GB18030",
        ["", "ISO 2022 IR 87"],
        ["ISO 2022 IR 6", "ISO 2022 IR 100"],
        "ISO_IR 144",
        "ISO_IR 13",
    ]
)

Spec = list[tuple[int, str, Any]]


@st.composite
def specs(draw: st.DrawFn, depth: int = 0) -> Spec:
    spec: Spec = []
    charset = draw(CHARSETS)
    if charset is not None:
        spec.append((0x00080005, "CS", charset))
    odd = draw(st.integers(0, 15)) == 0
    for _ in range(draw(st.integers(0, 8))):
        vr = draw(st.sampled_from(SIMPLE_VRS + BYTES_VRS + (ODD_VRS if odd else [])))
        value = draw(_values(vr))
        spec.append((draw(TAGS), vr, value))
    if depth == 0 and draw(st.booleans()):
        # Pixel Data: native, or encapsulated (undefined length, PS3.5 A.4), maybe not quite.
        vr = draw(st.sampled_from(["OB", "OW"]))
        fragments = draw(st.lists(st.binary(min_size=1, max_size=7), max_size=3))
        encapsulated = draw(st.booleans())
        value = encapsulate(fragments) if encapsulated and fragments else b"".join(fragments)
        spec.append((0x7FE00010, "PIXEL", (vr, value, encapsulated)))
    if depth < 2 and draw(st.integers(0, 3)) == 0:
        items = draw(st.lists(specs(depth + 1), max_size=2))
        undefined = draw(st.booleans())
        spec.append((0x00400100, "SQ", (items, undefined, draw(st.booleans()))))
    return spec


def build(spec: Spec) -> Dataset:
    ds = Dataset()
    for tag, vr, value in spec:
        if vr == "SQ":
            items, undefined, undefined_items = value
            seq = Sequence([build(item) for item in items])
            for item in seq:
                item.is_undefined_length_sequence_item = undefined_items
            elem = DataElement(tag, "SQ", seq, is_undefined_length=undefined)
        elif vr == "PIXEL":
            pixel_vr, pixels, encapsulated = value
            elem = DataElement(tag, pixel_vr, pixels, is_undefined_length=encapsulated)
        else:
            elem = DataElement(tag, vr, copy.deepcopy(value), validation_mode=config.IGNORE)
        ds.add(elem)
    return ds


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs(), transfer_syntax=st.sampled_from(LITTLE))
def test_direct_encoding_is_pydicoms(spec: Spec, transfer_syntax: str) -> None:
    _, error = quietly(lambda: build(spec))
    assume(error is None)
    fast = check_encoding(lambda: build(spec), transfer_syntax)
    event("encoded directly" if fast is not None else "left to pydicom")
    if fast is None:
        return
    # What was encoded directly decodes directly, to what pydicom makes of the same bytes.
    implicit = transfer_syntax == ImplicitVRLittleEndian
    decoded = _decode_flat(fast, implicit=implicit)
    slow, error = quietly(lambda: pydicom_decode(fast, implicit))
    if decoded is not None:
        assert error is None
        same_dataset(decoded, slow)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=specs(),
    source=st.sampled_from(LITTLE),
    transfer_syntax=st.sampled_from(LITTLE),
    charset=st.sampled_from([None, "ISO_IR 100", "ISO_IR 192"]),
)
def test_direct_encoding_of_data_sets_read_is_pydicoms(
    spec: Spec, source: str, transfer_syntax: str, charset: str | None
) -> None:
    """A data set as pydicom reads it (raw elements, items read too), maybe with its
    character set changed since, sent in the syntax it was read in or in the other one."""
    _, error = quietly(lambda: build(spec))
    assume(error is None)
    raw, error = quietly(lambda: pydicom_encode(build(spec), source))
    assume(error is None)
    implicit = source == ImplicitVRLittleEndian

    def read() -> Dataset:
        ds = pydicom_decode(raw, implicit)
        if charset is not None:
            ds.SpecificCharacterSet = charset
        return ds

    _, error = quietly(read)
    assume(error is None)
    # Not always the bytes read, even unchanged in the same syntax: pydicom converts an
    # empty raw value (None, a "deferred read") and a UN one then gets its dictionary VR.
    fast = check_encoding(read, transfer_syntax)
    event("encoded directly" if fast is not None else "left to pydicom")


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=80), implicit=st.booleans())
def test_direct_decoding_of_any_bytes_is_pydicoms_or_declined(raw: bytes, implicit: bool) -> None:
    fast = _decode_flat(raw, implicit=implicit)
    if fast is None:
        return
    slow, error = quietly(lambda: pydicom_decode(raw, implicit))
    assert error is None, error
    same_dataset(fast, slow)


@settings(max_examples=200, deadline=None)
@given(
    elements=st.lists(
        st.tuples(
            TAGS,
            st.sampled_from(SIMPLE_VRS),
            st.binary(max_size=10).map(lambda b: b + b"\x00" * (len(b) % 2)),
        ),
        max_size=6,
    ),
    implicit=st.booleans(),
)
# A Specific Character Set of another VR, or naming no character set, and a good one.
@example(elements=[(0x00080005, "UL", b"\x00\x00")], implicit=False)
@example(elements=[(0x00080005, "PN", b"\x01\x00")], implicit=False)
@example(elements=[(0x00080005, "AE", b"\x00\x00")], implicit=False)
@example(elements=[(0x00080005, "CS", b"ISO_IR 100")], implicit=False)
@example(elements=[(0x00080005, "CS", b"ISO_IR 100")], implicit=True)
def test_direct_decoding_of_wellformed_elements(
    elements: list[tuple[int, str, bytes]], implicit: bool
) -> None:
    """Well-framed elements (any values) decode directly, as pydicom decodes them."""
    out = b""
    for tag, vr, value in elements:
        head = (tag >> 16).to_bytes(2, "little") + (tag & 0xFFFF).to_bytes(2, "little")
        if implicit:
            out += head + len(value).to_bytes(4, "little") + value
        elif vr in ("UC", "UR", "UT", "SV", "UV"):
            out += head + vr.encode() + b"\x00\x00" + len(value).to_bytes(4, "little") + value
        else:
            out += head + vr.encode() + len(value).to_bytes(2, "little") + value
    if implicit and len(out) >= 6 and 0x40 < out[4] < 0x5B and 0x40 < out[5] < 0x5B:
        return  # pydicom would take the first element for explicit VR
    fast = _decode_flat(out, implicit=implicit)
    if fast is None:
        # Declined only for a Specific Character Set that pydicom's reader warns about or
        # fails on (another VR, no character set's name): pydicom then reads it.
        assert any(tag == 0x00080005 for tag, _, _ in elements)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(Exception):  # noqa: B017 - a warning or an error, any kind
                pydicom_decode(out, implicit)
        return
    slow, error = quietly(lambda: pydicom_decode(out, implicit))
    assert error is None
    same_dataset(fast, slow)


# -- pydicom's own test files: every one encoded exactly, or left to pydicom ------------------

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def _test_files() -> list[Path]:
    return sorted(path for path in TEST_FILES.rglob("*") if path.is_file())


def _read(path: Path) -> Dataset | None:
    ds, error = quietly(lambda: dcmread(path, force=True))
    return None if error is not None or not isinstance(ds, Dataset) else ds


def test_pydicoms_test_files_are_encoded_as_pydicom_writes_them() -> None:
    """Each file pydicom reads, as read (raw elements), in both little endian syntaxes: the
    direct encoder gives pydicom's writer's bytes, and declines only where pydicom raises
    or the file is Big Endian (its words are swapped on the way). This is what
    ``send_c_store(dcmread(path))`` meets."""
    direct = 0
    for path in _test_files():
        ds = _read(path)
        if ds is None:
            continue
        big_endian = ds.original_encoding[1] is False
        read = functools.partial(_read, path)
        for syntax in LITTLE:
            try:
                fast = check_encoding(read, syntax)  # type: ignore[arg-type]
            except AssertionError as exc:
                raise AssertionError(f"{path.name} in {syntax.name}: {exc}") from None
            if fast is not None:
                direct += 1
            elif not big_endian:
                _, error = quietly(functools.partial(pydicom_encode, read(), syntax))
                assert error is not None, f"{path.name} in {syntax.name}: declined"
    assert direct > 100
