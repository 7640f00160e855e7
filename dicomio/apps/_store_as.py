"""``--store-as``: converting a received instance to one transfer syntax before it is filed.

storescp and qrscp receive each data set into a Part 10 file next to where it will be kept.
With a ``--store-as`` syntax, that file is converted in a codec worker process
(``dicomio._transcoding``) and the result replaces it, so what is filed (and, for qrscp,
indexed) is the converted instance. Lossless only unless ``--allow-lossy`` (PS3.5 A.4; a
lossy result is a new instance with a new SOP Instance UID, PS3.4). A conversion that
fails refuses the C-STORE and leaves nothing on disk for it (PS3.4 B.2.3).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import anyio.to_thread
from pydicom.dataset import Dataset

from dicomio._transcoding import transcode_file
from dicomio.dataset import read_file_info
from dicomio.errors import TranscodeError

__all__ = ["CANNOT_UNDERSTAND", "OUT_OF_RESOURCES", "convert_in_place", "refusal"]

log = logging.getLogger("dicomio.apps")

#: "Refused: Out of resources" and "Error: Cannot understand" (PS3.4 B.2.3).
OUT_OF_RESOURCES, CANNOT_UNDERSTAND = 0xA700, 0xC000
#: Error Comment is LO: at most 64 characters (PS3.5 6.2).
_COMMENT = 64


async def convert_in_place(path: Path, target: str, *, allow_lossy: bool) -> str | None:
    """Convert the Part 10 file ``path`` to ``target``, replacing it; the result's SOP
    Instance UID, or None if the file already was in ``target`` (then left untouched).

    Raises ``TranscodeError`` (or a subclass) or ``OSError``; ``path`` is then unchanged
    and no converted copy is left behind.
    """
    info = await anyio.to_thread.run_sync(read_file_info, path)
    if info is not None and str(info.transfer_syntax) == target:
        return None
    done = await transcode_file(
        path, target, allow_lossy=allow_lossy, bare=False, isolate=True, directory=path.parent
    )
    try:
        os.replace(done.path, path)
    except OSError:
        done.discard()
        raise
    return done.sop_instance_uid


def refusal(sop_uid: str, exc: Exception) -> Dataset:
    """The C-STORE failure for an instance ``--store-as`` could not convert or write."""
    status = Dataset()
    if isinstance(exc, TranscodeError):
        status.Status = CANNOT_UNDERSTAND
        comment = f"cannot store as requested: {exc}"
    else:
        status.Status = OUT_OF_RESOURCES
        comment = f"cannot write: {exc}"
    log.error("refused %s: %s", sop_uid, comment)
    status.ErrorComment = comment[:_COMMENT]
    return status
