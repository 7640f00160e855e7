"""L3: one association over an anyio byte stream, for either role.

The protocol state lives in the sans-IO ``ULConnection`` (PS3.8) and ``MessageAssembler``
(PS3.7/PS3.8 Annex E); this class only moves bytes and routes what they produce.

Reading. Bytes are read in exactly one place, ``_read_once``, by one task at a time (the
read lock). On the acceptor side a dedicated reader task (``serve``) reads for ever and
starts a handler task per request. On the requestor side there is no background task (so
that ``assoc = await ae.associate(...)`` needs no task group): whichever task waits for a
response takes the read lock and reads one chunk, dispatching everything in it to every
waiter (the leader/follower pattern). Either way, dispatch is synchronous: no handler runs
in the middle of decoding.

Writing. ``ULConnection`` calls are synchronous and complete, so tasks may queue PDUs from
any task between awaits; ``_flush`` drains the queue under the write lock. A DIMSE message
is queued and flushed under the send lock, so fragments of two messages never interleave.
"""

from __future__ import annotations

import contextlib
import logging
import math
import weakref
from collections import deque
from collections.abc import AsyncIterable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, TypeVarTuple, overload

import anyio
import anyio.abc
import attrs
from pydicom.uid import UID

from dicomio import _transport, errors
from dicomio._locks import Gate, Signal
from dicomio._receive import IncomingRequests
from dicomio._retrieve import RetrieveProviderMixin
from dicomio._scp import ServiceProviderMixin
from dicomio._scu import ServiceUserMixin
from dicomio.config import TimeoutAttributes, Timeouts
from dicomio.dimse import (
    CCancelRQ,
    CommandReceived,
    DataFragment,
    JoinedLater,
    MessageAssembler,
    MessageReceived,
    data_parts,
    encode_command,
    fragment,
    fragment_parts,
    max_fragment_size,
)
from dicomio.events import (
    EVT_ABORTED,
    EVT_CONN_CLOSE,
    EVT_REJECTED,
    EVT_RELEASED,
    AnyEventType,
    Event,
    EventType,
    Handler,
    HandlerList,
)
from dicomio.pdu import (
    Abort,
    AssociateAC,
    AssociateRJ,
    AssociateRQ,
    AsynchronousOperationsWindow,
    DataRun,
    ImplementationClassUID,
    ImplementationVersionName,
    MaximumLength,
    PDataTF,
    ReleaseRP,
    ReleaseRQ,
    UserIdentityAC,
)
from dicomio.presentation import PresentationContext
from dicomio.status import PENDING_CODES
from dicomio.ul import ProviderAbort, Role, TransportClosed, ULConnection

_Answer = TypeVar("_Answer")
_Fields = TypeVarTuple("_Fields")

if TYPE_CHECKING:
    from dicomio.ae import AE

__all__ = ["Association"]

#: How much to ask the socket for at once: large reads are what make big transfers cheap.
READ_SIZE = 262_144
#: As much for the lean asyncio stream, which reads up to this much itself when data comes
#: in bulk (``_transport.READ_SIZE_LARGE``): asking for less would cut its reads (a copy).
LEAN_READ_SIZE = _transport.READ_SIZE_LARGE
#: A window value of 0 means "unlimited" (PS3.7 D.3.3.3); bounded by the message-ID space.
UNLIMITED_WINDOW = 65535
#: Queue outbound PDUs up to this many bytes before writing; small messages leave in one write.
FLUSH_THRESHOLD = 262_144
#: The most of an in-memory data set queued for one write (views of it, not copies): a
#: 0.5 MB instance and its command go out in one system call instead of one per PDU.
SEND_BATCH = 1 << 20

_log = logging.getLogger("dicomio.association")

_CLOSED_ERRORS = (
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    ConnectionError,
    OSError,
)


