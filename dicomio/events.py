"""Event types and the event object passed to handlers (names follow pynetdicom's ``evt``).

Intervention events (``EVT_C_STORE`` and friends) expect an answer from their handler;
notification events (``EVT_ACCEPTED``, ``EVT_CONN_CLOSE`` ...) are for logs and metrics and
are fired by the association's own task between protocol steps, never while decoding.
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Any,
    Generic,
    NamedTuple,
    TypeAlias,
    TypeVar,
    TypeVarTuple,
    Unpack,
    overload,
)

import attrs
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID

from dicomio.dataset import decode_dataset, file_meta_for, parse_file_meta, part10_header
from dicomio.dimse.assembler import JoinedLater
from dicomio.pdu.items import SOPClassCommonExtendedNegotiation

if TYPE_CHECKING:
    from dicomio.association import Association
    from dicomio.presentation import PresentationContext

__all__ = [
    "EVT_ABORTED",
    "EVT_ACCEPTED",
    "EVT_ASYNC_OPS",
    "EVT_CONN_CLOSE",
    "EVT_CONN_OPEN",
    "EVT_C_ECHO",
    "EVT_C_FIND",
    "EVT_C_GET",
    "EVT_C_MOVE",
    "EVT_C_STORE",
    "EVT_ESTABLISHED",
    "EVT_N_ACTION",
    "EVT_N_CREATE",
    "EVT_N_DELETE",
    "EVT_N_EVENT_REPORT",
    "EVT_N_GET",
    "EVT_N_SET",
    "EVT_REJECTED",
    "EVT_RELEASED",
    "EVT_REQUESTED",
    "EVT_SOP_COMMON",
    "EVT_SOP_EXTENDED",
    "EVT_USER_ID",
    "AnyEventType",
    "AsyncOpsHandler",
    "AsyncOpsResult",
    "Event",
    "EventType",
    "FindHandler",
    "FindItem",
    "FindResult",
    "GetHandler",
    "GetItem",
    "GetResult",
    "Handler",
    "HandlerBinding",
    "HandlerEntry",
    "HandlerList",
    "MoveHandler",
    "MoveItem",
    "MoveResult",
    "NHandler",
    "NResult",
    "NotificationHandler",
    "SOPCommonHandler",
    "SOPExtendedHandler",
    "SOPExtendedResult",
    "StatusHandler",
    "StatusResult",
    "UserIdentityHandler",
    "UserIdentityResult",
    "handler",
]


# -- what each event's handler takes and answers ---------------------------------------------
#
# A handler is called as ``handler(event, *fields, *args)``: the Event, the event's own fields
# (only the negotiation events have any), then the extra ``args`` it was bound with. Each
# EVT_* constant is typed ``EventType[answer, *fields]`` so that ``handler()`` and
# ``Association.bind`` let mypy check a handler against its event.

#: What a C-ECHO or C-STORE handler answers: a status code, or a Dataset with ``Status``
#: (and optionally ``ErrorComment``) as in pynetdicom (PS3.7 9.1.1, 9.1.5).
StatusResult: TypeAlias = int | Dataset
#: One C-FIND match: ``(status, identifier)``, status Pending (FF00H or FF01H) with the
#: identifier; any other status ends the operation with that status (PS3.4 C.4.1.1.4).
FindItem: TypeAlias = tuple[int, Dataset | None]
#: What a C-GET handler yields: first the number of sub-operations (or ``(status, None)``
#: to refuse, PS3.4 C.4.3.1.4), then ``(status, instance)``, the instance a Dataset or the
#: path of a Part 10 file.
GetItem: TypeAlias = int | tuple[int, Dataset | str | os.PathLike[str] | None]
#: What a C-MOVE handler yields: optionally first the destination's ``(host, port)``
#: (pynetdicom's; else ``ae.move_destinations`` is looked up), then as a C-GET handler.
MoveItem: TypeAlias = tuple[str, int] | GetItem
#: What a DIMSE-N handler answers: a status (int or Dataset), or ``(status, data set)``
#: where the data set (or None) is the response's attribute list (PS3.7 10.1).
NResult: TypeAlias = int | Dataset | tuple[int | Dataset, Dataset | None]
#: An EVT_USER_ID answer: whether the identity is accepted, with the server response to
#: send (PS3.7 D.3.3.7.2) or None; a bare bool means no response.
UserIdentityResult: TypeAlias = bool | tuple[bool, bytes | None]
#: An EVT_ASYNC_OPS answer: ``(max_invoked, max_performed)``, or None for ``ae.async_ops_window``.
AsyncOpsResult: TypeAlias = tuple[int, int] | None
#: An EVT_SOP_EXTENDED answer: ``{sop_class_uid: application_information}`` to reply with.
SOPExtendedResult: TypeAlias = Mapping[UID, bytes] | Mapping[str, bytes] | None

#: C-ECHO and C-STORE handlers: ``async def handler(event) -> int | Dataset``.
StatusHandler: TypeAlias = Callable[["Event"], Awaitable[StatusResult]]
#: The answer of a C-FIND handler: an async generator of matches (the usual form), an
#: awaitable giving an iterable of them, or an iterable.
FindResult: TypeAlias = (
    AsyncIterator[FindItem] | Awaitable[Iterable[FindItem]] | Iterable[FindItem]
)
#: The answer of a C-GET handler, in the same three forms as a C-FIND handler's.
GetResult: TypeAlias = AsyncIterator[GetItem] | Awaitable[Iterable[GetItem]] | Iterable[GetItem]
#: The answer of a C-MOVE handler, in the same three forms as a C-FIND handler's.
MoveResult: TypeAlias = (
    AsyncIterator[MoveItem] | Awaitable[Iterable[MoveItem]] | Iterable[MoveItem]
)
#: C-FIND handlers: usually ``async def handler(event) -> AsyncIterator[FindItem]`` with
#: ``yield``.
FindHandler: TypeAlias = Callable[["Event"], FindResult]
#: C-GET handlers: usually an async generator of GetItem.
GetHandler: TypeAlias = Callable[["Event"], GetResult]
#: C-MOVE handlers: usually an async generator of MoveItem.
MoveHandler: TypeAlias = Callable[["Event"], MoveResult]
#: N-EVENT-REPORT, N-GET, N-SET, N-ACTION, N-CREATE, N-DELETE handlers.
NHandler: TypeAlias = Callable[["Event"], Awaitable[NResult]]
#: Notification handlers (EVT_CONN_OPEN, EVT_ACCEPTED ...): ``async def handler(event) -> None``.
NotificationHandler: TypeAlias = Callable[["Event"], Awaitable[None]]
#: EVT_USER_ID: ``handler(event, user_identity_type, primary_field, secondary_field)``,
#: plain or ``async``.
UserIdentityHandler: TypeAlias = Callable[
    ["Event", int, bytes, bytes | None], UserIdentityResult | Awaitable[UserIdentityResult]
]
#: EVT_ASYNC_OPS: ``handler(event, max_invoked, max_performed)``, plain or ``async``.
AsyncOpsHandler: TypeAlias = Callable[
    ["Event", int, int], AsyncOpsResult | Awaitable[AsyncOpsResult]
]
#: EVT_SOP_EXTENDED: ``handler(event, {sop_class_uid: application_information})``, plain
#: or ``async``.
SOPExtendedHandler: TypeAlias = Callable[
    ["Event", dict[UID, bytes]], SOPExtendedResult | Awaitable[SOPExtendedResult]
]
#: EVT_SOP_COMMON: ``handler(event, {sop_class_uid: SOPClassCommonExtendedNegotiation})``,
#: plain or ``async``; its answer is not used (the acceptor sends no reply, PS3.7 D.3.3.6).
SOPCommonHandler: TypeAlias = Callable[
    ["Event", dict[UID, SOPClassCommonExtendedNegotiation]], object
]

if TYPE_CHECKING:
    # Defaults (PEP 696) only matter to type checkers: a bare ``EventType`` annotation means
    # ``EventType[Any]``, any event whose handler takes only the Event.
    from typing_extensions import TypeVar as _DefaultTypeVar
    from typing_extensions import TypeVarTuple as _DefaultTypeVarTuple

    _Answer = _DefaultTypeVar("_Answer", default=Any)
    _Fields = _DefaultTypeVarTuple("_Fields", default=Unpack[tuple[()]])
else:
    _Answer = TypeVar("_Answer")
    _Fields = TypeVarTuple("_Fields")
_A = TypeVar("_A")
_B = TypeVar("_B")
_C = TypeVar("_C")


@attrs.frozen(cache_hash=True)
class EventType(Generic[_Answer, *_Fields]):
    """An event handlers can be bound to; compared by name.

    The type parameters are for type checkers only: what a handler answers, then the
    fields it receives after the Event. ``EVT_C_STORE`` is ``EventType[Awaitable[int |
    Dataset]]`` (``async def on_store(event) -> int``), ``EVT_ASYNC_OPS`` is
    ``EventType[AsyncOpsResult | Awaitable[AsyncOpsResult], int, int]``
    (``def on_window(event, max_invoked, max_performed)``).
    """

    name: str
    is_intervention: bool

    def __repr__(self) -> str:
        return self.name


#: Any event type, whatever its handler's signature.
AnyEventType: TypeAlias = EventType[Any, *tuple[Any, ...]]

EVT_C_ECHO: EventType[Awaitable[StatusResult]] = EventType("EVT_C_ECHO", True)
EVT_C_STORE: EventType[Awaitable[StatusResult]] = EventType("EVT_C_STORE", True)
EVT_C_FIND: EventType[FindResult] = EventType("EVT_C_FIND", True)
EVT_C_GET: EventType[GetResult] = EventType("EVT_C_GET", True)
EVT_C_MOVE: EventType[MoveResult] = EventType("EVT_C_MOVE", True)
EVT_N_EVENT_REPORT: EventType[Awaitable[NResult]] = EventType("EVT_N_EVENT_REPORT", True)
EVT_N_GET: EventType[Awaitable[NResult]] = EventType("EVT_N_GET", True)
EVT_N_SET: EventType[Awaitable[NResult]] = EventType("EVT_N_SET", True)
EVT_N_ACTION: EventType[Awaitable[NResult]] = EventType("EVT_N_ACTION", True)
EVT_N_CREATE: EventType[Awaitable[NResult]] = EventType("EVT_N_CREATE", True)
EVT_N_DELETE: EventType[Awaitable[NResult]] = EventType("EVT_N_DELETE", True)
#: User Identity negotiation (PS3.7 D.3.3.7), pynetdicom's handler signature:
#: ``handler(event, user_id_type, primary_field, secondary_field)`` returning
#: ``(is_verified, server_response)``; it may be ``async def`` or a plain function.
EVT_USER_ID: EventType[
    UserIdentityResult | Awaitable[UserIdentityResult], int, bytes, bytes | None
] = EventType("EVT_USER_ID", True)
#: Asynchronous Operations Window negotiation (PS3.7 D.3.3.3):
#: ``handler(event, max_invoked, max_performed)`` (the requestor's proposal) returning the
#: ``(max_invoked, max_performed)`` to answer; without a handler ``ae.async_ops_window`` rules.
EVT_ASYNC_OPS: EventType[AsyncOpsResult | Awaitable[AsyncOpsResult], int, int] = EventType(
    "EVT_ASYNC_OPS", True
)
#: SOP Class Extended Negotiation (PS3.7 D.3.3.5): ``handler(event, app_info)`` with
#: ``{sop_class_uid: application_information}`` returning the same shape (or None) to answer.
EVT_SOP_EXTENDED: EventType[SOPExtendedResult | Awaitable[SOPExtendedResult], dict[UID, bytes]] = (
    EventType("EVT_SOP_EXTENDED", True)
)
#: SOP Class Common Extended Negotiation (PS3.7 D.3.3.6): ``handler(event, items)`` with
#: ``{sop_class_uid: SOPClassCommonExtendedNegotiation}``; what it returns is not used:
#: PS3.7 has the acceptor send no reply for them.
EVT_SOP_COMMON: EventType[object, dict[UID, SOPClassCommonExtendedNegotiation]] = EventType(
    "EVT_SOP_COMMON", True
)

EVT_CONN_OPEN: EventType[Awaitable[None]] = EventType("EVT_CONN_OPEN", False)
EVT_CONN_CLOSE: EventType[Awaitable[None]] = EventType("EVT_CONN_CLOSE", False)
EVT_REQUESTED: EventType[Awaitable[None]] = EventType("EVT_REQUESTED", False)
EVT_ACCEPTED: EventType[Awaitable[None]] = EventType("EVT_ACCEPTED", False)
#: The association is established, on either side (just after EVT_ACCEPTED, as in pynetdicom).
EVT_ESTABLISHED: EventType[Awaitable[None]] = EventType("EVT_ESTABLISHED", False)
EVT_REJECTED: EventType[Awaitable[None]] = EventType("EVT_REJECTED", False)
EVT_RELEASED: EventType[Awaitable[None]] = EventType("EVT_RELEASED", False)
EVT_ABORTED: EventType[Awaitable[None]] = EventType("EVT_ABORTED", False)

#: Any handler, unchecked (what a pynetdicom-style tuple with extra ``args`` holds).
Handler: TypeAlias = Callable[..., Any]


class HandlerBinding(NamedTuple):
    """An event, its handler and the extra arguments it is called with, as ``handler()``
    builds it: a ``(event, handler, args)`` tuple, so it goes wherever pynetdicom's
    handler tuples go (``evt_handlers``)."""

    event: AnyEventType
    handler: Handler
    args: tuple[Any, ...] = ()


@overload
def handler(
    event: EventType[_Answer, *_Fields],
    function: Callable[[Event, Unpack[_Fields]], _Answer],
    /,
) -> HandlerBinding: ...
@overload
def handler(
    event: EventType[_Answer, *_Fields],
    function: Callable[[Event, Unpack[_Fields], _A], _Answer],
    a: _A,
    /,
) -> HandlerBinding: ...
@overload
def handler(
    event: EventType[_Answer, *_Fields],
    function: Callable[[Event, Unpack[_Fields], _A, _B], _Answer],
    a: _A,
    b: _B,
    /,
) -> HandlerBinding: ...
@overload
def handler(
    event: EventType[_Answer, *_Fields],
    function: Callable[[Event, Unpack[_Fields], _A, _B, _C], _Answer],
    a: _A,
    b: _B,
    c: _C,
    /,
) -> HandlerBinding: ...
def handler(event: AnyEventType, function: Handler, /, *args: Any) -> HandlerBinding:
    """Bind ``function`` to ``event``, called as ``function(event, *fields, *args)``: the
    typed spelling of pynetdicom's ``(event, handler, [args])`` tuple.

    ``evt_handlers=[handler(EVT_C_STORE, on_store), handler(EVT_C_FIND, on_find, db)]``:
    mypy checks each handler's parameters and answer against its event (up to three extra
    arguments; more, or a plain tuple, go unchecked).
    """
    return HandlerBinding(event, function, args)


#: One entry of ``evt_handlers``: a ``handler()`` binding, an ``(event, handler)`` tuple
#: (checked against the event by mypy), or pynetdicom's ``(event, handler, [args])``
#: (unchecked).
HandlerEntry: TypeAlias = (
    HandlerBinding
    | tuple[EventType[Awaitable[StatusResult]], StatusHandler]
    | tuple[EventType[FindResult], FindHandler]
    | tuple[EventType[GetResult], GetHandler]
    | tuple[EventType[MoveResult], MoveHandler]
    | tuple[EventType[Awaitable[NResult]], NHandler]
    | tuple[EventType[Awaitable[None]], NotificationHandler]
    | tuple[
        EventType[UserIdentityResult | Awaitable[UserIdentityResult], int, bytes, bytes | None],
        UserIdentityHandler,
    ]
    | tuple[EventType[AsyncOpsResult | Awaitable[AsyncOpsResult], int, int], AsyncOpsHandler]
    | tuple[
        EventType[SOPExtendedResult | Awaitable[SOPExtendedResult], dict[UID, bytes]],
        SOPExtendedHandler,
    ]
    | tuple[EventType[object, dict[UID, SOPClassCommonExtendedNegotiation]], SOPCommonHandler]
    | tuple[AnyEventType, Handler, Sequence[Any]]
)
#: ``evt_handlers``: ``[(EVT_C_STORE, handler), (EVT_C_FIND, handler, [extra, args])]`` as in
#: pynetdicom, or ``[handler(EVT_C_STORE, on_store), ...]``.
HandlerList: TypeAlias = Sequence[HandlerEntry]


class Event:
    """What a handler receives: the association, the request, its context and its data set.

    ``dataset`` (alias ``identifier``, ``attribute_list``, ``action_information``,
    ``event_information``) is decoded from the received bytes on first access. A C-STORE
    handler that only stores the instance should use ``raw`` (the encoded data set) with
    ``file_meta``, or ``encoded_dataset()``, or ``dataset_path`` when the association streams
    data sets to disk. ``raw`` is the buffer the data set was received into, handed over
    without a copy (``MessageAssembler``): holding it costs the data set's size, once. A data
    set that came as a few fragments in one or two reads is joined into ``raw`` on first
    access (``JoinedLater``): a handler that never reads it never pays for the copy.
    pynetdicom's names for request fields are here too: ``action_type``,
    ``event_type``, ``attribute_identifiers``, ``modification_list``, ``move_destination``,
    ``is_cancelled``, ``timestamp``.
    """

    __slots__ = (
        "_created",
        "_dataset",
        "_raw",
        "assoc",
        "context",
        "dataset_path",
        "event",
        "request",
    )

    def __init__(
        self,
        event: AnyEventType,
        assoc: Association,
        *,
        context: PresentationContext | None = None,
        request: Any = None,
        raw: bytes | JoinedLater | None = None,
        dataset_path: Path | None = None,
    ) -> None:
        self.event = event
        self.assoc = assoc
        self.context = context
        self.request = request
        self._raw = raw
        self.dataset_path = dataset_path
        self._dataset: Dataset | None = None
        self._created = time.time()

    @property
    def raw(self) -> bytes | None:
        """The request's encoded data set as received (None without one), joined once."""
        raw = self._raw
        if type(raw) is JoinedLater:
            raw = self._raw = bytes(raw)
        return raw  # type: ignore[return-value]

    @raw.setter
    def raw(self, value: bytes | None) -> None:
        self._raw = value

    @property
    def message_id(self) -> int | None:
        return getattr(self.request, "message_id", None)

    @property
    def dataset(self) -> Dataset:
        """The request's data set, decoded once on first access."""
        if self._dataset is None:
            if self.raw is not None and self.context is not None:
                ts = self.context.transfer_syntax
                assert ts is not None
                self._dataset = decode_dataset(self.raw, ts)
            elif self.dataset_path is not None:
                from pydicom import dcmread

                self._dataset = dcmread(self.dataset_path)
            else:
                self._dataset = Dataset()
        return self._dataset

    identifier = dataset
    attribute_list = dataset
    action_information = dataset
    event_information = dataset
    modification_list = dataset

    # -- pynetdicom's names for request fields -----------------------------------------------

    @property
    def timestamp(self) -> datetime.datetime:
        """When the event was created (local time, as pynetdicom's ``event.timestamp``)."""
        return datetime.datetime.fromtimestamp(self._created)

    @property
    def action_type(self) -> int | None:
        """N-ACTION: the Action Type ID (0000,1008)."""
        return getattr(self.request, "action_type_id", None)

    @property
    def event_type(self) -> int | None:
        """N-EVENT-REPORT: the Event Type ID (0000,1002)."""
        return getattr(self.request, "event_type_id", None)

    @property
    def attribute_identifiers(self) -> list[BaseTag]:
        """N-GET: the Attribute Identifier List (0000,1005) as tags; empty means all."""
        return [Tag(tag) for tag in getattr(self.request, "attribute_identifier_list", None) or ()]

    @property
    def move_destination(self) -> str | None:
        """C-MOVE: the Move Destination (0000,0600), the AE title to send the matches to."""
        return getattr(self.request, "move_destination", None)

    @property
    def is_cancelled(self) -> bool:
        """Whether a C-CANCEL (PS3.7 9.3.2.3) has asked this C-FIND, C-GET or C-MOVE to stop.

        In dicomio the C-CANCEL also cancels the handler's task, at its next await; this is
        for a handler that wants to look before then, as pynetdicom's handlers do.
        """
        mid = self.message_id
        return mid is not None and mid in getattr(self.assoc, "_cancel_requested", ())

    def encoded_dataset(self, include_meta: bool = True) -> bytes:
        """The received data set as encoded bytes; with ``include_meta``, a whole Part 10
        file (preamble, ``DICM``, file meta information) ready to be written as it is.

        For a C-STORE request (the file meta information names its SOP class and instance):
        what a storage SCP writes, with no decoding at all. Without ``include_meta`` this is
        ``raw`` itself, not a copy. With it, the header and the data set are joined into a
        new ``bytes``, one copy of the data set (a ``bytes`` cannot be extended in front, and
        ``raw`` stays ``bytes`` for the handlers that read it); to store a large instance
        without holding it twice, write ``raw`` after the header yourself, or use
        ``stream_to_disk``.
        """
        if self.dataset_path is not None:
            data = self.dataset_path.read_bytes()  # a Part 10 file, as stream_to_disk writes
            if include_meta:
                return data
            parsed = parse_file_meta(data)
            if parsed is None:
                raise ValueError(f"{self.dataset_path} is not a DICOM Part 10 file")
            return data[parsed[1] :]
        if self.raw is None:
            raise ValueError(f"{self.event.name} carried no data set")
        if not include_meta:
            return bytes(self.raw)
        # The header stream_to_disk writes, from the same fields file_meta takes.
        request = self.request
        ts = self.context.transfer_syntax if self.context else None
        return part10_header(
            str(request.affected_sop_class_uid),
            str(request.affected_sop_instance_uid),
            str(ts),
            source_ae_title=self.assoc.remote_ae_title or None,
        ) + bytes(self.raw)

    @property
    def file_meta(self) -> FileMetaDataset:
        """File meta information for the received C-STORE data set (PS3.10 7.1)."""
        request = self.request
        ts = self.context.transfer_syntax if self.context else None
        return file_meta_for(
            str(request.affected_sop_class_uid),
            str(request.affected_sop_instance_uid),
            str(ts),
            source_ae_title=self.assoc.remote_ae_title if self.assoc else None,
        )
