"""Associations kept open per peer and lent out: the pool behind fan-out (issue #15).

Opening an association costs a TCP (and maybe TLS) handshake and an A-ASSOCIATE
round trip (PS3.8 7.1); a client that sends many requests to the same peers should pay
that once per peer, not once per request. ``AssociationPool`` keeps established
associations per ``Peer`` and lends each to one borrower at a time::

    async with AssociationPool(ae, max_per_peer=4) as pool:
        async with pool.association(peer) as assoc:
            await assoc.send_c_echo()

Theory of operation.

- Slots. Every association of a peer, whether being opened, lent, idle or being closed,
  holds one slot of that peer and one of the pool. A slot is freed only once its
  connection is closed, so the peer never sees more than ``max_associations`` of ours at
  once, nor all peers together more than ``max_total``.
- Borrowing. A borrower takes the peer's most recently returned idle association (LIFO:
  the warmest connection, and the cold ones age out), else a free slot in which it opens a
  new one, else it waits. Waiters are served first come first served, across all peers,
  by ``_dispatch``, which hands an idle association or a slot straight to the waiter
  (no barging). When only the pool's total limit stops a waiter, the idle association
  that has waited longest, of another peer, is released to make room. Opening and
  closing run in the borrower's own task, outside any bookkeeping, so a slow peer delays
  nobody else.
- Returning. A borrower that leaves its block normally returns the association, if it is
  still established and has no request outstanding, for the next borrower (one left with
  a C-FIND unfinished is released instead: its peer is still answering). A borrower that
  leaves with an exception (an association failure, a DIMSE timeout, a cancellation,
  anything) aborts it (PS3.8 7.3, shielded and bounded): the association may be in the
  middle of an operation, and a half-used association is never lent again. Non-success
  DIMSE statuses are values, not exceptions (``dicomio.status``), so they return it as
  success does.
- Replacing. An idle association is lent only if it is still established and nothing
  arrived on it while it was idle. A requestor reads only while it waits for responses,
  so a peer's A-ABORT, A-RELEASE-RQ or closed connection on an idle association waits
  unread; the pool looks at what is buffered, aborts such an association and opens a
  replacement in the same slot. A peer that ends one between that look and the first
  request still fails that request: no pool can make that transparent.
- Idle release. Associations idle for ``idle_timeout`` seconds are released (A-RELEASE,
  PS3.8 7.2) by ``reap()``, which a task of the pool calls when the oldest one expires.
- Limits of the window. Each lent association keeps its own negotiated asynchronous
  operations window (PS3.7 D.3.3.3): a borrower may run several requests at once on it,
  up to that window, and the pool lends it to nobody else meanwhile.

All bookkeeping is synchronous (no await between a check and its update), so the pool
needs no lock: one event loop runs it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import ssl
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import attrs

from dicomio.association import Association
from dicomio.presentation import PresentationContext

if TYPE_CHECKING:
    from dicomio.ae import AE
    from dicomio.events import HandlerList

__all__ = ["AssociationPool", "Peer", "PeerStatistics", "PoolStatistics"]

_log = logging.getLogger("dicomio.pool")


def _to_contexts(
    contexts: Sequence[PresentationContext] | None,
) -> tuple[PresentationContext, ...] | None:
    return None if contexts is None else tuple(contexts)


def _check_limit(instance: Any, attribute: Any, value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{attribute.name} must be at least 1, not {value}")


def _stripped(ae_title: str) -> str:
    return ae_title.strip()


def _uses_tls(ssl_context: ssl.SSLContext | None) -> bool:
    return ssl_context is not None


def _default_name(peer: Peer) -> str:
    return f"{peer.ae_title}@{peer.host}:{peer.port}"


@attrs.frozen(kw_only=True)
class Peer:
    """A remote AE the pool opens associations to: who, where, with which contexts.

    ``contexts`` None proposes the AE's requested contexts. ``ssl_context`` makes the
    associations TLS (PS3.15 B.1) with the server's certificate checked against ``host``;
    equality looks only at whether there is one, so equal peers share the pool's
    associations even if each was given its own (equivalent) context, and a TLS peer never
    gets a plain association or the other way round. ``max_associations`` overrides the pool's
    ``max_per_peer`` for this peer. ``ext_neg`` are extended negotiation items to propose
    (PS3.7 D.3.3: SCP/SCU role selection, which a C-GET SCU needs for the storage classes it
    receives). ``name`` is for display: logs and statistics.
    """

    ae_title: str = attrs.field(converter=_stripped)
    host: str
    port: int
    contexts: tuple[PresentationContext, ...] | None = attrs.field(
        default=None, converter=_to_contexts
    )
    ssl_context: ssl.SSLContext | None = attrs.field(default=None, eq=_uses_tls, repr=False)
    max_associations: int | None = attrs.field(default=None, validator=_check_limit)
    ext_neg: tuple[Any, ...] = attrs.field(default=(), converter=tuple)
    name: str = attrs.field(
        default=attrs.Factory(_default_name, takes_self=True), eq=False, repr=False
    )

    def __str__(self) -> str:
        return self.name


@attrs.frozen(kw_only=True)
class PeerStatistics:
    """A snapshot of one peer's associations and of what the pool did with them.

    ``opened``, ``reused``, ``closed``, ``failed_opens`` and ``replaced`` (idle ones found
    ended by the peer) count since the pool started; ``in_use``, ``idle``, ``opening``
    and ``waiting`` (borrowers) are the state at the moment of the snapshot.
    """

    peer: Peer
    opened: int
    reused: int
    closed: int
    failed_opens: int
    replaced: int
    in_use: int
    idle: int
    opening: int
    waiting: int

    def __str__(self) -> str:
        """One line for a log: the peer and every counter."""
        return (
            f"{self.peer.name} in_use={self.in_use} idle={self.idle} opening={self.opening} "
            f"waiting={self.waiting} opened={self.opened} reused={self.reused} "
            f"closed={self.closed} replaced={self.replaced} failed_opens={self.failed_opens}"
        )


@attrs.frozen(kw_only=True)
class PoolStatistics:
    """A snapshot of the whole pool: ``associations`` open (or opening, or closing) in
    all, and each peer's ``PeerStatistics``."""

    associations: int
    peers: Mapping[Peer, PeerStatistics]


