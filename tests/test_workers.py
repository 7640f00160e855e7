"""``dicomio qrscp --workers 2``: two worker processes on one port behind a supervisor.

DCMTK stores the corpus over 8 associations at once; fresh findscu/getscu/movescu
associations, landing on either worker, answer exactly; SIGTERM drains and every stored
instance is indexed once; with the index in SQLite, and in PostgreSQL. A worker killed with SIGKILL is replaced while the port keeps
answering, and an association open when SIGTERM arrives is let finish.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage

from dicomio import AE
from dicomio.apps import _workers
from dicomio.apps._workers import bind_sockets
from tests.conftest import DCMTK_ENV, LOOPBACK, free_port, require_dcmtk, stop, wait_for_port
from tests.corpus import Corpus
from tests.test_apps_cli import (
    RLE,
    dcmtk_find,
    dicomio,
    find_cases,
    run,
    series_without_rle,
    text,
)

pytestmark = [pytest.mark.timeout(180)]


class Supervisor:
    """``dicomio qrscp --workers 2`` on a free port; output to a log file.

    ``db``: the index (None: SQLite in the data folder); several supervisors may share one
    ``data`` folder and ``db`` (tests/test_deployment.py). ``started()`` waits until both
    workers listen.
    """

    def __init__(
        self,
        root: Path,
        *,
        db: str | None = None,
        data: Path | None = None,
        aet: str = "DICOMIO",
        move_port: int | None = None,
        name: str = "qrscp",
        options: tuple[str, ...] = (),
    ) -> None:
        self.root = root
        self.name = name
        self.db = db
        self.port = free_port()
        #: Where the move destination STORESCP listens (started by the test that moves).
        self.move_port = move_port or free_port()
        self.data = data or root / "data"
        self.log = root / f"{name}.log"
        argv = dicomio(
            "qrscp",
            str(self.port),
            "--bind",
            LOOPBACK,
            "--data",
            str(self.data),
            "-aet",
            aet,
            "--workers",
            "2",
            "-v",
            "--dest",
            f"STORESCP={LOOPBACK}:{self.move_port}",
            *(["--db", db] if db else []),
            *options,
        )
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=DCMTK_ENV)

    def started(self) -> Supervisor:
        wait_for_port(self.port, self.proc, timeout=30)
        self.wait_for(lambda: len(self.workers()) == 2 and self.output().count("listening") >= 3)
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def workers(self) -> set[int]:
        """The supervisor's child processes."""
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        if path.exists():
            return {int(p) for p in path.read_text().split()}
        found = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False
        )
        return {int(p) for p in found.stdout.split()}

    def wait_for(self, condition: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met in {timeout} s: {self.output()}")
            if self.proc.poll() is not None:
                raise AssertionError(f"supervisor exited: {self.output()}")
            time.sleep(0.05)

    def terminate(self, timeout: float = 30.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            stop(self.proc)  # the workers follow it out: their stdin pipe closes

    def index(self) -> list[tuple[str, str]]:
        """(SOP Instance UID, path) of every indexed instance."""
        if self.db is None:
            with sqlite3.connect(self.data / "index.sqlite") as db:
                return db.execute("SELECT sop_uid, path FROM instances").fetchall()
        import psycopg

        with psycopg.connect(self.db) as conn:
            return [
                (str(u), str(p)) for u, p in conn.execute("SELECT sop_uid, path FROM instances")
            ]


@pytest.fixture
def supervisor(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Supervisor]:
    """One supervisor on SQLite, or with ``indirect`` parametrization "postgres", on a new
    PostgreSQL database (skipped without one)."""
    require_dcmtk("echoscu")
    db = None
    if getattr(request, "param", "sqlite") == "postgres":
        db = request.getfixturevalue("postgres_server").new_database()
    server = Supervisor(tmp_path, db=db)
    try:
        yield server.started()
    finally:
        server.close()


def echo(port: int) -> subprocess.CompletedProcess[bytes]:
    tools = require_dcmtk("echoscu")
    return run([tools["echoscu"], "-aec", "DICOMIO", LOOPBACK, str(port)], timeout=60)


def store_in_parallel(
    port: int, corpus: Corpus, associations: int, called: str = "DICOMIO"
) -> None:
    """DCMTK storescu sends the corpus over ``associations`` associations at once."""
    tools = require_dcmtk("storescu")
    unc = [i.path for i in corpus.instances if i.transfer_syntax != RLE]
    rle = [i.path for i in corpus.instances if i.transfer_syntax == RLE]
    # RLE files go in associations of their own that propose RLE (-xr -R), as DCMTK needs.
    groups = [(["-xr", "-R"], rle[k::2]) for k in range(2)]
    groups += [([], unc[k :: associations - 2]) for k in range(associations - 2)]
    common = [tools["storescu"], "-aet", "STORESCU", "-aec", called]
    procs = [
        subprocess.Popen(
            [*common, *extra, LOOPBACK, str(port), *map(str, files)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=DCMTK_ENV,
        )
        for extra, files in groups
    ]
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out.decode(errors="replace")


def store_find_get_move(
    port: int, corpus: Corpus, tmp_path: Path, move_port: int, called: str = "DICOMIO"
) -> None:
    """Through ``port``: DCMTK stores the corpus over 8 associations at once, then fresh
    findscu, getscu and movescu associations (to storescp on ``move_port``, known as
    STORESCP) answer exactly, whichever worker or node each lands on."""
    tools = require_dcmtk("storescu", "findscu", "getscu", "movescu", "storescp")
    store_in_parallel(port, corpus, 8, called)
    # Fresh associations land on either worker; each answers from the one index.
    for attempt in range(2):
        for name, model, keys, keyword, expected in find_cases(corpus):
            responses, output = dcmtk_find(
                port, model, keys, tmp_path / f"find-{attempt}-{name}", called
            )
            got = [str(r[keyword].value) for r in responses]
            assert sorted(got) == sorted(expected), f"{name}: {output}"

    series = series_without_rle(corpus)
    study = corpus.by(series_uid=series)[0].study_uid
    for attempt in range(2):
        out = tmp_path / f"get-{attempt}"
        out.mkdir()
        result = run(
            [
                tools["getscu"],
                "-S",
                "-aet",
                "GETSCU",
                "-aec",
                called,
                "-od",
                str(out),
                "-k",
                "QueryRetrieveLevel=SERIES",
                "-k",
                f"StudyInstanceUID={study}",
                "-k",
                f"SeriesInstanceUID={series}",
                LOOPBACK,
                str(port),
            ]
        )
        assert result.returncode == 0, text(result)
        got = sorted(str(dcmread(p).SOPInstanceUID) for p in out.iterdir())
        assert got == sorted(i.sop_uid for i in corpus.by(series_uid=series))

    # C-MOVE to the move destination the workers know, DCMTK's storescp.
    moved = tmp_path / "moved"
    moved.mkdir()
    scp = subprocess.Popen(
        [
            tools["storescp"],
            "-aet",
            "STORESCP",
            "+xa",
            "-od",
            str(moved),
            "-fe",
            ".dcm",
            str(move_port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=DCMTK_ENV,
    )
    target = corpus.study_uids[1]
    try:
        wait_for_port(move_port, scp)
        result = run(
            [
                tools["movescu"],
                "-S",
                "-aet",
                "MOVESCU",
                "-aec",
                called,
                "-aem",
                "STORESCP",
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                f"StudyInstanceUID={target}",
                LOOPBACK,
                str(port),
            ]
        )
        assert result.returncode == 0, text(result)
    finally:
        stop(scp)
    got = sorted(str(dcmread(p).SOPInstanceUID) for p in moved.glob("*.dcm"))
    assert got == sorted(i.sop_uid for i in corpus.by(study_uid=target))


def assert_indexed_once(supervisor: Supervisor, corpus: Corpus) -> None:
    """Each corpus instance is in the index once, with its one file; nothing is left half
    received."""
    rows = supervisor.index()
    assert sorted(uid for uid, _ in rows) == sorted(i.sop_uid for i in corpus.instances)
    files = supervisor.data / "files"
    on_disk = sorted(p.relative_to(files).as_posix() for p in files.rglob("*.dcm"))
    assert on_disk == sorted(path for _, path in rows)
    assert list((supervisor.data / "incoming").iterdir()) == []


@pytest.mark.interop
@pytest.mark.parametrize("supervisor", ["sqlite", "postgres"], indirect=True)
def test_two_workers_store_find_get_move_then_drain(
    supervisor: Supervisor, corpus: Corpus, tmp_path: Path
) -> None:
    store_find_get_move(supervisor.port, corpus, tmp_path, supervisor.move_port)

    # Both workers served: the kernel hashes each of these 27 connections to one worker's
    # socket, all to the same one once in 2**26 runs.
    served = {
        line.split("[")[1].split("]")[0]
        for line in supervisor.output().splitlines()
        if "accepted association from" in line
    }
    assert served == {str(pid) for pid in supervisor.workers()}, served

    # SIGTERM: both workers drain and exit, then the supervisor.
    workers = supervisor.workers()
    assert supervisor.terminate() == 0, supervisor.output()
    assert all(not Path(f"/proc/{pid}").exists() for pid in workers)
    assert supervisor.output().count("SIGTERM, shutting down") == 2
    assert_indexed_once(supervisor, corpus)


@pytest.mark.interop
def test_workers_on_uvloop(corpus: Corpus, tmp_path: Path) -> None:
    """``--workers 2 --uvloop``: each worker runs on uvloop (its module is loaded) and serves."""
    pytest.importorskip("uvloop")
    require_dcmtk("echoscu", "storescu", "findscu")
    supervisor = Supervisor(tmp_path, options=("--uvloop",)).started()
    try:
        workers = supervisor.workers()
        for pid in workers:
            assert b"--uvloop" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            assert "uvloop" in Path(f"/proc/{pid}/maps").read_text()
        store_in_parallel(supervisor.port, corpus, 4)
        for name, model, keys, keyword, expected in find_cases(corpus):
            responses, output = dcmtk_find(supervisor.port, model, keys, tmp_path / name)
            got = [str(r[keyword].value) for r in responses]
            assert sorted(got) == sorted(expected), f"{name}: {output}"
        echo_argv = dicomio("echoscu", "--uvloop", LOOPBACK, str(supervisor.port))
        result = run([*echo_argv, "-aec", "DICOMIO", "-r", "3"])
        assert result.returncode == 0 and "3 echoes" in text(result), text(result)
        assert supervisor.terminate() == 0, supervisor.output()
        assert len(supervisor.index()) == len(corpus.instances)
    finally:
        if supervisor.proc.poll() is None:
            stop(supervisor.proc)


@pytest.mark.interop
def test_a_killed_worker_is_replaced_and_the_port_keeps_answering(
    supervisor: Supervisor,
) -> None:
    before = supervisor.workers()
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    # Connections the kernel hands the dead worker's socket wait in its queue for the
    # replacement, which inherits that socket: none of these fails.
    for _ in range(8):
        result = echo(supervisor.port)
        assert result.returncode == 0 and b"Fail" not in result.stdout, text(result)
    supervisor.wait_for(lambda: len(supervisor.workers() - before) == 1)
    assert victim not in supervisor.workers()
    assert "restarting" in supervisor.output()
    assert supervisor.terminate() == 0, supervisor.output()


@pytest.mark.anyio
@pytest.mark.interop
async def test_sigterm_lets_an_open_association_finish(
    supervisor: Supervisor, corpus: Corpus
) -> None:
    ct = next(
        i
        for i in corpus.instances
        if i.sop_class == CTImageStorage and i.transfer_syntax == ExplicitVRLittleEndian
    )
    mr = next(
        i
        for i in corpus.instances
        if i.sop_class == MRImageStorage and i.transfer_syntax == ExplicitVRLittleEndian
    )
    ae = AE("DRAINSCU")
    for sop_class in (CTImageStorage, MRImageStorage):
        ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
    async with ae.associate(LOOPBACK, supervisor.port, ae_title="DICOMIO") as assoc:
        status = await assoc.send_c_store(ct.path)
        assert status.Status == 0x0000
        supervisor.proc.send_signal(signal.SIGTERM)
        # Both workers have stopped accepting: a new association is refused...
        supervisor.wait_for(lambda: supervisor.output().count("SIGTERM, shutting down") == 2)
        # A service manager signals every process of the group: a worker's second SIGTERM
        # must not cut its drain short.
        for pid in supervisor.workers():
            os.kill(pid, signal.SIGTERM)
        assert echo(supervisor.port).returncode != 0
        # ...but the open one still works, and is let release.
        status = await assoc.send_c_store(mr.path)
        assert status.Status == 0x0000
    assert supervisor.proc.wait(timeout=30) == 0, supervisor.output()
    assert sorted(uid for uid, _ in supervisor.index()) == sorted([ct.sop_uid, mr.sop_uid])


@pytest.mark.interop
def test_workers_leave_when_their_supervisor_is_killed(supervisor: Supervisor) -> None:
    workers = supervisor.workers()
    supervisor.proc.kill()
    supervisor.proc.wait(timeout=10)
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in workers):
        assert time.monotonic() < deadline, supervisor.output()
        time.sleep(0.05)
    assert supervisor.output().count("the supervisor is gone, shutting down") == 2


@pytest.mark.interop
def test_storescp_with_two_workers(corpus: Corpus, tmp_path: Path) -> None:
    tools = require_dcmtk("storescu")
    port = free_port()
    out = tmp_path / "out"
    log = tmp_path / "storescp.log"
    argv = dicomio("storescp", str(port), "--bind", LOOPBACK, "-od", str(out), "--workers", "2")
    with open(log, "ab") as sink:
        proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=DCMTK_ENV)
    try:
        wait_for_port(port, proc, timeout=30)
        files = [i.path for i in corpus.instances if i.transfer_syntax != RLE]
        for k in range(4):
            result = run(
                [
                    tools["storescu"],
                    "-aec",
                    "STORESCP",
                    LOOPBACK,
                    str(port),
                    *map(str, files[k::4]),
                ]
            )
            assert result.returncode == 0, text(result)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            stop(proc)
    got = sorted(str(dcmread(p).SOPInstanceUID) for p in out.glob("*.dcm"))
    assert got == sorted(i.sop_uid for i in corpus.instances if i.transfer_syntax != RLE)
    received = [line for line in log.read_text().splitlines() if "received" in line]
    assert len(received) == 2, log.read_text()


def test_restarts_are_bounded() -> None:
    running = _workers.Supervisor("qrscp", [], [])
    assert all(running._may_restart() for _ in range(_workers.MAX_RESTARTS))
    assert not running._may_restart()


def test_without_reuse_port_the_workers_share_one_socket() -> None:
    shared = bind_sockets(LOOPBACK, 0, 3, reuse_port=False)
    try:
        assert len(shared) == 3 and len(set(map(id, shared))) == 1
    finally:
        shared[0].close()
    own = bind_sockets(LOOPBACK, 0, 3, reuse_port=True)
    try:
        assert len({id(s) for s in own}) == 3
        assert len({s.getsockname() for s in own}) == 1
    finally:
        for sock in own:
            sock.close()
