"""Processes: start servers on free loopback ports, drive clients, sample /proc, stop it all.

Every process started here is registered with a ``Workspace`` and stopped (SIGTERM, then
SIGKILL after a grace period) when the workspace closes, whatever happened. Every wait has a
deadline: a client that does not report within its repetition's time limit is killed and the
measurement is an error, never a hang.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: DCMTK as packaged by Debian leaves Nagle's algorithm on unless this is set; with it off,
#: small messages wait for the peer's delayed ACK (about 40 ms per C-ECHO).
DCMTK_ENV = {"TCP_NODELAY": "1"}


class HarnessError(Exception):
    """The benchmark could not be measured (a process failed, hung or misbehaved)."""


def dcmtk_tool(name: str) -> str:
    """Absolute path of a DCMTK executable (pynetdicom's console scripts shadow them)."""
    path = Path("/usr/bin") / name
    try:
        with open(path, "rb") as fp:
            magic = fp.read(4)
    except OSError as exc:
        raise HarnessError(f"DCMTK tool {path} not found") from exc
    if magic != b"\x7fELF":
        raise HarnessError(f"{path} is not a DCMTK executable")
    return str(path)


# -- /proc -------------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (KB) and Threads of a live process; empty if it is gone."""
    values: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as fp:
            for line in fp:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM", "Threads"):
                    values[key] = int(rest.split()[0])
    except (OSError, ValueError):
        pass
    return values


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and its reaped children."""
    try:
        with open(f"/proc/{pid}/stat") as fp:
            fields = fp.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    # Fields 14-17 of stat(5), counted after the command name: utime stime cutime cstime.
    return sum(int(v) for v in fields[11:15]) / CLOCK_TICKS


def reset_peak(pid: int) -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so that a peak is per repetition."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fp:
            fp.write("5")
    except OSError:
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    """Whether something listens on ``port`` (read from /proc: no probe connection)."""
    wanted = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fp:
                next(fp)
                for line in fp:
                    parts = line.split()
                    if parts[1].endswith(wanted) and parts[3] == "0A":
                        return True
        except OSError:
            continue
    return False


# -- servers -----------------------------------------------------------------------------


@dataclass
class Server:
    """A running server process (one implementation, one or more listening AEs)."""

    label: str
    proc: subprocess.Popen[bytes]
    ports: list[int]
    log: Path
    forks: bool = False  # DCMTK dcmqrscp: each association in a child process

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def port(self) -> int:
        return self.ports[0]

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise HarnessError(
                f"{self.label} server exited with {self.proc.returncode}: {_tail(self.log)}"
            )


def _tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


class Workspace:
    """Owns the scratch folder and every process started; ``close()`` stops them all."""

    def __init__(self, root: Path, cache: Path) -> None:
        self.root = root
        self.cache = cache
        self._procs: list[subprocess.Popen[Any]] = []
        self._workers: dict[str, _Client] = {}
        self._counter = 0
        root.mkdir(parents=True, exist_ok=True)
        cache.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        self._counter += 1
        return self.root / f"{self._counter:03d}-{name}"

    def folder(self, name: str) -> Path:
        folder = self.path(name)
        folder.mkdir(parents=True)
        return folder

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        proc = subprocess.Popen(list(argv), **kwargs)
        self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; by PID, this process only."""
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            except ProcessLookupError:
                pass
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        if proc in self._procs:
            self._procs.remove(proc)

    def close(self) -> None:
        for worker in list(self._workers.values()):
            self.drop_worker(worker)
        for proc in reversed(list(self._procs)):
            self.stop(proc, grace=3.0)

    # -- client workers --------------------------------------------------------------------

    def worker(self, slot: str) -> _Client:
        """The client process for ``slot`` (``python -m benchmarks.clients worker``), kept
        between measurements so that start-up is paid once per implementation."""
        worker = self._workers.get(slot)
        if worker is not None and worker.proc.poll() is None:
            return worker
        log = self.path(f"client-{slot}.log")
        with open(log, "w") as err:
            proc = self.popen(
                [sys.executable, "-m", "benchmarks.clients", "worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=REPO,
                env=_python_env(),
                text=True,
                bufsize=1,
            )
        worker = _Client(proc, log, slot)
        self._workers[slot] = worker
        return worker

    def drop_worker(self, worker: _Client) -> None:
        """Stop a worker (after a failure its protocol state is unknown)."""
        if self._workers.get(worker.slot) is worker:
            del self._workers[worker.slot]
        self.stop(worker.proc, grace=2.0)

    # -- starting servers ------------------------------------------------------------------

    def python_server(
        self, label: str, kind: str, args: Sequence[str], timeout: float = 60.0
    ) -> Server:
        """``python -m benchmarks.peers KIND ARGS``; waits for its ``{"ports": ...}`` line."""
        return self.python_servers([(label, kind, args)], timeout)[0]

    def python_servers(
        self, specs: Sequence[tuple[str, str, Sequence[str]]], timeout: float = 60.0
    ) -> list[Server]:
        """Start several Python servers at once (start-up overlaps), then wait for each."""
        started = []
        for label, kind, args in specs:
            log = self.path(f"{label}-server.log")
            with open(log, "wb") as err:
                proc = self.popen(
                    [sys.executable, "-m", "benchmarks.peers", kind, *args],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    cwd=REPO,
                    env=_python_env(),
                )
            started.append((label, proc, log))
        servers = []
        deadline = time.monotonic() + timeout
        try:
            for label, proc, log in started:
                assert proc.stdout is not None
                ready, _, _ = select.select(
                    [proc.stdout], [], [], max(0.0, deadline - time.monotonic())
                )
                line = proc.stdout.readline() if ready else b""
                try:
                    info = json.loads(line)
                except ValueError:
                    raise HarnessError(f"{label} server did not start: {_tail(log)}") from None
                servers.append(Server(label, proc, [int(p) for p in info["ports"]], log))
        except BaseException:
            for _, proc, _ in started:
                self.stop(proc)
            raise
        return servers

    def dcmtk_server(
        self,
        label: str,
        tool: str,
        args: Sequence[str],
        *,
        forks: bool = False,
        port: int | None = None,
        timeout: float = 30.0,
    ) -> Server:
        """A DCMTK server on a free port (it has no bind-address option; traffic stays on
        127.0.0.1); ready once the port is in LISTEN state."""
        return self.command_server(
            label,
            [dcmtk_tool(tool), *args],
            env={**os.environ, **DCMTK_ENV},
            forks=forks,
            port=port,
            timeout=timeout,
        )

    def command_server(
        self,
        label: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        forks: bool = False,
        port: int | None = None,
        timeout: float = 30.0,
    ) -> Server:
        """``argv`` with a free port appended (its last argument), ready once the port is in
        LISTEN state. ``forks``: the server's work is done by child processes, whose CPU
        time, memory and descriptors count as the server's."""
        for _attempt in range(3):
            chosen = port or free_port()
            log = self.path(f"{label}-server.log")
            with open(log, "wb") as out:
                proc = self.popen(
                    [*argv, str(chosen)],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    env=env,
                    cwd=self.root,
                )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and proc.poll() is None:
                if _listening(chosen):
                    return Server(label, proc, [chosen], log, forks=forks)
                time.sleep(0.02)
            self.stop(proc)
        raise HarnessError(f"{label} ({argv[0]}) did not start listening: {_tail(log)}")

    def dicomio_cli_server(self, label: str, command: str, args: Sequence[str]) -> Server:
        """``python -m dicomio COMMAND ARGS PORT`` from this checkout, on 127.0.0.1."""
        argv = [sys.executable, "-m", "dicomio", command, "--bind", "127.0.0.1", *args]
        forks = "--workers" in args
        return self.command_server(label, argv, env=_python_env(), forks=forks, timeout=60.0)


def _python_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.setdefault("PYTHONHASHSEED", "0")
    return env


# -- clients -----------------------------------------------------------------------------


@dataclass
class Rep:
    """One measured repetition: every client's report and the servers' samples."""

    clients: list[dict[str, Any]]
    wall: float
    server_cpu_s: float = 0.0
    server_idle_kb: int = 0
    server_peak_kb: int = 0
    server_threads: int = 0
    #: Most connections the servers held open at once (open descriptors above idle), when
    #: the repetition asked for it (S6).
    server_connections: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(int(c["count"]) for c in self.clients)

    @property
    def failures(self) -> int:
        return sum(int(c["failures"]) for c in self.clients)

    @property
    def client_cpu_s(self) -> float:
        return sum(float(c.get("child_cpu_s", c["cpu_s"])) for c in self.clients)

    @property
    def client_peak_kb(self) -> int:
        return max(int(c.get("child_peak_kb", c["peak_kb"])) for c in self.clients)

    @property
    def client_idle_kb(self) -> int:
        # A DCMTK tool starts anew each repetition: its idle is (close to) nothing.
        return min(0 if "child_peak_kb" in c else int(c["idle_kb"]) for c in self.clients)


class _Sampler(threading.Thread):
    """Samples the servers' thread count and RSS every 20 ms during a repetition, and with
    ``count_descriptors`` their open descriptors: as often while there are fewer than 1,000,
    every 0.5 s above (a listing of ``/proc/PID/fd`` costs ~4 microseconds a descriptor)."""

    def __init__(self, servers: Sequence[Server], *, count_descriptors: bool = False) -> None:
        super().__init__(daemon=True)
        self.servers = servers
        self.threads = 0
        self.rss_kb = 0
        self.count_descriptors = count_descriptors
        self.descriptors = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        tick = last = 0
        while not self._stop_event.is_set():
            threads = rss = descriptors = 0
            count = self.count_descriptors and (last < 1000 or tick % 25 == 0)
            for server in self.servers:
                for pid in server_pids(server):
                    status = proc_status(pid)
                    threads += status.get("Threads", 0)
                    rss += status.get("VmRSS", 0)
                    if count:
                        descriptors += open_descriptors(pid)
            self.threads = max(self.threads, threads)
            self.rss_kb = max(self.rss_kb, rss)
            if count:
                last = descriptors
                self.descriptors = max(self.descriptors, descriptors)
            tick += 1
            self._stop_event.wait(0.02)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(2)


def open_descriptors(pid: int) -> int:
    """How many file descriptors a process has open (0 if it is gone).

    A listing, without reading each link: at 10,000 connections that is ~40 ms instead of
    ~160 ms. Above a server's idle count, the extra descriptors are its connections.
    """
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def server_pids(server: Server) -> list[int]:
    """The server's process, and its children when its work is done in them."""
    return [server.pid, *(_children(server.pid) if server.forks else [])]


def server_cpu(server: Server) -> float:
    """CPU seconds of a server: its process, reaped children and (forking) live children."""
    return sum(proc_cpu(pid) for pid in server_pids(server))


def server_descriptors(server: Server) -> int:
    """Open descriptors of a server's processes (see ``open_descriptors``)."""
    return sum(open_descriptors(pid) for pid in server_pids(server))


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fp:
            return [int(p) for p in fp.read().split()]
    except OSError:
        return []


class _Client:
    def __init__(self, proc: subprocess.Popen[str], log: Path, slot: str) -> None:
        self.proc = proc
        self.log = log
        self.slot = slot
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                self.lines.put(json.loads(line))
            except ValueError:
                continue
        self.lines.put(None)

    def expect(self, phase: str, deadline: float) -> dict[str, Any]:
        try:
            message = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise HarnessError(
                f"client timed out waiting for {phase!r}: {_tail(self.log)}"
            ) from None
        if message is None or message.get("phase") != phase:
            self.proc.poll()
            raise HarnessError(
                f"client exited ({self.proc.returncode}) instead of {phase!r}: {_tail(self.log)}"
            )
        return message

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()


def run_clients(
    ws: Workspace,
    argvs: Sequence[Sequence[str]],
    servers: Sequence[Server],
    *,
    reps: int,
    warmup: int,
    rep_timeout: float,
    between: Callable[[], None] | None = None,
    descriptor_baseline: int | None = None,
) -> list[Rep]:
    """Run clients (``benchmarks.clients`` argv, without ``--reps``) in lock-step.

    Each argv goes to its own worker process, one per implementation and position (the
    second dicomio client of S6 is always the same process). Every client does
    ``warmup + reps`` repetitions; the first ``warmup`` are dropped. ``between`` runs after
    each repetition (e.g. to delete written files), untimed. With ``descriptor_baseline``
    (the servers' open descriptors when they had no connection, e.g. right after start),
    each ``Rep`` has the most connections the servers held open at once (S6). The baseline
    is not taken at each repetition's start: the previous one's connections may still be
    closing then.
    """
    total = warmup + reps
    clients: list[_Client] = []
    results: list[Rep] = []
    finished = False
    try:
        for index, argv in enumerate(argvs):
            client = ws.worker(f"{argv[0].split('-')[0]}-{index}")
            clients.append(client)
            client.send(json.dumps([*argv, "--reps", str(total)]))
        for _ in range(total):
            # Start-up (imports) and association set-up happen before "begin".
            deadline = time.monotonic() + rep_timeout + 60
            for client in clients:
                client.expect("begin", deadline)
            for server in servers:
                server.check_alive()
            cpu0 = sum(server_cpu(s) for s in servers)
            idle = 0
            for server in servers:
                reset_peak(server.pid)
                idle += sum(proc_status(pid).get("VmRSS", 0) for pid in server_pids(server))
            sampler = _Sampler(servers, count_descriptors=descriptor_baseline is not None)
            sampler.start()
            for client in clients:
                client.send("go")
            deadline = time.monotonic() + rep_timeout
            try:
                ends = [client.expect("end", deadline) for client in clients]
            finally:
                sampler.stop()
            peak = 0
            for server in servers:
                status = proc_status(server.pid)
                peak += max(status.get("VmHWM", 0), status.get("VmRSS", 0))
            if any(s.forks for s in servers):
                peak = max(peak, sampler.rss_kb)
            wall = max(e["end"] for e in ends) - min(e["start"] for e in ends)
            results.append(
                Rep(
                    clients=ends,
                    wall=wall,
                    server_cpu_s=sum(server_cpu(s) for s in servers) - cpu0,
                    server_idle_kb=idle,
                    server_peak_kb=peak,
                    server_threads=sampler.threads,
                    server_connections=(
                        None
                        if descriptor_baseline is None
                        else max(0, sampler.descriptors - descriptor_baseline)
                    ),
                )
            )
            if between is not None:
                between()
        deadline = time.monotonic() + 60
        for client in clients:
            client.expect("done", deadline)
        finished = True
    finally:
        if not finished:
            for client in clients:
                ws.drop_worker(client)
    return results[warmup:]


def empty_folder(folder: Path) -> None:
    """Delete what a server wrote (keeps the folder)."""
    for entry in folder.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
