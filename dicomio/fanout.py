"""One request to many peers at once, answers merged: fan-out over the pool (issue #15).

A tool that asks fifty archives "where are this patient's studies?" or pulls two thousand
studies from one needs the same things every time: a bound on what runs at once per peer,
deadlines, retries of what may succeed a moment later, and the answers of all peers as
one stream. ``FanOut`` does that over an ``AssociationPool``::

    async with AssociationPool(ae) as pool:
        async with fanout.find(pool, peers, query, model, timeout=10) as answers:
            async for peer, status, identifier in answers:
                ...
        for report in answers.reports.values():
            print(report)

Theory of operation.

- Jobs. A fan-out runs jobs: one request (C-ECHO, C-FIND, C-GET or C-MOVE) with one
  identifier on one peer, on an association borrowed from the pool. Each peer has one
  task, which runs its jobs ``per_peer`` at a time (bulk retrieve gives a peer many jobs;
  ``find`` gives each peer one), and at most ``max_peers`` peers run at once.
- Answers. Every response is an ``Answer(peer, status, identifier)``, in the order they
  arrive, through one bounded queue (``dicomio._handoff``): a consumer that reads slowly
  makes the peers' tasks wait to hand over their next answer, so they stop reading their
  sockets, TCP's window closes, and the peers slow down (memory stays at ``buffer``
  answers, plus one in the hand of each waiting peer). With
  ``dedupe``, a pending answer whose key (e.g. StudyInstanceUID) came already from any
  peer is dropped and counted. A final response is passed on once its job will not be
  retried.
- Retries. Only failures that may pass are retried, with exponential backoff and
  jitter (``Retry``): the connection refused or reset, A-ASSOCIATE-RJ rejected-transient
  (PS3.8 Table 9-21, result 2), and a final status of Refused: Out of Resources (A7xxH,
  PS3.4 C.4.1.1.4); never a permanent rejection, an abort, or a failure status. A job whose
  answers the consumer has already seen is not retried (the answers would come twice).
- Deadlines. ``peer_timeout`` bounds each peer from its start, ``timeout`` the whole
  fan-out. At a deadline the peer's associations in flight are aborted (PS3.8 7.3) rather
  than cancelled with C-CANCEL: a peer past its deadline is not trusted to answer one
  promptly. The same happens to every running peer when the fan-out is left early (a
  ``break``, an exception, a cancellation) or ``cancel()`` is called: the outcome then
  says cancelled. So leaving never waits on a peer.
- Outcomes. At the end ``reports`` holds a ``PeerReport`` per peer: the ``Outcome`` (ok,
  failed with the exception or the failure status, timed out, cancelled), counters and
  timings; each is also logged as one line of ``key=value`` pairs on ``dicomio.fanout``.

All bookkeeping is synchronous between awaits on one event loop, so it needs no lock.
"""

from __future__ import annotations

import enum
import logging
import random
from collections.abc import AsyncIterator, Callable, Collection, Hashable, Iterable, Sequence
from types import TracebackType
from typing import Any, NamedTuple

import anyio
import anyio.abc
import anyio.lowlevel
import attrs
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from dicomio import errors
from dicomio._handoff import Handoff
from dicomio.association import Association
from dicomio.pool import AssociationPool, Peer
from dicomio.status import PENDING_CODES, Category, category

__all__ = [
    "Answer",
    "FanOut",
    "Outcome",
    "PeerReport",
    "Progress",
    "Retry",
    "echo",
    "find",
    "get",
    "is_transient",
    "move",
]

_log = logging.getLogger("dicomio.fanout")

#: What a job does on a borrowed association: the responses to one request.
Operation = Callable[[Association, Dataset | None], AsyncIterator[tuple[Dataset, Dataset | None]]]

