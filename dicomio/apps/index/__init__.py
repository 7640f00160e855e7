"""The archive's index: studies, series and instances, behind one small interface (``Index``).

Two backends: SQLite (``sqlite.py``, the embedded default: ``index.sqlite`` in the data
folder) and PostgreSQL (``postgres.py``, for several processes or machines sharing one
archive). ``open_index`` picks one from a ``--db`` value. The SQL is written once
(``_sql.py``) and the store algorithm too (``_base.py``); matching is
``dicomio.apps.matching``'s, so both answer alike.
"""

from __future__ import annotations

from pathlib import Path

from dicomio.apps.index._base import Index
from dicomio.apps.index._sql import InstanceRecord

__all__ = ["Index", "InstanceRecord", "is_postgres_url", "open_index"]


def is_postgres_url(db: str) -> bool:
    return db.startswith(("postgresql://", "postgres://"))


def open_index(db: str | None, root: Path) -> Index:
    """The index for ``db``: None for ``root/index.sqlite``, a ``postgresql://`` URL, or an
    SQLite file (a path, or ``sqlite:///path``). Nothing is opened yet.

    Raises ``ValueError`` for a URL of another kind, and ``ImportError`` (naming the extra to
    install) for PostgreSQL without its driver.
    """
    files = root / "files"
    if db is None or db == "":
        from dicomio.apps.index.sqlite import SQLiteIndex

        return SQLiteIndex(root / "index.sqlite", files)
    if is_postgres_url(db):
        try:
            from dicomio.apps.index.postgres import PostgresIndex
        except ImportError as exc:
            raise ImportError(
                f"a PostgreSQL index needs psycopg 3 and psycopg_pool: pip install"
                f" 'dicomio[postgres]' ({exc})"
            ) from exc
        return PostgresIndex(db)
    if db.startswith("sqlite://"):
        from dicomio.apps.index.sqlite import SQLiteIndex

        return SQLiteIndex(Path(db.removeprefix("sqlite://")), files)
    if "://" in db:
        raise ValueError(f"unknown index URL {db!r}: use postgresql://... or an SQLite file")
    from dicomio.apps.index.sqlite import SQLiteIndex

    return SQLiteIndex(Path(db), files)
