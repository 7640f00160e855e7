"""Fan-out to 20 real server processes on loopback (issue #15, acceptance 1).

Fourteen healthy scripted dicomio SCPs, one slow past the deadline, one rejecting
transient then accepting, one rejecting permanently, one aborting mid-query, one refusing
once for lack of resources (``tests/fanout_peer.py``, each ``python -m`` in its own
process), a port nobody listens on, and, when DCMTK is installed, dcmqrscp (an empty
archive: a healthy peer with no match) and storescp (C-ECHO). The fan-out must return
every answer of the healthy peers, the right outcome for the others, retry only the
transient ones (counted at the peers), and leave no association or socket behind.
"""

from __future__ import annotations

import getpass
import grp
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from pydicom.dataset import Dataset

from dicomio import (
    AE,
    AssociationAborted,
    AssociationPool,
    AssociationRejected,
    ConnectionRefused,
    Outcome,
    Peer,
    Retry,
    fanout,
)
from dicomio.sop import PatientRootQueryRetrieveInformationModelFind, Verification
from tests.conftest import DCMTK_ENV, LOOPBACK, dcmtk_tool, free_port, stop, wait_for_port

pytestmark = [pytest.mark.timeout(120)]

FIND = PatientRootQueryRetrieveInformationModelFind
ROOT = Path(__file__).resolve().parent.parent
HEALTHY = 14
SCRIPTED = ("slow", "transient", "permanent", "abort", "busy")


class Peers:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[subprocess.Popen[bytes]] = []
        self.peers: dict[str, Peer] = {}
        self.logs: dict[str, Path] = {}
        self.studies: dict[str, list[str]] = {}
        self.ports: set[int] = set()

    def port(self) -> int:
        """A free port no other peer of the group was given. ``free_port`` closes its probe,
        so two calls can return the same number: two peers would then race for it, and the
        one that lost would leave the other answering in its name."""
        while True:
            port = free_port()
            if port not in self.ports:
                self.ports.add(port)
                return port

    def start(self, name: str, argv: list[str], port: int, *, ae_title: str = "FANSCP") -> None:
        out = open(self.root / f"{name}.out", "wb")  # noqa: SIM115 - closed with the process
        self.procs.append(
            subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=DCMTK_ENV, cwd=ROOT)
        )
        out.close()
        self.peers[name] = Peer(ae_title=ae_title, host=LOOPBACK, port=port, name=name)

    def scripted(self, name: str, behaviour: str, studies: list[str]) -> None:
        port = self.port()
        log = self.root / f"{name}.log"
        log.touch()
        self.logs[name] = log
        self.studies[name] = studies
        argv = [sys.executable, "-m", "tests.fanout_peer", behaviour, str(port), str(log)]
        title = "NOT-FANSCP" if behaviour == "permanent" else "FANSCP"
        self.start(name, [*argv, *studies], port, ae_title=title)

    def count(self, name: str, what: str) -> int:
        return self.logs[name].read_text().split().count(what)


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    root = tmp_path_factory.mktemp("fanout-peers")
    group = Peers(root)
    try:
        for n in range(HEALTHY):
            group.scripted(f"healthy{n}", "healthy", [f"1.2.{n}.1", f"1.2.{n}.2"])
        for behaviour in SCRIPTED:
            group.scripted(behaviour, behaviour, ["9.1", "9.2"])
        group.peers["down"] = Peer(ae_title="DOWN", host=LOOPBACK, port=group.port(), name="down")
        dcmqrscp, storescp = dcmtk_tool("dcmqrscp"), dcmtk_tool("storescp")
        if dcmqrscp and storescp:
            port = group.port()
            storage = root / "storage"
            storage.mkdir()
            config = root / "dcmqrscp.cfg"
            config.write_text(
                f"NetworkTCPPort = {port}\nMaxPDUSize = 16384\nMaxAssociations = 16\n"
                f"UserName = {getpass.getuser()}\n"
                f"GroupName = {grp.getgrgid(os.getgid()).gr_name}\n"
                "HostTable BEGIN\nHostTable END\nVendorTable BEGIN\nVendorTable END\n"
                f"AETable BEGIN\nDCMQRSCP {storage} RW (10, 10mb) ANY\nAETable END\n"
            )
            group.start(
                "dcmqrscp",
                [dcmqrscp, "--fork", "-c", str(config), str(port)],
                port,
                ae_title="DCMQRSCP",
            )
            port = group.port()
            group.start(
                "storescp",
                [storescp, "-aet", "STORESCP", "-od", str(root), str(port)],
                port,
                ae_title="STORESCP",
            )
        for proc, peer in zip(
            group.procs, [p for k, p in group.peers.items() if k != "down"], strict=True
        ):
            wait_for_port(peer.port, proc, timeout=60)
        # Each listening port must be its own peer's: a peer that could not bind its port
        # (taken meanwhile by another process) has exited, and the port answers for another.
        for proc, (name, peer) in zip(
            group.procs, [(k, p) for k, p in group.peers.items() if k != "down"], strict=True
        ):
            if proc.poll() is not None:
                output = (root / f"{name}.out").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"peer {name} (port {peer.port}) exited: {output}")
        yield group
    finally:
        for proc in group.procs:
            stop(proc)