# Looked up by tag, not keyword: a keyword lookup costs a dictionary search in pydicom
# each time, and every response of every peer is looked at.
_STATUS = BaseTag(0x00000900)
#: Number of Remaining, Completed, Failed and Warning Sub-operations (PS3.7 C.4.2/C.4.3).
_SUBOPERATIONS = tuple(BaseTag(tag) for tag in (0x00001020, 0x00001021, 0x00001022, 0x00001023))
#: The default ``buffer`` is this many answers for each peer that may run at once. The
#: responses a peer sent are in memory already once read (one socket read, up to 256 KiB,
#: holds many), so a buffer smaller than one peer's batch would only make the peers' tasks
#: take turns handing them over; with a hundred peers answering together, a buffer of 16 in
#: all did (about one task wake-up per answer).
BUFFER_PER_PEER = 16
#: The consumer takes up to this many buffered answers in a row before yielding once.
_ANSWERS_PER_CHECKPOINT = 32


class Outcome(enum.Enum):
    """How a peer's part of a fan-out ended."""

    OK = "ok"
    FAILED = "failed"
    TIMED_OUT = "timed out"
    CANCELLED = "cancelled"


class Answer(NamedTuple):
    """One response of one peer: its status (the command's status elements, PS3.7 C) and
    identifier (None for a response without a data set)."""

    peer: Peer
    status: Dataset
    identifier: Dataset | None


@attrs.frozen(kw_only=True)
class Retry:
    """How transient failures are retried: up to ``attempts`` tries in all per job, waiting
    ``backoff`` seconds before the second, doubling each time up to ``max_backoff``, each
    wait shortened at random by up to ``jitter`` of itself (so that many clients refused
    together do not come back together)."""

    attempts: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    backoff: float = attrs.field(default=0.2, validator=attrs.validators.ge(0))
    max_backoff: float = attrs.field(default=5.0, validator=attrs.validators.ge(0))
    jitter: float = attrs.field(
        default=0.2, validator=[attrs.validators.ge(0), attrs.validators.le(1)]
    )

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first)."""
        base = min(self.max_backoff, self.backoff * 2 ** (retry - 1))
        return float(base * (1 - self.jitter * random.random()))


def is_transient(failure: BaseException | int) -> bool:
    """Whether a job that failed so (an exception, or a final status code) may succeed if
    tried again: see the module's notes."""
    if isinstance(failure, int):
        return 0xA700 <= failure <= 0xA7FF
    if isinstance(failure, errors.AssociationRejected):
        return failure.result == 2
    return isinstance(failure, (ConnectionRefusedError, ConnectionResetError))


@attrs.frozen(kw_only=True)
class Progress:
    """Sub-operations of a bulk retrieve (PS3.4 C.4.2.1.4), summed over its requests: the
    latest counts of those running and the final counts of those done."""

    requests: int
    requests_done: int
    remaining: int
    completed: int
    failed: int
    warning: int

    def __str__(self) -> str:
        return (
            f"{self.requests_done}/{self.requests} requests; sub-operations: "
            f"{self.completed} completed, {self.failed} failed, {self.warning} warning, "
            f"{self.remaining} remaining"
        )


