"""Presentation contexts and their negotiation, as pure functions.

Implements the presentation context negotiation of PS3.8 9.3.2.2 (the A-ASSOCIATE-RQ items),
9.3.3.2 (the A-ASSOCIATE-AC items, Table 9-18) and the SCP/SCU role selection of PS3.7
D.3.3.4. Nothing here does I/O: the association code hands in what was proposed and what came
back, and gets values back.

Roles are always the association-requestor's
--------------------------------------------
On the wire, a role selection item (54H) always speaks of the requestor's roles: SCU-role 1
means "the requestor may act as SCU for this SOP class"; the acceptor's roles are the
complement (it is SCP when the requestor is SCU, and SCU when the requestor is SCP). dicomio
keeps that convention everywhere, so both peers hold identical negotiated values:

- on a negotiated context, ``scu_role``/``scp_role`` say whether the *requestor* may act as SCU
  / SCP; ``local_roles(is_requestor=...)`` turns that into "what may I do here";
- on a context an acceptor *supports*, ``scu_role``/``scp_role`` say whether the acceptor
  agrees to the requestor taking that role when the requestor proposes it (as pynetdicom's
  ``add_supported_context(scu_role=, scp_role=)``). Both None means "no role selection for this
  SOP class": proposals go unanswered and the default roles apply. If only one is None, it
  takes its default: SCU accepted (the requestor is SCU by default anyway), SCP refused.

Without a role selection item, or without an answer to it, the requestor is SCU and the
acceptor SCP (PS3.7 D.3.3.4).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import attrs
from pydicom.uid import RE_VALID_UID, UID

from dicomio.errors import AbortReason, RemoteProtocolError
from dicomio.pdu.items import (
    PresentationContextAC,
    PresentationContextResult,
    PresentationContextRQ,
    RoleSelection,
    to_uid,
)

__all__ = [
    "DEFAULT_ROLES",
    "FrozenContextError",
    "MAX_PRESENTATION_CONTEXTS",
    "PresentationContext",
    "assign_context_ids",
    "build_context",
    "build_role",
    "negotiate_as_acceptor",
    "negotiate_as_requestor",
    "storage_scp_roles",
]

#: PS3.8 9.3.2.2: context IDs are odd integers 1-255, so at most 128 per association.
MAX_PRESENTATION_CONTEXTS = 128

_RESULTS = frozenset(PresentationContextResult)

#: The requestor's (SCU, SCP) roles when no role selection applies (PS3.7 D.3.3.4).
DEFAULT_ROLES = (True, False)


def _to_uids(values: Iterable[str | bytes]) -> tuple[UID, ...]:
    return tuple(to_uid(v) for v in values)


def _to_optional_uid(value: str | bytes | None) -> UID | None:
    return None if value is None else to_uid(value)


def _to_result(value: int | None) -> int | None:
    # The enum reads better in reprs and logs; values outside Table 9-18 stay plain ints so
    # that a peer's bad value can still be reported.
    if value is None:
        return None
    try:
        return PresentationContextResult(value)
    except ValueError:
        return int(value)


def _check_context_id(_instance: object, _attribute: object, value: int | None) -> None:
    if value is not None and not _is_valid_context_id(value):
        raise ValueError(f"presentation context ID must be odd, 1-255 (PS3.8 9.3.2.2): {value}")


def _is_valid_context_id(value: int) -> bool:
    return 1 <= value <= 255 and value % 2 == 1


@attrs.frozen(kw_only=True, cache_hash=True)
class PresentationContext:
    """One presentation context: an abstract syntax and its transfer syntaxes (PS3.8 7.1.1.13).

    Before negotiation only ``abstract_syntax`` and ``transfer_syntaxes`` matter (plus
    ``context_id`` once assigned, and the roles an acceptor agrees to, see the module doc).
    After it, ``result`` is a ``PresentationContextResult`` (or None if the peer never answered
    this context), ``transfer_syntax`` the agreed syntax when accepted, and ``scu_role`` /
    ``scp_role`` the requestor's agreed roles.
    """

    abstract_syntax: UID = attrs.field(converter=to_uid)
    transfer_syntaxes: tuple[UID, ...] = attrs.field(default=(), converter=_to_uids)
    context_id: int | None = attrs.field(default=None, validator=_check_context_id)
    result: int | None = attrs.field(default=None, converter=_to_result)
    transfer_syntax: UID | None = attrs.field(default=None, converter=_to_optional_uid)
    scu_role: bool | None = None
    scp_role: bool | None = None

    @property
    def accepted(self) -> bool:
        """True once the acceptor has accepted this context (result 0, PS3.8 Table 9-18)."""
        return self.result == PresentationContextResult.ACCEPTANCE

    def local_roles(self, *, is_requestor: bool) -> tuple[bool, bool]:
        """Return (may act as SCU, may act as SCP) for our side of a negotiated context.

        The acceptor's roles are the complement of the requestor's (PS3.7 D.3.3.4).
        """
        requestor_scu, requestor_scp = bool(self.scu_role), bool(self.scp_role)
        if is_requestor:
            return requestor_scu, requestor_scp
        return requestor_scp, requestor_scu

    def as_rq_item(self) -> PresentationContextRQ:
        """The A-ASSOCIATE-RQ presentation context item (20H) proposing this context."""
        if self.context_id is None:
            raise ValueError("the presentation context has no ID yet; see assign_context_ids()")
        return PresentationContextRQ(
            context_id=self.context_id,
            abstract_syntax=self.abstract_syntax,
            transfer_syntaxes=self.transfer_syntaxes,
        )


class FrozenContextError(attrs.exceptions.FrozenInstanceError):
    """Raised on setting or deleting an attribute of a ``PresentationContext``.

    pynetdicom's contexts are mutable (``cx.scp_role = True``); dicomio's are values, shared
    by the preset lists and by both sides of a negotiation, so changing one in place would
    change it everywhere. A subclass of attrs' ``FrozenInstanceError`` (an ``AttributeError``),
    so existing ``except`` clauses still catch it.
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.msg = (
            f"presentation contexts are immutable, so {name!r} cannot be changed: make a "
            f"changed copy with attrs.evolve(cx, {name}=...), build a new one with "
            "build_context(abstract_syntax, transfer_syntaxes), and give roles with "
            "ae.add_supported_context(..., scu_role=, scp_role=) (acceptor) or "
            "build_role(sop_class, scu_role=, scp_role=) (requestor)"
        )
        self.args = (self.msg,)


