"""The least a Python asyncio C-STORE SCP can do: ``python -m benchmarks.floor_scp``.

A measuring stick for issue #18's line 3 (SCP CPU per GB at most storescp's), not a server
to use: it frames PDUs, finds the message ID and the two UIDs of each C-STORE-RQ, skips the
data set and answers Success from a hand-made command set, all in the protocol's
``data_received``. It takes one PDV per PDU, as dicomio's client and storescu send them. It accepts every presentation context with its first transfer syntax,
answers an A-RELEASE-RQ and closes on anything else. What it keeps of dicomio's way of
receiving: the same adaptive read size (``_transport.READ_SIZE_SMALL``/``LARGE``) and the
forced ACK after a read it does not answer (``_transport.ack_now``), so that it meets the
peer the way dicomio does.

What it does not do is the point of the comparison: no Upper Layer state machine, no
events, no command decoding into objects, no reader task, no handler. On this project's
2-core machine, 0.5 MB instances from dicomio's client (s3 pairs, 3x1000, 2026-12-08): about
0.095-0.13 ms of server CPU per instance, of which 0.03-0.05 ms user time, against
storescp's 0.13-0.17 and dicomio's 0.19-0.27 in the same minutes. So the line is within
reach of Python; dicomio's cost above this floor is the work per read and per message that
the floor leaves out (docs/performance.md).

Prints ``{"ports": [port], "pid": pid}`` once listening on 127.0.0.1 (as
``benchmarks.peers`` does) and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import signal
import socket
import struct
from typing import cast

from dicomio import _transport
from dicomio.pdu import codec
from dicomio.pdu.items import ImplementationClassUID, MaximumLength, PresentationContextAC
from dicomio.pdu.pdus import AssociateAC, AssociateRQ, ReleaseRQ

_PDU_HEADER = struct.Struct(">BxI")
_ELEMENT_HEADER = struct.Struct("<HHI")
_RELEASE_RP = bytes.fromhex("06 00 00000004 00000000")
MAX_PDU = 262144


def _element(element: int, value: bytes) -> bytes:
    return _ELEMENT_HEADER.pack(0x0000, element, len(value)) + value


def _store_rsp(context_id: int, sop_class: bytes, message_id: bytes, instance: bytes) -> bytes:
    """The P-DATA-TF of a C-STORE-RSP, Success (PS3.7 9.3.1.2), implicit VR little endian."""
    body = b"".join(
        (
            _element(0x0002, sop_class),
            _element(0x0100, b"\x01\x80"),  # C-STORE-RSP
            _element(0x0120, message_id),
            _element(0x0800, b"\x01\x01"),  # no data set
            _element(0x0900, b"\x00\x00"),  # Success
            _element(0x1000, instance),
        )
    )
    command = _element(0x0000, len(body).to_bytes(4, "little")) + body
    pdv_header = struct.pack(">IBB", len(command) + 2, context_id, 0x03)
    return _PDU_HEADER.pack(0x04, len(command) + 6) + pdv_header + command


def _command_values(command: bytes) -> dict[int, bytes]:
    """Element number -> value, for a command set (group 0000H, implicit VR)."""
    values = {}
    position = 0
    while position + 8 <= len(command):
        _, element, length = _ELEMENT_HEADER.unpack_from(command, position)
        values[element] = command[position + 8 : position + 8 + length]
        position += 8 + length
    return values


class FloorProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.sock: socket.socket | None = None
        self.pending = b""  # the start of a PDU (or of its headers) cut by a read
        self.skip = 0  # data set bytes of the current PDU still to come
        self.skip_is_last = False  # whether that PDU ends the data set
        self.command = b""
        self.answer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.sock = getattr(transport.get_extra_info("socket"), "_sock", None)
        transport.max_size = _transport.READ_SIZE_SMALL  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        size = len(data)
        if size >= transport.max_size:  # type: ignore[attr-defined]
            transport.max_size = _transport.READ_SIZE_LARGE  # type: ignore[attr-defined]
        elif size < _transport.READ_SIZE_SMALL:
            transport.max_size = _transport.READ_SIZE_SMALL  # type: ignore[attr-defined]
        if self.pending:
            data = self.pending + data
            self.pending = b""
        view = memoryview(data)
        end = len(view)
        position = 0
        answered = False
        while position < end:
            if self.skip:
                taken = min(self.skip, end - position)
                self.skip -= taken
                position += taken
                if not self.skip and self.skip_is_last:
                    transport.write(self.answer)
                    answered = True
                continue
            if end - position < 6 or (view[position] == 0x04 and end - position < 12):
                self.pending = bytes(view[position:])
                break
            pdu_type, length = _PDU_HEADER.unpack_from(view, position)
            if pdu_type != 0x04:
                if end - position < 6 + length:
                    self.pending = bytes(view[position:])
                    break
                answered = self._other_pdu(codec.decode(view[position : position + 6 + length]))
                position += 6 + length
                continue
            context_id, control = view[position + 10], view[position + 11]
            body = length - 6
            if control & 0x01:  # a command fragment: gathered, it is short
                if end - position < 6 + length:
                    self.pending = bytes(view[position:])
                    break
                self.command += view[position + 12 : position + 6 + length]
                position += 6 + length
                if control & 0x02:
                    values = _command_values(self.command)
                    self.command = b""
                    self.answer = _store_rsp(
                        context_id, values[0x0002], values[0x0110], values[0x1000]
                    )
            else:  # a data set fragment: skipped, however many reads it spans
                position += 12
                self.skip = body
                self.skip_is_last = bool(control & 0x02)
        if not answered and self.sock is not None:
            _transport.ack_now(self.sock)

    def _other_pdu(self, pdu: object) -> bool:
        transport = self.transport
        assert transport is not None
        if isinstance(pdu, AssociateRQ):
            accepted = tuple(
                PresentationContextAC(
                    context_id=context.context_id,
                    result=0,
                    transfer_syntax=context.transfer_syntaxes[0],
                )
                for context in pdu.presentation_contexts
            )
            ac = AssociateAC(
                called_ae_title=pdu.called_ae_title,
                calling_ae_title=pdu.calling_ae_title,
                presentation_contexts=accepted,
                user_information=(
                    MaximumLength(maximum_length=MAX_PDU),
                    ImplementationClassUID(implementation_class_uid="1.2.826.0.1.3680043.10.1"),
                ),
            )
            transport.write(codec.encode(ac))
        elif isinstance(pdu, ReleaseRQ):
            transport.write(_RELEASE_RP)
            transport.close()
        else:
            transport.close()
        return True


def _no_heap_churn() -> None:
    """Keep glibc from mapping and unmapping each 1 MiB read buffer (the floor frees each
    read at once; the default dynamic thresholds then cost two system calls and ~75 page
    faults per read, more than the floor's Python). dicomio's server does not hit this."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 8 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 32 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


async def main() -> None:
    _no_heap_churn()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FloorProtocol, "127.0.0.1", 0)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    port = server.sockets[0].getsockname()[1]
    print(json.dumps({"ports": [port], "pid": os.getpid()}), flush=True)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