class _PeerState:
    """The pool's bookkeeping for one peer (owned by the pool, touched only synchronously)."""

    __slots__ = (
        "borrowed",
        "closed",
        "failed_opens",
        "idle",
        "limit",
        "opened",
        "opening",
        "peer",
        "replaced",
        "reused",
        "slots",
        "waiting",
    )

    def __init__(self, peer: Peer, limit: int) -> None:
        self.peer = peer
        self.limit = limit
        #: Associations opening, lent, idle or closing: each holds a slot until closed.
        self.slots = 0
        #: (association, when it went idle), most recently returned last.
        self.idle: list[tuple[Association, float]] = []
        self.borrowed: set[Association] = set()
        self.opening = 0
        self.waiting = 0
        self.opened = 0
        self.reused = 0
        self.closed = 0
        self.failed_opens = 0
        self.replaced = 0

    def snapshot(self) -> PeerStatistics:
        return PeerStatistics(
            peer=self.peer,
            opened=self.opened,
            reused=self.reused,
            closed=self.closed,
            failed_opens=self.failed_opens,
            replaced=self.replaced,
            in_use=len(self.borrowed),
            idle=len(self.idle),
            opening=self.opening,
            waiting=self.waiting,
        )


class _Closed:
    """The grant a waiter gets when the pool closes under it."""


_CLOSED = _Closed()


@attrs.define
class _Slot:
    """The grant of a slot: open an association in it, after closing ``replacing`` (ours,
    found ended) or ``evict`` (another peer's idle one, to stay within the pool's limit)."""

    evict: tuple[_PeerState, Association] | None = None
    replacing: Association | None = None


class _Waiter:
    __slots__ = ("event", "grant", "state")

    def __init__(self, state: _PeerState) -> None:
        self.state = state
        #: Made when the waiter has to wait: most borrowers are granted at once.
        self.event: anyio.Event | None = None
        self.grant: Association | _Slot | _Closed | None = None


