"""Many outstanding requests on one association: one task reads, the others follow.

dicomio to dicomio on 127.0.0.1, on asyncio and trio, with an asynchronous operations window
of 16. A task whose response is read by another task waits on a ``Signal``; the reader
delivers every response it reads, and when the read lock comes free the first follower
still without a response is woken to read next (``Association._follow`` and
``_wake_follower``, the read gate's ``on_free`` hook).

The load tests check that every response reaches the task that asked (C-FIND and C-STORE
handlers answer out of order). The hand-over tests make the interleaving deterministic:
the SCP's handlers wait on one event per message ID, so the test decides which response
arrives when, and a hook on the read gate's ``on_free`` acts at the moment a follower is
picked. No test sleeps to synchronise; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import attrs
import pytest
from pydicom.dataset import Dataset

from dicomio import AE, errors, evt
from dicomio._locks import Signal
from dicomio.association import Association
from dicomio.sop import CTImageStorage, StudyRootQueryRetrieveInformationModelFind, Verification

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

LOOPBACK = "127.0.0.1"
WINDOW = 16
FIND = StudyRootQueryRetrieveInformationModelFind


def scp_ae() -> AE:
    ae = AE("SCP")
    for uid in (Verification, CTImageStorage, FIND):
        ae.add_supported_context(uid)
    ae.async_ops_window = (WINDOW, WINDOW)
    return ae


def scu_ae(dimse: float | None = 30.0) -> AE:
    ae = AE("SCU")
    for uid in (Verification, CTImageStorage, FIND):
        ae.add_requested_context(uid)
    ae.async_ops_window = (WINDOW, WINDOW)
    ae.dimse_timeout = dimse
    return ae


def ct(name: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.{name}"
    ds.PatientID = name
    return ds


def count_follows(assoc: Association) -> list[int]:
    """Count the times a task waits while another reads (``_follow``)."""
    calls = [0]
    follow = assoc._follow

    async def counting(op: Any, limit: float) -> None:
        calls[0] += 1
        await follow(op, limit)

    assoc._follow = counting  # type: ignore[method-assign]
    return calls


async def until(condition: Callable[[], bool]) -> None:
    """Let other tasks run until ``condition`` holds (the caller bounds the wait)."""
    while not condition():
        await anyio.lowlevel.checkpoint()


async def random_checkpoints(rng: random.Random, most: int) -> None:
    for _ in range(rng.randrange(most)):
        await anyio.lowlevel.checkpoint()


def anyio_backend_name() -> str:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return "trio"
    return "asyncio"


def assert_idle(assoc: Association) -> None:
    """Nothing outstanding, nobody reading, no follower still waiting."""
    assert not assoc._ops
    assert not assoc._read_lock.locked()
    assert all(op.wakeup is not signal for op, signal in assoc._followers)


# ---------------------------------------------------------------------------------------
# Load: many tasks, window 16, every response to the task that asked


@pytest.mark.parametrize("delayed", [False, True], ids=["prompt", "delayed"])
async def test_many_tasks_many_echoes_with_window_16(delayed: bool) -> None:
    """20 tasks, 50 C-ECHOs each, window 16. "delayed": the handler answers after a random
    number of checkpoints (on trio, with the SCP in the same process, a prompt answer is
    often read before the next task has finished sending, so nobody follows)."""
    tasks, per_task = 20, 50
    rng = random.Random(0)
    done: list[int] = []

    async def on_echo(event: evt.Event) -> int:
        if delayed:
            await random_checkpoints(rng, 20)
        return 0

    async with scp_ae().start_server(
        (LOOPBACK, 0), evt_handlers=[(evt.EVT_C_ECHO, on_echo)]
    ) as server:
        with anyio.fail_after(60):
            async with scu_ae().associate(LOOPBACK, server.port, ae_title="SCP") as assoc:
                assert assoc.async_ops_window == (WINDOW, WINDOW)
                follows = count_follows(assoc)

                async def echoes(number: int) -> None:
                    for _ in range(per_task):
                        assert (await assoc.send_c_echo()).Status == 0
                    done.append(number)

                async with anyio.create_task_group() as tg:
                    for number in range(tasks):
                        tg.start_soon(echoes, number)
                if delayed or anyio_backend_name() == "asyncio":
                    assert follows[0] > 0, "no task ever waited for another's read"
                assert_idle(assoc)
                assert (await assoc.send_c_echo()).Status == 0
            assert assoc.is_released
    assert sorted(done) == list(range(tasks))


async def test_out_of_order_find_responses_reach_the_task_that_asked() -> None:
    """Each query names its own PatientID; the handler answers after a random number of
    checkpoints, so responses leave in another order than the requests came."""
    tasks, per_task = WINDOW, 20
    rng = random.Random(1)
    arrived: list[str] = []
    answered: list[str] = []

    async def on_find(event: evt.Event) -> AsyncIterator[tuple[int, Dataset]]:
        name = str(event.identifier.PatientID)
        arrived.append(name)
        await random_checkpoints(rng, 40)
        match = Dataset()
        match.QueryRetrieveLevel = "PATIENT"
        match.PatientID = name
        match.PatientName = f"Name^{name}"
        answered.append(name)
        yield 0xFF00, match

    got: dict[str, list[Any]] = {}
    async with scp_ae().start_server(
        (LOOPBACK, 0), evt_handlers=[(evt.EVT_C_FIND, on_find)]
    ) as server:
        with anyio.fail_after(60):
            async with scu_ae().associate(LOOPBACK, server.port, ae_title="SCP") as assoc:
                assert assoc.async_ops_window == (WINDOW, WINDOW)
                follows = count_follows(assoc)

                async def finds(number: int) -> None:
                    for index in range(per_task):
                        name = f"T{number}-{index}"
                        query = Dataset()
                        query.QueryRetrieveLevel = "PATIENT"
                        query.PatientID = name
                        query.PatientName = ""
                        got[name] = [
                            (int(status.Status), ds and (ds.PatientID, str(ds.PatientName)))
                            async for status, ds in assoc.send_c_find(query, FIND)
                        ]

                async with anyio.create_task_group() as tg:
                    for number in range(tasks):
                        tg.start_soon(finds, number)
                assert follows[0] > 0
                assert_idle(assoc)
    names = [f"T{number}-{index}" for number in range(tasks) for index in range(per_task)]
    assert sorted(got) == sorted(names)
    for name in names:
        assert got[name] == [(0xFF00, (name, f"Name^{name}")), (0, None)], name
    assert sorted(answered) == sorted(names)
    assert answered != arrived, "the handlers answered in order: the test shows nothing"


async def test_out_of_order_store_responses_reach_the_task_that_asked() -> None:
    tasks, per_task = WINDOW, 20
    rng = random.Random(2)
    arrived: list[str] = []
    answered: list[str] = []

    async def on_store(event: evt.Event) -> Dataset:
        uid = str(event.request.affected_sop_instance_uid)
        arrived.append(uid)
        await random_checkpoints(rng, 40)
        assert str(event.dataset.SOPInstanceUID) == uid
        answered.append(uid)
        status = Dataset()
        status.Status = 0
        status.ErrorComment = str(event.dataset.PatientID)  # which data set this answers
        return status

    statuses: dict[str, Dataset] = {}
    async with scp_ae().start_server(
        (LOOPBACK, 0), evt_handlers=[(evt.EVT_C_STORE, on_store)]
    ) as server:
        with anyio.fail_after(60):
            async with scu_ae().associate(LOOPBACK, server.port, ae_title="SCP") as assoc:
                follows = count_follows(assoc)

                async def stores(number: int) -> None:
                    for index in range(per_task):
                        name = f"{number}.{index}"
                        statuses[name] = await assoc.send_c_store(ct(name))

                async with anyio.create_task_group() as tg:
                    for number in range(tasks):
                        tg.start_soon(stores, number)
                assert follows[0] > 0
                assert_idle(assoc)
    assert len(statuses) == tasks * per_task
    for name, status in statuses.items():
        assert status.Status == 0
        assert status.ErrorComment == name
        assert status.AffectedSOPInstanceUID == ct(name).SOPInstanceUID
    assert sorted(answered) == sorted(arrived) and len(set(answered)) == len(answered)
    assert answered != arrived, "the handlers answered in order: the test shows nothing"


async def test_followers_cancelled_at_random_points_strand_nobody() -> None:
    """Echoes cancelled (anyio cancel scopes) a random number of checkpoints after they
    start: leaders mid-read, followers waiting, followers just picked. Every echo not
    cancelled succeeds, and the association still serves 16 tasks at once afterwards."""
    tasks, per_task = WINDOW, 60
    rng = random.Random(3)
    outcomes: defaultdict[str, int] = defaultdict(int)
    async with scp_ae().start_server((LOOPBACK, 0)) as server:
        with anyio.fail_after(60):
            async with scu_ae().associate(LOOPBACK, server.port, ae_title="SCP") as assoc:
                follows = count_follows(assoc)

                async def cancel_later(scope: anyio.CancelScope, checkpoints: int) -> None:
                    for _ in range(checkpoints):
                        await anyio.lowlevel.checkpoint()
                    scope.cancel()

                async def echoes(tg: anyio.abc.TaskGroup) -> None:
                    for _ in range(per_task):
                        with anyio.CancelScope() as scope:
                            if rng.random() < 0.3:
                                tg.start_soon(cancel_later, scope, rng.randrange(30))
                            assert (await assoc.send_c_echo()).Status == 0
                            outcomes["answered"] += 1
                        if scope.cancelled_caught:
                            outcomes["cancelled"] += 1

                async with anyio.create_task_group() as tg:
                    for _ in range(tasks):
                        tg.start_soon(echoes, tg)
                assert outcomes["answered"] + outcomes["cancelled"] == tasks * per_task
                assert outcomes["cancelled"] > 0 and follows[0] > 0
                assert not assoc._read_lock.locked()
                # Whatever the cancellations left behind, 16 tasks at once still work.
                statuses: list[int] = []

                async def echo() -> None:
                    statuses.append(int((await assoc.send_c_echo()).Status))

                with anyio.fail_after(10):
                    async with anyio.create_task_group() as tg:
                        for _ in range(WINDOW):
                            tg.start_soon(echo)
                assert statuses == [0] * WINDOW
                assert_idle(assoc)


async def test_a_dimse_timeout_under_load_leaves_the_other_requests_working() -> None:
    """One C-STORE is never answered (until the end): it raises DIMSETimeout after the
    DIMSE timeout, while fifteen tasks' echoes on the same association all succeed."""
    never = anyio.Event()
    timeout = 1.5

    async def on_store(event: evt.Event) -> int:
        await never.wait()
        return 0

    echoes_done = 0
    async with scp_ae().start_server(
        (LOOPBACK, 0), evt_handlers=[(evt.EVT_C_STORE, on_store)]
    ) as server:
        try:
            with anyio.fail_after(60):
                async with scu_ae(dimse=timeout).associate(
                    LOOPBACK, server.port, ae_title="SCP"
                ) as assoc:
                    store_done = anyio.Event()
                    elapsed: list[float] = []

                    async def unanswered_store() -> None:
                        started = time.monotonic()
                        with pytest.raises(errors.DIMSETimeout):
                            await assoc.send_c_store(ct("999999"))
                        elapsed.append(time.monotonic() - started)
                        store_done.set()

                    async def echoes() -> None:
                        nonlocal echoes_done
                        # Echo until the store has timed out, and a few more after.
                        extra = 20
                        while extra:
                            assert (await assoc.send_c_echo()).Status == 0
                            echoes_done += 1
                            if store_done.is_set():
                                extra -= 1

                    async with anyio.create_task_group() as tg:
                        tg.start_soon(unanswered_store)
                        for _ in range(WINDOW - 1):
                            tg.start_soon(echoes)
                    assert timeout - 0.05 <= elapsed[0] < timeout + 5
                    assert assoc.is_established
                    assert_idle(assoc)
                    never.set()  # the late answer is ignored
                    assert (await assoc.send_c_echo()).Status == 0
        finally:
            never.set()
    assert echoes_done >= (WINDOW - 1) * 20


