"""The DICOM Upper Layer state machine of PS3.8 section 9.2, as data.

This module owns the states (PS3.8 Tables 9-1 to 9-5), the events (Table 9-10, rows), the
actions (Tables 9-6 to 9-9) and the state transition table itself (Table 9-10), and nothing
else: what an action *does* lives in ``dicomio.ul.connection``.

Each state and event has a readable name and, as an enum alias, the standard's own
identifier, so ``State.STA6 is State.DATA_TRANSFER`` and ``Event.EVT10 is
Event.RECEIVE_P_DATA_TF``; ``.number`` gives the number. The table below is written with the
standard's identifiers so that it can be held against Table 9-10 row by row.

Two actions choose their next state themselves; their table cells hold ``None`` as the next
state (PS3.8 Tables 9-6 and 9-8):

- AE-6 goes to Sta3 if the A-ASSOCIATE-RQ is acceptable to the service provider, and
  otherwise sends an A-ASSOCIATE-RJ and goes to Sta13.
- AR-8 goes to Sta9 on the association requestor and to Sta10 on the acceptor.

Cells that Table 9-10 leaves empty are absent: the event is not allowed in that state.
"""

from __future__ import annotations

import enum

__all__ = ["Action", "Event", "State", "TRANSITIONS", "Transition"]


class State(enum.Enum):
    """Upper Layer states Sta1-Sta13 (PS3.8 9.2.1, Tables 9-1 to 9-5)."""

    # Members are singletons, so they hash by identity: Enum.__hash__ is Python code, and
    # every PDU sent or received looks up (state, event) and its action by hash.
    __hash__ = object.__hash__

    IDLE = 1
    AWAITING_ASSOCIATE_RQ = 2
    AWAITING_LOCAL_ASSOCIATE_RESPONSE = 3
    AWAITING_TRANSPORT_OPEN = 4
    AWAITING_ASSOCIATE_AC = 5
    DATA_TRANSFER = 6
    AWAITING_RELEASE_RP = 7
    AWAITING_LOCAL_RELEASE_RESPONSE = 8
    COLLISION_REQUESTOR_AWAITING_LOCAL_RELEASE_RESPONSE = 9
    COLLISION_ACCEPTOR_AWAITING_RELEASE_RP = 10
    COLLISION_REQUESTOR_AWAITING_RELEASE_RP = 11
    COLLISION_ACCEPTOR_AWAITING_LOCAL_RELEASE_RESPONSE = 12
    AWAITING_TRANSPORT_CLOSE = 13

    # The standard's identifiers, as aliases of the members above.
    STA1 = 1
    STA2 = 2
    STA3 = 3
    STA4 = 4
    STA5 = 5
    STA6 = 6
    STA7 = 7
    STA8 = 8
    STA9 = 9
    STA10 = 10
    STA11 = 11
    STA12 = 12
    STA13 = 13

    @property
    def number(self) -> int:
        """The n of the standard's "Sta n"."""
        return self.value

    @property
    def description(self) -> str:
        """The state's definition in PS3.8 Tables 9-1 to 9-5."""
        return _STATE_DESCRIPTIONS[self.value]


_STATE_DESCRIPTIONS = {
    1: "Idle",
    2: "Transport connection open (Awaiting A-ASSOCIATE-RQ PDU)",
    3: "Awaiting local A-ASSOCIATE response primitive (from local user)",
    4: "Awaiting transport connection opening to complete (from local transport service)",
    5: "Awaiting A-ASSOCIATE-AC or A-ASSOCIATE-RJ PDU",
    6: "Association established and ready for data transfer",
    7: "Awaiting A-RELEASE-RP PDU",
    8: "Awaiting local A-RELEASE response primitive (from local user)",
    9: "Release collision requestor side; awaiting A-RELEASE response (from local user)",
    10: "Release collision acceptor side; awaiting A-RELEASE-RP PDU",
    11: "Release collision requestor side; awaiting A-RELEASE-RP PDU",
    12: "Release collision acceptor side; awaiting A-RELEASE response primitive (from local user)",
    13: "Awaiting Transport Connection Close Indication (Association no longer exists)",
}


