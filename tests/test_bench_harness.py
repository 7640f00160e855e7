"""The benchmark harness: its stand-in for the kernel delivers the bytes the sender wrote, as
reads; a forking server is measured with its children."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from benchmarks.bench_core_dimse import socket_reads
from benchmarks.runner import Server, server_cpu, server_descriptors, server_pids

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


def test_a_forking_server_counts_its_children(tmp_path: Path) -> None:
    """CPU, memory and descriptors of ``storescp --fork`` or ``--workers`` servers are their
    children's too; a single-process server's are its own."""
    proc = subprocess.Popen(["sh", "-c", "sleep 30 & wait"])
    try:
        deadline = time.monotonic() + 10
        forking = Server("t", proc, [0], tmp_path / "log", forks=True)
        while len(server_pids(forking)) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(server_pids(forking)) == 2
        assert server_pids(forking)[0] == proc.pid
        single = Server("t", proc, [0], tmp_path / "log")
        assert server_pids(single) == [proc.pid]
        assert server_descriptors(forking) >= server_descriptors(single) > 0
        assert server_cpu(forking) >= 0.0
    finally:
        subprocess.run(["pkill", "-P", str(proc.pid)], check=False, timeout=10)
        proc.kill()
        proc.wait(10)