@attrs.frozen(kw_only=True)
class PeerReport:
    """What one peer did in a fan-out, and how long it took.

    ``error`` is the exception that failed the peer (its first failed job's), None when it
    failed by a ``final_status`` of class Failure (``final_status`` is that of its last job
    to end). ``attempts`` counts requests tried, ``retries`` those that were retries;
    ``answers`` the responses passed on, ``matches`` those with an identifier,
    ``duplicates`` those dropped by ``dedupe``. Times are seconds: ``waited`` before the
    peer could start (``max_peers``), ``first_answer`` from its start to its first answer
    (None if none came), ``elapsed`` from its start to its end.
    """

    peer: Peer
    outcome: Outcome
    error: BaseException | None = None
    final_status: int | None = None
    requests: int = 0
    requests_done: int = 0
    attempts: int = 0
    retries: int = 0
    answers: int = 0
    matches: int = 0
    duplicates: int = 0
    waited: float = 0.0
    first_answer: float | None = None
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    def fields(self) -> dict[str, Any]:
        """The report as plain values (for a JSON line or a log record's ``extra``)."""
        return {
            "peer": self.peer.name,
            "outcome": self.outcome.value,
            "error": None if self.error is None else f"{type(self.error).__name__}: {self.error}",
            "final_status": self.final_status,
            "requests": self.requests,
            "requests_done": self.requests_done,
            "attempts": self.attempts,
            "retries": self.retries,
            "answers": self.answers,
            "matches": self.matches,
            "duplicates": self.duplicates,
            "waited": round(self.waited, 3),
            "first_answer": None if self.first_answer is None else round(self.first_answer, 3),
            "elapsed": round(self.elapsed, 3),
        }

    def __str__(self) -> str:
        """One log line: ``key=value`` pairs, the peer first."""
        parts = []
        for key, value in self.fields().items():
            if value is None:
                continue
            if key == "final_status":
                value = f"0x{value:04X}"
            text = str(value)
            parts.append(f"{key}={text!r}" if " " in text or not text else f"{key}={text}")
        return " ".join(parts)


class _Run:
    """One peer's part: its jobs, what is in flight, its counters (owned by the fan-out)."""

    def __init__(self, peer: Peer, items: Sequence[Dataset | None]) -> None:
        self.peer = peer
        self.items = items
        self.scope = anyio.CancelScope()
        self.in_flight: set[Association] = set()
        self.ending: Outcome | None = None
        self.errors: list[BaseException] = []
        self.final_status: int | None = None
        self.failed_status = False
        self.done = False
        self.requests_done = 0
        self.attempts = 0
        self.retries = 0
        self.answers = 0
        self.matches = 0
        self.duplicates = 0
        self.queued_at = 0.0
        self.started_at: float | None = None
        self.first_answer_at: float | None = None
        self.ended_at: float | None = None
        #: The latest sub-operation counts of each job, by its index in ``items``.
        self.counts: dict[int, tuple[int, int, int, int]] = {}
        self.report: PeerReport | None = None

    def outcome(self) -> tuple[Outcome, BaseException | None]:
        if self.ending is not None:
            return self.ending, None
        if self.errors:
            return Outcome.FAILED, self.errors[0]
        if self.failed_status:
            return Outcome.FAILED, None
        return Outcome.OK, None

    def make_report(self) -> PeerReport:
        outcome, error = self.outcome()
        now = anyio.current_time()
        start = self.started_at
        return PeerReport(
            peer=self.peer,
            outcome=outcome,
            error=error,
            final_status=self.final_status,
            requests=len(self.items),
            requests_done=self.requests_done,
            attempts=self.attempts,
            retries=self.retries,
            answers=self.answers,
            matches=self.matches,
            duplicates=self.duplicates,
            waited=(start if start is not None else now) - self.queued_at,
            first_answer=(
                None
                if self.first_answer_at is None or start is None
                else self.first_answer_at - start
            ),
            elapsed=0.0 if start is None else (self.ended_at or now) - start,
        )


def _dedupe_key(
    dedupe: str | Callable[[Dataset], Hashable] | None,
) -> Callable[[Dataset], Hashable] | None:
    if dedupe is None or callable(dedupe):
        return dedupe
    keyword = dedupe

    def key(identifier: Dataset) -> Hashable:
        value = identifier.get(keyword)
        return None if value in (None, "") else str(value)

    return key