class Event(enum.Enum):
    """Upper Layer events Evt1-Evt19 (the rows of PS3.8 Table 9-10)."""

    # Members are singletons, so they hash by identity: Enum.__hash__ is Python code, and
    # every PDU sent or received looks up (state, event) and its action by hash.
    __hash__ = object.__hash__

    ASSOCIATE_REQUEST = 1
    TRANSPORT_CONFIRM = 2
    RECEIVE_ASSOCIATE_AC = 3
    RECEIVE_ASSOCIATE_RJ = 4
    TRANSPORT_INDICATION = 5
    RECEIVE_ASSOCIATE_RQ = 6
    ASSOCIATE_ACCEPT = 7
    ASSOCIATE_REJECT = 8
    P_DATA_REQUEST = 9
    RECEIVE_P_DATA_TF = 10
    RELEASE_REQUEST = 11
    RECEIVE_RELEASE_RQ = 12
    RECEIVE_RELEASE_RP = 13
    RELEASE_RESPONSE = 14
    ABORT_REQUEST = 15
    RECEIVE_ABORT = 16
    TRANSPORT_CLOSED = 17
    ARTIM_EXPIRED = 18
    RECEIVE_INVALID_PDU = 19

    # The standard's identifiers, as aliases of the members above.
    EVT1 = 1
    EVT2 = 2
    EVT3 = 3
    EVT4 = 4
    EVT5 = 5
    EVT6 = 6
    EVT7 = 7
    EVT8 = 8
    EVT9 = 9
    EVT10 = 10
    EVT11 = 11
    EVT12 = 12
    EVT13 = 13
    EVT14 = 14
    EVT15 = 15
    EVT16 = 16
    EVT17 = 17
    EVT18 = 18
    EVT19 = 19

    @property
    def number(self) -> int:
        """The n of the standard's "Evt n"."""
        return self.value

    @property
    def description(self) -> str:
        """The event's name in PS3.8 Table 9-10."""
        return _EVENT_DESCRIPTIONS[self.value]


_EVENT_DESCRIPTIONS = {
    1: "A-ASSOCIATE Request (local user)",
    2: "Transport Conn. Confirm (local transport service)",
    3: "A-ASSOCIATE-AC PDU (received on transport connection)",
    4: "A-ASSOCIATE-RJ PDU (received on transport connection)",
    5: "Transport Connection Indication (local transport service)",
    6: "A-ASSOCIATE-RQ PDU (received on transport connection)",
    7: "A-ASSOCIATE response primitive (accept)",
    8: "A-ASSOCIATE response primitive (reject)",
    9: "P-DATA request primitive",
    10: "P-DATA-TF PDU",
    11: "A-RELEASE Request primitive",
    12: "A-RELEASE-RQ PDU (received on open transport connection)",
    13: "A-RELEASE-RP PDU (received on transport connection)",
    14: "A-RELEASE Response primitive",
    15: "A-ABORT Request primitive",
    16: "A-ABORT PDU (received on open transport connection)",
    17: "Transport connection closed indication (local transport service)",
    18: "ARTIM timer expired (Association reject/release timer)",
    19: "Unrecognized or invalid PDU received",
}


