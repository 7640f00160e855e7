"""Incremental framing of a byte stream into PDUs (PS3.8 9.3.1).

The transport feeds whatever chunk it read; ``PDUReader`` finds PDU boundaries from the
6-byte headers and decodes each complete PDU. This is the only place the stream is framed.

Every header is checked before its body is buffered: an unknown PDU type, a P-DATA-TF
longer than the maximum length we advertised (PS3.8 Annex D.1), or an association PDU
longer than a fixed cap is refused on its first 6 bytes. Feed one transport read at a time
and drain ``next_pdu()`` after each, so that at most one read is buffered beyond a header.

Received bytes are kept as the immutable chunks they arrived in, never merged into one
growing buffer. A PDU that lies inside one chunk is decoded in place (its PDV data are views
into the chunk); a PDU that spans chunks is joined once, exactly as long as it is. Each byte
is therefore copied at most once, which matters because transports hand over reads of a
bounded size (dicomio's asyncio stream: 256 KiB, 1 MiB while data comes in bulk) that large
P-DATA-TF PDUs often straddle.

The hot path is a P-DATA-TF holding one PDV, which is how dicomio, pynetdicom and DCMTK send
every fragment. When its headers lie inside the first chunk, they are read with one
``unpack_from`` and checked exactly as ``decode`` would check them; then, if the PDU lies
inside the chunk, the value is built directly, without framing it first; if it straddles
chunks, only its PDV data are joined (a ``bytes`` the DIMSE layer can keep as it is), or,
until all of it has arrived, the answer is None at once. Anything else takes the general
path, which applies the same checks.

``next_pdu_or_run`` goes one step further for the bulk of a data set: consecutive one-PDV
P-DATA-TF PDUs inside the first chunk that carry data set fragments, none flagged last, on one
presentation context, come back as one ``DataRun`` holding views of their fragments. Each of
its PDUs passes the checks of the fast path above; the run stops before the first PDU that
does not belong in it, which the next call returns (or refuses) exactly as ``next_pdu`` would.
Full-size fragments all have the same 12 header bytes, so a PDU whose header is byte for byte
the one of a PDU just accepted is accepted with one comparison (it passes the same checks,
since they look at nothing else but whether it lies inside the chunk).
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Iterator
from typing import Literal, NoReturn, overload

from dicomio.errors import AbortReason, LocalProtocolError, RemoteProtocolError
from dicomio.pdu.codec import (
    _CONTROL_FLAGS,
    _PDU_HEADER,
    _check_header_length,
    _new_tuple,
    decode,
)
from dicomio.pdu.items import PresentationDataValue
from dicomio.pdu.pdus import PDU, DataRun, PDataTF

__all__ = ["PDUReader"]

#: Largest A-ASSOCIATE-RQ/AC body accepted. A request proposing all 128 possible contexts
#: with a dozen 64-character transfer syntaxes each is about 110 KiB, and each user identity
#: or extended negotiation field is bounded by a 2-byte length (64 KiB); 1 MiB leaves room for
#: several large SAML/JWT assertions while keeping what an unauthenticated peer can make us
#: buffer before the association exists small.
MAX_ASSOCIATE_LENGTH = 1 << 20

# PS3.8 9.3.5 and 9.3.5.1: the PDU header and the first PDV item header, read as one:
# PDU type, reserved, PDU length, PDV item length, context ID, message control header.
_PDATA_HEADERS = struct.Struct(">BxLLBB")
_PDATA_HEADERS_LENGTH = 12
_unpack_pdata_headers = _PDATA_HEADERS.unpack_from


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
        # The same limit as one comparison: a PDU length field cannot exceed 2**32 - 1.
        self._pdata_limit = max_pdu_length or 0xFFFFFFFF
        # Bytes not yet framed: views of immutable chunks, in arrival order; the first
        # ``_offset`` bytes of the first chunk are consumed; ``_available`` bytes are not.
        self._pieces: deque[memoryview] = deque()
        self._offset = 0
        self._available = 0
        # How many more bytes the first buffered PDU needs before it can be whole, as last
        # found by the parser, less what was fed since (0 or below: it may be whole now).
        # The bytes of a large PDU come in many reads; until then each is only appended.
        self._wanted = 0
        self._eof = False
        self._error: RemoteProtocolError | None = None

    @property
    def buffered(self) -> int:
        """How many bytes were fed and not yet returned as PDUs (part of the next one)."""
        return self._available

    @property
    def wants_more(self) -> bool:
        """Whether the bytes fed since ``next_pdu`` (or ``next_pdu_or_run``) last returned
        None are too few to complete the PDU it stopped at: calling it again would return
        None again, and nothing else (``next_pdata_batch``) would return a PDU either."""
        return self._wanted > 0

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes received from the peer. Does not parse; call ``next_pdu()``."""
        if self._error is not None:
            self._check_alive()
        if self._eof:
            raise LocalProtocolError("feed() after feed_eof()")
        if not data:
            return
        if type(data) is not bytes:
            # A bytearray or memoryview may be reused by the caller, so it is copied.
            data = bytes(data)
        self._pieces.append(memoryview(data))
        self._available += len(data)
        self._wanted -= len(data)

    def next_pdu(self) -> PDU | None:
        """Return the next complete PDU, or None if more bytes are needed."""
        return self._next(runs=False)

    def next_pdu_or_run(self) -> PDU | DataRun | None:
        """Like ``next_pdu``, but a run of data set fragments may come as one ``DataRun``.

        Whatever is returned stands for the same PDUs, in the same order, with the same
        errors, as calling ``next_pdu`` instead: ``DataRun.pdus()`` gives them.
        """
        return self._next(runs=True)

    def next_pdata_batch(self, *, runs: bool = False) -> list[PDataTF]:
        """The one-PDV P-DATA-TF PDUs that follow one another whole in the buffer's first
        chunk, each as ``next_pdu`` would return it, up to the first that is anything else.

        The answers of a C-FIND, a command and an identifier each, come many to a read: one
        call for all of them rather than one per PDU. With ``runs``, it stops before a data
        set fragment that is not the last (``next_pdu_or_run`` makes a ``DataRun`` of it).
        Whatever it stops before is left to ``next_pdu`` or ``next_pdu_or_run``, errors
        included: an empty list says only that the first PDU is not of this kind.
        """
        batch: list[PDataTF] = []
        pieces = self._pieces
        if not pieces:
            return batch
        first = pieces[0]
        start = offset = self._offset
        end = len(first)
        limit = self._pdata_limit
        append = batch.append
        # The checks of _next's fast path, PDU after PDU.
        while end - offset >= 12:
            pdu_type, length, pdv_length, context_id, control = _unpack_pdata_headers(
                first, offset
            )
            stop = offset + 6 + length
            if not (
                pdu_type == 0x04
                and pdv_length == length - 4
                and pdv_length >= 2
                and context_id & 1
                and length <= limit
                and stop <= end
                and (control or not runs)
            ):
                break
            is_command, is_last = _CONTROL_FLAGS[control]
            pdv = _new_tuple(
                PresentationDataValue, (context_id, is_command, is_last, first[offset + 12 : stop])
            )
            append(_new_tuple(PDataTF, ((pdv,),)))
            offset = stop
        if offset != start:
            self._available -= offset - start
            if offset == end:
                pieces.popleft()
                self._offset = 0
            else:
                self._offset = offset
        return batch

    @overload
    def _next(self, *, runs: Literal[False]) -> PDU | None: ...

    @overload
    def _next(self, *, runs: Literal[True]) -> PDU | DataRun | None: ...

    def _next(self, *, runs: bool) -> PDU | DataRun | None:
        pieces = self._pieces
        if pieces:  # never after an error: _die() empties it
            # Fast path: a one-PDV P-DATA-TF whose headers lie in the first chunk. The
            # conditions are exactly what decode() would accept for it (and imply what
            # _check_header accepts); anything else goes the long way.
            first = pieces[0]
            offset = self._offset
            end = len(first)
            if end - offset >= 12:
                pdu_type, length, pdv_length, context_id, control = _unpack_pdata_headers(
                    first, offset
                )
                if (
                    pdu_type == 0x04
                    and pdv_length == length - 4
                    and pdv_length >= 2
                    and context_id & 1
                    and length <= self._pdata_limit
                ):
                    stop = offset + 6 + length
                    if stop - offset > self._available:
                        # Straddles chunks, and the rest has not arrived.
                        self._wanted = stop - offset - self._available
                        return None
                    if runs and not control:
                        # A data set fragment that is not the last: the start of a run.
                        return self._data_run(context_id)
                    if stop <= end:
                        # Inside the chunk: its data is a view of it.
                        self._available -= stop - offset
                        if stop == end:
                            pieces.popleft()
                            self._offset = 0
                        else:
                            self._offset = stop
                        is_command, is_last = _CONTROL_FLAGS[control]
                        data = first[offset + 12 : stop]
                        pdv = _new_tuple(
                            PresentationDataValue, (context_id, is_command, is_last, data)
                        )
                        return _new_tuple(PDataTF, ((pdv,),))
                    # Straddles chunks, all here: its data is joined once.
                    self._skip(_PDATA_HEADERS_LENGTH)
                    return _pdata(context_id, control, self._take(pdv_length - 2))
        return self._next_pdu_general()

    def _data_run(self, context_id: int) -> DataRun:
        """Take the run of data set fragments on ``context_id`` that starts the buffer.

        The caller has checked the first PDU as the fast path of ``_next`` does, and that all
        of it is here. The run goes on across chunks: a PDU that straddles two of them, if
        all of it is here, comes as a view of each (``DataRun.continued``), not joined.
        """
        pieces = self._pieces
        limit = self._pdata_limit
        fragments: list[bytes | memoryview] = []
        continued: list[int] = []
        append = fragments.append
        while pieces:
            chunk = pieces[0]
            # Every chunk is a view of a whole bytes object (feed): its slices compare
            # faster than the view's. (An annotation, not typing.cast: no call at run time.)
            raw: bytes = chunk.obj  # type: ignore[assignment]
            position = offset = self._offset
            end = len(chunk)
            straddles = False
            while end - position >= 12:
                pdu_type, length, pdv_length, pdu_context, control = _unpack_pdata_headers(
                    chunk, position
                )
                # The checks of the fast path, and: a data set fragment that is not the
                # last (message control header 00H), on the context of the run.
                if not (
                    pdu_type == 0x04
                    and control == 0
                    and pdu_context == context_id
                    and pdv_length == length - 4
                    and pdv_length >= 2
                    and length <= limit
                ):
                    break
                stop = position + 6 + length
                if stop > end:
                    straddles = True
                    break
                append(chunk[position + 12 : stop])
                # The PDUs that follow with the same 12 header bytes pass the same checks.
                header = raw[position : position + 12]
                step = stop - position
                position = stop
                while end - position >= step and raw[position : position + 12] == header:
                    append(chunk[position + 12 : position + step])
                    position += step
            self._available -= position - offset
            if position == end:
                pieces.popleft()
                self._offset = 0
                continue
            self._offset = position
            if not straddles or self._available < 6 + length:
                break
            # A fragment of the run that straddles chunks, all of it buffered: its pieces.
            self._skip(_PDATA_HEADERS_LENGTH)
            views = self._take_views(pdv_length - 2)
            start = len(fragments)
            fragments.extend(views)
            continued.extend(range(start + 1, start + len(views)))
        return _new_tuple(DataRun, (context_id, tuple(fragments), tuple(continued)))

    def _next_pdu_general(self) -> PDU | None:
        self._check_alive()
        if self._available < 6:
            self._wanted = 6 - self._available
            return None
        pdu_type, length = _PDU_HEADER.unpack_from(self._peek(6))
        self._check_header(pdu_type, length)
        need = 6 + length
        if need > self._available:
            self._wanted = need - self._available
            return None
        if pdu_type == 0x04 and len(self._pieces[0]) - self._offset < need:
            # A P-DATA-TF that straddles chunks: if it holds one well-formed PDV (checked as
            # decode() would), join just its data, once.
            _, _, pdv_length, context_id, control = _PDATA_HEADERS.unpack_from(
                self._peek(_PDATA_HEADERS_LENGTH)
            )
            if pdv_length == length - 4 and pdv_length >= 2 and context_id & 1:
                self._skip(_PDATA_HEADERS_LENGTH)
                return _pdata(context_id, control, self._take(pdv_length - 2))
        frame = self._take(need)
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
        position = 0
        while self._available - position >= 6:
            pdu_type, length = _PDU_HEADER.unpack_from(self._peek(6, position))
            self._check_header(pdu_type, length)
            position += 6 + length
        if position != self._available:
            self._fail(
                RemoteProtocolError(
                    "connection closed in the middle of a PDU",
                    abort_reason=AbortReason.INVALID_PDU_PARAMETER_VALUE,
                )
            )

    def _peek(self, size: int, position: int = 0) -> bytes | memoryview:
        """``size`` bytes at ``position`` of the unframed bytes, for reading a header."""
        position += self._offset
        out = bytearray()
        for piece in self._pieces:
            if position >= len(piece):
                position -= len(piece)
                continue
            if not out and position + size <= len(piece):
                return piece[position : position + size]  # the usual case: no copy
            # The header straddles chunks (rare): gather it.
            out += piece[position : position + size - len(out)]
            position = 0
            if len(out) == size:
                return bytes(out)
        raise AssertionError("peek beyond the buffered bytes")

    def _take_views(self, size: int) -> list[memoryview]:
        """Remove the first ``size`` bytes: views of the chunks holding them (one empty
        view for none)."""
        if not size:
            return [memoryview(b"")]
        pieces = self._pieces
        self._available -= size
        views: list[memoryview] = []
        while size:
            piece = pieces[0]
            start = self._offset
            have = len(piece) - start
            if have <= size:
                views.append(piece[start:] if start else piece)
                pieces.popleft()
                self._offset = 0
                size -= have
            else:
                views.append(piece[start : start + size])
                self._offset = start + size
                size = 0
        return views

    def _take(self, size: int) -> bytes | memoryview:
        """Remove the first ``size`` bytes: a view if one chunk holds them, else one join."""
        if not size:
            return b""
        views = self._take_views(size)
        return views[0] if len(views) == 1 else b"".join(views)

    def _skip(self, size: int) -> None:
        """Remove the first ``size`` bytes without looking at them."""
        pieces = self._pieces
        self._available -= size
        size += self._offset
        while size >= len(pieces[0]):
            size -= len(pieces.popleft())
            if not size:
                break
        self._offset = size

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
        self._pieces.clear()
        self._offset = 0
        self._available = 0
        self._wanted = 0

    def _check_alive(self) -> None:
        if self._error is not None:
            raise RemoteProtocolError(
                f"PDU reader already failed: {self._error}",
                abort_source=self._error.abort_source,
                abort_reason=self._error.abort_reason,
            )


def _pdata(context_id: int, control: int, data: bytes | memoryview) -> PDataTF:
    """A one-PDV P-DATA-TF from fields the caller has checked as ``decode`` does."""
    is_command, is_last = _CONTROL_FLAGS[control]
    return _new_tuple(
        PDataTF,
        ((_new_tuple(PresentationDataValue, (context_id, is_command, is_last, data)),),),
    )
