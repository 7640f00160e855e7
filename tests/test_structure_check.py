"""The structural check of encoded data sets (dicomio._structure): whole or cut short.

Data sets are written by pydicom (not by the code under test) from elements Hypothesis
draws: strings, numbers, long binary values, sequences of defined and undefined length
with nested items of both kinds, and encapsulated pixel data. Every prefix of the encoding
is checked: one that ends inside an element is reported truncated; one that ends between
two top-level elements is a shorter data set that is whole by its structure (nothing in
the encoding counts the elements), and the check must say so too.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)

from dicomio._structure import check_file, truncation

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
SYNTAXES = (ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian)


def _even_bytes(most: int) -> st.SearchStrategy[bytes]:
    return st.binary(max_size=most).map(lambda b: b + b"\x00" * (len(b) % 2))


_text = st.text(alphabet="ABCDEFGHIJ0123456789^ ", min_size=0, max_size=16)


@st.composite
def items(draw: st.DrawFn, depth: int) -> Dataset:
    item = Dataset()
    item.is_undefined_length_sequence_item = draw(st.booleans())
    item.CodeValue = draw(_text)
    item.CodeMeaning = draw(_text)
    if depth < 2 and draw(st.booleans()):
        item.add(sequence(0x00400008, draw(st.lists(items(depth + 1), max_size=2)), draw))
    return item


def sequence(tag: int, contents: list[Dataset], draw: st.DrawFn) -> DataElement:
    elem = DataElement(tag, "SQ", Sequence(contents))
    elem.is_undefined_length = draw(st.booleans())
    return elem


@st.composite
def datasets(draw: st.DrawFn, encapsulated: bool) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.3." + str(draw(st.integers(1, 10**12)))
    ds.PatientName = draw(_text)
    if draw(st.booleans()):
        ds.PatientID = draw(_text)
    if draw(st.booleans()):
        ds.add(sequence(0x00081032, draw(st.lists(items(0), max_size=3)), draw))
    ds.Rows = draw(st.integers(0, 65535))
    if draw(st.booleans()):
        ds.add_new(0x00091010, "OB", draw(_even_bytes(300)))
    if draw(st.booleans()):
        ds.add(sequence(0x00400275, draw(st.lists(items(0), max_size=2)), draw))
    if encapsulated:
        frames = draw(st.lists(st.binary(min_size=1, max_size=200), min_size=1, max_size=3))
        pixels = DataElement(0x7FE00010, "OB", encapsulate(frames))
        pixels.is_undefined_length = True
        ds.add(pixels)
    elif draw(st.booleans()):
        ds.add_new(0x7FE00010, "OW", draw(_even_bytes(256)))
    return ds


def encode(ds: Dataset, syntax: str) -> tuple[bytes, set[int]]:
    """pydicom's encoding of ``ds`` in ``syntax`` and the offsets between top-level elements."""

    def write(part: Dataset) -> bytes:
        fp = DicomBytesIO()
        fp.is_implicit_VR = syntax == ImplicitVRLittleEndian
        fp.is_little_endian = syntax != ExplicitVRBigEndian
        write_dataset(fp, part)
        return fp.getvalue()

    boundaries = {0}
    offset = 0
    for elem in ds:
        single = Dataset()
        single.add(elem)
        offset += len(write(single))
        boundaries.add(offset)
    data = write(ds)
    assert len(data) == offset
    return data, boundaries


@settings(max_examples=60, deadline=None)
@given(data=st.data(), syntax=st.sampled_from(SYNTAXES))
def test_every_prefix_that_cuts_an_element_is_truncated(data: st.DataObject, syntax: str) -> None:
    ds = data.draw(datasets(encapsulated=False))
    encoded, boundaries = encode(ds, syntax)
    assert truncation(encoded, syntax) is None
    for n in range(len(encoded)):
        reason = truncation(encoded[:n], syntax)
        if n in boundaries:
            assert reason is None, (n, reason)
        else:
            assert reason is not None, n


@settings(max_examples=40, deadline=None)
@given(data=st.data(), syntax=st.sampled_from((ExplicitVRLittleEndian, JPEGBaseline8Bit)))
def test_encapsulated_pixel_data_and_its_prefixes(data: st.DataObject, syntax: str) -> None:
    ds = data.draw(datasets(encapsulated=True))
    encoded, boundaries = encode(ds, ExplicitVRLittleEndian)
    assert truncation(encoded, syntax) is None
    for n in range(len(encoded)):
        assert (truncation(encoded[:n], syntax) is None) == (n in boundaries), n


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_deflated_every_shorter_prefix_is_truncated(data: st.DataObject) -> None:
    """A deflate stream says where it ends (PS3.5 A.5): no prefix of it is whole."""
    ds = data.draw(datasets(encapsulated=False))
    plain, _ = encode(ds, ExplicitVRLittleEndian)
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = compressor.compress(plain) + compressor.flush()
    assert truncation(deflated, DeflatedExplicitVRLittleEndian) is None
    assert truncation(deflated + b"\x00", DeflatedExplicitVRLittleEndian) is None  # even pad
    for n in range(len(deflated)):
        assert truncation(deflated[:n], DeflatedExplicitVRLittleEndian) is not None, n