# ---------------------------------------------------------------------------------------
# Deterministic hand-overs: the test decides when each response leaves the SCP


class Scripted:
    """An SCP whose C-ECHO handler answers message ``n`` once ``release(n)`` is called, and a
    client association whose requests the test starts one at a time."""

    def __init__(self) -> None:
        self.gates: defaultdict[int, anyio.Event] = defaultdict(anyio.Event)
        self.assoc: Association
        self.tg: anyio.abc.TaskGroup
        self.results: dict[str, Any] = {}
        self.finished: defaultdict[str, anyio.Event] = defaultdict(anyio.Event)
        self.ids: dict[str, int] = {}
        self.scopes: dict[str, anyio.CancelScope] = {}
        self.answer_at_once = False

    async def on_echo(self, event: evt.Event) -> int:
        assert event.message_id is not None
        if not self.answer_at_once:
            await self.gates[event.message_id].wait()
        return 0

    def release(self, name: str) -> None:
        self.gates[self.ids[name]].set()

    def release_all(self) -> None:
        self.answer_at_once = True
        for gate in self.gates.values():
            gate.set()

    def op(self, name: str) -> Any:
        return self.assoc._ops[self.ids[name]]

    def following(self, name: str) -> bool:
        op = self.assoc._ops.get(self.ids[name])
        return op is not None and isinstance(op.wakeup, Signal) and not op.wakeup.is_set()

    async def _echo(self, name: str) -> None:
        try:
            with self.scopes[name]:
                self.results[name] = (await self.assoc.send_c_echo()).Status
        except Exception as exc:
            self.results[name] = exc
        finally:
            self.finished[name].set()

    async def start(self, name: str, *, dimse: float | None = None, leader: bool = False) -> None:
        """Start an echo in its own task; return once it reads (``leader``) or follows."""
        assoc = self.assoc
        before = set(assoc._ops)
        assoc.timeouts = attrs.evolve(assoc.timeouts, dimse=dimse)
        self.scopes[name] = anyio.CancelScope()
        self.tg.start_soon(self._echo, name)
        await until(lambda: bool(set(assoc._ops) - before))
        (self.ids[name],) = set(assoc._ops) - before
        if leader:
            await until(lambda: assoc._read_lock.locked() and self.op(name).wakeup is None)
        else:
            await until(lambda: self.following(name))

    def on_pick(self, action: Callable[[], None]) -> None:
        """Run ``action`` once, right after the read gate's next ``on_free`` hook."""
        gate = self.assoc._read_lock
        on_free = gate._on_free
        assert on_free is not None

        def hook() -> None:
            on_free()
            gate._on_free = on_free
            action()

        gate._on_free = hook


