"""dicomio._locks: Gate, a FIFO counting semaphore without owner tracking, with its on_free
hook; Signal, the one-shot wake-up of one waiting task with a deadline.

Waiters are started with ``TaskGroup.start``: a task calls ``task_status.started()`` right
before ``acquire``, and since nothing in between yields, by the time ``start`` returns the
task is queued. That fixes the queue order without sleeps.
"""

from __future__ import annotations

import asyncio
import math

import anyio
import anyio.lowlevel
import pytest
from anyio.abc import TaskStatus
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dicomio import _locks
from dicomio._locks import Gate, Signal

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

STARTED = anyio.TASK_STATUS_IGNORED


def free_permits(gate: Gate) -> int:
    """How many permits ``acquire_nowait`` can take now (they are given back)."""
    taken = 0
    while True:
        try:
            gate.acquire_nowait()
        except anyio.WouldBlock:
            break
        taken += 1
    for _ in range(taken):
        gate.release()
    return taken


def test_a_gate_needs_a_permit() -> None:
    for value in (0, -1):
        with pytest.raises(ValueError):
            Gate(value)


async def test_acquire_nowait_and_locked(anyio_backend: str) -> None:
    gate = Gate()
    assert not gate.locked()
    gate.acquire_nowait()
    assert gate.locked()
    with pytest.raises(anyio.WouldBlock):
        gate.acquire_nowait()
    gate.release()
    assert not gate.locked()
    assert free_permits(gate) == 1


async def test_permits_are_counted(anyio_backend: str) -> None:
    gate = Gate(3)
    for taken in range(3):
        assert not gate.locked()
        gate.acquire_nowait()
        assert free_permits(gate) == 2 - taken
    assert gate.locked()
    with pytest.raises(anyio.WouldBlock):
        gate.acquire_nowait()
    gate.release()
    assert not gate.locked()
    await gate.acquire()
    assert gate.locked()
    for _ in range(3):
        gate.release()
    assert free_permits(gate) == 3


async def test_at_most_value_tasks_inside(anyio_backend: str) -> None:
    gate = Gate(3)
    active = 0
    most = 0
    finished = 0

    async def worker() -> None:
        nonlocal active, most, finished
        async with gate:
            active += 1
            most = max(most, active)
            for _ in range(3):
                await anyio.lowlevel.checkpoint()
            active -= 1
        finished += 1

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(worker)
    assert finished == 10
    assert most == 3
    assert free_permits(gate) == 3


async def test_a_free_gate_is_entered_without_a_checkpoint(anyio_backend: str) -> None:
    """Documented: no checkpoint when a permit is free, so even a cancelled scope enters."""
    gate = Gate()
    with anyio.CancelScope() as scope:
        scope.cancel()
        await gate.acquire()
        assert gate.locked()
        gate.release()
        async with gate:
            assert gate.locked()
        assert not gate.locked()
    assert free_permits(gate) == 1


async def test_async_with_releases_on_error(anyio_backend: str) -> None:
    gate = Gate()
    with pytest.raises(RuntimeError):
        async with gate:
            raise RuntimeError("boom")
    assert not gate.locked()
    assert free_permits(gate) == 1


async def test_waiters_are_served_first_come_first_served(anyio_backend: str) -> None:
    gate = Gate()
    order: list[int] = []

    async def waiter(number: int, *, task_status: TaskStatus[None] = STARTED) -> None:
        task_status.started()
        async with gate:
            order.append(number)
            await anyio.lowlevel.checkpoint()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            gate.acquire_nowait()
            for number in range(8):
                await tg.start(waiter, number)
            assert order == []
            assert gate.locked()
            gate.release()
    assert order == list(range(8))
    assert not gate.locked()
    assert free_permits(gate) == 1


async def test_a_release_hands_the_permit_to_the_first_waiter(anyio_backend: str) -> None:
    """No barging: between the release and the waiter running, nobody else gets in."""
    gate = Gate()
    order: list[str] = []

    async def waiter(name: str, *, task_status: TaskStatus[None] = STARTED) -> None:
        task_status.started()
        async with gate:
            order.append(name)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            gate.acquire_nowait()
            await tg.start(waiter, "first")
            gate.release()  # the permit is now the first waiter's, though it has not run
            assert gate.locked()
            with pytest.raises(anyio.WouldBlock):
                gate.acquire_nowait()
            await tg.start(waiter, "newcomer")
    assert order == ["first", "newcomer"]
    assert free_permits(gate) == 1