def _refuse_setattr(self: PresentationContext, name: str, value: object) -> None:
    raise FrozenContextError(name)


def _refuse_delattr(self: PresentationContext, name: str) -> None:
    raise FrozenContextError(name)


# attrs' generated __init__ and attrs.evolve() set fields through object.__setattr__, so
# replacing the frozen class's __setattr__ only changes what callers see: a clearer error.
PresentationContext.__setattr__ = _refuse_setattr  # type: ignore[method-assign,assignment]
PresentationContext.__delattr__ = _refuse_delattr  # type: ignore[method-assign,assignment]


def _checked_uid(value: str) -> UID:
    text = str(value).rstrip("\x00 ")
    # Checked before UID() is built: pydicom warns on construction from an invalid value.
    if len(text) > 64 or not RE_VALID_UID.match(text):
        raise ValueError(f"{value!r} is not a valid UID (PS3.5 Section 9)")
    return UID(text)


def build_context(
    abstract_syntax: str, transfer_syntaxes: str | Sequence[str] | None = None
) -> PresentationContext:
    """Build a presentation context to propose or support, without an ID.

    ``transfer_syntaxes`` may be one UID or several; repeats are dropped, order is kept (it is
    the preference order when we request). None means ``dicomio.sop.DEFAULT_TRANSFER_SYNTAXES``.
    """
    if transfer_syntaxes is None:
        # Imported here because dicomio.sop builds its preset lists from this module.
        from dicomio.sop import DEFAULT_TRANSFER_SYNTAXES

        transfer_syntaxes = DEFAULT_TRANSFER_SYNTAXES
    elif isinstance(transfer_syntaxes, str):
        transfer_syntaxes = (transfer_syntaxes,)
    syntaxes = tuple(dict.fromkeys(_checked_uid(ts) for ts in transfer_syntaxes))
    if not syntaxes:
        raise ValueError("a presentation context needs at least one transfer syntax")
    return PresentationContext(
        abstract_syntax=_checked_uid(abstract_syntax), transfer_syntaxes=syntaxes
    )


