"""Issue #13 item 6: with a user identity verifier set, a requestor cannot skip the User
Identity sub-item (PS3.7 D.3.3.7).

A verifier is ``ae.user_identity_verifier`` or a bound EVT_USER_ID handler. An association
request without the sub-item is then rejected: rejected-permanent (1), service-user (1),
no-reason-given (1) (PS3.8 Table 9-21), unless ``ae.allow_anonymous`` is true. Requestors:
dicomio and pynetdicom, each with and without an identity.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import pytest
from pynetdicom import AE as PynetdicomAE
from pynetdicom.pdu_primitives import UserIdentityNegotiation

from dicomio import AE, AssociationRejected, Server, evt
from dicomio.pdu import UserIdentityRQ
from dicomio.sop import Verification
from tests.conftest import LOOPBACK, pynetdicom_rejection

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

T = TypeVar("T")
SCP = "GUARDED"


async def verify(assoc: Any, identity: UserIdentityRQ) -> bool:
    return identity.primary_field == b"alice" and identity.secondary_field == b"secret"


def on_user_id(event: Any, kind: int, primary: bytes, secondary: bytes | None) -> Any:
    return primary == b"alice" and secondary == b"secret", None


def scp_ae(how: str, *, allow_anonymous: bool = False) -> tuple[AE, list[Any]]:
    ae = AE(SCP)
    ae.add_supported_context(Verification)
    handlers: list[Any] = []
    if how == "verifier":
        ae.user_identity_verifier = verify
    else:
        handlers.append((evt.EVT_USER_ID, on_user_id))
    ae.allow_anonymous = allow_anonymous
    return ae, handlers


@asynccontextmanager
async def serving(how: str, *, allow_anonymous: bool = False) -> AsyncIterator[Server]:
    ae, handlers = scp_ae(how, allow_anonymous=allow_anonymous)
    async with ae.start_server((LOOPBACK, 0), evt_handlers=handlers, shutdown_timeout=2) as s:
        yield s


def identity(password: bytes) -> UserIdentityRQ:
    return UserIdentityRQ(
        user_identity_type=2,
        positive_response_requested=False,
        primary_field=b"alice",
        secondary_field=password,
    )


async def dicomio_echo(port: int, ext_neg: list[Any] | None = None) -> int:
    scu = AE("SCU")
    scu.add_requested_context(Verification)
    with anyio.fail_after(10):
        async with scu.associate(LOOPBACK, port, ae_title=SCP, ext_neg=ext_neg) as assoc:
            return int((await assoc.send_c_echo()).Status)


async def dicomio_rejection(port: int, ext_neg: list[Any] | None = None) -> tuple[int, int, int]:
    scu = AE("SCU")
    scu.add_requested_context(Verification)
    with anyio.fail_after(10), pytest.raises(AssociationRejected) as raised:
        await scu.associate(LOOPBACK, port, ae_title=SCP, ext_neg=ext_neg)
    return raised.value.result, raised.value.source, raised.value.reason


BOTH = pytest.mark.parametrize("how", ["verifier", "EVT_USER_ID"])


@BOTH
async def test_no_identity_rejected_when_a_verifier_is_set(how: str) -> None:
    async with serving(how) as server:
        assert await dicomio_rejection(server.port) == (1, 1, 1)
        # Served normally meanwhile and afterwards: the right identity gets in.
        assert await dicomio_echo(server.port, [identity(b"secret")]) == 0
        assert await dicomio_rejection(server.port, [identity(b"wrong")]) == (1, 1, 1)
        assert await dicomio_rejection(server.port) == (1, 1, 1)
        assert await dicomio_echo(server.port, [identity(b"secret")]) == 0
        # Nothing is left open on the server by the rejected requests.
        with anyio.fail_after(5):
            while server.associations:
                await anyio.sleep(0.01)


@BOTH
async def test_allow_anonymous_admits_requestors_without_identity(how: str) -> None:
    async with serving(how, allow_anonymous=True) as server:
        assert await dicomio_echo(server.port) == 0
        # An identity that is given is still checked.
        assert await dicomio_rejection(server.port, [identity(b"wrong")]) == (1, 1, 1)
        assert await dicomio_echo(server.port, [identity(b"secret")]) == 0


async def test_no_verifier_no_identity_needed() -> None:
    ae = AE(SCP)
    ae.add_supported_context(Verification)
    assert ae.allow_anonymous is False
    async with ae.start_server((LOOPBACK, 0), shutdown_timeout=2) as server:
        assert await dicomio_echo(server.port) == 0


# -- pynetdicom as the requestor -------------------------------------------------------------


async def in_thread(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    with anyio.fail_after(30):
        return await anyio.to_thread.run_sync(functools.partial(func, *args, **kwargs))


def pynetdicom_identity(password: bytes) -> Any:
    item = UserIdentityNegotiation()
    item.user_identity_type = 2
    item.primary_field = b"alice"
    item.secondary_field = password
    item.positive_response_requested = False
    return item


async def pynetdicom_outcome(port: int, ext_neg: list[Any] | None) -> Any:
    """(result, source, diagnostic) if rejected, else the C-ECHO status."""
    client = PynetdicomAE(ae_title="PYNETDICOM")
    client.acse_timeout = client.dimse_timeout = client.network_timeout = 10
    client.add_requested_context(Verification)
    try:
        assoc = await in_thread(
            client.associate, LOOPBACK, port, ae_title=SCP, ext_neg=ext_neg or []
        )
        rj = pynetdicom_rejection(assoc)
        if rj is not None:
            return (rj.result, rj.result_source, rj.diagnostic)
        assert assoc.is_established
        status = await in_thread(assoc.send_c_echo)
        await in_thread(assoc.release)
        return int(status.Status)
    finally:
        client.shutdown()


@BOTH
async def test_pynetdicom_requestor(how: str) -> None:
    async with serving(how) as server:
        assert await pynetdicom_outcome(server.port, None) == (1, 1, 1)
        assert await pynetdicom_outcome(server.port, [pynetdicom_identity(b"wrong")]) == (1, 1, 1)
        assert await pynetdicom_outcome(server.port, [pynetdicom_identity(b"secret")]) == 0
    async with serving(how, allow_anonymous=True) as server:
        assert await pynetdicom_outcome(server.port, None) == 0
        assert await pynetdicom_outcome(server.port, [pynetdicom_identity(b"secret")]) == 0
