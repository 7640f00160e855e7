"""The deployment recipe (docs/deployment.md), run for real: HAProxy in TCP mode, with the
configuration of docs/examples/haproxy.cfg, in front of two ``dicomio qrscp --workers 2``
nodes sharing one data folder and one PostgreSQL index (issue #17).

DCMTK stores the corpus through HAProxy over several associations; findscu, getscu and
movescu through HAProxy answer exactly, whichever node each association lands on; HAProxy's
DICOM health check passes on both. Then a rolling stop: SIGTERM to the node serving an open
association lets that association finish while new ones go to the other node; SIGTERM to
the other drains it too, and every stored instance is indexed once.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from dicomio import AE
from tests.conftest import LOOPBACK, free_port, require_dcmtk, stop, wait_for_port
from tests.corpus import Corpus
from tests.test_apps_cli import run, text
from tests.test_workers import Supervisor, assert_indexed_once, store_find_get_move

pytestmark = [pytest.mark.interop, pytest.mark.timeout(180)]

DOCS_CONFIG = Path(__file__).resolve().parent.parent / "docs" / "examples" / "haproxy.cfg"
#: The AE title the recipe's nodes answer to (its health check calls it).
ARCHIVE = "ARCHIVE"


def recipe_config(front: int, nodes: list[int], stats: Path) -> str:
    """The recipe's HAProxy configuration (the part docs/deployment.md includes between the
    ``dicom`` markers) with loopback addresses, a quick check interval, and a global section
    for a test: logs to standard output, a stats socket, no user switch."""
    text = DOCS_CONFIG.read_text()
    part = text.split("# --8<-- [start:dicom]\n", 1)[1].split("# --8<-- [end:dicom]", 1)[0]
    replacements = {
        "bind :11112": f"bind {LOOPBACK}:{front}",
        "server node1 10.0.0.11:11112": f"server node1 {LOOPBACK}:{nodes[0]}",
        "server node2 10.0.0.12:11112": f"server node2 {LOOPBACK}:{nodes[1]}",
        "inter 5s": "inter 300ms",
    }
    for old, new in replacements.items():
        # Each once: a recipe changed in the docs fails here rather than being half-tested.
        assert part.count(old) == 1, f"{old!r} not once in {DOCS_CONFIG}"
        part = part.replace(old, new)
    head = f"global\n    log stdout format raw local0\n    stats socket {stats} mode 600 level admin\n\n"
    return head + part


def haproxy_command(stats: Path, command: str) -> str:
    """One command on HAProxy's stats socket (its runtime API); the answer."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(stats))
        sock.sendall(command.encode() + b"\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data.decode()


def server_states(stats: Path) -> dict[str, tuple[str, str]]:
    """HAProxy's view of the backend's servers: name -> (status, last check status)."""
    lines = haproxy_command(stats, "show stat").splitlines()
    header = lines[0].lstrip("# ").split(",")
    states = {}
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        if row.get("pxname") == "archive" and row["svname"] not in ("BACKEND", "FRONTEND"):
            states[row["svname"]] = (row["status"], row["check_status"])
    return states


class Cluster:
    """Two nodes and HAProxy in front (see the module)."""

    def __init__(self, root: Path, db: str) -> None:
        data = root / "data"
        self.move_port = free_port()
        self.nodes = [
            Supervisor(
                root, db=db, data=data, aet=ARCHIVE, move_port=self.move_port, name=f"node{n}"
            )
            for n in (1, 2)
        ]
        self.front = free_port()
        self.stats = root / "haproxy.sock"
        self.config = root / "haproxy.cfg"
        self.config.write_text(recipe_config(self.front, [n.port for n in self.nodes], self.stats))
        self.log = root / "haproxy.log"
        self.haproxy: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        for node in self.nodes:
            node.started()
        checked = run(["haproxy", "-c", "-f", str(self.config)], timeout=30)
        assert checked.returncode == 0, text(checked)
        with open(self.log, "ab") as out:
            # -db: in the foreground, not as a daemon; nothing of the system's haproxy is used.
            self.haproxy = subprocess.Popen(
                ["haproxy", "-db", "-f", str(self.config)], stdout=out, stderr=subprocess.STDOUT
            )
        wait_for_port(self.front, self.haproxy, timeout=30)

    def wait_checked(self, expected: dict[str, str], timeout: float = 20.0) -> None:
        """Until HAProxy's servers have these statuses (UP, DOWN) after a check."""
        deadline = time.monotonic() + timeout
        while True:
            states = server_states(self.stats)
            if {name: status for name, (status, _) in states.items()} == expected:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{states} != {expected}: {self.log.read_text()}")
            time.sleep(0.1)

    def serving(self, calling: str, timeout: float = 10.0) -> Supervisor:
        """The node that accepted the association from ``calling`` (one, by its log)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [n for n in self.nodes if f"association from {calling}" in n.output()]
            if found:
                (node,) = found
                return node
            assert time.monotonic() < deadline, f"no node accepted {calling}"
            time.sleep(0.05)

    def close(self) -> None:
        if self.haproxy is not None:
            stop(self.haproxy)
        for node in self.nodes:
            node.close()


@pytest.fixture
def cluster(tmp_path: Path, postgres_server: Any) -> Iterator[Cluster]:
    if shutil.which("haproxy") is None:
        pytest.skip("HAProxy not installed: apt-get install haproxy")
    require_dcmtk("storescu", "findscu", "getscu", "movescu", "storescp")
    running = Cluster(tmp_path, postgres_server.new_database())
    try:
        running.start()
        yield running
    finally:
        running.close()


def echoes_answered_by(cluster: Cluster, node: Supervisor, count: int) -> None:
    """``count`` DCMTK echoscu associations through HAProxy succeed, each on ``node``."""
    tools = require_dcmtk("echoscu")
    before = node.output().count("accepted association from ECHOSCU")
    for _ in range(count):
        argv = [tools["echoscu"], "-aec", ARCHIVE, LOOPBACK, str(cluster.front)]
        result = run(argv, timeout=60)
        assert result.returncode == 0 and b"Fail" not in result.stdout, text(result)
    assert node.output().count("accepted association from ECHOSCU") - before == count


def test_the_recipe_behind_haproxy(cluster: Cluster, corpus: Corpus, tmp_path: Path) -> None:
    # The health check (an association from HEALTHCHECK, then its release) passes on both.
    cluster.wait_checked({"node1": "UP", "node2": "UP"})
    assert {check for _, check in server_states(cluster.stats).values()} == {"L7OK"}

    store_find_get_move(cluster.front, corpus, tmp_path, cluster.move_port, ARCHIVE)
    for node in cluster.nodes:
        assert "accepted association from STORESCU" in node.output(), "both nodes stored"
        assert "accepted association from FINDSCU" in node.output(), "both nodes answered"
        assert "accepted association from HEALTHCHECK" in node.output()

    # A rolling stop. An association open through HAProxy when its node gets SIGTERM...
    ct = next(
        i
        for i in corpus.instances
        if i.sop_class == CTImageStorage and i.transfer_syntax == ExplicitVRLittleEndian
    )
    ae = AE("DRAINSCU")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)

    async def rolling_stop() -> Supervisor:
        with anyio.fail_after(60):
            async with ae.associate(LOOPBACK, cluster.front, ae_title=ARCHIVE) as assoc:
                serving = await anyio.to_thread.run_sync(cluster.serving, "DRAINSCU")
                other = next(n for n in cluster.nodes if n is not serving)
                # Hold the node UP in HAProxy's eyes, as in the seconds before a check
                # notices a stopped node.
                haproxy_command(cluster.stats, f"disable health archive/{serving.name}")
                serving.proc.send_signal(signal.SIGTERM)
                serving.wait_for(lambda: serving.output().count("SIGTERM, shutting down") == 2)
                # ...new associations meanwhile go to the other node (leastconn: this one
                # still has an association open)...
                await anyio.to_thread.run_sync(echoes_answered_by, cluster, other, 2)
                # ...and the open association is let finish on its node.
                assert int((await assoc.send_c_store(ct.path)).Status) == 0x0000
            assert await anyio.to_thread.run_sync(lambda: serving.proc.wait(timeout=30)) == 0
        return other

    other = anyio.run(rolling_stop)
    stopped = next(n for n in cluster.nodes if n is not other)
    # The stopped node still looks UP: the connections HAProxy sends it are refused, and
    # redispatched to the other node (retries, option redispatch). None fails.
    redispatched = cluster.log.read_text().count("/+")
    echoes_answered_by(cluster, other, 4)
    assert cluster.log.read_text().count("/+") > redispatched, cluster.log.read_text()
    # With its check back, HAProxy marks the stopped node down.
    haproxy_command(cluster.stats, f"enable health archive/{stopped.name}")
    cluster.wait_checked({stopped.name: "DOWN", other.name: "UP"})
    assert other.terminate() == 0, other.output()
    for node in cluster.nodes:
        assert node.output().count("SIGTERM, shutting down") == 2, node.output()
    # The instance stored again over the drained association replaced itself: still once.
    assert_indexed_once(cluster.nodes[0], corpus)