class FanOut:
    """Runs ``operation`` for each (peer, item) job and merges the answers (see the module).

    Use as ``async with fan_out as answers: async for peer, status, identifier in answers``;
    ``reports`` (per peer) is complete once the block is left. ``jobs`` maps each peer to
    its items (identifiers; None for C-ECHO). Options: ``per_peer`` jobs at once per peer
    (the pool's limit also applies), ``max_peers`` peers at once (None: all),
    ``peer_timeout`` and ``timeout`` in seconds (None: none), ``retry`` (None: no retries),
    ``dedupe`` a keyword or a function giving a pending identifier's key (None when it has
    none), ``buffer`` answers held for the consumer (None: ``BUFFER_PER_PEER`` for each
    peer that may run at once).
    """

    def __init__(
        self,
        pool: AssociationPool,
        jobs: Iterable[tuple[Peer, Sequence[Dataset | None]]],
        operation: Operation,
        *,
        per_peer: int = 1,
        max_peers: int | None = None,
        peer_timeout: float | None = None,
        timeout: float | None = None,
        retry: Retry | None = Retry(),
        dedupe: str | Callable[[Dataset], Hashable] | None = None,
        buffer: int | None = None,
    ) -> None:
        if per_peer < 1:
            raise ValueError(f"per_peer must be at least 1, not {per_peer}")
        if buffer is not None and buffer < 0:
            raise ValueError(f"buffer must not be negative, not {buffer}")
        if max_peers is not None and max_peers < 1:
            raise ValueError(f"max_peers must be at least 1, not {max_peers}")
        self.pool = pool
        self.operation = operation
        self.per_peer = per_peer
        self.peer_timeout = peer_timeout
        self.timeout = timeout
        self.retry = retry or Retry(attempts=1)
        self._key = _dedupe_key(dedupe)
        self._seen: set[Hashable] = set()
        self._runs: list[_Run] = []
        seen_peers: set[Peer] = set()
        for peer, items in jobs:
            if peer in seen_peers:
                raise ValueError(f"peer {peer} is listed twice")
            seen_peers.add(peer)
            self._runs.append(_Run(peer, list(items)))
        self._limiter = anyio.CapacityLimiter(max_peers or max(1, len(self._runs)))
        if buffer is None:
            buffer = BUFFER_PER_PEER * min(max(1, len(self._runs)), max_peers or len(self._runs))
        self._answers: Handoff[Answer] = Handoff(buffer)
        self._tg: anyio.abc.TaskGroup | None = None
        self._all = anyio.CancelScope()
        self._stopping: Outcome | None = None
        self._deadline = float("inf")
        #: Answers ``__anext__`` returned in a row without yielding to the event loop.
        self._unyielded = 0

    # -- life ---------------------------------------------------------------------------------

    async def __aenter__(self) -> FanOut:
        if self._tg is not None:
            raise RuntimeError("a FanOut can be entered once")
        now = anyio.current_time()
        if self.timeout is not None:
            self._deadline = now + self.timeout
        for run in self._runs:
            run.queued_at = now
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._run_all)
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
                # Whatever is still running was not waited for: stop it without waiting.
                await self._stop_all(Outcome.CANCELLED)
        finally:
            try:
                await self._tg.__aexit__(None, None, None)
            finally:
                self._answers.close()

    async def cancel(self) -> None:
        """Stop every peer still running now (their associations aborted; outcome
        cancelled); the answers already queued still come, then the iteration ends."""
        await self._stop_all(Outcome.CANCELLED)

    def __aiter__(self) -> FanOut:
        return self

    async def __anext__(self) -> Answer:
        if self._tg is None:
            raise RuntimeError("iterate inside `async with fan_out as answers:`")
        # An answer already queued is taken without a trip through the event loop (the
        # peers' tasks queue several at a time); one in so many still yields, so that a
        # consumer whose loop body never awaits cannot starve them.
        self._unyielded += 1
        if self._unyielded >= _ANSWERS_PER_CHECKPOINT:
            self._unyielded = 0
            await anyio.lowlevel.checkpoint()
        try:
            return await self._answers.get()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    @property
    def reports(self) -> dict[Peer, PeerReport]:
        """Each peer's report: final for the peers done, a snapshot for the others."""
        return {run.peer: run.report or run.make_report() for run in self._runs}

    def progress(self) -> Progress:
        """Sub-operation counts summed over all jobs (C-GET and C-MOVE), now."""
        totals = [0, 0, 0, 0]
        for run in self._runs:
            for counts in run.counts.values():
                for i, n in enumerate(counts):
                    totals[i] += n
        return Progress(
            requests=sum(len(run.items) for run in self._runs),
            requests_done=sum(run.requests_done for run in self._runs),
            remaining=totals[0],
            completed=totals[1],
            failed=totals[2],
            warning=totals[3],
        )

    # -- running --------------------------------------------------------------------------------

    async def _run_all(self) -> None:
        try:
            with self._all:
                async with anyio.create_task_group() as tg:
                    for run in self._runs:
                        # A name given saves anyio working one out for each of many tasks.
                        tg.start_soon(self._run_peer, run, name="dicomio.fanout peer")
                        # One peer started per turn of the event loop. Started all at once,
                        # the peers would move in lockstep: every connect, then every
                        # A-ASSOCIATE-AC, then every request, so that the first request
                        # leaves only when the last association is up and all the answers
                        # come back together, to be decoded one after another while nothing
                        # else is left to do. One at a time, the peers started first are
                        # asking while the later ones connect, and their answers are read
                        # while the last ones are still waiting.
                        await anyio.lowlevel.checkpoint()
        finally:
            for run in self._runs:  # peers never started: end their reports too
                if run.report is None:
                    self._finish(run)
            self._answers.close_sending()

    async def _stop_all(self, outcome: Outcome) -> None:
        if self._stopping is None:
            self._stopping = outcome
        for run in self._runs:
            if not run.done:
                await self._stop(run, outcome)
        self._all.cancel()

    async def _stop(self, run: _Run, outcome: Outcome) -> None:
        """End ``run`` now: abort what it has in flight, then cancel its task."""
        if run.done or self._all_done(run):
            return  # every answer is in: a deadline passing now changes nothing
        if run.ending is None:
            run.ending = outcome
        for assoc in list(run.in_flight):
            await assoc.abort()
        run.scope.cancel()

    async def _run_peer(self, run: _Run) -> None:
        try:
            with run.scope:
                try:
                    # This task has just started: no need for acquire()'s checkpoints
                    # when a place is free, as it is unless max_peers holds peers back.
                    self._limiter.acquire_on_behalf_of_nowait(run)
                except anyio.WouldBlock:
                    with anyio.CancelScope(deadline=self._deadline) as waiting:
                        await self._limiter.acquire_on_behalf_of(run)
                    if waiting.cancelled_caught:
                        run.ending = Outcome.TIMED_OUT
                        return
                try:
                    run.started_at = anyio.current_time()
                    deadline = self._deadline
                    if self.peer_timeout is not None:
                        deadline = min(deadline, run.started_at + self.peer_timeout)
                    queue = iter(enumerate(run.items))
                    workers = min(self.per_peer, len(run.items))
                    if deadline == float("inf") and workers == 1:
                        # The common case, one request and no deadline: this task does it,
                        # without a watchdog and a worker task (and their task groups).
                        await self._worker(run, queue)
                        return
                    async with anyio.create_task_group() as tg:
                        if deadline != float("inf"):
                            tg.start_soon(self._watch, run, deadline, name="dicomio.fanout watch")
                        async with anyio.create_task_group() as pool:
                            for _ in range(workers):
                                pool.start_soon(
                                    self._worker, run, queue, name="dicomio.fanout job"
                                )
                        tg.cancel_scope.cancel()  # the watchdog
                finally:
                    self._limiter.release_on_behalf_of(run)
        finally:
            if run.ending is None and self._stopping is not None and not self._all_done(run):
                run.ending = self._stopping
            self._finish(run)

    def _all_done(self, run: _Run) -> bool:
        return run.requests_done == len(run.items)

    def _finish(self, run: _Run) -> None:
        if run.report is not None:
            return
        run.done = True
        run.ended_at = anyio.current_time()
        if run.ending is None and not self._all_done(run) and not run.errors:
            run.ending = self._stopping or Outcome.CANCELLED
        run.report = run.make_report()
        _log.info("%s", run.report, extra={"fanout": run.report.fields()})

    async def _watch(self, run: _Run, deadline: float) -> None:
        await anyio.sleep_until(deadline)
        await self._stop(run, Outcome.TIMED_OUT)

    async def _worker(self, run: _Run, queue: Iterable[tuple[int, Dataset | None]]) -> None:
        for index, item in queue:
            try:
                await self._job(run, index, item)
            except Exception as exc:
                if run.ending is None:
                    _log.debug("%s: request failed: %s", run.peer, exc)
                    run.errors.append(exc)
            run.requests_done += 1

    async def _job(self, run: _Run, index: int, item: Dataset | None) -> None:
        """One request, tried again while it fails transiently and nothing was passed on."""
        attempt = 0
        while True:
            attempt += 1
            run.attempts += 1
            if attempt > 1:
                run.retries += 1
            passed_on = False
            final: tuple[Dataset, Dataset | None] | None = None
            failure: BaseException | int | None = None
            try:
                async with self.pool.association(run.peer) as assoc:
                    run.in_flight.add(assoc)
                    try:
                        async for status, identifier in self.operation(assoc, item):
                            self._count(run, index, status)
                            if status[_STATUS].value in PENDING_CODES:
                                passed_on |= await self._pass_on(
                                    run, status, identifier, pending=True
                                )
                            else:
                                final = (status, identifier)
                    finally:
                        run.in_flight.discard(assoc)
            except Exception as exc:
                failure = exc
            if failure is None:
                if final is None:
                    raise errors.RemoteProtocolError("no final response")
                code = int(final[0][_STATUS].value)
                if is_transient(code):
                    failure = code
            if failure is not None:
                if passed_on or attempt >= self.retry.attempts or not is_transient(failure):
                    if isinstance(failure, BaseException):
                        raise failure
                else:
                    _log.info("%s: transient failure (%s); retrying", run.peer, _describe(failure))
                    await anyio.sleep(self.retry.delay(attempt))
                    continue
            assert final is not None
            code = int(final[0][_STATUS].value)
            run.final_status = code
            if category(code) is Category.FAILURE:
                run.failed_status = True
            await self._pass_on(run, *final, pending=False)
            return

    def _count(self, run: _Run, index: int, status: Dataset) -> None:
        if _SUBOPERATIONS[1] in status or _SUBOPERATIONS[0] in status:
            values = [status[tag].value if tag in status else None for tag in _SUBOPERATIONS]
            run.counts[index] = tuple(int(v) if v not in (None, "") else 0 for v in values)  # type: ignore[assignment]

    async def _pass_on(
        self, run: _Run, status: Dataset, identifier: Dataset | None, *, pending: bool
    ) -> bool:
        """Hand one answer to the consumer (waiting while the buffer is full); False if it
        was a duplicate, dropped. ``pending``: the status is Pending (FF00 or FF01)."""
        if identifier is not None and self._key is not None and pending:
            key = self._key(identifier)
            if key is not None:
                if key in self._seen:
                    run.duplicates += 1
                    return False
                self._seen.add(key)
        # Not a checkpoint while there is room: the task yields as it reads its peer anyway.
        await self._answers.put(Answer(run.peer, status, identifier))
        run.answers += 1
        if identifier is not None and pending:
            run.matches += 1
        if run.first_answer_at is None:
            run.first_answer_at = anyio.current_time()
        return True


