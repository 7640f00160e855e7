"""The server's accept loop under bursts of connections (issue #6, scenario S6).

A server that takes one connection per turn of its event loop falls behind as soon as a turn
is long (thousands of associations at work): the kernel's accept queue fills, new handshakes
are dropped, and connections the kernel gave up on are reset although the client already
sent its A-ASSOCIATE-RQ. These tests check that the loop drains a burst in a few turns, skips
connections that died in the queue, and rides out running short of descriptors.

Connections are made with plain blocking sockets from the event loop's own thread: the kernel
completes each handshake into the accept queue while the server cannot run, which is exactly
the backlog a busy server finds when it next looks.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import struct
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import dicomio.server as server_module
from dicomio import AE
from dicomio.sop import Verification
from tests.conftest import LOOPBACK

pytestmark = [pytest.mark.anyio, pytest.mark.uvloop]

BURST = 300


def _scp() -> AE:
    scp = AE("ACCEPTOR")
    scp.add_supported_context(Verification)
    scp.maximum_associations = BURST + 10
    return scp


def _connect_all(port: int, count: int) -> list[socket.socket]:
    socks = []
    try:
        for _ in range(count):
            sock = socket.create_connection((LOOPBACK, port), timeout=5)
            socks.append(sock)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


async def _echo_once(port: int) -> int:
    client = AE("CLIENT")
    client.add_requested_context(Verification)
    client.acse_timeout = client.dimse_timeout = client.connection_timeout = 10
    async with client.associate(LOOPBACK, port, ae_title="ACCEPTOR") as assoc:
        status = await assoc.send_c_echo()
    return int(status.Status)


async def _wait_until_idle(server: Any) -> None:
    with anyio.fail_after(10):
        while server.associations:
            await anyio.sleep(0.01)


async def test_a_burst_is_accepted_in_a_few_turns_of_the_loop() -> None:
    """300 queued connections become associations within a handful of scheduler turns.

    Taking one connection per turn (plus the turns to set up its stream) needs hundreds.
    """
    async with _scp().start_server((LOOPBACK, 0), backlog=1024) as server:
        socks = _connect_all(server.port, BURST)  # blocks the loop: all wait in the queue
        try:
            turns = 0
            with anyio.fail_after(20):
                while len(server.associations) < BURST:
                    await anyio.lowlevel.checkpoint()
                    turns += 1
            assert turns <= 20, f"{turns} turns of the event loop to accept {BURST} connections"
        finally:
            for sock in socks:
                sock.close()
        await _wait_until_idle(server)
        assert await _echo_once(server.port) == 0


async def test_accepting_resumes_after_the_queue_empties() -> None:
    """Connections arriving after the queue was drained are taken at the next readiness."""
    async with _scp().start_server((LOOPBACK, 0), backlog=64) as server:
        socks: list[socket.socket] = []
        try:
            for _ in range(3):
                socks += _connect_all(server.port, 50)
                with anyio.fail_after(10):
                    while len(server.associations) < len(socks):
                        await anyio.sleep(0.01)
        finally:
            for sock in socks:
                sock.close()
        await _wait_until_idle(server)
        assert await _echo_once(server.port) == 0


class _QueuedConnections:
    """Stands in for a listening socket with connections waiting in its accept queue.

    The connections are real, accepted beforehand from a helper listener. Each one taken is
    logged as "accept" in ``log``, which the test shares with a checkpoint recorder.
    """

    def __init__(self, listening: socket.socket, waiting: list[socket.socket], log: list[str]):
        self._listening = listening
        self.waiting = waiting
        self.log = log

    def accept(self) -> tuple[socket.socket, Any]:
        if not self.waiting:
            raise BlockingIOError(errno.EAGAIN, "no connection waiting")
        self.log.append("accept")
        return self.waiting.pop(0), (LOOPBACK, 1)

    def fileno(self) -> int:
        return self._listening.fileno()

    def setblocking(self, flag: bool) -> None:
        pass


async def test_batches_are_at_most_backlog_and_yield_in_between(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """20 waiting connections with ``backlog=8`` are taken 8, 8 and 4, with a checkpoint
    between batches (other tasks run) and no wait for readiness (nobody connects to the real
    listener here: waiting for it would hang)."""
    count, backlog = 20, 8
    with socket.create_server((LOOPBACK, 0), backlog=count) as helper:
        peers = _connect_all(helper.getsockname()[1], count)
        accepted = [helper.accept()[0] for _ in range(count)]
    log: list[str] = []
    real_sockets = server_module._listening_sockets
    real_checkpoint = anyio.lowlevel.checkpoint

    def queued(listener: Any) -> list[Any]:
        (listening,) = real_sockets(listener)
        return [_QueuedConnections(listening, accepted, log)]

    async def recording_checkpoint() -> None:
        # Any task's checkpoint marks a boundary: no other task can run in the middle of
        # the accept loop's batch, so accepts between two marks came in one batch.
        log.append("yield")
        await real_checkpoint()

    monkeypatch.setattr(server_module, "_listening_sockets", queued)
    monkeypatch.setattr(anyio.lowlevel, "checkpoint", recording_checkpoint)
    try:
        async with _scp().start_server((LOOPBACK, 0), backlog=backlog) as server:
            with anyio.fail_after(10):
                while len(server.associations) < count:
                    await anyio.sleep(0.01)
            monkeypatch.undo()
            for peer in peers:
                peer.close()
            await _wait_until_idle(server)
    finally:
        monkeypatch.undo()
        for sock in peers + accepted:
            sock.close()
    batches = [len(run.split()) for run in " ".join(log).split("yield") if run.strip()]
    assert batches == [8, 8, 4], log


async def test_connections_reset_in_the_queue_are_skipped() -> None:
    """Peers that reset before being accepted cost nothing; later associations work."""
    async with _scp().start_server((LOOPBACK, 0), backlog=1024) as server:
        socks = _connect_all(server.port, 50)
        for sock in socks:
            # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        await _wait_until_idle(server)
        assert await _echo_once(server.port) == 0
        await _wait_until_idle(server)


class _FlakyListener:
    """A listening socket whose next ``accept`` calls fail with the given errors."""

    def __init__(self, sock: socket.socket, failures: list[OSError]) -> None:
        self._sock = sock
        self.failures = failures

    def accept(self) -> tuple[socket.socket, Any]:
        if self.failures:
            raise self.failures.pop(0)
        return self._sock.accept()

    def fileno(self) -> int:
        return self._sock.fileno()

    def setblocking(self, flag: bool) -> None:
        self._sock.setblocking(flag)


async def test_accept_errors_do_not_stop_the_server(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A connection aborted in the queue is skipped; running out of descriptors pauses
    accepting briefly (logged) instead of spinning or ending the server."""
    failures = [
        OSError(errno.ECONNABORTED, "Software caused connection abort"),
        OSError(errno.EMFILE, "Too many open files"),
    ]
    real = server_module._listening_sockets

    def flaky(listener: Any) -> list[Any]:
        return [_FlakyListener(sock, failures) for sock in real(listener)]

    monkeypatch.setattr(server_module, "_listening_sockets", flaky)
    caplog.set_level(logging.ERROR, logger="dicomio.server")
    async with _scp().start_server((LOOPBACK, 0)) as server:
        with anyio.fail_after(10):
            assert await _echo_once(server.port) == 0
        await _wait_until_idle(server)
    assert not failures
    assert any("cannot accept connections" in r.getMessage() for r in caplog.records)