class _PeerLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """One logger per association: every line names the peer (and ``extra['peer']`` too)."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        assert self.extra is not None
        kwargs.setdefault("extra", {}).update(self.extra)
        return f"[{self.extra['peer']}] {msg}", kwargs


def summary(command: Any) -> str:
    """A one-line DIMSE summary without data set contents, so no patient identifiers."""
    name = type(command).__name__
    fields = [
        f"id={getattr(command, 'message_id', None) or command.message_id_being_responded_to}"
    ]
    status = getattr(command, "status", None)
    if status is not None:
        fields.append(f"status=0x{status:04X}")
    uid = getattr(command, "affected_sop_class_uid", None) or getattr(
        command, "requested_sop_class_uid", None
    )
    if uid:
        fields.append(f"class={uid}")
    return f"{name} {' '.join(fields)}"


class _Operation:
    """A request we sent, waiting for one or more responses (PS3.7 9.3 / 10.3)."""

    __slots__ = ("abandoned", "final", "message_id", "responses", "wakeup")

    def __init__(self, message_id: int) -> None:
        self.message_id = message_id
        self.responses: deque[tuple[Any, bytes | None]] = deque()
        self.wakeup: anyio.Event | Signal | None = None
        self.final = False
        self.abandoned = False

    def deliver(self, command: Any, dataset: bytes | None) -> None:
        self.responses.append((command, dataset))
        if self.wakeup is not None:
            self.wakeup.set()


@attrs.frozen
class ServiceUser:
    """One side of an association, as pynetdicom's ``assoc.requestor`` and ``assoc.acceptor``
    show it: who it is, where, and what it negotiated for itself."""

    ae_title: str
    address: str
    port: int
    #: The largest P-DATA-TF PDU this side receives (0: no limit), PS3.8 D.1.
    maximum_length: int
    implementation_class_uid: UID | None
    implementation_version_name: str | None


class Association(
    ServiceUserMixin, ServiceProviderMixin, RetrieveProviderMixin, TimeoutAttributes
):
    """An association, as requestor (made by ``AE.associate``) or acceptor (by the server).

    Attributes follow pynetdicom where a pynetdicom user would look: ``accepted_contexts``,
    ``rejected_contexts``, ``is_established``, ``is_released``, ``is_aborted``,
    ``requestor`` and ``acceptor`` (``ServiceUser``), ``local`` and ``remote``, ``mode``,
    the timeouts; and as plain attributes, ``remote_ae_title``, ``remote_max_pdu``,
    ``remote_implementation_class_uid`` ...
    """

    def __init__(
        self,
        ae: AE,
        stream: anyio.abc.ByteStream,
        *,
        role: Role,
        local_ae_title: str,
        remote_address: tuple[str, int],
        timeouts: Timeouts,
        max_pdu: int,
        handlers: HandlerList = (),
    ) -> None:
        self.ae = ae
        self._stream = stream
        #: Where reads are acknowledged at once (``_transport.ack_now``), or None.
        self._ack_socket = _transport.ack_socket(stream)
        #: Bytes were read and nothing written since, which would have carried their ACK:
        #: acknowledged before the next wait for the peer (``_read_once``).
        self._ack_pending = False
        #: The event loop's clock (what anyio.current_time reads, without finding the backend).
        self._now = _transport.clock()
        self.role = role
        self._ul = ULConnection(
            role, max_pdu_length=max_pdu, artim_timeout=timeouts.acse or 30.0, data_runs=True
        )
        # Data sets joined when someone wants their bytes (Event.raw): see _on_dimse.
        self._assembler = MessageAssembler(stream_if=self._stream_if, join_later=True)
        self.timeouts = timeouts
        self.local_ae_title = local_ae_title
        self.remote_address = remote_address
        self.local_max_pdu = max_pdu
        self._handlers: dict[AnyEventType, list[tuple[Any, Sequence[Any]]]] = {}
        for entry in handlers:
            self.bind(entry[0], entry[1], entry[2] if len(entry) > 2 else ())

        # Filled in by negotiation.
        self.remote_ae_title = ""
        self.remote_max_pdu = 0
        self.remote_implementation_class_uid: UID | None = None
        self.remote_implementation_version_name: str | None = None
        self.requested_contexts: tuple[PresentationContext, ...] = ()
        self.accepted_contexts: tuple[PresentationContext, ...] = ()
        self.rejected_contexts: tuple[PresentationContext, ...] = ()
        #: (maximum number invoked, maximum number performed) as negotiated, from our side.
        self.async_ops_window: tuple[int, int] = (1, 1)
        self.user_identity_response: bytes | None = None
        self.associate_rq: AssociateRQ | None = None
        self.associate_ac: AssociateAC | None = None

        self.is_established = False
        self.is_released = False
        self.is_aborted = False
        # Whether it was ever established, and whether EVT_RELEASED/EVT_ABORTED has fired.
        self._was_established = False
        self._end_notified = False
        self._reply: AssociateAC | AssociateRJ | AssociateRQ | None = None
        self._failure: errors.DicomioError | None = None
        #: Set once the association is over (released, aborted or disconnected).
        self._ended: anyio.Event | None = None  # made when someone waits for it
        self._transport_closed = False
        self._transport_closing = False
        #: Close the transport once everything queued is written (A-RELEASE-RP sent).
        self._close_when_sent = False

        # fast_acquire: an uncontended lock must not cost a trip through the event loop;
        # these are taken several times per message.
        self._read_lock = Gate(on_free=self._wake_follower)
        # Operations waiting for a response while another task reads (see _follow).
        self._followers: deque[tuple[_Operation, Signal]] = deque()
        self._write_lock = Gate()
        self._send_lock = Gate()
        self._window: Gate = Gate(1)
        self._ops: dict[int, _Operation] = {}
        self._next_id = 1
        self._background_reader = False
        # The reader task is running a request itself (see serve): waiters read meanwhile.
        self._reader_busy = False
        #: Open ``receive_requests()`` iterators, told of every request answered.
        self._receivers: weakref.WeakSet[IncomingRequests] | None = None  # made by the first
        self._incoming: deque[tuple[int, Any, bytes | JoinedLater | None]] = deque()
        #: An A-RELEASE-RQ arrived and its A-RELEASE-RP waits for the answers to the requests
        #: received before it (``_release_if_answered``).
        self._release_requested = False
        self._deferred: list[PDataTF] = []
        self._outbox: list[bytes | memoryview] = []
        self.log = _PeerLogger(_log, {"peer": f"{remote_address[0]}:{remote_address[1]}"})
        ServiceProviderMixin.__init__(self)

    def _mark_established(self) -> None:
        """Negotiation succeeded (requestor: the A-ASSOCIATE-AC read; acceptor: sent)."""
        self.is_established = True
        self._was_established = True

    # -- who is who (pynetdicom's names) ----------------------------------------------------

    @property
    def is_requestor(self) -> bool:
        return self.role is Role.REQUESTOR

    @property
    def is_acceptor(self) -> bool:
        return self.role is Role.ACCEPTOR

    @property
    def mode(self) -> str:
        """``"requestor"`` or ``"acceptor"``: our side of the association."""
        return "requestor" if self.role is Role.REQUESTOR else "acceptor"

    def _local_side(self) -> ServiceUser:
        host, port = "", 0
        with contextlib.suppress(Exception):  # no socket (an in-memory stream)
            local = self._stream.extra(anyio.abc.SocketAttribute.local_address)
            if isinstance(local, tuple):
                host, port = str(local[0]), int(local[1])
        return ServiceUser(
            ae_title=self.local_ae_title,
            address=host,
            port=port,
            maximum_length=self.local_max_pdu,
            implementation_class_uid=UID(self.ae.implementation_class_uid),
            implementation_version_name=self.ae.implementation_version_name,
        )

    def _remote_side(self) -> ServiceUser:
        return ServiceUser(
            ae_title=self.remote_ae_title,
            address=self.remote_address[0],
            port=self.remote_address[1],
            maximum_length=self.remote_max_pdu,
            implementation_class_uid=self.remote_implementation_class_uid,
            implementation_version_name=self.remote_implementation_version_name,
        )

    @property
    def requestor(self) -> ServiceUser:
        """The side that requested the association."""
        return self._local_side() if self.role is Role.REQUESTOR else self._remote_side()

    @property
    def acceptor(self) -> ServiceUser:
        """The side that accepted (or is asked to accept) the association."""
        return self._remote_side() if self.role is Role.REQUESTOR else self._local_side()

    @property
    def local(self) -> dict[str, Any]:
        """Our side as pynetdicom's ``assoc.local`` dict: address, port, ae_title, pdv_size."""
        return _as_dict(self._local_side())

    @property
    def remote(self) -> dict[str, Any]:
        """The peer's side as pynetdicom's ``assoc.remote`` dict."""
        return _as_dict(self._remote_side())

    # -- handlers ---------------------------------------------------------------------------

    @property
    def is_usable(self) -> bool:
        """Established, not released or aborted, and with no failure or closed connection
        seen so far: a request may be sent (as far as this side knows without reading)."""
        if not self.is_established or self.is_released or self.is_aborted:
            return False
        return self._failure is None and not self._transport_closed

    @property
    def outstanding_requests(self) -> int:
        """Requests sent on this association whose final response has not arrived."""
        return len(self._ops)

    def has_unread_input(self) -> bool:
        """Whether the peer sent something not read yet (looked at without reading).

        A requestor reads only while a call waits for a response, so what an idle peer
        sent (an A-ABORT, an A-RELEASE-RQ, the end of the connection) waits unread; an
        association pool asks this before lending an idle association.
        """
        return _transport.input_waiting(self._stream)

    def get_events(self) -> list[AnyEventType]:
        """The events that have handlers bound (pynetdicom's ``get_events``)."""
        return [event for event, handlers in self._handlers.items() if handlers]

    @overload
    def bind(
        self, event: EventType[_Answer, *_Fields], handler: Callable[[Event, *_Fields], _Answer]
    ) -> None: ...
    @overload
    def bind(self, event: AnyEventType, handler: Handler, args: Sequence[Any]) -> None: ...
    def bind(self, event: AnyEventType, handler: Handler, args: Sequence[Any] = ()) -> None:
        """Bind ``handler`` to ``event`` (pynetdicom's ``Association.bind``).

        Without ``args``, mypy checks the handler against the event (see ``EventType``);
        with them it cannot, as in ``evt_handlers`` (``events.handler`` can).
        """
        self._handlers.setdefault(event, []).append((handler, tuple(args)))

    def unbind(self, event: AnyEventType, handler: Handler) -> None:
        self._handlers[event] = [h for h in self._handlers.get(event, []) if h[0] is not handler]

    def get_handlers(self, event: AnyEventType) -> list[tuple[Any, Sequence[Any]]]:
        return self._handlers.get(event, [])

    async def _notify(self, event: AnyEventType) -> None:
        """Fire a notification event; a failing notification handler is logged, not fatal."""
        for handler, args in self._handlers.get(event, []):
            try:
                await handler(Event(event, self), *args)
            except Exception:
                self.log.exception("notification handler for %s raised", event.name)

    # -- contexts -----------------------------------------------------------------------------

    def _context(self, context_id: int) -> PresentationContext | None:
        for cx in self.accepted_contexts:
            if cx.context_id == context_id:
                return cx
        return None

    # -- reading ------------------------------------------------------------------------------

    async def _read_once(self, deadline: float | None = None) -> bool:
        """Read one chunk (or let the ARTIM timer fire) and dispatch everything it yields.

        ``deadline`` (the loop's clock) bounds the wait for a chunk; False means it passed
        with nothing read.
        """
        if self._transport_closed:
            self._fail(errors.ConnectionClosed("the connection is closed"))
            return True
        ul = self._ul
        artim = ul.next_deadline()
        until = artim if deadline is None else deadline if artim is None else min(artim, deadline)
        data: bytes | None = None
        stream = self._stream
        if self._ack_pending:
            # What we read last is still unacknowledged, and we are about to wait for the
            # peer: a peer with Nagle's algorithm on may be holding its next bytes until the
            # ACK comes (see ack_now). Had we answered, the answer would have carried it.
            self._ack_pending = False
            _transport.ack_now(self._ack_socket)  # type: ignore[arg-type]
        try:
            if isinstance(stream, _transport.AsyncioSocketStream):
                if until is None:
                    data = await stream.receive(LEAN_READ_SIZE)
                else:
                    data = await stream.receive_before(LEAN_READ_SIZE, until)
            elif until is None:
                data = await stream.receive(READ_SIZE)
            else:
                with anyio.CancelScope(deadline=until):
                    data = await stream.receive(READ_SIZE)
        except _transport.Handed:
            # The receive hook (ServiceProviderMixin._take_data) has fed the bytes to the
            # Upper Layer and routed its events; what they left to await is done here.
            error, self._hook_error = self._hook_error, None
            if error is not None:
                raise error from None
            await self._after_ul([])
            return True
        except _CLOSED_ERRORS:
            data = b""
        now = self._now()
        if data is not None:
            if data and self._ack_socket is not None:
                self._ack_pending = True
            events = ul.receive_data(data, now=now)
        elif artim is not None and now >= artim:
            events = ul.handle_timer(now=now)
        else:
            return False
        # Whatever the Upper Layer queued goes out now, event or not: AE-6's A-ASSOCIATE-RJ
        # and AA-7's A-ABORT come with nothing to report (PS3.8 Table 9-10).
        if events or ul.should_close or ul.has_data_to_send:
            await self._after_ul(events)
        return True

    async def _after_ul(self, events: list[Any]) -> None:
        """Route the Upper Layer's events, then flush what it (and they) queued."""
        if events:
            if self._debug:
                for event in events:
                    self._on_ul_event(event)
            else:
                # What _on_ul_event and _on_dimse do for a P-DATA-TF and for a response,
                # without their calls and checks per PDU: a C-FIND's answers come many
                # to a read.
                receive = self._assembler.receive
                for event in events:
                    if type(event) is not PDataTF:
                        self._on_ul_event(event)
                        continue
                    try:
                        items = receive(event)
                    except errors.RemoteProtocolError as exc:
                        self._malformed_dimse(exc)
                        continue
                    for item in items:
                        if type(item) is MessageReceived and item.command.command_field & 0x8000:
                            dataset = item.dataset
                            self._on_response(
                                item.command,
                                bytes(dataset) if isinstance(dataset, JoinedLater) else dataset,
                            )
                        else:
                            self._on_dimse(item)
        if self._outbox or self._ul.has_data_to_send:
            await self._flush()
        if (
            self._ul.should_close
            or self._transport_closing
            or (self._close_when_sent and self._sent())
        ):
            await self._close_transport()
        if self._deferred and not self._send_lock.locked():
            await self._send_deferred()

    def _sent(self) -> bool:
        """Whether the kernel has taken everything written (anyio's streams: always)."""
        stream = self._stream
        if type(stream) is _transport.AsyncioSocketStream:
            return stream.sent_nowait()
        return True

    @property
    def _debug(self) -> bool:
        return _log.isEnabledFor(logging.DEBUG)

    def _on_ul_event(self, event: Any) -> None:
        if type(event) is not PDataTF and type(event) is not DataRun and self._debug:
            self.log.debug("received %s", _pdu_summary(event))
        if isinstance(event, (PDataTF, DataRun)):
            try:
                items = self._assembler.receive(event)
            except errors.RemoteProtocolError as exc:
                self._malformed_dimse(exc)
                return
            for item in items:
                self._on_dimse(item)
        elif isinstance(event, (AssociateAC, AssociateRJ, AssociateRQ)):
            self._reply = event
        elif isinstance(event, ReleaseRQ):
            # PS3.8 7.2: an A-RELEASE request is always answered affirmatively; in a
            # release collision the state machine decides when the RP goes out.
            self.log.debug("received A-RELEASE-RQ")
            self._release_requested = True
            self._release_if_answered(later=False)
        elif isinstance(event, ReleaseRP):
            self.log.debug("received A-RELEASE-RP")
            self.is_released = True
            self._fail(errors.AssociationReleased("the association was released"))
        elif isinstance(event, Abort):
            aborted = errors.AssociationAborted(event.source, event.reason)
            self.log.info("peer aborted: %s", aborted)
            self.is_aborted = True
            self._fail(aborted)
        elif isinstance(event, ProviderAbort):
            self.log.warning("provider abort: %s", event.message)
            self.is_aborted = True
            self._fail(errors.AssociationAborted(2, event.reason, event.message))
        elif isinstance(event, TransportClosed) and not (
            self.is_released or isinstance(self._failure, errors.AssociationReleased)
        ):
            self.is_aborted = self.is_established or self.is_aborted
            self.is_established = False
            self._fail(errors.ConnectionClosed("the peer closed the connection"))

    def _malformed_dimse(self, exc: errors.RemoteProtocolError) -> None:
        """Well-framed P-DATA carrying a broken DIMSE message: the peer broke PS3.7, so
        answer as for a bad PDU (A-ABORT, source 2, the error's reason) and end the
        association for every waiter. _after_ul flushes the abort and closes."""
        self.log.warning("peer sent a malformed DIMSE message: %s; aborting", exc)
        with contextlib.suppress(errors.LocalProtocolError):
            self._ul.send_abort(
                source=int(exc.abort_source),
                reason=int(exc.abort_reason),
                now=self._now(),
            )
        self.is_aborted = True
        self.is_established = False
        self._fail(
            errors.AssociationAborted(int(exc.abort_source), int(exc.abort_reason), str(exc))
        )
        self._transport_closing = True

    def _on_dimse(self, item: Any) -> None:
        if isinstance(item, MessageReceived):
            command = item.command
            if self._debug:
                self.log.debug(
                    "received %s ctx=%d data=%s",
                    summary(command),
                    item.context_id,
                    "none" if item.dataset is None else f"{len(item.dataset)} bytes",
                )
            if command.command_field & 0x8000:
                dataset = item.dataset
                self._on_response(
                    command, bytes(dataset) if isinstance(dataset, JoinedLater) else dataset
                )
            elif isinstance(command, CCancelRQ):
                self._on_cancel(command)
            else:
                self._incoming.append((item.context_id, command, item.dataset))
                if self._background_reader:
                    self._start_pending_requests()
        elif isinstance(item, CommandReceived):
            self._open_stream(item.context_id, item.command)
        elif isinstance(item, DataFragment):
            self._stream_fragment(item.context_id, item.data, item.is_last)

    def _on_response(self, command: Any, dataset: bytes | None) -> None:
        op = self._ops.get(command.message_id_being_responded_to)
        if op is None:
            self.log.warning(
                "response to unknown message ID %s ignored", command.message_id_being_responded_to
            )
            return
        status = getattr(command, "status", 0)
        if status not in PENDING_CODES:
            op.final = True
            if op.abandoned:
                del self._ops[op.message_id]
                if op.wakeup is not None:
                    op.wakeup.set()  # a cancelling task waits for exactly this
                return
        if not op.abandoned:
            op.deliver(command, dataset)

    def _fail(self, failure: errors.DicomioError) -> None:
        """The association is over: every waiter learns why at once."""
        if self._failure is None:
            self._failure = failure
        if self._ended is not None:
            self._ended.set()
        self._wake_waiters()
        self._fail_provider(failure)

    def _wake_waiters(self) -> None:
        """Wake every task waiting for a response or a request, to look again at who reads."""
        for op in self._ops.values():
            if op.wakeup is not None:
                op.wakeup.set()
        if self._receivers:
            for receiver in self._receivers:
                receiver.wake()

    # -- waiting for responses ------------------------------------------------------------------

    def _new_operation(self) -> _Operation:
        if self._failure is not None:
            raise self._failure
        for _ in range(65536):
            mid = self._next_id
            self._next_id = 1 if mid >= 0xFFFF else mid + 1
            if mid not in self._ops:
                op = _Operation(mid)
                self._ops[mid] = op
                return op
        raise errors.LocalProtocolError("no free message ID: 65,535 operations outstanding")

    async def _next_response(
        self, op: _Operation, timeout: float | None
    ) -> tuple[Any, bytes | None]:
        """The next response to ``op``, reading the socket ourselves if nobody else is."""
        deadline = None if timeout is None else self._now() + timeout
        limit = math.inf if deadline is None else deadline
        while not op.responses:
            if self._failure is not None:
                raise self._failure
            if self._background_reader and not self._reader_busy:
                # The reader task delivers; wait for it to wake us.
                op.wakeup = anyio.Event()
                with anyio.CancelScope(deadline=limit):
                    await op.wakeup.wait()
                op.wakeup = None
            elif self._read_lock.locked():
                await self._follow(op, limit)
            else:
                # Nobody is reading: we are the reader (no cancel scope on this, the usual
                # path). The lock is free (just checked): taken without a coroutine call.
                lock = self._read_lock
                lock.acquire_nowait()
                try:
                    await self._lead_read(op, deadline, timeout)
                finally:
                    lock.release()
            if not op.responses and self._now() >= limit:
                if not self._read_lock.locked():
                    # We may have been picked to read next (our deadline passing before we
                    # ran): we raise instead, so the turn goes to the next follower.
                    self._wake_follower()
                self._dimse_timeout(op, timeout)
        response = op.responses.popleft()
        if op.final and not op.responses:
            self._ops.pop(op.message_id, None)
        return response

    async def _follow(self, op: _Operation, limit: float) -> None:
        """Wait while another task reads: for our response, or for our turn to read.

        The reader delivers every response it reads, ours included, and wakes us directly;
        when it stops reading (its own response came) and nobody is queued for the read lock,
        the first follower still without a response is woken to read next. So one read wakes
        every task it answers in the same turn of the loop.
        """
        signal = Signal()
        op.wakeup = signal
        self._followers.append((op, signal))
        try:
            await signal.wait(limit)
        except BaseException:
            if signal.is_set() and not self._read_lock.locked():
                self._wake_follower()  # we were woken to read next: pass that on
            raise
        finally:
            op.wakeup = None

    def _wake_follower(self) -> None:
        """Wake the first follower that still waits for a response: it reads next.

        With none, a task waiting in ``receive_requests()`` reads next.
        """
        followers = self._followers
        while followers:
            op, signal = followers.popleft()
            if not signal.is_set() and op.wakeup is signal and not op.responses:
                signal.set()
                return
        if self._receivers:
            for receiver in self._receivers:
                receiver.wake()

    async def _lead_read(
        self, op: _Operation, deadline: float | None, timeout: float | None
    ) -> None:
        """One read for every waiter, by the task holding the read lock."""
        if not await self._read_once(deadline):
            self._dimse_timeout(op, timeout)
        if self._incoming:
            await self._run_incoming_inline()

    @staticmethod
    def _dimse_timeout(op: _Operation, timeout: float | None) -> NoReturn:
        raise errors.DIMSETimeout(
            f"no DIMSE response to message {op.message_id} within {timeout} s"
        )

    def _release_operation(self, op: _Operation) -> None:
        self._ops.pop(op.message_id, None)

    # -- writing ------------------------------------------------------------------------------

    def set_window(self, invoked: int, performed: int) -> None:
        """Apply a negotiated asynchronous operations window (PS3.7 D.3.3.3), 0 = unlimited."""
        self.async_ops_window = (invoked or UNLIMITED_WINDOW, performed or UNLIMITED_WINDOW)
        self._window = Gate(self.async_ops_window[0])
        self._performing = Gate(self.async_ops_window[1])

    async def _flush(self) -> None:
        """Write everything the Upper Layer has queued, in order.

        Parts are drained from the Upper Layer into one outbox before the write lock is
        taken, so whoever holds the lock writes everything queued so far, in queue order,
        and a flush with nothing queued costs no lock at all.
        """
        self._outbox.extend(self._ul.data_to_send())
        if not self._outbox:
            return
        self._ack_pending = False  # what leaves now carries the ACK of what was read
        stream = self._stream
        try:
            if (
                type(stream) is _transport.AsyncioSocketStream
                and not self._write_lock.locked()
                and not self._transport_closed
            ):
                # Nobody is writing: small messages join the loop turn's other small writes
                # (see AsyncioSocketStream.send_soon), which is one system call for the
                # answers of many tasks woken by one read. Taken in full or not at all.
                parts = self._outbox
                if sum(map(len, parts)) <= _transport.COALESCE_LIMIT:
                    data = parts[0] if len(parts) == 1 else b"".join(parts)
                    self._outbox = []
                    if await stream.send_soon(data):
                        return
                    self._outbox = [data, *self._outbox]
            async with self._write_lock:
                parts, self._outbox = self._outbox, []
                if parts and not self._transport_closed:
                    if isinstance(self._stream, _transport.AsyncioSocketStream):
                        # Bytes handed to the asyncio transport stay queued there if this
                        # task is cancelled while waiting: the stream cannot be torn.
                        await self._write(parts)
                    else:
                        await self._write_whole(parts)
        except _CLOSED_ERRORS:
            self._fail(errors.ConnectionClosed("the connection closed while sending"))
            await self._close_transport()
            assert self._failure is not None
            raise self._failure from None

    async def _write_whole(self, parts: list[bytes | memoryview]) -> None:
        """``_write`` that a cancellation cannot interrupt halfway.

        anyio's streams (trio, TLS) may have sent part of a buffer when a cancellation
        arrives; the rest of that PDU would be lost and the peer would read garbage. So
        the write is shielded, bounded by the network timeout, after which the association
        is aborted as a peer that stopped reading.
        """
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(self.timeouts.network) as scope:
                await self._write(parts)
            if scope.cancelled_caught:
                self.log.warning("peer took nothing for %s s: aborting", self.timeouts.network)
                self._fail(errors.ConnectionClosed("the peer stopped reading"))
                await self._close_transport()
                raise anyio.BrokenResourceError

    async def _write(self, parts: list[bytes | memoryview]) -> None:
        """Send queued parts: small ones joined into one write, large ones as they are.

        The lean asyncio stream takes them all at once (one gathering system call, no join).
        """
        stream = self._stream
        if len(parts) == 1:
            await stream.send(parts[0])  # type: ignore[arg-type]
            return
        if type(stream) is _transport.AsyncioSocketStream:
            await stream.send_parts(parts)
            return
        if sum(len(p) for p in parts) <= FLUSH_THRESHOLD:
            await stream.send(b"".join(parts))
            return
        small: list[bytes | memoryview] = []
        for part in parts:
            if len(part) < 65536:
                small.append(part)
                continue
            if small:
                await stream.send(b"".join(small))
                small = []
            await stream.send(part)  # type: ignore[arg-type]
        if small:
            await stream.send(b"".join(small))

    async def send_message(
        self,
        context_id: int,
        command: Any,
        dataset: bytes | memoryview | AsyncIterable[bytes] | None = None,
    ) -> None:
        """Send one DIMSE message, fragmented within the peer's maximum PDU (PS3.8 9.3.5).

        ``dataset`` may be the encoded bytes or an async iterable of chunks (a file being read),
        in which case it is sent chunk by chunk in bounded memory.
        """
        if self._failure is not None:
            raise self._failure
        if self._debug:
            self.log.debug("sending %s ctx=%d", summary(command), context_id)
        ul, max_pdu = self._ul, self.remote_max_pdu
        async with self._send_lock:
            encoded = encode_command(command)
            if dataset is None or isinstance(dataset, (bytes, bytearray, memoryview)):
                if dataset is None or len(dataset) <= FLUSH_THRESHOLD:
                    ul.send_pdata_parts(
                        fragment_parts(context_id, encoded, dataset, max_pdu), now=self._now()
                    )
                else:
                    # Queued and written a batch at a time, the command with the first:
                    # whole fragments, views of the data set, so that what the kernel does
                    # not take at once (which the transport copies) is at most SEND_BATCH.
                    ul.send_pdata_parts(
                        fragment_parts(context_id, encoded, None, max_pdu), now=self._now()
                    )
                    size = max_fragment_size(max_pdu)
                    batch = max(size, SEND_BATCH - SEND_BATCH % size)
                    view = memoryview(dataset).cast("B")
                    for start in range(0, len(view), batch):
                        ul.send_pdata_parts(
                            data_parts(
                                context_id,
                                view[start : start + batch],
                                max_pdu,
                                is_last=start + batch >= len(view),
                            ),
                            now=self._now(),
                        )
                        if start + batch < len(view):
                            await self._flush()
                await self._flush()
            else:
                ul.send_pdata_parts(
                    fragment_parts(context_id, encoded, None, max_pdu), now=self._now()
                )
                await self._flush()
                size = max_fragment_size(max_pdu)
                pending = b""
                async for chunk in dataset:
                    buf = memoryview(pending + chunk if pending else chunk)
                    end = len(buf) - len(buf) % size
                    # Keep at least one byte back so that the last PDV carries the last flag.
                    if end == len(buf):
                        end -= size
                    if end > 0:
                        ul.send_pdata_parts(
                            data_parts(context_id, buf[:end], max_pdu, is_last=False),
                            now=self._now(),
                        )
                    pending = bytes(buf[end:])
                    await self._flush()
                ul.send_pdata_parts(
                    data_parts(context_id, pending, max_pdu, is_last=True), now=self._now()
                )
                await self._flush()
        if self._deferred:
            await self._send_deferred()

    async def _send_encoded(self, pdu: bytes) -> None:
        """``send_message`` for a command-only message already encoded as one P-DATA-TF.

        From a command set template (``message_id_template``). One whole PDU queued at once
        cannot interleave with another message's fragments, so the send lock is taken only
        when another message is being sent, to go after it.
        """
        if self._failure is not None:
            raise self._failure
        if self._send_lock.locked():
            async with self._send_lock:
                self._ul.send_pdata_parts([pdu], now=self._now())
                await self._flush()
        else:
            self._ul.send_pdata_parts([pdu], now=self._now())
            await self._flush()
        if self._deferred:
            await self._send_deferred()

    async def send_messages(
        self, context_id: int, messages: Sequence[tuple[Any, bytes, bytes | None]]
    ) -> None:
        """Send small DIMSE messages back to back, in one write where they fit (PS3.8 9.3.5).

        Each message is (command, its encoded command set, its encoded data set or None):
        a C-FIND SCP sends the pending responses its handler has ready this way, with the
        command set encoded once for all of them.
        """
        if self._failure is not None:
            raise self._failure
        ul, debug = self._ul, self._debug
        async with self._send_lock:
            now = self._now()
            queued = 0
            for command, encoded, dataset in messages:
                if debug:
                    self.log.debug("sending %s ctx=%d", summary(command), context_id)
                ul.send_pdata_parts(
                    fragment_parts(context_id, encoded, dataset, self.remote_max_pdu), now=now
                )
                queued += len(encoded) + (len(dataset) if dataset is not None else 0)
                if queued >= FLUSH_THRESHOLD:
                    await self._flush()
                    queued = 0
            await self._flush()
        if self._deferred:
            await self._send_deferred()

    def _send_nowait(self, context_id: int, command: Any) -> None:
        """Queue a small command-only message without waiting (C-CANCEL, default C-ECHO answers).

        If another message is being sent, the PDUs wait until it is complete, so that
        fragments of two messages never interleave.
        """
        if self._failure is not None or self._transport_closed:
            return
        pdus = list(fragment(context_id, encode_command(command), None, self.remote_max_pdu))
        if self._send_lock.locked():
            self._deferred.extend(pdus)
            return
        for pdata in pdus:
            self._ul.send_pdata(pdata, now=self._now())

    async def _send_deferred(self) -> None:
        async with self._send_lock:
            pdus, self._deferred = self._deferred, []
            for pdata in pdus:
                self._ul.send_pdata(pdata, now=self._now())
            await self._flush()

    # -- requests that come to a requestor ------------------------------------------------------

    def receive_requests(self, *, timeout: float | None = None) -> IncomingRequests:
        """Wait for requests the peer sends on this association and answer them.

        ``async for event in assoc.receive_requests(timeout=30):`` reads the association
        while the loop waits: each request the peer sends (an N-EVENT-REPORT, a C-STORE
        ...) goes to the handler bound for it (``evt_handlers`` of ``AE.associate``, or
        ``bind``), whose answer is sent as the response, and then its ``Event`` is yielded
        (``event.event``, ``event.request``, ``event.dataset``...). A request without a
        handler gets the usual failure status. This is how a requestor waits for a Storage
        Commitment result on the association of its N-ACTION (PS3.4 J.3.3).

        ``timeout`` bounds the wait for each next request, in seconds (None: no limit but
        the caller's own cancel scopes); when it passes, ``DIMSETimeout`` is raised. The
        loop ends when the peer releases the association; an abort raises as usual.

        Nothing runs in the background: other tasks may go on calling ``send_*`` meanwhile
        (one read serves everyone), and once the loop is left, by ``break``, an exception or
        a cancellation, the association is as before, so ``release()`` completes at once.
        ``async with assoc.receive_requests() as requests:`` scopes the iterator exactly.

        Every request answered from the moment this is called is yielded, whichever task
        read it: a peer may report before it answers the N-ACTION, and then the report went
        to its handler while ``send_n_action`` waited, and is yielded first. So make the
        receiver before the request that provokes the reports::

            async with assoc.receive_requests(timeout=30) as requests:
                await assoc.send_n_action(...)
                async for event in requests:
                    ...

        Requests answered before it was made are not yielded.
        """
        return IncomingRequests(self, timeout)

    # -- ending ---------------------------------------------------------------------------------

    async def release(self) -> None:
        """Release the association (A-RELEASE, PS3.8 7.2), aborting if the peer does not answer."""
        if not self.is_established or self._failure is not None:
            await self._close_transport()
            return
        self.log.debug("sending A-RELEASE-RQ")
        self._ul.send_release_rq(now=self._now())
        await self._flush()
        acse = self.timeouts.acse
        deadline = None if acse is None else self._now() + acse
        while not self.is_released and not self._transport_closed:
            if self._background_reader or self._read_lock.locked():
                # Another task reads (the acceptor's reader task, or a requestor's waiter):
                # wait for it, bounded by the same deadline.
                with anyio.CancelScope(deadline=math.inf if deadline is None else deadline):
                    if self._background_reader:
                        if self._failure is None:  # else it has ended already
                            if self._ended is None:
                                self._ended = anyio.Event()
                            await self._ended.wait()  # the reader task is reading for us
                        break
                    async with self._read_lock:
                        await self._read_once()
            else:
                # The usual case: we read, with the deadline on the read itself (a loop
                # timer, cheaper than a cancel scope: a pool releases many at once).
                async with self._read_lock:
                    if not await self._read_once(deadline):
                        break  # the deadline passed with nothing read
            if isinstance(self._failure, errors.AssociationAborted):
                break
            if deadline is not None and self._now() >= deadline:
                break
        if not self.is_released and not self.is_aborted:
            self.log.warning("no A-RELEASE-RP within the ACSE timeout: aborting")
            await self.abort()
            return
        self.is_established = False
        await self._close_transport()
        await self._notify_ended()

    async def abort(self, source: int = 0, reason: int = 0) -> None:
        """Abort the association (A-ABORT, PS3.8 7.3); never waits longer than a moment."""
        with anyio.CancelScope(shield=True):
            if not self._transport_closed and not self.is_aborted:
                with contextlib.suppress(errors.LocalProtocolError):
                    self._ul.send_abort(source=source, reason=reason, now=self._now())
                with anyio.move_on_after(1.0):
                    with contextlib.suppress(errors.DicomioError):
                        await self._flush()
            self.is_aborted = True
            self.is_established = False
            self._fail(errors.AssociationAborted(source, reason, "aborted locally"))
            await self._close_transport()
            await self._notify_ended()

    async def _close_transport(self) -> None:
        self.is_established = False
        if self._transport_closed:
            return
        self._transport_closed = True
        stream = self._stream
        if type(stream) is _transport.AsyncioSocketStream:
            stream.close_nowait()
        else:
            with anyio.CancelScope(shield=True):
                await anyio.aclose_forcefully(stream)
        self._close_streams()
        if self._failure is None:
            self._fail(errors.ConnectionClosed("the connection is closed"))
        await self._notify_ended()
        await self._notify(EVT_CONN_CLOSE)

    async def _notify_ended(self) -> None:
        """EVT_RELEASED or EVT_ABORTED, once, on either side, however the association ended.

        Released: we released it, or the peer did (its A-RELEASE-RQ answered). Aborted:
        either side aborted, the provider did, or the connection was lost once established.
        Rejected, for the requestor: the acceptor's A-ASSOCIATE-RJ (the server fires the
        acceptor's EVT_REJECTED as it sends one). An association lost while negotiating
        ends unnoticed here.
        """
        if self._end_notified:
            return
        if self.role is Role.REQUESTOR and isinstance(self._reply, AssociateRJ):
            event = EVT_REJECTED  # the peer closes after rejecting: before EVT_CONN_CLOSE
        elif self.is_released or isinstance(self._failure, errors.AssociationReleased):
            self.is_released = True  # also when the peer released it
            event = EVT_RELEASED
        elif self.is_aborted or self._was_established:
            event = EVT_ABORTED
        else:
            return
        self._end_notified = True
        await self._notify(event)

    def __repr__(self) -> str:
        state = (
            "established"
            if self.is_established
            else "released"
            if self.is_released
            else "aborted"
            if self.is_aborted
            else "idle"
        )
        return f"<Association {self.local_ae_title}->{self.remote_ae_title} {state}>"

    # -- negotiation facts -------------------------------------------------------------------

    def _absorb_user_information(self, items: Iterable[Any]) -> None:
        for item in items:
            if isinstance(item, MaximumLength):
                self.remote_max_pdu = item.maximum_length
            elif isinstance(item, ImplementationClassUID):
                self.remote_implementation_class_uid = item.implementation_class_uid
            elif isinstance(item, ImplementationVersionName):
                self.remote_implementation_version_name = item.implementation_version_name
            elif isinstance(item, UserIdentityAC):
                self.user_identity_response = item.server_response
            elif isinstance(item, AsynchronousOperationsWindow):
                pass  # interpreted by the role-specific negotiation


def _pdu_summary(pdu: Any) -> str:
    if isinstance(pdu, AssociateRQ):
        return (
            f"A-ASSOCIATE-RQ {pdu.calling_ae_title}->{pdu.called_ae_title} "
            f"{len(pdu.presentation_contexts)} contexts"
        )
    if isinstance(pdu, AssociateAC):
        accepted = sum(1 for cx in pdu.presentation_contexts if cx.result == 0)
        return f"A-ASSOCIATE-AC {accepted}/{len(pdu.presentation_contexts)} contexts accepted"
    if isinstance(pdu, (AssociateRJ, Abort)):
        return repr(pdu)
    return type(pdu).__name__


def _as_dict(side: ServiceUser) -> dict[str, Any]:
    return {
        "address": side.address,
        "port": side.port,
        "ae_title": side.ae_title,
        "pdv_size": side.maximum_length,
    }
