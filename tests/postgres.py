"""A throwaway PostgreSQL server for the archive's tests, and fresh databases on it.

The cluster itself is ``tests/pg_cluster.py``'s (shared with the scale-out benchmark): it
runs for the session and is stopped, and its folder removed, at the end.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.pg_cluster import PostgresServer, missing, running_postgres

__all__ = ["PostgresServer", "start_postgres"]


def start_postgres() -> Iterator[PostgresServer]:
    """Start a cluster; yields it, stops it afterwards. Skips the test when the binaries or
    the driver are missing."""
    reason = missing()
    if reason is not None:
        pytest.skip(reason)
    with running_postgres() as server:
        yield server
