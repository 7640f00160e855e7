"""Shared fixtures: anyio backends, free loopback ports, DCMTK binaries, a test corpus."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.corpus import Corpus, make_corpus

LOOPBACK = "127.0.0.1"


class _ParkedReactorCheckpoint(threading.Event):
    """pynetdicom's pause of its association reactor, made to hold (pydicom/pynetdicom#875).

    Before each request pynetdicom clears this event and waits for the reactor thread to say
    it is paused; but the reactor says so just before waiting on the event and unsays it just
    after, so it can be past the wait (the event was still set) while the caller reads "paused"
    and sends. If the answer comes back before the reactor's next look at the message queue
    (as a fast server's does), the reactor takes it as an unexpected request and the caller
    waits for it until its DIMSE timeout. Here ``clear`` lets the reactor finish a pass already
    under way (each takes about a millisecond) before the caller goes on, so that it is parked
    when the request leaves. A peer's bug; our servers' answers are not held back for it.
    """

    def clear(self) -> None:
        super().clear()
        time.sleep(0.003)


def pynetdicom_rejection(assoc: Any) -> Any | None:
    """The A-ASSOCIATE-RJ primitive a pynetdicom requestor ``assoc`` received, or None.

    pynetdicom can lose one it received: its requestor sends the A-ASSOCIATE-RQ, then checks
    that its socket is still connected before it reads the answer; a fast acceptor's RJ has
    then been read already by its DUL thread, which closes the socket on it (AE-4), so the
    check fails and the association is "aborted" with the RJ left unread in the DUL's
    queue (about 1 in 40 against a dicomio acceptor on a loaded machine, before and after
    the server got faster). Looked for there too.
    """
    if assoc.is_rejected:
        return assoc.acceptor.primitive
    if assoc.is_established:
        return None
    for primitive in list(assoc.dul.to_user_queue.queue):
        if type(primitive).__name__ == "A_ASSOCIATE" and primitive.result not in (None, 0):
            return primitive
    return None


@pytest.fixture(autouse=True, scope="session")
def _pynetdicom_reactor_parks() -> Iterator[None]:
    """Every pynetdicom association in the tests uses ``_ParkedReactorCheckpoint``."""
    try:
        from pynetdicom import association
    except ImportError:
        yield
        return
    original = association.Association.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self._reactor_checkpoint = _ParkedReactorCheckpoint()
        self._reactor_checkpoint.set()

    association.Association.__init__ = init  # type: ignore[method-assign]
    try:
        yield
    finally:
        association.Association.__init__ = original  # type: ignore[method-assign]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


#: anyio's asyncio backend on uvloop's event loop (``dicomio[uvloop]``): a third backend for
#: the test modules marked ``uvloop``, the network paths whose asyncio code looks at the loop.
UVLOOP_BACKEND = ("asyncio", {"use_uvloop": True})


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked ``uvloop`` run on asyncio, trio and asyncio with uvloop.

    Only a chosen set of modules: the whole suite a third time would cost CI minutes for the
    same pure-Python code. A test that already picks its backends keeps them. Without uvloop
    installed the third run skips, with the reason.
    """
    if "anyio_backend" not in metafunc.fixturenames:
        return
    if metafunc.definition.get_closest_marker("uvloop") is None:
        return
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0] if mark.args else mark.kwargs.get("argnames", ())
        if isinstance(names, str):
            names = [name.strip() for name in names.split(",")]
        if "anyio_backend" in names:
            return
    try:
        import uvloop  # noqa: F401
    except ImportError:
        third = pytest.param(
            UVLOOP_BACKEND, id="uvloop", marks=pytest.mark.skip(reason="uvloop not installed")
        )
    else:
        third = pytest.param(UVLOOP_BACKEND, id="uvloop")
    metafunc.definition.add_marker(
        pytest.mark.parametrize("anyio_backend", ["asyncio", "trio", third])
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def dcmtk_tool(name: str) -> str | None:
    """The DCMTK binary called ``name``, or None.

    pynetdicom installs Python console scripts called echoscu, storescu, findscu ... that
    shadow DCMTK's on PATH, so we look for a real executable (ELF) in the system folders.
    """
    for folder in ("/usr/bin", "/usr/local/bin", "/opt/dcmtk/bin"):
        path = Path(folder) / name
        if path.is_file() and os.access(path, os.X_OK):
            with open(path, "rb") as fp:
                if fp.read(4) == b"\x7fELF":
                    return str(path)
    found = shutil.which(name)
    if found:
        with open(found, "rb") as fp:
            if fp.read(4) == b"\x7fELF":
                return found
    return None


def require_dcmtk(*names: str) -> dict[str, str]:
    tools = {name: dcmtk_tool(name) for name in names}
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        pytest.skip(f"DCMTK not installed (missing {', '.join(missing)}): apt-get install dcmtk")
    return {name: path for name, path in tools.items() if path is not None}


def wait_for_port(
    port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 10.0
) -> None:
    """Wait until something listens on ``port`` (bounded; fails the test otherwise)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise RuntimeError(f"peer exited with {proc.returncode}: {out[-2000:]}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port} after {timeout} s")


#: DCMTK leaves Nagle's algorithm on unless told otherwise (its environment variable
#: TCP_NODELAY): echoscu to storescp then runs at about 11 echoes a second instead of
#: thousands. Every DCMTK peer the tests start gets this environment.
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture
def dcmtk_storescp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """DCMTK storescp, accepting every transfer syntax, on a free loopback port; yields
    (port, output folder)."""
    tools = require_dcmtk("storescp")
    out = tmp_path / "storescp-out"
    out.mkdir()
    port = free_port()
    # The tool's output goes to a file: a pipe nobody reads can fill and block the peer.
    with open(tmp_path / "storescp.log", "wb") as log:
        proc = subprocess.Popen(
            [
                tools["storescp"],
                "-aet",
                "STORESCP",
                "+xa",
                "-pm",
                "-dhl",
                "-ta",
                "30",
                "-td",
                "60",
                "-od",
                str(out),
                "-fe",
                ".dcm",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=DCMTK_ENV,
        )
        try:
            wait_for_port(port, proc)
            yield port, out
        finally:
            stop(proc)


# -- added for the SCP interop and robustness tests ------------------------------------------


async def run_tool(
    argv: list[str], *, timeout: float = 60.0
) -> subprocess.CompletedProcess[bytes]:
    """Run a peer tool as a subprocess without blocking the event loop the SCP runs on.

    Bounded by ``timeout``; returns the completed process (exit code and output) whatever
    its exit status, so that tests can say what they expected.
    """
    import anyio

    with anyio.fail_after(timeout):
        return await anyio.run_process(argv, check=False)


def tool_output(result: subprocess.CompletedProcess[bytes]) -> str:
    """Both output streams of a finished tool, for assertion messages."""
    return (result.stdout + result.stderr).decode(errors="replace")


# -- the archive's index backends (dicomio.apps.index) ---------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """A PostgreSQL server for this session (tests/postgres.py); skips without one."""
    from tests.postgres import start_postgres

    yield from start_postgres()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def index_backend(request: pytest.FixtureRequest) -> str:
    """Which index the archive tests run on: each runs on both."""
    return str(request.param)


def _database(backend: str, request: pytest.FixtureRequest) -> str | None:
    if backend == "sqlite":
        return None  # the archive's default: index.sqlite in its data folder
    server = request.getfixturevalue("postgres_server")
    return str(server.new_database())


@pytest.fixture(scope="module")
def index_db(index_backend: str, request: pytest.FixtureRequest) -> str | None:
    """The ``db`` of an archive shared by a module's tests: None (SQLite) or a new
    PostgreSQL database's URL."""
    return _database(index_backend, request)


@pytest.fixture
def empty_index_db(index_backend: str, request: pytest.FixtureRequest) -> str | None:
    """Like ``index_db``, but a new database for each test."""
    return _database(index_backend, request)
