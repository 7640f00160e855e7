"""A bounded queue from many producer tasks to one consumer, cheap per item: the fan-out's
answers travel through it (``dicomio.fanout``).

anyio's memory object stream does the same job, but it passes one item per trip through
the event loop once its buffer is full: each item the consumer takes admits one waiting
sender's item and wakes that sender, which hands over its next item, finds the buffer full
again and waits again. A fan-out's peers answer together (the responses to a C-FIND come in
one read), so with a hundred peers most answers went through that wait: about three task
wake-ups per answer.

``Handoff`` keeps the bound (``size`` items queued, plus the one item each waiting producer
holds) and the first-come order of the waiting producers, but admits them in batches: a
producer that finds the buffer full waits with its item; once the consumer has taken the
buffer down to half, every waiting producer whose item fits is admitted at once (its item
queued, the producer woken), and a producer that runs while there is room queues its next
items without waiting. The consumer takes what is queued without a trip through the loop
(``get_nowait``) and waits only when nothing is.

One event loop runs all of it: every method is synchronous between awaits, so no lock.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

import anyio

from dicomio._locks import Signal

__all__ = ["Handoff"]

_T = TypeVar("_T")


class Handoff(Generic[_T]):
    """Up to ``size`` items from producers (``put``) to one consumer (``get``), in order.

    ``size`` 0 is a rendezvous: a producer's item is taken only by a consumer waiting for
    it. ``close_sending()`` says no more items will come (the consumer's ``get`` raises
    ``EndOfStream`` once the queue is empty); ``close()`` that nobody will take them
    (producers' ``put`` raises ``BrokenResourceError``).
    """

    __slots__ = ("_closed", "_items", "_low", "_receiver", "_senders", "_sending_closed", "_size")

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"size must not be negative, not {size}")
        self._size = size
        #: Waiting producers are admitted once the queue is down to this many items.
        self._low = size // 2
        self._items: deque[_T] = deque()
        #: Producers waiting for room, first come first, each with its item.
        self._senders: deque[tuple[Signal, _T]] = deque()
        #: The consumer, waiting for an item (only while the queue is empty).
        self._receiver: Signal | None = None
        self._sending_closed = False
        self._closed = False

    def __len__(self) -> int:
        """Items queued (not counting those waiting producers hold)."""
        return len(self._items)

    # -- producers ------------------------------------------------------------------------------

    def put_nowait(self, item: _T) -> None:
        """Queue ``item`` if there is room (or the consumer waits); else ``WouldBlock``."""
        if self._closed:
            raise anyio.BrokenResourceError
        if self._sending_closed:
            raise anyio.ClosedResourceError
        receiver = self._receiver
        if receiver is not None:
            self._receiver = None
            self._items.append(item)
            receiver.set()
            return
        if len(self._items) < self._size:
            self._items.append(item)
            return
        raise anyio.WouldBlock

    async def put(self, item: _T) -> None:
        """Queue ``item``, waiting while the queue is full. Not a checkpoint if there is room."""
        try:
            self.put_nowait(item)
            return
        except anyio.WouldBlock:
            pass
        entry = (Signal(), item)
        self._senders.append(entry)
        try:
            await entry[0].wait()
        except BaseException:
            if not entry[0].is_set():
                self._senders.remove(entry)
            raise
        if self._closed:
            raise anyio.BrokenResourceError

    def close_sending(self) -> None:
        """No more items: the consumer gets ``EndOfStream`` once it has taken those queued."""
        self._sending_closed = True
        self._wake_receiver()

    # -- the consumer ---------------------------------------------------------------------------

    def get_nowait(self) -> _T:
        """The next item; ``WouldBlock`` if none is queued, ``EndOfStream`` after the last."""
        if self._closed:
            raise anyio.ClosedResourceError
        items = self._items
        if items:
            item = items.popleft()
            if self._senders and len(items) <= self._low:
                self._admit()
            return item
        if self._senders:  # size 0: take the first waiting producer's item from its hand
            signal, item = self._senders.popleft()
            signal.set()
            return item
        if self._sending_closed:
            raise anyio.EndOfStream
        raise anyio.WouldBlock

    async def get(self) -> _T:
        """The next item, waiting for one; ``EndOfStream`` once all are taken and no more
        will come. Not a checkpoint when an item is queued."""
        while True:
            try:
                return self.get_nowait()
            except anyio.WouldBlock:
                pass
            receiver = self._receiver = Signal()
            try:
                await receiver.wait()
            finally:
                if self._receiver is receiver:
                    self._receiver = None

    def close(self) -> None:
        """The consumer is gone: waiting producers (and later ones) get ``BrokenResourceError``."""
        self._closed = True
        self._sending_closed = True
        self._items.clear()
        senders, self._senders = self._senders, deque()
        for signal, _ in senders:
            signal.set()
        self._wake_receiver()

    def _admit(self) -> None:
        """Queue waiting producers' items, first come first, while they fit; wake them."""
        items, senders = self._items, self._senders
        while senders and len(items) < self._size:
            signal, item = senders.popleft()
            items.append(item)
            signal.set()

    def _wake_receiver(self) -> None:
        receiver, self._receiver = self._receiver, None
        if receiver is not None:
            receiver.set()
