"""TLS (PS3.15 B.1) and user identity negotiation (PS3.7 D.3.3.7): ``docs/tls.md``.

``tests/test_docs_examples.py`` runs it with certificates from a throwaway CA, on asyncio and
trio.
"""

from __future__ import annotations

import hmac
import ssl
from typing import Any

import anyio

from dicomio import AE, Association
from dicomio.pdu import UserIdentityRQ
from dicomio.sop import Verification


# --8<-- [start:contexts]
def server_context(cert: str, key: str, client_ca: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    if client_ca is not None:  # ask for, and verify, a client certificate
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(ca: str) -> ssl.SSLContext:
    # Verifies the server's certificate against ca, and its name against the host called.
    return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)


# --8<-- [end:contexts]


# --8<-- [start:verifier]
USERS = {b"alice": b"secret"}


async def verify(assoc: Association, request: UserIdentityRQ) -> bool:
    """Username and passcode (type 2); anything else is rejected (1/1/1)."""
    if request.user_identity_type != 2:
        return False
    expected = USERS.get(request.primary_field)
    return expected is not None and hmac.compare_digest(expected, request.secondary_field)


async def serve(
    context: ssl.SSLContext, port: int, *, task_status: Any = anyio.TASK_STATUS_IGNORED
) -> None:
    ae = AE("SECURE")
    ae.add_supported_context(Verification)
    ae.user_identity_verifier = verify  # a request without a User Identity is rejected too
    async with ae.start_server(("127.0.0.1", port), ssl_context=context) as server:
        task_status.started(server.port)
        await server.serve_forever()


# --8<-- [end:verifier]


# --8<-- [start:client]
async def echo(context: ssl.SSLContext, host: str, port: int, password: bytes) -> int:
    ae = AE("CLIENT")
    ae.add_requested_context(Verification)
    identity = UserIdentityRQ(
        user_identity_type=2,  # username and passcode
        positive_response_requested=False,
        primary_field=b"alice",
        secondary_field=password,
    )
    async with ae.associate(
        host, port, ae_title="SECURE", ssl_context=context, ext_neg=[identity]
    ) as assoc:
        status = await assoc.send_c_echo()
    return int(status.Status)


# --8<-- [end:client]