async def scripted(test: Callable[[Scripted], Awaitable[None]]) -> None:
    script = Scripted()
    async with scp_ae().start_server(
        (LOOPBACK, 0), evt_handlers=[(evt.EVT_C_ECHO, script.on_echo)]
    ) as server:
        try:
            with anyio.fail_after(30):
                async with scu_ae().associate(LOOPBACK, server.port, ae_title="SCP") as assoc:
                    script.assoc = assoc
                    async with anyio.create_task_group() as tg:
                        script.tg = tg
                        try:
                            await test(script)
                        finally:
                            script.release_all()
                    assert (await assoc.send_c_echo()).Status == 0
                    assert_idle(assoc)
        finally:
            script.release_all()


async def test_the_reader_delivers_to_its_followers_and_wakes_them() -> None:
    async def test(s: Scripted) -> None:
        await s.start("a", leader=True)
        await s.start("b")
        await s.start("c")
        s.release("c")  # read by a, delivered to c
        with anyio.fail_after(5):
            await s.finished["c"].wait()
        assert s.results == {"c": 0}
        assert s.assoc._read_lock.locked() and s.following("b")
        s.release("b")
        s.release("a")
        with anyio.fail_after(5):
            await s.finished["a"].wait()
            await s.finished["b"].wait()
        assert s.results == {"a": 0, "b": 0, "c": 0}

    await scripted(test)


