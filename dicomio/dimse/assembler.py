"""Reassembly of DIMSE messages from presentation data values (PS3.8 Annex E, PS3.7 6.3.1).

A message arrives as command fragments (message control header bit 0 set) up to one
flagged last, then, if its Command Data Set Type (0000,0800) is not 0101H, data set
fragments up to one flagged last (PS3.8 E.2). ``MessageAssembler`` tracks that per
presentation context and reports each message once it is whole, or, for messages the
caller chooses to stream, reports the command and then each data fragment as it arrives.

Reading of the standard on interleaving: PS3.8 E.1 says no fragment of another message
shall be sent until every fragment of the current one has been sent. A PDV for a
different context in the middle of a message therefore breaks E.1, but every PDV names
its context, so the receiver can still tell the messages apart. This assembler keeps
state per presentation context and accepts such PDVs (be liberal in what you accept);
within one context the order of PS3.8 E.1 is enforced, because there a stray PDV cannot be
attributed to any message. Our own sender (``fragment``) never interleaves.

Copies and memory: command fragments are joined once. A data set that is not streamed is
received into place: each fragment is copied, as it arrives, onto the end of one buffer
(an ``io.BytesIO``), so the received bytes it was a view of can be freed at once and never
live beside a second copy of the whole. The buffer grows as fragments arrive (its size is
not known in advance: PS3.8 gives none), and when the last one arrives the buffer's own
``bytes`` object is cut to length and handed over as it is (``BytesIO.getvalue`` with no
other reference to the buffer does not copy). Peak memory for a data set of N bytes is
therefore N plus what the transport and the PDU reader hold of the stream (a read or two,
bounded by the transport's read-ahead), plus the buffer's growth slack: CPython over-allocates by up to an eighth when it grows, address
space that is never written, so not resident, and given back when the buffer is cut to
length. A data set that arrived as one ``bytes`` fragment (which the PDU reader makes of a
PDV that straddled its reads) is kept as it is, with no copy at all. Streamed fragments
are handed on as they are.

One shape is common enough to be received more cheaply: a data set of a few full fragments
and a last one (a 0.5 MB instance sent with 256 KiB PDUs), in one transport read or a few.
Its ``DataRun``s are held as they are (views of the reads) instead of being copied; when the
last fragment comes, the data set is joined from them once, exactly as long as it is.
Growing the buffer for each run would otherwise move the data set (a ``realloc`` the
allocator cannot do in place copies it). Runs are held for one context at a time: a run on
another context, a single fragment that is not the last on the held context, or passing a
bound (below) releases what is held into the buffer first, and the data set goes on there.
With ``join_later`` the data set of that shape is not even joined here:
``MessageReceived.dataset`` is then a ``JoinedLater`` of the fragments, which its consumer
joins when, and if, the bytes are wanted (``bytes(dataset)``): a storage SCP whose handler
answers without reading the data set never copies it (DCMTK's ``storescp --ignore`` does not
assemble it either).

What holding keeps alive is bounded. The fragments are views, so they keep whole reads
alive (the bytes objects they are views of): a read's other PDUs, its headers, the part of
the last read that is not yet framed. The first run is held whatever it is: it keeps alive
only the reads it came in. A later run is held too while (``MAX_HELD_LENGTH``) the held
bytes stay within 2 MiB, so that a large data set is received into its buffer as before and
never held twice at the peak (fragments and their join); while (``MAX_HELD_PINNED``) the
objects they keep alive stay within twice the held bytes plus 1 MiB (the largest read of
dicomio's transport), which tiny PDUs or reads mostly of other PDUs would break; and while
(``MAX_HELD_FRAGMENTS``) there are at most 256 fragments, which bounds the views' own
overhead (a memoryview is about 200 bytes). Beyond the data set, holding several runs
therefore keeps alive at most 1 MiB plus twice the held bytes (so at most 5 MiB in all),
plus the read of the last fragment.

The hot path is a P-DATA-TF holding one data set fragment that is not the last: it costs one
dictionary lookup and one buffer write, and returns no event. A ``DataRun`` (many such PDUs,
from ``PDUReader.next_pdu_or_run``) costs one lookup and one ``writelines`` for all of them.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Sequence
from typing import Final, TypeAlias

import attrs

from dicomio.dimse.commands import Message, decode_command
from dicomio.errors import RemoteProtocolError
from dicomio.pdu.items import PresentationDataValue
from dicomio.pdu.pdus import DataRun, PDataTF

__all__ = [
    "DEFAULT_MAX_COMMAND_LENGTH",
    "AssemblerEvent",
    "CommandReceived",
    "DataFragment",
    "JoinedLater",
    "MessageAssembler",
    "MessageReceived",
]

#: Default bound on an incoming command set. The largest legitimate command sets are
#: dominated by AT lists (Attribute Identifier List, Offending Element) at 4 bytes per tag;
#: 64 KiB holds more than 16,000 tags, far beyond any IOD, while a peer that never sets
#: the last-fragment bit cannot make us buffer more than this.
DEFAULT_MAX_COMMAND_LENGTH: Final = 64 * 1024

#: Bounds on the runs held uncopied (see the module docstring): the held bytes, what the reads
#: they are views of hold beyond twice that, and the number of fragments.
MAX_HELD_LENGTH: Final = 2 * 1024 * 1024
MAX_HELD_PINNED: Final = 1024 * 1024
MAX_HELD_FRAGMENTS: Final = 256


class JoinedLater:
    """A received data set held as its fragments, joined into one ``bytes`` on demand.

    ``bytes(x)`` joins them (each time: the caller keeps the result); ``len(x)`` is the data
    set's length. The fragments are views of immutable reads, so what they show never
    changes. Made only by a ``MessageAssembler`` with ``join_later``.
    """

    __slots__ = ("_fragments", "_length")

    def __init__(self, fragments: tuple[bytes | memoryview, ...]) -> None:
        self._fragments = fragments
        self._length = sum(map(len, fragments))

    def __len__(self) -> int:
        return self._length

    def __bytes__(self) -> bytes:
        return b"".join(self._fragments)

    def __repr__(self) -> str:
        return f"<JoinedLater: {self._length} bytes in {len(self._fragments)} fragments>"


@attrs.frozen(kw_only=True)
class MessageReceived:
    """A whole message: its command and its data set (None when it has none).

    The data set is ``bytes``, or, from an assembler with ``join_later``, possibly a
    ``JoinedLater`` (``bytes(dataset)`` gives the bytes).
    """

    context_id: int
    command: Message
    dataset: bytes | JoinedLater | None


@attrs.frozen(kw_only=True)
class CommandReceived:
    """The command of a message whose data set follows as ``DataFragment`` events."""

    context_id: int
    command: Message


@attrs.frozen(kw_only=True)
class DataFragment:
    """One fragment of a streamed data set; ``is_last`` ends the message (PS3.8 E.2)."""

    context_id: int
    data: memoryview
    is_last: bool


AssemblerEvent: TypeAlias = MessageReceived | CommandReceived | DataFragment

_new_tuple = tuple.__new__


class _Partial:
    """What has arrived so far of the message in progress on one presentation context."""

    __slots__ = ("command", "command_length", "command_parts", "data", "streaming")

    def __init__(self) -> None:
        self.command_parts: list[bytes | memoryview] = []
        self.command_length = 0
        self.command: Message | None = None  # set once the command is whole
        self.streaming = False
        # The data set received so far, once the command is whole and it is not streamed.
        self.data: io.BytesIO | None = None


class MessageAssembler:
    """Turns P-DATA-TF PDUs into DIMSE messages, per presentation context (PS3.8 E).

    ``stream_if(command)`` decides, once a command with a data set is whole, whether its
    data set is delivered as ``DataFragment`` events (true) or joined into one
    ``MessageReceived`` (false, and the default). With ``join_later``, a data set that came
    as held runs and its last fragment is delivered unjoined, as a ``JoinedLater`` (see
    the module docstring). Violations of PS3.8 E raise ``RemoteProtocolError``; after one,
    the association is to be aborted, so the state left behind does not matter.
    """

    def __init__(
        self,
        *,
        stream_if: Callable[[Message], bool] | None = None,
        max_command_length: int = DEFAULT_MAX_COMMAND_LENGTH,
        join_later: bool = False,
    ) -> None:
        self._stream_if = stream_if
        self._join_later = join_later
        self._max_command_length = max_command_length
        self._partial: dict[int, _Partial] = {}
        # For each context whose data set is being collected (not streamed): the buffer it
        # is received into, the same as its _Partial's data.
        self._collecting: dict[int, io.BytesIO] = {}
        # The first runs of fragments of a collected data set, not yet copied into its
        # buffer (which is empty meanwhile), and its context; one context at a time. Once a
        # second run is held (``_hold_more``), also their length and the length of the
        # objects they are views of (each counted once: ``_held_read`` is the last of them),
        # for the bounds of the module docstring.
        self._held_context: int | None = None
        self._held: Sequence[bytes | memoryview] = ()
        self._held_length = 0
        self._held_pinned = 0
        self._held_read: object = None

    @property
    def idle(self) -> bool:
        """Whether no message is part-way received, on any context."""
        return not self._partial

    def in_progress(self, context_id: int) -> bool:
        """Whether part of a message has arrived on this context and the rest is awaited."""
        return context_id in self._partial

    def expects_data(self, context_id: int) -> bool:
        """Whether a whole command arrived on this context and its data set is awaited."""
        partial = self._partial.get(context_id)
        return partial is not None and partial.command is not None

    def receive(self, pdata: PDataTF | DataRun) -> list[AssemblerEvent]:
        """Take one P-DATA-TF, or a run of them; return the events their PDVs complete, in order.

        A ``DataRun`` gives exactly what its PDUs (``DataRun.pdus()``) would give one by one,
        up to the first ``RemoteProtocolError``.
        """
        if isinstance(pdata, DataRun):
            context_id = pdata.context_id
            buffer = self._collecting.get(context_id)
            if buffer is not None:
                held_context = self._held_context
                if held_context is not None and held_context != context_id:
                    self._release_held()
                    held_context = None
                if held_context is None:
                    if buffer.tell():
                        buffer.writelines(pdata.fragments)
                    else:
                        self._held_context = context_id
                        self._held = pdata.fragments
                elif not self._hold_more(pdata.fragments):
                    self._release_held()
                    buffer.writelines(pdata.fragments)
                return []
            return self._receive_pdvs(
                _new_tuple(PresentationDataValue, (context_id, False, False, fragment))
                for fragment in pdata.fragments
            )
        pdvs = pdata.pdvs
        if len(pdvs) == 1:
            pdv = pdvs[0]
            if not pdv.is_last and not pdv.is_command:
                buffer = self._collecting.get(pdv.context_id)
                if buffer is not None:
                    if self._held_context == pdv.context_id:
                        self._release_held()
                    buffer.write(pdv.data)
                    return []
            elif (
                pdv.is_command
                and pdv.is_last
                and pdv.context_id not in self._partial
                and len(pdv.data) <= self._max_command_length
            ):
                # A whole command set in one fragment, nothing in progress on its context:
                # what _command_fragment would do, without gathering it first. A command
                # with no data set is a whole message (C-ECHO, C-FIND-RSP, N-GET-RQ...).
                command = decode_command(pdv.data)
                if not command.has_dataset:
                    return [
                        MessageReceived(context_id=pdv.context_id, command=command, dataset=None)
                    ]
                events: list[AssemblerEvent] = []
                partial = self._partial[pdv.context_id] = _Partial()
                self._command_decoded(pdv.context_id, partial, command, events)
                return events
        return self._receive_pdvs(pdvs)

    def _receive_pdvs(self, pdvs: Iterable[PresentationDataValue]) -> list[AssemblerEvent]:
        events: list[AssemblerEvent] = []
        partials = self._partial
        for pdv in pdvs:
            context_id = pdv.context_id
            partial = partials.get(context_id)
            if pdv.is_command:
                self._command_fragment(pdv.data, pdv.is_last, context_id, partial, events)
                continue
            # A data set fragment.
            if partial is None or partial.command is None:
                raise self._stray_data(context_id, partial)
            if partial.streaming:
                data = pdv.data
                events.append(
                    DataFragment(
                        context_id=context_id,
                        data=data if isinstance(data, memoryview) else memoryview(data),
                        is_last=pdv.is_last,
                    )
                )
                if pdv.is_last:
                    del partials[context_id]
                continue
            buffer = partial.data
            assert buffer is not None
            data = pdv.data
            held = self._held_context == context_id
            if not pdv.is_last:
                if held:
                    self._release_held()
                buffer.write(data)
                continue
            del partials[context_id]
            del self._collecting[context_id]
            partial.data = None
            dataset: bytes | JoinedLater
            if held:
                # The held runs and this last fragment: the whole data set, joined once (or
                # by whoever wants its bytes).
                fragments = (*self._held, data)
                dataset = JoinedLater(fragments) if self._join_later else b"".join(fragments)
                self._drop_held()
            elif isinstance(data, bytes) and not buffer.tell():
                dataset = data  # the whole data set in one bytes fragment: kept as it is
            else:
                buffer.write(data)
                # The buffer's own bytes, cut to length: no copy while nothing else refers
                # to the buffer (no getbuffer() views), and nothing else will.
                dataset = buffer.getvalue()
            del buffer
            events.append(
                MessageReceived(context_id=context_id, command=partial.command, dataset=dataset)
            )
        return events

    def _hold_more(self, fragments: tuple[bytes | memoryview, ...]) -> bool:
        """Hold ``fragments`` after the runs held, unless that passes a bound (then False,
        and nothing changed). The first run is held as it is, uncounted (as one run always
        was: it keeps alive at most the reads it came in); what it holds is counted here,
        when a second comes."""
        held = self._held
        length = self._held_length
        pinned = self._held_pinned
        read = self._held_read
        for run in (held, fragments) if read is None else (fragments,):
            for fragment in run:
                length += len(fragment)
                # What the fragment keeps alive: the whole read it is a view of, or itself.
                kept = fragment.obj if type(fragment) is memoryview else fragment
                if kept is not read:
                    pinned += len(kept)  # type: ignore[arg-type]
                    read = kept
        if (
            length > MAX_HELD_LENGTH
            or pinned > 2 * length + MAX_HELD_PINNED
            or len(held) + len(fragments) > MAX_HELD_FRAGMENTS
        ):
            return False
        self._held = [*held, *fragments]
        self._held_length = length
        self._held_pinned = pinned
        self._held_read = read
        return True

    def _release_held(self) -> None:
        """Copy the held runs into their context's buffer (empty until now); hold nothing."""
        assert self._held_context is not None
        self._collecting[self._held_context].writelines(self._held)
        self._drop_held()

    def _drop_held(self) -> None:
        self._held_context = None
        self._held = ()
        self._held_length = self._held_pinned = 0
        self._held_read = None

    def _command_fragment(
        self,
        data: bytes | memoryview,
        is_last: bool,
        context_id: int,
        partial: _Partial | None,
        events: list[AssemblerEvent],
    ) -> None:
        if partial is None:
            partial = self._partial[context_id] = _Partial()
        elif partial.command is not None:
            raise RemoteProtocolError(
                f"command fragment on presentation context {context_id} while the data set "
                f"of its {type(partial.command).__name__} is still expected (PS3.8 E.1)"
            )
        partial.command_parts.append(data)
        partial.command_length += len(data)
        if partial.command_length > self._max_command_length:
            raise RemoteProtocolError(
                f"command set on presentation context {context_id} exceeds "
                f"{self._max_command_length} bytes"
            )
        if is_last:
            self._command_complete(context_id, partial, events)

    @staticmethod
    def _stray_data(context_id: int, partial: _Partial | None) -> RemoteProtocolError:
        if partial is None:
            return RemoteProtocolError(
                f"data set fragment on presentation context {context_id} with no command "
                "before it, or after a command whose Command Data Set Type (0000,0800) is "
                "0101H: no data set (PS3.7 6.3.1, PS3.8 E.1)"
            )
        return RemoteProtocolError(
            f"data set fragment on presentation context {context_id} before the last "
            "fragment of its command (PS3.8 E.1)"
        )

    def _command_complete(
        self, context_id: int, partial: _Partial, events: list[AssemblerEvent]
    ) -> None:
        parts = partial.command_parts
        self._command_decoded(
            context_id,
            partial,
            decode_command(parts[0] if len(parts) == 1 else b"".join(parts)),
            events,
        )

    def _command_decoded(
        self, context_id: int, partial: _Partial, command: Message, events: list[AssemblerEvent]
    ) -> None:
        if not command.has_dataset:
            del self._partial[context_id]
            events.append(MessageReceived(context_id=context_id, command=command, dataset=None))
            return
        partial.command = command
        partial.command_parts = []
        if self._stream_if is not None and self._stream_if(command):
            partial.streaming = True
            events.append(CommandReceived(context_id=context_id, command=command))
        else:
            partial.data = self._collecting[context_id] = io.BytesIO()
