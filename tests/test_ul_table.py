"""Every cell of PS3.8 Table 9-10, checked against ``TRANSITIONS`` and against a live
``ULConnection`` driven into each state.

The reference below is typed independently from the standard, as a grid laid out like the
printed table (rows are events, columns are states, "." is an empty cell), so that it can
be checked by eye against PS3.8 9.2.3 and does not share a single line with
``dicomio.ul.states``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dicomio.errors import LocalProtocolError
from dicomio.pdu.codec import encode
from dicomio.pdu.items import PresentationDataValue
from dicomio.pdu.pdus import (
    PDU,
    Abort,
    AssociateAC,
    AssociateRJ,
    AssociateRQ,
    DataRun,
    PDataTF,
    ReleaseRP,
    ReleaseRQ,
)
from dicomio.pdu.reader import PDUReader
from dicomio.ul import (
    TRANSITIONS,
    Action,
    Event,
    ProviderAbort,
    Role,
    State,
    TransportClosed,
    ULConnection,
)

# PS3.8 Table 9-10, DICOM Upper Layer Protocol State Transition Table.
TABLE_9_10 = """
       Sta1  Sta2  Sta3  Sta4  Sta5  Sta6  Sta7  Sta8  Sta9  Sta10 Sta11 Sta12 Sta13
