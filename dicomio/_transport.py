"""A lean TCP byte stream for the asyncio backend.

anyio's own asyncio ``SocketStream`` is correct but costly for a request/response protocol:
each ``receive`` re-registers the socket with the selector (``resume_reading``, then
``pause_reading``: two ``epoll_ctl`` calls) and each ``send`` ends with an extra trip
through the event loop. For DIMSE, where most messages are a few hundred bytes, that
overhead is most of the cost of a round trip (a C-ECHO ping-pong ran at about a fifth of
what the same loop does with a plain ``asyncio.Protocol``).

``AsyncioSocketStream`` is an ``anyio.abc.SocketStream`` over an asyncio transport that
stays registered for reading. It buffers what arrives up to ``READ_HIGH_WATER`` bytes and
only then pauses reading, so memory stays bounded by that plus one read. ``send`` returns
once the kernel has taken everything (the transport's write buffer limit is 0, as with
anyio), so nothing is left in user space when a caller closes the stream.

``send_soon`` is for the small writes of many tasks woken together (the responses to several
outstanding requests arrive in one read, and each waiting task answers or sends its next
request). Written as they come that is one system call per message. ``send_soon`` queues
the bytes while other callbacks are ready to run in this turn of the loop (they may write
too) and writes everything queued once they have run: one system call for the whole turn.
When nothing else is ready, as for a lone request/response exchange, it writes at once,
because queueing would only cost an extra turn of the loop. It only takes bytes while the
transport holds nothing unsent and a turn's total stays small (``COALESCE_LIMIT``);
otherwise the caller sends normally, with flow control. Queued bytes are written before
anything ``send`` writes, and before closing.

On any other backend (trio), or with TLS, dicomio uses anyio's streams as they are;
``connect_tcp`` and ``wrap_accepted_socket`` (used by the server's accept loop) choose.

On every stream, ``ack_now`` acknowledges at once what was read (Linux's TCP_QUICKACK), for
peers that leave Nagle's algorithm on, when nothing is written in answer before the next
wait for the peer (an answer carries the ACK itself).
"""

from __future__ import annotations

import asyncio
import asyncio.selector_events
import contextlib
import os
import select
import socket
from collections import deque
from collections.abc import Callable, Sequence, Sized
from typing import cast

import anyio
import anyio.abc
from anyio.streams.tls import TLSStream

__all__ = [
    "AsyncioSocketStream",
    "Handed",
    "ack_now",
    "ack_socket",
    "clock",
    "connect_tcp",
    "running_asyncio_loop",
    "set_if_pending",
    "wrap_accepted_socket",
    "wrap_accepted_socket_nowait",
]

#: A send the kernel takes at once does not yield to the loop; one in this many does.
SENDS_PER_CHECKPOINT = 8

#: Most parts ``send_parts`` gives one ``sendmsg`` (Linux's IOV_MAX is 1,024).
SENDMSG_PARTS = 512

#: Most bytes ``send_soon`` queues in one turn of the loop; beyond it, writes wait for the kernel.
COALESCE_LIMIT = 64 * 1024

#: Bytes received but not yet asked for, beyond which the socket is no longer read.
READ_HIGH_WATER = 1 << 20

#: What asyncio's selector transport reads per wake-up (its ``max_size``) while reads are
#: small, and what it reads once one fills that: see ``_Protocol.data_received``.
READ_SIZE_SMALL = 256 * 1024
READ_SIZE_LARGE = 1 << 20
#: Most bytes ``wrap_accepted_socket_nowait`` reads at once (an A-ASSOCIATE-RQ is smaller).
READ_AHEAD = 65536

#: Linux's TCP_QUICKACK; None where the system has no such option (``ack_now`` then does
#: nothing and the kernel's delayed ACK stands).
TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)
_IPPROTO_TCP = int(socket.IPPROTO_TCP)


class Handed(Exception):
    """Raised to a parked reader: the bytes went to ``AsyncioSocketStream.on_data`` instead.

    The callback took the bytes in the event loop's own callback and left work that awaits
    (a close, a request to run) to the reader.
    """


