"""The service provider half of an association: requests in, handlers run, responses out.

Each request runs in its own task (on the acceptor's reader loop) or inline (while a
requestor waits, e.g. the C-STORE sub-operations of its C-GET), wrapped in a cancel scope
keyed by message ID: a C-CANCEL-RQ (PS3.7 9.3.2.3) cancels that scope, and the provider
answers with the Cancel status and the sub-operation counts so far. A handler that raises
gives the peer a failure status (0xC000 for DIMSE-C, 0x0110 for DIMSE-N, PS3.7 Annex C)
and the association goes on.

Every request is answered. One whose command fields break PS3.5 (a UID over 64 characters
or not a UID, an AE title over 16) is refused before any handler or data set sink sees it
(``_refusal``): its data set is read and dropped, nothing is stored. A response that cannot
be encoded is replaced by a failure response that can, or, where none can be formed (a
Pending response in the middle of an operation), by an A-ABORT (``_respond``).
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import logging
import os
import tempfile
import weakref
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import anyio
import anyio.abc
import anyio.lowlevel
from pydicom.dataset import Dataset
from pydicom.uid import UID, generate_uid

from dicomio import _transport, errors
from dicomio._locks import Gate
from dicomio.dataset import encode_dataset, part10_header
from dicomio.dimse import (
    CEchoRQ,
    CEchoRSP,
    CFindRQ,
    CFindRSP,
    CGetRQ,
    CGetRSP,
    CMoveRQ,
    CMoveRSP,
    CStoreRQ,
    CStoreRSP,
    JoinedLater,
    MessageAssembler,
    NActionRQ,
    NActionRSP,
    NCreateRQ,
    NCreateRSP,
    NDeleteRQ,
    NDeleteRSP,
    NEventReportRQ,
    NEventReportRSP,
    NGetRQ,
    NGetRSP,
    NSetRQ,
    NSetRSP,
    encode_command,
)
from dicomio.dimse.commands import InvalidField, invalid_field, response_class_for
from dicomio.dimse.fragment import (
    Templates,
    instance_uid_template,
    message_id_template,
    received_template,
)
from dicomio.events import (
    EVT_C_ECHO,
    EVT_C_FIND,
    EVT_C_GET,
    EVT_C_MOVE,
    EVT_C_STORE,
    EVT_N_ACTION,
    EVT_N_CREATE,
    EVT_N_DELETE,
    EVT_N_EVENT_REPORT,
    EVT_N_GET,
    EVT_N_SET,
    AnyEventType,
    Event,
)
from dicomio.status import CANCEL, PENDING_CODES, SUCCESS

if TYPE_CHECKING:
    import socket

    from dicomio._receive import IncomingRequests
    from dicomio.ae import AE
    from dicomio.association import Association
    from dicomio.config import Timeouts
    from dicomio.presentation import PresentationContext
    from dicomio.ul import ULConnection

__all__ = ["ServiceProviderMixin", "stream_to_disk"]

#: "Unable to process" (PS3.4 C.4.1.1.4, C.4.2.1.5, C.4.3.1.4; B.2.3 "Cannot understand").
C_FAILURE = 0xC000
#: "Processing failure" (PS3.7 C.4.2).
N_FAILURE = 0x0110
#: "Refused: Move Destination unknown" (PS3.4 C.4.2.1.5).
MOVE_DESTINATION_UNKNOWN = 0xA801
#: "Invalid SOP Instance": the SOP Instance UID violates the UID construction rules
#: (PS3.7 Annex C.5; listed for C-STORE in PS3.7 9.1.1.1, and for the DIMSE-N services).
INVALID_SOP_INSTANCE = 0x0117
#: "Refused: SOP Class not supported" (PS3.7 Annex C.5): what a string that is no UID names.
SOP_CLASS_NOT_SUPPORTED = 0x0122
#: "Refused: Out of Resources" (PS3.4 B.2.3, C-STORE).
OUT_OF_RESOURCES = 0xA700
#: How far, in encoded bytes, a C-FIND handler may run ahead of the network: the pending
#: responses waiting here go out in one write (a few hundred identifiers), and memory stays
#: bounded however many matches the handler yields.
FIND_AHEAD_BYTES = 65_536

_N_SERVICES: dict[type, tuple[AnyEventType, type]] = {
    NEventReportRQ: (EVT_N_EVENT_REPORT, NEventReportRSP),
    NGetRQ: (EVT_N_GET, NGetRSP),
    NSetRQ: (EVT_N_SET, NSetRSP),
    NActionRQ: (EVT_N_ACTION, NActionRSP),
    NCreateRQ: (EVT_N_CREATE, NCreateRSP),
    NDeleteRQ: (EVT_N_DELETE, NDeleteRSP),
}

#: Requests the reader answers itself when the peer sends one at a time (see serve()).
_INLINE: tuple[type, ...] = (CEchoRQ, CStoreRQ, *_N_SERVICES)


def stream_to_disk(directory: str | Path | None = None) -> Callable[[Any], Any]:
    """Mark a C-STORE handler as wanting the data set on disk, written while it arrives.

    The handler's ``event.dataset_path`` is then a Part 10 file (file meta header plus the
    received bytes, never decoded) in ``directory`` (default: the system temporary folder).
    The handler may move it; if it is still there when the handler returns, it is deleted.
    Memory use is bounded by the PDU size, whatever the size of the data set.
    """

    def mark(handler: Any) -> Any:
        handler.dicomio_stream_to = Path(directory) if directory else Path(tempfile.gettempdir())
        return handler

    return mark


class _Incoming:
    """A data set being written to disk as its fragments arrive.

    The file is written with ``os.write`` on a bare descriptor: each fragment is already as
    large as a PDU, so a Python file object's buffer would only add a copy, and opening one
    costs system calls (``fstat``, ``lseek``, an ``isatty`` ``ioctl``) on every instance.

    If writing fails (a full disk, an I/O error, a quota), ``error`` keeps why, the partial
    file is deleted, and the fragments still to come are read and dropped: the request is
    then answered "Refused: Out of Resources" and the association goes on (PS3.4 B.2.3).
    """

    __slots__ = ("command", "context_id", "error", "fd", "path")

    def __init__(self, context_id: int, command: Any) -> None:
        self.context_id = context_id
        self.command = command
        self.path: Path | None = None
        self.fd = -1
        self.error: OSError | None = None

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def fail(self, error: OSError) -> None:
        """Writing failed: remember why and delete what was written."""
        self.error = error
        with contextlib.suppress(OSError):
            self.close()
        self.discard()

    def discard(self) -> None:
        """Delete the file (an unfinished or refused data set is never left behind)."""
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink(missing_ok=True)


class _Discarded(_Incoming):
    """The data set of a refused C-STORE: read to its end and dropped, never stored."""

    __slots__ = ()

    def write(self, data: bytes | memoryview) -> None:
        pass


_part_numbers = itertools.count()


def _create_part_file(directory: Path) -> tuple[int, Path]:
    """A new file in ``directory`` for a data set in transit, open for writing (mode 0600).

    Named from the process ID and a counter, created with O_EXCL as ``tempfile`` does, but
    without its random names: a name left by an earlier process with the same ID is skipped.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        path = directory / f".dicomio-{os.getpid()}-{next(_part_numbers)}.part"
        try:
            return os.open(path, flags, 0o600), path
        except FileExistsError:
            continue
    fd, name = tempfile.mkstemp(prefix=".dicomio-", suffix=".part", dir=directory)
    return fd, Path(name)