Evt1   AE-1  .     .     .     .     .     .     .     .     .     .     .     .
Evt2   .     .     .     AE-2  .     .     .     .     .     .     .     .     .
Evt3   .     AA-1  AA-8  .     AE-3  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-6
Evt4   .     AA-1  AA-8  .     AE-4  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-6
Evt5   AE-5  .     .     .     .     .     .     .     .     .     .     .     .
Evt6   .     AE-6  AA-8  .     AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-7
Evt7   .     .     AE-7  .     .     .     .     .     .     .     .     .     .
Evt8   .     .     AE-8  .     .     .     .     .     .     .     .     .     .
Evt9   .     .     .     .     .     DT-1  .     AR-7  .     .     .     .     .
Evt10  .     AA-1  AA-8  .     AA-8  DT-2  AR-6  AA-8  AA-8  AA-8  AA-8  AA-8  AA-6
Evt11  .     .     .     .     .     AR-1  .     .     .     .     .     .     .
Evt12  .     AA-1  AA-8  .     AA-8  AR-2  AR-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-6
Evt13  .     AA-1  AA-8  .     AA-8  AA-8  AR-3  AA-8  AA-8  AR-10 AR-3  AA-8  AA-6
Evt14  .     .     .     .     .     .     .     AR-4  AR-9  .     .     AR-4  .
Evt15  .     .     AA-1  AA-2  AA-1  AA-1  AA-1  AA-1  AA-1  AA-1  AA-1  AA-1  .
Evt16  .     AA-2  AA-3  .     AA-3  AA-3  AA-3  AA-3  AA-3  AA-3  AA-3  AA-3  AA-2
Evt17  .     AA-5  AA-4  AA-4  AA-4  AA-4  AA-4  AA-4  AA-4  AA-4  AA-4  AA-4  AR-5
Evt18  .     AA-2  .     .     .     .     .     .     .     .     .     .     AA-2
Evt19  .     AA-1  AA-8  .     AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-7
"""

# The next state each action's definition gives (PS3.8 Tables 9-6 to 9-9). AE-6 and AR-8
# choose between two: AE-6 Sta3 (acceptable) or Sta13; AR-8 Sta9 (requestor) or Sta10.
NEXT_STATE: dict[str, int | tuple[int, int]] = {
    "AE-1": 4, "AE-2": 5, "AE-3": 6, "AE-4": 1, "AE-5": 2, "AE-6": (3, 13), "AE-7": 6,
    "AE-8": 13,
    "DT-1": 6, "DT-2": 6,
    "AR-1": 7, "AR-2": 8, "AR-3": 1, "AR-4": 13, "AR-5": 1, "AR-6": 7, "AR-7": 8,
    "AR-8": (9, 10), "AR-9": 11, "AR-10": 12,
    "AA-1": 13, "AA-2": 1, "AA-3": 1, "AA-4": 1, "AA-5": 1, "AA-6": 13, "AA-7": 13,
    "AA-8": 13,
}  # fmt: skip


def parse_reference() -> dict[tuple[int, int], str]:
    lines = [line.split() for line in TABLE_9_10.strip().splitlines()]
    header, rows = lines[0], lines[1:]
    assert header == [f"Sta{n}" for n in range(1, 14)]
    assert [row[0] for row in rows] == [f"Evt{n}" for n in range(1, 20)]
    cells = {}
    for row in rows:
        assert len(row) == 14, row
        event = int(row[0][3:])
        for state, cell in enumerate(row[1:], start=1):
            if cell != ".":
                cells[state, event] = cell
    return cells


REFERENCE = parse_reference()
ALL_CELLS = [(s, e) for e in range(1, 20) for s in range(1, 14)]


def test_reference_shape() -> None:
    assert len(ALL_CELLS) == 247
    assert len(REFERENCE) == 123
    assert set(REFERENCE.values()) == set(NEXT_STATE)


def test_enums_number_the_standard() -> None:
    assert [s.number for s in State] == list(range(1, 14))
    assert [e.number for e in Event] == list(range(1, 20))
    assert State.STA6.name == "DATA_TRANSFER"  # an alias of the readable name
    assert State.AWAITING_ASSOCIATE_AC.number == 5
    assert Event.EVT19.name == "RECEIVE_INVALID_PDU"
    assert [a.value for a in Action] == list(NEXT_STATE)
    assert all(s.description for s in State)
    assert all(e.description for e in Event)


@pytest.mark.parametrize(("state", "event"), ALL_CELLS)
def test_table_cell(state: int, event: int) -> None:
    cell = TRANSITIONS.get((State(state), Event(event)))
    expected = REFERENCE.get((state, event))
    if expected is None:
        assert cell is None
        return
    assert cell is not None
    action, next_state = cell
    assert action.value == expected
    want = NEXT_STATE[expected]
    if isinstance(want, tuple):
        assert next_state is None  # the action chooses
    else:
        assert next_state is not None
        assert next_state.number == want


def test_no_extra_cells() -> None:
    assert {(s.number, e.number) for s, e in TRANSITIONS} == set(REFERENCE)


# ---------------------------------------------------------------------------------------
# Driving a real ULConnection into each state and firing each event at it.

RQ = AssociateRQ(called_ae_title="ACCEPTOR", calling_ae_title="REQUESTOR")
AC = AssociateAC(called_ae_title="ACCEPTOR", calling_ae_title="REQUESTOR")
RJ = AssociateRJ(result=1, source=1, reason=1)
PDATA = PDataTF(
    pdvs=[PresentationDataValue(context_id=1, is_command=True, is_last=True, data=b"\x00" * 8)]
)
UNKNOWN_PDU = b"\x09\x00\x00\x00\x00\x00"  # PDU type 09H does not exist (Table 9-11)
ARTIM = 30.0


def drain(conn: ULConnection) -> list[PDU]:
    """The PDUs queued for the peer, decoded."""
    reader = PDUReader(0)
    reader.feed(b"".join(conn.data_to_send()))
    return list(reader)


def feed(conn: ULConnection, pdu: PDU, now: float = 0.0) -> list[object]:
    return list(conn.receive_data(encode(pdu), now=now))


def reach(state: int, role: Role, *, data_runs: bool = False) -> ULConnection:
    """A connection of ``role`` brought into Sta``state`` through the public API only."""
    conn = ULConnection(role, artim_timeout=ARTIM, data_runs=data_runs)
    path = PATHS[role][state]
    for step in path:
        step(conn)
    assert conn.state.number == state, (role, state, conn.state)
    conn.data_to_send()
    return conn


def _steps(*steps: Callable[[ULConnection], object]) -> list[Callable[[ULConnection], object]]:
    return list(steps)


def _rq(c: ULConnection) -> None:
    c.send_associate_rq(RQ, now=0.0)


def _made(c: ULConnection) -> None:
    c.connection_made(now=0.0)


def _recv(pdu: PDU) -> Callable[[ULConnection], object]:
    return lambda c: feed(c, pdu)


def _accept(c: ULConnection) -> None:
    c.send_associate_ac(AC, now=0.0)


def _release(c: ULConnection) -> None:
    c.send_release_rq(now=0.0)


def _release_rp(c: ULConnection) -> None:
    c.send_release_rp(now=0.0)


def _abort(c: ULConnection) -> None:
    c.send_abort(now=0.0)


_REQ6 = _steps(_rq, _made, _recv(AC))
_ACC6 = _steps(_made, _recv(RQ), _accept)

PATHS: dict[Role, dict[int, list[Callable[[ULConnection], object]]]] = {
    Role.REQUESTOR: {
        1: [],
        4: _steps(_rq),
        5: _steps(_rq, _made),
        6: _REQ6,
        7: [*_REQ6, _release],
        8: [*_REQ6, _recv(ReleaseRQ())],
        9: [*_REQ6, _release, _recv(ReleaseRQ())],
        11: [*_REQ6, _release, _recv(ReleaseRQ()), _release_rp],
        13: [*_REQ6, _abort],
    },
    Role.ACCEPTOR: {
        1: [],
        2: _steps(_made),
        3: _steps(_made, _recv(RQ)),
        6: _ACC6,
        7: [*_ACC6, _release],
        8: [*_ACC6, _recv(ReleaseRQ())],
        10: [*_ACC6, _release, _recv(ReleaseRQ())],
        12: [*_ACC6, _release, _recv(ReleaseRQ()), _recv(ReleaseRP())],
        13: [*_ACC6, _abort],
    },
}

REACHABLE = [(state, role) for role in Role for state in PATHS[role]]

# How each event is fired from outside. Local requests return nothing; the others return
# what the connection reports. Evt2 and Evt5 are both ``connection_made``, which is Evt2 on
# a requestor and Evt5 on an acceptor; Evt1 is requestor-only by its nature.
LOCAL: dict[int, Callable[[ULConnection], None]] = {
    1: lambda c: c.send_associate_rq(RQ, now=1.0),
    2: lambda c: c.connection_made(now=1.0),
    5: lambda c: c.connection_made(now=1.0),
    7: lambda c: c.send_associate_ac(AC, now=1.0),
    8: lambda c: c.send_associate_rj(RJ, now=1.0),
    9: lambda c: c.send_pdata(PDATA, now=1.0),
    11: lambda c: c.send_release_rq(now=1.0),
    14: lambda c: c.send_release_rp(now=1.0),
    15: lambda c: c.send_abort(now=1.0),
}
REMOTE: dict[int, Callable[[ULConnection], list[object]]] = {
    3: lambda c: feed(c, AC, 1.0),
    4: lambda c: feed(c, RJ, 1.0),
    6: lambda c: feed(c, RQ, 1.0),
    10: lambda c: feed(c, PDATA, 1.0),
    12: lambda c: feed(c, ReleaseRQ(), 1.0),
    13: lambda c: feed(c, ReleaseRP(), 1.0),
    16: lambda c: feed(c, Abort(source=0, reason=0), 1.0),
    17: lambda c: list(c.receive_data(b"", now=1.0)),
    18: lambda c: list(c.handle_timer(now=1000.0)),
    19: lambda c: list(c.receive_data(UNKNOWN_PDU, now=1.0)),
}


def fire(conn: ULConnection, event: int) -> list[object]:
    if event in LOCAL:
        LOCAL[event](conn)
        return []
    return REMOTE[event](conn)


# What each action queues for the peer, and what it reports (PS3.8 Tables 9-6 to 9-9).
SENDS: dict[str, type | None] = {
    "AE-2": AssociateRQ, "AE-6": None, "AE-7": AssociateAC, "AE-8": AssociateRJ,
    "DT-1": PDataTF, "AR-7": PDataTF, "AR-1": ReleaseRQ, "AR-4": ReleaseRP, "AR-9": ReleaseRP,
    "AA-1": Abort, "AA-7": Abort, "AA-8": Abort,
}  # fmt: skip
REPORTS: dict[str, type | None] = {
    "AE-3": AssociateAC, "AE-4": AssociateRJ, "AE-6": AssociateRQ, "DT-2": PDataTF,
    "AR-6": PDataTF, "AR-2": ReleaseRQ, "AR-8": ReleaseRQ, "AR-3": ReleaseRP,
    "AR-10": ReleaseRP, "AA-3": Abort, "AA-8": ProviderAbort,
}  # fmt: skip
STARTS_ARTIM = {"AE-5", "AE-8", "AR-4", "AA-1", "AA-8"}
STOPS_ARTIM = {"AE-6", "AR-5", "AA-2", "AA-5"}


def event_applies(event: int, role: Role) -> bool:
    if event == 2:
        return role is Role.REQUESTOR
    if event == 5:
        return role is Role.ACCEPTOR
    return True


CASES = [
    pytest.param(state, role, event, id=f"Sta{state}-Evt{event}-{role.value}")
    for state, role in REACHABLE
    for event in range(1, 20)
    if event_applies(event, role)
]


@pytest.mark.parametrize(("state", "role", "event"), CASES)
def test_cell_on_live_connection(state: int, role: Role, event: int) -> None:
    conn = reach(state, role)
    before_deadline = conn.next_deadline()
    cell = REFERENCE.get((state, event))
    if event == 1 and role is Role.ACCEPTOR:
        cell = None  # the acceptor never issues an A-ASSOCIATE request
    transport_open = state not in (1, 4)
    if event == 18 and before_deadline is None:
        # ARTIM is not running, so it cannot expire: nothing happens at all.
        assert cell is None
        assert conn.handle_timer(now=1e9) == []
        assert conn.state.number == state
        assert conn.data_to_send() == []
        return
    if cell is None:
        # An empty cell is reachable from outside only as a local mistake: a local request
        # not allowed now, or bytes (or EOF) handed over without a transport connection.
        assert event in LOCAL or not transport_open
        with pytest.raises(LocalProtocolError):
            fire(conn, event)
        assert conn.state.number == state
        assert conn.data_to_send() == []
        assert conn.next_deadline() == before_deadline
        assert not conn.should_close
        return

    reported = fire(conn, event)
    sent = drain(conn)

    if cell == "AR-8":
        want_next = 9 if role is Role.REQUESTOR else 10
    elif cell == "AE-6":
        want_next = 3  # the RQ is acceptable (protocol version 1)
    else:
        fixed = NEXT_STATE[cell]
        assert isinstance(fixed, int)
        want_next = fixed
    assert conn.state.number == want_next
    assert conn.should_close is (want_next == 1)

    sends = SENDS.get(cell)
    if cell == "AA-1" and event != 15 and state != 2:
        raise AssertionError("AA-1 is fired by a received PDU only in Sta2")
    assert [type(p) for p in sent] == ([sends] if sends else [])
    if sends is Abort:
        (abort,) = sent
        assert isinstance(abort, Abort)
        if event == 15:
            assert (abort.source, abort.reason) == (0, 0)
        elif event == 19:
            assert (abort.source, abort.reason) == (2, 1)  # unrecognized PDU
        else:
            assert (abort.source, abort.reason) == (2, 2)  # unexpected PDU

    expected_reports: list[type] = []
    if REPORTS.get(cell):
        expected_reports.append(REPORTS[cell])  # type: ignore[arg-type]
    if cell == "AA-1" and event != 15:
        expected_reports.append(ProviderAbort)
    if event == 17:
        expected_reports.append(TransportClosed)
    if event == 18 and state == 2:
        expected_reports.append(ProviderAbort)
    assert [type(e) for e in reported] == expected_reports

    if cell in STARTS_ARTIM:
        assert conn.next_deadline() == 1.0 + ARTIM
    elif cell in STOPS_ARTIM or want_next == 1:
        assert conn.next_deadline() is None
    else:
        assert conn.next_deadline() == before_deadline


def test_live_cells_cover_every_fireable_cell() -> None:
    """Every non-empty cell whose state is reachable is exercised above."""
    covered = {
        (state, event)
        for state, role in REACHABLE
        for event in range(1, 20)
        if event_applies(event, role) and not (event == 1 and role is Role.ACCEPTOR)
    }
    missing = set(REFERENCE) - covered
    assert missing == set()


def test_ae_6_unacceptable_protocol_version() -> None:
    """AE-6, "otherwise": an RQ without protocol version bit 0 is rejected by the provider."""
    conn = reach(2, Role.ACCEPTOR)
    events = feed(conn, AssociateRQ(called_ae_title="A", calling_ae_title="B", protocol_version=2))
    assert events == []  # the indication is not issued (PS3.8 7.1.2.6)
    (rj,) = drain(conn)
    assert rj == AssociateRJ(result=1, source=2, reason=2)
    assert conn.state is State.STA13
    assert conn.next_deadline() == 0.0 + ARTIM


# ---------------------------------------------------------------------------------------
# data_runs: a DataRun event is Evt10 for each of its PDUs


def _data_pdu(payload: bytes, *, context_id: int = 1, is_last: bool = False) -> bytes:
    return encode(
        PDataTF(
            pdvs=[
                PresentationDataValue(
                    context_id=context_id, is_command=False, is_last=is_last, data=payload
                )
            ]
        )
    )


_STREAM_PIECES = st.one_of(
    st.just(_data_pdu(b"\x01" * 30)),
    st.just(_data_pdu(b"\x01" * 30)),
    st.binary(max_size=30).map(_data_pdu),
    st.binary(max_size=30).map(lambda payload: _data_pdu(payload, context_id=3)),
    st.just(_data_pdu(b"ab", is_last=True)),
    st.sampled_from(
        [
            encode(PDATA),
            encode(ReleaseRQ()),
            encode(ReleaseRP()),
            encode(Abort(source=0, reason=0)),
            UNKNOWN_PDU,
            bytes.fromhex("04 00 00000006 00000001 0100"),  # invalid PDV length
        ]
    ),
)


REACHABLE_WITH_TRANSPORT = [(state, role) for state, role in REACHABLE if state not in (1, 4)]


def _expand(events: list[object]) -> list[object]:
    return [
        e for event in events for e in (event.pdus() if isinstance(event, DataRun) else [event])
    ]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pieces=st.lists(_STREAM_PIECES, min_size=1, max_size=10),
    size=st.integers(1, 200),
)
@pytest.mark.parametrize(("state", "role"), REACHABLE_WITH_TRANSPORT)
def test_data_runs_are_the_same_as_one_pdu_at_a_time(
    state: int, role: Role, pieces: list[bytes], size: int
) -> None:
    """Same reports (a run expanded into its PDUs), same PDUs queued, same state and timer."""
    stream = b"".join(pieces)
    chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
    outcomes = []
    for data_runs in (False, True):
        conn = reach(state, role, data_runs=data_runs)
        events: list[object] = []
        queued: list[PDU] = []
        for chunk in chunks:
            events += conn.receive_data(chunk, now=1.0)
            queued += drain(conn)
        if data_runs:
            events = _expand(events)
        outcomes.append((events, queued, conn.state, conn.next_deadline(), conn.should_close))
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize(("state", "role"), REACHABLE_WITH_TRANSPORT)
def test_data_runs_reported_as_one_event_only_for_dt_2_and_ar_6(state: int, role: Role) -> None:
    stream = _data_pdu(b"\x01" * 30) * 5 + _data_pdu(b"ab", is_last=True)
    conn = reach(state, role, data_runs=True)
    events = conn.receive_data(stream, now=1.0)
    expected = reach(state, role).receive_data(stream, now=1.0)
    if state in (6, 7):  # DT-2, AR-6
        run = DataRun(1, [b"\x01" * 30] * 5)
        assert events == [run, *expected[5:]]
        assert expected[:5] == run.pdus()
    else:
        assert events == expected
        assert not any(isinstance(event, DataRun) for event in events)