class _Protocol(asyncio.Protocol):
    __slots__ = (
        "adaptive",
        "buffered",
        "chunks",
        "drain_waiter",
        "eof",
        "exception",
        "handed",
        "lost",
        "on_data",
        "read_paused",
        "read_size",
        "read_waiter",
        "transport",
        "write_paused",
    )

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.read_waiter: asyncio.Future[None] | None = None
        self.drain_waiter: asyncio.Future[None] | None = None
        self.eof = False
        self.lost = False
        self.exception: BaseException | None = None
        self.read_paused = False
        self.write_paused = False
        self.on_data: Callable[[bytes], bool] | None = None
        self.handed = False
        # Whether the transport's read size can be changed (asyncio's selector transport
        # has a ``max_size``; uvloop's has not), and what it is.
        self.adaptive = False
        self.read_size = READ_SIZE_SMALL

    # -- called by the event loop ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports have asyncio.Transport's
        # methods without deriving from it.
        self.transport = transport = cast(asyncio.Transport, transport)
        # Like anyio: a write that the kernel does not take at once pauses the writer.
        transport.set_write_buffer_limits(0)
        if isinstance(getattr(transport, "max_size", None), int):
            self.adaptive = True
            transport.max_size = READ_SIZE_SMALL  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self.adaptive:
            # A read that filled the transport's buffer means a bulk transfer (the data sets
            # of C-STOREs): read 1 MiB at a time then, so that a 0.5 MB instance comes in one
            # read, one turn of the loop and one pass through the Upper Layer, and few PDUs
            # straddle two reads (each of those is joined: a copy). A small read goes back
            # to 256 KiB: each read allocates its whole size first, which costs more, for a
            # few hundred bytes, the larger it is (an mmap when the heap cannot serve it).
            size = len(data)
            if size >= self.read_size:
                if self.read_size < READ_SIZE_LARGE:
                    self._set_read_size(READ_SIZE_LARGE)
            elif size < READ_SIZE_SMALL and self.read_size > READ_SIZE_SMALL:
                self._set_read_size(READ_SIZE_SMALL)
        # While the reader is parked with nothing buffered, a receive hook may take the
        # bytes here, without waking it (see AsyncioSocketStream.on_data).
        if (
            self.on_data is not None
            and self.read_waiter is not None
            and not self.read_waiter.done()
            and not self.chunks
            and self.on_data(data)
        ):
            return
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > READ_HIGH_WATER and not self.read_paused:
            assert self.transport is not None
            self.read_paused = True
            self.transport.pause_reading()
        self._wake_reader()

    def _set_read_size(self, size: int) -> None:
        self.read_size = size
        self.transport.max_size = size  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        self.eof = True
        self._wake_reader()
        return True  # keep the transport open for writing; the owner closes it

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.exception = exc
        self._wake_reader()
        self.write_paused = False
        self._wake_writer()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_writer()

    def hand_over(self) -> None:
        """The receive hook left work for the reader: wake it (it raises ``Handed``)."""
        self.handed = True
        self._wake_reader()

    def _wake_reader(self) -> None:
        if self.read_waiter is not None:
            set_if_pending(self.read_waiter)

    def _wake_writer(self) -> None:
        if self.drain_waiter is not None:
            set_if_pending(self.drain_waiter)