async def test_shutdown_with_connections_waiting_in_the_queue() -> None:
    """Leaving the server block with a full queue ends promptly and closes everything."""
    with anyio.fail_after(15):
        async with _scp().start_server((LOOPBACK, 0), backlog=1024, shutdown_timeout=1) as server:
            socks = _connect_all(server.port, 100)
    try:
        assert not server.associations
        # Every queued connection was either served and closed or refused with the
        # listener: the peer sees the end of the stream, or a reset, never silence.
        for sock in socks:
            sock.settimeout(5)
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(1) == b""
    finally:
        for sock in socks:
            sock.close()


# -- negotiation answers remembered (Server._negotiate) ----------------------------------------


async def test_remembered_negotiation_follows_the_supported_contexts() -> None:
    """The same proposal twice is answered from memory; a change to the AE's contexts is not."""
    from dicomio.sop import CTImageStorage

    scp = _scp()
    client = AE("CLIENT")
    client.add_requested_context(Verification)
    client.add_requested_context(CTImageStorage)
    async with scp.start_server((LOOPBACK, 0)) as server:
        with anyio.fail_after(20):
            for _ in range(2):
                async with client.associate(LOOPBACK, server.port, ae_title="SCP") as assoc:
                    accepted = [cx.abstract_syntax for cx in assoc.accepted_contexts]
                    assert accepted == [Verification]
                    assert (await assoc.send_c_echo()).Status == 0
            assert len(server._negotiated) == 1
            scp.add_supported_context(CTImageStorage)
            async with client.associate(LOOPBACK, server.port, ae_title="SCP") as assoc:
                accepted = [cx.abstract_syntax for cx in assoc.accepted_contexts]
                assert accepted == [Verification, CTImageStorage]
            assert len(server._negotiated) == 2
