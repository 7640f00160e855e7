"""Requests that come to a requestor: ``Association.receive_requests()``.

On a requestor association nobody reads unless a call waits for its response (see
``dicomio.association``), so a request the peer sends on its own (a Storage Commitment
result, PS3.4 J.3.3; a UPS event, CC.2.4; a C-STORE) waits in the socket. The iterator
here lends the caller's task as the reader: it reads like a call waiting for a response
(taking its turn under the read lock, or waiting while another task reads), each request
read is answered through the association's handlers, and the handler's ``Event`` comes out
of the ``async for``. It holds nothing between two steps, so leaving the loop in any way
leaves the association as it was.
"""

from __future__ import annotations

import math
import weakref
from collections import deque
from types import TracebackType
from typing import TYPE_CHECKING

from dicomio import errors
from dicomio._locks import Signal

if TYPE_CHECKING:
    from dicomio.association import Association
    from dicomio.events import Event

__all__ = ["IncomingRequests"]


class IncomingRequests:
    """The requests answered on one association, as handler events, while iterated.

    Made by ``Association.receive_requests(timeout=...)``; see there. Every request whose
    handler has run and answered from the moment this was made is yielded, whichever task
    read it (another task's ``send_*`` may be reading when it comes).
    """

    __slots__ = ("__weakref__", "_assoc", "_closed", "_events", "_signal", "_timeout")

    def __init__(self, assoc: Association, timeout: float | None) -> None:
        self._assoc = assoc
        self._timeout = timeout
        self._events: deque[Event] = deque()
        self._signal: Signal | None = None
        self._closed = False
        receivers = assoc._receivers
        if receivers is None:
            receivers = assoc._receivers = weakref.WeakSet()
        receivers.add(self)

    def deliver(self, event: Event) -> None:
        """A request was answered (called by the association)."""
        self._events.append(event)
        self.wake()

    def wake(self) -> None:
        """Look again: the read lock is free or the association ended."""
        if self._signal is not None:
            self._signal.set()

    def close(self) -> None:
        """Stop collecting requests; further iteration ends at once."""
        self._closed = True
        if self._assoc._receivers is not None:
            self._assoc._receivers.discard(self)

    def __aiter__(self) -> IncomingRequests:
        return self

    async def __aenter__(self) -> IncomingRequests:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __anext__(self) -> Event:
        if self._closed:
            raise StopAsyncIteration
        assoc, timeout = self._assoc, self._timeout
        limit = math.inf if timeout is None else assoc._now() + timeout
        while not self._events:
            failure = assoc._failure
            if failure is not None:
                self.close()
                if isinstance(failure, errors.AssociationReleased):
                    raise StopAsyncIteration
                raise failure
            if (assoc._background_reader and not assoc._reader_busy) or assoc._read_lock.locked():
                # Another task reads: it answers what comes and tells us, or wakes us to
                # read next when it stops (Association._wake_follower).
                signal = self._signal = Signal()
                try:
                    await signal.wait(limit)
                finally:
                    self._signal = None
            else:
                async with assoc._read_lock:
                    await assoc._read_once(None if timeout is None else limit)
                # Handlers run once the read lock is free: one may make requests itself.
                await assoc._run_incoming_inline()
            if not self._events and assoc._now() >= limit:
                if not assoc._read_lock.locked():
                    assoc._wake_follower()  # we may have been picked to read next
                raise errors.DIMSETimeout(f"no request from the peer within {timeout} s")
        return self._events.popleft()