class AsyncioSocketStream(anyio.abc.SocketStream):
    """An anyio socket stream over an asyncio transport that stays registered for reading."""

    def __init__(
        self, transport: asyncio.Transport, protocol: _Protocol, sock: socket.socket | None = None
    ) -> None:
        self._transport = transport
        self._protocol = protocol
        # The socket's own sendmsg, for send_parts. The transport exposes only a wrapper
        # without it; its private ``_sock`` is the socket itself. Missing: no gathering.
        if sock is None:
            wrapper = transport.get_extra_info("socket")
            sock = getattr(wrapper, "_sock", None)
        #: The socket itself (None if the transport does not expose it), for ``ack_socket``.
        self.sock = sock
        self._sendmsg: Callable[[Sequence[bytes | memoryview]], int] | None = getattr(
            sock, "sendmsg", None
        )
        self._closed = False
        self._receiving = False
        # receive_before's timer, left armed from wait to wait, and the deadline of the
        # wait under way (None: none is).
        self._read_timer: asyncio.TimerHandle | None = None
        self._read_deadline: float | None = None
        # No read yet: the first may skip the checkpoint (see receive).
        self._first_read = True
        self._sending = False
        self._unyielded_sends = 0
        # send_soon's queue for this turn of the loop, and whether its write is scheduled.
        self._soon: list[bytes | memoryview] = []
        self._soon_size = 0
        self._soon_scheduled = False
        # The loop's queue of ready callbacks (a private attribute of asyncio's own loops):
        # send_soon writes at once when it is empty. A loop without it (uvloop) is taken as
        # always busy, which only means one more turn of the loop before small writes leave.
        # The stream's loop, looked up once: asyncio.get_running_loop() costs a getpid()
        # system call each time (it guards against a fork).
        self._loop = loop = asyncio.get_running_loop()
        self._ready: Sized = getattr(loop, "_ready", (None,))

    @property
    def on_data(self) -> Callable[[bytes], bool] | None:
        """A receive hook: called with bytes that arrive while a ``receive`` waits.

        It runs in the event loop's read callback, with nothing buffered before the bytes.
        It returns False to leave them to the reader as usual, or True once it has taken
        them; if it then leaves work that awaits, it calls ``hand_over()`` and the waiting
        ``receive`` raises ``Handed`` instead of returning bytes. The acceptor's C-ECHO
        answers (``ServiceProviderMixin``) go out this way: one loop turn per echo, not two.
        """
        return self._protocol.on_data

    @on_data.setter
    def on_data(self, hook: Callable[[bytes], bool] | None) -> None:
        self._protocol.on_data = hook
        self._protocol.handed = False

    def hand_over(self) -> None:
        """Wake the waiting ``receive`` to raise ``Handed`` (from a receive hook)."""
        self._protocol.hand_over()

    @property
    def on_selector_loop(self) -> bool:
        """Whether the stream runs on asyncio's own selector loop (not uvloop's)."""
        return isinstance(self._loop, asyncio.selector_events.BaseSelectorEventLoop)

    @property
    def write_ready(self) -> bool:
        """Whether a write now would go straight to the kernel: nothing queued, no wait."""
        return not (
            self._closed
            or self._sending
            or self._soon
            or self._protocol.write_paused
            or self._protocol.lost
            or self._transport.is_closing()
            or self._transport.get_write_buffer_size()
        )

    def write_nowait(self, data: bytes | memoryview) -> None:
        """Hand ``data`` to the transport at once (from a receive hook, when ``write_ready``).

        What the kernel does not take stays in the transport and pauses writing, so the
        next ``send`` waits for it as usual.
        """
        self._transport.write(data)

    def has_buffered_input(self) -> bool:
        """Whether bytes or the end of the connection wait in the buffer, unread."""
        protocol = self._protocol
        return bool(protocol.chunks) or protocol.eof or protocol.lost

    @property
    def _raw_socket(self) -> socket.socket:
        sock: socket.socket = self._transport.get_extra_info("socket")
        return sock

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if max_bytes < 1:
            raise ValueError("max_bytes must be a positive integer")
        if self._receiving:
            raise anyio.BusyResourceError("reading from")
        protocol = self._protocol
        if self._closed:
            raise anyio.ClosedResourceError
        self._receiving = True
        try:
            if protocol.handed:
                # Work the receive hook left comes before bytes that arrived after it.
                protocol.handed = False
                raise Handed
            if protocol.chunks and not self._first_read:
                # Data is already here: still a checkpoint, so a busy reader cannot starve
                # the other tasks of the loop. Not on the first read: the task has only
                # just started (the server's, whose A-ASSOCIATE-RQ was read on accepting).
                await anyio.lowlevel.checkpoint()
            self._first_read = False
            while not protocol.chunks:
                if protocol.handed:
                    protocol.handed = False
                    raise Handed
                if self._closed:
                    raise anyio.ClosedResourceError
                if protocol.eof or protocol.lost:
                    if protocol.exception is not None:
                        raise anyio.BrokenResourceError from protocol.exception
                    raise anyio.EndOfStream
                waiter = self._loop.create_future()
                protocol.read_waiter = waiter
                self._unyielded_sends = 0  # the loop runs other tasks while we wait
                try:
                    await waiter
                finally:
                    protocol.read_waiter = None
        finally:
            self._receiving = False
        return self._take_chunk(max_bytes)

    def _take_chunk(self, max_bytes: int) -> bytes:
        """The first buffered chunk, cut to ``max_bytes``; resumes reading below the mark."""
        protocol = self._protocol
        chunk = protocol.chunks.popleft()
        if len(chunk) > max_bytes:
            chunk, rest = chunk[:max_bytes], chunk[max_bytes:]
            protocol.chunks.appendleft(rest)
        protocol.buffered -= len(chunk)
        if protocol.read_paused and protocol.buffered <= READ_HIGH_WATER // 4:
            protocol.read_paused = False
            if not protocol.lost:
                self._transport.resume_reading()
        return chunk

    async def receive_before(self, max_bytes: int, deadline: float) -> bytes | None:
        """``receive``, or None if nothing has arrived by ``deadline`` (the loop's clock).

        A timer on the loop instead of an anyio cancel scope: cheaper, and it is armed only
        when there is nothing to read yet. One timer serves wait after wait: a request's
        deadline (its DIMSE timeout) lies far beyond its answer, so the timer armed for one
        wait is left for the next, whose deadline is later still, and re-armed only when it
        fires before the deadline of the wait then under way (``_deadline_passed``).
        """
        protocol = self._protocol
        if self._receiving:
            raise anyio.BusyResourceError("reading from")
        if not protocol.chunks and not (
            self._closed or protocol.eof or protocol.lost or protocol.handed
        ):
            loop = self._loop
            if loop.time() >= deadline:
                return None
            waiter = loop.create_future()
            protocol.read_waiter = waiter
            self._read_deadline = deadline
            timer = self._read_timer
            if timer is None or timer.when() > deadline:
                if timer is not None:
                    timer.cancel()
                self._read_timer = loop.call_at(deadline, self._deadline_passed)
            self._receiving = True
            self._unyielded_sends = 0  # the loop runs other tasks while we wait
            try:
                await waiter
            finally:
                self._receiving = False
                protocol.read_waiter = None
                self._read_deadline = None
            if protocol.handed:
                protocol.handed = False
                raise Handed
            if protocol.chunks and not self._closed:
                # This call has waited, so it was a checkpoint already: no second trip
                # through the loop before the caller sees the bytes.
                return self._take_chunk(max_bytes)
            if not (self._closed or protocol.eof or protocol.lost):
                return None
        return await self.receive(max_bytes)

    def _deadline_passed(self) -> None:
        """The read timer: wake ``receive_before``'s wait if its deadline has come, re-arm
        for it if it is later, and stay unarmed while nothing waits with a deadline."""
        self._read_timer = None
        deadline = self._read_deadline
        waiter = self._protocol.read_waiter
        if deadline is None or waiter is None or self._closed:
            return
        loop = self._loop
        if loop.time() >= deadline:
            set_if_pending(waiter)
        else:
            self._read_timer = loop.call_at(deadline, self._deadline_passed)

    async def send_soon(self, item: bytes | memoryview) -> bool:
        """Queue ``item`` to be written with the turn's other small writes; False if not taken.

        Not taken (nothing queued, no checkpoint) when the transport still holds bytes the
        kernel did not take, when a ``send`` is waiting for it, or when the turn's queue would
        pass ``COALESCE_LIMIT``: the caller then uses ``send``, which writes the queue first,
        so bytes leave in the order they were given. Like ``send``, one call in
        ``SENDS_PER_CHECKPOINT`` yields to the loop, after the bytes are queued.
        """
        self._check_open()
        protocol = self._protocol
        size = self._soon_size + len(item)
        if self._sending or protocol.write_paused or size > COALESCE_LIMIT:
            return False
        if not self._soon and not self._ready:
            # Nothing else will run before the loop waits: there is nobody to wait for.
            self._transport.write(item)
        else:
            self._soon.append(item)
            self._soon_size = size
            if not self._soon_scheduled:
                self._soon_scheduled = True
                self._loop.call_soon(self._write_soon)
        self._unyielded_sends += 1
        if self._unyielded_sends >= SENDS_PER_CHECKPOINT:
            self._unyielded_sends = 0
            await anyio.lowlevel.checkpoint()
        return True

    def _write_soon(self) -> None:
        """Hand ``send_soon``'s queue to the transport (a loop callback, or before a write)."""
        self._soon_scheduled = False
        queued = self._soon
        if not queued:
            return
        self._soon = []
        self._soon_size = 0
        if self._closed or self._transport.is_closing():
            return
        self._transport.write(queued[0] if len(queued) == 1 else b"".join(queued))

    async def send(self, item: bytes) -> None:
        self._check_writable()
        self._transport.write(item)
        await self._after_write()

    async def send_parts(self, parts: Sequence[bytes | memoryview]) -> None:
        """``send(b"".join(parts))`` without the join: the parts go out in one system call.

        While the transport holds nothing unsent, the parts (PDU headers and views of a data
        set, say) are handed to the kernel with one gathering ``sendmsg``; whatever it did
        not take is given to the transport, which copies just that into its buffer, and the
        call then waits for the kernel as ``send`` does. Without ``sendmsg`` access, or with
        bytes already waiting, each part is given to the transport in turn.
        """
        self._check_writable()
        transport = self._transport
        sendmsg = self._sendmsg
        start = 0
        if sendmsg is not None and not transport.get_write_buffer_size():
            while start < len(parts):
                batch = parts[start : start + SENDMSG_PARTS]
                try:
                    sent = sendmsg(batch)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break  # the transport's own write below meets it and reports it
                # Skip what the kernel took: whole parts, then the head of the next one.
                short = False
                for part in batch:
                    if sent < len(part):
                        short = True
                        break
                    sent -= len(part)
                    start += 1
                if short:
                    if sent:
                        parts = [memoryview(parts[start])[sent:], *parts[start + 1 :]]
                        start = 0
                    break
        for part in parts[start:]:
            transport.write(part)
        await self._after_write()

    def _check_open(self) -> None:
        """Raise if closed here (ClosedResourceError) or lost (BrokenResourceError)."""
        if self._closed:
            raise anyio.ClosedResourceError
        protocol = self._protocol
        if protocol.lost or self._transport.is_closing():
            raise anyio.BrokenResourceError from protocol.exception

    def _check_writable(self) -> None:
        """Raise as ``send`` does when it cannot write; write what ``send_soon`` queued."""
        if self._closed:
            raise anyio.ClosedResourceError
        if self._sending:
            raise anyio.BusyResourceError("writing to")
        self._check_open()
        if self._soon:
            self._write_soon()

    async def _after_write(self) -> None:
        """Return once the kernel has taken everything written (``send``'s flow control)."""
        protocol = self._protocol
        if not protocol.write_paused:
            # The kernel took everything. A send that never waits is not a checkpoint, so
            # a task sending response after response would starve the loop (and never see
            # the C-CANCEL it should stop for): every few such sends, yield anyway.
            self._unyielded_sends += 1
            if self._unyielded_sends >= SENDS_PER_CHECKPOINT:
                self._unyielded_sends = 0
                await anyio.lowlevel.checkpoint()
            return
        self._unyielded_sends = 0
        self._sending = True
        try:
            while protocol.write_paused:
                waiter = self._loop.create_future()
                protocol.drain_waiter = waiter
                try:
                    await waiter
                finally:
                    protocol.drain_waiter = None
                if self._closed:
                    raise anyio.ClosedResourceError
                if protocol.lost:
                    raise anyio.BrokenResourceError from protocol.exception
        finally:
            self._sending = False

    def sent_nowait(self) -> bool:
        """Write what ``send_soon`` queued; True if the kernel has taken everything written.

        For a caller about to close: ``close_nowait`` drops what the transport still holds.
        """
        if self._soon:
            self._write_soon()
        return not self._transport.get_write_buffer_size()

    async def send_eof(self) -> None:
        if self._soon:
            self._write_soon()
        if self._transport.can_write_eof() and not self._transport.is_closing():
            self._transport.write_eof()

    async def aclose(self) -> None:
        self.close_nowait()
        await anyio.lowlevel.checkpoint()

    def close_nowait(self) -> None:
        """Close at once, as ``anyio.aclose_forcefully`` would, without its cancel scope.

        Closing waits for nothing here, so the association's last step needs no cancelled
        scope (whose ``cancel()`` formats the task's repr, and whose delivery costs loop
        turns) and no checkpoint: a measurable part of a short association's cost.
        """
        if self._closed:
            return
        if self._soon:
            # What send_soon took is as good as sent: give the kernel the chance to
            # take it (a last small A-RELEASE-RP or A-ABORT) before the socket goes.
            self._write_soon()
        self._closed = True
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        self._transport.abort()
        self._protocol._wake_reader()
        self._protocol._wake_writer()


