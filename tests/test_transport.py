"""dicomio._transport: the lean asyncio socket stream and the backend-choosing helpers.

Tests that exercise ``AsyncioSocketStream`` itself (its buffer, its flow-control flags,
``receive_before``) are asyncio-only: they override the ``anyio_backend`` parameter with
``asyncio_only``. Everything else runs on both backends; on trio ``connect_tcp`` and
``wrap_accepted_socket`` give anyio's own streams, which must behave the same way.

Every test talks over 127.0.0.1 on a port the kernel picks, and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import anyio
import anyio.abc
import anyio.lowlevel
import pytest
from anyio.abc import SocketAttribute, TaskStatus
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dicomio._transport import (
    COALESCE_LIMIT,
    READ_HIGH_WATER,
    READ_SIZE_LARGE,
    READ_SIZE_SMALL,
    SENDS_PER_CHECKPOINT,
    AsyncioSocketStream,
    _is_ip_address,
    _Protocol,
    clock,
    connect_tcp,
    running_asyncio_loop,
    wrap_accepted_socket,
)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60), pytest.mark.uvloop]

#: Tests of the lean stream's own machinery: only meaningful on the asyncio backend.
asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])

LOOPBACK = "127.0.0.1"
#: The most asyncio's selector transport reads per wake-up (``max_size``, adapted).
ONE_READ = READ_SIZE_LARGE
#: The most the lean stream may hold: it pauses reading once over the high-water mark,
#: and one read may land after the last check.
READ_BOUND = READ_HIGH_WATER + ONE_READ
#: Far more than loopback's kernel buffers absorb while the peer does not read
#: (net.ipv4.tcp_wmem's maximum is 4 MiB; the receiver's window does not grow unread).
BLOCKING_SIZE = 16 << 20

PeerKind = Literal["anyio", "lean", "raw"]
#: The default of ``task_status`` for functions started with ``TaskGroup.start``.
STARTED = anyio.TASK_STATUS_IGNORED


def pattern(size: int, seed: int = 0) -> bytes:
    """Bytes that show any loss, duplication or reordering."""
    return random.Random(seed).randbytes(size)


@asynccontextmanager
async def connected(
    peer_kind: PeerKind = "anyio", **connect_kwargs: Any
) -> AsyncIterator[tuple[anyio.abc.SocketStream, Any]]:
    """(ours, peer): ours from ``connect_tcp``; the peer accepted from a loopback listener.

    ``peer_kind``: "anyio" wraps the accepted socket in anyio's own stream for the running
    backend (independent of the code under test), "lean" with ``wrap_accepted_socket``,
    "raw" hands back the non-blocking ``socket.socket`` itself.
    """
    with socket.socket() as listener:
        listener.bind((LOOPBACK, 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        ours = await connect_tcp(LOOPBACK, port, **connect_kwargs)
        try:
            with anyio.fail_after(5):
                await anyio.wait_readable(listener)
            sock, _ = listener.accept()
            sock.setblocking(False)
            if peer_kind == "raw":
                with sock:
                    yield ours, sock
                return
            if peer_kind == "lean":
                peer = await wrap_accepted_socket(sock)
            else:
                peer = await anyio.abc.SocketStream.from_socket(sock)
            try:
                yield ours, peer
            finally:
                await peer.aclose()
        finally:
            await ours.aclose()


async def read_exactly(
    stream: anyio.abc.ByteReceiveStream, size: int, chunk: int = 1 << 16
) -> bytes:
    received = bytearray()
    while len(received) < size:
        received += await stream.receive(min(chunk, size - len(received)))
    return bytes(received)


async def read_to_eof(stream: anyio.abc.ByteReceiveStream) -> bytes:
    received = bytearray()
    try:
        while True:
            received += await stream.receive()
    except anyio.EndOfStream:
        return bytes(received)


async def raw_read_exactly(sock: socket.socket, size: int) -> bytes:
    """Read from a raw non-blocking socket: the peer that reads only when told to.

    (anyio's asyncio stream keeps reading into memory until its first ``receive``, so it
    cannot stand for a peer that does not read.)
    """
    received = bytearray()
    while len(received) < size:
        await anyio.wait_readable(sock)
        try:
            chunk = sock.recv(min(1 << 20, size - len(received)))
        except BlockingIOError:
            continue
        assert chunk, "unexpected EOF"
        received += chunk
    return bytes(received)


def reset_on_close(sock: socket.socket) -> None:
    """SO_LINGER with a zero timeout: closing sends RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


# ---------------------------------------------------------------------------------------
# Which stream, on which backend


async def test_asyncio_gets_the_lean_stream(anyio_backend: str) -> None:
    with anyio.fail_after(5):
        async with connected("lean") as (ours, peer):
            if anyio_backend != "trio":  # asyncio, with or without uvloop
                loop = asyncio.get_running_loop()
                assert running_asyncio_loop() is loop
                assert clock() == loop.time
                assert isinstance(ours, AsyncioSocketStream)
                assert isinstance(peer, AsyncioSocketStream)
            else:
                assert running_asyncio_loop() is None
                assert clock() is anyio.current_time
                assert not isinstance(ours, AsyncioSocketStream)
                assert not isinstance(peer, AsyncioSocketStream)
                assert isinstance(ours, anyio.abc.SocketStream)
                assert isinstance(peer, anyio.abc.SocketStream)
            before = anyio.current_time()
            assert abs(clock()() - before) < 1.0  # the same clock anyio reads
            await ours.send(b"ping")
            assert await read_exactly(peer, 4) == b"ping"
            await peer.send(b"pong")
            assert await read_exactly(ours, 4) == b"pong"


