"""Handlers with wrong signatures: ``mypy --strict`` must flag every line marked ``# E:``.

Not a test module: tests/test_handler_typing.py runs mypy on it and compares the errors it
reports with the ``# E: <fragment>`` comments (same line, fragment found in the message),
and expects no other error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from pydicom.dataset import Dataset

from dicomio import AE, Association, evt


def store_not_async(event: evt.Event) -> int:  # pynetdicom's handlers are plain functions
    return 0x0000


async def store_answers_str(event: evt.Event) -> str:
    return "ok"


async def store_wants_more(event: evt.Event, folder: str) -> int:
    return 0x0000


async def find_returns_status(event: evt.Event) -> int:
    return 0x0000


async def find_yields_datasets(event: evt.Event) -> AsyncIterator[Dataset]:
    yield Dataset()


async def get_yields_str(event: evt.Event) -> AsyncIterator[str]:
    yield "one.dcm"


async def move_port_as_str(event: evt.Event) -> AsyncIterator[tuple[str, str]]:
    yield "127.0.0.1", "11112"


async def n_get_answers_none(event: evt.Event) -> None:
    return None


async def note_answers(event: evt.Event) -> int:
    return 1


def note_not_async(event: evt.Event) -> None:
    return None


def user_id_too_few(event: evt.Event, kind: int) -> bool:
    return True


def user_id_answers_str(
    event: evt.Event, kind: int, primary: bytes, secondary: bytes | None
) -> str:
    return "yes"


def async_ops_one_int(event: evt.Event, invoked: int, performed: int) -> int:
    return invoked


def sop_extended_wrong_param(event: evt.Event, info: list[bytes]) -> None:
    return None


def sop_common_no_items(event: evt.Event) -> None:
    return None


async def takes_nothing() -> int:
    return 0


def bindings() -> list[evt.HandlerBinding]:
    return [
        evt.handler(evt.EVT_C_ECHO, takes_nothing),  # E: Argument 2 to "handler"
        evt.handler(evt.EVT_C_STORE, store_not_async),  # E: Argument 2 to "handler"
        evt.handler(evt.EVT_C_STORE, store_answers_str),  # E: Argument 2 to "handler"
        evt.handler(evt.EVT_C_STORE, store_wants_more),  # E: Argument 2 to "handler"
        evt.handler(evt.EVT_C_STORE, store_wants_more, 3),  # E: Argument 2 to "handler"
        evt.handler(evt.EVT_C_FIND, find_returns_status),  # E: Argument 2 to "handler"
        evt.handler(evt.EVT_C_FIND, find_yields_datasets),  # E: Argument 2 to "handler"
        evt.handler(evt.EVT_C_GET, get_yields_str),  # E: Argument 2 to "handler"
        evt.handler(evt.EVT_C_MOVE, move_port_as_str),  # E: Argument 2 to "handler"
        evt.handler(evt.EVT_N_GET, n_get_answers_none),  # E: Argument 2 to "handler"
        evt.handler(evt.EVT_N_SET, store_answers_str),  # E: Argument 2 to "handler"
        evt.handler(evt.EVT_N_ACTION, find_yields_datasets),  # E: Argument 2 to "handler"
        evt.handler(evt.EVT_N_CREATE, store_not_async),  # E: Argument 2 to "handler"
        evt.handler(evt.EVT_N_DELETE, takes_nothing),  # E: Argument 2 to "handler"
        evt.handler(evt.EVT_N_EVENT_REPORT, note_not_async),  # E: Argument 2 to "handler"
        evt.handler(evt.EVT_CONN_OPEN, note_answers),  # E: Argument 2 to "handler"
        evt.handler(evt.EVT_CONN_CLOSE, note_not_async),  # E: Argument 2 to "handler"
        evt.handler(evt.EVT_REQUESTED, store_wants_more),  # E: Argument 2 to "handler"
        evt.handler(evt.EVT_ACCEPTED, note_answers),  # E: Argument 2 to "handler"
        evt.handler(evt.EVT_ESTABLISHED, takes_nothing),  # E: Argument 2 to "handler"
        evt.handler(evt.EVT_REJECTED, note_not_async),  # E: Argument 2 to "handler"
        evt.handler(evt.EVT_RELEASED, store_answers_str),  # E: Argument 2 to "handler"
        evt.handler(evt.EVT_ABORTED, note_answers),  # E: Argument 2 to "handler"
        evt.handler(evt.EVT_USER_ID, user_id_too_few),  # E: Argument 2 to "handler"
        evt.handler(evt.EVT_USER_ID, user_id_answers_str),  # E: Argument 2 to "handler"
        evt.handler(evt.EVT_ASYNC_OPS, async_ops_one_int),  # E: Argument 2 to "handler"
        evt.handler(evt.EVT_SOP_EXTENDED, sop_extended_wrong_param),  # E: Argument 2 to "handler"
        evt.handler(evt.EVT_SOP_COMMON, sop_common_no_items),  # E: Argument 2 to "handler"
    ]


async def serve() -> None:
    ae = AE("TYPED")
    async with ae.start_server(
        ("127.0.0.1", 0),
        evt_handlers=[
            (evt.EVT_C_STORE, store_not_async),  # E: List item 0
            (evt.EVT_C_FIND, find_returns_status),  # E: List item 1
            (evt.EVT_USER_ID, user_id_too_few),  # E: List item 2
            (evt.EVT_CONN_OPEN, note_not_async),  # E: List item 3
            (evt.EVT_C_MOVE, get_yields_str),  # E: List item 4
        ],
    ) as server:
        server.port = "11112"  # E: Incompatible types in assignment
    async with ae.associate(
        "127.0.0.1",
        11112,
        evt_handlers=[(evt.EVT_RELEASED, note_answers)],  # E: List item 0
    ) as assoc:
        bind_wrong(assoc)


def bind_wrong(assoc: Association) -> None:
    assoc.bind(evt.EVT_C_STORE, store_not_async)  # E: "bind" of "Association"
    assoc.bind(evt.EVT_C_FIND, find_yields_datasets)  # E: "bind" of "Association"
    assoc.bind(evt.EVT_ASYNC_OPS, async_ops_one_int)  # E: "bind" of "Association"
    assoc.bind(evt.EVT_ABORTED, note_not_async)  # E: "bind" of "Association"
