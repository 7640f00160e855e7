"""The scale-out benchmark's instances and index rows (``benchmarks/scaleout.py``): one
patient per study, attributes that make the B2 queries select 1 %, 0.8 %, one study or one
series, whatever the number of studies."""

from __future__ import annotations

import datetime
import sqlite3
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

#: storescu processes in B1, find clients in B2's second variant.
CLIENTS = 8
ROWS = COLUMNS = 512
MIB = 1 << 20
SERIES_PER_STUDY, PER_SERIES = 2, 5  # B2: 10 instances per study


def uid(*parts: object) -> str:
    return str(generate_uid(entropy_srcs=["scaleout", *map(str, parts)]))


def study_attributes(study: int) -> dict[str, str]:
    """The study's attributes in B1 and B2 alike; see ``queries`` for what they select."""
    date = datetime.date(2024, 1, 1) + datetime.timedelta(days=study % 366)
    return {
        "PatientID": f"PID{study:05d}",
        "PatientName": f"Name{study % 100:02d}^Given{study:05d}",
        "PatientBirthDate": "19700101",
        "PatientSex": "O",
        "StudyInstanceUID": uid(study),
        "StudyDate": date.strftime("%Y%m%d"),
        "StudyTime": "120000",
        "StudyID": str(study),
        "AccessionNumber": f"A{study:06d}",
    }


def instance(study: int, series: int, number: int, pixels: bytes | None) -> Dataset:
    """One MR instance; with ``pixels``, 512 x 512 x 16 bits of them."""
    ds = Dataset()
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = uid(study, series, number)
    for keyword, value in study_attributes(study).items():
        setattr(ds, keyword, value)
    ds.SeriesInstanceUID = uid(study, series)
    ds.SeriesNumber = series + 1
    ds.Modality = "MR"
    ds.InstanceNumber = number + 1
    if pixels is not None:
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = ROWS, COLUMNS
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.PixelData = pixels
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def write_shares(folder: Path, count: int, clients: int, *, pixels: bool, per_study: int) -> int:
    """``count`` instances (``per_study`` to a study, one series) in ``clients`` folders
    ``share0``..., whole studies to a folder; their total size in bytes."""
    data = bytes(range(256)) * (ROWS * COLUMNS * 2 // 256) if pixels else None
    total = 0
    for n in range(count):
        study, number = divmod(n, per_study)
        share = folder / f"share{study % clients}"
        share.mkdir(parents=True, exist_ok=True)
        path = share / f"{n:06d}.dcm"
        instance(study, 0, number, data).save_as(path, enforce_file_format=True)
        total += path.stat().st_size
    return total


def seed_rows(studies: int) -> tuple[list[tuple[Any, ...]], ...]:
    """B2's rows for the index's tables (studies, series, instances), as stores would write
    them (``dicomio.apps.archive``: attributes as text, paths by UID)."""
    study_rows, series_rows, instance_rows = [], [], []
    for study in range(studies):
        a = study_attributes(study)
        study_rows.append(
            (
                a["StudyInstanceUID"],
                a["PatientID"],
                a["StudyDate"],
                a["StudyTime"],
                a["AccessionNumber"],
                a["StudyID"],
                "",
                "",
                a["PatientID"],
                a["PatientName"],
                a["PatientBirthDate"],
                a["PatientSex"],
            )
        )
        for series in range(SERIES_PER_STUDY):
            series_uid = uid(study, series)
            series_rows.append((series_uid, a["StudyInstanceUID"], "MR", str(series + 1), ""))
            for number in range(PER_SERIES):
                sop = uid(study, series, number)
                path = f"{a['PatientID']}/{a['StudyInstanceUID']}/{series_uid}/{sop}.dcm"
                row = (sop, series_uid, MRImageStorage, str(number + 1), ExplicitVRLittleEndian)
                instance_rows.append((*row, path, 600))
    return study_rows, series_rows, instance_rows


COLUMNS_OF = {
    "studies": "study_uid, patient_id, study_date, study_time, accession_number, study_id,"
    " description, referring_physician, patient_key, patient_name, birth_date, sex",
    "series": "series_uid, study_uid, modality, series_number, description",
    "instances": "sop_uid, series_uid, sop_class_uid, instance_number, transfer_syntax,"
    " path, size",
}


def seed_index(db: str | None, data: Path, studies: int) -> None:
    """Create the archive's index (through its own ``open``, so the schema is the archive's)
    and fill it with ``studies`` studies by bulk SQL."""
    from dicomio.apps.index import open_index

    data.mkdir(parents=True, exist_ok=True)
    index = open_index(db, data)
    index.open()
    index.close()
    tables = dict(zip(COLUMNS_OF, seed_rows(studies), strict=True))
    if db is None:
        conn = sqlite3.connect(data / "index.sqlite")
        with conn:
            for table, rows in tables.items():
                marks = ", ".join("?" * len(rows[0]))
                conn.executemany(
                    f"INSERT INTO {table} ({COLUMNS_OF[table]}) VALUES ({marks})", rows
                )
        conn.close()
        return
    import psycopg

    with psycopg.connect(db, autocommit=True) as pg:
        for table, rows in tables.items():
            with pg.cursor().copy(f"COPY {table} ({COLUMNS_OF[table]}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        # Autovacuum would analyze the tables of a grown archive; not within the run.
        pg.execute("ANALYZE")


def queries(studies: int) -> dict[str, Dataset]:
    """B2's queries (Study Root), the same whatever the size; matches at 10,000 studies:
    1, 100, 82 and 5."""
    probe = 42
    exact = Dataset()
    exact.QueryRetrieveLevel = "STUDY"
    exact.PatientID = f"PID{probe:05d}"
    exact.StudyInstanceUID = ""
    exact.StudyDate = ""
    wildcard = Dataset()
    wildcard.QueryRetrieveLevel = "STUDY"
    wildcard.PatientName = "Name07^*"
    wildcard.PatientID = ""
    wildcard.StudyInstanceUID = ""
    dates = Dataset()
    dates.QueryRetrieveLevel = "STUDY"
    dates.StudyDate = "20240301-20240303"
    dates.PatientID = ""
    dates.StudyInstanceUID = ""
    image = Dataset()
    image.QueryRetrieveLevel = "IMAGE"
    # dcmqrscp is strictly hierarchical: an IMAGE query names its study and series.
    image.StudyInstanceUID = uid(probe)
    image.SeriesInstanceUID = uid(probe, 0)
    image.SOPInstanceUID = ""
    image.InstanceNumber = ""
    return {
        "exact PatientID": exact,
        "PatientName wildcard": wildcard,
        "StudyDate range": dates,
        "IMAGE by SeriesInstanceUID": image,
    }
