"""TLS (PS3.15 B.1): an ssl.SSLContext is all it takes, on both sides, on both backends."""

from __future__ import annotations

import ssl

import anyio
import pytest

import dicomio
from dicomio import AE
from dicomio.sop import Verification

trustme = pytest.importorskip("trustme")

pytestmark = [pytest.mark.anyio, pytest.mark.uvloop]


@pytest.fixture(scope="module")
def ca() -> object:
    return trustme.CA()


def contexts(ca: object, *, client_cert: bool) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)  # type: ignore[attr-defined]
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(client)  # type: ignore[attr-defined]
    if client_cert:
        server.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(server)  # type: ignore[attr-defined]
        ca.issue_cert("client.example").configure_cert(client)  # type: ignore[attr-defined]
    return server, client


def scp() -> AE:
    ae = AE("TLSSCP")
    ae.add_supported_context(Verification)
    return ae


def scu() -> AE:
    ae = AE("TLSSCU")
    ae.add_requested_context(Verification)
    return ae


@pytest.mark.parametrize("client_cert", [False, True])
async def test_echo_over_tls(ca: object, client_cert: bool) -> None:
    server_ctx, client_ctx = contexts(ca, client_cert=client_cert)
    async with scp().start_server(("127.0.0.1", 0), ssl_context=server_ctx) as server:
        with anyio.fail_after(20):
            async with scu().associate(
                "127.0.0.1", server.port, ae_title="TLSSCP", ssl_context=client_ctx
            ) as assoc:
                assert (await assoc.send_c_echo()).Status == 0
            assert assoc.is_released


async def test_untrusted_server_certificate_fails_cleanly(ca: object) -> None:
    server_ctx, _ = contexts(ca, client_cert=False)
    stranger = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)  # trusts nothing of ours
    async with scp().start_server(("127.0.0.1", 0), ssl_context=server_ctx) as server:
        with anyio.fail_after(20):
            with pytest.raises((ssl.SSLError, anyio.BrokenResourceError, OSError)):
                await scu().associate("127.0.0.1", server.port, ssl_context=stranger)
            # The server keeps serving after a failed handshake.
            _, client_ctx = contexts(ca, client_cert=False)
            async with scu().associate("127.0.0.1", server.port, ssl_context=client_ctx) as assoc:
                assert (await assoc.send_c_echo()).Status == 0


async def test_handshake_timeout(ca: object) -> None:
    """A server that accepts TCP but never speaks TLS: the handshake timeout fires."""
    ae = scu()
    ae.timeouts = dicomio.Timeouts(tls_handshake=0.5)
    _, client_ctx = contexts(ca, client_cert=False)
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, _silent)
            with anyio.fail_after(10), pytest.raises(dicomio.TimeoutError):
                await ae.associate("127.0.0.1", port, ssl_context=client_ctx)
            tg.cancel_scope.cancel()


async def _silent(stream: anyio.abc.SocketStream) -> None:
    async with stream:
        await anyio.sleep(5)


async def test_server_handshake_timeout_does_not_block_others(ca: object) -> None:
    """A client that connects and never handshakes does not stall anyone else."""
    server_ctx, client_ctx = contexts(ca, client_cert=False)
    ae = scp()
    ae.timeouts = dicomio.Timeouts(tls_handshake=1.0)
    async with ae.start_server(("127.0.0.1", 0), ssl_context=server_ctx) as server:
        with anyio.fail_after(20):
            idle = await anyio.connect_tcp("127.0.0.1", server.port)
            async with scu().associate("127.0.0.1", server.port, ssl_context=client_ctx) as assoc:
                assert (await assoc.send_c_echo()).Status == 0
            # The silent connection is dropped once the handshake timeout passes.
            with anyio.fail_after(5):
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                    await idle.receive()
            await idle.aclose()


async def test_tls_args_name_the_host_the_certificate_is_for(ca: object) -> None:
    # pynetdicom's tls_args=(context, server_hostname): the server's certificate is for a
    # name, and the client connects to an address.
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("pacs.example").configure_cert(server_ctx)  # type: ignore[attr-defined]
    client_ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(client_ctx)  # type: ignore[attr-defined]
    async with scp().start_server(("127.0.0.1", 0), ssl_context=server_ctx) as server:
        with anyio.fail_after(20):
            async with scu().associate(
                "127.0.0.1", server.port, tls_args=(client_ctx, "pacs.example")
            ) as assoc:
                assert (await assoc.send_c_echo()).Status == 0
            # Checked against the address instead, the same certificate is refused.
            with pytest.raises((ssl.SSLError, anyio.BrokenResourceError, OSError)):
                await scu().associate("127.0.0.1", server.port, ssl_context=client_ctx)
            with pytest.raises(ValueError):
                scu().associate(
                    "127.0.0.1", server.port, ssl_context=client_ctx, tls_args=(client_ctx, None)
                )


async def test_shutdown_mid_handshake_closes_the_socket(ca: object) -> None:
    """A server shut down while a client has not finished its handshake closes that socket
    (it leaked, found by a ResourceWarning, before the handshake's cancellation was handled)."""
    server_ctx, _ = contexts(ca, client_cert=False)
    with anyio.fail_after(20):
        async with scp().start_server(("127.0.0.1", 0), ssl_context=server_ctx) as server:
            idle = await anyio.connect_tcp("127.0.0.1", server.port)
            await anyio.sleep(0.1)  # accepted, and waiting in the handshake
        # The server's end is closed: the idle client sees the connection end at once.
        with anyio.fail_after(5):
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                await idle.receive()
        await idle.aclose()