def ack_socket(stream: anyio.abc.ByteStream) -> socket.socket | None:
    """The socket under ``stream`` for ``ack_now``, or None (no socket, or no TCP_QUICKACK)."""
    if TCP_QUICKACK is None:
        return None
    if type(stream) is AsyncioSocketStream and stream.sock is not None:
        return stream.sock  # without building the stream's attribute mapping, or a wrapper
    sock: socket.socket | None = stream.extra(anyio.abc.SocketAttribute.raw_socket, None)
    return sock


def ack_now(sock: socket.socket) -> None:
    """Acknowledge what has been read at once, not up to 40 ms later (Linux's delayed ACK).

    A peer that leaves Nagle's algorithm on (pynetdicom does) holds back a small write while
    an earlier one is unacknowledged: the data set of a C-STORE waits for the ACK of its
    command set, which the kernel delays while this side has nothing to send. TCP_QUICKACK
    does not stay set, so this is called for every read that nothing answers before the
    next wait for the peer. Measured on loopback, pynetdicom storing 24 instances of 9 KB on
    one association: 1.2 s (50 ms each) without, 0.14 to 0.3 s with it. It sends a segment
    of its own (a pure ACK), three per request/response exchange instead of two, which is
    why a read that is answered at once is not acknowledged this way.
    """
    assert TCP_QUICKACK is not None
    # try/except rather than contextlib.suppress, and a plain int for the level: this runs
    # for most reads of a large data set (storescu: about 7 per 0.5 MB instance).
    try:  # noqa: SIM105
        sock.setsockopt(_IPPROTO_TCP, TCP_QUICKACK, 1)
    except OSError:
        pass  # closed meanwhile: the next read reports it