async def test_extra_attributes(anyio_backend: str) -> None:
    with anyio.fail_after(5):
        async with connected("anyio") as (ours, peer):
            remote = ours.extra(SocketAttribute.remote_address)
            assert remote[0] == LOOPBACK
            assert ours.extra(SocketAttribute.remote_port) == remote[1]
            assert peer.extra(SocketAttribute.local_port) == remote[1]
            local_port = ours.extra(SocketAttribute.local_port)
            assert peer.extra(SocketAttribute.remote_port) == local_port
            assert ours.extra(SocketAttribute.local_address) == (LOOPBACK, local_port)
            assert ours.extra(SocketAttribute.family) == socket.AF_INET
            raw = ours.extra(SocketAttribute.raw_socket)
            # On asyncio this is the transport's TransportSocket, as with anyio's own stream.
            assert raw.fileno() >= 0
            assert raw.getsockname() == (LOOPBACK, local_port)
            assert raw.getpeername() == remote


async def test_connect_from_a_chosen_local_address(anyio_backend: str) -> None:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        wanted = probe.getsockname()[1]
    with anyio.fail_after(5):
        async with connected("anyio", local_host=LOOPBACK, local_port=wanted) as (ours, peer):
            assert ours.extra(SocketAttribute.local_port) == wanted
            assert peer.extra(SocketAttribute.remote_address) == (LOOPBACK, wanted)


def test_ip_addresses_connect_directly_names_are_resolved() -> None:
    """What takes the direct connect (an address: nothing to resolve) and what takes the
    resolver's way (a name; an IPv6 address with a scope, which the resolver handles)."""
    for address in ("127.0.0.1", "10.0.0.5", "::1", "::ffff:1.2.3.4", "2001:db8::7"):
        assert _is_ip_address(address), address
    for other in ("localhost", "pacs.example.org", "fe80::1%eth0", "127.1", "1.2.3.256", ""):
        assert not _is_ip_address(other), other


async def test_connect_to_a_closed_port_is_refused(anyio_backend: str) -> None:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port = probe.getsockname()[1]  # bound, not listening: the kernel refuses
        with anyio.fail_after(5), pytest.raises(OSError) as caught:
            await connect_tcp(LOOPBACK, port)
    # anyio's connect (trio) reports the refused attempt as the cause of its own OSError.
    error: BaseException | None = caught.value
    while error is not None and not isinstance(error, ConnectionRefusedError):
        error = error.__cause__
    assert error is not None