def test_item_tag_at_top_level_and_missing_delimiters() -> None:
    item_at_top = b"\xfe\xff\x00\xe0\x00\x00\x00\x00"
    assert truncation(item_at_top, ExplicitVRLittleEndian) is not None
    # (0008,1032) SQ of undefined length holding one item of undefined length, delimiters
    # removed one at a time.
    sq = b"\x08\x00\x32\x10SQ\x00\x00\xff\xff\xff\xff"
    item = b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    code = b"\x08\x00\x00\x01SH\x02\x00AB"
    item_end = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
    seq_end = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    assert truncation(sq + item + code + item_end + seq_end, ExplicitVRLittleEndian) is None
    assert truncation(sq + item + code + item_end, ExplicitVRLittleEndian) is not None
    assert truncation(sq + item + code + seq_end, ExplicitVRLittleEndian) is not None
    # An explicit UN of undefined length holds Implicit VR Little Endian (PS3.5 6.2.2).
    un = b"\x09\x00\x10\x10UN\x00\x00\xff\xff\xff\xff"
    implicit_code = b"\x08\x00\x00\x01\x02\x00\x00\x00AB"
    whole = un + item + implicit_code + item_end + seq_end
    assert truncation(whole, ExplicitVRLittleEndian) is None
    assert truncation(whole[:-1], ExplicitVRLittleEndian) is not None
    # SV and UV (64-bit integers) have the long header too (PS3.5 Table 7.1-1).
    for vr in (b"SV", b"UV"):
        sv = b"\x09\x00\x20\x10" + vr + b"\x00\x00\x08\x00\x00\x00" + bytes(8)
        assert truncation(sv, ExplicitVRLittleEndian) is None, vr
        assert truncation(sv[:-1], ExplicitVRLittleEndian) is not None, vr


@pytest.mark.parametrize(
    ("name", "whole"),
    [
        ("MR_truncated.dcm", False),  # Pixel Data shorter than its length
        ("rtplan_truncated.dcm", False),  # cut inside a sequence
        ("SC_rgb_jpeg.dcm", False),  # Implicit VR data set under an explicit syntax
        ("MR_small.dcm", True),
        ("rtplan.dcm", True),
        ("JPEG2000-embedded-sequence-delimiter.dcm", True),  # delimiter bytes in a fragment
        ("UN_sequence.dcm", True),
        ("image_dfl.dcm", True),
        ("ExplVR_BigEnd.dcm", True),
    ],
)
def test_pydicom_files(name: str, whole: bool) -> None:
    assert (check_file(TEST_FILES / name) is None) == whole


def test_a_file_without_meta_needs_its_syntax(tmp_path: Path) -> None:
    path = TEST_FILES / "no_meta.dcm"
    assert check_file(path) is not None
    assert check_file(path, ExplicitVRLittleEndian) is None
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    assert check_file(empty, ImplicitVRLittleEndian) is not None


def test_check_file_reads_what_it_cannot_map(monkeypatch: pytest.MonkeyPatch) -> None:
    import mmap

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("mmap not supported here")

    monkeypatch.setattr(mmap, "mmap", refuse)
    assert check_file(TEST_FILES / "MR_small.dcm") is None
    assert check_file(TEST_FILES / "MR_truncated.dcm") is not None


def test_deflated_beyond_the_inflate_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A large Deflated data set is inflated in bounded steps; past INFLATE_LIMIT only the
    end of its stream is checked. Output larger than a step per input byte (a stream of
    zeros) still comes out whole."""
    import dicomio._structure as structure

    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.add_new(0x7FE00010, "OB", bytes(3 << 20))  # 3 MB of zeros: a few kB deflated
    plain, _ = encode(ds, ExplicitVRLittleEndian)
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = compressor.compress(plain) + compressor.flush()
    assert len(deflated) < structure._INFLATE_STEP
    assert truncation(deflated, DeflatedExplicitVRLittleEndian) is None
    # A stream cut short, and a whole stream holding a cut data set: both caught.
    assert truncation(deflated[:-3], DeflatedExplicitVRLittleEndian) is not None
    cut = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
    cut_stream = cut.compress(plain[:-1]) + cut.flush()
    assert truncation(cut_stream, DeflatedExplicitVRLittleEndian) is not None
    monkeypatch.setattr(structure, "INFLATE_LIMIT", 1 << 20)
    assert truncation(deflated, DeflatedExplicitVRLittleEndian) is None
    assert truncation(deflated[:-3], DeflatedExplicitVRLittleEndian) is not None
    # Over the limit the walk is skipped: the stream's end is all that is checked.
    assert truncation(cut_stream, DeflatedExplicitVRLittleEndian) is None