class _Ahead:
    """Encoded responses between a C-FIND handler and the writer, bounded in bytes.

    ``put`` mostly returns at once (so a handler with its matches in memory runs on without
    a trip through the event loop) and waits while ``limit`` bytes are waiting. It lets the
    writer in after the first response, then after 2, 4, 8 ... more: the peer gets the
    first match at once and starts on it, and a long answer still leaves in few writes.
    ``take`` hands the writer everything waiting, or None once closed and drained.
    """

    __slots__ = (
        "_closed",
        "_handover",
        "_items",
        "_limit",
        "_ready",
        "_size",
        "_space",
        "failure",
    )

    def __init__(self, limit: int) -> None:
        self._items: list[tuple[Any, bytes, bytes | None]] = []
        self._size = 0
        self._limit = limit
        self._handover = 1
        self._closed = False
        self._ready: anyio.Event | None = None
        self._space: anyio.Event | None = None
        self.failure: errors.DicomioError | None = None

    async def put(self, item: tuple[Any, bytes, bytes | None], size: int) -> None:
        while self._size >= self._limit:
            self._space = anyio.Event()
            await self._space.wait()
        self._items.append(item)
        self._size += size
        if self._ready is not None:
            self._ready.set()
        if len(self._items) >= self._handover:
            self._handover *= 2
            await anyio.lowlevel.checkpoint()

    def close(self) -> None:
        self._closed = True
        if self._ready is not None:
            self._ready.set()

    def drop(self) -> None:
        """Forget what the writer has not taken (the operation was cancelled)."""
        self._items, self._size = [], 0

    async def take(self) -> list[tuple[Any, bytes, bytes | None]] | None:
        while not self._items:
            if self._closed:
                return None
            self._ready = anyio.Event()
            await self._ready.wait()
            self._ready = None
        items, self._items, self._size = self._items, [], 0
        if self._space is not None:
            self._space.set()
            self._space = None
        return items


