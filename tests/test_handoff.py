"""The fan-out's answer queue (``dicomio._handoff``): order, bound, batches, endings."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from dicomio._handoff import Handoff

pytestmark = pytest.mark.anyio


async def test_items_come_in_order_and_end_after_close_sending() -> None:
    queue: Handoff[int] = Handoff(4)
    for i in range(3):
        queue.put_nowait(i)
    queue.close_sending()
    assert [await queue.get() for _ in range(3)] == [0, 1, 2]
    with pytest.raises(anyio.EndOfStream):
        await queue.get()
    with pytest.raises(anyio.ClosedResourceError):
        queue.put_nowait(9)


async def test_producers_wait_when_full_and_are_admitted_in_batches() -> None:
    queue: Handoff[tuple[int, int]] = Handoff(4)
    done: list[int] = []

    async def producer(n: int) -> None:
        for i in range(5):
            await queue.put((n, i))
        done.append(n)

    got: list[tuple[int, int]] = []
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for n in range(3):
                tg.start_soon(producer, n)
            await anyio.wait_all_tasks_blocked()
            # Full: four queued, each of the three producers waiting with one item.
            assert len(queue) == 4
            assert not done
            got.append(queue.get_nowait())
            assert len(queue) == 3  # above half: nobody admitted yet
            got.append(queue.get_nowait())
            # Down to half: waiting items admitted while they fit, first come first.
            assert len(queue) == 4
            while len(got) < 15:
                got.append(await queue.get())
                assert len(queue) <= 4
    assert sorted(got) == [(n, i) for n in range(3) for i in range(5)]
    for n in range(3):  # each producer's items in its order
        assert [i for m, i in got if m == n] == list(range(5))


async def test_size_zero_hands_over_only_to_a_waiting_consumer() -> None:
    queue: Handoff[str] = Handoff(0)
    with pytest.raises(anyio.WouldBlock):
        queue.put_nowait("early")
    got: list[str] = []

    async def consumer() -> None:
        got.append(await queue.get())
        got.append(await queue.get())

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consumer)
            await anyio.wait_all_tasks_blocked()
            queue.put_nowait("a")
            with pytest.raises(anyio.WouldBlock):
                queue.put_nowait("b")  # taken only once the consumer waits again
            await queue.put("b")
    assert got == ["a", "b"]


async def test_a_cancelled_producer_leaves_no_item_behind() -> None:
    queue: Handoff[int] = Handoff(1)
    queue.put_nowait(1)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(queue.put, 2)
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
    assert queue.get_nowait() == 1
    with pytest.raises(anyio.WouldBlock):
        queue.get_nowait()


async def test_close_fails_waiting_producers() -> None:
    queue: Handoff[int] = Handoff(1)
    queue.put_nowait(1)
    failures: list[BaseException] = []

    async def producer() -> None:
        try:
            await queue.put(2)
        except anyio.BrokenResourceError as exc:
            failures.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(producer)
            await anyio.wait_all_tasks_blocked()
            queue.close()
    assert len(failures) == 1
    with pytest.raises(anyio.ClosedResourceError):
        queue.get_nowait()
