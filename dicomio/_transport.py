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

On any other backend (trio), or with TLS, dicomio uses anyio's streams as they are;
``connect_tcp`` and ``wrap_accepted_socket`` (used by the server's accept loop) choose.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Callable

import anyio
import anyio.abc

__all__ = [
    "AsyncioSocketStream",
    "clock",
    "connect_tcp",
    "running_asyncio_loop",
    "wrap_accepted_socket",
]

#: A send the kernel takes at once does not yield to the loop; one in this many does.
SENDS_PER_CHECKPOINT = 8

#: Bytes received but not yet asked for, beyond which the socket is no longer read.
READ_HIGH_WATER = 1 << 20


class _Protocol(asyncio.Protocol):
    __slots__ = (
        "buffered",
        "chunks",
        "drain_waiter",
        "eof",
        "exception",
        "lost",
        "read_paused",
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

    # -- called by the event loop ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        # Like anyio: a write that the kernel does not take at once pauses the writer.
        transport.set_write_buffer_limits(0)

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > READ_HIGH_WATER and not self.read_paused:
            assert self.transport is not None
            self.read_paused = True
            self.transport.pause_reading()
        self._wake_reader()

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

    def _wake_reader(self) -> None:
        waiter = self.read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_writer(self) -> None:
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class AsyncioSocketStream(anyio.abc.SocketStream):
    """An anyio socket stream over an asyncio transport that stays registered for reading."""

    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._closed = False
        self._receiving = False
        self._sending = False
        self._unyielded_sends = 0

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
            if protocol.chunks:
                # Data is already here: still a checkpoint, so a busy reader cannot starve
                # the other tasks of the loop.
                await anyio.lowlevel.checkpoint()
            while not protocol.chunks:
                if self._closed:
                    raise anyio.ClosedResourceError
                if protocol.eof or protocol.lost:
                    if protocol.exception is not None:
                        raise anyio.BrokenResourceError from protocol.exception
                    raise anyio.EndOfStream
                waiter = asyncio.get_running_loop().create_future()
                protocol.read_waiter = waiter
                self._unyielded_sends = 0  # the loop runs other tasks while we wait
                try:
                    await waiter
                finally:
                    protocol.read_waiter = None
        finally:
            self._receiving = False
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
        when there is nothing to read yet.
        """
        protocol = self._protocol
        if self._receiving:
            raise anyio.BusyResourceError("reading from")
        if not protocol.chunks and not (self._closed or protocol.eof or protocol.lost):
            loop = asyncio.get_running_loop()
            if loop.time() >= deadline:
                return None
            waiter = loop.create_future()
            protocol.read_waiter = waiter
            timer = loop.call_at(deadline, _set_if_pending, waiter)
            self._receiving = True
            try:
                await waiter
            finally:
                self._receiving = False
                protocol.read_waiter = None
                timer.cancel()
            if not protocol.chunks and not (self._closed or protocol.eof or protocol.lost):
                return None
        return await self.receive(max_bytes)

    async def send(self, item: bytes) -> None:
        protocol = self._protocol
        if self._closed:
            raise anyio.ClosedResourceError
        if self._sending:
            raise anyio.BusyResourceError("writing to")
        if protocol.lost or self._transport.is_closing():
            raise anyio.BrokenResourceError from protocol.exception
        self._transport.write(item)
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
                waiter = asyncio.get_running_loop().create_future()
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

    async def send_eof(self) -> None:
        if self._transport.can_write_eof() and not self._transport.is_closing():
            self._transport.write_eof()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._transport.abort()
            self._protocol._wake_reader()
            self._protocol._wake_writer()
        await anyio.lowlevel.checkpoint()


def _set_if_pending(waiter: asyncio.Future[None]) -> None:
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
    host: str, port: int, *, local_host: str | None = None, local_port: int | None = None
) -> anyio.abc.SocketStream:
    """Connect as ``anyio.connect_tcp`` does, with the lean stream on asyncio."""
    loop = running_asyncio_loop()
    if loop is None:
        return await anyio.connect_tcp(host, port, local_host=local_host, local_port=local_port)
    local_addr = None
    if local_host is not None or local_port is not None:
        local_addr = (local_host or "0.0.0.0", local_port or 0)
    transport, protocol = await loop.create_connection(
        _Protocol, host, port, local_addr=local_addr, happy_eyeballs_delay=0.25
    )
    assert isinstance(transport, asyncio.Transport)
    return AsyncioSocketStream(transport, protocol)


async def wrap_accepted_socket(sock: socket.socket) -> anyio.abc.SocketStream:
    """A stream over a socket just accepted from a listener: lean on asyncio, anyio's otherwise."""
    loop = running_asyncio_loop()
    if loop is None:
        return await anyio.abc.SocketStream.from_socket(sock)
    transport, protocol = await loop.connect_accepted_socket(_Protocol, sock)
    assert isinstance(transport, asyncio.Transport)
    return AsyncioSocketStream(transport, protocol)