class Action(enum.Enum):
    """State machine actions (PS3.8 9.2.2, Tables 9-6 to 9-9); the value is the standard's name."""

    # Members are singletons, so they hash by identity: Enum.__hash__ is Python code, and
    # every PDU sent or received looks up (state, event) and its action by hash.
    __hash__ = object.__hash__

    # Table 9-6, association establishment
    AE_1 = "AE-1"  # issue TRANSPORT CONNECT request; -> Sta4
    AE_2 = "AE-2"  # send A-ASSOCIATE-RQ PDU; -> Sta5
    AE_3 = "AE-3"  # issue A-ASSOCIATE confirmation (accept); -> Sta6
    AE_4 = "AE-4"  # issue A-ASSOCIATE confirmation (reject), close transport; -> Sta1
    AE_5 = "AE-5"  # issue transport connection response, start ARTIM; -> Sta2
    AE_6 = "AE-6"  # stop ARTIM; indication -> Sta3, or send A-ASSOCIATE-RJ, ARTIM -> Sta13
    AE_7 = "AE-7"  # send A-ASSOCIATE-AC PDU; -> Sta6
    AE_8 = "AE-8"  # send A-ASSOCIATE-RJ PDU, start ARTIM; -> Sta13
    # Table 9-7, data transfer
    DT_1 = "DT-1"  # send P-DATA-TF PDU; -> Sta6
    DT_2 = "DT-2"  # issue P-DATA indication; -> Sta6
    # Table 9-8, association release
    AR_1 = "AR-1"  # send A-RELEASE-RQ PDU; -> Sta7
    AR_2 = "AR-2"  # issue A-RELEASE indication; -> Sta8
    AR_3 = "AR-3"  # issue A-RELEASE confirmation, close transport; -> Sta1
    AR_4 = "AR-4"  # send A-RELEASE-RP PDU, start ARTIM; -> Sta13
    AR_5 = "AR-5"  # stop ARTIM; -> Sta1
    AR_6 = "AR-6"  # issue P-DATA indication; -> Sta7
    AR_7 = "AR-7"  # send P-DATA-TF PDU; -> Sta8
    AR_8 = "AR-8"  # issue A-RELEASE indication (collision); requestor -> Sta9, else Sta10
    AR_9 = "AR-9"  # send A-RELEASE-RP PDU; -> Sta11
    AR_10 = "AR-10"  # issue A-RELEASE confirmation; -> Sta12
    # Table 9-9, association abort
    AA_1 = "AA-1"  # send A-ABORT PDU, start (or restart) ARTIM; -> Sta13
    AA_2 = "AA-2"  # stop ARTIM if running, close transport; -> Sta1
    AA_3 = "AA-3"  # issue A-ABORT (or A-P-ABORT) indication, close transport; -> Sta1
    AA_4 = "AA-4"  # issue A-P-ABORT indication; -> Sta1
    AA_5 = "AA-5"  # stop ARTIM; -> Sta1
    AA_6 = "AA-6"  # ignore PDU; -> Sta13
    AA_7 = "AA-7"  # send A-ABORT PDU; -> Sta13
    AA_8 = "AA-8"  # send A-ABORT PDU (provider), issue A-P-ABORT indication, ARTIM; -> Sta13


Transition = tuple[Action, State | None]
"""A cell of Table 9-10: the action, and the next state (``None``: the action chooses)."""

S = State
E = Event
A = Action