def build_role(sop_class: str, *, scu_role: bool = False, scp_role: bool = False) -> RoleSelection:
    """Build the role selection item a requestor proposes for ``sop_class`` (PS3.7 D.3.3.4).

    The standard allows three proposals: SCU, SCP, or both; proposing neither is an error.
    """
    if not (scu_role or scp_role):
        raise ValueError("a role selection must propose the SCU role, the SCP role, or both")
    return RoleSelection(sop_class_uid=sop_class, scu_role=scu_role, scp_role=scp_role)


def storage_scp_roles(
    contexts: Iterable[PresentationContext], *, scu_role: bool = False
) -> list[RoleSelection]:
    """Propose the SCP role for every Storage SOP class among ``contexts``, once per class.

    A C-GET SCU must act as the Storage SCP on its own association to receive the C-STORE
    sub-operations (PS3.4 C.4.3), so it proposes that role (PS3.7 D.3.3.4). With
    ``scu_role=True`` the SCU role is proposed as well, for an association that also sends.
    Only SOP classes that ``dicomio.sop.is_storage`` recognises are included; add
    ``build_role(uid, scp_role=True)`` for a private storage class.
    """
    from dicomio.sop import is_storage

    sop_classes = dict.fromkeys(
        cx.abstract_syntax for cx in contexts if is_storage(cx.abstract_syntax)
    )
    return [build_role(uid, scu_role=scu_role, scp_role=True) for uid in sop_classes]


def assign_context_ids(contexts: Sequence[PresentationContext]) -> tuple[PresentationContext, ...]:
    """Number the contexts 1, 3, 5, ... in order (PS3.8 9.3.2.2); any old IDs are replaced.

    Raises ``ValueError`` for more than 128 contexts, the most odd IDs 1-255 can name.
    """
    if len(contexts) > MAX_PRESENTATION_CONTEXTS:
        raise ValueError(
            f"{len(contexts)} presentation contexts proposed; PS3.8 9.3.2.2 allows at most "
            f"{MAX_PRESENTATION_CONTEXTS} (odd IDs 1-255)"
        )
    return tuple(attrs.evolve(cx, context_id=2 * i + 1) for i, cx in enumerate(contexts))


def _first_per_sop_class(items: Iterable[RoleSelection]) -> dict[UID, RoleSelection]:
    # PS3.7 D.3.3.4 allows one item per SOP class; if a peer repeats one, the first counts.
    found: dict[UID, RoleSelection] = {}
    for item in items:
        found.setdefault(item.sop_class_uid, item)
    return found


def _agreed_roles(request: RoleSelection | None, reply: RoleSelection | None) -> tuple[bool, bool]:
    """The requestor's (SCU, SCP) roles after D.3.3.4, computed the same way on both sides."""
    if request is None or reply is None or not (request.scu_role or request.scp_role):
        # No proposal, no answer, or a proposal of neither role (not one of the three values
        # D.3.3.4 allows, so treated as absent): the default roles apply.
        return DEFAULT_ROLES
    # A role counts only if the requestor proposed it and the acceptor accepted it; the
    # requestor ignores a 1 for a role it did not propose.
    return (request.scu_role and reply.scu_role, request.scp_role and reply.scp_role)


def _role_reply(request: RoleSelection, allowed: PresentationContext) -> RoleSelection | None:
    """The acceptor's answer to one role proposal, or None to leave it unanswered."""
    if allowed.scu_role is None and allowed.scp_role is None:
        return None
    if not (request.scu_role or request.scp_role):
        return None
    allow_scu = True if allowed.scu_role is None else allowed.scu_role
    allow_scp = bool(allowed.scp_role)
    # D.3.3.4: echo 1 only for a role that was proposed, 0 to turn it down.
    return RoleSelection(
        sop_class_uid=request.sop_class_uid,
        scu_role=request.scu_role and allow_scu,
        scp_role=request.scp_role and allow_scp,
    )


def _merge_supported(supported: Iterable[PresentationContext]) -> dict[UID, PresentationContext]:
    # Several entries for one abstract syntax pool their transfer syntaxes; the first entry
    # that configures roles decides them.
    merged: dict[UID, PresentationContext] = {}
    for cx in supported:
        prior = merged.get(cx.abstract_syntax)
        if prior is None:
            merged[cx.abstract_syntax] = cx
            continue
        has_roles = prior.scu_role is not None or prior.scp_role is not None
        merged[cx.abstract_syntax] = attrs.evolve(
            prior if has_roles else cx,
            transfer_syntaxes=tuple(dict.fromkeys(prior.transfer_syntaxes + cx.transfer_syntaxes)),
        )
    return merged


