"""Incremental framing of a byte stream into PDUs (PS3.8 9.3.1).

The transport feeds whatever chunk it read; ``PDUReader`` finds PDU boundaries from the
6-byte headers and decodes each complete PDU. This is the only place the stream is framed.

Every header is checked before its body is buffered: an unknown PDU type, a P-DATA-TF
longer than the maximum length we advertised (PS3.8 Annex D.1), or an association PDU
longer than a fixed cap is refused on its first 6 bytes. Feed one transport read at a time
and drain ``next_pdu()`` after each, so that at most one read is buffered beyond a header.

Buffering is linear in the bytes fed: a chunk that arrives as ``bytes`` with nothing
buffered is parsed in place (its PDV data are views into it, never copied); otherwise bytes
accumulate in one ``bytearray`` that is compacted only when the consumed prefix dominates.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NoReturn

from dicomio.errors import AbortReason, LocalProtocolError, RemoteProtocolError
from dicomio.pdu.codec import _PDU_HEADER, _check_header_length, decode
from dicomio.pdu.pdus import PDU

__all__ = ["PDUReader"]

#: Largest A-ASSOCIATE-RQ/AC body accepted. A request proposing all 128 possible contexts
#: with a dozen 64-character transfer syntaxes each is about 110 KiB, and each user identity
#: or extended negotiation field is bounded by a 2-byte length (64 KiB); 1 MiB leaves room for
#: several large SAML/JWT assertions while keeping what an unauthenticated peer can make us
#: buffer before the association exists small.
MAX_ASSOCIATE_LENGTH = 1 << 20

# Below this many consumed bytes the buffer is not worth compacting.
_COMPACT_THRESHOLD = 1 << 16


class PDUReader:
    """Frame and decode PDUs from a byte stream fed in arbitrary chunks (PS3.8 9.3).

    ``max_pdu_length`` is the maximum P-DATA-TF body length we advertised in our maximum
    length sub-item (PS3.8 D.1); 0 means no limit. After a ``RemoteProtocolError`` the reader
    is dead and every later call raises one again.
    """

    def __init__(self, max_pdu_length: int) -> None:
        if max_pdu_length < 0:
            raise ValueError("max_pdu_length must be 0 (no limit) or positive")
        self._max_pdu_length = max_pdu_length
        # Bytes not yet framed live either in _chunk (an immutable chunk parsed in place, only
        # while _buffer is empty) or in _buffer; _start is how much of either is consumed.
        self._chunk: bytes | None = None
        self._buffer = bytearray()
        self._start = 0
        self._eof = False
        self._error: RemoteProtocolError | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes received from the peer. Does not parse; call ``next_pdu()``."""
        self._check_alive()
        if self._eof:
            raise LocalProtocolError("feed() after feed_eof()")
        if not data:
            return
        if self._chunk is not None:
            # Keep only the unparsed tail; the parsed PDUs hold views of the old chunk.
            self._buffer += memoryview(self._chunk)[self._start :]
            self._chunk = None
            self._start = 0
        if type(data) is bytes and not self._buffer:
            self._chunk = data
            self._start = 0
        else:
            # A bytearray or memoryview may be reused by the caller, so it is copied.
            self._buffer += data

    def next_pdu(self) -> PDU | None:
        """Return the next complete PDU, or None if more bytes are needed."""
        self._check_alive()
        source: bytes | bytearray = self._chunk if self._chunk is not None else self._buffer
        start = self._start
        available = len(source) - start
        if available < 6:
            return None
        pdu_type, length = _PDU_HEADER.unpack_from(source, start)
        self._check_header(pdu_type, length)
        stop = start + 6 + length
        if stop > len(source):
            return None
        if self._chunk is not None:
            frame: bytes | memoryview = memoryview(self._chunk)[start:stop]
            if stop == len(self._chunk):
                self._chunk = None
                self._start = 0
            else:
                self._start = stop
        else:
            # Copied out, because views into a bytearray would pin it against resizing and
            # see later writes.
            with memoryview(self._buffer) as view:
                frame = bytes(view[start:stop])
            self._consume_buffer(stop)
        try:
            return decode(frame)
        except RemoteProtocolError as exc:
            self._die(exc)
            raise

    def __iter__(self) -> Iterator[PDU]:
        """Yield every PDU that is complete in what was fed so far."""
        while (pdu := self.next_pdu()) is not None:
            yield pdu

    def feed_eof(self) -> None:
        """Note that the peer closed the stream; raise if it ended inside a PDU.

        PDUs already complete stay available from ``next_pdu()``.
        """
        self._check_alive()
        self._eof = True
        source: bytes | bytearray = self._chunk if self._chunk is not None else self._buffer
        position = self._start
        end = len(source)
        while end - position >= 6:
            pdu_type, length = _PDU_HEADER.unpack_from(source, position)
            self._check_header(pdu_type, length)
            position += 6 + length
        if position != end:
            self._fail(
                RemoteProtocolError(
                    "connection closed in the middle of a PDU",
                    abort_reason=AbortReason.INVALID_PDU_PARAMETER_VALUE,
                )
            )

    def _consume_buffer(self, stop: int) -> None:
        if stop == len(self._buffer):
            self._buffer.clear()
            self._start = 0
        elif stop > _COMPACT_THRESHOLD and stop > len(self._buffer) // 2:
            # Amortized linear: each byte is moved at most once per halving of the buffer.
            del self._buffer[:stop]
            self._start = 0
        else:
            self._start = stop

    def _check_header(self, pdu_type: int, length: int) -> None:
        """Refuse a PDU from its header alone, before its body is buffered."""
        try:
            _check_header_length(pdu_type, length)
        except RemoteProtocolError as exc:
            self._fail(exc)
        if pdu_type == 0x04:
            if self._max_pdu_length and length > self._max_pdu_length:
                self._fail(
                    RemoteProtocolError(
                        f"P-DATA-TF of {length} bytes exceeds our maximum length "
                        f"{self._max_pdu_length}",
                        abort_reason=AbortReason.INVALID_PDU_PARAMETER_VALUE,
                    )
                )
        elif pdu_type in (0x01, 0x02) and length > MAX_ASSOCIATE_LENGTH:
            self._fail(
                RemoteProtocolError(
                    f"A-ASSOCIATE PDU of {length} bytes exceeds the cap {MAX_ASSOCIATE_LENGTH}",
                    abort_reason=AbortReason.INVALID_PDU_PARAMETER_VALUE,
                )
            )

    def _fail(self, error: RemoteProtocolError) -> NoReturn:
        self._die(error)
        raise error

    def _die(self, error: RemoteProtocolError) -> None:
        self._error = error
        self._chunk = None
        self._buffer = bytearray()
        self._start = 0

    def _check_alive(self) -> None:
        if self._error is not None:
            raise RemoteProtocolError(
                f"PDU reader already failed: {self._error}",
                abort_source=self._error.abort_source,
                abort_reason=self._error.abort_reason,
            )