class ServiceProviderMixin:
    """Request dispatch; mixed into ``Association``."""

    if TYPE_CHECKING:
        # Provided by Association, which this class is mixed into.
        ae: AE
        log: logging.LoggerAdapter[logging.Logger]
        timeouts: Timeouts
        remote_ae_title: str
        accepted_contexts: tuple[PresentationContext, ...]
        _failure: errors.DicomioError | None
        _transport_closed: bool
        _handlers: dict[AnyEventType, list[tuple[Any, Sequence[Any]]]]
        _assembler: MessageAssembler
        _background_reader: bool
        _reader_busy: bool
        _incoming: deque[tuple[int, Any, Any]]
        _read_lock: Gate
        _send_lock: Gate
        _write_lock: Gate
        _receivers: weakref.WeakSet[IncomingRequests] | None
        _ul: ULConnection
        _now: Callable[[], float]
        remote_max_pdu: int
        async_ops_window: tuple[int, int]
        _stream: anyio.abc.ByteStream
        _outbox: list[bytes | memoryview]
        _deferred: list[Any]
        _transport_closing: bool
        _close_when_sent: bool
        _ack_socket: socket.socket | None
        _ack_pending: bool
        _release_requested: bool

        def get_handlers(self, event: AnyEventType) -> list[tuple[Any, Sequence[Any]]]: ...
        def _context(self, context_id: int) -> PresentationContext | None: ...
        def _send_nowait(self, context_id: int, command: Any) -> None: ...
        def _on_ul_event(self, event: Any) -> None: ...
        def _wake_waiters(self) -> None: ...
        async def _flush(self) -> None: ...
        async def _send_deferred(self) -> None: ...
        @property
        def _debug(self) -> bool: ...
        async def _read_once(self, deadline: float | None = None) -> bool: ...
        async def _after_ul(self, events: list[Any]) -> None: ...
        def _fail(self, failure: errors.DicomioError) -> None: ...
        async def abort(self, source: int = 0, reason: int = 0) -> None: ...
        async def send_message(
            self,
            context_id: int,
            command: Any,
            dataset: bytes | memoryview | AsyncIterable[bytes] | None = None,
        ) -> None: ...
        async def send_messages(
            self, context_id: int, messages: Sequence[tuple[Any, bytes, bytes | None]]
        ) -> None: ...
        async def _on_retrieve(
            self, event: Event, context: Any, command: Any, rsp_class: type
        ) -> None: ...  # dicomio._retrieve

    def __init__(self) -> None:
        self._running: dict[int, anyio.CancelScope] = {}
        #: Message IDs of running requests a C-CANCEL has asked to stop (Event.is_cancelled).
        self._cancel_requested: set[int] = set()
        self._task_group: anyio.abc.TaskGroup | None = None
        #: Request tasks started in the task group and not yet finished (or never started).
        self._request_tasks = 0
        self._performing: Gate | None = None
        self._disk: dict[int, _Incoming] = {}
        self._echoes: deque[tuple[int, CEchoRQ]] = deque()
        #: The C-ECHO-RQ this peer repeats and its default answer, as received bytes cut
        #: around the message ID and as the answer's template: (length, request head,
        #: request tail, answer head, answer tail); see _take_data.
        self._echo_bytes: tuple[int, bytes, bytes, bytes, bytes] | None = None
        #: The last default C-ECHO answer queued from a template: context ID, message ID
        #: and the template (for _take_data to learn _echo_bytes from).
        self._echo_sent: tuple[int, int, tuple[bytes, bytes]] | None = None
        #: (context ID, SOP class UID, status, the instance UID's encoded length) -> the
        #: C-STORE-RSP's template (instance_uid_template), or None; made at the second answer.
        self._store_templates: dict[tuple[int, str, int, int], tuple[bytes, bytes] | None] = {}
        self._store_templates_wanted: set[tuple[int, str, int, int]] = set()
        self._inline: deque[tuple[int, Any, Any]] = deque()
        #: What the receive hook raised, for the reader to raise in its place.
        self._hook_error: BaseException | None = None
        #: The reader's idle timer while it waits (network timeout), for the hook to push on.
        self._idle_scope: anyio.CancelScope | None = None

    # -- reader loop (acceptor) ---------------------------------------------------------------

    async def serve(self) -> None:
        """Read and dispatch until the association ends; handlers run concurrently.

        The acceptor's reader task (the server runs it). The network timeout bounds how long
        an association may stay idle: no traffic and no request being worked on (a peer
        waiting for a slow handler is not idle). A peer that breaks PS3.7/PS3.8 inside
        P-DATA is answered in ``Association._on_ul_event``. A requestor waits for requests
        with ``Association.receive_requests()`` instead; if this is cancelled, the
        association goes back to its callers reading for themselves.
        """
        self._background_reader = True
        stream = self._stream
        if isinstance(stream, _transport.AsyncioSocketStream):
            stream.on_data = self._take_data
        try:
            # No task group until a request needs a task of its own (C-FIND, C-GET, C-MOVE,
            # anything under an asynchronous operations window): an association that only
            # verifies, or stores one instance at a time, never pays for one.
            self._start_pending_requests()
            if await self._serve_requests(None):
                async with anyio.create_task_group() as tg:
                    self._task_group = tg
                    self._start_pending_requests()
                    await self._serve_requests(tg)
                    if self._request_tasks:
                        # Cancelling with nothing to cancel is not free (anyio formats the
                        # task's repr and delivers the cancellation over loop turns).
                        tg.cancel_scope.cancel()
        finally:
            if isinstance(stream, _transport.AsyncioSocketStream):
                stream.on_data = None
            self._idle_scope = None
            self._task_group = None
            self._background_reader = False
            self._reader_busy = False
            self._wake_waiters()

    async def _serve_requests(self, tg: anyio.abc.TaskGroup | None) -> bool:
        """The reader loop of ``serve``, until the association ends (False); without a task
        group (``tg`` None), True as soon as a request waits for a task to be started."""
        network = self.timeouts.network
        while not self._transport_closed:
            if tg is None and self._incoming:
                return True
            # The read lock is free whenever this task runs a request itself (below): a
            # request made meanwhile reads for its own response (see _run_inline), and
            # what that read queues for this task is run before it reads again.
            if network is None:
                async with self._read_lock:
                    if not (self._echoes or self._inline):
                        await self._read_once()
            else:
                with anyio.move_on_after(network) as idle:
                    self._idle_scope = idle
                    async with self._read_lock:
                        if not (self._echoes or self._inline):
                            await self._read_once()
                self._idle_scope = None
            if self._echoes or self._inline:
                await self._run_inline()
            if network is None:
                continue
            if idle.cancelled_caught and not self._running and not self._incoming:
                self.log.info("network timeout: no traffic for %s s", network)
                await self.abort(2, 0)
        return False

    def _take_data(self, data: bytes) -> bool:
        """The reader's receive hook (``AsyncioSocketStream.on_data``), on asyncio.

        Bytes that arrive while the reader waits, with nothing pending, are fed to the Upper
        Layer and its events routed here, in the event loop's read callback, by the same
        code as ``_read_once``; the default C-ECHO answers (PS3.7 9.1.5) then go straight
        to the transport. Waking the reader task would cost a second turn of the loop per
        message. Whatever else the bytes lead to that awaits (a request to run inline, a
        close, a send that must wait for the kernel) is handed to the reader, which does it
        as after any read (``Association._read_once``). False (not taken: the reader gets
        the bytes as usual) while anything is pending, while ARTIM runs, or with debug
        logging, whose lines the reader writes.
        """
        stream = self._stream
        assert isinstance(stream, _transport.AsyncioSocketStream)
        ul = self._ul
        if (
            self._reader_busy
            or self._echoes
            or self._inline
            or self._incoming
            or self._deferred
            or self._outbox
            or self._failure is not None
            or self._transport_closed
            or self._transport_closing
            or self._send_lock.locked()
            or self._write_lock.locked()
            or not stream.write_ready
            or ul.next_deadline() is not None
            or self.log.logger.isEnabledFor(logging.DEBUG)
        ):
            return False
        echo = self._echo_bytes
        if (
            echo is not None
            and len(data) == echo[0]
            and data.startswith(echo[1])
            and data.endswith(echo[2])
            and ul.at_rest
            and self._assembler.idle
            and not self._handlers.get(EVT_C_ECHO)
        ):
            # The C-ECHO-RQ answered before, in a PDU of its own, with another message ID:
            # the ordinary path would give it the same answer (the same bytes, context and
            # handlers), and for this PDU alone the Upper Layer stays in Sta6 (DT-2).
            at = len(echo[1])
            stream.write_nowait(echo[3] + data[at : at + 2] + echo[4])
            if self._idle_scope is not None and self.timeouts.network is not None:
                self._idle_scope.deadline = self._now() + self.timeouts.network
            return True
        learn = echo is None and len(data) <= _ECHO_LEARN_MAX and ul.at_rest
        self._echo_sent = None
        try:
            now = self._now()
            for event in ul.receive_data(data, now=now):
                self._on_ul_event(event)
            if self._echoes and not self._inline:
                self._answer_echoes_nowait(debug=False)
                if self._release_requested:
                    self._release_if_answered()
            if self._idle_scope is not None and self.timeouts.network is not None:
                self._idle_scope.deadline = now + self.timeouts.network
            if (
                self._echoes
                or self._inline
                or self._incoming
                or self._deferred
                or self._transport_closing
                or ul.should_close
                or ul.next_deadline() is not None
            ):
                # The reader acknowledges the bytes unless it answers first (_read_once).
                self._ack_pending = self._ack_socket is not None
                if self._close_when_sent and not (
                    self._echoes or self._inline or self._incoming or self._deferred
                ):
                    # A release answered (A-RELEASE-RP queued) and nothing else to do: the
                    # answer leaves and the transport closes here, as the reader would
                    # (Association._after_ul), so that the transport's end and the reader's
                    # wake-up share the next turn of the loop instead of taking one each.
                    out = ul.data_to_send()
                    if out:
                        self._ack_pending = False
                        stream.write_nowait(out[0] if len(out) == 1 else b"".join(out))
                    if stream.sent_nowait():
                        stream.close_nowait()
                stream.hand_over()
                return True
            out = ul.data_to_send()
            if out:
                # The answer carries the ACK of the bytes it answers.
                stream.write_nowait(out[0] if len(out) == 1 else b"".join(out))
                if learn and self._echo_sent is not None:
                    self._learn_echo(data, *self._echo_sent)
            elif self._ack_socket is not None:
                # Part of a message: the reader stays parked, the peer may wait for the ACK
                # before it sends the rest (see _transport.ack_now).
                _transport.ack_now(self._ack_socket)
        except Exception as exc:
            # Raised where the reader would have raised it.
            self._hook_error = exc
            stream.hand_over()
        return True

    def _learn_echo(
        self, data: bytes, context_id: int, message_id: int, answer: tuple[bytes, bytes]
    ) -> None:
        """Remember ``data`` as the C-ECHO-RQ to answer in ``_take_data`` from now on.

        ``data`` was read with the Upper Layer at rest and was answered, from ``answer``,
        as the echo with ``message_id`` on ``context_id``; it is kept only if it is that
        request's PDU alone, with the message ID where ``received_template`` finds it.
        """
        cut = received_template(data)
        if cut is None or data[10] != context_id:
            return
        head, tail = cut
        if int.from_bytes(data[len(head) : len(head) + 2], "little") != message_id:
            return
        self._echo_bytes = (len(data), head, tail, *answer)

    def _answer_echoes_nowait(self, *, debug: bool | None = None) -> None:
        """Queue the default C-ECHO answers to the echoes read so far, up to the first echo
        without a context, which it leaves (``_answer_echoes`` takes it the abort path).
        ``debug``: whether debug logging is on, if the caller knows."""
        echoes = self._echoes
        if debug is None:
            debug = self.log.logger.isEnabledFor(logging.DEBUG)
        while echoes:
            context_id, command = echoes[0]
            if self._context(context_id) is None:
                return
            echoes.popleft()
            if not debug and self._echo_answered(context_id, command):
                continue
            response = _echo_response(command, SUCCESS)
            if debug:
                from dicomio.association import summary  # a cycle at import time

                self.log.debug("sending %s ctx=%d", summary(response), context_id)
            self._send_nowait(context_id, response)

    async def _run_inline(self) -> None:
        """Answer the requests the reader took on itself, while it does not read.

        A handler run here may make a request on this association (an N-ACTION handler
        reporting with N-EVENT-REPORT, PS3.4 J.3.3): while the reader is busy, waiters
        read for themselves, as on a requestor, instead of waiting for it.
        """
        self._reader_busy = True
        self._wake_waiters()
        try:
            if self._echoes:
                await self._answer_echoes()
            while self._inline:
                await self._handle_request(*self._inline.popleft(), scoped=False)
        finally:
            self._reader_busy = False
        if self._release_if_answered():
            await self._after_ul([])

    def _release_if_answered(self, *, later: bool = True) -> bool:
        """Answer a pending A-RELEASE-RQ once every request received before it is answered.

        A peer may send requests and its A-RELEASE-RQ in one go (a pipelining requestor, or
        one whose last request's answer it no longer waits for). PS3.8 lets the acceptor
        still send P-DATA after the release indication (Sta8, AR-7), so those requests are
        answered, in the order they came, and the A-RELEASE-RP (AR-4) goes last instead of
        ending the association under them. Only while the reader serves requests; True
        when the A-RELEASE-RP was queued (the caller flushes it). ``later``: called once
        answers went out, not on the A-RELEASE-RQ itself (which is answered whatever else
        ended: in a release collision the state machine decides).
        """
        if not self._release_requested:
            return False
        if later and self._failure is not None:
            self._release_requested = False  # ended meanwhile (aborted): nothing to release
            return False
        if self._background_reader and (
            self._incoming or self._echoes or self._inline or self._request_tasks
        ):
            return False
        self._release_requested = False
        self._ul.send_release_rp(now=self._now())
        # Once the A-RELEASE-RP has reached the kernel the association no longer exists,
        # and the transport is closed then (_after_ul), as DCMTK does, instead of waiting
        # in Sta13 for the peer to close it: a loop turn, a read and a timer less.
        self._close_when_sent = True
        self._fail(errors.AssociationReleased("the peer released the association"))
        return True

    def _start_pending_requests(self) -> None:
        """Hand the requests received to the reader (``_echoes``, ``_inline``) or to tasks.

        Without the reader's task group yet, a request that needs a task stays first in
        ``_incoming``, with those after it, for the reader to start once it has one.
        """
        tg = self._task_group
        default_echo = not self.get_handlers(EVT_C_ECHO)
        serial = self.async_ops_window[1] == 1
        incoming = self._incoming
        while incoming:
            context_id, command, data = incoming[0]
            if default_echo and isinstance(command, CEchoRQ) and invalid_field(command) is None:
                # Nothing user-written runs for a C-ECHO with no handler: the reader answers
                # it itself, without the cost of a task, right after this read.
                self._echoes.append((context_id, command))
            elif serial and isinstance(command, _INLINE):
                # One request at a time (no asynchronous operations window): the peer waits
                # for this answer before it sends anything but an abort or a release, so
                # the reader handles it itself once this read is dispatched, without a task.
                # C-FIND/C-GET/C-MOVE keep their task: a C-CANCEL must be read meanwhile.
                self._inline.append((context_id, command, data))
            elif tg is None:
                return
            else:
                self._request_tasks += 1
                tg.start_soon(self._request_task, context_id, command, data)
            incoming.popleft()

    async def _request_task(self, context_id: int, command: Any, data: Any) -> None:
        try:
            await self._handle_request(context_id, command, data)
        finally:
            self._request_tasks -= 1
        if self._release_if_answered():
            await self._after_ul([])

    async def _answer_echoes(self) -> None:
        """The default C-ECHO answers (PS3.7 9.1.5: Success) to every echo read so far.

        All of them leave in one write: a peer with an asynchronous operations window may
        have sent many in one go.
        """
        self._answer_echoes_nowait()
        if self._echoes:
            context_id, command = self._echoes.popleft()
            await self._handle_request(context_id, command, None)  # the usual abort path
            return
        with contextlib.suppress(errors.DicomioError):
            await self._flush()

    def _echo_answered(self, context_id: int, command: CEchoRQ) -> bool:
        """Queue the default C-ECHO-RSP from a command set template; False if it cannot.

        ``_send_nowait`` for the same response, without building and encoding it: the
        answers on one context differ only in the message ID. Not taken (False) while
        another message is being sent: ``_send_nowait`` defers it then.
        """
        if self._failure is not None or self._transport_closed or self._send_lock.locked():
            return False
        template = _echo_template(context_id, command, self.remote_max_pdu)
        if template is None:
            return False
        head, tail = template
        self._ul.send_pdata_parts(
            [head + command.message_id.to_bytes(2, "little") + tail], now=self._now()
        )
        self._echo_sent = (context_id, command.message_id, template)
        return True

    async def _run_incoming_inline(self) -> None:
        while self._incoming:
            context_id, command, data = self._incoming.popleft()
            await self._handle_request(context_id, command, data)

    def _fail_provider(self, failure: errors.DicomioError) -> None:
        for scope in self._running.values():
            scope.cancel()

    def _on_cancel(self, command: Any) -> None:
        scope = self._running.get(command.message_id_being_responded_to)
        if scope is not None:
            self.log.debug("C-CANCEL for message %s", command.message_id_being_responded_to)
            self._cancel_requested.add(command.message_id_being_responded_to)
            scope.cancel()

    # -- streaming C-STORE data sets to disk ---------------------------------------------------

    def _stream_if(self, command: Any) -> bool:
        if not isinstance(command, CStoreRQ):
            return False
        for handler, _ in self.get_handlers(EVT_C_STORE):  # a loop: no generator per store
            if hasattr(handler, "dicomio_stream_to"):
                return True
        return False

    def _open_stream(self, context_id: int, command: Any) -> None:
        if invalid_field(command) is not None:
            # To be refused (_handle_request): its data set must reach no file.
            self._disk[context_id] = _Discarded(context_id, command)
            return
        handler = next(
            h for h, _ in self.get_handlers(EVT_C_STORE) if hasattr(h, "dicomio_stream_to")
        )
        directory: Path = handler.dicomio_stream_to
        context = self._context(context_id)
        incoming = _Incoming(context_id, command)
        self._disk[context_id] = incoming
        try:
            incoming.fd, incoming.path = _create_part_file(directory)
            incoming.write(
                part10_header(
                    str(command.affected_sop_class_uid),
                    str(command.affected_sop_instance_uid),
                    str(context.transfer_syntax if context else "1.2.840.10008.1.2"),
                    source_ae_title=self.remote_ae_title or None,
                )
            )
        except OSError as exc:
            self._write_failed(incoming, exc)

    def _stream_fragment(self, context_id: int, data: memoryview, is_last: bool) -> None:
        incoming = self._disk.get(context_id)
        if incoming is None:
            return
        if incoming.error is None:
            try:
                # A synchronous write of one PDV (at most the negotiated PDU size) into the
                # page cache.
                incoming.write(data)
                if is_last:
                    incoming.close()  # close(2) can report a failed write too (NFS, EIO)
            except OSError as exc:
                self._write_failed(incoming, exc)
        if is_last:
            del self._disk[context_id]
            # The request goes on with the file, or with the error that refuses it.
            self._incoming.append((context_id, incoming.command, incoming.error or incoming.path))
            if self._background_reader:
                self._start_pending_requests()

    def _write_failed(self, incoming: _Incoming, error: OSError) -> None:
        self.log.error(
            "cannot write the data set of C-STORE %s (%s): %s; it will be refused with A700H",
            incoming.command.message_id,
            incoming.command.affected_sop_instance_uid,
            error,
        )
        incoming.fail(error)

    def _close_streams(self) -> None:
        """The association ended: partial files are deleted, never reported as stored."""
        for incoming in self._disk.values():
            with contextlib.suppress(OSError):
                incoming.close()
            incoming.discard()
        self._disk.clear()

    # -- dispatch ------------------------------------------------------------------------------

    async def _handle_request(
        self, context_id: int, command: Any, data: Any, *, scoped: bool = True
    ) -> None:
        """Run the handler of one request and answer it; never raises for the peer's sake.

        ``scoped``: in a cancel scope of its own (``_running``), which a C-CANCEL naming it
        or the association's end (``_fail_provider``) cancels. The reader's own requests
        (``_run_inline``: C-ECHO, C-STORE and DIMSE-N, none of which a C-CANCEL applies to,
        PS3.7 9.3.2.3) go without: while it runs them nothing reads but the handler's own
        requests, which raise if the association ends, and a local abort lets the handler
        finish, its answer unsent. On asyncio a scope costs two ``getpid`` calls and 4.6 µs
        in a loop, more in a server whose caches a data set has just gone through.
        """
        context = self._context(context_id)
        path = data if isinstance(data, Path) else None
        # A data set streamed to disk that could not be written (see _Incoming).
        unwritten = data if isinstance(data, OSError) else None
        # A JoinedLater stays so: the event joins it if its bytes are asked for.
        raw = (
            None
            if path is not None or unwritten is not None or data is None
            else (data if type(data) is bytes or type(data) is JoinedLater else bytes(data))
        )
        try:
            if context is None:
                # Only accepted presentation contexts may carry messages (PS3.8 7.1.1.13):
                # the peer broke the protocol, and nothing it sends next can be trusted.
                self.log.warning(
                    "%s on presentation context %s, which was not accepted: aborting",
                    type(command).__name__,
                    context_id,
                )
                await self.abort(2, 6)
                return
            problem = invalid_field(command)
            if problem is not None:
                # Before any handler, and without a place in the window: nothing is done.
                self.log.warning(
                    "refusing %s: %s %s: %a",
                    type(command).__name__,
                    problem.name,
                    problem.reason,
                    problem.value[:80],
                )
                await self._respond(context, _refusal(command, problem))
                return
            # The window's "performed" limit (PS3.7 D.3.3.3): requests beyond it wait here.
            performing = self._performing
            if performing is not None:
                await performing.acquire()
            try:
                event: Event | None = None
                if unwritten is not None:
                    # Refused before any handler: there is no Event to deliver.
                    await self._refuse_unwritten(context, command, unwritten)
                elif not scoped:
                    event = await self._dispatch(context, command, raw, path)
                else:
                    with anyio.CancelScope() as scope:
                        self._running[command.message_id] = scope
                        try:
                            event = await self._dispatch(context, command, raw, path)
                        finally:
                            self._running.pop(command.message_id, None)
                            self._cancel_requested.discard(command.message_id)
                    if scope.cancelled_caught:
                        event = None
                if event is not None and self._receivers:
                    for receiver in self._receivers:
                        receiver.deliver(event)
            finally:
                if performing is not None:
                    performing.release()
        except errors.DicomioError as exc:
            if self._failure is None:
                self.log.warning("request %s failed: %s", type(command).__name__, exc)
                await self._answer_failed(context, command)
        except Exception:
            # A bug in a handler's data or ours must not take the whole association down.
            self.log.exception("request %s failed", type(command).__name__)
            await self._answer_failed(context, command)
        finally:
            if path is not None:
                path.unlink(missing_ok=True)

    async def _answer_failed(self, context: Any, command: Any) -> None:
        """The last resort for a request whose handling broke before its final response.

        Every path above answers for itself; this is for the bugs nobody foresaw, so that
        the peer gets the service's failure status (C000H, or 0110H for DIMSE-N) instead of
        waiting for its timeout, or, if even that cannot be sent, an A-ABORT.
        """
        if context is None or self._failure is not None:
            return
        response = _failure_response(
            response_class_for(command),
            command.message_id,
            command.command_field,
            "internal error",
        )
        try:
            await self.send_messages(
                context.context_id, ((response, encode_command(response), None),)
            )
        except Exception:
            if self._failure is None:
                self.log.exception("cannot answer %s: aborting", type(command).__name__)
                await self.abort(0, 0)

    async def _dispatch(
        self, context: Any, command: Any, raw: bytes | JoinedLater | None, path: Path | None
    ) -> Event:
        """Run the request's handler and send its response; the handler's event."""
        event = Event(
            EVT_C_ECHO,
            cast("Association", self),
            context=context,
            request=command,
            raw=raw,
            dataset_path=path,
        )
        if isinstance(command, CEchoRQ):
            await self._on_c_echo(event, context, command)
        elif isinstance(command, CStoreRQ):
            event.event = EVT_C_STORE
            await self._on_c_store(event, context, command)
        elif isinstance(command, CFindRQ):
            event.event = EVT_C_FIND
            await self._on_c_find(event, context, command)
        elif isinstance(command, CGetRQ):
            event.event = EVT_C_GET
            await self._on_retrieve(event, context, command, CGetRSP)
        elif isinstance(command, CMoveRQ):
            event.event = EVT_C_MOVE
            await self._on_retrieve(event, context, command, CMoveRSP)
        elif type(command) in _N_SERVICES:
            event.event, rsp_class = _N_SERVICES[type(command)]
            await self._on_n_service(event, context, command, rsp_class)
        return event

    def _handler(self, event: AnyEventType) -> tuple[Any, tuple[Any, ...]] | None:
        handlers = self.get_handlers(event)
        if not handlers:
            return None
        handler, args = handlers[0]
        return handler, tuple(args)

    async def _respond(self, context: Any, response: Any, dataset: Dataset | None = None) -> None:
        """Send ``response`` (and its data set); never leave the peer waiting in silence.

        If either cannot be encoded (a handler's non-ASCII Error Comment or over-long UID,
        a data set pydicom cannot write), the peer gets the service's failure status
        instead, with nothing a handler supplied; if not even that can be formed, or the
        response was a Pending one (a failure there would end an operation that goes on),
        the association is aborted. Either way it is logged.
        """
        try:
            encoded = encode_command(response)
            payload = None if dataset is None else encode_dataset(dataset, context.transfer_syntax)
        except Exception as exc:
            await self._respond_instead(context, response, exc)
            return
        if payload is None:
            await self.send_messages(context.context_id, ((response, encoded, None),))
        else:
            await self.send_message(context.context_id, response, payload)

    async def _respond_instead(self, context: Any, response: Any, exc: Exception) -> None:
        """The failure response (or A-ABORT) that replaces one that could not be encoded."""
        name = type(response).__name__
        if response.status not in PENDING_CODES:
            fallback = _failure_response(
                type(response),
                response.message_id_being_responded_to,
                response.command_field,
                "response could not be encoded",
            )
            failure = fallback.status
            try:
                encoded = encode_command(fallback)
            except errors.LocalProtocolError:  # pragma: no cover - only fixed, valid fields
                pass
            else:
                self.log.error(
                    "%s (status %#06x) cannot be encoded: %s; sending status %#06x instead",
                    name,
                    response.status,
                    exc,
                    failure,
                )
                await self.send_messages(context.context_id, ((fallback, encoded, None),))
                return
        self.log.error(
            "%s (status %#06x) cannot be encoded: %s; aborting", name, response.status, exc
        )
        # Source 0: the DICOM UL service-user, which cannot go on (PS3.8 9.3.8).
        await self.abort(0, 0)

    # -- C-ECHO, C-STORE -------------------------------------------------------------------

    async def _on_c_echo(self, event: Event, context: Any, command: CEchoRQ) -> None:
        status: int = SUCCESS
        fields: dict[str, Any] = {}
        found = self._handler(EVT_C_ECHO)
        if found is not None:
            status, fields = await _call_for_status(found, event, C_FAILURE)
        await self._respond(context, _echo_response(command, status, **fields))

    async def _on_c_store(self, event: Event, context: Any, command: CStoreRQ) -> None:
        found = self._handler(EVT_C_STORE)
        fields: dict[str, Any]
        if found is None:
            status, fields = C_FAILURE, {"error_comment": "no C-STORE handler is bound"}
        else:
            status, fields = await _call_for_status(found, event, C_FAILURE)
            if not fields:
                answer = self._store_answer(context.context_id, command, status)
                if answer is not None:
                    await self._send_answer(answer)
                    return
        await self._respond(
            context,
            CStoreRSP(
                message_id_being_responded_to=command.message_id,
                affected_sop_class_uid=command.affected_sop_class_uid,
                affected_sop_instance_uid=command.affected_sop_instance_uid,
                status=status,
                has_dataset=False,
                **fields,
            ),
        )

    def _store_answer(self, context_id: int, command: CStoreRQ, status: int) -> bytes | None:
        """The P-DATA-TF of the C-STORE-RSP with only ``status``, from a template; None to
        take the ordinary path (``_respond``), as for the first answer of its kind.

        The answers on one context differ in the message ID and the instance UID
        (``instance_uid_template``): no message value, command set encoding or framing
        per answer. Not with debug logging, which logs each response sent.
        """
        uid = command.affected_sop_instance_uid
        try:
            # Checked before the handler ran (invalid_field): digits and dots, 64 at most.
            value = uid.encode("ascii")
        except UnicodeEncodeError:  # pragma: no cover - refused before the handler
            return None
        if len(value) & 1:
            value += b"\x00"  # PS3.5 6.2: a UI value is padded with 00H
        key = (context_id, command.affected_sop_class_uid, status, len(value))
        templates = self._store_templates
        if key in templates:
            template = templates[key]
        elif key not in self._store_templates_wanted:
            if len(self._store_templates_wanted) < 16:
                self._store_templates_wanted.add(key)
            return None
        else:
            template = instance_uid_template(
                context_id,
                CStoreRSP(
                    message_id_being_responded_to=command.message_id,
                    affected_sop_class_uid=command.affected_sop_class_uid,
                    affected_sop_instance_uid=uid,
                    status=status,
                    has_dataset=False,
                ),
                self.remote_max_pdu,
            )
            if len(templates) < 16:  # a peer varying class or UID length gets no more
                templates[key] = template
        if template is None or self._debug:
            return None
        head, tail = template
        return b"".join((head, command.message_id.to_bytes(2, "little"), tail, value))

    async def _send_answer(self, pdu: bytes) -> None:
        """``send_messages`` for one answer in one P-DATA-TF, framed already."""
        if self._failure is not None:
            raise self._failure
        async with self._send_lock:
            self._ul.send_pdata_parts([pdu], now=self._now())
            await self._flush()
        if self._deferred:
            await self._send_deferred()

    async def _refuse_unwritten(self, context: Any, command: CStoreRQ, error: OSError) -> None:
        """C-STORE-RSP "Refused: Out of Resources" for a data set that could not be written
        (PS3.4 B.2.3); the handler never sees it."""
        comment = (error.strerror or str(error) or type(error).__name__)[:64]  # LO: 64 chars
        await self._respond(
            context,
            CStoreRSP(
                message_id_being_responded_to=command.message_id,
                affected_sop_class_uid=command.affected_sop_class_uid,
                affected_sop_instance_uid=command.affected_sop_instance_uid,
                status=OUT_OF_RESOURCES,
                has_dataset=False,
                error_comment=comment,
            ),
        )

    # -- C-FIND --------------------------------------------------------------------------------

    async def _on_c_find(self, event: Event, context: Any, command: CFindRQ) -> None:
        """C-FIND (PS3.4 C.4.1): the handler's matches as pending responses, then the final.

        The handler runs ahead of the network by up to ``FIND_AHEAD_BYTES`` of encoded
        responses while a writer task sends whatever is ready in one write. A C-CANCEL
        cancels the handler; what was not yet written is dropped and the Cancel status
        follows.
        """

        def response(status: int, **fields: Any) -> CFindRSP:
            return CFindRSP(
                message_id_being_responded_to=command.message_id,
                affected_sop_class_uid=command.affected_sop_class_uid,
                status=status,
                has_dataset=fields.pop("has_dataset", False),
                **fields,
            )

        found = self._handler(EVT_C_FIND)
        if found is None:
            await self._respond(context, response(C_FAILURE, error_comment="no C-FIND handler"))
            return
        ahead = _Ahead(FIND_AHEAD_BYTES)
        # Every pending response of one C-FIND has the same command set: encode it once.
        commands: dict[tuple[int, bool], tuple[CFindRSP, bytes]] = {}
        transfer_syntax = context.transfer_syntax
        final: int | None = None
        failure: errors.DicomioError | None = None

        async def run_handler() -> None:
            nonlocal final, failure
            try:
                async with _handler_items(found, event) as items:
                    async for status, identifier in items:
                        if status not in PENDING_CODES:
                            final = status
                            return
                        key = (status, identifier is not None)
                        cached = commands.get(key)
                        if cached is None:
                            rsp = response(status, has_dataset=key[1])
                            cached = commands[key] = (rsp, encode_command(rsp))
                        payload = (
                            None
                            if identifier is None
                            else encode_dataset(identifier, transfer_syntax)
                        )
                        size = len(cached[1]) + (0 if payload is None else len(payload))
                        await ahead.put((cached[0], cached[1], payload), size)
                final = SUCCESS
            except Exception as exc:
                if isinstance(exc, errors.DicomioError) and self._failure is not None:
                    failure = exc
                    return
                self.log.exception("C-FIND handler raised")
                final = C_FAILURE
            finally:
                ahead.close()

        async with anyio.create_task_group() as tg:
            tg.start_soon(self._write_ahead, context.context_id, ahead, tg.cancel_scope)
            # A C-CANCEL cancels the handler only, never a write half done: cut short, it
            # would leave part of a PDU on the wire (a stream socket may take part of a
            # write). The writer finishes what it took and what was not taken is dropped.
            with anyio.CancelScope() as scope:
                self._running[command.message_id] = scope
                await run_handler()
            if scope.cancelled_caught:
                ahead.drop()
        failure = ahead.failure or failure
        if failure is not None:
            raise failure
        if final is None:
            # Cancelled: by a C-CANCEL (PS3.7 9.3.2.3), or because the association ended.
            if self._failure is not None:
                return
            final = CANCEL
        await self._respond(context, response(final))

    async def _write_ahead(self, context_id: int, ahead: _Ahead, group: anyio.CancelScope) -> None:
        """Send what a C-FIND handler has ready, all of it at each turn, until it is done."""
        while (batch := await ahead.take()) is not None:
            try:
                await self.send_messages(context_id, batch)
            except errors.DicomioError as exc:
                ahead.failure = exc
                group.cancel()
                return

    # -- C-GET and C-MOVE ----------------------------------------------------------------------

    # -- N-services -----------------------------------------------------------------------------

    async def _on_n_service(
        self, event: Event, context: Any, command: Any, rsp_class: type
    ) -> None:
        found = self._handler(event.event)
        reply: Dataset | None = None
        if found is None:
            status, fields = N_FAILURE, {"error_comment": "no handler"}
        else:
            handler, args = found
            try:
                status, fields, reply = _n_result(await handler(event, *args))
            except Exception as exc:
                self.log.exception("%s handler failed", event.event.name)
                status, fields, reply = N_FAILURE, {"error_comment": type(exc).__name__[:64]}, None
        sop_class = getattr(command, "affected_sop_class_uid", None) or getattr(
            command, "requested_sop_class_uid", None
        )
        sop_instance = getattr(command, "affected_sop_instance_uid", None) or getattr(
            command, "requested_sop_instance_uid", None
        )
        if isinstance(command, NCreateRQ) and sop_instance is None and status < 0xA000:
            # PS3.7 10.1.5.1.5: if the requestor left the instance UID to us, the response
            # names it: the handler's SOPInstanceUID if it gave one, else a new UID.
            given = reply.get("SOPInstanceUID") if reply is not None else None
            sop_instance = UID(str(given)) if given else generate_uid()
        extra: dict[str, Any] = {}
        if isinstance(command, NEventReportRQ):
            extra["event_type_id"] = command.event_type_id
        if isinstance(command, NActionRQ):
            extra["action_type_id"] = command.action_type_id
        await self._respond(
            context,
            rsp_class(
                message_id_being_responded_to=command.message_id,
                affected_sop_class_uid=sop_class,
                affected_sop_instance_uid=sop_instance,
                status=status,
                has_dataset=reply is not None,
                **fields,
                **extra,
            ),
            reply,
        )


