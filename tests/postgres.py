"""A throwaway PostgreSQL server for the archive's tests, and fresh databases on it.

``initdb`` and ``pg_ctl`` are found in /usr/lib/postgresql/<version>/bin (Debian's layout)
or on PATH. The cluster lives in a temporary folder and listens on 127.0.0.1 at a free port
and on a unix socket in that folder; it is stopped, and the folder removed, at the end of
the session. PostgreSQL refuses to run as root, so as root the cluster belongs to the
unprivileged user ``nobody`` and its commands run through ``runuser``.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import LOOPBACK, free_port

#: The user PostgreSQL runs as when the tests run as root.
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


def _as_owner(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", UNPRIVILEGED, "--", *command]


class PostgresServer:
    def __init__(self, url: str) -> None:
        #: The superuser's URL on the ``postgres`` database.
        self.url = url

    def new_database(self) -> str:
        """A new, empty database on this server; its URL."""
        import psycopg

        name = f"dicomio_{os.getpid()}_{next(_numbers)}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url.rsplit("/", 1)[0] + "/" + name


def start_postgres() -> Iterator[PostgresServer]:
    """Start a cluster (see the module); yields it, stops it afterwards. Skips the test when
    the binaries or the driver are missing."""
    pytest.importorskip("psycopg", reason="psycopg not installed: pip install 'dicomio[postgres]'")
    pytest.importorskip("psycopg_pool", reason="psycopg_pool not installed")
    folder = postgres_bin()
    if folder is None:
        pytest.skip("PostgreSQL not installed (no initdb/pg_ctl): apt-get install postgresql")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: PostgreSQL refuses to run as root")
    root = Path(tempfile.mkdtemp(prefix="dicomio-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, UNPRIVILEGED)
    port = free_port()
    log = root / "server.log"
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
    options = (
        f"-c listen_addresses={LOOPBACK} -p {port} -k {root} -c fsync=off"
        " -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
    )
    pg_ctl = str(folder / "pg_ctl")
    try:
        subprocess.run(
            _as_owner(
                [pg_ctl, "-D", str(data), "-o", options, "-l", str(log), "-w", "-t", "60", "start"]
            ),
            check=True,
            capture_output=True,
            timeout=90,
        )
        yield PostgresServer(f"postgresql://postgres@{LOOPBACK}:{port}/postgres")
    except subprocess.CalledProcessError as exc:
        text = log.read_text(errors="replace") if log.exists() else ""
        raise RuntimeError(f"PostgreSQL did not start: {exc.stderr!r} {text[-2000:]}") from exc
    finally:
        subprocess.run(
            _as_owner([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "-t", "30", "stop"]),
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)