async def test_locked_while_waiters_are_queued(anyio_backend: str) -> None:
    gate = Gate(2)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            gate.acquire_nowait()
            gate.acquire_nowait()

            async def waiter(*, task_status: TaskStatus[None] = STARTED) -> None:
                task_status.started()
                async with gate:
                    pass

            await tg.start(waiter)
            gate.release()  # straight to the waiter: still no free permit
            assert gate.locked()
            with pytest.raises(anyio.WouldBlock):
                gate.acquire_nowait()
            gate.release()
        assert not gate.locked()
    assert free_permits(gate) == 2


async def test_a_waiter_cancelled_before_its_turn_leaves_the_queue(anyio_backend: str) -> None:
    gate = Gate()
    order: list[str] = []
    scopes = {name: anyio.CancelScope() for name in "abc"}
    left = {name: anyio.Event() for name in "abc"}

    async def waiter(name: str, *, task_status: TaskStatus[None] = STARTED) -> None:
        try:
            with scopes[name]:
                task_status.started()
                async with gate:
                    order.append(name)
                    await anyio.lowlevel.checkpoint()
        finally:
            left[name].set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            gate.acquire_nowait()
            for name in "abc":
                await tg.start(waiter, name)
            scopes["b"].cancel()
            await left["b"].wait()  # b has run its cancellation before any release
            assert scopes["b"].cancelled_caught
            assert gate.locked()
            gate.release()
    assert order == ["a", "c"]
    assert free_permits(gate) == 1


