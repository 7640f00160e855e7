"""``evt.handler()``: the typed spelling of pynetdicom's ``(event, handler, [args])`` tuples.

What mypy makes of it is in test_handler_typing.py; here, that it binds at run time like a
tuple, with its extra arguments, wherever ``evt_handlers`` goes.
"""

from __future__ import annotations

import anyio
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from dicomio import AE, evt
from dicomio.sop import CTImageStorage, Verification
from tests.conftest import LOOPBACK

pytestmark = pytest.mark.anyio


def test_a_binding_is_a_pynetdicom_tuple() -> None:
    async def on_store(event: evt.Event, folder: str, count: int) -> int:
        return 0

    binding = evt.handler(evt.EVT_C_STORE, on_store, "/srv", 3)
    assert binding == (evt.EVT_C_STORE, on_store, ("/srv", 3))
    assert (binding.event, binding.handler, binding.args) == tuple(binding)
    # Where pynetdicom's tuples are read: entry[2] if len(entry) > 2 else ().
    assert len(binding) == 3 and binding[2] == ("/srv", 3)
    assert len(evt.handler(evt.EVT_C_STORE, on_store, "/srv", 3)) == 3


async def test_bindings_tuples_and_bind_all_reach_their_handlers() -> None:
    calls: list[tuple[str, object]] = []

    async def on_store(event: evt.Event, where: list[str], tag: str) -> int:
        where.append(tag)
        calls.append(("store", event.request.AffectedSOPInstanceUID))
        return 0

    async def on_echo(event: evt.Event) -> int:
        calls.append(("echo", event.request.MessageID))
        return 0

    async def on_note(event: evt.Event, side: str) -> None:
        calls.append((side, event.event.name))

    stored: list[str] = []
    scp, scu = AE("SCP"), AE("SCU")
    for uid in (CTImageStorage, Verification):
        scp.add_supported_context(uid, ExplicitVRLittleEndian)
        scu.add_requested_context(uid, ExplicitVRLittleEndian)
    ct = Dataset()
    ct.SOPClassUID = CTImageStorage
    ct.SOPInstanceUID = "1.2.3.4.6"
    with anyio.fail_after(10):
        async with (
            scp.start_server(
                (LOOPBACK, 0),
                evt_handlers=[
                    evt.handler(evt.EVT_C_STORE, on_store, stored, "first"),
                    (evt.EVT_C_ECHO, on_echo),
                    (evt.EVT_ACCEPTED, on_note, ["scp"]),
                ],
            ) as server,
            scu.associate(
                LOOPBACK,
                server.port,
                ae_title="SCP",
                evt_handlers=[evt.handler(evt.EVT_ACCEPTED, on_note, "scu")],
            ) as assoc,
        ):
            assoc.bind(evt.EVT_RELEASED, on_note, ["scu"])
            assert (await assoc.send_c_store(ct)).Status == 0
            assert (await assoc.send_c_echo()).Status == 0
    assert stored == ["first"]
    assert ("store", "1.2.3.4.6") in calls
    assert any(name == "echo" for name, _ in calls)
    assert {("scp", "EVT_ACCEPTED"), ("scu", "EVT_ACCEPTED"), ("scu", "EVT_RELEASED")} <= set(
        calls
    )
