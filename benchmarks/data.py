"""Benchmark data sets, written once into a cache folder and reused.

Every instance is a CT Image Storage data set in Explicit VR Little Endian with 16-bit pixel
data of the requested size. One header is built with pydicom; each instance copies it with its
own SOP Instance UID patched in place (all UIDs have the same length, so no length field
changes), then the pixel data is appended in chunks: a 1 GB instance never sits in memory.

The C-FIND data for DCMTK's dcmqrscp (10,000 instances of one series, no pixel data) is made
the same way and indexed with ``dcmqridx``.
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

#: Fixed-length UIDs: the template's instance UID is replaced by each instance's in place.
UID_ROOT = "1.2.826.0.1.3680043.8.498.7"
STUDY_UID = f"{UID_ROOT}.1.1"
SERIES_UID = f"{UID_ROOT}.1.1.1"
PATIENT_ID = "BENCH0001"
#: A component may not start with 0 (PS3.5 9.1): "1" then eight digits.
_TEMPLATE_INSTANCE = f"{UID_ROOT}.2.1{'0' * 8}"
FRAME = 512 * 512 * 2
_CHUNK = 8 * 1024 * 1024


def instance_uid(index: int) -> str:
    return f"{UID_ROOT}.2.1{index + 1:08d}"


def _header(pixel_bytes: int) -> bytes:
    """Preamble, file meta and data set up to (not including) the Pixel Data element."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = _TEMPLATE_INSTANCE
    ds.PatientName = "Bench^Mark"
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = STUDY_UID
    ds.StudyDate = "20240101"
    ds.StudyTime = "101010"
    ds.StudyID = "1"
    ds.AccessionNumber = "ACC0001"
    ds.SeriesInstanceUID = SERIES_UID
    ds.SeriesNumber = 1
    ds.Modality = "CT"
    ds.InstanceNumber = 1
    if pixel_bytes:
        if pixel_bytes % FRAME == 0:
            rows, columns, frames = 512, 512, pixel_bytes // FRAME
        else:
            rows, columns, frames = 64, pixel_bytes // 128, 1
        ds.Rows = rows
        ds.Columns = columns
        if frames > 1:
            ds.NumberOfFrames = frames
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = _TEMPLATE_INSTANCE
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    header = buffer.getvalue()
    if pixel_bytes:
        # (7FE0,0010) OW with a 4-byte length (PS3.5 7.1.2).
        header += struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, pixel_bytes)
    return header


def _pixels(size: int) -> bytes:
    pattern = bytes(range(256)) * (min(size, _CHUNK) // 256 + 1)
    return pattern[: min(size, _CHUNK)]


def write_instance(path: Path, index: int, pixel_bytes: int, header: bytes | None = None) -> None:
    header = header if header is not None else _header(pixel_bytes)
    template = _TEMPLATE_INSTANCE.encode()
    patched = header.replace(template, instance_uid(index).encode())
    chunk = _pixels(pixel_bytes)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fp:
        fp.write(patched)
        left = pixel_bytes
        while left > 0:
            part = chunk if left >= len(chunk) else chunk[:left]
            fp.write(part)
            left -= len(part)
    os.replace(tmp, path)


def store_set(cache: Path, pixel_bytes: int, count: int) -> list[Path]:
    """``count`` instance files with ``pixel_bytes`` of pixel data each (made on first use)."""
    folder = cache / f"store-{pixel_bytes}"
    folder.mkdir(parents=True, exist_ok=True)
    header = _header(pixel_bytes)
    paths = []
    for index in range(count):
        path = folder / f"{index:06d}.dcm"
        if not path.exists() or path.stat().st_size != len(header) + pixel_bytes:
            write_instance(path, index, pixel_bytes, header)
        paths.append(path)
    return paths


def find_identifiers(count: int) -> list[Dataset]:
    """What a C-FIND SCP answers to the S5 query: one IMAGE-level identifier per instance."""
    identifiers = []
    for index in range(count):
        ds = Dataset()
        ds.QueryRetrieveLevel = "IMAGE"
        ds.RetrieveAETitle = "BENCH"
        ds.StudyInstanceUID = STUDY_UID
        ds.SeriesInstanceUID = SERIES_UID
        ds.SOPInstanceUID = instance_uid(index)
        ds.InstanceNumber = index + 1
        identifiers.append(ds)
    return identifiers


def find_query() -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "IMAGE"
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = SERIES_UID
    ds.SOPInstanceUID = ""
    ds.InstanceNumber = None
    return ds