@pytest.mark.parametrize("others", [0, 2], ids=["alone", "with-others-waiting"])
async def test_a_waiter_cancelled_as_it_is_granted_loses_no_permit(
    anyio_backend: str, others: int
) -> None:
    """An anyio cancel scope cancelled right after the release: the permit is not lost.

    Neither backend cancels a task whose wait has already been answered (anyio on asyncio
    defers the delivery, trio cannot abort a rescheduled task): the waiter enters and the
    cancellation hits its first checkpoint inside, and leaving the gate releases it.
    """
    gate = Gate()
    order: list[str] = []
    granted_scope = anyio.CancelScope()

    async def waiter(
        name: str, scope: anyio.CancelScope, *, task_status: TaskStatus[None] = STARTED
    ) -> None:
        with scope:
            task_status.started()
            async with gate:
                order.append(name)
                await anyio.lowlevel.checkpoint()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            gate.acquire_nowait()
            await tg.start(waiter, "granted", granted_scope)
            for number in range(others):
                await tg.start(waiter, f"other{number}", anyio.CancelScope())
            gate.release()  # the permit moves to the first waiter ...
            granted_scope.cancel()  # ... which is cancelled before it runs
    assert granted_scope.cancelled_caught
    assert [name for name in order if name != "granted"] == [
        f"other{number}" for number in range(others)
    ]
    assert not gate.locked()
    assert free_permits(gate) == 1


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("others", [0, 2], ids=["alone", "with-others-waiting"])
async def test_a_task_cancelled_after_its_grant_passes_the_permit_on(
    anyio_backend: str, others: int
) -> None:
    """asyncio-only: a plain ``Task.cancel()`` (asyncio.timeout, wait_for, a foreign caller)
    does land after the grant, as a CancelledError out of ``acquire``. The waiter must hand
    the permit on: to the next waiter, or back to the gate."""
    gate = Gate()
    order: list[str] = []

    async def waiter(name: str, *, task_status: TaskStatus[None] = STARTED) -> None:
        task_status.started()
        async with gate:
            order.append(name)
            await anyio.lowlevel.checkpoint()

    async def acquire_only() -> None:
        await gate.acquire()
        order.append("granted")  # never reached: cancelled before it resumes

    with anyio.fail_after(5):
        gate.acquire_nowait()
        task = asyncio.get_running_loop().create_task(acquire_only())
        await anyio.wait_all_tasks_blocked()  # the task is queued in the gate
        async with anyio.create_task_group() as tg:
            for number in range(others):
                await tg.start(waiter, f"other{number}")
            gate.release()  # the permit moves to the task ...
            task.cancel()  # ... which is cancelled before it runs
            with pytest.raises(asyncio.CancelledError):
                await task
    assert order == [f"other{number}" for number in range(others)]
    assert not gate.locked()
    assert free_permits(gate) == 1


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    value=st.integers(1, 4),
    holds=st.lists(st.integers(0, 3), min_size=1, max_size=8),
    cancelled=st.sets(st.integers(0, 7)),
    cancel_after_release=st.booleans(),
)
async def test_random_scenarios_keep_order_bound_and_count(
    anyio_backend: str,
    value: int,
    holds: list[int],
    cancelled: set[int],
    cancel_after_release: bool,
) -> None:
    """All permits taken, waiters queued in order, some cancelled (before or just after the
    releases). Never more than ``value`` inside, everyone not cancelled gets in, in queue
    order on asyncio, and the gate ends with exactly ``value`` permits."""
    gate = Gate(value)
    cancelled = {number for number in cancelled if number < len(holds)}
    scopes = [anyio.CancelScope() for _ in holds]
    order: list[int] = []
    active = 0
    most = 0

    async def waiter(number: int, *, task_status: TaskStatus[None] = STARTED) -> None:
        nonlocal active, most
        with scopes[number]:
            task_status.started()
            async with gate:
                order.append(number)
                active += 1
                most = max(most, active)
                try:
                    for _ in range(holds[number]):
                        await anyio.lowlevel.checkpoint()
                finally:
                    active -= 1

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for _ in range(value):
                gate.acquire_nowait()
            for number in range(len(holds)):
                await tg.start(waiter, number)
            if not cancel_after_release:
                for number in cancelled:
                    scopes[number].cancel()
            for _ in range(value):
                gate.release()
            if cancel_after_release:
                for number in cancelled:
                    scopes[number].cancel()

    kept = [number for number in range(len(holds)) if number not in cancelled]
    assert most <= value
    assert len(order) == len(set(order))
    assert set(kept) <= set(order)
    if not cancel_after_release:
        # Cancelled while still waiting: never inside. (Cancelled just after a grant, a
        # waiter may enter: see test_a_waiter_cancelled_as_it_is_granted_loses_no_permit.)
        assert not cancelled & set(order)
    if anyio_backend == "asyncio":
        assert order == sorted(order)
    # (trio runs the tasks granted in one batch in a random order: FIFO holds for the
    # grants, not necessarily for who appends first.)
    assert not gate.locked()
    assert free_permits(gate) == value


# ---------------------------------------------------------------------------------------
# Gate(on_free=...)


class FreeCounter:
    """An on_free hook that counts its calls and records whether the gate was free then."""

    def __init__(self) -> None:
        self.gate: Gate | None = None
        self.calls = 0
        self.locked_at_call: list[bool] = []

    def __call__(self) -> None:
        self.calls += 1
        assert self.gate is not None
        self.locked_at_call.append(self.gate.locked())


def gate_with_counter(value: int = 1) -> tuple[Gate, FreeCounter]:
    counter = FreeCounter()
    gate = Gate(value, on_free=counter)
    counter.gate = gate
    return gate, counter


async def test_on_free_is_called_when_a_release_frees_a_permit(anyio_backend: str) -> None:
    gate, counter = gate_with_counter()
    gate.acquire_nowait()
    assert counter.calls == 0
    gate.release()
    assert counter.calls == 1
    assert counter.locked_at_call == [False]  # called after the permit is back
    await gate.acquire()
    gate.release()
    assert counter.calls == 2
    async with gate:
        assert counter.calls == 2  # entering is not a release
    assert counter.calls == 3
    assert free_permits(gate) == 1  # free_permits releases what it takes: once more
    assert counter.calls == 4


async def test_on_free_for_each_permit_of_a_counting_gate(anyio_backend: str) -> None:
    gate, counter = gate_with_counter(3)
    for _ in range(3):
        gate.acquire_nowait()
    gate.release()  # one permit free, two still taken: a permit is free
    assert counter.calls == 1
    assert counter.locked_at_call == [False]
    gate.release()
    gate.release()
    assert counter.calls == 3