class AssociationPool:
    """Established associations per ``Peer``, lent one borrower at a time (see the module).

    ``max_per_peer`` bounds the associations to each peer (a ``Peer`` may say otherwise),
    ``max_total`` those to all peers together (None: no bound but the peers'),
    ``idle_timeout`` how long, in seconds, an unused one stays open (None: until the pool
    closes). ``evt_handlers`` are bound to every association it opens (an
    ``EVT_C_STORE`` handler receives C-GET sub-operations). Use it as ``async with AssociationPool(ae) as pool:``; leaving the block
    releases the idle associations and aborts those still lent.
    """

    def __init__(
        self,
        ae: AE,
        *,
        max_per_peer: int = 4,
        max_total: int | None = None,
        idle_timeout: float | None = 30.0,
        evt_handlers: HandlerList | None = None,
    ) -> None:
        if max_per_peer < 1:
            raise ValueError(f"max_per_peer must be at least 1, not {max_per_peer}")
        if max_total is not None and max_total < 1:
            raise ValueError(f"max_total must be at least 1, not {max_total}")
        if idle_timeout is not None and idle_timeout < 0:
            raise ValueError(f"idle_timeout must not be negative, not {idle_timeout}")
        self.ae = ae
        self.max_per_peer = max_per_peer
        self.max_total = math.inf if max_total is None else max_total
        self.idle_timeout = idle_timeout
        self.evt_handlers = evt_handlers
        self._peers: dict[Peer, _PeerState] = {}
        self._total = 0
        self._waiters: deque[_Waiter] = deque()
        self._tg: anyio.abc.TaskGroup | None = None
        self._closed = False
        #: Set when an association goes idle, so that the reaper looks at its deadline.
        self._idle_changed: anyio.Event | None = None

    # -- the pool's life ---------------------------------------------------------------------

    async def __aenter__(self) -> AssociationPool:
        if self._tg is not None or self._closed:
            raise RuntimeError("an AssociationPool can be entered once")
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        if self.idle_timeout is not None:
            self._tg.start_soon(self._reap_when_due)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._tg is not None
        try:
            with anyio.CancelScope(shield=True):
                # After a failure or a cancellation, nobody waits for A-RELEASE round trips.
                await self.aclose(release=exc_type is None)
        finally:
            self._tg.cancel_scope.cancel()
            await self._tg.__aexit__(None, None, None)

    async def aclose(self, *, release: bool = True) -> None:
        """Close the pool: waiting borrowers fail, idle associations are released (aborted
        if not ``release``) and lent ones aborted (their borrowers see
        ``AssociationAborted``)."""
        if self._closed:
            return
        self._closed = True
        self._dispatch()  # every waiter gets the news
        idle: list[tuple[_PeerState, Association]] = []
        for state in self._peers.values():
            idle.extend((state, assoc) for assoc, _ in state.idle)
            state.idle.clear()
            for assoc in list(state.borrowed):
                await assoc.abort()
        if not release:
            for _, assoc in idle:
                await assoc.abort()
        async with anyio.create_task_group() as tg:
            for state, assoc in idle:
                tg.start_soon(self._close, state, assoc)

    # -- borrowing ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def association(self, peer: Peer) -> AsyncIterator[Association]:
        """Borrow an established association to ``peer`` for the ``async with`` block.

        Raises what ``AE.associate`` raises when a new one cannot be opened
        (``ConnectionRefused``, ``AssociationRejected``, ``TimeoutError`` ...), and
        ``RuntimeError`` if the pool is closed. Leaving the block with an exception aborts
        the association instead of returning it (see the module's notes). A task that
        borrows twice from a peer at once may wait for itself: count it in the limit.
        """
        if self._tg is None:
            raise RuntimeError("use the pool as `async with AssociationPool(ae) as pool:`")
        state = self._state(peer)
        assoc = await self._acquire(state)
        try:
            yield assoc
        except BaseException:
            await self._discard(state, assoc)
            raise
        await self._give_back(state, assoc)

    def statistics(self) -> PoolStatistics:
        """The pool's counters and state now, per peer."""
        return PoolStatistics(
            associations=self._total,
            peers=MappingProxyType(
                {peer: state.snapshot() for peer, state in self._peers.items()}
            ),
        )

    def peer_statistics(self, peer: Peer) -> PeerStatistics:
        """One peer's counters and state now (zeros for a peer never borrowed)."""
        return self._state(peer).snapshot()

    def _state(self, peer: Peer) -> _PeerState:
        state = self._peers.get(peer)
        if state is None:
            limit = peer.max_associations or self.max_per_peer
            state = self._peers[peer] = _PeerState(peer, limit)
        return state

    async def _acquire(self, state: _PeerState) -> Association:
        grant = await self._wait_for_grant(state)
        if isinstance(grant, Association):
            if grant.is_usable and not grant.has_unread_input():
                state.reused += 1
                state.borrowed.add(grant)
                return grant
            # Ended by the peer while idle: abort it, open its replacement in its slot.
            _log.info("%s: idle association ended by the peer; replacing it", state.peer)
            state.replaced += 1
            grant = _Slot(replacing=grant)
        state.opening += 1
        try:
            if grant.replacing is not None:
                await grant.replacing.abort()
                state.closed += 1
            if grant.evict is not None:
                other, evicted = grant.evict
                try:
                    await _release_or_abort(evicted)
                finally:
                    # Its slot was counted for both peers (see _grant_for): now for us only.
                    other.closed += 1
                    other.slots -= 1
                    self._total -= 1
            assoc = await self._open(state.peer)
        except BaseException as exc:
            if not isinstance(exc, anyio.get_cancelled_exc_class()):
                state.failed_opens += 1
            state.opening -= 1
            self._free_slot(state)
            raise
        state.opening -= 1
        state.opened += 1
        _log.debug("opened an association: %s", state.snapshot())
        if self._closed:
            await assoc.abort()
            state.closed += 1
            self._free_slot(state)
            raise RuntimeError("the association pool is closed")
        state.borrowed.add(assoc)
        return assoc

    async def _open(self, peer: Peer) -> Association:
        """A new association to ``peer`` (PS3.8 7.1), in a slot already taken."""
        return await self.ae.associate(
            peer.host,
            peer.port,
            ae_title=peer.ae_title,
            contexts=peer.contexts,
            ssl_context=peer.ssl_context,
            ext_neg=peer.ext_neg or None,
            evt_handlers=self.evt_handlers,
        )

    async def _wait_for_grant(self, state: _PeerState) -> Association | _Slot:
        if self._closed:
            raise RuntimeError("the association pool is closed")
        waiter = _Waiter(state)
        self._waiters.append(waiter)
        state.waiting += 1
        self._dispatch()
        if waiter.grant is None:
            waiter.event = anyio.Event()
            try:
                await waiter.event.wait()
            except BaseException:
                if waiter.grant is None:
                    self._waiters.remove(waiter)
                    state.waiting -= 1
                elif isinstance(waiter.grant, Association):
                    self._put_idle(state, waiter.grant, idle_since=None)
                    self._dispatch()
                elif isinstance(waiter.grant, _Slot):
                    self._return_slot(state, waiter.grant)
                raise
        grant = waiter.grant
        if isinstance(grant, _Closed):
            raise RuntimeError("the association pool is closed")
        assert grant is not None
        return grant

    def _dispatch(self) -> None:
        """Serve waiters in arrival order with what is free now (see the module's notes)."""
        if not self._waiters:
            return
        kept: deque[_Waiter] = deque()
        for waiter in self._waiters:
            grant = self._grant_for(waiter.state)
            if grant is None:
                kept.append(waiter)
                continue
            waiter.grant = grant
            waiter.state.waiting -= 1
            if waiter.event is not None:
                waiter.event.set()
        self._waiters = kept

    def _grant_for(self, state: _PeerState) -> Association | _Slot | _Closed | None:
        if self._closed:
            return _CLOSED
        if state.idle:
            return state.idle.pop()[0]
        if state.slots >= state.limit:
            return None
        if self._total < self.max_total:
            state.slots += 1
            self._total += 1
            return _Slot()
        # Only the pool's limit stops us: make room by closing another peer's oldest idle one.
        oldest: tuple[float, _PeerState] | None = None
        for other in self._peers.values():
            if other is not state and other.idle:
                since = other.idle[0][1]
                if oldest is None or since < oldest[0]:
                    oldest = (since, other)
        if oldest is None:
            return None
        other = oldest[1]
        evicted = other.idle.pop(0)[0]
        # Counted for both peers until it is closed; _acquire then gives its slot back.
        state.slots += 1
        self._total += 1
        return _Slot(evict=(other, evicted))

    def _return_slot(self, state: _PeerState, slot: _Slot) -> None:
        """A granted slot not used (its waiter was cancelled): free it, and the evictee's."""
        if slot.evict is not None:
            other, evicted = slot.evict
            self._put_idle(other, evicted, idle_since=None)
        self._free_slot(state)

    def _free_slot(self, state: _PeerState) -> None:
        state.slots -= 1
        self._total -= 1
        self._dispatch()

    def _put_idle(self, state: _PeerState, assoc: Association, idle_since: float | None) -> None:
        entry = (assoc, anyio.current_time() if idle_since is None else idle_since)
        state.idle.append(entry)
        if self._idle_changed is not None:
            self._idle_changed.set()

    # -- returning ---------------------------------------------------------------------------

    async def _give_back(self, state: _PeerState, assoc: Association) -> None:
        """A borrower is done with ``assoc`` without an error: lend it again if it can be.

        Not if it ended in the block, nor if requests on it are still outstanding (a
        C-FIND left early waits for its final response): the peer is still answering
        those, so it is released instead (the release reads past them, PS3.8 7.2).
        """
        state.borrowed.discard(assoc)
        if self._closed or not assoc.is_usable or assoc.outstanding_requests:
            await self._close(state, assoc)
            return
        self._put_idle(state, assoc, idle_since=None)
        self._dispatch()

    async def _discard(self, state: _PeerState, assoc: Association) -> None:
        """Abort ``assoc`` (shielded, about a second at most) and free its slot."""
        state.borrowed.discard(assoc)
        try:
            await assoc.abort()
        finally:
            state.closed += 1
            self._free_slot(state)

    async def _close(self, state: _PeerState, assoc: Association) -> None:
        """End ``assoc`` gracefully if it is still up, and free its slot."""
        try:
            await _release_or_abort(assoc)
        finally:
            state.closed += 1
            self._free_slot(state)

    # -- idle release ------------------------------------------------------------------------

    async def reap(self, now: float | None = None) -> int:
        """Release the associations idle for ``idle_timeout`` seconds at ``now`` (the event
        loop's clock, ``anyio.current_time()``, by default); how many it released."""
        if self.idle_timeout is None:
            return 0
        if now is None:
            now = anyio.current_time()
        expired: list[tuple[_PeerState, Association]] = []
        for state in self._peers.values():
            if not state.idle:
                continue
            keep = [(a, since) for a, since in state.idle if now - since < self.idle_timeout]
            expired.extend(
                (state, a) for a, since in state.idle if now - since >= self.idle_timeout
            )
            state.idle[:] = keep
        if expired:
            _log.debug("releasing %d idle associations", len(expired))
            async with anyio.create_task_group() as tg:
                for state, assoc in expired:
                    tg.start_soon(self._close, state, assoc)
        return len(expired)

    async def _reap_when_due(self) -> None:
        """The pool's one task: sleep until the oldest idle association expires, reap."""
        assert self.idle_timeout is not None
        while True:
            self._idle_changed = anyio.Event()
            oldest = min(
                (state.idle[0][1] for state in self._peers.values() if state.idle),
                default=None,
            )
            if oldest is None:
                await self._idle_changed.wait()
                continue
            await anyio.sleep_until(oldest + self.idle_timeout)
            await self.reap()


async def _release_or_abort(assoc: Association) -> None:
    """A-RELEASE if the association is still up (bounded by its ACSE timeout), else make
    sure it is closed; a cancellation meanwhile aborts it."""
    try:
        if assoc.is_established and not (assoc.is_released or assoc.is_aborted):
            await assoc.release()
        else:
            await assoc.abort()
    except BaseException:
        await assoc.abort()
        raise
