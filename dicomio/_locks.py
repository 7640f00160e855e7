"""Lock helpers shared by the association's halves."""

from __future__ import annotations

import anyio

__all__ = ["Held"]


class Held:
    """``async with Held(lock)``: take an uncontended lock without a trip through the loop.

    anyio's ``acquire()`` checks for cancellation even when the lock is free; on the C-ECHO
    path that is four checkpoints per message. ``acquire_nowait()`` costs none, and a
    contended lock still waits, in FIFO order, as usual.
    """

    __slots__ = ("_lock",)

    def __init__(self, lock: anyio.Lock | anyio.Semaphore) -> None:
        self._lock = lock

    async def __aenter__(self) -> None:
        try:
            self._lock.acquire_nowait()
        except anyio.WouldBlock:
            await self._lock.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()