def set_if_pending(waiter: asyncio.Future[None]) -> None:
    """Wake whoever awaits ``waiter``, unless it is already done (cancelled, or set)."""
    if not waiter.done():
        waiter.set_result(None)


def running_asyncio_loop() -> asyncio.AbstractEventLoop | None:
    """The running asyncio loop, or None under another backend (trio)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def clock() -> Callable[[], float]:
    """The running loop's clock, as ``anyio.current_time`` reads it, but found once."""
    loop = running_asyncio_loop()
    return loop.time if loop is not None else anyio.current_time


async def connect_tcp(
    host: str,
    port: int,
    *,
    local_host: str | None = None,
    local_port: int | None = None,
    timeout: float | None = None,
) -> anyio.abc.SocketStream:
    """Connect as ``anyio.connect_tcp`` does, with the lean stream on asyncio.

    ``timeout`` (seconds) bounds the connect; past it, ``TimeoutError``.
    """
    loop = running_asyncio_loop()
    if loop is None:
        with anyio.fail_after(timeout):
            return await anyio.connect_tcp(
                host, port, local_host=local_host, local_port=local_port
            )
    local_addr = None
    if local_host is not None or local_port is not None:
        local_addr = (local_host or "0.0.0.0", local_port or 0)
    if isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop) and _is_ip_address(host):
        return await _connect_address(loop, host, port, local_addr, timeout)
    with anyio.fail_after(timeout):
        return await _create_connection(loop, host, port, local_addr)