def _describe(failure: BaseException | int) -> str:
    return f"status 0x{failure:04X}" if isinstance(failure, int) else str(failure)


# -- the services ----------------------------------------------------------------------------


def _echo(
    assoc: Association, item: Dataset | None
) -> AsyncIterator[tuple[Dataset, Dataset | None]]:
    async def one() -> AsyncIterator[tuple[Dataset, Dataset | None]]:
        yield await assoc.send_c_echo(), None

    return one()


def echo(pool: AssociationPool, peers: Iterable[Peer], **options: Any) -> FanOut:
    """C-ECHO (PS3.7 9.1.5) every peer once; the options are ``FanOut``'s."""
    return FanOut(pool, [(peer, [None]) for peer in peers], _echo, **options)


def find(
    pool: AssociationPool,
    peers: Iterable[Peer],
    identifier: Dataset,
    query_model: str,
    **options: Any,
) -> FanOut:
    """C-FIND (PS3.7 9.1.2) ``identifier`` on every peer; the options are ``FanOut``'s
    (``dedupe="StudyInstanceUID"`` merges studies several peers hold)."""

    def operation(
        assoc: Association, item: Dataset | None
    ) -> AsyncIterator[tuple[Dataset, Dataset | None]]:
        assert item is not None
        return aiter(assoc.send_c_find(item, query_model))

    return FanOut(pool, [(peer, [identifier]) for peer in peers], operation, **options)