async def test_on_free_is_not_called_when_the_permit_goes_to_a_waiter(anyio_backend: str) -> None:
    gate, counter = gate_with_counter()
    order: list[str] = []

    async def waiter(name: str, *, task_status: TaskStatus[None] = STARTED) -> None:
        task_status.started()
        async with gate:
            order.append(name)
            assert counter.calls == 0
        order.append(f"{name} out")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            gate.acquire_nowait()
            await tg.start(waiter, "a")
            await tg.start(waiter, "b")
            gate.release()  # to a
            assert counter.calls == 0
    # a handed the permit to b (no call); b's release left it free (one call).
    assert order == ["a", "a out", "b", "b out"]
    assert counter.calls == 1
    assert counter.locked_at_call == [False]


async def test_on_free_after_a_queued_waiter_is_cancelled(anyio_backend: str) -> None:
    """A waiter that leaves the queue before its turn does not hold the permit back."""
    gate, counter = gate_with_counter()
    scope = anyio.CancelScope()
    left = anyio.Event()

    async def waiter(*, task_status: TaskStatus[None] = STARTED) -> None:
        try:
            with scope:
                task_status.started()
                await gate.acquire()
                raise AssertionError("never granted")
        finally:
            left.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            gate.acquire_nowait()
            await tg.start(waiter)
            scope.cancel()
            await left.wait()
            assert counter.calls == 0
            gate.release()  # nobody queued any more: the permit is free
            assert counter.calls == 1
    assert free_permits(gate) == 1


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("others", [0, 1], ids=["alone", "with-another-waiting"])
async def test_on_free_when_a_task_cancelled_after_its_grant_gives_the_permit_back(
    anyio_backend: str, others: int
) -> None:
    """asyncio-only (Task.cancel() after the grant): the permit passes to the next waiter
    (no call) or, with nobody queued, back to the gate (a call)."""
    gate, counter = gate_with_counter()

    async def acquire_only() -> None:
        await gate.acquire()

    async def waiter(*, task_status: TaskStatus[None] = STARTED) -> None:
        task_status.started()
        async with gate:
            assert counter.calls == 0

    with anyio.fail_after(5):
        gate.acquire_nowait()
        task = asyncio.get_running_loop().create_task(acquire_only())
        await anyio.wait_all_tasks_blocked()
        async with anyio.create_task_group() as tg:
            for _ in range(others):
                await tg.start(waiter)
            gate.release()  # to the task ...
            task.cancel()  # ... cancelled before it runs
            with pytest.raises(asyncio.CancelledError):
                await task
            if not others:
                assert counter.calls == 1
    assert counter.calls == 1
    assert counter.locked_at_call == [False]
    assert free_permits(gate) == 1


# ---------------------------------------------------------------------------------------
# Signal


def live_signal_timers() -> list[asyncio.TimerHandle]:
    """Signal's timers still scheduled on the asyncio loop (none once wait has returned)."""
    loop = asyncio.get_running_loop()
    return [
        handle
        for handle in loop._scheduled  # type: ignore[attr-defined]
        if not handle.cancelled() and handle._callback is _locks._set_if_pending
    ]


def assert_no_timer_left(anyio_backend: str) -> None:
    if anyio_backend == "asyncio":
        assert live_signal_timers() == []


async def test_signal_set_before_wait_returns_without_a_checkpoint(anyio_backend: str) -> None:
    signal = Signal()
    assert not signal.is_set()
    signal.set()
    assert signal.is_set()
    with anyio.CancelScope() as scope:
        scope.cancel()
        await signal.wait()
        await signal.wait(anyio.current_time() + 10)
        await signal.wait(anyio.current_time() - 10)  # a deadline passed: still at once
    assert not scope.cancelled_caught
    assert signal._waiter is None
    assert_no_timer_left(anyio_backend)


