"""Byte order of raw values between Little and Big Endian (PS3.5 7.3, A.3), held to DCMTK.

PS3.5 6.2 gives each raw VR its swap unit: OW swaps within each 16-bit word, OL and OF within
each 32-bit word, OD and OV within each 64-bit word, OB not at all. Pixel Data is OB or OW
(PS3.6), never OL: so native Pixel Data with Bits Allocated 32 is swapped in 16-bit words, as
DCMTK's dcmconv does and as DCMTK's renderer reads it. pydicom reads such Big Endian pixels
as whole 32-bit values instead (its bundled rtdose_expb files were "corrected" to that by a
script, pydicom PR #714), and reads 1-bit OW Pixel Data unswapped; 8-bit OW it swaps in
words like DCMTK. Where they disagree these tests hold dicomio to DCMTK and the standard.
"""

from __future__ import annotations

import subprocess
import warnings
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
)

from dicomio.dataset import decode_dataset, encode_dataset
from dicomio.transcode import transcode
from tests.conftest import dcmtk_tool

np = pytest.importorskip("numpy")

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
#: (Bits Allocated, Pixel Data VR): the native forms PS3.5 8.1.1 allows in explicit VR.
PIXEL_FORMS = [(1, "OB"), (1, "OW"), (8, "OB"), (8, "OW"), (16, "OW"), (32, "OW")]
#: The swap unit in bytes of each raw VR (PS3.5 6.2, Table 6.2-1).
SWAP_UNIT = {"OB": 1, "OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}


def _image(pixels: Any, bits: int, vr: str) -> Dataset:
    """A Secondary Capture data set whose Pixel Data holds ``pixels`` little endian."""
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = "1.2.3.4"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = 0
    if bits == 1:
        data = np.packbits(pixels.ravel(), bitorder="little").tobytes()
    else:
        data = pixels.astype(f"<u{bits // 8}").tobytes()
    ds.add_new(0x7FE00010, vr, data + b"\x00" * (-len(data) % max(2, SWAP_UNIT[vr])))
    return ds


def _swapped(data: bytes, unit: int) -> bytes:
    """``data`` with the bytes of every ``unit``-byte word reversed."""
    if unit == 1:
        return data
    return np.frombuffer(data, dtype=f"<u{unit}").byteswap().tobytes()  # type: ignore[no-any-return]


def _read(data: bytes, syntax: UID) -> Dataset:
    ds = decode_dataset(data, syntax)
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = syntax
    ds.file_meta = meta
    return ds


def _pixel_arrays() -> st.SearchStrategy[tuple[int, str, Any]]:
    def arrays(form: tuple[int, str]) -> st.SearchStrategy[tuple[int, str, Any]]:
        bits, vr = form
        top = 1 if bits == 1 else 2**bits - 1
        shape = st.tuples(st.integers(1, 6), st.integers(1, 6))
        return shape.flatmap(
            lambda rc: st.lists(
                st.integers(0, top), min_size=rc[0] * rc[1], max_size=rc[0] * rc[1]
            ).map(lambda values: (bits, vr, np.array(values, dtype=np.uint64).reshape(rc)))
        )

    return st.sampled_from(PIXEL_FORMS).flatmap(arrays)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_pixel_arrays(), implicit_source=st.booleans())
def test_pixel_data_round_trips_big_and_little(
    case: tuple[int, str, Any], implicit_source: bool
) -> None:
    """Little -> Big -> Little is the identity; Big Endian swaps in the VR's unit (PS3.5 6.2)."""
    bits, vr, pixels = case
    source = _image(pixels, bits, vr)
    little = source.PixelData
    if implicit_source:  # Pixel Data read as Implicit VR is OW whatever Bits Allocated is (A.1)
        source = _read(encode_dataset(source, ImplicitVRLittleEndian), ImplicitVRLittleEndian)
        vr = "OW"
    big = _read(encode_dataset(source, ExplicitVRBigEndian), ExplicitVRBigEndian)
    assert vr == big["PixelData"].VR
    assert big.PixelData == _swapped(little, SWAP_UNIT[vr])

    back = _read(encode_dataset(big, ExplicitVRLittleEndian), ExplicitVRLittleEndian)
    assert back.PixelData == little
    if vr == "OW" and bits not in (8, 16):
        return  # pydicom does not swap 1-bit OW, and swaps 32-bit cells whole: see the top
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = pixels.astype(big.pixel_array.dtype)
        assert np.array_equal(big.pixel_array.reshape(pixels.shape), expected)
        assert np.array_equal(back.pixel_array.reshape(pixels.shape), expected)


