"""Receiving C-STORE data sets into a folder: for storescp, getscu and movescu --store.

Each data set is streamed to a temporary file in the output folder while it arrives (never
decoded in memory) and then renamed: ``flat`` names it ``<SOPInstanceUID>.dcm``;
``hierarchy`` reads it up to the pixel data and files it as
``<PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian

from dicomio import stream_to_disk
from dicomio._structure import check_file, truncation
from dicomio.apps._attributes import read_attributes
from dicomio.apps._common import safe_name
from dicomio.apps._store_as import convert_in_place, refusal
from dicomio.dataset import write_part10
from dicomio.errors import TranscodeError
from dicomio.events import Event

__all__ = ["LAYOUTS", "Receiver"]

log = logging.getLogger("dicomio.apps")

LAYOUTS = ("flat", "hierarchy")
#: "Refused: Out of resources" and "Cannot understand" (PS3.4 B.2.3).
OUT_OF_RESOURCES, CANNOT_UNDERSTAND = 0xA700, 0xC000
#: How many received paths a ``Receiver`` remembers.
RECENT = 1024


_PATH_KEYS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID")


class _Truncated(Exception):
    """The received data set is not whole (dicomio._structure says why)."""


def _refuse_truncated(sop_uid: str, reason: str) -> Dataset:
    """The C-STORE failure for a data set cut short: Cannot understand (PS3.4 B.2.3)."""
    log.error("refused %s: the data set is truncated or malformed: %s", sop_uid, reason)
    status = Dataset()
    status.Status = CANNOT_UNDERSTAND
    status.ErrorComment = "truncated or malformed data set"
    return status


class Receiver:
    """A C-STORE handler that files what it receives under ``folder``; counts what it got."""

    def __init__(
        self,
        folder: Path,
        layout: str = "flat",
        *,
        store_as: str | None = None,
        allow_lossy: bool = False,
    ) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}")
        self.folder = folder
        self.layout = layout
        #: Convert each instance to this transfer syntax before filing it (``_store_as``).
        self.store_as = store_as
        self.allow_lossy = allow_lossy
        #: How many instances were filed.
        self.count = 0
        #: The paths of the last ``RECENT`` instances filed: a server that runs for months
        #: must not keep one for every instance it ever received.
        self.received: deque[Path] = deque(maxlen=RECENT)
        folder.mkdir(parents=True, exist_ok=True)

        @stream_to_disk(folder)
        async def on_store(event: Event) -> int | Dataset:
            return await self._on_store(event)

        self.handler = on_store

    async def _on_store(self, event: Event) -> int | Dataset:
        sop_uid = str(event.request.affected_sop_instance_uid)
        syntax = str(event.context.transfer_syntax) if event.context else ImplicitVRLittleEndian
        try:
            if event.dataset_path is None:
                raw = event.raw or b""
                # A data set cut short is refused, never kept (nothing written for it).
                reason = truncation(raw, syntax)
                if reason is not None:
                    return _refuse_truncated(sop_uid, reason)
                meta = event.file_meta
                tmp = self.folder / f".{safe_name(sop_uid)}.part"
                await anyio.to_thread.run_sync(write_part10, tmp, meta, [raw])
            else:
                tmp = event.dataset_path
            if self.store_as is not None:
                # Checked whole first: a truncated data set is refused as such, not as
                # something the codec could not read.
                reason = await anyio.to_thread.run_sync(check_file, tmp, syntax)
                if reason is not None:
                    tmp.unlink(missing_ok=True)
                    return _refuse_truncated(sop_uid, reason)
                try:
                    new_uid = await convert_in_place(
                        tmp, self.store_as, allow_lossy=self.allow_lossy
                    )
                except (TranscodeError, OSError) as exc:
                    tmp.unlink(missing_ok=True)
                    return refusal(sop_uid, exc)
                syntax, sop_uid = self.store_as, new_uid or sop_uid
            target = await anyio.to_thread.run_sync(self._file_away, tmp, sop_uid, syntax)
        except _Truncated as exc:
            return _refuse_truncated(sop_uid, str(exc))
        except OSError as exc:
            log.error("cannot write %s: %s", sop_uid, exc)
            return OUT_OF_RESOURCES
        except ValueError as exc:
            log.error("refused %s: %s", sop_uid, exc)
            return CANNOT_UNDERSTAND
        self.received.append(target)
        self.count += 1
        log.info("received %s from %s", target, event.assoc.remote_ae_title)
        return 0

    def _file_away(self, tmp: Path, sop_uid: str, syntax: str) -> Path:
        # In the worker thread that files it anyway: a data set cut short is removed here.
        reason = check_file(tmp, syntax)
        if reason is not None:
            tmp.unlink(missing_ok=True)
            raise _Truncated(reason)
        if self.layout == "flat":
            target = self.folder / f"{safe_name(sop_uid)}.dcm"
        else:
            try:
                # Only the three attributes the path needs: whatever else the data set holds
                # (a large private element) is skipped on disk, never read into memory.
                ds = read_attributes(tmp, _PATH_KEYS)
            except Exception as exc:
                tmp.unlink(missing_ok=True)
                raise ValueError(f"unreadable data set: {exc}") from exc
            # safe_name is injective, so different identifiers never share a folder or file.
            parts: list[Any] = [safe_name(str(ds.get(k, "") or "").strip()) for k in _PATH_KEYS]
            target = self.folder.joinpath(*parts, f"{safe_name(sop_uid)}.dcm")
            target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)
        return target
