"""Notification events, on both sides, in pynetdicom's order, however an association ends."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from dicomio import AE, AssociationAborted, AssociationRejected, evt
from tests.conftest import LOOPBACK

pytestmark = pytest.mark.anyio

VERIFICATION = "1.2.840.10008.1.1"
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
OPENED_SCU = ["EVT_CONN_OPEN", "EVT_ACCEPTED", "EVT_ESTABLISHED"]
OPENED_SCP = ["EVT_CONN_OPEN", "EVT_REQUESTED", "EVT_ACCEPTED", "EVT_ESTABLISHED"]


#: (event, is_released, is_aborted) as each EVT_RELEASED/EVT_ABORTED handler saw them.
ENDINGS: list[tuple[str, bool, bool]] = []


def recorder(seen: list[str]) -> list[Any]:
    async def record(event: evt.Event) -> None:
        seen.append(event.event.name)
        if event.event in (evt.EVT_RELEASED, evt.EVT_ABORTED):
            ENDINGS.append((event.event.name, event.assoc.is_released, event.assoc.is_aborted))

    return [(event, record) for event in NOTIFICATIONS]


@pytest.mark.parametrize(
    ("ending", "scu_expected", "scp_expected"),
    [
        (
            "scu releases",
            [*OPENED_SCU, "EVT_RELEASED", "EVT_CONN_CLOSE"],
            [*OPENED_SCP, "EVT_RELEASED", "EVT_CONN_CLOSE"],
        ),
        (
            "scu aborts",
            [*OPENED_SCU, "EVT_ABORTED", "EVT_CONN_CLOSE"],
            [*OPENED_SCP, "EVT_ABORTED", "EVT_CONN_CLOSE"],
        ),
        (
            "scp aborts",
            [*OPENED_SCU, "EVT_ABORTED", "EVT_CONN_CLOSE"],
            [*OPENED_SCP, "EVT_ABORTED", "EVT_CONN_CLOSE"],
        ),
        (
            "scp rejects",
            ["EVT_CONN_OPEN", "EVT_REJECTED", "EVT_CONN_CLOSE"],
            ["EVT_CONN_OPEN", "EVT_REQUESTED", "EVT_REJECTED", "EVT_CONN_CLOSE"],
        ),
    ],
)
async def test_notifications_on_both_sides(
    ending: str, scu_expected: list[str], scp_expected: list[str]
) -> None:
    scu_seen: list[str] = []
    scp_seen: list[str] = []
    ENDINGS.clear()
    scp = AE("SCP")
    scp.require_called_aet = True
    scp.add_supported_context(VERIFICATION)
    scu = AE("SCU")
    scu.add_requested_context(VERIFICATION)

    async def abort_on_echo(event: evt.Event) -> int:
        await event.assoc.abort()
        return 0

    handlers = [*recorder(scp_seen), (evt.EVT_C_ECHO, abort_on_echo)]
    with anyio.fail_after(10):
        async with scp.start_server((LOOPBACK, 0), evt_handlers=handlers) as server:
            called = "NOBODY" if ending == "scp rejects" else "SCP"
            try:
                assoc = await scu.associate(
                    LOOPBACK, server.port, ae_title=called, evt_handlers=recorder(scu_seen)
                )
            except AssociationRejected:
                assert ending == "scp rejects"
            else:
                if ending == "scu releases":
                    await assoc.release()
                elif ending == "scu aborts":
                    await assoc.abort()
                else:
                    with pytest.raises(AssociationAborted):
                        await assoc.send_c_echo()
            while scp_seen[-1:] != ["EVT_CONN_CLOSE"] or scu_seen[-1:] != ["EVT_CONN_CLOSE"]:
                await anyio.sleep(0.01)
    assert scu_seen == scu_expected
    assert scp_seen == scp_expected
    # What each association says of itself agrees with the event, on either side.
    for name, is_released, is_aborted in ENDINGS:
        assert (is_released, is_aborted) == (name == "EVT_RELEASED", name == "EVT_ABORTED")
    assert len(ENDINGS) == (0 if ending == "scp rejects" else 2)
