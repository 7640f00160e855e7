"""The server's remembered A-ASSOCIATE-AC answers (``Server._plain_answer``) follow the AE.

A request whose user information leaves nothing to decide is answered from memory while
the request and the AE stay the same; these tests change the AE between associations
(version name, maximum PDU length, supported contexts, a user identity check) and expect
every answer to be the one a fresh negotiation gives. dicomio to dicomio on 127.0.0.1,
asyncio and trio; every wait bounded.
"""

from __future__ import annotations

from typing import Any

import pytest

from dicomio import AE, evt
from dicomio.sop import CTImageStorage, Verification

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

LOOPBACK = "127.0.0.1"


def _scu() -> AE:
    ae = AE("SCU")
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage)
    ae.acse_timeout = 10
    return ae


async def _answer(port: int) -> tuple[str | None, int, list[str]]:
    async with _scu().associate(LOOPBACK, port, ae_title="SCP") as assoc:
        accepted = sorted(str(cx.abstract_syntax) for cx in assoc.accepted_contexts)
        return assoc.remote_implementation_version_name, assoc.remote_max_pdu, accepted


async def test_answers_follow_changes_to_the_ae() -> None:
    scp = AE("SCP")
    scp.add_supported_context(Verification)
    scp.implementation_version_name = "FIRST"
    async with scp.start_server((LOOPBACK, 0)) as server:
        first = await _answer(server.port)
        assert first == ("FIRST", scp.maximum_pdu_size, [Verification])
        assert await _answer(server.port) == first  # the same request, the same answer

        scp.implementation_version_name = "SECOND"
        assert (await _answer(server.port))[0] == "SECOND"

        scp.maximum_pdu_size = 32768
        assert (await _answer(server.port))[1] == 32768

        scp.add_supported_context(CTImageStorage)
        assert (await _answer(server.port))[2] == sorted([CTImageStorage, Verification])

        scp.remove_supported_context(CTImageStorage)
        assert (await _answer(server.port))[2] == [Verification]


async def test_an_identity_check_bound_later_is_not_bypassed() -> None:
    """A request without a User Identity sub-item, answered from memory before, is
    rejected once the AE requires an identity."""
    from dicomio.errors import AssociationRejected

    scp = AE("SCP")
    scp.add_supported_context(Verification)
    async with scp.start_server((LOOPBACK, 0)) as server:
        await _answer(server.port)
        await _answer(server.port)

        def verify(*args: Any) -> tuple[bool, None]:
            return True, None

        scp.user_identity_verifier = verify
        with pytest.raises(AssociationRejected):
            await _answer(server.port)


async def test_handlers_see_the_same_events_when_answered_from_memory() -> None:
    seen: list[str] = []

    async def on_requested(event: Any) -> None:
        seen.append("requested")

    async def on_accepted(event: Any) -> None:
        seen.append("accepted")

    scp = AE("SCP")
    scp.add_supported_context(Verification)
    handlers = [(evt.EVT_REQUESTED, on_requested), (evt.EVT_ACCEPTED, on_accepted)]
    async with scp.start_server((LOOPBACK, 0), evt_handlers=handlers) as server:
        for _ in range(3):
            await _answer(server.port)
    assert seen == ["requested", "accepted"] * 3
