"""The association pool (issue #15, first part), against in-process dicomio servers.

Acceptance: reuse (associations counted at the peer), the per-peer limit never exceeded
under 500 concurrent borrowers, a broken association replaced, idle release, a borrower
cancelled mid C-FIND leaving the pool clean; and two peers independent of each other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from pydicom.dataset import Dataset

from dicomio import AE, AssociationAborted, AssociationPool, ConnectionRefused, Peer, evt
from dicomio.pool import PeerStatistics
from dicomio.presentation import build_context
from dicomio.sop import PatientRootQueryRetrieveInformationModelFind, Verification
from tests.conftest import LOOPBACK, free_port

pytestmark = [pytest.mark.anyio, pytest.mark.uvloop]

FIND = PatientRootQueryRetrieveInformationModelFind


class Peerside:
    """What a server saw: connections open now and at most, associations, their ends."""

    def __init__(self) -> None:
        self.open = 0
        self.max_open = 0
        self.accepted = 0
        self.associations: list[Any] = []
        self.released = anyio.Event()
        self.aborted = anyio.Event()
        self.closed = anyio.Event()
        self.find_started = anyio.Event()

    def handlers(self) -> list[Any]:
        async def on_open(event: evt.Event) -> None:
            self.open += 1
            self.max_open = max(self.max_open, self.open)

        async def on_close(event: evt.Event) -> None:
            self.open -= 1
            self.closed.set()

        async def on_established(event: evt.Event) -> None:
            self.accepted += 1
            self.associations.append(event.assoc)

        async def on_released(event: evt.Event) -> None:
            self.released.set()

        async def on_aborted(event: evt.Event) -> None:
            self.aborted.set()

        async def on_find(event: evt.Event) -> AsyncIterator[tuple[int, Dataset]]:
            if event.identifier.get("PatientID") == "MANY":
                for i in range(100_000):
                    match = Dataset()
                    match.PatientID = str(i)
                    yield 0xFF00, match
                return
            # Stalls until the requestor goes away (bounded, in case it never does).
            self.find_started.set()
            with anyio.move_on_after(10):
                await anyio.sleep_forever()
            yield 0xFF00, Dataset()

        return [
            (evt.EVT_CONN_OPEN, on_open),
            (evt.EVT_CONN_CLOSE, on_close),
            (evt.EVT_ESTABLISHED, on_established),
            (evt.EVT_RELEASED, on_released),
            (evt.EVT_ABORTED, on_aborted),
            (evt.EVT_C_FIND, on_find),
        ]


def scp_ae() -> AE:
    ae = AE("POOLSCP")
    ae.add_supported_context(Verification)
    ae.add_supported_context(FIND)
    return ae


def scu_ae() -> AE:
    ae = AE("POOLSCU")
    ae.add_requested_context(Verification)
    ae.add_requested_context(FIND)
    return ae


def stats_of(pool: AssociationPool, peer: Peer) -> PeerStatistics:
    return pool.peer_statistics(peer)


async def echo(pool: AssociationPool, peer: Peer) -> None:
    async with pool.association(peer) as assoc:
        assert (await assoc.send_c_echo()).Status == 0


def test_peer_equality_looks_at_tls_but_not_at_the_context_or_the_name() -> None:
    import ssl

    plain = Peer(ae_title=" ARCHIVE ", host=LOOPBACK, port=104)
    assert str(plain) == "ARCHIVE@127.0.0.1:104"
    assert plain == Peer(ae_title="ARCHIVE", host=LOOPBACK, port=104, name="the archive")
    one = Peer(
        ae_title="ARCHIVE",
        host=LOOPBACK,
        port=104,
        ssl_context=ssl.create_default_context(),
        name="the archive",
    )
    another = Peer(
        ae_title="ARCHIVE", host=LOOPBACK, port=104, ssl_context=ssl.create_default_context()
    )
    assert str(one) == "the archive"
    assert one == another and hash(one) == hash(another)
    assert plain != one  # a TLS peer never shares associations with a plain one
    c = Peer(ae_title="ARCHIVE", host=LOOPBACK, port=104, contexts=[build_context(Verification)])
    assert isinstance(c.contexts, tuple) and c != plain
    with pytest.raises(ValueError):
        Peer(ae_title="X", host=LOOPBACK, port=1, max_associations=0)


async def test_associations_are_reused() -> None:
    seen = Peerside()
    async with scp_ae().start_server((LOOPBACK, 0), evt_handlers=seen.handlers()) as server:
        peer = Peer(ae_title="POOLSCP", host=LOOPBACK, port=server.port)
        with anyio.fail_after(10):
            async with AssociationPool(scu_ae()) as pool:
                for _ in range(5):
                    await echo(pool, peer)
                stats = stats_of(pool, peer)
                assert (stats.opened, stats.reused, stats.in_use, stats.idle) == (1, 4, 0, 1)
                assert "opened=1 reused=4" in str(stats)
            # Leaving the pool releases the idle association.
            await seen.released.wait()
    assert seen.accepted == 1
    assert stats_of(pool, peer).closed == 1


async def test_500_borrowers_never_exceed_the_per_peer_limit() -> None:
    seen = Peerside()
    async with scp_ae().start_server((LOOPBACK, 0), evt_handlers=seen.handlers()) as server:
        peer = Peer(ae_title="POOLSCP", host=LOOPBACK, port=server.port)
        with anyio.fail_after(25):
            async with AssociationPool(scu_ae(), max_per_peer=4) as pool:
                async with anyio.create_task_group() as tg:
                    for _ in range(500):
                        tg.start_soon(echo, pool, peer)
                stats = stats_of(pool, peer)
                assert pool.statistics().associations <= 4
    assert seen.max_open <= 4
    assert seen.accepted == stats.opened <= 4
    assert stats.opened + stats.reused == 500
    assert (stats.in_use, stats.waiting, stats.opening, stats.failed_opens) == (0, 0, 0, 0)


async def test_a_peer_limit_overrides_the_pools() -> None:
    seen = Peerside()
    async with scp_ae().start_server((LOOPBACK, 0), evt_handlers=seen.handlers()) as server:
        peer = Peer(ae_title="POOLSCP", host=LOOPBACK, port=server.port, max_associations=1)
        with anyio.fail_after(10):
            async with (
                AssociationPool(scu_ae(), max_per_peer=4) as pool,
                anyio.create_task_group() as tg,
            ):
                for _ in range(20):
                    tg.start_soon(echo, pool, peer)
    assert seen.max_open == 1


async def test_an_association_the_peer_aborted_while_idle_is_replaced() -> None:
    seen = Peerside()
    async with scp_ae().start_server((LOOPBACK, 0), evt_handlers=seen.handlers()) as server:
        peer = Peer(ae_title="POOLSCP", host=LOOPBACK, port=server.port)
        with anyio.fail_after(10):
            async with AssociationPool(scu_ae()) as pool:
                await echo(pool, peer)
                await seen.associations[0].abort()
                await seen.closed.wait()
                # Let the A-ABORT and the end of the connection reach our side's buffers.
                await anyio.wait_all_tasks_blocked()
                await echo(pool, peer)  # transparently on a new association
                stats = stats_of(pool, peer)
    assert seen.accepted == 2
    assert (stats.opened, stats.reused, stats.replaced, stats.closed) == (2, 0, 1, 1)


async def test_an_association_ended_in_the_block_is_not_lent_again() -> None:
    seen = Peerside()
    async with scp_ae().start_server((LOOPBACK, 0), evt_handlers=seen.handlers()) as server:
        peer = Peer(ae_title="POOLSCP", host=LOOPBACK, port=server.port)
        with anyio.fail_after(10):
            async with AssociationPool(scu_ae()) as pool:
                async with pool.association(peer) as assoc:
                    await assoc.abort()
                assert pool.statistics().associations == 0
                async with pool.association(peer) as again:
                    assert again is not assoc
                    assert (await again.send_c_echo()).Status == 0
                stats = stats_of(pool, peer)
    assert seen.accepted == 2
    assert (stats.opened, stats.closed, stats.idle) == (2, 1, 1)


async def test_a_borrower_that_raises_aborts_its_association() -> None:
    seen = Peerside()
    async with scp_ae().start_server((LOOPBACK, 0), evt_handlers=seen.handlers()) as server:
        peer = Peer(ae_title="POOLSCP", host=LOOPBACK, port=server.port)
        with anyio.fail_after(10):
            async with AssociationPool(scu_ae()) as pool:
                with pytest.raises(ValueError, match="caller's own"):
                    async with pool.association(peer) as assoc:
                        await assoc.send_c_echo()
                        raise ValueError("the caller's own error")
                assert assoc.is_aborted
                await seen.aborted.wait()
                assert pool.statistics().associations == 0
                await echo(pool, peer)
    assert seen.accepted == 2


async def test_idle_associations_are_released_by_reap() -> None:
    seen = Peerside()
    async with scp_ae().start_server((LOOPBACK, 0), evt_handlers=seen.handlers()) as server:
        peer = Peer(ae_title="POOLSCP", host=LOOPBACK, port=server.port)
        with anyio.fail_after(10):
            async with AssociationPool(scu_ae(), idle_timeout=30) as pool:
                await echo(pool, peer)
                now = anyio.current_time()
                assert await pool.reap(now=now + 29) == 0
                assert stats_of(pool, peer).idle == 1
                assert await pool.reap(now=now + 31) == 1
                await seen.released.wait()  # a graceful A-RELEASE
                stats = stats_of(pool, peer)
                assert (stats.idle, stats.closed) == (0, 1)
                assert pool.statistics().associations == 0
                await echo(pool, peer)
    assert seen.accepted == 2


async def test_the_pool_releases_idle_associations_on_its_own() -> None:
    seen = Peerside()
    async with scp_ae().start_server((LOOPBACK, 0), evt_handlers=seen.handlers()) as server:
        peer = Peer(ae_title="POOLSCP", host=LOOPBACK, port=server.port)
        with anyio.fail_after(10):
            async with AssociationPool(scu_ae(), idle_timeout=0.05) as pool:
                await echo(pool, peer)
                await seen.released.wait()
                # The server closes once its A-RELEASE-RP is sent: the pool may not have
                # read it yet.
                while stats_of(pool, peer).closed != 1:
                    await anyio.lowlevel.checkpoint()


async def test_a_borrower_cancelled_mid_find_leaves_the_pool_clean() -> None:
    seen = Peerside()
    async with scp_ae().start_server((LOOPBACK, 0), evt_handlers=seen.handlers()) as server:
        peer = Peer(ae_title="POOLSCP", host=LOOPBACK, port=server.port)
        with anyio.fail_after(15):
            async with AssociationPool(scu_ae(), max_per_peer=1) as pool:
                await anyio.wait_all_tasks_blocked()
                tasks_before = len(anyio.get_running_tasks())
                borrowed: list[Any] = []

                async def find() -> None:
                    query = Dataset()
                    query.QueryRetrieveLevel = "PATIENT"
                    async with pool.association(peer) as assoc:
                        borrowed.append(assoc)
                        async for _ in assoc.send_c_find(query, FIND):
                            pass

                async with anyio.create_task_group() as tg:
                    tg.start_soon(find)
                    await seen.find_started.wait()
                    tg.cancel_scope.cancel()

                assert borrowed[0].is_aborted
                stats = stats_of(pool, peer)
                assert (stats.in_use, stats.idle, stats.opening, stats.closed) == (0, 0, 0, 1)
                assert pool.statistics().associations == 0
                await seen.aborted.wait()
                await seen.closed.wait()
                await anyio.wait_all_tasks_blocked()
                assert len(anyio.get_running_tasks()) == tasks_before
                await echo(pool, peer)  # the slot (the only one) is free
    assert seen.accepted == 2


async def test_an_association_with_requests_outstanding_is_released_not_lent() -> None:
    seen = Peerside()
    async with scp_ae().start_server((LOOPBACK, 0), evt_handlers=seen.handlers()) as server:
        peer = Peer(ae_title="POOLSCP", host=LOOPBACK, port=server.port)
        with anyio.fail_after(10):
            async with AssociationPool(scu_ae()) as pool:
                query = Dataset()
                query.QueryRetrieveLevel = "PATIENT"
                query.PatientID = "MANY"
                async with pool.association(peer) as assoc:
                    async for status, _ in assoc.send_c_find(query, FIND):
                        assert status.Status == 0xFF00
                        break  # C-CANCEL sent; the final response is still to come
                await seen.released.wait()
                stats = stats_of(pool, peer)
                assert (stats.idle, stats.closed) == (0, 1)
                await echo(pool, peer)
    assert seen.accepted == 2


async def test_a_cancelled_waiter_gives_up_its_place() -> None:
    seen = Peerside()
    async with scp_ae().start_server((LOOPBACK, 0), evt_handlers=seen.handlers()) as server:
        peer = Peer(ae_title="POOLSCP", host=LOOPBACK, port=server.port)
        with anyio.fail_after(10):
            async with AssociationPool(scu_ae(), max_per_peer=1) as pool:
                async with pool.association(peer):
                    with anyio.CancelScope() as scope:
                        async with anyio.create_task_group() as tg:
                            tg.start_soon(echo, pool, peer)
                            await anyio.wait_all_tasks_blocked()
                            assert stats_of(pool, peer).waiting == 1
                            scope.cancel()
                    assert stats_of(pool, peer).waiting == 0
                await echo(pool, peer)
                stats = stats_of(pool, peer)
    assert seen.accepted == 1
    assert (stats.opened, stats.reused, stats.waiting) == (1, 1, 0)


async def test_two_peers_are_independent() -> None:
    seen = Peerside()
    async with scp_ae().start_server((LOOPBACK, 0), evt_handlers=seen.handlers()) as server:
        up = Peer(ae_title="POOLSCP", host=LOOPBACK, port=server.port)
        down = Peer(ae_title="GONE", host=LOOPBACK, port=free_port())
        failures: list[BaseException] = []

        async def try_down() -> None:
            try:
                await echo(pool, down)
            except ConnectionRefused as exc:
                failures.append(exc)

        with anyio.fail_after(10):
            async with AssociationPool(scu_ae(), max_per_peer=2, max_total=4) as pool:
                async with anyio.create_task_group() as tg:
                    for _ in range(10):
                        tg.start_soon(try_down)
                        tg.start_soon(echo, pool, up)
                stats_down = stats_of(pool, down)
                stats_up = stats_of(pool, up)
                assert pool.statistics().associations == stats_up.idle
    assert len(failures) == 10
    assert (stats_down.failed_opens, stats_down.opened, stats_down.in_use) == (10, 0, 0)
    assert stats_up.opened + stats_up.reused == 10
    assert seen.max_open <= 2


async def test_the_total_limit_releases_another_peers_idle_association() -> None:
    seen_a, seen_b = Peerside(), Peerside()
    async with (
        scp_ae().start_server((LOOPBACK, 0), evt_handlers=seen_a.handlers()) as server_a,
        scp_ae().start_server((LOOPBACK, 0), evt_handlers=seen_b.handlers()) as server_b,
    ):
        a = Peer(ae_title="POOLSCP", host=LOOPBACK, port=server_a.port)
        b = Peer(ae_title="POOLSCP", host=LOOPBACK, port=server_b.port)
        with anyio.fail_after(10):
            async with AssociationPool(scu_ae(), max_total=1) as pool:
                await echo(pool, a)
                await echo(pool, b)
                await seen_a.released.wait()
                assert pool.statistics().associations == 1
                assert stats_of(pool, a).closed == 1
                await echo(pool, b)
    assert (seen_a.accepted, seen_b.accepted) == (1, 1)


async def test_leaving_the_pool_aborts_what_is_still_lent() -> None:
    seen = Peerside()
    async with scp_ae().start_server((LOOPBACK, 0), evt_handlers=seen.handlers()) as server:
        peer = Peer(ae_title="POOLSCP", host=LOOPBACK, port=server.port)
        with anyio.fail_after(10):
            async with AssociationPool(scu_ae()) as pool:
                borrow = pool.association(peer)
                assoc = await borrow.__aenter__()
            assert assoc.is_aborted
            with pytest.raises(AssociationAborted):
                await assoc.send_c_echo()
            await borrow.__aexit__(None, None, None)
            with pytest.raises(RuntimeError, match="closed"):
                await echo(pool, peer)
    assert pool.statistics().associations == 0


async def test_a_pooled_association_keeps_its_operations_window() -> None:
    scp = scp_ae()
    scp.async_ops_window = (4, 4)
    scu = scu_ae()
    scu.async_ops_window = (4, 4)
    async with scp.start_server((LOOPBACK, 0)) as server:
        peer = Peer(ae_title="POOLSCP", host=LOOPBACK, port=server.port)
        with anyio.fail_after(10):
            async with AssociationPool(scu) as pool:
                for _ in range(2):
                    async with pool.association(peer) as assoc:
                        assert assoc.async_ops_window == (4, 4)
                        async with anyio.create_task_group() as tg:
                            for _ in range(8):
                                tg.start_soon(assoc.send_c_echo)
                assert stats_of(pool, peer).reused == 1


def test_all_lists_the_public_names() -> None:
    import dicomio
    from dicomio import pool as pool_module

    public = {
        name
        for name, value in vars(pool_module).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == pool_module.__name__
    }
    assert public == set(pool_module.__all__)
    assert {"AssociationPool", "Peer"} <= set(dicomio.__all__)


async def test_tls_associations_are_reused_and_replaced() -> None:
    trustme = pytest.importorskip("trustme")
    import ssl

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(LOOPBACK).configure_cert(server_ctx)
    client_ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(client_ctx)
    seen = Peerside()
    async with scp_ae().start_server(
        (LOOPBACK, 0), evt_handlers=seen.handlers(), ssl_context=server_ctx
    ) as server:
        peer = Peer(ae_title="POOLSCP", host=LOOPBACK, port=server.port, ssl_context=client_ctx)
        with anyio.fail_after(10):
            async with AssociationPool(scu_ae()) as pool:
                await echo(pool, peer)
                await echo(pool, peer)
                await seen.associations[0].abort()
                await seen.closed.wait()
                await anyio.wait_all_tasks_blocked()
                await echo(pool, peer)
                stats = stats_of(pool, peer)
    assert seen.accepted == 2
    assert (stats.opened, stats.reused, stats.replaced) == (2, 1, 1)


async def test_a_borrower_cancelled_while_opening_frees_its_slot() -> None:
    """A peer that takes the TCP connection and never answers the A-ASSOCIATE-RQ."""
    requested = anyio.Event()
    gone = anyio.Event()

    async def mute(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            with anyio.move_on_after(10):
                try:
                    await stream.receive()  # the A-ASSOCIATE-RQ, never answered
                    requested.set()
                    await stream.receive()  # the A-ABORT, then the end of the connection
                    await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    gone.set()

    async with await anyio.create_tcp_listener(local_host=LOOPBACK) as listener:
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        peer = Peer(ae_title="MUTE", host=LOOPBACK, port=port, max_associations=1)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as serving:
                serving.start_soon(listener.serve, mute)
                async with AssociationPool(scu_ae()) as pool:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(echo, pool, peer)
                        await requested.wait()
                        assert stats_of(pool, peer).opening == 1
                        tg.cancel_scope.cancel()
                    stats = stats_of(pool, peer)
                    assert (stats.opening, stats.failed_opens, stats.in_use) == (0, 0, 0)
                    assert pool.statistics().associations == 0
                    await gone.wait()  # the requestor closed its end
                serving.cancel_scope.cancel()


async def test_a_failing_pool_block_aborts_idle_associations() -> None:
    seen = Peerside()
    async with scp_ae().start_server((LOOPBACK, 0), evt_handlers=seen.handlers()) as server:
        peer = Peer(ae_title="POOLSCP", host=LOOPBACK, port=server.port)
        with anyio.fail_after(10):
            with pytest.raises(KeyError):
                async with AssociationPool(scu_ae()) as pool:
                    await echo(pool, peer)
                    raise KeyError("the caller failed")
            await seen.aborted.wait()
    assert not seen.released.is_set()
    assert pool.statistics().associations == 0


async def test_a_pool_must_be_entered() -> None:
    pool = AssociationPool(scu_ae())
    with pytest.raises(RuntimeError, match="async with"):
        async with pool.association(Peer(ae_title="X", host=LOOPBACK, port=1)):
            pass
