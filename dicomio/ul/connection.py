"""One association's Upper Layer: the PS3.8 9.2 state machine with bytes in and bytes out.

``ULConnection`` is sans-IO, in the manner of h11's ``Connection``: the caller owns the
transport and the clock. It feeds received bytes to ``receive_data`` and gets back events
(``dicomio.ul.events``); it makes requests with the ``send_*`` methods; it writes whatever
``data_to_send`` returns; it closes the transport when ``should_close`` is true and the
queued bytes are written; it calls ``handle_timer`` at ``next_deadline`` (the ARTIM timer).

Theory of operation. Every input is one event of PS3.8 Table 9-10. The pair (state, event)
is looked up in ``TRANSITIONS``; the cell gives the action (Tables 9-6 to 9-9) and the next
state. An empty cell means the event is not allowed now: for a local request that is the
caller's mistake (``LocalProtocolError``, and nothing changes); a received PDU always has a
cell once the transport is open, so the peer's mistakes become actions of the table (AA-1,
AA-7, AA-8), which queue the A-ABORT before the event that reports them is returned.

The transport belongs to the caller, so the transport primitives of the standard map to
calls and flags:

- "issue TRANSPORT CONNECT" (AE-1) is left to the caller: ``send_associate_rq`` moves to
  Sta4 and the caller connects; ``connection_made`` is then Evt2 (TRANSPORT CONNECT
  confirmation). On an acceptor, ``connection_made`` is Evt5 (AE-5 accepts it).
- A failed connect, or a transport closed by the peer or the network, is Evt17:
  ``receive_data(b"")``.
- "close transport connection" (AE-4, AR-3, AA-2, AA-3) sets ``should_close``. Every
  transition into Sta1 sets it: the other actions that lead there (AR-5, AA-4, AA-5) follow
  the transport's closing.
- Sta13 waits for the peer to close the transport after our A-ABORT, A-ASSOCIATE-RJ or
  A-RELEASE-RP, so that the peer receives it; ARTIM bounds the wait (Evt18 -> AA-2).
  The caller keeps reading in Sta13 until ``should_close`` (EOF or ``handle_timer``).
  Closing earlier is harmless: the association no longer exists.

One ``ULConnection`` serves one transport connection: once ``should_close`` is set, local
requests raise ``LocalProtocolError`` and received bytes are ignored.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import cast

from dicomio.errors import AbortReason, AbortSource, LocalProtocolError, RemoteProtocolError
from dicomio.pdu.codec import encode, encode_parts
from dicomio.pdu.pdus import (
    PDU,
    Abort,
    AssociateAC,
    AssociateRJ,
    AssociateRQ,
    DataRun,
    PDataTF,
    RejectResult,
    RejectSource,
    ReleaseRP,
    ReleaseRQ,
)
from dicomio.pdu.reader import PDUReader
from dicomio.ul.events import ProviderAbort, TransportClosed, ULEvent
from dicomio.ul.states import TRANSITIONS, Action, Event, State

__all__ = ["Role", "ULConnection"]


class Role(enum.Enum):
    """Which end of the association this is (PS3.8 9.2: AR-8 depends on it)."""

    REQUESTOR = "requestor"
    ACCEPTOR = "acceptor"


# PS3.8 Table 9-10: the event a received PDU is.
_RECEIVED: dict[type[PDU], Event] = {
    AssociateAC: Event.RECEIVE_ASSOCIATE_AC,
    AssociateRJ: Event.RECEIVE_ASSOCIATE_RJ,
    AssociateRQ: Event.RECEIVE_ASSOCIATE_RQ,
    PDataTF: Event.RECEIVE_P_DATA_TF,
    ReleaseRQ: Event.RECEIVE_RELEASE_RQ,
    ReleaseRP: Event.RECEIVE_RELEASE_RP,
    Abort: Event.RECEIVE_ABORT,
}

# A-ASSOCIATE-RJ "source 2 (ACSE), reason 2: protocol-version-not-supported" (PS3.8 Table 9-21).
_PROTOCOL_VERSION_NOT_SUPPORTED = 2

_RELEASE_RQ_BYTES = encode(ReleaseRQ())
_RELEASE_RP_BYTES = encode(ReleaseRP())


class ULConnection:
    """The Upper Layer state machine of one association (PS3.8 9.2), sans-IO.

    ``max_pdu_length`` is the largest P-DATA-TF body we accept, which is the maximum length
    we announce in our A-ASSOCIATE-RQ/AC (PS3.8 Annex D.1; 0 means no limit); a PDU
    announcing more is refused at its 6-byte header with an A-ABORT. ``artim_timeout`` is the
    ARTIM timer's duration in seconds (PS3.8 9.1.2, 9.2).

    With ``data_runs``, consecutive P-DATA-TF PDUs that carry data set fragments (none the
    last) on one presentation context may be reported as one ``DataRun`` event instead of
    one ``PDataTF`` event each (see ``receive_data``).
    """

    def __init__(
        self,
        role: Role,
        *,
        max_pdu_length: int = 65536,
        artim_timeout: float = 30.0,
        data_runs: bool = False,
    ) -> None:
        self._role = role
        self._data_runs = data_runs
        self._state = State.IDLE
        self._reader = PDUReader(max_pdu_length)
        self._artim_timeout = artim_timeout
        self._deadline: float | None = None
        self._outbox: list[bytes | memoryview] = []
        # What the current input reports; a fresh list for each call that returns events.
        self._events: list[ULEvent] = []
        self._associate_rq = b""
        self._closed = False
        # After an unrecognized or invalid PDU the byte stream can no longer be split into
        # PDUs, so what follows is discarded (we are then in Sta13, ignoring PDUs anyway).
        self._framing_lost = False

    # -- what the caller reads -------------------------------------------------------------

    @property
    def role(self) -> Role:
        return self._role

    @property
    def state(self) -> State:
        """The current state, Sta1-Sta13."""
        return self._state

    @property
    def should_close(self) -> bool:
        """True once the transport connection is to be closed (after ``data_to_send``)."""
        return self._closed

    @property
    def at_rest(self) -> bool:
        """In Sta6 with no part of a PDU read, nothing to send and ARTIM stopped.

        The next bytes then start a PDU, and one P-DATA-TF among them is DT-2 alone: an
        indication, the state unchanged (PS3.8 Table 9-10).
        """
        return (
            self._state is State.DATA_TRANSFER
            and not self._outbox
            and not self._closed
            and self._deadline is None
            and not self._reader.buffered
        )

    def data_to_send(self) -> list[bytes | memoryview]:
        """Drain the outbound buffer: the encoded PDUs, in order, to write as they are.

        P-DATA-TF payloads are passed through as the caller gave them (often memoryviews),
        never joined, so a vectored write sends them without a copy.
        """
        out = self._outbox
        self._outbox = []
        return out

    @property
    def has_data_to_send(self) -> bool:
        """True if ``data_to_send`` would return something.

        An input can queue bytes without reporting any event (AE-6 rejecting a protocol
        version, AA-7 in Sta13), so the caller flushes on this, not on the events.
        """
        return bool(self._outbox)

    def next_deadline(self) -> float | None:
        """When ARTIM expires (on the caller's clock), or None if it is not running."""
        return self._deadline

    # -- transport -------------------------------------------------------------------------

    def connection_made(self, *, now: float) -> None:
        """The transport connection is open.

        On the requestor, the TRANSPORT CONNECT confirmation (Evt2): AE-2 sends the
        A-ASSOCIATE-RQ given to ``send_associate_rq``. On the acceptor, the transport
        connection indication (Evt5): AE-5 accepts it and starts ARTIM.
        """
        if self._role is Role.REQUESTOR:
            self._request(Event.TRANSPORT_CONFIRM, None, now)
        else:
            self._request(Event.TRANSPORT_INDICATION, None, now)

    def receive_data(self, data: bytes | bytearray | memoryview, *, now: float) -> list[ULEvent]:
        """Take bytes read from the transport; return what they mean, in order.

        Empty ``data`` means the transport connection closed (Evt17), including a failed
        connect in Sta4. Each complete PDU is one event of Table 9-10 (Evt3, 4, 6, 10, 12,
        13, 16; Evt19 if it is unrecognized or invalid). The peer's errors never raise: they
        are handled by the table, which queues the A-ABORT and reports ``ProviderAbort``.
        Raises ``LocalProtocolError`` only if there is no transport connection yet.

        With ``data_runs``, a ``DataRun`` event is the P-DATA indications of all its PDUs:
        each is still Evt10, but where Evt10 is DT-2 or AR-6 (Sta6, Sta7) the indication is
        all that happens and the state does not change, so issuing them together is the same
        as issuing them one by one. In any other state each PDU of the run is handled on its
        own, exactly as without ``data_runs``.
        """
        if not data:
            return self._transport_closed(now)
        if self._closed or self._framing_lost:
            return []
        state = self._state
        if state is State.IDLE or state is State.AWAITING_TRANSPORT_OPEN:
            raise LocalProtocolError(f"received data without a transport connection ({state})")
        events: list[ULEvent] = []
        self._events = events
        reader = self._reader
        runs = self._data_runs
        next_pdu = reader.next_pdu_or_run if runs else reader.next_pdu
        try:
            reader.feed(data)
            if reader.wants_more:
                # The middle of a PDU (a large P-DATA-TF comes in many reads): no PDU yet.
                return events
            while True:
                if self._state in _INDICATION_ONLY:
                    # DT-2/AR-6 with the state unchanged: the P-DATA indications are all
                    # that _fire would do for these PDUs, so they are issued in a batch.
                    events += reader.next_pdata_batch(runs=runs)
                pdu = next_pdu()
                if pdu is None:
                    break
                if type(pdu) is PDataTF and self._state in _INDICATION_ONLY:
                    events.append(pdu)
                elif isinstance(pdu, DataRun):
                    self._receive_run(pdu, now)
                else:
                    self._fire(_RECEIVED[type(pdu)], pdu, now)
                if self._closed:
                    # Whatever follows on a transport we are closing has no meaning.
                    break
        except RemoteProtocolError as exc:
            self._framing_lost = True
            self._fire(Event.RECEIVE_INVALID_PDU, exc, now)
        return events

    def _receive_run(self, run: DataRun, now: float) -> None:
        """Evt10 for each P-DATA-TF of ``run``; one ``DataRun`` indication where that is exact."""
        action, next_state = TRANSITIONS[self._state, Event.RECEIVE_P_DATA_TF]
        if (action is Action.DT_2 or action is Action.AR_6) and next_state is self._state:
            # Nothing but P-DATA indications, and the state stays: one for the whole run.
            self._events.append(run)
            return
        for pdu in run.pdus():
            self._fire(Event.RECEIVE_P_DATA_TF, pdu, now)
            if self._closed:
                return

    # -- timer -----------------------------------------------------------------------------

    def handle_timer(self, *, now: float) -> list[ULEvent]:
        """Fire ARTIM (Evt18) if ``now`` has reached ``next_deadline``; else do nothing.

        In Sta2 (no A-ASSOCIATE-RQ came in time) this reports ``ProviderAbort``; in Sta13 the
        wait for the peer to close ends. Either way AA-2 sets ``should_close``.
        """
        deadline = self._deadline
        if deadline is None or now < deadline:
            return []
        events: list[ULEvent] = []
        self._events = events
        waited_for_rq = self._state is State.AWAITING_ASSOCIATE_RQ
        self._fire(Event.ARTIM_EXPIRED, None, now)
        if waited_for_rq:
            events.append(
                ProviderAbort(
                    reason=AbortReason.NOT_SPECIFIED,
                    message="ARTIM expired before an A-ASSOCIATE-RQ arrived",
                )
            )
        return events

    # -- the local user's requests (service primitives) ------------------------------------

    def send_associate_rq(self, rq: AssociateRQ, *, now: float) -> None:
        """A-ASSOCIATE request (Evt1); requestor only. Next: connect, then ``connection_made``."""
        if self._role is not Role.REQUESTOR:
            raise LocalProtocolError("only the association requestor sends A-ASSOCIATE-RQ")
        self._request(Event.ASSOCIATE_REQUEST, rq, now)

    def send_associate_ac(self, ac: AssociateAC, *, now: float) -> None:
        """A-ASSOCIATE response, accept (Evt7): AE-7 sends the A-ASSOCIATE-AC."""
        self._request(Event.ASSOCIATE_ACCEPT, ac, now)

    def send_associate_rj(self, rj: AssociateRJ, *, now: float) -> None:
        """A-ASSOCIATE response, reject (Evt8): AE-8 sends the A-ASSOCIATE-RJ, starts ARTIM."""
        self._request(Event.ASSOCIATE_REJECT, rj, now)

    def send_pdata(self, pdata: PDataTF, *, now: float) -> None:
        """P-DATA request (Evt9): DT-1 in Sta6, AR-7 in Sta8 (after a release indication)."""
        self._request(Event.P_DATA_REQUEST, pdata, now)

    def send_pdata_parts(self, parts: list[bytes | memoryview], *, now: float) -> None:
        """P-DATA requests (Evt9) for P-DATA-TF PDUs that are already encoded.

        ``parts`` holds one or more whole P-DATA-TF PDUs, one after another, as buffers to
        write in order: what ``dicomio.dimse.fragment_parts`` returns for a message. They
        are queued as they are. The effect is ``send_pdata`` for each of those PDUs (DT-1
        in Sta6, AR-7 in Sta8, neither of which changes the state), without building or
        encoding a ``PDataTF`` per fragment.
        """
        if self._state in _SEND_ONLY and not self._closed:
            # DT-1/AR-7 with the state unchanged: _request's checks and _fire's work is this.
            self._outbox.extend(parts)
            return
        self._request(Event.P_DATA_REQUEST, parts, now)

    def send_release_rq(self, *, now: float) -> None:
        """A-RELEASE request (Evt11): AR-1 sends the A-RELEASE-RQ."""
        self._request(Event.RELEASE_REQUEST, None, now)

    def send_release_rp(self, *, now: float) -> None:
        """A-RELEASE response (Evt14): AR-4 in Sta8 and Sta12, AR-9 in Sta9.

        In a release collision the acceptor (Sta10) must wait for the peer's A-RELEASE-RP
        before it answers (PS3.8 Table 9-10); calling this in Sta10 raises.
        """
        self._request(Event.RELEASE_RESPONSE, None, now)

    def send_abort(self, *, source: int = 0, reason: int = 0, now: float) -> None:
        """A-ABORT request (Evt15): AA-1 sends the A-ABORT (in Sta4, AA-2 just closes).

        ``source`` and ``reason`` are the A-ABORT fields of PS3.8 Table 9-26; 0 and 0 are
        "service-user, reason not specified", the A-ABORT of AA-1.
        """
        self._request(Event.ABORT_REQUEST, Abort(source=source, reason=reason), now)

    # -- the machine -----------------------------------------------------------------------

    def _request(self, event: Event, item: object, now: float) -> None:
        if self._closed:
            raise LocalProtocolError(
                f"{event.description}: this connection is closed; use a new ULConnection"
            )
        if (self._state, event) not in TRANSITIONS:
            raise LocalProtocolError(
                f"{event.description} (Evt{event.number}) is not allowed in "
                f"Sta{self._state.number} ({self._state.description})"
            )
        self._fire(event, item, now)

    def _fire(self, event: Event, item: object, now: float) -> None:
        """Run the Table 9-10 cell for ``event`` in the current state.

        ``item`` is what the event carries: the PDU sent or received, the
        ``RemoteProtocolError`` of Evt19, or None.
        """
        action, next_state = TRANSITIONS[self._state, event]
        _ACTIONS[action](self, item, now)
        if next_state is not None:
            self._state = next_state
        if self._state is State.IDLE:
            # Every way into Sta1 closes the transport or follows its closing; ARTIM has
            # nothing left to time.
            self._closed = True
            self._deadline = None

    def _transport_closed(self, now: float) -> list[ULEvent]:
        if self._closed:
            return []
        if (self._state, Event.TRANSPORT_CLOSED) not in TRANSITIONS:
            raise LocalProtocolError(
                f"transport closed without a transport connection (Sta{self._state.number})"
            )
        events: list[ULEvent] = []
        self._events = events
        self._fire(Event.TRANSPORT_CLOSED, None, now)
        events.append(TransportClosed())
        return events

    def _indicate(self, item: object, now: float) -> None:
        """Issue the indication or confirmation that the received PDU is.

        AE-3 and AE-4 (A-ASSOCIATE confirmation), DT-2 and AR-6 (P-DATA indication), AR-2
        (A-RELEASE indication), AR-3 and AR-10 (A-RELEASE confirmation), AA-3 (A-ABORT
        indication; an A-P-ABORT if the PDU's source is the peer's provider).
        """
        self._events.append(cast(ULEvent, item))

    def _start_artim(self, now: float) -> None:
        self._deadline = now + self._artim_timeout

    def _queue_provider_abort(self, item: object, *, report: bool) -> None:
        """Queue the A-ABORT answering a received PDU; optionally report ``ProviderAbort``.

        The reason is the reader's for an invalid PDU (Evt19), else "unexpected PDU".
        """
        if isinstance(item, RemoteProtocolError):
            reason = item.abort_reason
            message = str(item)
        else:
            reason = AbortReason.UNEXPECTED_PDU
            message = (
                f"unexpected {type(item).__name__} in Sta{self._state.number} "
                f"({self._state.description})"
            )
        self._outbox.append(encode(Abort(source=AbortSource.SERVICE_PROVIDER, reason=reason)))
        if report:
            self._events.append(ProviderAbort(reason=reason, message=message))

    # Association establishment, PS3.8 Table 9-6.

    def _ae_1(self, item: object, now: float) -> None:
        # The caller opens the transport. The request is encoded now, so that one that
        # cannot be sent is refused here, and kept for AE-2.
        self._associate_rq = encode(cast(AssociateRQ, item))

    def _ae_2(self, item: object, now: float) -> None:
        self._outbox.append(self._associate_rq)

    def _ae_5(self, item: object, now: float) -> None:
        self._start_artim(now)

    def _ae_6(self, item: object, now: float) -> None:
        rq = cast(AssociateRQ, item)
        self._deadline = None
        # PS3.8 9.3.2: a receiver implementing only version 1 tests only that bit 0 is set.
        if rq.protocol_version & 1:
            self._events.append(rq)
            self._state = State.AWAITING_LOCAL_ASSOCIATE_RESPONSE
        else:
            # Not acceptable to the service provider: reject without an indication.
            rj = AssociateRJ(
                result=RejectResult.REJECTED_PERMANENT,
                source=RejectSource.SERVICE_PROVIDER_ACSE,
                reason=_PROTOCOL_VERSION_NOT_SUPPORTED,
            )
            self._outbox.append(encode(rj))
            self._start_artim(now)
            self._state = State.AWAITING_TRANSPORT_CLOSE

    def _ae_7(self, item: object, now: float) -> None:
        self._outbox.append(encode(cast(AssociateAC, item)))

    def _ae_8(self, item: object, now: float) -> None:
        self._outbox.append(encode(cast(AssociateRJ, item)))
        self._start_artim(now)

    # Data transfer, PS3.8 Table 9-7 (and AR-6/AR-7 of Table 9-8, which do the same).

    def _send_pdata(self, item: object, now: float) -> None:
        if type(item) is list:
            self._outbox.extend(item)  # already encoded: send_pdata_parts
        else:
            self._outbox.extend(encode_parts(cast(PDataTF, item)))

    def _ar_1(self, item: object, now: float) -> None:
        self._outbox.append(_RELEASE_RQ_BYTES)

    def _ar_4(self, item: object, now: float) -> None:
        self._outbox.append(_RELEASE_RP_BYTES)
        self._start_artim(now)

    def _ar_5(self, item: object, now: float) -> None:
        self._deadline = None

    def _ar_8(self, item: object, now: float) -> None:
        self._events.append(cast(ReleaseRQ, item))
        if self._role is Role.REQUESTOR:
            self._state = State.COLLISION_REQUESTOR_AWAITING_LOCAL_RELEASE_RESPONSE
        else:
            self._state = State.COLLISION_ACCEPTOR_AWAITING_RELEASE_RP

    def _ar_9(self, item: object, now: float) -> None:
        self._outbox.append(_RELEASE_RP_BYTES)

    # Association abort, PS3.8 Table 9-9.

    def _aa_1(self, item: object, now: float) -> None:
        if isinstance(item, Abort):
            # The local user's A-ABORT request.
            self._outbox.append(encode(item))
        else:
            # Sta2: the peer sent something other than an A-ASSOCIATE-RQ. No user has been
            # told of this association yet, so the abort is the provider's own (source 2).
            self._queue_provider_abort(item, report=True)
        self._start_artim(now)

    def _aa_2(self, item: object, now: float) -> None:
        self._deadline = None

    def _aa_4(self, item: object, now: float) -> None:
        # The A-P-ABORT indication is the TransportClosed that every Evt17 reports.
        pass

    def _aa_5(self, item: object, now: float) -> None:
        self._deadline = None

    def _aa_6(self, item: object, now: float) -> None:
        # Ignore the PDU: the association no longer exists.
        pass

    def _aa_7(self, item: object, now: float) -> None:
        self._queue_provider_abort(item, report=False)

    def _aa_8(self, item: object, now: float) -> None:
        self._queue_provider_abort(item, report=True)
        self._start_artim(now)


def _states_keeping(event: Event, *actions: Action) -> frozenset[State]:
    """The states in which ``event`` runs one of ``actions`` and the state stays."""
    return frozenset(
        state
        for (state, on), (action, next_state) in TRANSITIONS.items()
        if on is event and action in actions and next_state is state
    )


#: The states in which a received P-DATA-TF (Evt10) is only a P-DATA indication and the
#: state stays (DT-2 in Sta6, AR-6 in Sta7): ``receive_data`` issues it without ``_fire``.
_INDICATION_ONLY = _states_keeping(Event.RECEIVE_P_DATA_TF, Action.DT_2, Action.AR_6)

#: The states in which a P-DATA request (Evt9) only queues the P-DATA-TF and the state
#: stays (DT-1 in Sta6, AR-7 in Sta8): ``send_pdata_parts`` queues it without ``_fire``.
_SEND_ONLY = _states_keeping(Event.P_DATA_REQUEST, Action.DT_1, Action.AR_7)

_ACTIONS: dict[Action, Callable[[ULConnection, object, float], None]] = {
    Action.AE_1: ULConnection._ae_1,
    Action.AE_2: ULConnection._ae_2,
    Action.AE_3: ULConnection._indicate,
    Action.AE_4: ULConnection._indicate,
    Action.AE_5: ULConnection._ae_5,
    Action.AE_6: ULConnection._ae_6,
    Action.AE_7: ULConnection._ae_7,
    Action.AE_8: ULConnection._ae_8,
    Action.DT_1: ULConnection._send_pdata,
    Action.DT_2: ULConnection._indicate,
    Action.AR_1: ULConnection._ar_1,
    Action.AR_2: ULConnection._indicate,
    Action.AR_3: ULConnection._indicate,
    Action.AR_4: ULConnection._ar_4,
    Action.AR_5: ULConnection._ar_5,
    Action.AR_6: ULConnection._indicate,
    Action.AR_7: ULConnection._send_pdata,
    Action.AR_8: ULConnection._ar_8,
    Action.AR_9: ULConnection._ar_9,
    Action.AR_10: ULConnection._indicate,
    Action.AA_1: ULConnection._aa_1,
    Action.AA_2: ULConnection._aa_2,
    Action.AA_3: ULConnection._indicate,
    Action.AA_4: ULConnection._aa_4,
    Action.AA_5: ULConnection._aa_5,
    Action.AA_6: ULConnection._aa_6,
    Action.AA_7: ULConnection._aa_7,
    Action.AA_8: ULConnection._aa_8,
}