async def test_when_the_reader_is_answered_the_first_follower_reads_next() -> None:
    async def test(s: Scripted) -> None:
        await s.start("a", leader=True)
        await s.start("b")
        await s.start("c")
        picked: list[bool] = []
        s.on_pick(lambda: picked.extend([s.op("b").wakeup.is_set(), s.following("c")]))
        s.release("a")
        with anyio.fail_after(5):
            await s.finished["a"].wait()
            await until(lambda: s.assoc._read_lock.locked())
        assert picked == [True, True]  # b, the first follower, was woken to read; c waits
        assert s.following("c")
        s.release("c")  # read by b now, delivered to c
        with anyio.fail_after(5):
            await s.finished["c"].wait()
        s.release("b")
        with anyio.fail_after(5):
            await s.finished["b"].wait()
        assert s.results == {"a": 0, "b": 0, "c": 0}

    await scripted(test)


async def test_a_follower_cancelled_while_waiting_is_passed_over() -> None:
    async def test(s: Scripted) -> None:
        await s.start("a", leader=True)
        await s.start("b")
        await s.start("c")
        s.scopes["b"].cancel()
        with anyio.fail_after(5):
            await s.finished["b"].wait()
        assert s.scopes["b"].cancelled_caught and "b" not in s.results
        picked: list[bool] = []
        s.on_pick(lambda: picked.append(s.op("c").wakeup.is_set()))
        s.release("a")
        with anyio.fail_after(5):
            await s.finished["a"].wait()
        assert picked == [True]
        s.release("c")
        with anyio.fail_after(5):
            await s.finished["c"].wait()
        assert s.results == {"a": 0, "c": 0}

    await scripted(test)


