"""Issue #13 item 3: writing a received data set fails (disk full, I/O error, quota).

PS3.4 B.2.3: the C-STORE-RSP is "Refused: Out of Resources" (A700H), the partial file is
removed, the rest of the data set is read and dropped, and the association goes on. The
first tests make the fragment writer fail with an injected OSError (no mount needed); the
last ones fill a real 1 MB tmpfs under ``dicomio storescp`` and ``dicomio qrscp``.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from pydicom.dataset import Dataset

from dicomio import AE, Server, evt, stream_to_disk
from dicomio import _scp as scp_module
from dicomio.sop import CTImageStorage, Verification
from tests.conftest import DCMTK_ENV, LOOPBACK, free_port, stop, wait_for_port
from tests.corpus import make_dataset, uid

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

OUT_OF_RESOURCES = 0xA700
#: Small PDUs, so that a data set of a few hundred kilobytes arrives as many fragments and
#: the writer fails in the middle of it.
SMALL_PDU = 16_384


def image(n: int, side: int = 64) -> Dataset:
    """A CT image of ``side`` x ``side`` 16-bit pixels (``side=512``: about 512 KB)."""
    ds = make_dataset(
        patient=0,
        study=0,
        series=0,
        image=n,
        modality="CT",
        transfer_syntax="1.2.840.10008.1.2.1",
    )
    ds.SOPInstanceUID = uid("disk-full", n, side)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Rows = ds.Columns = side
    ds.PixelData = np.arange(side * side, dtype=np.uint16).tobytes()
    return ds


@asynccontextmanager
async def serving(handler: Any) -> AsyncIterator[Server]:
    ae = AE("DISKFULL", maximum_pdu_size=SMALL_PDU)
    ae.add_supported_context(Verification)
    ae.add_supported_context(CTImageStorage)
    async with ae.start_server(
        (LOOPBACK, 0), evt_handlers=[(evt.EVT_C_STORE, handler)], shutdown_timeout=2
    ) as server:
        yield server


def requestor() -> AE:
    ae = AE("STORESCU")
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage)
    return ae


async def echo_works(port: int) -> None:
    """A fresh association is served normally."""
    with anyio.fail_after(10):
        async with requestor().associate(LOOPBACK, port, ae_title="DISKFULL") as assoc:
            assert (await assoc.send_c_echo()).Status == 0


class FailingWriter:
    """Replaces the fragment writer: raises ``error`` once ``limit`` bytes of a data set
    marked to fail were written (after writing part of it, as a filling disk does)."""

    def __init__(self, error: OSError, limit: int, fail_uids: set[str]) -> None:
        self.error = error
        self.limit = limit
        self.fail_uids = fail_uids
        self.written: dict[int, int] = {}
        self.raised = 0
        self.original = scp_module._Incoming.write

    def __call__(self, incoming: Any, data: bytes | memoryview) -> None:
        uid_ = str(incoming.command.affected_sop_instance_uid)
        done = self.written.get(id(incoming), 0)
        if uid_ in self.fail_uids and done + len(data) > self.limit:
            self.raised += 1
            raise self.error
        self.written[id(incoming)] = done + len(data)
        self.original(incoming, data)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    out = tmp_path / "in"
    out.mkdir()
    return out


ERRORS = {
    "ENOSPC": OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
    "EIO": OSError(errno.EIO, os.strerror(errno.EIO)),
    "EDQUOT": OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)),
    "plain": OSError("the sink gave up"),
}


@pytest.mark.parametrize("name", list(ERRORS))
@pytest.mark.parametrize("where", ["header", "middle"])
async def test_write_failure_refuses_store_and_association_goes_on(
    folder: Path, monkeypatch: pytest.MonkeyPatch, name: str, where: str
) -> None:
    big, small = image(1, side=512), image(2)
    limit = 0 if where == "header" else 100_000
    writer = FailingWriter(ERRORS[name], limit, {str(big.SOPInstanceUID)})
    # A plain function, so that it binds as a method does.
    monkeypatch.setattr(scp_module._Incoming, "write", lambda inc, data: writer(inc, data))
    received: list[str] = []
    leftovers: list[list[str]] = []

    @stream_to_disk(folder)
    async def on_store(event: Any) -> int:
        received.append(str(event.request.affected_sop_instance_uid))
        leftovers.append(sorted(p.name for p in folder.iterdir()))
        return 0

    async with serving(on_store) as server:
        with anyio.fail_after(30):
            async with requestor().associate(LOOPBACK, server.port, ae_title="DISKFULL") as a:
                status = await a.send_c_store(big)
                assert status.Status == OUT_OF_RESOURCES
                assert "ErrorComment" in status
                # Nothing of the failed data set is left, while the association still runs.
                assert list(folder.iterdir()) == []
                await echo_works(server.port)
                # The same association stores the next data set normally.
                assert (await a.send_c_store(small)).Status == 0
                assert (await a.send_c_echo()).Status == 0
        await echo_works(server.port)
    assert received == [str(small.SOPInstanceUID)]
    # Only the successful data set's file existed when its handler ran; afterwards none.
    assert len(leftovers[0]) == 1
    assert list(folder.iterdir()) == []
    # After the failure the rest of the big data set (about 512 KB in 16 KB PDUs) was read
    # and dropped, not written: the writer was not tried again, and the next store worked.
    assert writer.raised == 1
    if where == "middle":
        assert writer.written and max(writer.written.values()) <= writer.limit


async def test_part_file_cannot_be_created(tmp_path: Path) -> None:
    """The sink's folder is gone: creating the part file fails; same outcome."""
    gone = tmp_path / "gone"
    gone.mkdir()
    received: list[Any] = []

    @stream_to_disk(gone)
    async def on_store(event: Any) -> int:
        received.append(event)
        return 0

    async with serving(on_store) as server:
        gone.rmdir()
        with anyio.fail_after(30):
            async with requestor().associate(LOOPBACK, server.port, ae_title="DISKFULL") as a:
                assert (await a.send_c_store(image(3))).Status == OUT_OF_RESOURCES
                gone.mkdir()
                assert (await a.send_c_store(image(4))).Status == 0
        await echo_works(server.port)
    assert len(received) == 1


