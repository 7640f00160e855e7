"""The Application Entity: local identity, presentation contexts, and the two ways in.

``ae.associate(...)`` makes a requestor association; ``ae.start_server(...)`` accepts them.
Names follow pynetdicom's ``AE`` so that moving over is easy. Settings live on the AE
instance; nothing in dicomio is configured through module-level state.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import ssl
import weakref
from collections.abc import Awaitable, Callable, Generator, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import attrs
from anyio.streams.tls import TLSStream
from pydicom.uid import UID

from dicomio import _transport, errors
from dicomio.association import Association
from dicomio.config import DEFAULT_MAX_PDU, TimeoutAttributes, Timeouts
from dicomio.dataset import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from dicomio.events import EVT_ACCEPTED, EVT_CONN_OPEN, EVT_ESTABLISHED, HandlerList
from dicomio.pdu import (
    AssociateAC,
    AssociateRJ,
    AssociateRQ,
    AsynchronousOperationsWindow,
    ImplementationClassUID,
    ImplementationVersionName,
    MaximumLength,
    PresentationContextRQ,
    RoleSelection,
)
from dicomio.presentation import (
    PresentationContext,
    assign_context_ids,
    build_context,
    negotiate_as_requestor,
)
from dicomio.ul import Role

if TYPE_CHECKING:
    from dicomio.server import Server

__all__ = ["AE", "AssociateRequest"]

UserIdentityVerifier = Callable[[Association, Any], Awaitable[Any]]


#: Most proposals an AE keeps (one per set of contexts, called AE title and options
#: proposed), and most answers to them it keeps: see ``AE._propose``.
_PROPOSALS_KEPT = 64
_ANSWERS_KEPT = 64


@attrs.frozen
class _Proposal:
    """What an A-ASSOCIATE-RQ proposes, made once per set of choices (``AE._propose``)."""

    #: The contexts proposed, numbered.
    contexts: tuple[PresentationContext, ...]
    rq: AssociateRQ
    #: Our SCP/SCU role selection sub-items.
    roles: tuple[RoleSelection, ...]


#: The contexts an A-ASSOCIATE-AC accepted and those it rejected (``AE._negotiated``).
_Answer = tuple[tuple[PresentationContext, ...], tuple[PresentationContext, ...]]


def set_nodelay(stream: anyio.abc.ByteStream) -> None:
    """Disable Nagle: small DIMSE messages must not wait for the peer's delayed ACK."""
    if type(stream) is _transport.AsyncioSocketStream and stream.on_selector_loop:
        return  # asyncio's own TCP transports set it themselves
    try:
        sock = stream.extra(anyio.abc.SocketAttribute.raw_socket)
    except anyio.TypedAttributeLookupError:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class AE(TimeoutAttributes):
    """A DICOM Application Entity (PS3.7 section 6)."""

    def __init__(
        self,
        ae_title: str = "DICOMIO",
        *,
        maximum_pdu_size: int = DEFAULT_MAX_PDU,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.ae_title = ae_title
        self.implementation_class_uid = IMPLEMENTATION_CLASS_UID
        self.implementation_version_name: str | None = IMPLEMENTATION_VERSION_NAME
        self.maximum_pdu_size = maximum_pdu_size
        self.timeouts = timeouts or Timeouts()
        self._requested_contexts: list[PresentationContext] = []
        self._supported_contexts: list[PresentationContext] = []
        #: A-ASSOCIATE-RQs made, by what they were made of, and the contexts as negotiated,
        #: by proposal and answer: a pool or fan-out proposes the same thing again and
        #: again, and a peer answers it the same way each time (see ``_propose``).
        self._proposals: dict[tuple[Any, ...], _Proposal] = {}
        self._answers: dict[tuple[AssociateRQ, AssociateAC], _Answer] = {}
        #: As requestor: the window to propose, (invoked, performed); None proposes nothing
        #: (which means 1, 1). As acceptor: the most we will grant.
        self.async_ops_window: tuple[int, int] | None = None
        # Acceptor policy.
        self.require_called_aet = False
        self.require_calling_aet: list[str] = []
        self.maximum_associations = 1000
        self.maximum_associations_per_ae: int | None = None
        self.accept_any_storage = False
        #: The transfer syntaxes ``accept_any_storage`` accepts, in the usual order rules;
        #: None takes the requestor's first choice, whatever it is.
        self.any_storage_syntaxes: Sequence[str] | None = None
        #: As acceptor, pick each context's transfer syntax in the order of our supported
        #: contexts' lists (the first of ours that was proposed), not the requestor's order.
        self.prefer_own_syntax_order = False
        #: Run pixel codecs (a C-STORE converted to an accepted transfer syntax) in worker
        #: processes, so that a codec crashing on a corrupt stream fails that one data set,
        #: not this process, and no codec holds the event loop's GIL. False runs them in
        #: worker threads: no process start (about a second, once per worker), less copying.
        self.isolate_codecs = True
        #: Known C-MOVE destinations: AE title -> (host, port).
        self.move_destinations: dict[str, tuple[str, int]] = {}
        #: ``async def verify(assoc, user_identity_rq)`` -> bool, or (bool, server response).
        self.user_identity_verifier: UserIdentityVerifier | None = None
        #: With a verifier set (``user_identity_verifier`` or an EVT_USER_ID handler), a
        #: request without a User Identity sub-item (PS3.7 D.3.3.7) is rejected (1, 1, 1)
        #: unless this is true. pynetdicom admits such requestors; set it to do the same.
        self.allow_anonymous = False
        #: Hooks for SOP class extended (56H) / common extended (57H) negotiation: called with
        #: the requested items, return the reply items (56H) or the accepted items (57H).
        self.sop_class_extended_handler: Callable[[Sequence[Any]], Sequence[Any]] | None = None
        self.sop_class_common_extended_handler: Callable[[Sequence[Any]], Sequence[Any]] | None = (
            None
        )
        # Every association this AE requested that is still referenced; those it accepted
        # are its servers' (a set each server keeps anyway, without a weak reference made
        # and dropped per association).
        self._associations: weakref.WeakSet[Association] = weakref.WeakSet()
        self._servers: weakref.WeakSet[Server] = weakref.WeakSet()

    @property
    def active_associations(self) -> list[Association]:
        """The AE's established associations, requested and accepted (pynetdicom's name).

        An association is in the list from the moment it is established until it is
        released or aborted; one still being negotiated is not.
        """
        return [
            assoc
            for assoc in [
                *self._associations,
                *(a for server in list(self._servers) for a in server.associations),
            ]
            if assoc.is_established and not (assoc.is_released or assoc.is_aborted)
        ]

    # -- contexts --------------------------------------------------------------------------

    @property
    def requested_contexts(self) -> list[PresentationContext]:
        """The contexts ``associate`` proposes, in order (at most 128, PS3.8 9.3.2.2)."""
        return self._requested_contexts

    @requested_contexts.setter
    def requested_contexts(self, contexts: Iterable[PresentationContext]) -> None:
        # A copy: the AE's own list, which add_ and remove_requested_context change, never a
        # preset list or tuple of dicomio.sop that others share.
        contexts = list(contexts)
        if len(contexts) > 128:
            raise ValueError("at most 128 presentation contexts can be requested (PS3.8 9.3.2.2)")
        self._requested_contexts = contexts

    @property
    def supported_contexts(self) -> list[PresentationContext]:
        """The contexts a server of this AE accepts, one per abstract syntax."""
        return self._supported_contexts

    @supported_contexts.setter
    def supported_contexts(self, contexts: Iterable[PresentationContext]) -> None:
        self._supported_contexts = _supported(contexts)

    def add_requested_context(
        self, abstract_syntax: str, transfer_syntax: str | Sequence[str] | None = None
    ) -> None:
        """Propose ``abstract_syntax`` with ``transfer_syntax`` (default: the usual four)."""
        if len(self.requested_contexts) >= 128:
            raise ValueError("at most 128 presentation contexts can be requested (PS3.8 9.3.2.2)")
        self.requested_contexts.append(build_context(abstract_syntax, _syntaxes(transfer_syntax)))

    def add_supported_context(
        self,
        abstract_syntax: str,
        transfer_syntax: str | Sequence[str] | None = None,
        scu_role: bool | None = None,
        scp_role: bool | None = None,
    ) -> None:
        """Accept ``abstract_syntax``; ``scu_role``/``scp_role`` answer role selection.

        As in pynetdicom, adding an abstract syntax that is already supported adds the new
        transfer syntaxes to its context (after those it has) and sets its roles to these.
        """
        _add_supported(
            self._supported_contexts, abstract_syntax, transfer_syntax, scu_role, scp_role
        )

    def remove_supported_context(
        self, abstract_syntax: str, transfer_syntax: str | Sequence[str] | None = None
    ) -> None:
        """Stop accepting ``abstract_syntax``, or only these transfer syntaxes of it.

        A context left without a transfer syntax goes; removing what is not there does
        nothing (as in pynetdicom).
        """
        self._supported_contexts = _without(
            self._supported_contexts, abstract_syntax, transfer_syntax
        )

    def remove_requested_context(
        self, abstract_syntax: str, transfer_syntax: str | Sequence[str] | None = None
    ) -> None:
        """Stop proposing ``abstract_syntax``, or only these transfer syntaxes of it, in every
        requested context that has it. A context left without a transfer syntax goes;
        removing what is not there does nothing (as in pynetdicom)."""
        self._requested_contexts = _without(
            self._requested_contexts, abstract_syntax, transfer_syntax
        )

    # -- requestor ---------------------------------------------------------------------------

    def associate(
        self,
        host: str,
        port: int,
        *,
        ae_title: str = "ANY-SCP",
        contexts: Sequence[PresentationContext] | None = None,
        max_pdu: int | None = None,
        ext_neg: Sequence[Any] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        evt_handlers: HandlerList | None = None,
        bind_address: tuple[str, int] | None = None,
        tls_args: tuple[ssl.SSLContext, str | None] | None = None,
    ) -> AssociateRequest:
        """Request an association; use as ``async with`` or ``await``.

        ``async with`` releases on normal exit and aborts if the body raised.
        Raises ``AssociationRejected``, ``AssociationAborted``, ``ConnectionClosed``,
        ``TimeoutError``, ``ConnectionRefused`` (also a builtin ``ConnectionRefusedError``)
        when nothing listens, or another ``OSError`` when the peer cannot be reached.

        TLS: ``ssl_context`` checks the server's certificate against ``host``;
        ``tls_args=(ssl_context, server_hostname)`` (pynetdicom's form) names the host the
        certificate must be for, when ``host`` is an address.
        """
        server_hostname: str | None = host
        if tls_args is not None:
            if ssl_context is not None:
                raise ValueError("give ssl_context or tls_args, not both")
            ssl_context, server_hostname = tls_args
        return AssociateRequest(
            self,
            host,
            port,
            ae_title=ae_title,
            contexts=contexts,
            max_pdu=max_pdu,
            ext_neg=ext_neg,
            ssl_context=ssl_context,
            evt_handlers=evt_handlers,
            bind_address=bind_address,
            server_hostname=server_hostname,
        )

    async def _request(self, request: AssociateRequest) -> Association:
        timeouts = self.timeouts
        try:
            stream: anyio.abc.ByteStream = await _transport.connect_tcp(
                request.host,
                request.port,
                local_host=request.bind_address[0] if request.bind_address else None,
                local_port=request.bind_address[1] if request.bind_address else None,
                timeout=timeouts.connect,
            )
        except TimeoutError:
            raise errors.TimeoutError(
                f"TCP connect to {request.host}:{request.port} timed out"
            ) from None
        except OSError as exc:
            if not _is_refusal(exc):
                raise
            raise errors.ConnectionRefused(
                errno.ECONNREFUSED, f"connection to {request.host}:{request.port} refused"
            ) from exc
        set_nodelay(stream)
        if request.ssl_context is not None:
            try:
                with anyio.fail_after(timeouts.tls_handshake):
                    stream = await TLSStream.wrap(
                        stream,
                        ssl_context=request.ssl_context,
                        hostname=request.server_hostname,
                        standard_compatible=False,
                    )
            except TimeoutError:
                await anyio.aclose_forcefully(stream)
                raise errors.TimeoutError("TLS handshake timed out") from None
            except BaseException:
                await anyio.aclose_forcefully(stream)
                raise
        max_pdu = self.maximum_pdu_size if request.max_pdu is None else request.max_pdu
        assoc = Association(
            self,
            stream,
            role=Role.REQUESTOR,
            local_ae_title=self.ae_title,
            remote_address=(request.host, request.port),
            timeouts=timeouts,
            max_pdu=max_pdu,
            handlers=request.evt_handlers or (),
        )
        self._associations.add(assoc)
        try:
            await assoc._notify(EVT_CONN_OPEN)
            await self._negotiate(assoc, request, max_pdu)
        except errors.AssociationRejected:
            raise  # the transport is closed already: there is no association to abort
        except BaseException:
            await assoc.abort()
            raise
        return assoc

    def _propose(self, request: AssociateRequest, max_pdu: int) -> _Proposal:
        """The A-ASSOCIATE-RQ for ``request``: made once, then remembered by what it is made
        of (everything it depends on is in the key; the values are immutable)."""
        given = tuple(request.contexts or self.requested_contexts)
        ext_neg = tuple(request.ext_neg or ())
        key = (
            given,
            ext_neg,
            request.ae_title,
            max_pdu,
            self.ae_title,
            self.implementation_class_uid,
            self.implementation_version_name,
            self.async_ops_window,
        )
        proposal = self._proposals.get(key)
        if proposal is None:
            proposal = self._make_proposal(given, ext_neg, request.ae_title, max_pdu)
            if len(self._proposals) >= _PROPOSALS_KEPT:
                self._proposals.clear()
            self._proposals[key] = proposal
        return proposal

    def _make_proposal(
        self,
        given: tuple[PresentationContext, ...],
        requested_ext_neg: tuple[Any, ...],
        called: str,
        max_pdu: int,
    ) -> _Proposal:
        contexts = assign_context_ids(given)
        if not contexts:
            raise ValueError("no presentation contexts to request: call add_requested_context()")
        ext_neg = list(requested_ext_neg)
        user_info: list[Any] = [
            MaximumLength(maximum_length=max_pdu),
            ImplementationClassUID(implementation_class_uid=self.implementation_class_uid),
        ]
        if self.async_ops_window is not None and not any(
            isinstance(i, AsynchronousOperationsWindow) for i in ext_neg
        ):
            invoked, performed = self.async_ops_window
            ext_neg.insert(
                0,
                AsynchronousOperationsWindow(
                    maximum_number_operations_invoked=invoked,
                    maximum_number_operations_performed=performed,
                ),
            )
        if self.implementation_version_name:
            ext_neg.append(
                ImplementationVersionName(
                    implementation_version_name=self.implementation_version_name
                )
            )
        # PS3.7 D.3.3: sub-items in ascending item-type order.
        user_info.extend(sorted(ext_neg, key=_item_type))
        rq = AssociateRQ(
            called_ae_title=called,
            calling_ae_title=self.ae_title,
            presentation_contexts=[
                PresentationContextRQ(
                    context_id=cx.context_id or 0,
                    abstract_syntax=cx.abstract_syntax,
                    transfer_syntaxes=cx.transfer_syntaxes,
                )
                for cx in contexts
            ],
            user_information=user_info,
        )
        roles = tuple(i for i in ext_neg if isinstance(i, RoleSelection))
        return _Proposal(contexts=contexts, rq=rq, roles=roles)

    def _negotiated(self, proposal: _Proposal, reply: AssociateAC) -> _Answer:
        """The contexts as ``reply`` answers ``proposal``: (accepted, rejected), remembered
        by both (values: the same bytes from the peer decode to an equal reply)."""
        key = (proposal.rq, reply)
        answer = self._answers.get(key)
        if answer is None:
            role_replies = [i for i in reply.user_information if isinstance(i, RoleSelection)]
            negotiated = negotiate_as_requestor(
                proposal.contexts, reply.presentation_contexts, role_replies, proposal.roles
            )
            answer = (
                tuple(cx for cx in negotiated if cx.accepted),
                tuple(cx for cx in negotiated if not cx.accepted),
            )
            if len(self._answers) >= _ANSWERS_KEPT:
                self._answers.clear()
            self._answers[key] = answer
        return answer

    async def _negotiate(
        self, assoc: Association, request: AssociateRequest, max_pdu: int
    ) -> None:
        proposal = self._propose(request, max_pdu)
        contexts, rq = proposal.contexts, proposal.rq
        assoc.associate_rq = rq
        assoc.remote_ae_title = request.ae_title
        ul = assoc._ul
        now = anyio.current_time()
        ul.send_associate_rq(rq, now=now)
        ul.connection_made(now=now)
        await assoc._flush()
        assoc.log.debug("sent A-ASSOCIATE-RQ with %d contexts", len(contexts))
        # The ACSE timeout bounds the reads (a deadline each read honours, cheaper than a
        # cancel scope around the loop: a fan-out opens hundreds of associations).
        acse = self.timeouts.acse
        deadline = None if acse is None else assoc._now() + acse
        while assoc._reply is None:
            if assoc._failure is not None:
                raise assoc._failure
            read = await assoc._read_once(deadline)
            # Nothing read: a deadline passed (a loop timer may fire a little early).
            if not read and deadline is not None and assoc._now() >= deadline:
                raise errors.TimeoutError("no A-ASSOCIATE response within the ACSE timeout")
        reply = assoc._reply
        if isinstance(reply, AssociateRJ):
            await assoc._close_transport()  # EVT_REJECTED, then EVT_CONN_CLOSE
            raise errors.AssociationRejected(reply.result, reply.source, reply.reason)
        if not isinstance(reply, AssociateAC):
            raise errors.RemoteProtocolError("unexpected reply to A-ASSOCIATE-RQ")
        assoc.associate_ac = reply
        assoc._absorb_user_information(reply.user_information)
        assoc.requested_contexts = contexts
        assoc.accepted_contexts, assoc.rejected_contexts = self._negotiated(proposal, reply)
        window = next(
            (i for i in reply.user_information if isinstance(i, AsynchronousOperationsWindow)),
            None,
        )
        if window is not None:
            # The acceptor's "performed" is how many of our requests it will work on at once.
            assoc.set_window(
                window.maximum_number_operations_performed,
                window.maximum_number_operations_invoked,
            )
        else:
            assoc.set_window(1, 1)
        assoc._mark_established()
        assoc.log.info(
            "association accepted by %s: %d of %d contexts",
            request.ae_title,
            len(assoc.accepted_contexts),
            len(contexts),
        )
        await assoc._notify(EVT_ACCEPTED)
        await assoc._notify(EVT_ESTABLISHED)

    # -- acceptor ------------------------------------------------------------------------------

    def start_server(
        self,
        address: tuple[str, int],
        *,
        evt_handlers: HandlerList | None = None,
        ssl_context: ssl.SSLContext | None = None,
        backlog: int = 4096,
        shutdown_timeout: float = 10.0,
        ae_title: str | None = None,
        contexts: Sequence[PresentationContext] | None = None,
        sock: socket.socket | None = None,
    ) -> Server:
        """A server accepting associations on ``address``; use as ``async with ... as server``.

        ``backlog`` is the listen queue; the kernel caps it at ``net.core.somaxconn``. A small
        one drops connections when many clients arrive at once (pynetdicom's 5 fails from
        about 50 simultaneous clients). ``ae_title`` and ``contexts`` (pynetdicom's names)
        give this server its own AE title and supported contexts instead of the AE's, so
        that one AE can serve several titles. ``sock`` is a listening socket made elsewhere
        (one inherited by a worker process, ``dicomio qrscp --workers``) to serve instead of
        binding ``address``; the server takes it over and closes it when it stops accepting.
        """
        from dicomio.server import Server

        return Server(
            self,
            address,
            evt_handlers=evt_handlers or (),
            ssl_context=ssl_context,
            backlog=backlog,
            shutdown_timeout=shutdown_timeout,
            ae_title=ae_title,
            contexts=None if contexts is None else _supported(contexts),
            sock=sock,
        )


class AssociateRequest:
    """``ae.associate(...)``: awaitable (returns the Association) and an async context manager."""

    def __init__(
        self,
        ae: AE,
        host: str,
        port: int,
        *,
        ae_title: str,
        contexts: Sequence[PresentationContext] | None,
        max_pdu: int | None,
        ext_neg: Sequence[Any] | None,
        ssl_context: ssl.SSLContext | None,
        evt_handlers: HandlerList | None,
        bind_address: tuple[str, int] | None,
        server_hostname: str | None = None,
    ) -> None:
        self.ae = ae
        #: The name the server's certificate must be for (None: no name, no SNI).
        self.server_hostname = server_hostname
        self.host = host
        self.port = port
        self.ae_title = ae_title
        self.contexts = contexts
        self.max_pdu = max_pdu
        self.ext_neg = ext_neg
        self.ssl_context = ssl_context
        self.evt_handlers = evt_handlers
        self.bind_address = bind_address
        self._assoc: Association | None = None

    def __await__(self) -> Generator[Any, None, Association]:
        return self.ae._request(self).__await__()

    async def __aenter__(self) -> Association:
        self._assoc = await self.ae._request(self)
        return self._assoc

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assoc = self._assoc
        if assoc is None:
            return
        try:
            if exc_type is None:
                with anyio.CancelScope(shield=True):
                    await assoc.release()
            else:
                await assoc.abort()
        finally:
            # Belt and braces: after a failed write the association may consider its
            # transport closed without having closed the socket; never leak it.
            with anyio.CancelScope(shield=True):
                await anyio.aclose_forcefully(assoc._stream)


def _is_refusal(exc: BaseException) -> bool:
    """Whether a failed connect was refused (anyio reports the last attempt as the cause)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return True
        seen = seen.__cause__
    return False


def _supported(contexts: Iterable[PresentationContext]) -> list[PresentationContext]:
    """``contexts`` as supported contexts: one per abstract syntax (see ``_add_supported``)."""
    kept: list[PresentationContext] = []
    for cx in contexts:
        _add_supported(kept, cx.abstract_syntax, cx.transfer_syntaxes, cx.scu_role, cx.scp_role)
    return kept


def _add_supported(
    contexts: list[PresentationContext],
    abstract_syntax: str,
    transfer_syntax: str | Sequence[str] | None,
    scu_role: bool | None,
    scp_role: bool | None,
) -> None:
    """Add a supported context to ``contexts``, merging one for the same abstract syntax."""
    cx = build_context(abstract_syntax, _syntaxes(transfer_syntax))
    position = next(
        (i for i, c in enumerate(contexts) if c.abstract_syntax == cx.abstract_syntax),
        len(contexts),
    )
    syntaxes = cx.transfer_syntaxes
    if position < len(contexts):
        syntaxes = tuple(dict.fromkeys((*contexts[position].transfer_syntaxes, *syntaxes)))
    contexts[position : position + 1] = [
        PresentationContext(
            context_id=None,
            abstract_syntax=cx.abstract_syntax,
            transfer_syntaxes=syntaxes,
            scu_role=scu_role,
            scp_role=scp_role,
        )
    ]


_ANY_SYNTAX = "1.2.840.10008.1.2"  # a placeholder: only the abstract syntax is wanted


def _without(
    contexts: Sequence[PresentationContext],
    abstract_syntax: str,
    transfer_syntax: str | Sequence[str] | None,
) -> list[PresentationContext]:
    """``contexts`` less ``transfer_syntax`` (all of them if None) of ``abstract_syntax``."""
    # UIDs normalized as build_context normalizes what the contexts hold.
    abstract = build_context(abstract_syntax, _ANY_SYNTAX).abstract_syntax
    dropped: set[UID] | None = None
    if transfer_syntax is not None:
        if isinstance(transfer_syntax, str):
            transfer_syntax = (transfer_syntax,)
        if not transfer_syntax:
            return list(contexts)
        dropped = set(build_context(abstract, transfer_syntax).transfer_syntaxes)
    kept: list[PresentationContext] = []
    for cx in contexts:
        if cx.abstract_syntax == abstract:
            if dropped is None:
                continue
            syntaxes = tuple(ts for ts in cx.transfer_syntaxes if ts not in dropped)
            if not syntaxes:
                continue
            if len(syntaxes) != len(cx.transfer_syntaxes):
                cx = attrs.evolve(cx, transfer_syntaxes=syntaxes)
        kept.append(cx)
    return kept


def _syntaxes(transfer_syntax: str | Sequence[str] | None) -> list[UID] | None:
    if transfer_syntax is None:
        return None
    if isinstance(transfer_syntax, str):
        return [UID(transfer_syntax)]
    return [UID(ts) for ts in transfer_syntax]


def _item_type(item: Any) -> int:
    order = {
        "AsynchronousOperationsWindow": 0x53,
        "RoleSelection": 0x54,
        "ImplementationVersionName": 0x55,
        "SOPClassExtendedNegotiation": 0x56,
        "SOPClassCommonExtendedNegotiation": 0x57,
        "UserIdentityRQ": 0x58,
    }
    return order.get(type(item).__name__, 0xFF)