@pytest.mark.parametrize("followers", [1, 3])
async def test_a_follower_cancelled_as_it_is_picked_passes_the_turn_on(followers: int) -> None:
    """b is woken to read and its cancel scope is cancelled before it runs: c (and the
    others behind it) must not be stranded. c's response comes only after that, so someone
    has to read it.

    (Neither backend delivers an anyio cancellation to a task whose wait has already been
    answered: b leaves its wait normally, starts reading, and is cancelled there; the read
    gate's release hands the turn on. The plain Task.cancel() that lands inside the wait is
    the next test.)"""

    async def test(s: Scripted) -> None:
        await s.start("a", leader=True)
        await s.start("b")
        others = [f"c{number}" for number in range(followers)]
        for name in others:
            await s.start(name)

        def cancel_b() -> None:
            assert s.op("b").wakeup.is_set()  # b was picked ...
            s.scopes["b"].cancel()  # ... and is cancelled before it runs

        s.on_pick(cancel_b)
        s.release("a")
        with anyio.fail_after(5):
            await s.finished["a"].wait()
            await s.finished["b"].wait()
        assert s.scopes["b"].cancelled_caught and "b" not in s.results
        for name in others:
            s.release(name)
        with anyio.fail_after(5):
            for name in others:
                await s.finished[name].wait()
        assert s.results == {"a": 0, **dict.fromkeys(others, 0)}

    await scripted(test)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_follower_task_cancelled_after_its_pick_passes_the_turn_on(
    anyio_backend: str,
) -> None:
    """asyncio-only: a plain Task.cancel() (asyncio.timeout, wait_for) lands inside the
    follower's wait even though it was already woken: it must hand the turn to c."""

    async def test(s: Scripted) -> None:
        assoc = s.assoc
        await s.start("a", leader=True)
        before = set(assoc._ops)
        task_b = asyncio.get_running_loop().create_task(assoc.send_c_echo())
        await until(lambda: bool(set(assoc._ops) - before))
        (s.ids["b"],) = set(assoc._ops) - before
        await until(lambda: s.following("b"))
        await s.start("c")

        def cancel_b() -> None:
            assert s.op("b").wakeup.is_set()
            task_b.cancel()

        s.on_pick(cancel_b)
        s.release("a")
        with anyio.fail_after(5):
            with pytest.raises(asyncio.CancelledError):
                await task_b
            await s.finished["a"].wait()
        assert s.following("c") or s.assoc._read_lock.locked()
        s.release("c")
        with anyio.fail_after(5):
            await s.finished["c"].wait()
        assert s.results == {"a": 0, "c": 0}

    await scripted(test)


