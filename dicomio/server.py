"""The SCP server: accepts TCP (or TLS) connections and runs one association task on each.

Runs on the application's own event loop: ``async with ae.start_server(...) as server``
starts listening and returns; leaving the block shuts down gracefully (stop accepting, let
open associations finish until the shutdown deadline, then abort the rest). ``await
server.serve_forever()`` serves until cancelled.

The accept loop only makes system calls: each time the listening socket is readable it takes
every connection waiting in the kernel's accept queue (up to ``backlog`` of them before it lets
the rest of the event loop run), and starts a task for each. Everything else, wrapping the
socket in a stream, a TLS handshake, reading the A-ASSOCIATE-RQ, happens in that task.
Accepting one connection per turn of a busy event loop is not enough: with thousands of
associations running, a turn takes long enough for the accept queue to fill, after which
the kernel drops handshakes and eventually resets connections that clients believe are open.

Association acceptance follows PS3.8 7.1.1.7 and Table 9-21 for rejections.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import logging
import socket
import ssl
from collections import Counter
from collections.abc import Coroutine, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.lowlevel
from anyio.streams.stapled import MultiListener
from anyio.streams.tls import TLSStream

from dicomio import _transport, errors
from dicomio.association import Association
from dicomio.events import (
    EVT_ACCEPTED,
    EVT_ASYNC_OPS,
    EVT_CONN_OPEN,
    EVT_ESTABLISHED,
    EVT_REJECTED,
    EVT_REQUESTED,
    EVT_SOP_COMMON,
    EVT_SOP_EXTENDED,
    EVT_USER_ID,
    AnyEventType,
    Event,
    HandlerList,
)
from dicomio.pdu import (
    DICOM_APPLICATION_CONTEXT,
    AssociateAC,
    AssociateRJ,
    AssociateRQ,
    AsynchronousOperationsWindow,
    ImplementationClassUID,
    ImplementationVersionName,
    MaximumLength,
    PresentationContextAC,
    RoleSelection,
    SOPClassCommonExtendedNegotiation,
    SOPClassExtendedNegotiation,
    UserIdentityAC,
    UserIdentityRQ,
)
from dicomio.presentation import PresentationContext, negotiate_as_acceptor
from dicomio.ul import Role

if TYPE_CHECKING:
    from dicomio.ae import AE

__all__ = ["Server"]

_log = logging.getLogger("dicomio.server")

#: accept(2) errors about one connection that died in the queue (Linux also reports pending
#: network errors of the new socket here): skip it and take the next.
_CONNECTION_GONE = frozenset(
    {
        errno.ECONNABORTED,
        errno.EPROTO,
        errno.ENETDOWN,
        errno.ENOPROTOOPT,
        errno.EHOSTDOWN,
        errno.EHOSTUNREACH,
        errno.EOPNOTSUPP,
        errno.ENETUNREACH,
        errno.EPERM,
    }
)
#: accept(2) errors that mean this process is out of descriptors or memory: the socket stays
#: readable, so waiting for readiness would spin; pause accepting for a moment instead.
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: How long to stop accepting after running out of descriptors (trio's serve_listeners and
#: asyncio's own servers pause in the same way).
ACCEPT_RETRY_DELAY = 0.1
#: Distinct A-ASSOCIATE-RQ negotiations a server remembers (Server._negotiate): a few
#: clients' proposals, each a handful of small values.
NEGOTIATIONS_REMEMBERED = 64
#: An A-ASSOCIATE-AC with the requested, accepted and rejected contexts (_plain_answer).
_PlainAnswer = tuple[
    AssociateAC,
    tuple[PresentationContext, ...],
    tuple[PresentationContext, ...],
    tuple[PresentationContext, ...],
]
#: User information sub-items that leave nothing to decide (PS3.7 D.3.3.1, D.3.3.2).
_PLAIN_SUB_ITEMS = frozenset({MaximumLength, ImplementationClassUID, ImplementationVersionName})


class Server:
    """A listening SCP. ``port`` is the bound port (useful with port 0)."""

    def __init__(
        self,
        ae: AE,
        address: tuple[str, int],
        *,
        evt_handlers: HandlerList,
        ssl_context: ssl.SSLContext | None,
        backlog: int,
        shutdown_timeout: float,
        ae_title: str | None = None,
        contexts: Sequence[PresentationContext] | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        self.ae = ae
        #: A listening socket made elsewhere (a worker process's inherited one), served
        #: instead of binding ``address``; the server closes it when it stops accepting.
        self._sock = sock
        #: This server's AE title and supported contexts; None means the AE's, read when
        #: each association is negotiated.
        self.ae_title = ae_title
        self.contexts = contexts
        self.host, self.requested_port = address
        self.handlers = evt_handlers
        self.ssl_context = ssl_context
        self.backlog = backlog
        self.shutdown_timeout = shutdown_timeout
        self.port = 0
        #: Every association currently open on this server (pending and established).
        self.associations: set[Association] = set()
        #: Associations past the limit checks (being negotiated or established).
        self._admitted: set[Association] = set()
        self._per_ae: Counter[str] = Counter()
        #: negotiate_as_acceptor's answers by its arguments (see _negotiate).
        self._negotiated: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        #: Answers to requests with no sub-item to decide on (see _plain_answer).
        self._plain_answers: dict[tuple[Any, ...], tuple[Any, _PlainAnswer]] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        #: On asyncio, connection tasks started by the loop itself (_start_connection), and
        #: their cancel scopes, which shutdown cancels as it cancels the task group.
        self._connection_tasks: set[asyncio.Task[None]] = set()
        self._connection_scopes: set[anyio.CancelScope] = set()
        self._cancelling = False
        #: The asyncio loop the server runs on (None on trio), found once.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._accept_scope = anyio.CancelScope()
        self._listener: anyio.abc.Listener[Any] | None = None
        self._stopped = anyio.Event()
        #: Set when the last open association ends (shutdown waits on it).
        self._idle: anyio.Event | None = None

    @property
    def _title(self) -> str:
        """The AE title this server answers to: its own, else its AE's."""
        return self.ae_title or self.ae.ae_title

    async def __aenter__(self) -> Server:
        listener: anyio.abc.Listener[Any] | None = None
        if self._sock is None:
            listener = await anyio.create_tcp_listener(
                local_host=self.host, local_port=self.requested_port, backlog=self.backlog
            )
            self._listener = listener
            self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
            sockets = _listening_sockets(listener)
        else:
            self.port = int(self._sock.getsockname()[1])
            sockets = [self._sock]
        self.ae._servers.add(self)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._accept_loop, sockets, listener)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        # If the block failed there is nothing to wait for: abort what is open at once.
        with anyio.CancelScope(shield=True):
            await self.shutdown(timeout=0 if exc is not None else None)
            while self._connection_tasks:
                await asyncio.wait(set(self._connection_tasks))
        assert self._tg is not None
        # The block's own exception propagates as it is (returning None below); handing it
        # to the task group would wrap it in an ExceptionGroup for no benefit to the caller.
        await self._tg.__aexit__(None, None, None)
        return None

    async def serve_forever(self) -> None:
        """Serve until cancelled (for use inside a task group)."""
        await self._stopped.wait()

    async def shutdown(self, timeout: float | None = None) -> None:
        """Stop accepting; wait for open associations up to ``timeout``; abort the rest."""
        self._accept_scope.cancel()
        await anyio.lowlevel.checkpoint()  # let the accept loop see the cancellation
        deadline = self.shutdown_timeout if timeout is None else timeout
        with anyio.move_on_after(deadline):
            while self.associations:
                self._idle = anyio.Event()
                await self._idle.wait()
        for assoc in list(self.associations):
            await assoc.abort(2, 0)
        self._stopped.set()
        self._cancelling = True
        for scope in self._connection_scopes:
            scope.cancel()
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    async def _accept_loop(
        self, sockets: list[socket.socket], listener: anyio.abc.Listener[Any] | None
    ) -> None:
        try:
            with self._accept_scope:
                if len(sockets) == 1:
                    await self._accept_from(sockets[0])
                else:  # e.g. "localhost": one socket per address family
                    async with anyio.create_task_group() as tg:
                        for sock in sockets:
                            tg.start_soon(self._accept_from, sock)
        finally:
            if listener is not None:
                await anyio.aclose_forcefully(listener)
            else:
                sockets[0].close()

    async def _accept_from(self, listening: socket.socket) -> None:
        """Accept connections on one listening socket until cancelled.

        Drains the accept queue in batches of up to ``backlog`` connections, checking in with
        the event loop between batches (so that a flood of connects neither starves open
        associations nor delays shutdown), and waits for readiness only once it is empty.
        """
        assert self._tg is not None
        task_group = self._tg
        batch = max(1, self.backlog)
        listening.setblocking(False)
        # On asyncio the socket stays registered with the selector while this runs, and a
        # wait is one future: anyio.wait_readable registers and unregisters it every time
        # (two epoll_ctl calls per connection when they come one at a time).
        loop = self._loop = _transport.running_asyncio_loop()
        ready: list[asyncio.Future[None]] = []

        def on_readable() -> None:
            # The connections are accepted here, in the loop's callback, when that is
            # simple (see _accept_nowait); otherwise, and after a full batch, the task does.
            if not self._accept_nowait(listening, batch) and ready:
                _transport.set_if_pending(ready[0])

        if loop is not None:
            try:
                loop.add_reader(listening.fileno(), on_readable)
            except NotImplementedError:  # a loop without add_reader (Windows' proactor)
                loop = None
        try:
            await self._accept_batches(listening, task_group, batch, loop, ready)
        finally:
            if loop is not None:
                loop.remove_reader(listening.fileno())

    async def _accept_batches(
        self,
        listening: socket.socket,
        task_group: anyio.abc.TaskGroup,
        batch: int,
        loop: asyncio.AbstractEventLoop | None,
        ready: list[asyncio.Future[None]],
    ) -> None:
        while True:
            taken = 0
            while taken < batch:
                try:
                    sock, address = listening.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    if exc.errno in _CONNECTION_GONE:
                        continue
                    if exc.errno in _OUT_OF_RESOURCES:
                        _log.error("cannot accept connections: %s; retrying shortly", exc)
                        await anyio.sleep(ACCEPT_RETRY_DELAY)
                        continue
                    raise
                taken += 1
                if loop is None:
                    task_group.start_soon(self._serve_socket, sock, address)
                else:
                    self._start_connection(self._serve_socket(sock, address))
            if taken == batch:
                await anyio.lowlevel.checkpoint()
            elif loop is None:
                await anyio.wait_readable(listening)
            else:
                ready[:] = [loop.create_future()]
                try:
                    await ready[0]
                finally:
                    ready.clear()

    def _accept_nowait(self, listening: socket.socket, batch: int) -> bool:
        """Accept up to ``batch`` connections in the listener's readiness callback (asyncio).

        Each gets its transport here and a task that starts with it ready: waking the accept
        task, then wrapping the socket in the connection's task, costs three turns of the
        loop per connection. True once the queue is empty; False (the accept task then takes
        over and does the rest, errors included) after a full batch, on any error, or once
        the server is shutting down.
        """
        if self._accept_scope.cancel_called:
            return False
        for _ in range(batch):
            try:
                sock, address = listening.accept()
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                return False  # met again, and handled, by the accept task
            try:
                sock.setblocking(False)
                # TCP_NODELAY, as in _serve_socket, is set by the transport itself.
                stream = _transport.wrap_accepted_socket_nowait(sock)
            except (OSError, ValueError):
                sock.close()  # the peer went away while the connection waited in the queue
                continue
            except BaseException:
                sock.close()
                raise
            if stream is None:
                self._start_connection(self._serve_socket(sock, address))
                return False  # no such transport on this loop: the task's way from now on
            self._start_connection(self._serve_stream(stream, address))
        return False

    def _start_connection(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run one connection's coroutine in an asyncio task of its own (asyncio only).

        anyio's ``start_soon`` costs about four times what the loop's ``create_task``
        does (a task handle, a wrapper coroutine, its name formatted, the task group's
        bookkeeping), once per association. The task keeps anyio's cancellation semantics
        through a cancel scope of its own, which ``shutdown`` cancels as it cancels the task
        group; ``__aexit__`` waits for the tasks.
        """
        assert self._loop is not None
        self._connection_tasks.add(self._loop.create_task(self._in_scope(coro)))

    async def _in_scope(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            with anyio.CancelScope() as scope:
                if self._cancelling:
                    scope.cancel()
                self._connection_scopes.add(scope)
                try:
                    await coro
                finally:
                    self._connection_scopes.discard(scope)
        except Exception:
            # Past _handle_connection's own handlers: logged, as nobody awaits this task.
            _log.exception("connection task failed")
        finally:
            # Here rather than in a done callback, which would take a turn of the loop of
            # its own after the connection's last one.
            task = asyncio.current_task(self._loop)
            if task is not None:
                self._connection_tasks.discard(task)

    async def _serve_stream(self, stream: anyio.abc.SocketStream, address: Any) -> None:
        """One accepted connection's task, its stream built by ``_accept_nowait``."""
        try:
            remote = (str(address[0]), int(address[1]))
        except (TypeError, IndexError, ValueError):
            remote = ("?", 0)
        await self._handle_connection(stream, remote)

    async def _serve_socket(self, sock: socket.socket, address: Any) -> None:
        """One accepted connection's task: wrap the socket in a stream, then serve it."""
        try:
            sock.setblocking(False)
            # Small DIMSE messages must not wait for the peer's delayed ACK (Nagle).
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            stream = await _transport.wrap_accepted_socket(sock)
        except (OSError, ValueError):
            # The peer went away while the connection waited in the queue.
            sock.close()
            return
        except BaseException:
            sock.close()
            raise
        try:
            remote = (str(address[0]), int(address[1]))
        except (TypeError, IndexError, ValueError):
            remote = ("?", 0)
        await self._handle_connection(stream, remote)

    # -- one connection ----------------------------------------------------------------------

    async def _handle_connection(
        self, stream: anyio.abc.ByteStream, remote: tuple[str, int]
    ) -> None:
        ae = self.ae
        if self.ssl_context is not None:
            try:
                with anyio.fail_after(ae.timeouts.tls_handshake):
                    stream = await TLSStream.wrap(
                        stream,
                        server_side=True,
                        ssl_context=self.ssl_context,
                        standard_compatible=False,
                    )
            except (
                TimeoutError,
                ssl.SSLError,
                OSError,
                anyio.BrokenResourceError,
                anyio.EndOfStream,
            ):
                await anyio.aclose_forcefully(stream)
                return
            except BaseException:
                # Cancelled mid-handshake (the server shutting down): the socket is ours.
                await anyio.aclose_forcefully(stream)
                raise
        assoc = Association(
            ae,
            stream,
            role=Role.ACCEPTOR,
            local_ae_title=self._title,
            remote_address=remote,
            timeouts=ae.timeouts,
            max_pdu=ae.maximum_pdu_size,
            handlers=self.handlers,
        )
        self.associations.add(assoc)
        try:
            await assoc._notify(EVT_CONN_OPEN)
            # The ARTIM timer (PS3.8 9.1.5) bounds the wait for the A-ASSOCIATE-RQ. It starts
            # on the transport connection indication (Table 9-10, Evt5/AE-5), which is this
            # task taking the connection, not the kernel completing the handshake: time spent
            # in the accept queue or waiting for a busy event loop is not the peer's delay.
            # A request that arrived in time is read before the deadline is looked at.
            assoc._ul.connection_made(now=assoc._now())
            while assoc._reply is None and not assoc._transport_closed:
                await assoc._read_once()
            rq = assoc._reply
            if not isinstance(rq, AssociateRQ):
                return
            await self._answer(assoc, rq)
            if assoc.is_established:
                await assoc.serve()
        except errors.DicomioError as exc:
            assoc.log.info("association ended: %s", exc)
        except Exception:
            assoc.log.exception("association task failed")
            await assoc.abort(2, 0)
        finally:
            if not assoc._transport_closed:  # a shielded scope costs, even for nothing
                with anyio.CancelScope(shield=True):
                    await assoc._close_transport()
            self.associations.discard(assoc)
            if not self.associations and self._idle is not None:
                self._idle.set()
            if assoc in self._admitted:
                self._admitted.discard(assoc)
                self._per_ae[assoc.remote_ae_title] -= 1

    async def _reject(self, assoc: Association, result: int, source: int, reason: int) -> None:
        # The exception's text is the log line: Table 9-21's words beside the numbers.
        assoc.log.info("rejecting: %s", errors.AssociationRejected(result, source, reason))
        assoc._ul.send_associate_rj(
            AssociateRJ(result=result, source=source, reason=reason), now=assoc._now()
        )
        await assoc._flush()
        await assoc._notify(EVT_REJECTED)
        # After A-ASSOCIATE-RJ the requestor closes; ARTIM (Sta13) bounds how long we wait.
        with anyio.move_on_after(assoc.timeouts.acse or 30.0):
            while not assoc._transport_closed:
                await assoc._read_once()

    def _negotiate(
        self, rq: AssociateRQ, role_requests: list[RoleSelection]
    ) -> tuple[list[PresentationContextAC], list[RoleSelection], tuple[PresentationContext, ...]]:
        """``negotiate_as_acceptor`` for ``rq`` (see ``_negotiated``), in lists of its own."""
        results, role_replies, contexts = self._negotiated_for(rq, role_requests)
        # Fresh lists each time: the callers' to extend or keep, never the cache's.
        return list(results), list(role_replies), contexts

    def _negotiated_for(
        self, rq: AssociateRQ, role_requests: list[RoleSelection]
    ) -> tuple[Any, ...]:
        """``negotiate_as_acceptor`` for ``rq``, remembered for the next identical request.

        It is a function of its arguments alone, all immutable values, and a client
        proposes the same contexts association after association: a dictionary look-up
        instead of the negotiation (tens of microseconds per association). Everything it
        depends on is in the key, the AE's supported contexts as they are now included, so
        a change to them is never answered from memory. A refusal (a malformed context ID)
        raises every time. Bounded: emptied when full.
        """
        ae = self.ae
        supported = ae.supported_contexts if self.contexts is None else self.contexts
        key = (
            rq.presentation_contexts,
            tuple(supported),
            tuple(role_requests),
            ae.accept_any_storage,
            None if ae.any_storage_syntaxes is None else tuple(ae.any_storage_syntaxes),
            ae.prefer_own_syntax_order,
        )
        known = self._negotiated.get(key)
        if known is None:
            known = negotiate_as_acceptor(
                rq.presentation_contexts,
                supported,
                role_requests,
                accept_any_storage=ae.accept_any_storage,
                any_storage_syntaxes=ae.any_storage_syntaxes,
                acceptor_order=ae.prefer_own_syntax_order,
            )
            if len(self._negotiated) >= NEGOTIATIONS_REMEMBERED:
                self._negotiated.clear()
            self._negotiated[key] = known
        return known

    async def _answer(self, assoc: Association, rq: AssociateRQ) -> None:
        ae = self.ae
        assoc.associate_rq = rq
        assoc.remote_ae_title = rq.calling_ae_title
        assoc._absorb_user_information(rq.user_information)
        await assoc._notify(EVT_REQUESTED)
        # PS3.8 Table 9-21 reasons, in the order the checks make sense.
        if not rq.protocol_version & 1:
            return await self._reject(assoc, 1, 2, 2)
        if rq.application_context != DICOM_APPLICATION_CONTEXT:
            return await self._reject(assoc, 1, 1, 2)
        if ae.require_called_aet and rq.called_ae_title != self._title:
            return await self._reject(assoc, 1, 1, 7)
        if ae.require_calling_aet and rq.calling_ae_title not in ae.require_calling_aet:
            return await self._reject(assoc, 1, 1, 3)
        # The limits count admitted associations, and admission happens here with no await
        # between check and count: requests arriving together cannot all slip in before
        # any of them is established. Over a limit: rejected-transient, "local limit
        # exceeded" (PS3.8 Table 9-21: result 2, source 3, reason 2).
        if len(self._admitted) >= ae.maximum_associations:
            return await self._reject(assoc, 2, 3, 2)
        per_ae = ae.maximum_associations_per_ae
        if per_ae is not None and self._per_ae[rq.calling_ae_title] >= per_ae:
            return await self._reject(assoc, 2, 3, 2)
        self._admitted.add(assoc)
        self._per_ae[rq.calling_ae_title] += 1

        plain = self._plain_answer(assoc, rq)
        if plain is not None:
            ac, assoc.requested_contexts, assoc.accepted_contexts, assoc.rejected_contexts = plain
            assoc.associate_ac = ac
            assoc.set_window(1, 1)
            return await self._accept(assoc, rq, ac)

        replies: list[Any] = []
        identity = next((i for i in rq.user_information if isinstance(i, UserIdentityRQ)), None)
        if identity is not None:
            verdict = await _verify_identity(assoc, identity)
            if verdict is not None:
                accepted, response = verdict
                if not accepted:
                    return await self._reject(assoc, 1, 1, 1)
                if identity.positive_response_requested and response is not None:
                    replies.append(UserIdentityAC(server_response=response))
        elif _checks_identity(assoc) and not ae.allow_anonymous:
            # A verifier that a requestor could bypass by leaving the sub-item out would
            # check nothing: rejected-permanent, service-user, no-reason-given.
            assoc.log.info("no User Identity sub-item, and this AE requires one")
            return await self._reject(assoc, 1, 1, 1)

        window = next(
            (i for i in rq.user_information if isinstance(i, AsynchronousOperationsWindow)), None
        )
        if window is not None:
            answer = await _ask(
                assoc,
                EVT_ASYNC_OPS,
                window.maximum_number_operations_invoked,
                window.maximum_number_operations_performed,
            )
            if answer is not None and not _is_window(answer):
                assoc.log.warning("EVT_ASYNC_OPS handler gave %r, not (int, int)", answer)
                answer = None
            # The handler's answer, else the AE's; either bounded as the standard bounds it:
            # never more than proposed (0 means unlimited, PS3.7 D.3.3.3).
            most_invoked, most_performed = answer or ae.async_ops_window or (1, 1)
            invoked = _min_window(window.maximum_number_operations_performed, most_invoked)
            performed = _min_window(window.maximum_number_operations_invoked, most_performed)
            replies.append(
                AsynchronousOperationsWindow(
                    maximum_number_operations_invoked=invoked,
                    maximum_number_operations_performed=performed,
                )
            )
            # Our requests to the peer are bounded by what it will perform: its "invoked"
            # mirrors our "performed" (PS3.7 D.3.3.3).
            assoc.set_window(invoked, performed)

        role_requests = [i for i in rq.user_information if isinstance(i, RoleSelection)]
        results, role_replies, contexts = self._negotiate(rq, role_requests)
        replies.extend(role_replies)
        ext = [i for i in rq.user_information if isinstance(i, SOPClassExtendedNegotiation)]
        if ext and assoc.get_handlers(EVT_SOP_EXTENDED):
            app_info = {
                item.sop_class_uid: item.service_class_application_information for item in ext
            }
            answer = await _ask(assoc, EVT_SOP_EXTENDED, app_info)
            try:
                replies += [
                    SOPClassExtendedNegotiation(
                        sop_class_uid=uid, service_class_application_information=info
                    )
                    for uid, info in (answer or {}).items()
                    if uid in app_info  # PS3.7 D.3.3.5: only for classes that were proposed
                ]
            except (AttributeError, TypeError, ValueError):
                assoc.log.warning("EVT_SOP_EXTENDED handler gave %r: no reply sent", answer)
        elif ext and ae.sop_class_extended_handler is not None:
            replies.extend(ae.sop_class_extended_handler(ext))
        common = [
            i for i in rq.user_information if isinstance(i, SOPClassCommonExtendedNegotiation)
        ]
        # PS3.7 D.3.3.6: the acceptor does not reply to 57H; the hooks only observe.
        if common and assoc.get_handlers(EVT_SOP_COMMON):
            await _ask(assoc, EVT_SOP_COMMON, {item.sop_class_uid: item for item in common})
        elif common and ae.sop_class_common_extended_handler is not None:
            ae.sop_class_common_extended_handler(common)
        ac = self._build_ac(assoc, rq, results, replies)
        assoc.associate_ac = ac
        assoc.requested_contexts = contexts
        assoc.accepted_contexts = tuple(cx for cx in contexts if cx.accepted)
        assoc.rejected_contexts = tuple(cx for cx in contexts if not cx.accepted)
        if window is None:
            assoc.set_window(1, 1)
        await self._accept(assoc, rq, ac)

    def _build_ac(
        self,
        assoc: Association,
        rq: AssociateRQ,
        results: Sequence[PresentationContextAC],
        replies: list[Any],
    ) -> AssociateAC:
        """The A-ASSOCIATE-AC: the contexts' results and our user information, with the
        replies to the request's sub-items (PS3.7 D.3.3, PS3.8 9.3.3)."""
        ae = self.ae
        if ae.implementation_version_name:
            replies.append(
                ImplementationVersionName(
                    implementation_version_name=ae.implementation_version_name
                )
            )
        return AssociateAC(
            called_ae_title=rq.called_ae_title,
            calling_ae_title=rq.calling_ae_title,
            application_context=rq.application_context,
            presentation_contexts=results,
            user_information=[
                MaximumLength(maximum_length=assoc.local_max_pdu),
                ImplementationClassUID(implementation_class_uid=ae.implementation_class_uid),
                *sorted(replies, key=_reply_order),
            ],
        )

    def _plain_answer(self, assoc: Association, rq: AssociateRQ) -> _PlainAnswer | None:
        """The answer to a request with no sub-item to decide on, remembered; else None.

        A request whose user information holds only the maximum length and the
        implementation's identification, to an AE that checks no user identity, is
        answered from the presentation contexts alone (``_negotiated_for``), with nothing
        to ask a handler: the A-ASSOCIATE-AC and the contexts, by value, are the same for
        the same request, and a client sends the same one association after association.
        (ac, requested, accepted and rejected contexts).
        """
        for item in rq.user_information:
            if type(item) not in _PLAIN_SUB_ITEMS:
                return None
        if _checks_identity(assoc):
            return None
        ae = self.ae
        known = self._negotiated_for(rq, [])
        key = (
            rq.called_ae_title,
            rq.calling_ae_title,
            rq.application_context,
            assoc.local_max_pdu,
            ae.implementation_class_uid,
            ae.implementation_version_name,
        )
        entry = self._plain_answers.get(key)
        if entry is not None and entry[0] is known:  # the same negotiation, not a look-alike
            return entry[1]
        results, _, contexts = known
        answer: _PlainAnswer = (
            self._build_ac(assoc, rq, results, []),
            contexts,
            tuple(cx for cx in contexts if cx.accepted),
            tuple(cx for cx in contexts if not cx.accepted),
        )
        if len(self._plain_answers) >= NEGOTIATIONS_REMEMBERED:
            self._plain_answers.clear()
        self._plain_answers[key] = (known, answer)
        return answer

    async def _accept(self, assoc: Association, rq: AssociateRQ, ac: AssociateAC) -> None:
        """Send the A-ASSOCIATE-AC (AE-7): the association is established."""
        if assoc._failure is not None:
            # The requestor gave up (closed or aborted) while we decided: nobody to answer.
            assoc.log.debug("requestor left before the A-ASSOCIATE-AC: %s", assoc._failure)
            return
        assoc._ul.send_associate_ac(ac, now=assoc._now())
        await assoc._flush()
        assoc._mark_established()
        assoc.log.info(
            "accepted association from %s: %d of %d contexts",
            rq.calling_ae_title,
            len(assoc.accepted_contexts),
            len(rq.presentation_contexts),
        )
        await assoc._notify(EVT_ACCEPTED)
        await assoc._notify(EVT_ESTABLISHED)


def _is_window(answer: Any) -> bool:
    return (
        isinstance(answer, tuple)
        and len(answer) == 2
        and all(isinstance(n, int) and 0 <= n <= 0xFFFF for n in answer)
    )


async def _call_handler(assoc: Association, event: AnyEventType, *fields: Any) -> Any:
    """Call the association's last handler for a negotiation ``event`` (plain or ``async``)
    with pynetdicom's arguments, and return its answer; it must be bound."""
    handler, args = assoc.get_handlers(event)[-1]
    answer = handler(Event(event, assoc), *fields, *args)
    if inspect.isawaitable(answer):
        answer = await answer
    return answer


async def _ask(assoc: Association, event: AnyEventType, *fields: Any) -> Any:
    """The answer of the association's handler for a negotiation ``event``, or None if none
    is bound or it raised (logged): the negotiation then goes on without it."""
    if not assoc.get_handlers(event):
        return None
    try:
        return await _call_handler(assoc, event, *fields)
    except Exception:
        assoc.log.exception("%s handler raised", event.name)
        return None


def _checks_identity(assoc: Association) -> bool:
    """Whether user identities are verified here (an EVT_USER_ID handler or a verifier)."""
    return bool(assoc.get_handlers(EVT_USER_ID)) or assoc.ae.user_identity_verifier is not None


async def _verify_identity(
    assoc: Association, identity: UserIdentityRQ
) -> tuple[bool, bytes | None] | None:
    """(accepted, server response) for a User Identity request, or None if nobody checks.

    An EVT_USER_ID handler (pynetdicom's) is asked first, else ``ae.user_identity_verifier``;
    either raising counts as a refusal.
    """
    try:
        if assoc.get_handlers(EVT_USER_ID):
            verdict = await _call_handler(
                assoc,
                EVT_USER_ID,
                identity.user_identity_type,
                identity.primary_field,
                identity.secondary_field or None,
            )
        elif assoc.ae.user_identity_verifier is not None:
            verdict = await assoc.ae.user_identity_verifier(assoc, identity)
        else:
            return None
    except Exception:
        assoc.log.exception("user identity check raised")
        return False, None
    if isinstance(verdict, tuple):
        accepted, response = verdict
        return bool(accepted), response
    return bool(verdict), None


def _listening_sockets(listener: anyio.abc.Listener[Any]) -> list[socket.socket]:
    """The OS sockets behind what ``anyio.create_tcp_listener`` returned."""
    listeners = listener.listeners if isinstance(listener, MultiListener) else [listener]
    return [one.extra(anyio.abc.SocketAttribute.raw_socket) for one in listeners]


def _min_window(proposed: int, ours: int) -> int:
    """The smaller of two window values where 0 means unlimited (PS3.7 D.3.3.3)."""
    if proposed == 0:
        return ours
    if ours == 0:
        return proposed
    return min(proposed, ours)


def _reply_order(item: Any) -> int:
    return {
        AsynchronousOperationsWindow: 0x53,
        RoleSelection: 0x54,
        ImplementationVersionName: 0x55,
        SOPClassExtendedNegotiation: 0x56,
        UserIdentityAC: 0x59,
    }.get(type(item), 0xFF)
