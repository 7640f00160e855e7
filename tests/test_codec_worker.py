"""Codec worker processes (dicomio._transcoding) when things go wrong (issue #14).

A worker killed in the middle of a conversion fails that one send with TranscodeError and
the next send gets a new worker; a send cancelled during its conversion kills the worker
(its work is no longer wanted) and leaves no temporary file; temporary files go after every
send, good or failed; a worker that cannot start is a TranscodeError too. The worker is
reached through the module's internals (the pool of the running event loop), and the moment
it has its request is seen through a wrapped ``_Worker.ask``: no sleeps.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from io import BytesIO
from pathlib import Path
from typing import Any

import anyio
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from dicomio import AE, _transcoding, evt
from dicomio.errors import TranscodeError
from tests.conftest import LOOPBACK

np = pytest.importorskip("numpy")

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
SMALL = TEST_FILES / "CT_small.dcm"
DEADLINE = 60
CLASSES = (CTImageStorage, SecondaryCaptureImageStorage)


def _big(path: Path) -> Path:
    """A native multi-frame image whose JPEG 2000 encoding takes the worker most of a
    second (8 frames of 512 x 512 noise): a wide window to act in."""
    rng = np.random.default_rng(14)
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Rows = ds.Columns = 512
    ds.NumberOfFrames = 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = rng.integers(0, 4096, size=(8, 512, 512), dtype=np.uint16).tobytes()
    ds["PixelData"].VR = "OW"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    path.write_bytes(buf.getvalue())
    return path


@pytest.fixture
def temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The system temporary folder, for this test only: what is left in it is ours."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _left(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".dicomio-"))


class Asked:
    """Wraps ``_Worker.ask``: which worker got a request, and an event when one did."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.workers: list[Any] = []
        self.event: anyio.Event | None = None
        original = _transcoding._Worker.ask

        async def ask(worker: Any, request: dict[str, Any]) -> dict[str, Any]:
            self.workers.append(worker)
            if self.event is not None:
                self.event.set()
            return await original(worker, request)

        monkeypatch.setattr(_transcoding._Worker, "ask", ask)

    def arm(self) -> anyio.Event:
        self.event = anyio.Event()
        return self.event


@asynccontextmanager
async def j2k_only() -> AsyncIterator[Any]:
    """An association to a dicomio SCP accepting only JPEG 2000 Lossless: every send of a
    native file goes through a codec worker."""
    stored: list[str] = []

    async def on_store(event: Any) -> int:
        stored.append(str(event.request.affected_sop_instance_uid))
        return 0

    scp = AE("J2KONLY")
    scu = AE("SENDER")
    for sop_class in CLASSES:
        scp.add_supported_context(sop_class, JPEG2000Lossless)
        scu.add_requested_context(sop_class, JPEG2000Lossless)
    scp.add_supported_context("1.2.840.10008.1.1")
    scu.add_requested_context("1.2.840.10008.1.1")
    async with (
        scp.start_server((LOOPBACK, 0), evt_handlers=[(evt.EVT_C_STORE, on_store)]) as server,
        scu.associate(LOOPBACK, server.port, ae_title="J2KONLY") as assoc,
    ):
        assoc.stored = stored
        yield assoc