def _failure_response(
    response_class: Any, message_id: int, command_field: int, comment: str
) -> Any:
    """A failure response without a data set: 0110H for DIMSE-N, C000H for DIMSE-C.

    Bit 8 of the command field (0100H) is set for every DIMSE-N request and response
    (PS3.7 E.1-1) and for no DIMSE-C one, so a request's or a response's field tells.
    """
    return response_class(
        message_id_being_responded_to=message_id,
        status=N_FAILURE if command_field & 0x0100 else C_FAILURE,
        error_comment=comment,
        has_dataset=False,
    )


#: The longest read in which ``_take_data`` looks for a C-ECHO-RQ to remember: one
#: P-DATA-TF of a command set whose only long value is a SOP class UID (64 bytes at most).
_ECHO_LEARN_MAX = 256

#: The default C-ECHO-RSP's command set templates by context ID, SOP class UID and the
#: peer's maximum PDU length, for every association of the process: a client proposes the
#: same contexts association after association, and a verification (one C-ECHO per
#: association) would otherwise build and encode its answer every time. Bounded: a peer
#: varying the UID gets no more (its answers take the ordinary path).
_ECHO_TEMPLATES: Templates[tuple[int, str, int]] = Templates()


def _echo_template(context_id: int, command: CEchoRQ, max_pdu: int) -> tuple[bytes, bytes] | None:
    """The default C-ECHO-RSP's template for ``command``'s context and class, remembered."""
    return _ECHO_TEMPLATES.get(
        (context_id, command.affected_sop_class_uid, max_pdu),
        lambda: message_id_template(
            context_id, _echo_response(command, SUCCESS), max_pdu, "message_id_being_responded_to"
        ),
    )


