"""A small, deterministic DICOM corpus written with pydicom: no downloads.

Two patients, two studies each, a CT and an MR series per study, three 64x64 images per
series (24 instances). Instances cycle through Implicit VR LE, Explicit VR LE, Explicit VR
Big Endian, Deflated Explicit VR LE and RLE Lossless, so every transfer syntax is present in
every level of the hierarchy that tests query.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    RLELossless,
    generate_uid,
)

TRANSFER_SYNTAXES = (
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
    RLELossless,
)
UNCOMPRESSED = TRANSFER_SYNTAXES[:4]


@dataclass(frozen=True)
class Instance:
    path: Path
    patient_id: str
    patient_name: str
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class: str
    modality: str
    transfer_syntax: str
    study_date: str


@dataclass
class Corpus:
    root: Path
    instances: list[Instance] = field(default_factory=list)

    def by(self, **criteria: str) -> list[Instance]:
        return [i for i in self.instances if all(getattr(i, k) == v for k, v in criteria.items())]

    @property
    def study_uids(self) -> list[str]:
        return sorted({i.study_uid for i in self.instances})

    @property
    def series_uids(self) -> list[str]:
        return sorted({i.series_uid for i in self.instances})


def uid(*parts: object) -> UID:
    return generate_uid(entropy_srcs=["dicomio-test-corpus", *map(str, parts)])


def make_dataset(
    *, patient: int, study: int, series: int, image: int, modality: str, transfer_syntax: str
) -> Dataset:
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = uid(patient, study, series, image)
    ds.PatientName = ["Doe^Jane", "Müller^Jürgen"][patient]
    ds.PatientID = f"PID{patient:03d}"
    ds.PatientBirthDate = f"19{60 + patient}0101"
    ds.PatientSex = "FM"[patient]
    ds.StudyInstanceUID = uid(patient, study)
    ds.StudyDate = f"2024{study + 1:02d}{patient + 10:02d}"
    ds.StudyTime = "101010"
    ds.StudyID = f"S{study}"
    ds.AccessionNumber = f"ACC{patient}{study}"
    ds.StudyDescription = f"Study {patient}-{study}"
    ds.SeriesInstanceUID = uid(patient, study, series)
    ds.SeriesNumber = series + 1
    ds.Modality = modality
    ds.InstanceNumber = image + 1
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.Rows = 64
    ds.Columns = 64
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    pixels = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) + image * 7 + series * 3
    ds.PixelData = pixels.tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.file_meta = meta
    if transfer_syntax == RLELossless:
        ds.compress(RLELossless, encoding_plugin="pydicom")
    else:
        meta.TransferSyntaxUID = UID(transfer_syntax)
    if transfer_syntax == ExplicitVRBigEndian:
        # pydicom writes OW values as the bytes it holds: give it big-endian words, so the
        # file is genuine Big Endian data and decodes to the same pixels as its siblings.
        ds.PixelData = pixels.byteswap().tobytes()
    return ds


def make_corpus(root: Path) -> Corpus:
    corpus = Corpus(root)
    n = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for patient in range(2):
            for study in range(2):
                for series, modality in enumerate(("CT", "MR")):
                    for image in range(3):
                        ts = TRANSFER_SYNTAXES[n % len(TRANSFER_SYNTAXES)]
                        n += 1
                        ds = make_dataset(
                            patient=patient,
                            study=study,
                            series=series,
                            image=image,
                            modality=modality,
                            transfer_syntax=ts,
                        )
                        path = root / f"{modality}{patient}{study}{series}{image}.dcm"
                        ds.save_as(path, enforce_file_format=True)
                        corpus.instances.append(
                            Instance(
                                path=path,
                                patient_id=str(ds.PatientID),
                                patient_name=str(ds.PatientName),
                                study_uid=str(ds.StudyInstanceUID),
                                series_uid=str(ds.SeriesInstanceUID),
                                sop_uid=str(ds.SOPInstanceUID),
                                sop_class=str(ds.SOPClassUID),
                                modality=modality,
                                transfer_syntax=str(ts),
                                study_date=str(ds.StudyDate),
                            )
                        )
    return corpus


def dataset_bytes(path: Path) -> bytes:
    """The bytes of a Part 10 file after its file meta group: what must arrive unchanged."""
    from dicomio.dataset import read_file_info

    info = read_file_info(path)
    assert info is not None
    return path.read_bytes()[info.dataset_offset :]


def same_content(data: bytes, transfer_syntax: str, original: Path) -> bool:
    """Whether the data set ``data``, encoded in the uncompressed ``transfer_syntax``, holds
    what the corpus file ``original`` holds: the same elements with the same values and the
    same 16-bit pixel values, whatever the VR encoding and byte order of either."""
    from dicomio.dataset import decode_dataset

    got = decode_dataset(data, UID(transfer_syntax))
    want = dcmread(original)
    if {elem.tag for elem in got} != {elem.tag for elem in want}:
        return False
    for elem in want:
        if elem.keyword != "PixelData" and got[elem.tag].value != elem.value:
            return False

    def words(ds: Dataset, syntax: str) -> np.ndarray:
        order = ">" if syntax == ExplicitVRBigEndian else "<"
        return np.frombuffer(ds.PixelData, dtype=f"{order}u2")

    want_syntax = str(want.file_meta.TransferSyntaxUID)
    return bool(np.array_equal(words(got, transfer_syntax), words(want, want_syntax)))
