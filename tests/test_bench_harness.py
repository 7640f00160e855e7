"""The benchmark's stand-in for the kernel must deliver the bytes the sender wrote, as reads."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from benchmarks.bench_core_dimse import socket_reads

writes = st.lists(
    st.one_of(st.binary(max_size=40), st.binary(max_size=40).map(memoryview)), max_size=30
)


@given(writes=writes, read_size=st.integers(1, 64))
def test_socket_reads_are_the_writes_cut_into_full_reads(
    writes: list[bytes | memoryview], read_size: int
) -> None:
    reads = socket_reads(writes, read_size)
    assert b"".join(reads) == b"".join(writes)
    assert all(type(read) is bytes for read in reads)
    assert all(len(read) == read_size for read in reads[:-1])
    assert not reads or 0 < len(reads[-1]) <= read_size