async def test_a_dimse_timeout_on_a_follower() -> None:
    """b follows with a short DIMSE timeout and is never answered: DIMSETimeout after it,
    while a keeps reading and c, following too, gets its response afterwards."""

    async def test(s: Scripted) -> None:
        await s.start("a", leader=True)
        started = time.monotonic()
        await s.start("b", dimse=0.3)
        await s.start("c")
        with anyio.fail_after(5):
            await s.finished["b"].wait()
        assert isinstance(s.results["b"], errors.DIMSETimeout), s.results
        assert 0.25 <= time.monotonic() - started < 5
        assert s.assoc._read_lock.locked() and s.following("c")
        s.release("c")
        with anyio.fail_after(5):
            await s.finished["c"].wait()
        s.release("a")
        with anyio.fail_after(5):
            await s.finished["a"].wait()
        assert s.results["a"] == 0 and s.results["c"] == 0
        s.release("b")  # the late answer is ignored

    await scripted(test)


async def test_a_picked_follower_that_times_out_passes_the_turn_on() -> None:
    """a reads; b (DIMSE timeout 0.3 s) and c (none) follow. a's response comes and b is
    woken to read next, but a's task then keeps the loop busy for 0.4 s (CPU work right
    after its answer): when b runs its deadline has passed and it raises DIMSETimeout,
    which is right. But nobody reads for c any more: c's response, sent afterwards, sits in
    the socket and c waits for ever (with the default 30 s DIMSE timeout it would wait 30 s
    and then fail although its response had come). Found by this test; fixed in _follow.

    The stall only makes the race certain: without it, b's deadline timer firing in the
    loop iteration that wakes the reader with data does the same (the reader then picks b,
    whose Signal is not set by the timer, and b sees its deadline passed)."""

    async def test(s: Scripted) -> None:
        await s.start("a", leader=True)
        await s.start("b", dimse=0.3)
        await s.start("c")
        picked: list[bool] = []

        def busy_after_the_pick() -> None:
            picked.append(s.op("b").wakeup.is_set())
            time.sleep(0.4)  # the loop is held up: b's deadline passes before b runs

        s.on_pick(busy_after_the_pick)
        s.release("a")
        with anyio.fail_after(5):
            await s.finished["a"].wait()
            await s.finished["b"].wait()
        assert picked == [True]
        assert isinstance(s.results["b"], errors.DIMSETimeout)
        s.release("c")
        with anyio.fail_after(2):
            await s.finished["c"].wait()  # the bug: nobody reads c's response
        assert s.results["c"] == 0

    await scripted(test)