def _remaining(
    identifiers: Sequence[Dataset], skip: Callable[[Dataset], bool] | Collection[str] | None
) -> list[Dataset]:
    if skip is None:
        return list(identifiers)
    if callable(skip):
        return [ds for ds in identifiers if not skip(ds)]
    have = skip

    def arrived(ds: Dataset) -> bool:
        value = ds.get("SOPInstanceUID")
        values = [value] if isinstance(value, str) else list(value or ())
        return bool(values) and all(str(v) in have for v in values)

    return [ds for ds in identifiers if not arrived(ds)]


def move(
    pool: AssociationPool,
    peers: Iterable[Peer],
    identifiers: Sequence[Dataset],
    destination: str,
    query_model: str,
    *,
    skip: Callable[[Dataset], bool] | Collection[str] | None = None,
    per_peer: int = 2,
    **options: Any,
) -> FanOut:
    """Bulk C-MOVE (PS3.7 9.1.4) of ``identifiers`` from every peer to ``destination``,
    ``per_peer`` requests at once per peer; ``progress()`` sums the sub-operations.

    ``skip`` resumes an interrupted run: a predicate that is true for identifiers already
    retrieved, or the SOP Instance UIDs already received (an IMAGE-level identifier whose
    SOP Instance UIDs all arrived is skipped).
    """
    wanted = _remaining(identifiers, skip)

    def operation(
        assoc: Association, item: Dataset | None
    ) -> AsyncIterator[tuple[Dataset, Dataset | None]]:
        assert item is not None
        return aiter(assoc.send_c_move(item, destination, query_model))

    jobs = [(peer, wanted) for peer in peers]
    return FanOut(pool, jobs, operation, per_peer=per_peer, **options)


def get(
    pool: AssociationPool,
    peers: Iterable[Peer],
    identifiers: Sequence[Dataset],
    query_model: str,
    *,
    skip: Callable[[Dataset], bool] | Collection[str] | None = None,
    per_peer: int = 2,
    **options: Any,
) -> FanOut:
    """Bulk C-GET (PS3.7 9.1.3) of ``identifiers`` from every peer, as ``move``.

    The instances arrive on the pool's associations: give the peers the storage contexts
    and SCP roles (``Peer.contexts``, ``Peer.ext_neg``) and the pool an ``EVT_C_STORE``
    handler (``AssociationPool(evt_handlers=...)``).
    """
    wanted = _remaining(identifiers, skip)

    def operation(
        assoc: Association, item: Dataset | None
    ) -> AsyncIterator[tuple[Dataset, Dataset | None]]:
        assert item is not None
        return aiter(assoc.send_c_get(item, query_model))

    jobs = [(peer, wanted) for peer in peers]
    return FanOut(pool, jobs, operation, per_peer=per_peer, **options)