@pytest.mark.parametrize("deadline", [math.inf, 30.0], ids=["no-deadline", "deadline"])
async def test_signal_set_by_another_task_wakes_the_waiter(
    anyio_backend: str, deadline: float
) -> None:
    signal = Signal()
    woken = anyio.Event()

    async def waiter(*, task_status: TaskStatus[None] = STARTED) -> None:
        task_status.started()
        limit = deadline if deadline == math.inf else anyio.current_time() + deadline
        await signal.wait(limit)
        woken.set()

    async def setter() -> None:
        signal.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(waiter)
            await anyio.wait_all_tasks_blocked()
            assert not woken.is_set()
            assert signal._waiter is not None
            tg.start_soon(setter)
            await woken.wait()
    assert signal.is_set()
    assert signal._waiter is None
    assert_no_timer_left(anyio_backend)


async def test_signal_wait_returns_at_its_deadline(anyio_backend: str) -> None:
    signal = Signal()
    with anyio.fail_after(5):
        started = anyio.current_time()
        await signal.wait(started + 0.05)
        returned = anyio.current_time()
    assert not signal.is_set()
    assert returned >= started + 0.05 - 0.01
    assert returned - started < 2.0
    assert signal._waiter is None
    assert_no_timer_left(anyio_backend)
    # A deadline already passed returns too (at the next turn of the loop).
    with anyio.fail_after(5):
        await signal.wait(anyio.current_time() - 1)
    assert not signal.is_set()
    # The signal is still usable: set later, a wait returns at once.
    signal.set()
    await signal.wait(anyio.current_time() + 30)
    assert signal.is_set()


async def test_signal_wait_can_be_cancelled(anyio_backend: str) -> None:
    """Cancellation is delivered while waiting, and no timer is left on the loop."""
    signal = Signal()
    scope = anyio.CancelScope()
    left = anyio.Event()
    outcome: list[str] = []

    async def waiter(*, task_status: TaskStatus[None] = STARTED) -> None:
        try:
            with scope:
                task_status.started()
                await signal.wait(anyio.current_time() + 30)
                outcome.append("returned")
        finally:
            left.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(waiter)
            await anyio.wait_all_tasks_blocked()
            if anyio_backend == "asyncio":
                assert len(live_signal_timers()) == 1
            scope.cancel()
            await left.wait()
    assert scope.cancelled_caught
    assert outcome == []
    assert not signal.is_set()
    assert signal._waiter is None
    assert_no_timer_left(anyio_backend)
    # Cancelled without a deadline too.
    with anyio.fail_after(5), anyio.move_on_after(0.02) as timeout:
        await signal.wait()
    assert timeout.cancelled_caught
    assert signal._waiter is None


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_signal_wait_cancelled_by_task_cancel(anyio_backend: str) -> None:
    """asyncio-only: a plain Task.cancel() (asyncio.timeout, wait_for) also ends the wait."""
    signal = Signal()
    task = asyncio.get_running_loop().create_task(signal.wait(anyio.current_time() + 30))
    with anyio.fail_after(5):
        await anyio.wait_all_tasks_blocked()
        assert len(live_signal_timers()) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert signal._waiter is None
    assert live_signal_timers() == []
    with pytest.raises(TimeoutError):  # and asyncio's own timeouts work around it
        async with asyncio.timeout(0.02):
            await signal.wait()
    assert live_signal_timers() == []


async def test_signal_set_twice_is_harmless(anyio_backend: str) -> None:
    signal = Signal()
    signal.set()
    signal.set()
    assert signal.is_set()
    await signal.wait()
    # Set twice while a task waits: it is woken once, and nothing fails.
    signal = Signal()
    woken = 0

    async def waiter(*, task_status: TaskStatus[None] = STARTED) -> None:
        nonlocal woken
        task_status.started()
        await signal.wait(anyio.current_time() + 30)
        woken += 1

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(waiter)
            await anyio.wait_all_tasks_blocked()
            signal.set()
            signal.set()
    assert woken == 1
    assert signal.is_set()
    assert_no_timer_left(anyio_backend)


async def test_signal_set_after_the_deadline_passed(anyio_backend: str) -> None:
    """Set after the wait gave up: no error, and the next wait returns at once."""
    signal = Signal()
    with anyio.fail_after(5):
        await signal.wait(anyio.current_time() + 0.01)
    assert not signal.is_set()
    signal.set()
    assert signal.is_set()
    with anyio.CancelScope() as scope:
        scope.cancel()
        await signal.wait(anyio.current_time() + 30)
    assert not scope.cancelled_caught