# PS3.8 Table 9-10, one cell per line, in the table's order: row by row (Evt1..Evt19), and
# within a row column by column (Sta1..Sta13). The next state is the one the action's
# definition in Tables 9-6 to 9-9 gives.
TRANSITIONS: dict[tuple[State, Event], Transition] = {
    # Evt1: A-ASSOCIATE Request (local user)
    (S.STA1, E.EVT1): (A.AE_1, S.STA4),
    # Evt2: Transport Conn. Confirm (local transport service)
    (S.STA4, E.EVT2): (A.AE_2, S.STA5),
    # Evt3: A-ASSOCIATE-AC PDU (received on transport connection)
    (S.STA2, E.EVT3): (A.AA_1, S.STA13),
    (S.STA3, E.EVT3): (A.AA_8, S.STA13),
    (S.STA5, E.EVT3): (A.AE_3, S.STA6),
    (S.STA6, E.EVT3): (A.AA_8, S.STA13),
    (S.STA7, E.EVT3): (A.AA_8, S.STA13),
    (S.STA8, E.EVT3): (A.AA_8, S.STA13),
    (S.STA9, E.EVT3): (A.AA_8, S.STA13),
    (S.STA10, E.EVT3): (A.AA_8, S.STA13),
    (S.STA11, E.EVT3): (A.AA_8, S.STA13),
    (S.STA12, E.EVT3): (A.AA_8, S.STA13),
    (S.STA13, E.EVT3): (A.AA_6, S.STA13),
    # Evt4: A-ASSOCIATE-RJ PDU (received on transport connection)
    (S.STA2, E.EVT4): (A.AA_1, S.STA13),
    (S.STA3, E.EVT4): (A.AA_8, S.STA13),
    (S.STA5, E.EVT4): (A.AE_4, S.STA1),
    (S.STA6, E.EVT4): (A.AA_8, S.STA13),
    (S.STA7, E.EVT4): (A.AA_8, S.STA13),
    (S.STA8, E.EVT4): (A.AA_8, S.STA13),
    (S.STA9, E.EVT4): (A.AA_8, S.STA13),
    (S.STA10, E.EVT4): (A.AA_8, S.STA13),
    (S.STA11, E.EVT4): (A.AA_8, S.STA13),
    (S.STA12, E.EVT4): (A.AA_8, S.STA13),
    (S.STA13, E.EVT4): (A.AA_6, S.STA13),
    # Evt5: Transport Connection Indication (local transport service)
    (S.STA1, E.EVT5): (A.AE_5, S.STA2),
    # Evt6: A-ASSOCIATE-RQ PDU (received on transport connection)
    (S.STA2, E.EVT6): (A.AE_6, None),
    (S.STA3, E.EVT6): (A.AA_8, S.STA13),
    (S.STA5, E.EVT6): (A.AA_8, S.STA13),
    (S.STA6, E.EVT6): (A.AA_8, S.STA13),
    (S.STA7, E.EVT6): (A.AA_8, S.STA13),
    (S.STA8, E.EVT6): (A.AA_8, S.STA13),
    (S.STA9, E.EVT6): (A.AA_8, S.STA13),
    (S.STA10, E.EVT6): (A.AA_8, S.STA13),
    (S.STA11, E.EVT6): (A.AA_8, S.STA13),
    (S.STA12, E.EVT6): (A.AA_8, S.STA13),
    (S.STA13, E.EVT6): (A.AA_7, S.STA13),
    # Evt7: A-ASSOCIATE response primitive (accept)
    (S.STA3, E.EVT7): (A.AE_7, S.STA6),
    # Evt8: A-ASSOCIATE response primitive (reject)
    (S.STA3, E.EVT8): (A.AE_8, S.STA13),
    # Evt9: P-DATA request primitive
    (S.STA6, E.EVT9): (A.DT_1, S.STA6),
    (S.STA8, E.EVT9): (A.AR_7, S.STA8),
    # Evt10: P-DATA-TF PDU
    (S.STA2, E.EVT10): (A.AA_1, S.STA13),
    (S.STA3, E.EVT10): (A.AA_8, S.STA13),
    (S.STA5, E.EVT10): (A.AA_8, S.STA13),
    (S.STA6, E.EVT10): (A.DT_2, S.STA6),
    (S.STA7, E.EVT10): (A.AR_6, S.STA7),
    (S.STA8, E.EVT10): (A.AA_8, S.STA13),
    (S.STA9, E.EVT10): (A.AA_8, S.STA13),
    (S.STA10, E.EVT10): (A.AA_8, S.STA13),
    (S.STA11, E.EVT10): (A.AA_8, S.STA13),
    (S.STA12, E.EVT10): (A.AA_8, S.STA13),
    (S.STA13, E.EVT10): (A.AA_6, S.STA13),
    # Evt11: A-RELEASE Request primitive
    (S.STA6, E.EVT11): (A.AR_1, S.STA7),
    # Evt12: A-RELEASE-RQ PDU (received on open transport connection)
    (S.STA2, E.EVT12): (A.AA_1, S.STA13),
    (S.STA3, E.EVT12): (A.AA_8, S.STA13),
    (S.STA5, E.EVT12): (A.AA_8, S.STA13),
    (S.STA6, E.EVT12): (A.AR_2, S.STA8),
    (S.STA7, E.EVT12): (A.AR_8, None),
    (S.STA8, E.EVT12): (A.AA_8, S.STA13),
    (S.STA9, E.EVT12): (A.AA_8, S.STA13),
    (S.STA10, E.EVT12): (A.AA_8, S.STA13),
    (S.STA11, E.EVT12): (A.AA_8, S.STA13),
    (S.STA12, E.EVT12): (A.AA_8, S.STA13),
    (S.STA13, E.EVT12): (A.AA_6, S.STA13),
    # Evt13: A-RELEASE-RP PDU (received on transport connection)
    (S.STA2, E.EVT13): (A.AA_1, S.STA13),
    (S.STA3, E.EVT13): (A.AA_8, S.STA13),
    (S.STA5, E.EVT13): (A.AA_8, S.STA13),
    (S.STA6, E.EVT13): (A.AA_8, S.STA13),
    (S.STA7, E.EVT13): (A.AR_3, S.STA1),
    (S.STA8, E.EVT13): (A.AA_8, S.STA13),
    (S.STA9, E.EVT13): (A.AA_8, S.STA13),
    (S.STA10, E.EVT13): (A.AR_10, S.STA12),
    (S.STA11, E.EVT13): (A.AR_3, S.STA1),
    (S.STA12, E.EVT13): (A.AA_8, S.STA13),
    (S.STA13, E.EVT13): (A.AA_6, S.STA13),
    # Evt14: A-RELEASE Response primitive
    (S.STA8, E.EVT14): (A.AR_4, S.STA13),
    (S.STA9, E.EVT14): (A.AR_9, S.STA11),
    (S.STA12, E.EVT14): (A.AR_4, S.STA13),
    # Evt15: A-ABORT Request primitive
    (S.STA3, E.EVT15): (A.AA_1, S.STA13),
    (S.STA4, E.EVT15): (A.AA_2, S.STA1),
    (S.STA5, E.EVT15): (A.AA_1, S.STA13),
    (S.STA6, E.EVT15): (A.AA_1, S.STA13),
    (S.STA7, E.EVT15): (A.AA_1, S.STA13),
    (S.STA8, E.EVT15): (A.AA_1, S.STA13),
    (S.STA9, E.EVT15): (A.AA_1, S.STA13),
    (S.STA10, E.EVT15): (A.AA_1, S.STA13),
    (S.STA11, E.EVT15): (A.AA_1, S.STA13),
    (S.STA12, E.EVT15): (A.AA_1, S.STA13),
    # Evt16: A-ABORT PDU (received on open transport connection)
    (S.STA2, E.EVT16): (A.AA_2, S.STA1),
    (S.STA3, E.EVT16): (A.AA_3, S.STA1),
    (S.STA5, E.EVT16): (A.AA_3, S.STA1),
    (S.STA6, E.EVT16): (A.AA_3, S.STA1),
    (S.STA7, E.EVT16): (A.AA_3, S.STA1),
    (S.STA8, E.EVT16): (A.AA_3, S.STA1),
    (S.STA9, E.EVT16): (A.AA_3, S.STA1),
    (S.STA10, E.EVT16): (A.AA_3, S.STA1),
    (S.STA11, E.EVT16): (A.AA_3, S.STA1),
    (S.STA12, E.EVT16): (A.AA_3, S.STA1),
    (S.STA13, E.EVT16): (A.AA_2, S.STA1),
    # Evt17: Transport connection closed indication (local transport service)
    (S.STA2, E.EVT17): (A.AA_5, S.STA1),
    (S.STA3, E.EVT17): (A.AA_4, S.STA1),
    (S.STA4, E.EVT17): (A.AA_4, S.STA1),
    (S.STA5, E.EVT17): (A.AA_4, S.STA1),
    (S.STA6, E.EVT17): (A.AA_4, S.STA1),
    (S.STA7, E.EVT17): (A.AA_4, S.STA1),
    (S.STA8, E.EVT17): (A.AA_4, S.STA1),
    (S.STA9, E.EVT17): (A.AA_4, S.STA1),
    (S.STA10, E.EVT17): (A.AA_4, S.STA1),
    (S.STA11, E.EVT17): (A.AA_4, S.STA1),
    (S.STA12, E.EVT17): (A.AA_4, S.STA1),
    (S.STA13, E.EVT17): (A.AR_5, S.STA1),
    # Evt18: ARTIM timer expired (Association reject/release timer)
    (S.STA2, E.EVT18): (A.AA_2, S.STA1),
    (S.STA13, E.EVT18): (A.AA_2, S.STA1),
    # Evt19: Unrecognized or invalid PDU received
    (S.STA2, E.EVT19): (A.AA_1, S.STA13),
    (S.STA3, E.EVT19): (A.AA_8, S.STA13),
    (S.STA5, E.EVT19): (A.AA_8, S.STA13),
    (S.STA6, E.EVT19): (A.AA_8, S.STA13),
    (S.STA7, E.EVT19): (A.AA_8, S.STA13),
    (S.STA8, E.EVT19): (A.AA_8, S.STA13),
    (S.STA9, E.EVT19): (A.AA_8, S.STA13),
    (S.STA10, E.EVT19): (A.AA_8, S.STA13),
    (S.STA11, E.EVT19): (A.AA_8, S.STA13),
    (S.STA12, E.EVT19): (A.AA_8, S.STA13),
    (S.STA13, E.EVT19): (A.AA_7, S.STA13),
}

del S, E, A
