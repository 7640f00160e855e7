"""Event types and the event object passed to handlers (names follow pynetdicom's ``evt``).

Intervention events (``EVT_C_STORE`` and friends) expect an answer from their handler;
notification events (``EVT_ACCEPTED``, ``EVT_CONN_CLOSE`` ...) are for logs and metrics and
are fired by the association's own task between protocol steps, never while decoding.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import BaseTag, Tag

from dicomio.dataset import decode_dataset, file_meta_for, parse_file_meta, part10_header

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
    "Event",
    "EventType",
    "Handler",
    "HandlerList",
]


@attrs.frozen
class EventType:
    name: str
    is_intervention: bool

    def __repr__(self) -> str:
        return self.name


EVT_C_ECHO = EventType("EVT_C_ECHO", True)
EVT_C_STORE = EventType("EVT_C_STORE", True)
EVT_C_FIND = EventType("EVT_C_FIND", True)
EVT_C_GET = EventType("EVT_C_GET", True)
EVT_C_MOVE = EventType("EVT_C_MOVE", True)
EVT_N_EVENT_REPORT = EventType("EVT_N_EVENT_REPORT", True)
EVT_N_GET = EventType("EVT_N_GET", True)
EVT_N_SET = EventType("EVT_N_SET", True)
EVT_N_ACTION = EventType("EVT_N_ACTION", True)
EVT_N_CREATE = EventType("EVT_N_CREATE", True)
EVT_N_DELETE = EventType("EVT_N_DELETE", True)
#: User Identity negotiation (PS3.7 D.3.3.7), pynetdicom's handler signature:
#: ``handler(event, user_id_type, primary_field, secondary_field)`` returning
#: ``(is_verified, server_response)``; it may be ``async def`` or a plain function.
EVT_USER_ID = EventType("EVT_USER_ID", True)
#: Asynchronous Operations Window negotiation (PS3.7 D.3.3.3):
#: ``handler(event, max_invoked, max_performed)`` (the requestor's proposal) returning the
#: ``(max_invoked, max_performed)`` to answer; without a handler ``ae.async_ops_window`` rules.
EVT_ASYNC_OPS = EventType("EVT_ASYNC_OPS", True)
#: SOP Class Extended Negotiation (PS3.7 D.3.3.5): ``handler(event, app_info)`` with
#: ``{sop_class_uid: application_information}`` returning the same shape (or None) to answer.
EVT_SOP_EXTENDED = EventType("EVT_SOP_EXTENDED", True)
#: SOP Class Common Extended Negotiation (PS3.7 D.3.3.6): ``handler(event, items)`` with
#: ``{sop_class_uid: SOPClassCommonExtendedNegotiation}``; what it returns is kept as the
#: accepted items, but PS3.7 has the acceptor send no reply for them.
EVT_SOP_COMMON = EventType("EVT_SOP_COMMON", True)

EVT_CONN_OPEN = EventType("EVT_CONN_OPEN", False)
EVT_CONN_CLOSE = EventType("EVT_CONN_CLOSE", False)
EVT_REQUESTED = EventType("EVT_REQUESTED", False)
EVT_ACCEPTED = EventType("EVT_ACCEPTED", False)
#: The association is established, on either side (just after EVT_ACCEPTED, as in pynetdicom).
EVT_ESTABLISHED = EventType("EVT_ESTABLISHED", False)
EVT_REJECTED = EventType("EVT_REJECTED", False)
EVT_RELEASED = EventType("EVT_RELEASED", False)
EVT_ABORTED = EventType("EVT_ABORTED", False)

Handler = Callable[..., Any]
#: ``[(EVT_C_STORE, handler), (EVT_C_FIND, handler, [extra, args])]`` as in pynetdicom.
HandlerList = Sequence[tuple[EventType, Handler] | tuple[EventType, Handler, Sequence[Any]]]


class Event:
    """What a handler receives: the association, the request, its context and its data set.

    ``dataset`` (alias ``identifier``, ``attribute_list``, ``action_information``,
    ``event_information``) is decoded from the received bytes on first access. A C-STORE
    handler that only stores the instance should use ``raw`` (the encoded data set) with
    ``file_meta``, or ``encoded_dataset()``, or ``dataset_path`` when the association streams
    data sets to disk. ``raw`` is the buffer the data set was received into, handed over
    without a copy (``MessageAssembler``): holding it costs the data set's size, once. pynetdicom's names for request fields are here too: ``action_type``,
    ``event_type``, ``attribute_identifiers``, ``modification_list``, ``move_destination``,
    ``is_cancelled``, ``timestamp``.
    """

    __slots__ = (
        "_created",
        "_dataset",
        "assoc",
        "context",
        "dataset_path",
        "event",
        "raw",
        "request",
    )

    def __init__(
        self,
        event: EventType,
        assoc: Association,
        *,
        context: PresentationContext | None = None,
        request: Any = None,
        raw: bytes | None = None,
        dataset_path: Path | None = None,
    ) -> None:
        self.event = event
        self.assoc = assoc
        self.context = context
        self.request = request
        self.raw = raw
        self.dataset_path = dataset_path
        self._dataset: Dataset | None = None
        self._created = time.time()

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