def _invalid(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(message, abort_reason=AbortReason.INVALID_PDU_PARAMETER_VALUE)


def negotiate_as_acceptor(
    requested: Sequence[PresentationContextRQ],
    supported: Sequence[PresentationContext],
    role_requests: Sequence[RoleSelection] = (),
    *,
    accept_any_storage: bool = False,
    any_storage_syntaxes: Sequence[str] | None = None,
    acceptor_order: bool = False,
) -> tuple[list[PresentationContextAC], list[RoleSelection], tuple[PresentationContext, ...]]:
    """Answer an A-ASSOCIATE-RQ's presentation contexts and role selections.

    Returns, in the requestor's order:

    - one A-ASSOCIATE-AC item per requested context (PS3.8 9.3.3.2, Table 9-18): result 0
      with the first of the *requestor's* transfer syntaxes that we support (PS3.8 lets the
      acceptor pick any one; following the requestor's preference is the predictable choice),
      or, with ``acceptor_order``, the first of *ours* that was proposed (a storage SCP that
      prefers, say, uncompressed data whatever order the requestor lists);
      3 if the abstract syntax is not supported, 4 if none of its transfer syntaxes is;
    - the role selection replies (PS3.7 D.3.3.4): one for each proposed SOP class that has an
      accepted context and a supported entry that configures roles (see the module doc);
    - every requested context as a ``PresentationContext`` with its result, agreed transfer
      syntax and, if accepted, the requestor's agreed roles.

    ``accept_any_storage`` also accepts, in the requestor's first transfer syntax (a storage
    SCP keeps the bytes as sent, compressed or not), an abstract syntax that ``supported``
    lacks if it is a Storage SOP class or a UID pydicom does not know (a private or newer SOP class, in practice nearly always a storage class). Known
    non-storage classes such as Q/R or worklist models are still refused: a storage SCP has no
    handler for them. Such contexts get the default roles. ``any_storage_syntaxes`` limits
    them to those transfer syntaxes (chosen as for a supported context), so that a server
    told to accept only some syntaxes accepts no others for a class it does not know.

    Raises ``RemoteProtocolError`` if context IDs are not odd, 1-255, or are repeated.
    """
    from dicomio.sop import is_known, is_storage

    seen_ids: set[int] = set()
    for rq in requested:
        if not _is_valid_context_id(rq.context_id):
            raise _invalid(f"presentation context ID {rq.context_id} is not odd, 1-255")
        if rq.context_id in seen_ids:
            raise _invalid(f"presentation context ID {rq.context_id} proposed twice")
        seen_ids.add(rq.context_id)

    by_syntax = _merge_supported(supported)
    proposals = _first_per_sop_class(role_requests)

    items: list[PresentationContextAC] = []
    contexts: list[PresentationContext] = []
    accepted_syntaxes: set[UID] = set()
    for rq in requested:
        ours = by_syntax.get(rq.abstract_syntax)
        if (
            ours is None
            and accept_any_storage
            and (is_storage(rq.abstract_syntax) or not is_known(rq.abstract_syntax))
        ):
            # A storage SCP keeps the bytes as they were sent, so it can take any transfer
            # syntax: the requestor's first choice, compressed or not, unless limited.
            ours = PresentationContext(
                abstract_syntax=rq.abstract_syntax,
                transfer_syntaxes=(
                    rq.transfer_syntaxes[:1]
                    if any_storage_syntaxes is None
                    else [UID(ts) for ts in any_storage_syntaxes]
                ),
            )
        agreed: UID | None = None
        if ours is None:
            result = PresentationContextResult.ABSTRACT_SYNTAX_NOT_SUPPORTED
        else:
            first, then = (
                (ours.transfer_syntaxes, rq.transfer_syntaxes)
                if acceptor_order
                else (rq.transfer_syntaxes, ours.transfer_syntaxes)
            )
            agreed = next((ts for ts in first if ts in then), None)
            result = (
                PresentationContextResult.TRANSFER_SYNTAXES_NOT_SUPPORTED
                if agreed is None
                else PresentationContextResult.ACCEPTANCE
            )
        items.append(
            PresentationContextAC(context_id=rq.context_id, result=result, transfer_syntax=agreed)
        )
        contexts.append(
            PresentationContext(
                context_id=rq.context_id,
                abstract_syntax=rq.abstract_syntax,
                transfer_syntaxes=rq.transfer_syntaxes,
                result=result,
                transfer_syntax=agreed,
            )
        )
        if agreed is not None:
            accepted_syntaxes.add(rq.abstract_syntax)

    replies: dict[UID, RoleSelection] = {}
    for sop_class, request in proposals.items():
        allowed = by_syntax.get(sop_class)
        if allowed is None or sop_class not in accepted_syntaxes:
            continue
        reply = _role_reply(request, allowed)
        if reply is not None:
            replies[sop_class] = reply

    negotiated = tuple(
        _with_roles(cx, proposals.get(cx.abstract_syntax), replies.get(cx.abstract_syntax))
        for cx in contexts
    )
    return items, list(replies.values()), negotiated


def _with_roles(
    cx: PresentationContext, request: RoleSelection | None, reply: RoleSelection | None
) -> PresentationContext:
    if not cx.accepted:
        return cx
    scu, scp = _agreed_roles(request, reply)
    return attrs.evolve(cx, scu_role=scu, scp_role=scp)


def negotiate_as_requestor(
    proposed: Sequence[PresentationContext],
    results: Sequence[PresentationContextAC],
    role_replies: Sequence[RoleSelection] = (),
    role_requests: Sequence[RoleSelection] = (),
) -> tuple[PresentationContext, ...]:
    """Merge the A-ASSOCIATE-AC answers into the contexts we proposed (PS3.8 9.3.3.2).

    Returns every proposed context, in order, with its result, the agreed transfer syntax and,
    when accepted, the requestor's roles after PS3.7 D.3.3.4 (defaults where the acceptor did
    not answer a role proposal). A context the acceptor did not answer keeps ``result`` None.

    Raises ``RemoteProtocolError`` (reason: invalid PDU parameter value) for an answer to a
    context ID we did not propose, two answers to one ID, an unknown result value, or an
    acceptance with a transfer syntax we did not propose. ``ValueError`` if a proposed context
    has no ID.
    """
    by_id: dict[int, PresentationContext] = {}
    for cx in proposed:
        if cx.context_id is None:
            raise ValueError("proposed presentation contexts need IDs; see assign_context_ids()")
        if cx.context_id in by_id:
            raise ValueError(f"presentation context ID {cx.context_id} is used twice")
        by_id[cx.context_id] = cx

    answers: dict[int, PresentationContextAC] = {}
    for ac in results:
        ours = by_id.get(ac.context_id)
        if ours is None:
            raise _invalid(
                f"A-ASSOCIATE-AC answers presentation context {ac.context_id}, never proposed"
            )
        if ac.context_id in answers:
            raise _invalid(f"A-ASSOCIATE-AC answers presentation context {ac.context_id} twice")
        if ac.result not in _RESULTS:
            raise _invalid(f"presentation context {ac.context_id}: unknown result {ac.result}")
        if ac.result == PresentationContextResult.ACCEPTANCE and (
            ac.transfer_syntax not in ours.transfer_syntaxes
        ):
            raise _invalid(
                f"presentation context {ac.context_id} accepted with transfer syntax "
                f"{ac.transfer_syntax}, which was not proposed"
            )
        answers[ac.context_id] = ac

    proposals = _first_per_sop_class(role_requests)
    replies = _first_per_sop_class(role_replies)
    negotiated: list[PresentationContext] = []
    for context_id, cx in by_id.items():
        answer = answers.get(context_id)
        if answer is None:
            negotiated.append(cx)
            continue
        accepted = answer.result == PresentationContextResult.ACCEPTANCE
        scu: bool | None = None
        scp: bool | None = None
        if accepted:
            scu, scp = _agreed_roles(
                proposals.get(cx.abstract_syntax), replies.get(cx.abstract_syntax)
            )
        # PS3.8 Table 9-18: the transfer syntax of a rejected context is not significant.
        negotiated.append(
            attrs.evolve(
                cx,
                result=answer.result,
                transfer_syntax=answer.transfer_syntax if accepted else None,
                scu_role=scu,
                scp_role=scp,
            )
        )
    return tuple(negotiated)
