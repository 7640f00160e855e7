"""dicomio.dataset: the direct Part 10 meta parser agrees with pydicom; byte order survives."""

from __future__ import annotations

import os
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


# -- read_if_cached: reading a small file on the event loop without waiting for a disk ----


def test_read_if_cached_gives_the_whole_file(tmp_path: Path) -> None:
    from dicomio import dataset as dataset_module

    if dataset_module._RWF_NOWAIT is None:
        pytest.skip("os.preadv with RWF_NOWAIT is not available here")
    path = tmp_path / "f.bin"
    content = bytes(range(256)) * 1000
    path.write_bytes(content)
    path.read_bytes()  # in the page cache now
    assert dataset_module.read_if_cached(path, len(content)) == content
    assert dataset_module.read_if_cached(path, len(content) - 1) is None  # over the limit
    assert dataset_module.read_if_cached(tmp_path / "missing", 1 << 20) is None
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert dataset_module.read_if_cached(empty, 10) == b""


def test_read_if_cached_declines_what_is_not_in_memory(tmp_path: Path) -> None:
    from dicomio import dataset as dataset_module

    if dataset_module._RWF_NOWAIT is None or not hasattr(os, "posix_fadvise"):
        pytest.skip("os.preadv with RWF_NOWAIT or posix_fadvise is not available here")
    path = tmp_path / "cold.bin"
    path.write_bytes(os.urandom(1 << 20))
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    result = dataset_module.read_if_cached(path, 1 << 21)
    if result is not None:
        pytest.skip("this file system kept the file in memory (tmpfs?)")
    # The thread path still reads it in full.
    assert dataset_module.load_file(path, 1 << 21) is None  # not Part 10: no FileInfo


@pytest.mark.timeout(10)
def test_read_if_cached_leaves_a_fifo_to_the_thread_path(tmp_path: Path) -> None:
    """Opening a FIFO for reading waits for a writer: on the event loop it must not."""
    from dicomio import dataset as dataset_module

    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert dataset_module.read_if_cached(fifo, 1 << 20) is None  # returns, does not block


def test_read_if_cached_without_the_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dicomio import dataset as dataset_module

    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 100)
    monkeypatch.setattr(dataset_module, "_RWF_NOWAIT", None)
    assert dataset_module.read_if_cached(path, 1000) is None
