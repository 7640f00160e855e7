"""Fan-out over the pool (issue #15, acceptance 1), against scripted peers on loopback.

The peers run in this process: dicomio servers whose handlers are scripted (healthy, slow
past the deadline, aborting mid-query, refusing once for lack of resources), a gate in
front of a healthy one that rejects its first associations as transient, a server that
rejects permanently, and a port nobody listens on. ``test_fanout_processes.py`` starts
real server processes.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from typing import Any, cast

import anyio
import anyio.abc
import anyio.lowlevel
import pytest
from pydicom.dataset import Dataset

from dicomio import (
    AE,
    AssociationAborted,
    AssociationPool,
    AssociationRejected,
    ConnectionRefused,
    Outcome,
    Peer,
    Retry,
    evt,
    fanout,
)
from dicomio._transport import connect_tcp
from dicomio.apps.archive import add_storage_contexts
from dicomio.sop import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    Verification,
)
from tests.conftest import LOOPBACK, free_port
from tests.corpus import Corpus
from tests.fake_peer import associate_rj

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60), pytest.mark.uvloop]

FIND = PatientRootQueryRetrieveInformationModelFind
MOVE = PatientRootQueryRetrieveInformationModelMove
FAST = Retry(attempts=3, backoff=0.01, max_backoff=0.05)


def match(study: str, patient: str = "P1") -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientID = patient
    ds.StudyInstanceUID = study
    return ds


def query() -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientID = "P1"
    ds.StudyInstanceUID = ""
    return ds


class Script:
    """How one scripted peer answers C-FIND, and what it saw."""

    def __init__(
        self,
        studies: tuple[str, ...] = (),
        *,
        stall: bool = False,
        abort_after: int | None = None,
        busy_first: int = 0,
        many: int = 0,
    ) -> None:
        self.studies = studies
        self.stall = stall
        self.abort_after = abort_after
        self.busy_first = busy_first
        self.many = many
        self.finds = 0
        self.associations = 0
        self.yielded = 0

    async def on_find(self, event: evt.Event) -> AsyncIterator[tuple[int, Dataset | None]]:
        self.finds += 1
        if self.finds <= self.busy_first:
            yield 0xA700, None  # Refused: Out of Resources (PS3.4 C.4.1.1.4)
            return
        if self.stall:
            with anyio.move_on_after(20):  # bounded, in case the requestor never leaves
                await anyio.sleep_forever()
            return
        for i in range(self.many):
            self.yielded += 1
            yield 0xFF00, match(f"1.2.3.{i}")
        for n, study in enumerate(self.studies):
            if self.abort_after is not None and n == self.abort_after:
                await event.assoc.abort()
                return
            yield 0xFF00, match(study)

    async def on_established(self, event: evt.Event) -> None:
        self.associations += 1


def scp_ae(title: str = "FANSCP") -> AE:
    ae = AE(title)
    ae.add_supported_context(Verification)
    ae.add_supported_context(FIND)
    return ae


def scu_ae() -> AE:
    ae = AE("FANSCU")
    ae.add_requested_context(Verification)
    ae.add_requested_context(FIND)
    return ae


@asynccontextmanager
async def scripted(script: Script, **settings: Any) -> AsyncIterator[Peer]:
    ae = scp_ae()
    for name, value in settings.items():
        setattr(ae, name, value)
    handlers = [(evt.EVT_C_FIND, script.on_find), (evt.EVT_ESTABLISHED, script.on_established)]
    async with ae.start_server((LOOPBACK, 0), evt_handlers=handlers) as server:
        yield Peer(ae_title="FANSCP", host=LOOPBACK, port=server.port)


@asynccontextmanager
async def transient_gate(target: Peer, rejections: int) -> AsyncIterator[tuple[Peer, list[int]]]:
    """A port that answers its first ``rejections`` connections with A-ASSOCIATE-RJ
    rejected-transient (2/3/1, temporary congestion) and forwards the later ones to
    ``target``; the list counts the connections."""
    seen: list[int] = []

    async def pipe(a: anyio.abc.ByteStream, b: anyio.abc.ByteStream) -> None:
        try:
            async for chunk in a:
                await b.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        finally:
            await b.aclose()

    async def handle(client: anyio.abc.SocketStream) -> None:
        seen.append(1)
        async with client:
            if len(seen) <= rejections:
                await client.receive()  # the A-ASSOCIATE-RQ (or its start)
                await client.send(associate_rj(2, 3, 1))
                return
            async with (
                await anyio.connect_tcp(target.host, target.port) as server,
                anyio.create_task_group() as tg,
            ):
                tg.start_soon(pipe, client, server)
                await pipe(server, client)

    listener = await anyio.create_tcp_listener(local_host=LOOPBACK, local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        try:
            yield Peer(ae_title=target.ae_title, host=LOOPBACK, port=port, name="transient"), seen
        finally:
            tg.cancel_scope.cancel()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def settled_fds(baseline: int) -> int:
    """The open descriptors once closing connections have closed (bounded wait)."""
    with anyio.move_on_after(5):
        while open_fds() > baseline:
            await anyio.sleep(0.05)
    return open_fds()


async def test_every_healthy_answer_and_the_right_outcome_for_each_other_peer() -> None:
    healthy = [Script(("1.1", "1.2")), Script(("2.1",)), Script(("3.1", "3.2", "3.3"))]
    slow, aborting = Script(stall=True), Script(("9.1", "9.2"), abort_after=1)
    busy, behind_gate = Script(("5.1",), busy_first=1), Script(("6.1",))
    async with AsyncExitStack() as stack:
        peers = [await stack.enter_async_context(scripted(s)) for s in healthy]
        slow_peer = await stack.enter_async_context(scripted(slow))
        aborting_peer = await stack.enter_async_context(scripted(aborting))
        busy_peer = await stack.enter_async_context(scripted(busy))
        gated = await stack.enter_async_context(scripted(behind_gate))
        transient, connections = await stack.enter_async_context(transient_gate(gated, 1))
        strict = await stack.enter_async_context(scripted(Script(), require_called_aet=True))
        permanent = Peer(ae_title="NOT-ME", host=LOOPBACK, port=strict.port, name="permanent")
        down = Peer(ae_title="DOWN", host=LOOPBACK, port=free_port(), name="down")
        everyone = [*peers, slow_peer, aborting_peer, busy_peer, transient, permanent, down]
        # uvloop (libuv) opens a descriptor of its own at a loop's first outgoing connection
        # and keeps it: let that happen before the count that must not grow.
        with suppress(OSError):
            await connect_tcp(LOOPBACK, down.port)
        baseline = open_fds()
        got: list[tuple[Peer, str]] = []
        with anyio.fail_after(15):
            async with AssociationPool(scu_ae()) as pool:
                async with fanout.find(
                    pool, everyone, query(), FIND, peer_timeout=1.5, retry=FAST
                ) as answers:
                    async for peer, _status, identifier in answers:
                        if identifier is not None:
                            got.append((peer, identifier.StudyInstanceUID))
                reports = answers.reports
                assert all(s.in_use == 0 for s in pool.statistics().peers.values())
        assert await settled_fds(baseline) <= baseline

    for peer, script in zip(peers, healthy, strict=True):
        assert sorted(s for p, s in got if p == peer) == sorted(script.studies)
        assert reports[peer].outcome is Outcome.OK and reports[peer].attempts == 1
    assert reports[slow_peer].outcome is Outcome.TIMED_OUT
    assert reports[slow_peer].attempts == 1
    assert reports[aborting_peer].outcome is Outcome.FAILED
    assert isinstance(reports[aborting_peer].error, AssociationAborted)
    # At most what the peer sent before its abort (an SCP may drop what it had queued).
    assert [s for p, s in got if p == aborting_peer] in ([], ["9.1"])
    assert reports[aborting_peer].attempts == 1  # not retried: the peer aborted
    assert reports[busy_peer].outcome is Outcome.OK and reports[busy_peer].retries == 1
    assert [s for p, s in got if p == busy_peer] == ["5.1"]
    assert reports[transient].outcome is Outcome.OK and reports[transient].retries == 1
    assert len(connections) == 2 and [s for p, s in got if p == transient] == ["6.1"]
    assert reports[permanent].outcome is Outcome.FAILED
    assert isinstance(reports[permanent].error, AssociationRejected)
    assert reports[permanent].attempts == 1  # never retried: rejected-permanent
    assert isinstance(reports[down].error, ConnectionRefused)
    assert reports[down].attempts == FAST.attempts  # refused is transient: retried
    assert reports[down].outcome is Outcome.FAILED
    for report in reports.values():
        assert str(report).startswith(f"peer={report.peer.name} ")


async def test_overall_deadline_and_leaving_early_end_every_peer_promptly() -> None:
    async with scripted(Script(stall=True)) as slow, scripted(Script(("1.1",))) as fast:
        with anyio.fail_after(5):  # a C-CANCEL wait would take the 10 s cancel timeout
            async with AssociationPool(scu_ae()) as pool:
                async with fanout.find(pool, [slow, fast], query(), FIND, timeout=0.5) as a:
                    seen = [answer async for answer in a]
                assert a.reports[slow].outcome is Outcome.TIMED_OUT
                assert a.reports[fast].outcome is Outcome.OK
                assert [x.identifier.StudyInstanceUID for x in seen if x.identifier] == ["1.1"]

                async with fanout.find(pool, [slow, fast], query(), FIND) as a:
                    async for answer in a:
                        if answer.identifier is not None:
                            break  # leave with the slow peer still running
                assert a.reports[slow].outcome is Outcome.CANCELLED
                assert pool.peer_statistics(slow).in_use == 0


async def test_cancel_stops_every_peer() -> None:
    async with scripted(Script(stall=True)) as slow1, scripted(Script(stall=True)) as slow2:
        with anyio.fail_after(5):
            async with AssociationPool(scu_ae()) as pool:
                with anyio.CancelScope() as scope:
                    async with fanout.find(pool, [slow1, slow2], query(), FIND) as answers:
                        await anyio.wait_all_tasks_blocked()
                        scope.cancel()  # as Ctrl-C would
                        async for _ in answers:
                            pass
                assert scope.cancelled_caught
                assert {r.outcome for r in answers.reports.values()} == {Outcome.CANCELLED}
                assert all(s.in_use == 0 for s in pool.statistics().peers.values())


async def test_duplicates_across_peers_are_dropped_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="dicomio.fanout")
    one, two = Script(("1.1", "7.7")), Script(("7.7", "2.2"))
    async with scripted(one) as a, scripted(two) as b:
        with anyio.fail_after(10):
            async with (
                AssociationPool(scu_ae()) as pool,
                fanout.find(pool, [a, b], query(), FIND, dedupe="StudyInstanceUID") as answers,
            ):
                studies = [x.identifier.StudyInstanceUID async for x in answers if x.identifier]
    assert sorted(studies) == ["1.1", "2.2", "7.7"]
    assert sum(r.duplicates for r in answers.reports.values()) == 1
    # One structured line per peer: the text, and the values on the record.
    lines = [r for r in caplog.records if r.name == "dicomio.fanout" and hasattr(r, "fanout")]
    assert sorted(r.fanout["peer"] for r in lines) == sorted([a.name, b.name])
    assert all(r.getMessage().startswith(f"peer={r.fanout['peer']} outcome=ok") for r in lines)


async def test_a_slow_consumer_slows_the_peer() -> None:
    many = Script(many=100_000)
    async with scripted(many) as peer:
        with anyio.fail_after(20):
            async with AssociationPool(scu_ae()) as pool:
                async with fanout.find(pool, [peer], query(), FIND, buffer=4) as answers:
                    for _ in range(5):
                        await answers.__anext__()
                    await anyio.wait_all_tasks_blocked()
                    # The requestor stopped reading: at most the buffer, one in hand and
                    # what the sockets hold came, not the 100,000 matches.
                    assert answers.reports[peer].answers <= 5 + 4 + 1
                    assert many.yielded < 100_000
                assert answers.reports[peer].outcome is Outcome.CANCELLED


async def test_echo_fans_out_and_reuses_the_pool() -> None:
    scripts = [Script() for _ in range(3)]
    async with AsyncExitStack() as stack:
        peers = [await stack.enter_async_context(scripted(s)) for s in scripts]
        with anyio.fail_after(10):
            async with AssociationPool(scu_ae()) as pool:
                for _ in range(2):
                    async with fanout.echo(pool, peers) as answers:
                        codes = [int(a.status.Status) async for a in answers]
                    assert codes == [0, 0, 0]
    assert [s.associations for s in scripts] == [1, 1, 1]


async def test_bulk_move_with_progress_skips_what_arrived(corpus: Corpus) -> None:
    instances = corpus.instances[:6]
    by_uid = {i.sop_uid: i for i in instances}
    stored: list[str] = []

    async def on_move(event: evt.Event) -> AsyncIterator[Any]:
        uid = str(event.identifier.SOPInstanceUID)
        yield 1
        yield 0xFF00, by_uid[uid].path

    async def on_store(event: evt.Event) -> int:
        stored.append(str(event.request.affected_sop_instance_uid))
        return 0

    destination = AE("DEST")
    add_storage_contexts(destination)
    scp = AE("MOVESCP")
    scp.add_supported_context(MOVE)
    scu = AE("MOVESCU")
    scu.add_requested_context(MOVE)
    identifiers = []
    for instance in instances:
        ds = Dataset()
        ds.QueryRetrieveLevel = "IMAGE"
        ds.SOPInstanceUID = instance.sop_uid
        identifiers.append(ds)
    already = {instances[0].sop_uid, instances[1].sop_uid}
    with anyio.fail_after(30):
        async with destination.start_server(
            (LOOPBACK, 0), evt_handlers=[(evt.EVT_C_STORE, on_store)]
        ) as dest:
            scp.move_destinations = {"DEST": (LOOPBACK, dest.port)}
            async with scp.start_server(
                (LOOPBACK, 0), evt_handlers=[(evt.EVT_C_MOVE, on_move)]
            ) as server:
                peer = Peer(ae_title="MOVESCP", host=LOOPBACK, port=server.port)
                async with AssociationPool(scu, max_per_peer=2) as pool:
                    retrieve = fanout.move(
                        pool, [peer], identifiers, "DEST", MOVE, skip=already, per_peer=2
                    )
                    async with retrieve as answers:
                        async for _ in answers:
                            pass
                    assert pool.peer_statistics(peer).opened <= 2
    progress = retrieve.progress()
    assert (progress.requests, progress.requests_done) == (4, 4)
    assert (progress.completed, progress.failed, progress.remaining) == (4, 0, 0)
    assert sorted(stored) == sorted(i.sop_uid for i in instances[2:])
    assert answers.reports[peer].outcome is Outcome.OK


class SteppedPool:
    """Stands in for an ``AssociationPool`` without sockets: an association takes three
    turns of the event loop to open (as a connect and an A-ASSOCIATE-AC do), and every
    step is logged in the order it happens."""

    def __init__(self) -> None:
        self.log: list[tuple[str, int]] = []

    @asynccontextmanager
    async def association(self, peer: Peer) -> AsyncIterator[Any]:
        self.log.append(("connect", peer.port))
        for _ in range(3):
            await anyio.lowlevel.checkpoint()
        yield peer


async def test_peers_are_started_a_turn_apart_not_in_lockstep() -> None:
    """The first peers ask while the later ones are still connecting, so that their
    answers do not all come back at once (50 peers: connecting takes 50 turns)."""
    pool = SteppedPool()

    def ask(assoc: Any, item: Dataset | None) -> AsyncIterator[tuple[Dataset, None]]:
        async def one() -> AsyncIterator[tuple[Dataset, None]]:
            pool.log.append(("ask", assoc.port))
            status = Dataset()
            status.Status = 0x0000
            yield status, None

        return one()

    peers = [Peer(ae_title="P", host=LOOPBACK, port=1000 + n) for n in range(50)]
    jobs = [(peer, [None]) for peer in peers]
    with anyio.fail_after(10):
        async with fanout.FanOut(cast(AssociationPool, pool), jobs, ask) as answers:
            assert len([a async for a in answers]) == 50
    steps = [step for step, _ in pool.log]
    assert steps.count("ask") == 50
    first_ask, last_connect = steps.index("ask"), len(steps) - 1 - steps[::-1].index("connect")
    assert first_ask < 10 < last_connect
    assert all(report.ok for report in answers.reports.values())


def test_retry_policy_and_transient_failures() -> None:
    assert fanout.is_transient(AssociationRejected(2, 3, 1))
    assert not fanout.is_transient(AssociationRejected(1, 1, 7))
    assert fanout.is_transient(ConnectionRefused("refused"))
    assert fanout.is_transient(ConnectionResetError())
    assert not fanout.is_transient(AssociationAborted(2, 0))
    assert fanout.is_transient(0xA700) and fanout.is_transient(0xA7FF)
    assert not fanout.is_transient(0xC000) and not fanout.is_transient(0xA900)
    retry = Retry(backoff=1.0, max_backoff=3.0, jitter=0.0)
    assert [retry.delay(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 3.0, 3.0]
    assert 0.5 <= Retry(backoff=1.0, jitter=0.5).delay(1) <= 1.0


def test_all_lists_the_public_names() -> None:
    import dicomio

    public = {
        name
        for name, value in vars(fanout).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == fanout.__name__
    }
    assert public == set(fanout.__all__)
    assert {"FanOut", "Outcome", "PeerReport", "Retry"} <= set(dicomio.__all__)