@settings(max_examples=100, deadline=None)
@given(
    floats=st.lists(st.floats(width=32, allow_nan=False), min_size=1, max_size=8),
    doubles=st.lists(st.floats(allow_nan=False), min_size=1, max_size=8),
    longs=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=8),
    verys=st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=8),
    tags=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=4),
)
def test_other_word_vrs_round_trip(
    floats: list[float], doubles: list[float], longs: list[int], verys: list[int], tags: list[int]
) -> None:
    """OF, OD, OL, OV swap in their own word size and AT values stay tags (PS3.5 6.2, 7.3)."""
    ds = Dataset()
    ds.add_new(0x00209165, "AT", tags)  # Dimension Index Pointer
    ds.add_new(0x00660040, "OL", np.array(longs, "<u4").tobytes())
    ds.add_new(0x7FE00001, "OV", np.array(verys, "<u8").tobytes())
    ds.add_new(0x7FE00008, "OF", np.array(floats, "<f4").tobytes())
    ds.add_new(0x7FE00009, "OD", np.array(doubles, "<f8").tobytes())
    big = _read(encode_dataset(ds, ExplicitVRBigEndian), ExplicitVRBigEndian)
    for elem in ds:
        if elem.VR == "AT":
            value = big[elem.tag].value
            assert [int(tag) for tag in (value if big[elem.tag].VM > 1 else [value])] == tags
        else:
            assert big[elem.tag].value == _swapped(elem.value, SWAP_UNIT[elem.VR])
    back = _read(encode_dataset(big, ExplicitVRLittleEndian), ExplicitVRLittleEndian)
    for elem in ds:
        assert back[elem.tag].value == elem.value


# -- DCMTK -----------------------------------------------------------------------------------


def _dcmconv() -> str:
    tool = dcmtk_tool("dcmconv")
    if tool is None:
        pytest.skip("DCMTK's dcmconv is not installed (apt-get install dcmtk): no interop check")
    return tool


def _raw_values(ds: Dataset) -> dict[int, tuple[str, Any]]:
    return {int(e.tag): (e.VR, e.value) for e in ds.iterall() if e.VR in SWAP_UNIT or e.VR == "AT"}


def _file(ds: Dataset, syntax: UID) -> bytes:
    ds = _read(encode_dataset(ds, syntax), syntax)
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _synthetic() -> list[Any]:
    rng = np.random.default_rng(9)
    cases = []
    for bits, vr in PIXEL_FORMS:
        pixels = rng.integers(0, 2 if bits == 1 else 2**bits, size=(5, 7), dtype=np.uint64)
        ds = _image(pixels, bits, vr)
        ds.add_new(0x00280009, "AT", [0x00181063, 0x00181065])  # Frame Increment Pointer
        ds.add_new(0x00660040, "OL", np.arange(5, dtype="<u4").tobytes() + b"\x01\x02\x03\x04")
        ds.add_new(0x7FE00008, "OF", np.linspace(-2, 3, 6, dtype="<f4").tobytes())
        ds.add_new(0x7FE00009, "OD", np.linspace(-2, 3, 3, dtype="<f8").tobytes())
        cases.append(pytest.param(ds, id=f"{bits}bit-{vr}"))
    return cases


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian], ids=str)
@pytest.mark.parametrize("ds", _synthetic())
def test_big_endian_matches_dcmconv(ds: Dataset, syntax: UID, tmp_path: Path) -> None:
    """dicomio's Little -> Big conversion and back equal DCMTK's ``dcmconv +tb`` / ``+te``."""
    dcmconv = _dcmconv()
    little = tmp_path / "little.dcm"
    little.write_bytes(_file(ds, syntax))
    ds = pydicom.dcmread(little)
    subprocess.run([dcmconv, "+tb", str(little), str(tmp_path / "big.dcm")], check=True)
    theirs = pydicom.dcmread(tmp_path / "big.dcm")
    ours = pydicom.dcmread(BytesIO(_file(ds, ExplicitVRBigEndian)))
    assert _raw_values(ours) == _raw_values(theirs)

    subprocess.run(
        [dcmconv, "+te", str(tmp_path / "big.dcm"), str(tmp_path / "back.dcm")], check=True
    )
    back = pydicom.dcmread(tmp_path / "back.dcm")
    assert _raw_values(back) == _raw_values(pydicom.dcmread(little))
    ours_back = transcode(tmp_path / "big.dcm", ExplicitVRLittleEndian)
    assert _raw_values(pydicom.dcmread(BytesIO(ours_back))) == _raw_values(back)


BUNDLED = sorted(
    p
    for name in ("rtdose*", "MR_small*", "SC_rgb_small_odd*", "liver*", "ExplVR_BigEnd.dcm")
    for p in TEST_FILES.glob(name)
    if pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID
    in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian)
)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.name)
def test_bundled_files_match_dcmconv(path: Path, tmp_path: Path) -> None:
    """pydicom's bundled native files, Big <-> Little, byte for byte in every raw value."""
    dcmconv = _dcmconv()
    source = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    target, flag = (
        (ExplicitVRLittleEndian, "+te")
        if source == ExplicitVRBigEndian
        else (ExplicitVRBigEndian, "+tb")
    )
    subprocess.run([dcmconv, flag, str(path), str(tmp_path / "out.dcm")], check=True)
    theirs = pydicom.dcmread(tmp_path / "out.dcm")
    ours = pydicom.dcmread(BytesIO(transcode(path, target)))
    assert _raw_values(ours) == _raw_values(theirs)