async def _create_connection(
    loop: asyncio.AbstractEventLoop, host: str, port: int, local_addr: tuple[str, int] | None
) -> AsyncioSocketStream:
    if isinstance(loop, asyncio.BaseEventLoop) and not _is_ip_address(host):
        transport, protocol = await loop.create_connection(
            _Protocol, host, port, local_addr=local_addr, happy_eyeballs_delay=0.25
        )
    else:
        # An address has one way to reach it: Happy Eyeballs would only add its race's
        # tasks (about a tenth of the CPU a fan-out client spends per association).
        # uvloop (and other loops not built on asyncio's own) has no Happy Eyeballs
        # argument: the addresses a name resolves to are tried one after the other.
        transport, protocol = await loop.create_connection(
            _Protocol, host, port, local_addr=local_addr
        )
    return AsyncioSocketStream(transport, protocol)


async def _connect_address(
    loop: asyncio.selector_events.BaseSelectorEventLoop,
    host: str,
    port: int,
    local_addr: tuple[str, int] | None,
    timeout: float | None,
) -> AsyncioSocketStream:
    """``_create_connection`` to an IP address, on a selector loop, for about half the CPU.

    ``loop.create_connection`` resolves the address (an address needs no resolving), then
    builds the transport and awaits a future set once ``connection_made`` has run: a turn
    of the loop and a task wake-up per connection, on top of the one for the connect
    itself. Here the connect waits for the socket to become writable, unless it is already
    (a loop timer bounds the wait, cheaper than a cancel scope), and the transport is made as
    ``wrap_accepted_socket_nowait`` makes it: its ``connection_made`` and reader
    registration are queued, and run before the stream's first read.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        # What asyncio's transport would set: small DIMSE messages must not wait for ACKs.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if local_addr is not None:
            sock.bind(local_addr)
        try:
            sock.connect((host, port))
        except (BlockingIOError, InterruptedError):
            if not _writable_now(sock):
                await _writable(loop, sock, timeout)
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                raise OSError(error, f"connect to {host}:{port}: {os.strerror(error)}") from None
        protocol = _Protocol()
        transport = loop._make_socket_transport(sock, protocol)  # type: ignore[attr-defined]
    except BaseException:
        sock.close()
        raise
    return AsyncioSocketStream(transport, protocol, sock)


def _writable_now(sock: socket.socket) -> bool:
    """Whether a connecting ``sock`` is writable already (connected, or failed).

    On loopback (and a LAN host that answers at once) the handshake is over when
    ``connect`` returns, though it reports "in progress": one zero-timeout ``poll`` (about
    a microsecond) then saves registering with the loop and a wake-up.
    """
    if not hasattr(select, "poll"):
        return False
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    return bool(poller.poll(0))


async def _writable(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, timeout: float | None
) -> None:
    """Wait until a connecting ``sock`` is writable (connected, or failed); past ``timeout``
    seconds, ``TimeoutError``."""
    waiter: asyncio.Future[bool] = loop.create_future()
    fd = sock.fileno()
    loop.add_writer(fd, _resolve, waiter, True)
    timer = None if timeout is None else loop.call_later(timeout, _resolve, waiter, False)
    try:
        if not await waiter:
            raise TimeoutError(f"TCP connect timed out after {timeout} s")
    finally:
        loop.remove_writer(fd)
        if timer is not None:
            timer.cancel()


def _resolve(waiter: asyncio.Future[bool], value: bool) -> None:
    if not waiter.done():
        waiter.set_result(value)


async def wrap_accepted_socket(sock: socket.socket) -> anyio.abc.SocketStream:
    """A stream over a socket just accepted from a listener: lean on asyncio, anyio's otherwise."""
    loop = running_asyncio_loop()
    if loop is None:
        return await anyio.abc.SocketStream.from_socket(sock)
    transport, protocol = await loop.connect_accepted_socket(_Protocol, sock)
    return AsyncioSocketStream(transport, protocol, sock)