# -- a real full file system ---------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB tmpfs mounted for the test (root only); skipped where mounting is not allowed."""
    where = tmp_path / "tiny"
    where.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(
            "cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): "
            + result.stderr.decode(errors="replace").strip()
        )
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], timeout=30, check=False)


def files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


@pytest.fixture(params=["storescp", "qrscp"])
def app_on_tiny_disk(
    request: pytest.FixtureRequest, tiny_disk: Path, tmp_path: Path
) -> Iterator[tuple[str, int, Path]]:
    """``dicomio storescp -od`` or ``dicomio qrscp --data`` writing to the tiny disk."""
    app = str(request.param)
    port = free_port()
    where = ["-od", str(tiny_disk)] if app == "storescp" else ["--data", str(tiny_disk)]
    argv = [
        sys.executable,
        "-m",
        "dicomio",
        app,
        str(port),
        "--bind",
        LOOPBACK,
        "-aet",
        "DISKFULL",
        *where,
        "-v",
    ]
    with open(tmp_path / f"{app}.log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=DCMTK_ENV)
    try:
        wait_for_port(port, proc, timeout=20)
        yield app, port, tiny_disk
    finally:
        stop(proc)


async def test_full_tmpfs_refuses_then_serves(app_on_tiny_disk: tuple[str, int, Path]) -> None:
    app, port, disk = app_on_tiny_disk
    big = image(10, side=1024)  # 2 MB of pixels on a 1 MB file system
    small = image(11)
    with anyio.fail_after(60):
        async with requestor().associate(LOOPBACK, port, ae_title="DISKFULL") as assoc:
            status = await assoc.send_c_store(big)
            assert status.Status == OUT_OF_RESOURCES, status
            await echo_works(port)  # served while the association that failed is open
            assert (await assoc.send_c_store(small)).Status == 0
        await echo_works(port)
        async with requestor().associate(LOOPBACK, port, ae_title="DISKFULL") as assoc:
            assert (await assoc.send_c_store(image(12))).Status == 0
    names = [p.name for p in files_in(disk)]
    assert not [n for n in names if n.endswith(".part")], names
    assert not [n for n in names if str(big.SOPInstanceUID) in n], names
    assert sum(str(small.SOPInstanceUID) in n for n in names) == 1, names
    if app == "qrscp":
        with sqlite3.connect(disk / "index.sqlite") as conn:
            rows = {r[0] for r in conn.execute("SELECT sop_uid FROM instances")}
        assert rows == {str(small.SOPInstanceUID), str(image(12).SOPInstanceUID)}


class FullIndex:
    """The archive's index connection, except that adding an instance fails as SQLite does
    on a full disk (SQLITE_FULL)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.startswith("INSERT INTO instances"):
            raise sqlite3.OperationalError("database or disk is full")
        return self.conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


async def test_archive_index_full_refuses_and_leaves_no_file(tmp_path: Path) -> None:
    """The file fits but the index cannot grow (SQLITE_FULL, as on a full disk): A700H, and
    neither a file nor an index row is left for the refused instance."""
    from dicomio.apps.archive import Archive, add_storage_contexts

    archive = Archive(tmp_path / "archive")
    await archive.open()
    try:
        ae = AE("DISKFULL", maximum_pdu_size=SMALL_PDU)
        ae.add_supported_context(Verification)
        add_storage_contexts(ae)
        first, refused, later = image(20), image(21), image(22)
        async with ae.start_server(
            (LOOPBACK, 0), evt_handlers=archive.handlers(), shutdown_timeout=2
        ) as server:
            with anyio.fail_after(30):
                async with requestor().associate(
                    LOOPBACK, server.port, ae_title="DISKFULL"
                ) as assoc:
                    assert (await assoc.send_c_store(first)).Status == 0
                    writer = archive.index._writer
                    assert writer is not None
                    archive.index._writer = FullIndex(writer)  # type: ignore[assignment]
                    assert (await assoc.send_c_store(refused)).Status == OUT_OF_RESOURCES
                    await echo_works(server.port)
                    archive.index._writer = writer
                    assert (await assoc.send_c_store(later)).Status == 0
                await echo_works(server.port)
        stored = {p.stem for p in files_in(archive.files)}
        assert stored == {str(first.SOPInstanceUID), str(later.SOPInstanceUID)}
        assert files_in(archive.incoming) == []
        with sqlite3.connect(archive.root / "index.sqlite") as conn:
            rows = {r[0] for r in conn.execute("SELECT sop_uid FROM instances")}
        assert rows == stored
    finally:
        archive.close()


async def test_c_get_requestor_sink_fails(
    folder: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The same on the requestor side: C-GET sub-operations streamed to a folder (as
    ``dicomio getscu`` does) that cannot be written get 0xA700; the C-GET goes on and the
    association stays usable."""
    from dicomio.presentation import build_role
    from dicomio.sop import PatientRootQueryRetrieveInformationModelGet as GET

    big, small = image(30, side=512), image(31)
    writer = FailingWriter(ERRORS["ENOSPC"], 100_000, {str(big.SOPInstanceUID)})
    monkeypatch.setattr(scp_module._Incoming, "write", lambda inc, data: writer(inc, data))

    async def on_get(event: Any) -> AsyncIterator[Any]:
        yield 2
        yield 0xFF00, big
        yield 0xFF00, small

    scp = AE("DISKFULL")
    scp.add_supported_context(Verification)
    scp.add_supported_context(GET)
    scp.add_supported_context(CTImageStorage, scu_role=True, scp_role=True)
    received: list[str] = []

    @stream_to_disk(folder)
    async def on_store(event: Any) -> int:
        received.append(str(event.request.affected_sop_instance_uid))
        return 0

    scu = requestor()
    scu.add_requested_context(GET)
    scu.maximum_pdu_size = SMALL_PDU
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    query.PatientID = "PID000"
    async with scp.start_server(
        (LOOPBACK, 0), evt_handlers=[(evt.EVT_C_GET, on_get)], shutdown_timeout=2
    ) as server:
        with anyio.fail_after(30):
            async with scu.associate(
                LOOPBACK,
                server.port,
                ae_title="DISKFULL",
                ext_neg=[build_role(CTImageStorage, scp_role=True)],
                evt_handlers=[(evt.EVT_C_STORE, on_store)],
            ) as assoc:
                statuses = [s async for s, _ in assoc.send_c_get(query, GET)]
                assert (await assoc.send_c_echo()).Status == 0
        await echo_works(server.port)
    final = statuses[-1]
    assert final.NumberOfFailedSuboperations == 1, final
    assert final.NumberOfCompletedSuboperations == 1, final
    assert received == [str(small.SOPInstanceUID)]
    assert writer.raised == 1
    assert list(folder.iterdir()) == []
