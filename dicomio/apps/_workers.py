"""Several worker processes on one port: the supervisor of ``storescp``/``qrscp --workers N``.

One Python process runs on one core. With ``--workers N`` the command becomes a supervisor
that binds the port, starts N copies of itself as workers (``python -m dicomio`` with the same
command line, plus ``--worker-fd``), each with its own event loop, and serves nothing itself.

The listening socket. On Linux each worker gets a socket of its own, all bound to the port
with SO_REUSEPORT: the kernel spreads new connections over them by a hash of the addresses,
and each worker accepts only from its own queue. Where SO_REUSEPORT does not balance (macOS
and the BSDs let the last socket bound take everything) all workers share one inherited
socket and take turns at its queue. Measured on Linux (2 workers, 64 one-instance DCMTK
storescu associations, 8 at a time, on a busy 2-core machine) both spread the load about
evenly: SO_REUSEPORT 25/39, 31/33, 35/29, 33/31, the shared socket 28/36, 33/31. SO_REUSEPORT
is preferred where it balances because each worker then has a queue of its own: a new
connection wakes one worker, not every worker waiting on the shared socket.

The supervisor keeps its copies of the sockets open for the whole run, so connections the
kernel queued for a worker that crashed wait for its replacement (which inherits the same
socket) instead of being reset. It restarts a worker that exits while serving, at most
``MAX_RESTARTS`` times in ``RESTART_WINDOW`` seconds; past that it stops them all and exits
with status 1.

Shutdown: SIGTERM or SIGINT to the supervisor is forwarded, once, as SIGTERM to each worker
(later signals are ignored by both: a service manager may signal every process of the group),
and each worker drains as a single server does (stops accepting, lets open associations
finish for a few seconds, then aborts the rest). The supervisor closes its copies of the
sockets at once, exits when every worker has, and kills a worker still running
``KILL_AFTER`` seconds later. Workers run in their own session, so that Ctrl-C in a terminal
reaches only the supervisor; a worker whose supervisor disappears without a word (killed)
sees its standard input, a pipe from the supervisor, close, and drains and exits too.

Limits the settings set per server (``--max-associations``, ``--max-associations-per-ae``)
apply to each worker: N workers admit up to N times as many associations.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence

import anyio
import anyio.abc

from dicomio.apps._common import EXIT_FAILURE, EXIT_OK

__all__ = ["KILL_AFTER", "MAX_RESTARTS", "RESTART_WINDOW", "Supervisor", "bind_sockets"]


#: A worker restarted more often than this within ``RESTART_WINDOW`` seconds is failing for
#: good (a bad setting, a full disk): the supervisor stops instead of spinning.
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
#: Seconds after the shutdown signal before a worker still running is killed: its own drain
#: (``SHUTDOWN_SECONDS`` in ``_scp_commands``) plus time for the interpreter to exit.
KILL_AFTER = 15.0
#: The listen queue of each socket (the kernel caps it at ``net.core.somaxconn``).
BACKLOG = 4096


def balances_reuse_port() -> bool:
    """Whether SO_REUSEPORT spreads connections over the sockets bound with it (Linux 3.9+)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def bind_sockets(
    host: str | None, port: int, count: int, *, reuse_port: bool | None = None
) -> list[socket.socket]:
    """Listening sockets for ``count`` workers on ``host``:``port`` (0: any free port).

    With ``reuse_port`` (default: where it balances) ``count`` sockets bound with
    SO_REUSEPORT, else ``count`` references to one socket. The first address ``host``
    resolves to is used (``0.0.0.0`` for none).
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host or "0.0.0.0", port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    if reuse_port is None:
        reuse_port = balances_reuse_port()
    sockets: list[socket.socket] = []
    try:
        for _ in range(count if reuse_port else 1):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            # Port 0 picks a free port for the first socket; the others join it there.
            address = (address[0], sock.getsockname()[1], *address[2:])
            sock.listen(BACKLOG)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets if reuse_port else sockets * count


class Supervisor:
    """Runs ``argv`` once per socket, each worker with its socket's descriptor appended as
    ``--worker-fd FD``, until a signal; see the module docstring."""

    def __init__(self, what: str, argv: Sequence[str], sockets: Sequence[socket.socket]) -> None:
        self.what = what
        self.argv = list(argv)
        self.sockets = list(sockets)
        #: The running workers by slot.
        self.processes: dict[int, anyio.abc.Process] = {}
        self.restarts: deque[float] = deque()
        self.stopping = False
        self.failed = False
        self._tg: anyio.abc.TaskGroup | None = None

    def _say(self, text: str) -> None:
        print(f"{self.what}: {text}", file=sys.stderr, flush=True)

    async def run(self) -> int:
        """Serve until a signal and every worker has exited; the exit status."""
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with anyio.create_task_group() as outer:
                self._tg = outer
                outer.start_soon(self._forward, signals)
                async with anyio.create_task_group() as slots:
                    for slot in range(len(self.sockets)):
                        slots.start_soon(self._keep_running, slot)
                outer.cancel_scope.cancel()
        self._close_sockets()
        return EXIT_FAILURE if self.failed else EXIT_OK

    async def _forward(self, signals: AsyncIterator[signal.Signals]) -> None:
        async for signum in signals:
            self._say(f"{signal.Signals(signum).name}, stopping the workers")
            self.stop()

    def stop(self) -> None:
        """Ask every worker to drain and exit (SIGTERM); kill stragglers after KILL_AFTER."""
        if self.stopping:
            # A repeat (GNU timeout and systemd signal the whole group, the supervisor too)
            # changes nothing: the workers are draining, and KILL_AFTER bounds it.
            return
        self.stopping = True
        # The workers hold their own copies; what is queued when they stop accepting is
        # reset, as with a single server.
        self._close_sockets()
        for proc in list(self.processes.values()):
            _signal(proc, signal.SIGTERM)
        assert self._tg is not None
        self._tg.start_soon(self._kill_stragglers)

    async def _kill_stragglers(self) -> None:
        await anyio.sleep(KILL_AFTER)
        for slot, proc in list(self.processes.items()):
            self._say(f"worker {slot} (pid {proc.pid}) still running: killing it")
            _signal(proc, signal.SIGKILL)

    def _close_sockets(self) -> None:
        for sock in self.sockets:
            sock.close()

    async def _keep_running(self, slot: int) -> None:
        sock = self.sockets[slot]
        while not self.stopping:
            fd = sock.fileno()
            proc = await anyio.open_process(
                [*self.argv, "--worker-fd", str(fd)],
                stdin=subprocess.PIPE,
                stdout=None,
                stderr=None,
                pass_fds=[fd],
                start_new_session=True,
            )
            self.processes[slot] = proc
            if self.stopping:  # the signal came while it was starting
                _signal(proc, signal.SIGTERM)
            try:
                code = await proc.wait()
            finally:
                with anyio.CancelScope(shield=True):
                    if proc.returncode is None:
                        _signal(proc, signal.SIGKILL)
                    await proc.aclose()
                del self.processes[slot]
            if self.stopping:
                if code != 0:
                    self._say(f"worker {slot} (pid {proc.pid}) exited with status {code}")
                    self.failed = True
                return
            self._say(f"worker {slot} (pid {proc.pid}) exited with status {code}; restarting")
            if not self._may_restart():
                self._say(
                    f"{MAX_RESTARTS} restarts within {RESTART_WINDOW:g} s: stopping all workers"
                )
                self.failed = True
                self.stop()
                return

    def _may_restart(self) -> bool:
        now = time.monotonic()
        while self.restarts and now - self.restarts[0] > RESTART_WINDOW:
            self.restarts.popleft()
        if len(self.restarts) >= MAX_RESTARTS:
            return False
        self.restarts.append(now)
        return True


def _signal(proc: anyio.abc.Process, signum: signal.Signals) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):  # exited since; wait() will say so
            proc.send_signal(signum)


async def wait_supervisor_gone() -> None:
    """Return when standard input, the pipe from this worker's supervisor, reaches its end
    (the supervisor has exited, however it ended)."""
    fd = sys.stdin.fileno()
    while True:
        await anyio.wait_readable(fd)
        if not os.read(fd, 4096):
            return