def _echo_response(command: CEchoRQ, status: int, **fields: Any) -> CEchoRSP:
    """The C-ECHO-RSP to ``command`` (PS3.7 9.3.5.2)."""
    return CEchoRSP(
        message_id_being_responded_to=command.message_id,
        affected_sop_class_uid=command.affected_sop_class_uid,
        status=status,
        has_dataset=False,
        **fields,
    )


def _refusal(command: Any, problem: InvalidField) -> Any:
    """The response refusing ``command``, whose field ``problem`` breaks PS3.5.

    The status by field: a bad SOP Instance UID is "Invalid SOP Instance" (0117H, PS3.7
    C.5), a bad SOP Class UID "Refused: SOP Class not supported" (0122H: no supported
    class has that name), a bad Move Destination "Refused: Move Destination unknown"
    (A801H, PS3.4 C.4.2.1.5: no AE has that title), and anything else (a bad Move
    Originator AE title) "Error: Cannot understand" (C000H, PS3.4 B.2.3) with the
    Offending Element. The response echoes only fields checked valid: the offending
    value itself could not be encoded, and every echoed UID is U(=), so may be left out.
    """
    tag = problem.tag
    fields: dict[str, Any] = {}
    if tag in (0x1000, 0x1001):
        status = INVALID_SOP_INSTANCE
    elif tag in (0x0002, 0x0003):
        status = SOP_CLASS_NOT_SUPPORTED
    elif tag == 0x0600:
        status = MOVE_DESTINATION_UNKNOWN
        fields["error_comment"] = f"Move Destination: {problem.reason}"
    else:
        status = C_FAILURE
        fields["offending_element"] = tag
        fields["error_comment"] = problem.reason
    if tag not in (0x0002, 0x0003):  # the class UIDs were checked first: they are valid
        fields["affected_sop_class_uid"] = getattr(
            command, "affected_sop_class_uid", None
        ) or getattr(command, "requested_sop_class_uid", None)
        if tag not in (0x1000, 0x1001):
            fields["affected_sop_instance_uid"] = getattr(
                command, "affected_sop_instance_uid", None
            ) or getattr(command, "requested_sop_instance_uid", None)
    return response_class_for(command)(
        message_id_being_responded_to=command.message_id,
        status=status,
        has_dataset=False,
        **fields,
    )


