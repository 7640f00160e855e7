"""dicomio.tune_allocator: glibc's M_TOP_PAD, set through mallopt, and nothing elsewhere.

Each test that calls it runs in a child process: it changes the allocator of the whole
process, which the test runner should not inherit.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from dicomio import tune_allocator


def _in_child(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


def test_negative_pad_is_refused() -> None:
    with pytest.raises(ValueError):
        tune_allocator(-1)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc is a Linux C library")
def test_applied_on_glibc_and_freed_memory_is_kept() -> None:
    """On glibc the call succeeds, and a freed 8 MiB block is reused without page faults."""
    out = _in_child(
        """
        import ctypes, platform, resource
        if platform.libc_ver()[0] != "glibc":
            print("not glibc")
            raise SystemExit
        from dicomio import tune_allocator
        applied = tune_allocator(64 << 20)

        def faults_for_a_round_of_buffers():
            # Allocate and touch, then free, the way a server handles one large instance.
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            buffers = [bytearray(256 * 1024) for _ in range(32)]
            del buffers
            return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

        faults_for_a_round_of_buffers()  # the first round maps the pages
        print(applied, max(faults_for_a_round_of_buffers() for _ in range(3)))
        """
    )
    if out == "not glibc":
        pytest.skip("the C library is not glibc")
    applied, faults = out.split()
    assert applied == "True"
    # 8 MiB is 2,048 pages: kept memory is reused, so later rounds fault in almost none.
    assert int(faults) < 200


def test_elsewhere_it_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert tune_allocator() is False