async def test_connect_timeout_bounds_a_connect_nobody_completes(anyio_backend: str) -> None:
    # A listener that never accepts, its queue full: the kernel drops further SYNs, so the
    # next connect waits for retransmissions until the timeout ends it.
    with socket.socket() as listener:
        listener.bind((LOOPBACK, 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(8):
                filler = socket.socket()
                filler.setblocking(False)
                fillers.append(filler)
                filler.connect_ex((LOOPBACK, port))
            with anyio.fail_after(5):
                try:
                    stream = await connect_tcp(LOOPBACK, port, timeout=0.3)
                except TimeoutError:
                    return
            await stream.aclose()
            pytest.skip("this kernel completed the connect despite the full listen queue")
        finally:
            for filler in fillers:
                filler.close()


# ---------------------------------------------------------------------------------------
# Data


SIZES = [1, 2, 3, 7, 100, 1000, 4096, 65535, 65536, 65537, 262143, 262144, 262145, 1 << 20]


@pytest.mark.parametrize("peer_kind", ["anyio", "lean"])
async def test_round_trip_in_chunks_of_many_sizes(anyio_backend: str, peer_kind: PeerKind) -> None:
    chunks = [pattern(size, seed) for seed, size in enumerate(SIZES)]
    expected = b"".join(chunks)
    with anyio.fail_after(10):
        async with connected(peer_kind) as (ours, peer):
            # Both directions at once: each side's sends wait on the other's reads.
            async def send_all(stream: anyio.abc.SocketStream) -> None:
                for chunk in chunks:
                    await stream.send(chunk)
                await stream.send(b"")  # an empty send is harmless

            got: dict[str, bytes] = {}

            async def read_all(name: str, stream: anyio.abc.SocketStream) -> None:
                got[name] = await read_exactly(stream, len(expected))

            async with anyio.create_task_group() as tg:
                tg.start_soon(send_all, ours)
                tg.start_soon(send_all, peer)
                tg.start_soon(read_all, "ours", ours)
                tg.start_soon(read_all, "peer", peer)
    assert got["ours"] == expected
    assert got["peer"] == expected


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    sizes=st.lists(
        st.one_of(st.integers(1, 2000), st.integers(2000, 300_000)), min_size=1, max_size=10
    ),
    reads=st.lists(st.integers(1, 100_000), min_size=1, max_size=10),
    ours_sends=st.booleans(),
    peer_kind=st.sampled_from(["anyio", "lean"]),
    seed=st.integers(0, 2**32),
)
async def test_random_chunkings_arrive_intact(
    anyio_backend: str,
    sizes: list[int],
    reads: list[int],
    ours_sends: bool,
    peer_kind: PeerKind,
    seed: int,
) -> None:
    data = pattern(sum(sizes), seed)
    received = bytearray()
    with anyio.fail_after(10):
        async with connected(peer_kind) as (ours, peer):
            sender, receiver = (ours, peer) if ours_sends else (peer, ours)

            async def send_all() -> None:
                position = 0
                for size in sizes:
                    await sender.send(data[position : position + size])
                    position += size
                await sender.send_eof()

            async with anyio.create_task_group() as tg:
                tg.start_soon(send_all)
                # One large read per cycle keeps the number of receives bounded (a cycle of
                # one-byte reads over a few MB would take seconds).
                cycle = [*reads, 1 << 16]
                index = 0
                while True:
                    max_bytes = cycle[index % len(cycle)]
                    index += 1
                    try:
                        chunk = await receiver.receive(max_bytes)
                    except anyio.EndOfStream:
                        break
                    assert 0 < len(chunk) <= max_bytes
                    received += chunk
    assert bytes(received) == data


@asyncio_only
async def test_receive_splits_a_large_chunk_without_losing_bytes(anyio_backend: str) -> None:
    data = pattern(200_000, 1)
    with anyio.fail_after(5):
        async with connected("anyio") as (ours, peer):
            assert isinstance(ours, AsyncioSocketStream)
            protocol = ours._protocol
            await peer.send(data)
            await peer.send_eof()
            while not protocol.eof:  # everything is buffered once the FIN is seen
                await read_event(protocol)
            assert protocol.buffered == len(data)
            received = bytearray()
            for max_bytes in [1, 7, 1000, 4093, 65536, 1 << 20] * 100:
                if len(received) == len(data):
                    break
                chunk = await ours.receive(max_bytes)
                assert 0 < len(chunk) <= max_bytes
                received += chunk
                assert protocol.buffered == len(data) - len(received)
            assert bytes(received) == data
            with pytest.raises(anyio.EndOfStream):
                await ours.receive()


async def read_event(protocol: Any) -> None:
    """Wait for the protocol's next wake-up of a reader (data, EOF or loss)."""
    waiter = asyncio.get_running_loop().create_future()
    protocol.read_waiter = waiter
    try:
        await waiter
    finally:
        protocol.read_waiter = None


async def test_receive_rejects_a_non_positive_size(anyio_backend: str) -> None:
    with anyio.fail_after(5):
        async with connected("anyio") as (ours, _):
            with pytest.raises(ValueError):
                await ours.receive(0)


# ---------------------------------------------------------------------------------------
# End of stream, reset, close


@pytest.mark.parametrize("peer_kind", ["anyio", "lean"])
async def test_eof_after_buffered_data(anyio_backend: str, peer_kind: PeerKind) -> None:
    with anyio.fail_after(5):
        async with connected(peer_kind) as (ours, peer):
            await peer.send(b"hello, ")
            await peer.send(b"world")
            await peer.send_eof()
            assert await read_to_eof(ours) == b"hello, world"
            with pytest.raises(anyio.EndOfStream):  # and again: EOF is sticky
                await ours.receive()
            # Half-close: the peer's EOF does not stop us from answering.
            await ours.send(b"still here")
            await ours.send_eof()
            assert await read_to_eof(peer) == b"still here"


async def test_eof_wakes_a_waiting_receive(anyio_backend: str) -> None:
    with anyio.fail_after(5):
        async with connected("anyio") as (ours, peer):
            async with anyio.create_task_group() as tg:
                outcome: list[object] = []

                async def reader(*, task_status: TaskStatus[None] = STARTED) -> None:
                    task_status.started()
                    with pytest.raises(anyio.EndOfStream):
                        await ours.receive()
                    outcome.append("eof")

                await tg.start(reader)
                await peer.send_eof()
            assert outcome == ["eof"]


@pytest.mark.parametrize("waiting", [False, True], ids=["reset-first", "reset-while-waiting"])
async def test_peer_reset_raises_instead_of_hanging(anyio_backend: str, waiting: bool) -> None:
    with anyio.fail_after(5):
        async with connected("raw") as (ours, peer):
            reset_on_close(peer)
            if waiting:
                async with anyio.create_task_group() as tg:

                    async def reader(*, task_status: TaskStatus[None] = STARTED) -> None:
                        task_status.started()
                        with pytest.raises((anyio.BrokenResourceError, anyio.EndOfStream)):
                            await ours.receive()

                    await tg.start(reader)
                    peer.close()
            else:
                peer.close()
                with pytest.raises((anyio.BrokenResourceError, anyio.EndOfStream)):
                    await ours.receive()
            # Sending soon fails too (the first write may still be taken by the kernel).
            with pytest.raises(anyio.BrokenResourceError):
                for _ in range(100):
                    await ours.send(b"x" * 1000)
                    await anyio.lowlevel.checkpoint()


async def test_peer_reset_while_a_send_waits(anyio_backend: str) -> None:
    with anyio.fail_after(5):
        async with connected("raw") as (ours, peer):
            reset_on_close(peer)
            async with anyio.create_task_group() as tg:

                async def sender(*, task_status: TaskStatus[None] = STARTED) -> None:
                    task_status.started()
                    with pytest.raises(anyio.BrokenResourceError):
                        await ours.send(pattern(BLOCKING_SIZE))

                await tg.start(sender)  # returns once the send waits for the kernel
                peer.close()


async def test_receive_and_send_after_aclose(anyio_backend: str) -> None:
    with anyio.fail_after(5):
        async with connected("anyio") as (ours, _):
            await ours.aclose()
            with pytest.raises(anyio.ClosedResourceError):
                await ours.receive()
            with pytest.raises(anyio.ClosedResourceError):
                await ours.send(b"x")
            await ours.aclose()  # closing twice is fine


@asyncio_only
async def test_receive_after_aclose_with_data_buffered(anyio_backend: str) -> None:
    with anyio.fail_after(5):
        async with connected("anyio") as (ours, peer):
            assert isinstance(ours, AsyncioSocketStream)
            await peer.send(b"buffered")
            while not ours._protocol.chunks:
                await read_event(ours._protocol)
            await ours.aclose()
            with pytest.raises(anyio.ClosedResourceError):
                await ours.receive()


async def test_aclose_wakes_a_waiting_receive(anyio_backend: str) -> None:
    with anyio.fail_after(5):
        async with connected("anyio") as (ours, _), anyio.create_task_group() as tg:

            async def reader(*, task_status: TaskStatus[None] = STARTED) -> None:
                task_status.started()
                with pytest.raises(anyio.ClosedResourceError):
                    await ours.receive()

            await tg.start(reader)
            await ours.aclose()


async def test_aclose_wakes_a_waiting_send(anyio_backend: str) -> None:
    with anyio.fail_after(5):
        async with connected("raw") as (ours, _), anyio.create_task_group() as tg:

            async def sender(*, task_status: TaskStatus[None] = STARTED) -> None:
                task_status.started()
                with pytest.raises(anyio.ClosedResourceError):
                    await ours.send(pattern(BLOCKING_SIZE))

            await tg.start(sender)
            await ours.aclose()


# ---------------------------------------------------------------------------------------
# Concurrency and cancellation


async def test_two_concurrent_receives_are_refused(anyio_backend: str) -> None:
    with anyio.fail_after(5):
        async with connected("anyio") as (ours, peer):
            got: list[bytes] = []
            async with anyio.create_task_group() as tg:

                async def reader(*, task_status: TaskStatus[None] = STARTED) -> None:
                    task_status.started()
                    got.append(await ours.receive())

                await tg.start(reader)
                with pytest.raises(anyio.BusyResourceError):
                    await ours.receive()
                await peer.send(b"first")
            assert got == [b"first"]
            # The refused receive left no trace: the stream still reads.
            await peer.send(b"second")
            assert await read_exactly(ours, 6) == b"second"


async def test_cancelled_receive_loses_nothing(anyio_backend: str) -> None:
    with anyio.fail_after(5):
        async with connected("anyio") as (ours, peer):
            with anyio.move_on_after(0.02) as scope:
                await ours.receive()
            assert scope.cancelled_caught
            await peer.send(b"after the cancel")
            assert await read_exactly(ours, 16) == b"after the cancel"


async def test_cancelling_receives_as_data_arrives_loses_nothing(anyio_backend: str) -> None:
    """Cancel each receive at a different point around the data's arrival: every byte sent
    comes out exactly once, in order."""
    sent = bytearray()
    received = bytearray()
    with anyio.fail_after(10):
        async with connected("anyio") as (ours, peer):
            for round_ in range(60):
                payload = pattern(1 + round_ * 97 % 5000, round_)
                sent += payload
                scope = anyio.CancelScope()

                async def reader(
                    scope: anyio.CancelScope = scope,
                    max_bytes: int = round_ % 7 * 1000 + 1,
                    *,
                    task_status: TaskStatus[None] = STARTED,
                ) -> None:
                    task_status.started()
                    with scope:
                        received.extend(await ours.receive(max_bytes))

                async with anyio.create_task_group() as tg:
                    await tg.start(reader)
                    await peer.send(payload)
                    for _ in range(round_ % 4):
                        await anyio.lowlevel.checkpoint()
                    scope.cancel()
            await peer.send_eof()
            received += await read_to_eof(ours)
    assert bytes(received) == bytes(sent)


async def set_event(event: anyio.Event) -> None:
    event.set()


def yield_bound(anyio_backend: str, lean_bound: int) -> int:
    """Checkpoints a busy task may take before a task it started has run.

    asyncio runs ready tasks first come first served, so one yield suffices. trio runs each
    batch in a random order (reversed half the time): with two ready tasks, the other one
    may be passed over at each yield, so allow 64 (a 2**-64 chance of a false alarm).
    """
    return lean_bound if anyio_backend != "trio" else 64


async def test_a_send_loop_lets_other_tasks_run(anyio_backend: str) -> None:
    """Sends the kernel takes at once do not wait, yet one in SENDS_PER_CHECKPOINT yields."""
    bound = yield_bound(anyio_backend, SENDS_PER_CHECKPOINT)
    total = 0
    with anyio.fail_after(5):
        async with connected("anyio") as (ours, peer):
            for _ in range(3):  # also after the counter has been reset by a yield
                other_ran = anyio.Event()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(set_event, other_ran)
                    sends = 0
                    while not other_ran.is_set():
                        assert sends < bound, "the sending task starved the loop"
                        await ours.send(b"x" * 100)
                        sends += 1
                    total += sends
            await ours.send_eof()
            assert await read_to_eof(peer) == b"x" * 100 * total


async def test_receiving_buffered_data_is_still_a_checkpoint(anyio_backend: str) -> None:
    bound = yield_bound(anyio_backend, 1)
    data = pattern(100, 6)
    with anyio.fail_after(5):
        async with connected("anyio") as (ours, peer):
            await peer.send(data)
            await peer.send_eof()
            received = bytearray(await read_exactly(ours, 1, chunk=1))  # the rest is buffered
            other_ran = anyio.Event()
            async with anyio.create_task_group() as tg:
                tg.start_soon(set_event, other_ran)
                receives = 0
                while not other_ran.is_set():
                    assert receives < bound, "the reading task starved the loop"
                    received += await ours.receive(1)
                    receives += 1
            # Under a cancelled scope a receive with data at hand still raises, keeping it.
            with anyio.CancelScope() as scope:
                scope.cancel()
                received += await ours.receive(1)
            assert scope.cancelled_caught
            received += await read_to_eof(ours)
            assert bytes(received) == data


# ---------------------------------------------------------------------------------------
# Flow control


@asyncio_only
async def test_read_flow_control_bounds_the_buffer(anyio_backend: str) -> None:
    total = 6 << 20
    data = pattern(total, 2)
    with anyio.fail_after(10):
        async with connected("anyio") as (ours, peer):
            assert isinstance(ours, AsyncioSocketStream)
            protocol = ours._protocol
            transport = ours._transport
            paused = anyio.Event()
            pause_reading = transport.pause_reading

            def pause_and_tell() -> None:
                pause_reading()
                paused.set()

            transport.pause_reading = pause_and_tell  # type: ignore[method-assign]

            async with anyio.create_task_group() as tg:
                tg.start_soon(peer.send, data)  # anyio's stream: waits while we do not read
                await paused.wait()
                assert protocol.read_paused
                held = protocol.buffered
                assert READ_HIGH_WATER < held <= READ_BOUND
                # Give the kernel time to deliver more, if the socket were still read.
                await anyio.sleep(0.05)
                assert protocol.buffered == held
                received = bytearray()
                resumed = False
                while len(received) < total:
                    received += await ours.receive(1 << 16)
                    assert protocol.buffered <= READ_BOUND
                    if protocol.buffered <= READ_HIGH_WATER // 4:
                        assert not protocol.read_paused
                        resumed = True
            assert resumed
            assert protocol.buffered == 0
            assert bytes(received) == data


class _SizedTransport:
    """What ``_Protocol`` uses of asyncio's selector transport, with its read size."""

    def __init__(self) -> None:
        self.max_size = 256 * 1024
        self.paused = False

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def pause_reading(self) -> None:
        self.paused = True


@asyncio_only
async def test_read_size_grows_for_bulk_and_shrinks_after(anyio_backend: str) -> None:
    # A read that fills the transport's buffer (a data set arriving) makes the next reads
    # 1 MiB; one smaller than 256 KiB (a command, a response) brings it back.
    transport = _SizedTransport()
    protocol = _Protocol()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    assert transport.max_size == READ_SIZE_SMALL
    protocol.data_received(bytes(READ_SIZE_SMALL))
    assert transport.max_size == READ_SIZE_LARGE
    protocol.data_received(bytes(600_000))  # a 0.5 MB instance in one read: still bulk
    assert transport.max_size == READ_SIZE_LARGE
    protocol.data_received(b"x" * 200)
    assert transport.max_size == READ_SIZE_SMALL
    assert protocol.buffered == READ_SIZE_SMALL + 600_000 + 200


@asyncio_only
async def test_reading_stays_paused_above_a_quarter(anyio_backend: str) -> None:
    with anyio.fail_after(10):
        async with connected("anyio") as (ours, peer):
            assert isinstance(ours, AsyncioSocketStream)
            protocol = ours._protocol
            data = pattern(3 << 20, 3)
            async with anyio.create_task_group() as tg:
                tg.start_soon(peer.send, data)
                while not protocol.read_paused:
                    await read_event(protocol)
                received = bytearray()
                while protocol.buffered > READ_HIGH_WATER // 4 + (1 << 12):
                    received += await ours.receive(1 << 12)
                    if protocol.buffered > READ_HIGH_WATER // 4:
                        assert protocol.read_paused
                received += await read_exactly(ours, len(data) - len(received))
            assert bytes(received) == data


async def test_send_blocks_until_the_peer_reads(anyio_backend: str) -> None:
    data = pattern(BLOCKING_SIZE, 4)
    with anyio.fail_after(10):
        async with connected("raw") as (ours, peer):
            sent = anyio.Event()

            async def sender() -> None:
                await ours.send(data)
                sent.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(sender)
                with anyio.move_on_after(0.2):
                    await sent.wait()
                assert not sent.is_set(), "send returned before the kernel took the data"
                if isinstance(ours, AsyncioSocketStream):
                    assert ours._protocol.write_paused
                received = await raw_read_exactly(peer, len(data))
                await sent.wait()
            assert received == data
            if isinstance(ours, AsyncioSocketStream):
                assert not ours._protocol.write_paused
            # And the stream is usable afterwards.
            await ours.send(b"more")
            assert await raw_read_exactly(peer, 4) == b"more"


async def test_a_blocked_send_can_be_cancelled(anyio_backend: str) -> None:
    with anyio.fail_after(5):
        async with connected("raw") as (ours, _):
            with anyio.move_on_after(0.1) as scope:
                await ours.send(pattern(BLOCKING_SIZE, 5))
            assert scope.cancelled_caught


@asyncio_only
async def test_concurrent_sends_are_refused_or_both_complete(anyio_backend: str) -> None:
    half = BLOCKING_SIZE // 2
    with anyio.fail_after(10):
        async with connected("raw") as (ours, peer):
            outcomes: dict[str, str] = {}
            done = {name: anyio.Event() for name in "ab"}

            async def sender(name: str, *, task_status: TaskStatus[None] = STARTED) -> None:
                task_status.started()
                try:
                    await ours.send(name.encode() * half)
                    outcomes[name] = "sent"
                except anyio.BusyResourceError:
                    outcomes[name] = "busy"
                done[name].set()

            async with anyio.create_task_group() as tg:
                await tg.start(sender, "a")  # waits: the peer does not read
                await tg.start(sender, "b")
                expected = b"a" * half + (b"" if outcomes.get("b") == "busy" else b"b" * half)
                received = await raw_read_exactly(peer, len(expected))
                with anyio.move_on_after(0.3):
                    await done["a"].wait()
                    await done["b"].wait()
                tg.cancel_scope.cancel()  # free whichever send still hangs
            assert received == expected
            assert outcomes.get("a") == "sent", f"the first send never returned: {outcomes}"
            assert outcomes.get("b") in ("sent", "busy"), outcomes


# ---------------------------------------------------------------------------------------
# receive_before (the lean stream's deadline read)


@asyncio_only
async def test_receive_before_returns_none_at_the_deadline(anyio_backend: str) -> None:
    with anyio.fail_after(5):
        async with connected("anyio") as (ours, peer):
            assert isinstance(ours, AsyncioSocketStream)
            now = clock()
            deadline = now() + 0.05
            assert await ours.receive_before(1024, deadline) is None
            assert now() >= deadline - 0.01
            # A deadline already passed: None at once.
            assert await ours.receive_before(1024, now() - 1) is None
            # Nothing was left behind: the stream reads normally afterwards.
            assert ours._protocol.read_waiter is None
            await peer.send(b"late")
            assert await ours.receive_before(1024, now() + 5) == b"late"


@asyncio_only
async def test_receive_before_returns_data_arriving_in_time(anyio_backend: str) -> None:
    with anyio.fail_after(5):
        async with connected("anyio") as (ours, peer):
            assert isinstance(ours, AsyncioSocketStream)
            now = clock()
            got: list[bytes | None] = []
            async with anyio.create_task_group() as tg:

                async def reader(*, task_status: TaskStatus[None] = STARTED) -> None:
                    task_status.started()
                    got.append(await ours.receive_before(3, now() + 10))

                await tg.start(reader)
                started = now()
                await peer.send(b"abcdef")
            assert got == [b"abc"]
            assert now() - started < 5  # woken by the data, not by the deadline
            # Buffered data is returned even when the deadline has passed.
            assert await ours.receive_before(1024, now() - 1) == b"def"


@asyncio_only
async def test_receive_before_one_timer_for_many_waits(anyio_backend: str) -> None:
    """The timer armed for one wait is left for the next: each wait still ends at its own
    deadline, later or earlier than the timer's, and closing the stream disarms it."""
    with anyio.fail_after(5):
        async with connected("anyio") as (ours, peer):
            assert isinstance(ours, AsyncioSocketStream)
            now = clock()
            # Answered long before its deadline: the timer stays armed for that deadline.
            await peer.send(b"a")
            early = now() + 0.05
            assert await ours.receive_before(1024, early) == b"a"
            await peer.send(b"b")
            assert await ours.receive_before(1024, early) == b"b"
            # A later deadline: the timer fires at the first one and is armed again.
            later = now() + 0.15
            assert await ours.receive_before(1024, later) is None
            assert now() >= later - 0.01
            # An earlier deadline than the armed timer's: a timer of its own.
            far = now() + 60
            await peer.send(b"c")
            assert await ours.receive_before(1024, far) == b"c"
            timer = ours._read_timer
            assert timer is not None and timer.when() == far
            soon = now() + 0.05
            assert await ours.receive_before(1024, soon) is None
            assert soon - 0.01 <= now() < far
            await peer.send(b"d")
            assert await ours.receive_before(1024, now() + 5) == b"d"
            await ours.aclose()
            assert ours._read_timer is None


@asyncio_only
async def test_receive_before_at_eof_and_after_close(anyio_backend: str) -> None:
    with anyio.fail_after(5):
        async with connected("anyio") as (ours, peer):
            assert isinstance(ours, AsyncioSocketStream)
            now = clock()
            await peer.send(b"last")
            await peer.send_eof()
            assert await ours.receive_before(1024, now() + 5) == b"last"
            with pytest.raises(anyio.EndOfStream):
                await ours.receive_before(1024, now() + 5)
            await ours.aclose()
            with pytest.raises(anyio.ClosedResourceError):
                await ours.receive_before(1024, now() + 5)


@asyncio_only
async def test_receive_before_woken_by_eof(anyio_backend: str) -> None:
    # The wait ends with no data: the end of the stream raises, as receive() would.
    with anyio.fail_after(5):
        async with connected("anyio") as (ours, peer):
            assert isinstance(ours, AsyncioSocketStream)
            now = clock()
            outcomes: list[str] = []
            async with anyio.create_task_group() as tg:

                async def reader(*, task_status: TaskStatus[None] = STARTED) -> None:
                    task_status.started()
                    try:
                        await ours.receive_before(1024, now() + 10)
                    except anyio.EndOfStream:
                        outcomes.append("eof")

                await tg.start(reader)
                await peer.send_eof()
            assert outcomes == ["eof"]
            assert ours._protocol.read_waiter is None


@asyncio_only
async def test_receive_before_can_be_cancelled(anyio_backend: str) -> None:
    with anyio.fail_after(5):
        async with connected("anyio") as (ours, peer):
            assert isinstance(ours, AsyncioSocketStream)
            now = clock()
            with anyio.move_on_after(0.02) as scope:
                await ours.receive_before(1024, now() + 10)
            assert scope.cancelled_caught
            assert ours._protocol.read_waiter is None
            await peer.send(b"kept")
            assert await read_exactly(ours, 4) == b"kept"


@asyncio_only
async def test_receive_before_while_a_receive_waits(anyio_backend: str) -> None:
    with anyio.fail_after(5):
        async with connected("anyio") as (ours, peer):
            assert isinstance(ours, AsyncioSocketStream)
            now = clock()
            received = anyio.Event()
            got: list[bytes] = []
            async with anyio.create_task_group() as tg:

                async def reader(*, task_status: TaskStatus[None] = STARTED) -> None:
                    task_status.started()
                    got.append(await ours.receive())
                    received.set()

                async def deadline_reader(*, task_status: TaskStatus[None] = STARTED) -> None:
                    task_status.started()
                    # Correct behaviour: BusyResourceError (at once), as for receive().
                    with pytest.raises(anyio.BusyResourceError):
                        await ours.receive_before(1024, now() + 10)

                await tg.start(reader)
                await tg.start(deadline_reader)
                await peer.send(b"data")
                with anyio.move_on_after(0.3):
                    await received.wait()
                tg.cancel_scope.cancel()
            assert got == [b"data"], "the waiting receive never woke up"


@asyncio_only
async def test_concurrent_receive_before_deadlines(anyio_backend: str) -> None:
    with anyio.fail_after(5):
        async with connected("anyio") as (ours, _):
            assert isinstance(ours, AsyncioSocketStream)
            now = clock()
            outcomes: dict[str, object] = {}
            returned_at: dict[str, float] = {}
            deadlines = {"early": now() + 0.05, "late": now() + 0.2}
            done = {name: anyio.Event() for name in deadlines}
            async with anyio.create_task_group() as tg:

                async def call(name: str, *, task_status: TaskStatus[None] = STARTED) -> None:
                    task_status.started()
                    try:
                        outcomes[name] = await ours.receive_before(1024, deadlines[name])
                    except anyio.BusyResourceError:
                        outcomes[name] = "busy"
                    returned_at[name] = now()
                    done[name].set()

                await tg.start(call, "early")
                await tg.start(call, "late")
                with anyio.move_on_after(0.4):
                    await done["early"].wait()
                    await done["late"].wait()
                tg.cancel_scope.cancel()
            # Acceptable: the second call refused, or both returned None at their deadlines.
            assert "early" in outcomes, f"the first call never returned: {outcomes}"
            assert outcomes["early"] is None
            assert outcomes.get("late", "missing") in ("busy", None), outcomes
            if outcomes.get("late", "missing") is None:
                assert returned_at["late"] >= deadlines["late"] - 0.01, "ended before its deadline"


# ---------------------------------------------------------------------------------------
# send_soon (the lean stream's coalesced small writes)


def record_writes(stream: anyio.abc.SocketStream) -> list[bytes]:
    """Every ``transport.write`` of the lean stream from now on, as the bytes it was given."""
    assert isinstance(stream, AsyncioSocketStream)
    writes: list[bytes] = []
    write = stream._transport.write

    def recording(data: Any) -> None:
        writes.append(bytes(data))
        write(data)

    stream._transport.write = recording  # type: ignore[method-assign]
    return writes


def nothing_else_ready() -> bool:
    """Whether the loop has no other callback ready in this turn (send_soon then writes)."""
    return not asyncio.get_running_loop()._ready  # type: ignore[attr-defined]


def make_another_callback_ready() -> None:
    """Something else is ready in this turn: send_soon queues instead of writing."""
    asyncio.get_running_loop().call_soon(lambda: None)


async def raw_read_to_eof(sock: socket.socket) -> bytes:
    received = bytearray()
    while True:
        await anyio.wait_readable(sock)
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            continue
        if not chunk:
            return bytes(received)
        received += chunk


@asyncio_only
async def test_send_soon_from_many_tasks_of_one_turn_is_one_write(anyio_backend: str) -> None:
    """Tasks woken together each queue a small write: all leave in one ``transport.write``,
    in the order the tasks ran, once the turn's other callbacks have run."""
    count = 3 * SENDS_PER_CHECKPOINT + 1  # some of them also yield: the turn still holds
    chunks = [pattern(50 + number, number) for number in range(count)]
    expected = b"".join(chunks)
    with anyio.fail_after(5):
        async with connected("anyio") as (ours, peer):
            assert isinstance(ours, AsyncioSocketStream)
            writes = record_writes(ours)
            taken: list[bool] = []

            async def sender(number: int) -> None:
                taken.append(await ours.send_soon(chunks[number]))

            async with anyio.create_task_group() as tg:
                for number in range(count):
                    tg.start_soon(sender, number)
            assert taken == [True] * count
            assert writes == [expected]
            assert not ours._soon and ours._soon_size == 0
            assert await read_exactly(peer, len(expected)) == expected


@asyncio_only
async def test_send_soon_alone_writes_at_once(anyio_backend: str) -> None:
    """Nothing else ready: the bytes go to the transport before ``send_soon`` returns, with
    no extra turn of the loop."""
    with anyio.fail_after(5):
        async with connected("anyio") as (ours, peer):
            assert isinstance(ours, AsyncioSocketStream)
            writes = record_writes(ours)
            while not nothing_else_ready():
                await anyio.lowlevel.checkpoint()
            assert await ours.send_soon(b"alone")
            assert writes == [b"alone"]
            assert not ours._soon and not ours._soon_scheduled
            assert nothing_else_ready()  # no write scheduled for later either
            assert await ours.send_soon(memoryview(b"-view"))  # a memoryview is fine
            assert writes == [b"alone", b"-view"]
            assert await read_exactly(peer, 10) == b"alone-view"


@asyncio_only
async def test_send_soon_queues_while_other_callbacks_are_ready(anyio_backend: str) -> None:
    with anyio.fail_after(5):
        async with connected("anyio") as (ours, peer):
            assert isinstance(ours, AsyncioSocketStream)
            writes = record_writes(ours)
            make_another_callback_ready()
            assert await ours.send_soon(b"one,")
            assert await ours.send_soon(b"two,")
            assert writes == []
            assert ours._soon_size == 8 and ours._soon_scheduled
            await anyio.lowlevel.checkpoint()  # the turn ends: the queue is written
            assert writes == [b"one,two,"]
            assert not ours._soon and not ours._soon_scheduled
            # The next turn starts afresh: alone again, so written at once.
            while not nothing_else_ready():
                await anyio.lowlevel.checkpoint()
            assert await ours.send_soon(b"three")
            assert writes == [b"one,two,", b"three"]
            assert await read_exactly(peer, 13) == b"one,two,three"


@asyncio_only
async def test_send_soon_refuses_while_the_transport_holds_unsent_bytes(
    anyio_backend: str,
) -> None:
    """A send waiting for the kernel, then the bytes it left in the transport when it was
    cancelled: either way ``send_soon`` takes nothing (False), queues nothing and is no
    checkpoint. Once the peer has read everything it takes bytes again."""
    data = pattern(BLOCKING_SIZE, 7)
    with anyio.fail_after(10):
        async with connected("raw") as (ours, peer):
            assert isinstance(ours, AsyncioSocketStream)
            protocol = ours._protocol
            scope = anyio.CancelScope()

            async def sender() -> None:
                with scope:
                    await ours.send(data)

            async with anyio.create_task_group() as tg:
                tg.start_soon(sender)
                await anyio.wait_all_tasks_blocked()
                assert ours._sending and protocol.write_paused
                writes = record_writes(ours)
                with anyio.CancelScope() as probe:
                    probe.cancel()
                    for _ in range(2 * SENDS_PER_CHECKPOINT):
                        assert not await ours.send_soon(b"refused")
                assert not probe.cancelled_caught
                assert not ours._soon and ours._soon_size == 0
                scope.cancel()
            assert scope.cancelled_caught
            assert not ours._sending
            assert protocol.write_paused  # the rest of data is still in the transport
            with anyio.CancelScope() as probe:
                probe.cancel()
                make_another_callback_ready()  # would queue, if it took anything
                for _ in range(2 * SENDS_PER_CHECKPOINT):
                    assert not await ours.send_soon(b"refused")
            assert not probe.cancelled_caught
            assert not ours._soon and not ours._soon_scheduled
            assert writes == []
            assert await raw_read_exactly(peer, len(data)) == data
            assert not protocol.write_paused
            assert await ours.send_soon(b"taken")
            await ours.send_eof()
            assert await raw_read_to_eof(peer) == b"taken"


@asyncio_only
async def test_send_soon_refuses_beyond_the_coalesce_limit(anyio_backend: str) -> None:
    first = pattern(COALESCE_LIMIT - 10, 8)
    with anyio.fail_after(5):
        async with connected("raw") as (ours, peer):
            assert isinstance(ours, AsyncioSocketStream)
            writes = record_writes(ours)
            make_another_callback_ready()
            assert await ours.send_soon(first)
            assert await ours.send_soon(b"0123456789")  # exactly at the limit: taken
            assert ours._soon_size == COALESCE_LIMIT
            with anyio.CancelScope() as probe:
                probe.cancel()
                assert not await ours.send_soon(b"x")  # one byte over: refused
            assert not probe.cancelled_caught
            assert ours._soon_size == COALESCE_LIMIT
            assert writes == []
            await anyio.lowlevel.checkpoint()
            assert writes == [first + b"0123456789"]
            # Alone, a single write over the limit is refused too: it needs flow control.
            while not nothing_else_ready():
                await anyio.lowlevel.checkpoint()
            assert not await ours.send_soon(pattern(COALESCE_LIMIT + 1, 9))
            assert len(writes) == 1 and not ours._soon
            await ours.send(b"tail")
            await ours.send_eof()
            assert await raw_read_to_eof(peer) == first + b"0123456789tail"


@asyncio_only
async def test_send_soon_then_send_keeps_the_order(anyio_backend: str) -> None:
    with anyio.fail_after(5):
        async with connected("anyio") as (ours, peer):
            assert isinstance(ours, AsyncioSocketStream)
            writes = record_writes(ours)
            make_another_callback_ready()
            assert await ours.send_soon(b"first,")
            assert await ours.send_soon(b"second,")
            await ours.send(b"third")  # writes the queue first
            assert writes == [b"first,second,", b"third"]
            assert not ours._soon
            await anyio.lowlevel.checkpoint()  # the scheduled write finds nothing left
            assert writes == [b"first,second,", b"third"]
            # And send_eof writes what is queued before the FIN.
            make_another_callback_ready()
            assert await ours.send_soon(b",last")
            await ours.send_eof()
            assert writes[-1] == b",last"
            assert await read_to_eof(peer) == b"first,second,third,last"


@asyncio_only
async def test_send_soon_then_a_large_send_keeps_the_order(anyio_backend: str) -> None:
    """The queue goes out before a send that must wait for the kernel."""
    big = pattern(BLOCKING_SIZE // 4, 10)
    with anyio.fail_after(10):
        async with connected("raw") as (ours, peer):
            assert isinstance(ours, AsyncioSocketStream)
            make_another_callback_ready()
            assert await ours.send_soon(b"small")
            async with anyio.create_task_group() as tg:
                tg.start_soon(ours.send, big)
                received = await raw_read_exactly(peer, 5 + len(big))
            assert received == b"small" + big


@asyncio_only
async def test_aclose_right_after_send_soon_still_sends_the_queue(anyio_backend: str) -> None:
    data = pattern(3000, 11)
    with anyio.fail_after(5):
        async with connected("anyio") as (ours, peer):
            assert isinstance(ours, AsyncioSocketStream)
            make_another_callback_ready()
            assert await ours.send_soon(data[:1000])
            assert await ours.send_soon(data[1000:])
            assert ours._soon
            await ours.aclose()
            assert not ours._soon
            assert await read_to_eof(peer) == data
            with pytest.raises(anyio.ClosedResourceError):
                await ours.send_soon(b"x")


@asyncio_only
async def test_send_soon_after_aclose_raises_closed(anyio_backend: str) -> None:
    with anyio.fail_after(5):
        async with connected("anyio") as (ours, _):
            assert isinstance(ours, AsyncioSocketStream)
            await ours.aclose()
            for _ in range(2):
                with pytest.raises(anyio.ClosedResourceError):
                    await ours.send_soon(b"x")
            assert not ours._soon


@asyncio_only
async def test_send_soon_after_a_peer_reset_raises_broken(anyio_backend: str) -> None:
    with anyio.fail_after(5):
        async with connected("raw") as (ours, peer):
            assert isinstance(ours, AsyncioSocketStream)
            reset_on_close(peer)
            peer.close()
            # The first writes may still be taken by the kernel, queued or not.
            with pytest.raises(anyio.BrokenResourceError):
                for number in range(100):
                    if number % 2:
                        make_another_callback_ready()
                    await ours.send_soon(b"x" * 1000)
                    await anyio.lowlevel.checkpoint()
            with pytest.raises(anyio.BrokenResourceError):
                await ours.send_soon(b"x")


@asyncio_only
@pytest.mark.parametrize("queued", [False, True], ids=["alone", "queued"])
async def test_a_send_soon_loop_lets_other_tasks_run(anyio_backend: str, queued: bool) -> None:
    """Like send: one call in SENDS_PER_CHECKPOINT yields, written at once or queued."""
    total = 0
    with anyio.fail_after(5):
        async with connected("anyio") as (ours, peer):
            assert isinstance(ours, AsyncioSocketStream)
            for _ in range(3):  # also after the counter has been reset by a yield
                other_ran = anyio.Event()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(set_event, other_ran)
                    calls = 0
                    while not other_ran.is_set():
                        assert calls < SENDS_PER_CHECKPOINT, "send_soon starved the loop"
                        if queued:
                            make_another_callback_ready()
                        assert await ours.send_soon(b"x" * 100)
                        calls += 1
                    total += calls
            await ours.send_eof()
            assert await read_to_eof(peer) == b"x" * 100 * total