def scu_ae() -> AE:
    ae = AE("FANSCU")
    ae.add_requested_context(Verification)
    ae.add_requested_context(FIND)
    return ae


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.anyio
async def test_find_across_twenty_server_processes(peers: Peers) -> None:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = "P1"
    query.StudyInstanceUID = ""
    finders = {k: p for k, p in peers.peers.items() if k != "storescp"}
    before = {name: peers.count(name, "established") for name in peers.logs}
    finds_before = {name: peers.count(name, "find") for name in peers.logs}
    connections_before = {name: peers.count(name, "connection") for name in peers.logs}
    requested_before = {name: peers.count(name, "requested") for name in peers.logs}
    baseline = open_fds()
    retry = Retry(attempts=3, backoff=0.05, max_backoff=0.2)
    got: dict[str, list[str]] = {}
    with anyio.fail_after(30):
        async with AssociationPool(scu_ae()) as pool:
            async with fanout.find(
                pool, finders.values(), query, FIND, peer_timeout=3, retry=retry
            ) as answers:
                async for peer, _status, identifier in answers:
                    if identifier is not None:
                        got.setdefault(peer.name, []).append(str(identifier.StudyInstanceUID))
            reports = {peer.name: report for peer, report in answers.reports.items()}
    with anyio.move_on_after(5):  # connections being closed by the peers' side
        while open_fds() > baseline:
            await anyio.sleep(0.05)
    assert open_fds() <= baseline

    def delta(name: str, what: str = "established") -> int:
        counts = {
            "established": before,
            "find": finds_before,
            "connection": connections_before,
            "requested": requested_before,
        }
        return peers.count(name, what) - counts[what][name]

    for n in range(HEALTHY):
        name = f"healthy{n}"
        assert sorted(got[name]) == peers.studies[name]
        assert reports[name].outcome is Outcome.OK and reports[name].attempts == 1
    assert reports["slow"].outcome is Outcome.TIMED_OUT and reports["slow"].attempts == 1
    assert reports["abort"].outcome is Outcome.FAILED
    assert isinstance(reports["abort"].error, AssociationAborted)
    assert reports["abort"].attempts == 1 and delta("abort", "find") == 1
    assert reports["permanent"].outcome is Outcome.FAILED
    assert isinstance(reports["permanent"].error, AssociationRejected)
    assert reports["permanent"].error.result == 1
    assert reports["permanent"].attempts == 1 and delta("permanent", "requested") == 1
    assert reports["transient"].outcome is Outcome.OK and reports["transient"].retries == 1
    assert delta("transient", "connection") == 2 and sorted(got["transient"]) == ["9.1", "9.2"]
    assert reports["busy"].outcome is Outcome.OK and reports["busy"].retries == 1
    assert sorted(got["busy"]) == ["9.1", "9.2"]
    assert reports["down"].outcome is Outcome.FAILED
    assert isinstance(reports["down"].error, ConnectionRefused)
    assert reports["down"].attempts == retry.attempts
    if "dcmqrscp" in reports:
        assert reports["dcmqrscp"].outcome is Outcome.OK
        assert reports["dcmqrscp"].final_status == 0 and "dcmqrscp" not in got
    # Retried: only the transient ones.
    assert {name for name, r in reports.items() if r.retries} == {"transient", "busy", "down"}


@pytest.mark.anyio
async def test_echo_across_every_process(peers: Peers) -> None:
    healthy = {k: p for k, p in peers.peers.items() if k not in ("down", "permanent")}
    with anyio.fail_after(30):
        async with (
            AssociationPool(scu_ae()) as pool,
            fanout.echo(pool, healthy.values(), peer_timeout=5) as answers,
        ):
            codes = {peer.name: int(status.Status) async for peer, status, _ in answers}
    assert codes == dict.fromkeys(healthy, 0)
    assert all(r.outcome is Outcome.OK for r in answers.reports.values())
