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
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

import attrs
from pydicom.dataelem import (
    DataElement,
)
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from dicomio._direct import _decode_flat, _encode_flat, _source_little_endian

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
        if not value:
            return None
        # Not validated (pydicom's UID() runs a regular expression and warns): a malformed
        # UID in a file's meta group is sent as it stands, and the peer judges it.
        return str.__new__(UID, value.decode("ascii", "replace").rstrip("\x00 "))

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
