"""The scale-out benchmark's servers (``benchmarks/scaleout.py``), each in its own processes,
and the CPU those processes use, read from /proc: ``dicomio qrscp`` (a supervisor and its
workers), DCMTK dcmqrscp (with the children it forks per association) and PostgreSQL (a
cluster from ``tests/pg_cluster.py``)."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.runner import dcmtk_tool

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
#: The largest PDU each server receives: DCMTK's maximum, given to qrscp too.
MAX_PDU = 131_072
#: dcmqrscp's most studies in one storage area (more, and it deletes the oldest).
DCMQRSCP_STUDIES = 500
DCMQRSCP = "dcmqrscp"
TICK = os.sysconf("SC_CLK_TCK")


# -- processes and their CPU -----------------------------------------------------------------


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (field 3, the state, first)."""
    with open(f"/proc/{pid}/stat") as fp:
        return fp.read().rsplit(")", 1)[1].split()


def children(pid: int) -> list[int]:
    """The live children of ``pid``: from /proc/PID/task/*/children where the kernel has it
    (CONFIG_PROC_CHILDREN), else by the parent field of every process."""
    tasks = list(Path(f"/proc/{pid}/task").glob("*/children"))
    if tasks:
        return sorted(int(p) for task in tasks for p in task.read_text().split())
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(_stat(int(entry.name))[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError):
                continue  # exited meanwhile
    return sorted(found)


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid``, its reaped children (cutime, cstime) and its live descendants."""
    try:
        fields = _stat(pid)
    except OSError:
        return 0.0
    own = sum(int(f) for f in fields[11:15]) / TICK
    return own + sum(tree_cpu(child) for child in children(pid))


def _state(pid: int) -> str:
    try:
        return _stat(pid)[0]
    except OSError:
        return "gone"


def own_cpu(pid: int) -> float:
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / TICK


# -- servers ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dcmqrscp_config(root: Path, port: int, areas: int) -> tuple[Path, list[str]]:
    """dcmqrscp's configuration with ``areas`` storage areas, one per AE title; (the file,
    the AE titles)."""
    import grp

    user = pwd.getpwuid(os.geteuid())
    titles = ["DCMQRSCP"] if areas == 1 else [f"DCMQR{n}" for n in range(1, areas + 1)]
    table = []
    for title in titles:
        storage = root / "storage" / title
        storage.mkdir(parents=True, exist_ok=True)
        table.append(f"{title} {storage} RW ({DCMQRSCP_STUDIES}, 1024mb) ANY\n")
    config = root / "dcmqrscp.cfg"
    config.write_text(
        f"NetworkTCPPort = {port}\nMaxPDUSize = {MAX_PDU}\nMaxAssociations = 16\n"
        f"UserName = {user.pw_name}\nGroupName = {grp.getgrgid(user.pw_gid).gr_name}\n"
        "HostTable BEGIN\nHostTable END\nVendorTable BEGIN\nVendorTable END\n"
        f"AETable BEGIN\n{''.join(table)}AETable END\n"
    )
    return config, titles


class Server:
    """One configuration of ``CONFIGS``, started in ``root``; ``db`` is PostgreSQL's URL.
    For dcmqrscp ``workers`` is its number of storage areas (AE titles)."""

    def __init__(self, index: str, workers: int, root: Path, db: str | None = None) -> None:
        self.index = index
        self.workers = workers
        self.root = root
        self.db = db
        self.port = free_port()
        self.aets = ["DICOMIO"]
        self.dcmtk = index.startswith(DCMQRSCP)
        if self.dcmtk:
            config, self.aets = dcmqrscp_config(root, self.port, workers)
            command = [dcmtk_tool("dcmqrscp"), "-c", str(config), str(self.port)]
        else:
            command = [sys.executable, "-m", "dicomio", "qrscp", str(self.port)]
            command += ["--data", str(root / "data"), "--bind", "127.0.0.1"]
            command += ["-pdu", str(MAX_PDU), "--workers", str(workers)]
            if db is not None:
                command += ["--db", db]
        self.aet = self.aets[0]
        self.log_path = root / "server.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, env=DCMTK_ENV
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float = 30.0) -> None:
        """Until the port answers and, for qrscp, each process says it is listening (a
        supervisor binds the port before its workers have started)."""
        deadline = time.monotonic() + timeout
        wanted = 0 if self.dcmtk else self.workers
        marker = b"qrscp: listening" if self.workers == 1 else b"]: listening"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                text = self.log_path.read_bytes().decode(errors="replace")
                raise RuntimeError(f"{self.index} exited with {self.proc.returncode}: {text}")
            with socket.socket() as sock:
                up = sock.connect_ex(("127.0.0.1", self.port)) == 0
            if up and self.log_path.read_bytes().count(marker) >= wanted:
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.index} not ready on {self.port} within {timeout} s")

    def cpu(self, settled: bool = False) -> dict[str, float]:
        """CPU seconds so far of each process of the server, by name. ``settled``: every
        association has ended (dcmqrscp: wait until it has reaped their processes)."""
        if self.dcmtk:
            # A child that has exited counts once dcmqrscp has reaped it (cutime), which it
            # does within a second (it polls while it has children): wait for that.
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and any(
                settled or _state(pid) == "Z" for pid in children(self.proc.pid)
            ):
                time.sleep(0.02)
            return {"dcmqrscp": tree_cpu(self.proc.pid)}
        if self.workers == 1:
            return {"qrscp": tree_cpu(self.proc.pid)}
        cpu = {"supervisor": own_cpu(self.proc.pid)}
        for n, pid in enumerate(children(self.proc.pid), 1):
            cpu[f"worker {n}"] = tree_cpu(pid)
        return cpu

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()

    def count(self) -> int:
        """Instances held: the index's count, or for dcmqrscp its storage area's files."""
        if self.dcmtk:
            areas = (self.root / "storage").iterdir()
            return sum(1 for area in areas for p in area.glob("*.dcm"))
        from dicomio.apps.index import open_index

        index = open_index(self.db, self.root / "data")
        try:
            return index.count()
        finally:
            index.close()


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before.get(name, 0.0) for name in after}


class Postgres:
    """The benchmark's PostgreSQL cluster (``tests/pg_cluster.py``), or None-like when absent."""

    def __init__(self, server: Any) -> None:
        self.server = server

    def new_database(self) -> str:
        try:
            return str(self.server.new_database())
        except Exception as exc:
            log = self.server.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"PostgreSQL: {exc}; its log ends:\n{log}") from exc

    def cpu(self) -> float:
        return tree_cpu(self.server.postmaster_pid())


@contextmanager
def postgres() -> Iterator[Postgres | None]:
    from tests.pg_cluster import missing, running_postgres

    reason = missing()
    if reason is not None:
        print(f"PostgreSQL configurations skipped: {reason}", file=sys.stderr)
        yield None
        return
    with running_postgres() as server:
        yield Postgres(server)


@contextmanager
def started(server: Server) -> Iterator[Server]:
    """``server``, stopped on exit."""
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def serving(
    index: str, workers: int, work: Path, pg: Postgres | None, db: str | None = None
) -> Iterator[Server]:
    """A fresh server of one configuration (a new database for PostgreSQL unless ``db``),
    stopped and its folder removed on exit."""
    root = Path(tempfile.mkdtemp(dir=work))
    if index == "postgres" and db is None:
        assert pg is not None
        db = pg.new_database()
    try:
        with started(Server(index, workers, root, db if index == "postgres" else None)) as server:
            yield server
    finally:
        shutil.rmtree(root, ignore_errors=True)
