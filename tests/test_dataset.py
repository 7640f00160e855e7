"""dicomio.dataset: the direct Part 10 meta parser agrees with pydicom; byte order survives."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import FileMetaDataset

from dicomio.dataset import (
    decode_dataset,
    encode_dataset,
    load_file,
    parse_file_meta,
    part10_header,
    read_file_info,
)
from tests.corpus import Corpus


def test_load_file_agrees_with_read_file_info(corpus: Corpus) -> None:
    for instance in corpus.instances:
        loaded = load_file(instance.path, 1 << 30)
        assert loaded is not None
        info, raw = loaded
        assert info == read_file_info(instance.path)
        assert raw == instance.path.read_bytes()
        streamed = load_file(instance.path, 0)
        assert streamed is not None and streamed[0] == info and streamed[1] is None


def test_not_part10(tmp_path: Path) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\x00" * 200)
    assert load_file(junk, 1 << 20) is None
    truncated = part10_header("1.2.3", "1.2.3.4", "1.2.840.10008.1.2.1")[:-5]
    assert parse_file_meta(truncated) is None


@pytest.mark.parametrize(
    "target", ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"]
)
def test_pixels_survive_any_uncompressed_conversion(corpus: Corpus, target: str) -> None:
    for instance in corpus.instances:
        if instance.transfer_syntax == "1.2.840.10008.1.2.5":
            continue
        original = dcmread(instance.path)
        expected = original.pixel_array.copy()
        converted = decode_dataset(encode_dataset(original, target), target)
        converted.file_meta = FileMetaDataset()  # not a copy: Dataset.copy() is shallow
        converted.file_meta.TransferSyntaxUID = target
        assert (converted.pixel_array == expected).all(), instance.path.name