async def test_killed_worker_fails_that_send_only(
    tmp_path: Path, temp_dir: Path, monkeypatch: pytest.MonkeyPatch, anyio_backend: str
) -> None:
    big = _big(tmp_path / "big.dcm")
    asked = Asked(monkeypatch)
    with anyio.fail_after(DEADLINE):
        async with j2k_only() as assoc:
            assert (await assoc.send_c_store(SMALL)).Status == 0  # a worker, now idle
            assert _left(temp_dir) == []
            got: list[BaseException] = []

            async def send() -> None:
                try:
                    await assoc.send_c_store(big)
                except TranscodeError as exc:
                    got.append(exc)

            async with anyio.create_task_group() as tg:
                event = asked.arm()
                tg.start_soon(send)
                await event.wait()
                victim = asked.workers[-1]
                victim.process.kill()
            assert len(got) == 1, got
            message = str(got[0])
            assert "codec worker process ended abnormally" in message, message
            assert str(big) in message
            assert victim.process.returncode is not None
            assert _left(temp_dir) == []
            # The association and the pool go on: a new worker takes the next send.
            assert (await assoc.send_c_echo()).Status == 0
            assert (await assoc.send_c_store(SMALL)).Status == 0
            assert asked.workers[-1] is not victim
            assert _left(temp_dir) == []
            assert len(assoc.stored) == 2


@pytest.mark.parametrize("form", ["path", "dataset"])
async def test_cancelled_send_kills_the_worker(
    form: str,
    tmp_path: Path,
    temp_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    anyio_backend: str,
) -> None:
    """Cancelled during its conversion: the worker is killed, not left to finish, and no
    temporary file stays (the result's, and for a Dataset the encoded source's)."""
    big = _big(tmp_path / "big.dcm")
    item: Any = big if form == "path" else pydicom.dcmread(big)
    asked = Asked(monkeypatch)
    with anyio.fail_after(DEADLINE):
        async with j2k_only() as assoc:
            event = asked.arm()
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(assoc.send_c_store, item)
                    await event.wait()
                    assert len(_left(temp_dir)) == (1 if form == "path" else 2)
                    scope.cancel()
            victim = asked.workers[-1]
            assert victim.process.returncode is not None  # killed
            pool = _transcoding._pool.get()
            assert victim not in pool.idle and victim.process not in pool.processes
            assert _left(temp_dir) == []
            assert (await assoc.send_c_echo()).Status == 0
            assert (await assoc.send_c_store(SMALL)).Status == 0
            assert asked.workers[-1] is not victim
            assert assoc.stored == [str(pydicom.dcmread(SMALL).SOPInstanceUID)]
    assert _left(temp_dir) == []


async def test_failed_conversion_leaves_no_temporary_file(
    tmp_path: Path, temp_dir: Path, anyio_backend: str
) -> None:
    """A conversion the codec refuses (a 3 x 3 image JPEG 2000 will not encode) fails with
    TranscodeError from the worker, which stays in the pool; nothing is left behind."""
    tiny = TEST_FILES / "SC_rgb_small_odd.dcm"
    with anyio.fail_after(DEADLINE):
        async with j2k_only() as assoc:
            for item in (tiny, pydicom.dcmread(tiny)):
                with pytest.raises(TranscodeError, match="cannot transcode"):
                    await assoc.send_c_store(item)
                assert _left(temp_dir) == []
            pool = _transcoding._pool.get()
            assert len(pool.idle) == 1  # an error answer, not a dead worker
            assert (await assoc.send_c_store(SMALL)).Status == 0
            assert (await assoc.send_c_store(pydicom.dcmread(SMALL))).Status == 0
            assert _left(temp_dir) == []


async def test_worker_that_cannot_start_is_a_transcode_error(
    tmp_path: Path, temp_dir: Path, monkeypatch: pytest.MonkeyPatch, anyio_backend: str
) -> None:
    """A worker that dies before READY (here a sitecustomize that exits: it takes the
    parent's environment) is a TranscodeError, which a C-MOVE counts as a failed
    sub-operation, not an anyio stream error escaping."""
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "sitecustomize.py").write_text("import os\nos._exit(3)\n")
    monkeypatch.setenv("PYTHONPATH", str(broken))
    with anyio.fail_after(DEADLINE):
        with pytest.raises(TranscodeError, match="did not start") as info:
            await _transcoding.transcode_file(SMALL, JPEG2000Lossless)
    assert "exit status 3" in str(info.value)
    assert _left(temp_dir) == []
    assert _transcoding._pool.get().processes == set()