def _is_ip_address(host: str) -> bool:
    """Whether ``host`` is an IPv4 or IPv6 address rather than a name to resolve.

    ``inet_pton`` rather than ``ipaddress.ip_address`` (a tenth of the cost, once per
    connect): an IPv6 address with a scope (``fe80::1%eth0``) is then not one, and takes
    the resolver's way, which handles the scope.
    """
    for family in _FAMILIES:
        try:
            socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        return True
    return False


_FAMILIES = (socket.AF_INET, socket.AF_INET6)


def wrap_accepted_socket_nowait(sock: socket.socket) -> AsyncioSocketStream | None:
    """``wrap_accepted_socket`` without awaiting, on asyncio's selector loops; else None.

    For the server's accept callback: the connection's task then starts with its stream
    ready. ``connect_accepted_socket`` builds the same transport, then awaits a future set
    once ``connection_made`` has run: a turn of the loop, and a task wake-up, per
    connection. Here the transport's ``connection_made`` and reader registration are
    queued at once, so they run before any task started after this call. The loop's
    ``_make_socket_transport`` is private: a loop without it (uvloop) gets None and the
    caller awaits ``wrap_accepted_socket``. The socket must be non-blocking.
    """
    loop = running_asyncio_loop()
    make = getattr(loop, "_make_socket_transport", None)
    if make is None:
        return None
    protocol = _Protocol()
    transport = make(sock, protocol)
    if not isinstance(transport, asyncio.Transport):  # pragma: no cover - not a selector loop
        transport.close()
        return None
    # A client sends its first PDU as soon as it is connected, usually before the server
    # gets round to accepting: read it now, so that the connection's task finds it waiting
    # instead of waiting a turn of the loop for the read callback and another to be woken.
    # Whatever else is there (the end of the stream, an error) is left to the transport.
    with contextlib.suppress(OSError):  # BlockingIOError: nothing yet
        data = sock.recv(READ_AHEAD)
        if data:
            protocol.chunks.append(data)
            protocol.buffered = len(data)
    return AsyncioSocketStream(transport, protocol, sock)


def input_waiting(stream: anyio.abc.ByteStream) -> bool:
    """Whether ``stream`` has unread bytes or an end-of-stream, looked at without reading.

    A pooled requestor association reads only while a request waits, so whatever its peer
    sent while it was idle is still unread: an A-ABORT, an A-RELEASE-RQ, the end of the
    connection (or a request, which an idle association in a pool cannot serve either).
    """
    inner: anyio.abc.AnyByteStream = stream
    while isinstance(inner, TLSStream):
        inner = inner.transport_stream
    if isinstance(inner, AsyncioSocketStream):
        # It reads eagerly into its buffer: the socket itself shows nothing.
        return inner.has_buffered_input()
    try:
        sock = inner.extra(anyio.abc.SocketAttribute.raw_socket)
    except anyio.TypedAttributeLookupError:
        return False  # not a socket (an in-memory stream): nothing to look at
    if not isinstance(sock, socket.socket) or sock.getblocking():
        return False  # not one we can look at without waiting
    try:
        # A peek, not select(): select fails for descriptors past FD_SETSIZE (1024).
        sock.recv(1, socket.MSG_PEEK)
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True  # reset, or closed: ended either way
    return True  # bytes, or b"" for the end of the connection
