"""A scripted, misbehaving DICOM acceptor on raw anyio sockets, for failure tests.

Each test gives a script (an async function of a ``PeerConnection``) that plays the
acceptor's side PDU by PDU: accept or reject the association, answer, stay silent, send
garbage, abort or close. What the requestor sent is recorded so that the test can check,
for example, that an A-ABORT went out. PDUs are built with the ``dicomio.pdu`` codec, or
by hand where the point is a specific byte sequence.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc

from dicomio.dimse import MessageAssembler, MessageReceived, encode_command, fragment
from dicomio.pdu import (
    PDU,
    Abort,
    AssociateAC,
    AssociateRQ,
    ImplementationClassUID,
    MaximumLength,
    PDataTF,
    PDUReader,
    PresentationContextAC,
    ReleaseRP,
    ReleaseRQ,
    encode,
)

LOOPBACK = "127.0.0.1"
#: The maximum PDU length the fake acceptor advertises: small, so that a large data set is
#: split into many P-DATA-TF PDUs.
FAKE_MAX_PDU = 16_384
FAKE_IMPLEMENTATION_UID = "1.2.826.0.1.3680043.8.498.1"


def associate_rj(result: int, source: int, reason: int) -> bytes:
    """An A-ASSOCIATE-RJ PDU built by hand (PS3.8 9.3.4, Table 9-21)."""
    return bytes([0x03, 0x00]) + struct.pack(">I", 4) + bytes([0x00, result, source, reason])


def abort_pdu(source: int, reason: int) -> bytes:
    """An A-ABORT PDU built by hand (PS3.8 9.3.8, Table 9-26)."""
    return bytes([0x07, 0x00]) + struct.pack(">I", 4) + bytes([0x00, 0x00, source, reason])


class PeerConnection:
    """One accepted connection, seen from the fake acceptor."""

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self.stream = stream
        self._reader = PDUReader(0)
        self._assembler = MessageAssembler()
        self.received: list[PDU] = []
        self.eof = False
        self.rq: AssociateRQ | None = None
        #: The presentation context of the last message read; responses go back on it.
        self.context_id = 1

    async def read_pdu(self, timeout: float = 5.0) -> PDU | None:
        """The next PDU from the requestor, or None at EOF."""
        with anyio.fail_after(timeout):
            while True:
                pdu = self._reader.next_pdu()
                if pdu is not None:
                    self.received.append(pdu)
                    return pdu
                if self.eof:
                    return None
                try:
                    data = await self.stream.receive(65536)
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    self.eof = True
                    continue
                self._reader.feed(data)

    async def read_message(self, timeout: float = 5.0) -> tuple[Any, bytes | None]:
        """The next whole DIMSE message (command, data set bytes) from the requestor."""
        with anyio.fail_after(timeout):
            while True:
                pdu = await self.read_pdu(timeout)
                if pdu is None:
                    raise EOFError("the requestor closed the connection")
                if not isinstance(pdu, PDataTF):
                    raise AssertionError(f"expected P-DATA-TF, got {pdu!r}")
                for item in self._assembler.receive(pdu):
                    if isinstance(item, MessageReceived):
                        self.context_id = item.context_id
                        data = None if item.dataset is None else bytes(item.dataset)
                        return item.command, data

    async def drain(self, timeout: float = 5.0) -> list[PDU]:
        """Read until the requestor closes the connection; the PDUs that came meanwhile.

        An A-RELEASE-RQ is answered with an A-RELEASE-RP, as any acceptor would.
        """
        seen: list[PDU] = []
        with anyio.move_on_after(timeout):
            while (pdu := await self.read_pdu(timeout)) is not None:
                seen.append(pdu)
                if isinstance(pdu, ReleaseRQ):
                    await self.send(encode(ReleaseRP()))
        return seen

    async def send(self, data: bytes) -> None:
        await self.stream.send(data)

    async def send_message(
        self, command: Any, dataset: bytes | None = None, *, context_id: int | None = None
    ) -> None:
        """Send one DIMSE message, by default on the context of the last message read."""
        cid = self.context_id if context_id is None else context_id
        for pdata in fragment(cid, encode_command(command), dataset, FAKE_MAX_PDU):
            await self.send(encode(pdata))

    async def accept(self) -> AssociateRQ:
        """Read the A-ASSOCIATE-RQ and accept every context with its first transfer syntax."""
        rq = await self.read_pdu()
        assert isinstance(rq, AssociateRQ), rq
        self.rq = rq
        ac = AssociateAC(
            called_ae_title=rq.called_ae_title,
            calling_ae_title=rq.calling_ae_title,
            presentation_contexts=[
                PresentationContextAC(
                    context_id=cx.context_id, result=0, transfer_syntax=cx.transfer_syntaxes[0]
                )
                for cx in rq.presentation_contexts
            ],
            user_information=[
                MaximumLength(maximum_length=FAKE_MAX_PDU),
                ImplementationClassUID(implementation_class_uid=FAKE_IMPLEMENTATION_UID),
            ],
        )
        await self.send(encode(ac))
        return rq

    def aborts(self) -> list[Abort]:
        return [pdu for pdu in self.received if isinstance(pdu, Abort)]


Script = Callable[[PeerConnection], Awaitable[None]]


class FakeAcceptor:
    """A listening socket whose connections each run ``script``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connections: list[PeerConnection] = []
        self.errors: list[BaseException] = []
        #: Set when a script has finished (returned or failed).
        self.done = anyio.Event()


@asynccontextmanager
async def fake_acceptor(script: Script) -> AsyncIterator[FakeAcceptor]:
    """Listen on a free loopback port; every connection runs ``script``; closed on exit."""
    listener = await anyio.create_tcp_listener(local_host=LOOPBACK, local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    peer = FakeAcceptor(port)

    async def handle(stream: anyio.abc.SocketStream) -> None:
        conn = PeerConnection(stream)
        peer.connections.append(conn)
        try:
            async with stream:
                await script(conn)
        except Exception as exc:  # reported to the test, never swallowed
            peer.errors.append(exc)
        finally:
            peer.done.set()

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        try:
            yield peer
        finally:
            tg.cancel_scope.cancel()