async def _call_for_status(
    found: tuple[Any, tuple[Any, ...]], event: Event, failure: int
) -> tuple[int, dict[str, Any]]:
    """Run a handler that answers with a status (an int, or a Dataset with ``Status``).

    A handler that raises, or answers with something that is not a status, gives
    ``failure``: the peer gets a failure response and the association goes on.
    """
    handler, args = found
    try:
        result = await handler(event, *args)
        if isinstance(result, Dataset):
            fields = {}
            if "ErrorComment" in result:
                fields["error_comment"] = str(result.ErrorComment)[:64]
            return _status_code(result.Status), fields
        return _status_code(result), {}
    except Exception as exc:
        event.assoc.log.exception("%s handler failed", event.event.name)
        return failure, {"error_comment": f"{type(exc).__name__}"[:64]}


def _status_code(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise TypeError(f"a handler must answer with a status code 0-0xFFFF, not {value!r}")
    return int(value)


def _n_result(result: Any) -> tuple[int, dict[str, Any], Dataset | None]:
    """An N-service handler's answer: a status, or (status, attribute list Dataset or None)."""
    reply = None
    if isinstance(result, tuple):
        result, reply = result
        if reply is not None and not isinstance(reply, Dataset):
            raise TypeError(f"an N-service handler's data set must be a Dataset, not {reply!r}")
    if isinstance(result, Dataset):
        fields = (
            {"error_comment": str(result.ErrorComment)[:64]} if "ErrorComment" in result else {}
        )
        return _status_code(result.Status), fields, reply
    return _status_code(result), {}, reply


@contextlib.asynccontextmanager
async def _handler_items(
    found: tuple[Any, tuple[Any, ...]], event: Event
) -> AsyncIterator[AsyncIterator[Any]]:
    """The items a C-FIND/C-GET/C-MOVE handler produces, closed when the block exits.

    A handler is normally an async generator; it is closed deterministically (never left to
    the garbage collector) whether the operation finished, failed or was cancelled. An
    ``async def`` returning an iterable is accepted too.
    """
    handler, args = found
    result = handler(event, *args)
    if inspect.isasyncgen(result):
        async with contextlib.aclosing(result):
            yield result
        return
    if inspect.isawaitable(result):
        result = await result
    yield _as_async(result)


async def _as_async(items: Any) -> AsyncIterator[Any]:
    for item in items:
        yield item
