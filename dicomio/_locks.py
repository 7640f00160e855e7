"""The association's locks: FIFO counting gates that cost nothing when uncontended.

anyio's ``Lock`` and ``Semaphore`` are right for general use, but they look up the current
task on every acquire and release (to know the owner), and a free ``acquire()`` still
checks for cancellation. An association takes three of them per DIMSE message, so on the
C-ECHO path that bookkeeping was a tenth of the client's CPU. A ``Gate`` has no owner:
whoever entered releases it, which is all the association needs.

A ``Signal`` is the wake-up of one waiting task, with a deadline. On asyncio it is a future
and, when there is a deadline, a loop timer: an anyio ``Event`` in an anyio ``CancelScope``
does the same for several times the cost, and an association with a window above 1 has a
task waiting like this for every outstanding request.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable

import anyio

from dicomio._transport import set_if_pending as _set_if_pending

__all__ = ["Gate", "Signal"]


class Gate:
    """A counting semaphore for tasks of one event loop, first come first served.

    ``async with gate:`` enters at once when a permit is free and nobody is queued (no
    checkpoint, no trip through the loop); otherwise the task waits in FIFO order and a
    release hands its permit straight to the first waiter.
    """

    __slots__ = ("_on_free", "_value", "_waiters")

    def __init__(self, value: int = 1, *, on_free: Callable[[], None] | None = None) -> None:
        """``on_free`` is called whenever a release leaves a permit free (nobody queued)."""
        if value < 1:
            raise ValueError("a gate needs at least one permit")
        self._value = value
        self._waiters: deque[anyio.Event] = deque()
        self._on_free = on_free

    def locked(self) -> bool:
        """Whether an ``acquire`` now would wait."""
        return self._value == 0 or bool(self._waiters)

    def acquire_nowait(self) -> None:
        if self._value == 0 or self._waiters:
            raise anyio.WouldBlock
        self._value -= 1

    async def acquire(self) -> None:
        if self._value and not self._waiters:
            self._value -= 1
            return
        granted = anyio.Event()
        self._waiters.append(granted)
        try:
            await granted.wait()
        except BaseException:
            if granted.is_set():
                self.release()  # the permit was handed to us as we were cancelled: pass it on
            else:
                self._waiters.remove(granted)
            raise

    def release(self) -> None:
        if self._waiters:
            self._waiters.popleft().set()  # the permit moves to the first waiter
        else:
            self._value += 1
            if self._on_free is not None:
                self._on_free()

    async def __aenter__(self) -> None:
        if self._value and not self._waiters:
            self._value -= 1
        else:
            await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()


class Signal:
    """A one-shot wake-up for one waiting task: ``set()`` by anyone, ``wait()`` by the task."""

    __slots__ = ("_is_set", "_waiter")

    def __init__(self) -> None:
        self._is_set = False
        self._waiter: asyncio.Future[None] | anyio.Event | None = None

    def is_set(self) -> bool:
        return self._is_set

    def set(self) -> None:
        if self._is_set:
            return
        self._is_set = True
        waiter = self._waiter
        if isinstance(waiter, asyncio.Future):
            _set_if_pending(waiter)
        elif waiter is not None:
            waiter.set()

    async def wait(self, deadline: float = math.inf) -> None:
        """Return once set, or once ``deadline`` (the loop's clock, ``anyio.current_time``)
        has passed, whichever comes first; the caller tells which by ``is_set()``.

        Not a checkpoint when already set. Cancellation is delivered as usual meanwhile.
        """
        if self._is_set:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # another backend (trio)
            event = self._waiter = anyio.Event()
            try:
                with anyio.CancelScope(deadline=deadline):
                    await event.wait()
            finally:
                self._waiter = None
            return
        future = self._waiter = loop.create_future()
        timer = None if deadline == math.inf else loop.call_at(deadline, _set_if_pending, future)
        try:
            await future
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
