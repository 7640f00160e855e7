"""A typed user program: a handler for every event type, each with a right signature.

Not a test module (pytest collects only ``test_*.py``): tests/test_handler_typing.py runs
``mypy --strict`` on it and expects no error. Each handler is bound three ways: with
``evt.handler()``, as a pynetdicom-style tuple in ``evt_handlers``, and with
``Association.bind``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import UID

from dicomio import AE, Association, Server, evt
from dicomio.pdu.items import SOPClassCommonExtendedNegotiation


async def on_echo(event: evt.Event) -> int:
    return 0x0000


async def on_store(event: evt.Event) -> int:
    event.encoded_dataset()
    return 0x0000


async def on_store_ds(event: evt.Event) -> Dataset:
    status = Dataset()
    status.Status = 0xA700
    status.ErrorComment = "full"
    return status


async def on_store_into(event: evt.Event, folder: Path, log: list[str]) -> int:
    (folder / str(event.request.affected_sop_instance_uid)).write_bytes(event.encoded_dataset())
    log.append(str(event.request.AffectedSOPInstanceUID))
    return 0x0000


async def on_find(event: evt.Event) -> AsyncIterator[tuple[int, Dataset]]:
    identifier = Dataset()
    identifier.PatientID = "1"
    yield 0xFF00, identifier


def on_find_list(event: evt.Event) -> list[tuple[int, Dataset | None]]:
    return [(0xFF00, Dataset())]


async def on_get(event: evt.Event) -> AsyncIterator[evt.GetItem]:
    yield 2
    yield 0xFF00, Dataset()
    yield 0xFF00, Path("/srv/one.dcm")


async def on_get_refused(event: evt.Event) -> AsyncIterator[int | tuple[int, None]]:
    yield 0xA900, None


async def on_move(event: evt.Event) -> AsyncIterator[evt.MoveItem]:
    yield "127.0.0.1", 11112
    yield 1
    yield 0xFF00, "/srv/one.dcm"


async def on_move_by_title(event: evt.Event) -> Iterable[evt.MoveItem]:
    return [0]


async def on_n_get(event: evt.Event) -> tuple[int, Dataset | None]:
    return 0x0000, Dataset()


async def on_n_set(event: evt.Event) -> tuple[int, Dataset]:
    return 0x0000, event.modification_list


async def on_n_action(event: evt.Event) -> int:
    return 0x0000


async def on_n_create(event: evt.Event) -> evt.NResult:
    return 0x0000, None


async def on_n_delete(event: evt.Event) -> int:
    return 0x0000


async def on_n_event_report(event: evt.Event) -> Dataset:
    status = Dataset()
    status.Status = 0
    return status


async def on_note(event: evt.Event) -> None:
    print(event.event.name, event.assoc.remote_ae_title)


async def on_note_counting(event: evt.Event, counts: dict[str, int]) -> None:
    counts[event.event.name] = counts.get(event.event.name, 0) + 1


def on_user_id(
    event: evt.Event, kind: int, primary: bytes, secondary: bytes | None
) -> tuple[bool, bytes | None]:
    return primary == b"alice", None


async def on_user_id_async(
    event: evt.Event, kind: int, primary: bytes, secondary: bytes | None
) -> bool:
    return kind == 1


def on_async_ops(event: evt.Event, invoked: int, performed: int) -> tuple[int, int]:
    return min(invoked, 4), min(performed, 4)


async def on_async_ops_default(event: evt.Event, invoked: int, performed: int) -> None:
    return None


def on_sop_extended(event: evt.Event, info: dict[UID, bytes]) -> dict[UID, bytes]:
    return {uid: b"\x01" for uid in info}


def on_sop_common(event: evt.Event, items: dict[UID, SOPClassCommonExtendedNegotiation]) -> None:
    print(sorted(items))


NOTIFICATIONS = [
    evt.EVT_CONN_OPEN,
    evt.EVT_CONN_CLOSE,
    evt.EVT_REQUESTED,
    evt.EVT_ACCEPTED,
    evt.EVT_ESTABLISHED,
    evt.EVT_REJECTED,
    evt.EVT_RELEASED,
    evt.EVT_ABORTED,
]


def bindings(folder: Path, log: list[str], counts: dict[str, int]) -> list[evt.HandlerBinding]:
    return [
        evt.handler(evt.EVT_C_ECHO, on_echo),
        evt.handler(evt.EVT_C_STORE, on_store),
        evt.handler(evt.EVT_C_STORE, on_store_ds),
        evt.handler(evt.EVT_C_STORE, on_store_into, folder, log),
        evt.handler(evt.EVT_C_FIND, on_find),
        evt.handler(evt.EVT_C_FIND, on_find_list),
        evt.handler(evt.EVT_C_GET, on_get),
        evt.handler(evt.EVT_C_GET, on_get_refused),
        evt.handler(evt.EVT_C_MOVE, on_move),
        evt.handler(evt.EVT_C_MOVE, on_move_by_title),
        evt.handler(evt.EVT_N_GET, on_n_get),
        evt.handler(evt.EVT_N_SET, on_n_set),
        evt.handler(evt.EVT_N_ACTION, on_n_action),
        evt.handler(evt.EVT_N_CREATE, on_n_create),
        evt.handler(evt.EVT_N_DELETE, on_n_delete),
        evt.handler(evt.EVT_N_EVENT_REPORT, on_n_event_report),
        evt.handler(evt.EVT_USER_ID, on_user_id),
        evt.handler(evt.EVT_USER_ID, on_user_id_async),
        evt.handler(evt.EVT_ASYNC_OPS, on_async_ops),
        evt.handler(evt.EVT_ASYNC_OPS, on_async_ops_default),
        evt.handler(evt.EVT_SOP_EXTENDED, on_sop_extended),
        evt.handler(evt.EVT_SOP_COMMON, on_sop_common),
        *(evt.handler(event, on_note) for event in NOTIFICATIONS),
        *(evt.handler(event, on_note_counting, counts) for event in NOTIFICATIONS),
    ]


async def serve(folder: Path) -> None:
    ae = AE("TYPED")
    log: list[str] = []
    counts: dict[str, int] = {}
    server: Server
    async with ae.start_server(
        ("127.0.0.1", 0),
        evt_handlers=[
            # pynetdicom's tuples: checked against the event too.
            (evt.EVT_C_ECHO, on_echo),
            (evt.EVT_C_STORE, on_store),
            (evt.EVT_C_FIND, on_find),
            (evt.EVT_C_GET, on_get),
            (evt.EVT_C_MOVE, on_move),
            (evt.EVT_N_GET, on_n_get),
            (evt.EVT_N_SET, on_n_set),
            (evt.EVT_N_ACTION, on_n_action),
            (evt.EVT_N_CREATE, on_n_create),
            (evt.EVT_N_DELETE, on_n_delete),
            (evt.EVT_N_EVENT_REPORT, on_n_event_report),
            (evt.EVT_USER_ID, on_user_id),
            (evt.EVT_ASYNC_OPS, on_async_ops),
            (evt.EVT_SOP_EXTENDED, on_sop_extended),
            (evt.EVT_SOP_COMMON, on_sop_common),
            (evt.EVT_CONN_OPEN, on_note),
            (evt.EVT_ACCEPTED, on_note),
            # With extra arguments, as in pynetdicom (not checked).
            (evt.EVT_C_STORE, on_store_into, [folder, log]),
            (evt.EVT_RELEASED, on_note_counting, [counts]),
            # The typed spelling, mixed in.
            evt.handler(evt.EVT_ABORTED, on_note_counting, counts),
            *bindings(folder, log, counts),
        ],
    ) as server:
        print(server.port)
    async with ae.associate(
        "127.0.0.1", 11112, evt_handlers=[(evt.EVT_RELEASED, on_note)]
    ) as assoc:
        bind_all(assoc, counts)


def bind_all(assoc: Association, counts: dict[str, int]) -> None:
    assoc.bind(evt.EVT_C_STORE, on_store)
    assoc.bind(evt.EVT_C_FIND, on_find)
    assoc.bind(evt.EVT_C_GET, on_get)
    assoc.bind(evt.EVT_C_MOVE, on_move)
    assoc.bind(evt.EVT_N_EVENT_REPORT, on_n_event_report)
    assoc.bind(evt.EVT_USER_ID, on_user_id_async)
    assoc.bind(evt.EVT_ABORTED, on_note)
    assoc.bind(evt.EVT_ABORTED, on_note_counting, [counts])
    assoc.unbind(evt.EVT_ABORTED, on_note)
