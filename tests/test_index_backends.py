"""The index's backend selection and PostgreSQL's versioned schema (dicomio.apps.index)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from dicomio.apps.cli import main
from dicomio.apps.index import open_index
from dicomio.apps.index._base import SchemaTooNew
from dicomio.apps.index.sqlite import SQLiteIndex


def test_db_values_select_the_backend(tmp_path: Path) -> None:
    default = open_index(None, tmp_path)
    assert isinstance(default, SQLiteIndex) and default.database == tmp_path / "index.sqlite"
    named = open_index(str(tmp_path / "x.sqlite"), tmp_path)
    assert isinstance(named, SQLiteIndex) and named.database == tmp_path / "x.sqlite"
    url = open_index(f"sqlite://{tmp_path}/y.sqlite", tmp_path)
    assert isinstance(url, SQLiteIndex) and url.database == tmp_path / "y.sqlite"
    with pytest.raises(ValueError, match="unknown index URL"):
        open_index("mysql://host/db", tmp_path)


def test_qrscp_refuses_an_unknown_db_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["qrscp", "0", "--data", str(tmp_path), "--db", "mysql://h/db"]) == 2
    assert "--db: unknown index URL" in capsys.readouterr().err


def test_postgres_url_password_is_not_shown() -> None:
    pytest.importorskip("psycopg")
    from dicomio.apps.index.postgres import PostgresIndex

    index = PostgresIndex("postgresql://user:secret@127.0.0.1:1/db")
    assert "secret" not in index.location and "user" in index.location


def test_postgres_schema_is_created_once_and_a_newer_one_refused(postgres_server: Any) -> None:
    import psycopg

    from dicomio.apps.index.postgres import VERSION, PostgresIndex

    url = postgres_server.new_database()
    # Several archives starting at once: one creates the tables, the others wait and see them.
    indexes = [PostgresIndex(url) for _ in range(4)]
    errors: list[BaseException] = []

    def start(index: PostgresIndex) -> None:
        try:
            index.open()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(i,)) for i in indexes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert all(i.count() == 0 for i in indexes)
    for index in indexes:
        index.close()
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT version FROM dicomio_schema").fetchall() == [(VERSION,)]
        conn.execute("UPDATE dicomio_schema SET version = %s", (VERSION + 1,))
    newer = PostgresIndex(url)
    with pytest.raises(SchemaTooNew, match="upgrade dicomio"):
        newer.open()
    newer.close()


def test_sqlite_newer_schema_refused_at_start(tmp_path: Path) -> None:
    """qrscp on an index a newer dicomio wrote: a message and exit 3, not a traceback."""
    data = tmp_path / "data"
    data.mkdir()
    index = SQLiteIndex(data / "index.sqlite", data)
    index.open()
    index.close()
    with sqlite3.connect(data / "index.sqlite") as conn:
        conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(SchemaTooNew, match="upgrade dicomio"):
        SQLiteIndex(data / "index.sqlite", data).open()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dicomio",
            "qrscp",
            "0",
            "--bind",
            "127.0.0.1",
            "--data",
            str(data),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3, result.stderr
    assert "upgrade dicomio" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
