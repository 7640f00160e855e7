"""A C-FIND peer that costs almost no CPU: ``python -m benchmarks.light_peer [options]``.

The fan-out benchmark measures a client talking to many remote archives. Remote archives run
on machines of their own; on this machine the peers share the client's cores, and a full
DICOM server per peer (dicomio's or pynetdicom's) spends a few milliseconds of CPU per
association, which ends up in the client's wall time. This peer is a stand-in for a remote
archive: a bare asyncio protocol that answers the Upper Layer and C-FIND with bytes built
once, so that what is measured is the client.

It is correct for what it is asked in the benchmark and nothing else: it accepts every
presentation context in its first transfer syntax (Implicit or Explicit VR Little Endian
only), answers a C-FIND-RQ with ``--matches`` pending responses after ``--delay`` seconds and
then Success, answers C-ECHO, answers A-RELEASE-RQ, and closes on anything else. The
A-ASSOCIATE-AC comes from dicomio's sans-IO codec; the responses are dicomio's command
encoder's bytes with the message ID patched in.

Like ``benchmarks.peers``, it listens on ``--servers`` loopback ports and prints one JSON line
``{"ports": [...], "pid": N}`` once it accepts connections; it serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import struct

from pydicom.uid import UID

from benchmarks.data import find_identifiers
from dicomio.dataset import encode_dataset
from dicomio.dimse.commands import (
    CEchoRQ,
    CEchoRSP,
    CFindRQ,
    CFindRSP,
    decode_command,
    encode_command,
)
from dicomio.pdu import (
    AssociateAC,
    AssociateRQ,
    ImplementationClassUID,
    MaximumLength,
    PresentationContextAC,
    PresentationContextResult,
    decode,
    encode,
    single_pdv_header,
)

IMPLICIT = UID("1.2.840.10008.1.2")
EXPLICIT = UID("1.2.840.10008.1.2.1")
MAX_PDU = 262_144
RELEASE_RP = bytes.fromhex("06000000000400000000")
ABORT = bytes.fromhex("07000000000400000000")
_PDU_HEADER = struct.Struct(">BxI")
_PDV_HEADER = struct.Struct(">IBB")


class _Answers:
    """Response bytes for one abstract syntax and transfer syntax, built once."""

    def __init__(self, matches: int) -> None:
        self.identifiers = {
            ts: [encode_dataset(ds, ts) for ds in find_identifiers(matches)]
            for ts in (IMPLICIT, EXPLICIT)
        }
        self._cache: dict[tuple[int, UID, str, int], bytes] = {}

    def find(self, context_id: int, syntax: UID, sop_class: str, message_id: int) -> bytes:
        key = (context_id, syntax, sop_class, message_id)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        parts: list[bytes] = []
        pending = encode_command(
            CFindRSP(
                message_id_being_responded_to=message_id,
                status=0xFF00,
                affected_sop_class_uid=sop_class,
                has_dataset=True,
            )
        )
        for identifier in self.identifiers[syntax]:
            parts += [
                single_pdv_header(context_id, len(pending), is_command=True, is_last=True),
                pending,
                single_pdv_header(context_id, len(identifier), is_command=False, is_last=True),
                identifier,
            ]
        final = encode_command(
            CFindRSP(
                message_id_being_responded_to=message_id,
                status=0,
                affected_sop_class_uid=sop_class,
            )
        )
        parts += [single_pdv_header(context_id, len(final), is_command=True, is_last=True), final]
        answer = b"".join(parts)
        if len(self._cache) < 10_000:
            self._cache[key] = answer
        return answer


class LightPeer(asyncio.Protocol):
    def __init__(self, answers: _Answers, delay: float, ae_title: str) -> None:
        self.answers = answers
        self.delay = delay
        self.ae_title = ae_title
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.syntaxes: dict[int, UID] = {}
        self.command = bytearray()
        self.request: CFindRQ | CEchoRQ | None = None
        self.request_context = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 6:
            pdu_type, length = _PDU_HEADER.unpack_from(self.buffer)
            if length > 1 << 20:
                return self._abort()
            if len(self.buffer) < 6 + length:
                return
            pdu = bytes(self.buffer[: 6 + length])
            del self.buffer[: 6 + length]
            if pdu_type == 0x01:
                self._associate(pdu)
            elif pdu_type == 0x04:
                self._pdata(memoryview(pdu)[6:])
            elif pdu_type == 0x05:
                assert self.transport is not None
                self.transport.write(RELEASE_RP)
            else:
                return self._close()

    def _associate(self, data: bytes) -> None:
        rq = decode(data)
        assert isinstance(rq, AssociateRQ)
        contexts = []
        for cx in rq.presentation_contexts:
            syntax = next((ts for ts in cx.transfer_syntaxes if ts in (IMPLICIT, EXPLICIT)), None)
            if syntax is None:
                contexts.append(
                    PresentationContextAC(
                        context_id=cx.context_id,
                        result=PresentationContextResult.TRANSFER_SYNTAXES_NOT_SUPPORTED,
                        transfer_syntax=None,
                    )
                )
                continue
            self.syntaxes[cx.context_id] = syntax
            contexts.append(
                PresentationContextAC(
                    context_id=cx.context_id,
                    result=PresentationContextResult.ACCEPTANCE,
                    transfer_syntax=syntax,
                )
            )
        ac = AssociateAC(
            called_ae_title=rq.called_ae_title,
            calling_ae_title=rq.calling_ae_title,
            presentation_contexts=contexts,
            user_information=[
                MaximumLength(maximum_length=MAX_PDU),
                ImplementationClassUID(implementation_class_uid="1.2.826.0.1.3680043.9.9999.42"),
            ],
        )
        assert self.transport is not None
        self.transport.write(encode(ac))

    def _pdata(self, view: memoryview) -> None:
        position = 0
        while position < len(view):
            size, context_id, control = _PDV_HEADER.unpack_from(view, position)
            value = view[position + 6 : position + 4 + size]
            position += 4 + size
            if control & 1:
                self.command += value
                if control & 2:
                    request = decode_command(bytes(self.command))
                    self.command.clear()
                    if not isinstance(request, (CFindRQ, CEchoRQ)):
                        return self._abort()
                    self.request, self.request_context = request, context_id
                    if not request.has_dataset:
                        self._answer()
            elif control & 2 and self.request is not None:
                self._answer()  # the identifier's last fragment: its content is not used

    def _answer(self) -> None:
        request, context_id = self.request, self.request_context
        self.request = None
        assert self.transport is not None and request is not None
        if isinstance(request, CEchoRQ):
            rsp = encode_command(
                CEchoRSP(
                    message_id_being_responded_to=request.message_id,
                    status=0,
                    affected_sop_class_uid=request.affected_sop_class_uid,
                )
            )
            header = single_pdv_header(context_id, len(rsp), is_command=True, is_last=True)
            self.transport.write(header + rsp)
            return
        answer = self.answers.find(
            context_id,
            self.syntaxes[context_id],
            request.affected_sop_class_uid,
            request.message_id,
        )
        if self.delay:
            asyncio.get_running_loop().call_later(self.delay, self._send, answer)
        else:
            self._send(answer)

    def _send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.write(ABORT)
        self._close()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    answers = _Answers(args.matches)
    servers = [
        await loop.create_server(
            lambda: LightPeer(answers, args.delay, args.ae_title), "127.0.0.1", 0, backlog=1024
        )
        for _ in range(args.servers)
    ]
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ports = [server.sockets[0].getsockname()[1] for server in servers]
    print(json.dumps({"ports": ports, "pid": os.getpid()}), flush=True)
    await stop.wait()
    for server in servers:
        server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=1, help="listening ports in this process")
    parser.add_argument("--matches", type=int, default=10, help="C-FIND matches per query")
    parser.add_argument("--delay", type=float, default=0.05, help="seconds before answering")
    parser.add_argument("--ae-title", default="BENCHSCP")
    asyncio.run(serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
