"""Keep freed memory for reuse: a process setting for servers that move large data sets.

Every instance a C-STORE SCP receives passes through buffers of its size: the transport's
reads, the reassembled data set, the file written from it. They are freed when the instance
is done, and glibc's allocator gives memory at the top of its heap back to the kernel as
soon as more than its trim threshold is free there; the next instance then takes it back a
page at a time, and each page fault costs more than copying the page. On the machines
dicomio's benchmarks run on, a server receiving 0.5 MB instances over one association
spent three quarters of its CPU time in the kernel doing exactly that
(``benchmarks/RESULTS.md``, S3).

``tune_allocator`` sets glibc's ``M_TOP_PAD``: the heap grows by that much more than asked
and keeps that much when it trims, so a working set of a few instances stays mapped and is
reused. It changes the whole process, which is why it is a function to call and not
something the library does on import: the ``dicomio`` command line calls it; an
application embedding dicomio decides for itself. Memory kept this way is counted in the
process's resident size once touched, up to ``top_pad`` bytes beyond what is in use.
"""

from __future__ import annotations

import sys

__all__ = ["DEFAULT_TOP_PAD", "tune_allocator"]

#: Enough for a few 0.5 MB instances and their transport buffers in flight at once.
DEFAULT_TOP_PAD = 16 << 20

#: glibc's <malloc.h> parameter number for the top pad.
_M_TOP_PAD = -2


def tune_allocator(top_pad: int = DEFAULT_TOP_PAD) -> bool:
    """Ask glibc's malloc to keep ``top_pad`` bytes of freed heap; True if it did.

    False, and nothing changed, where the C library is not glibc (musl, macOS, Windows).
    """
    if top_pad < 0:
        raise ValueError("top_pad must not be negative")
    if not sys.platform.startswith("linux"):
        return False
    import ctypes  # here: importing dicomio should not load ctypes for this

    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return False  # not glibc
    mallopt = libc.mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_TOP_PAD, min(top_pad, 2**31 - 1)))
