"""A throwaway PostgreSQL cluster, for the archive's tests (``tests/postgres.py``) and the
scale-out benchmark (``benchmarks/scaleout.py``); no pytest here, so that both can use it.

``initdb`` and ``pg_ctl`` are found in /usr/lib/postgresql/<version>/bin (Debian's layout)
or on PATH. The cluster lives in a temporary folder and listens on 127.0.0.1 at a free port
and on a unix socket in that folder; leaving ``running_postgres`` stops it and removes the
folder. PostgreSQL refuses to run as root, so as root the cluster belongs to the
unprivileged user ``nobody`` and its commands run through ``runuser``. Durability is off
(``fsync``, ``synchronous_commit``, ``full_page_writes``): the data is thrown away anyway.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["UNPRIVILEGED", "PostgresServer", "missing", "postgres_bin", "running_postgres"]

LOOPBACK = "127.0.0.1"
#: The user PostgreSQL runs as when the caller is root.
UNPRIVILEGED = "nobody"
_numbers = itertools.count()


def postgres_bin() -> Path | None:
    """The folder holding initdb and pg_ctl, or None."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    for folder in reversed(versions):
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    return None


def missing() -> str | None:
    """Why a cluster cannot be run here (with the remedy), or None when it can."""
    for module, remedy in (
        ("psycopg", "pip install 'dicomio[postgres]'"),
        ("psycopg_pool", "pip install 'dicomio[postgres]'"),
    ):
        if importlib.util.find_spec(module) is None:
            return f"{module} not installed: {remedy}"
    if postgres_bin() is None:
        return "PostgreSQL not installed (no initdb/pg_ctl): apt-get install postgresql"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: PostgreSQL refuses to run as root"
    return None


def _as_owner(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", UNPRIVILEGED, "--", *command]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    def __init__(self, url: str, data: Path, log: Path) -> None:
        #: The superuser's URL on the ``postgres`` database.
        self.url = url
        #: The cluster's data folder, and its server log.
        self.data = data
        self.log = log

    def new_database(self) -> str:
        """A new, empty database on this server; its URL."""
        import psycopg

        name = f"dicomio_{os.getpid()}_{next(_numbers)}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url.rsplit("/", 1)[0] + "/" + name

    def postmaster_pid(self) -> int:
        """The process id of the cluster's postmaster, the parent of all its processes."""
        return int((self.data / "postmaster.pid").read_text().split()[0])


@contextlib.contextmanager
def running_postgres(max_connections: int = 300) -> Iterator[PostgresServer]:
    """A new cluster (see the module), stopped and removed on exit. Call ``missing`` first:
    this raises ``RuntimeError`` (with the server's log) when it does not start."""
    folder = postgres_bin()
    if folder is None:
        raise RuntimeError("PostgreSQL not installed (no initdb/pg_ctl)")
    root = Path(tempfile.mkdtemp(prefix="dicomio-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, UNPRIVILEGED)
    port = _free_port()
    log = root / "server.log"
    pg_ctl = str(folder / "pg_ctl")
    options = (
        f"-c listen_addresses={LOOPBACK} -p {port} -k {root} -c fsync=off"
        " -c synchronous_commit=off -c full_page_writes=off"
        f" -c max_connections={max_connections}"
    )
    try:
        subprocess.run(
            _as_owner(
                [
                    str(folder / "initdb"),
                    "-D",
                    str(data),
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ]
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )
        subprocess.run(
            _as_owner(
                [pg_ctl, "-D", str(data), "-o", options, "-l", str(log), "-w", "-t", "60", "start"]
            ),
            check=True,
            capture_output=True,
            timeout=90,
        )
        yield PostgresServer(f"postgresql://postgres@{LOOPBACK}:{port}/postgres", data, log)
    except subprocess.CalledProcessError as exc:
        text = log.read_text(errors="replace") if log.exists() else ""
        raise RuntimeError(f"PostgreSQL did not start: {exc.stderr!r} {text[-2000:]}") from exc
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                _as_owner([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "-t", "30", "stop"]),
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(root, ignore_errors=True)
