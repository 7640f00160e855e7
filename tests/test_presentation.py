"""Presentation contexts and their negotiation (PS3.8 9.3.2.2, 9.3.3.2; PS3.7 D.3.3.4)."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)

from dicomio import presentation
from dicomio.errors import AbortReason, RemoteProtocolError
from dicomio.pdu.items import (
    PresentationContextAC,
    PresentationContextResult,
    PresentationContextRQ,
    RoleSelection,
)
from dicomio.presentation import (
    DEFAULT_ROLES,
    PresentationContext,
    assign_context_ids,
    build_context,
    build_role,
    negotiate_as_acceptor,
    negotiate_as_requestor,
    storage_scp_roles,
)
from dicomio.sop import (
    DEFAULT_TRANSFER_SYNTAXES,
    CTImageStorage,
    MRImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    StorageCommitmentPushModel,
    Verification,
)

PRIVATE_SOP_CLASS = "1.2.826.0.1.3680043.9.9999.1"
ACCEPT = PresentationContextResult.ACCEPTANCE
NO_ABSTRACT = PresentationContextResult.ABSTRACT_SYNTAX_NOT_SUPPORTED
NO_TRANSFER = PresentationContextResult.TRANSFER_SYNTAXES_NOT_SUPPORTED


def rq(context_id: int, abstract: str, *syntaxes: str) -> PresentationContextRQ:
    return PresentationContextRQ(
        context_id=context_id, abstract_syntax=abstract, transfer_syntaxes=syntaxes
    )


def supported(
    abstract: str,
    *syntaxes: str,
    scu_role: bool | None = None,
    scp_role: bool | None = None,
) -> PresentationContext:
    return attrs.evolve(
        build_context(abstract, syntaxes or None), scu_role=scu_role, scp_role=scp_role
    )


def assert_invalid_parameter(excinfo: pytest.ExceptionInfo[RemoteProtocolError]) -> None:
    assert excinfo.value.abort_reason is AbortReason.INVALID_PDU_PARAMETER_VALUE


# --- building contexts and roles ---------------------------------------------------------


def test_build_context_defaults_to_default_transfer_syntaxes() -> None:
    cx = build_context(Verification)
    assert cx.abstract_syntax == Verification
    assert cx.transfer_syntaxes == DEFAULT_TRANSFER_SYNTAXES
    assert cx.context_id is None and cx.result is None and not cx.accepted


def test_build_context_takes_one_or_many_syntaxes_and_drops_repeats() -> None:
    assert build_context(CTImageStorage, JPEGBaseline8Bit).transfer_syntaxes == (JPEGBaseline8Bit,)
    cx = build_context(
        CTImageStorage, [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    )
    assert cx.transfer_syntaxes == (ImplicitVRLittleEndian, ExplicitVRLittleEndian)


@pytest.mark.parametrize(
    ("abstract", "syntaxes"),
    [
        ("CTImageStorage", None),  # a keyword, not a UID
        (CTImageStorage, ["1.2.840.10008.1.2.x"]),
        (CTImageStorage, []),
    ],
)
def test_build_context_rejects_bad_input(abstract: str, syntaxes: list[str] | None) -> None:
    with pytest.raises(ValueError):
        build_context(abstract, syntaxes)


@pytest.mark.parametrize("context_id", [0, 2, 256, 257, -1])
def test_context_id_must_be_odd_1_to_255(context_id: int) -> None:
    with pytest.raises(ValueError):
        PresentationContext(abstract_syntax=Verification, context_id=context_id)


def test_assign_context_ids_numbers_odd_from_one() -> None:
    contexts = assign_context_ids([build_context(Verification)] * 3)
    assert [cx.context_id for cx in contexts] == [1, 3, 5]
    renumbered = assign_context_ids(contexts[::-1])
    assert [cx.context_id for cx in renumbered] == [1, 3, 5]


def test_assign_context_ids_allows_128_and_no_more() -> None:
    contexts = assign_context_ids([build_context(Verification)] * 128)
    assert contexts[-1].context_id == 255
    with pytest.raises(ValueError, match="128"):
        assign_context_ids([build_context(Verification)] * 129)


def test_as_rq_item_needs_an_id() -> None:
    with pytest.raises(ValueError):
        build_context(Verification).as_rq_item()
    (cx,) = assign_context_ids([build_context(Verification, ImplicitVRLittleEndian)])
    assert cx.as_rq_item() == rq(1, Verification, ImplicitVRLittleEndian)


def test_build_role() -> None:
    assert build_role(CTImageStorage, scp_role=True) == RoleSelection(
        sop_class_uid=CTImageStorage, scu_role=False, scp_role=True
    )
    with pytest.raises(ValueError):
        build_role(CTImageStorage)


def test_storage_scp_roles_once_per_storage_class() -> None:
    contexts = [
        build_context(Verification),
        build_context(CTImageStorage, ImplicitVRLittleEndian),
        build_context(CTImageStorage, JPEGBaseline8Bit),
        build_context(PatientRootQueryRetrieveInformationModelGet),
        build_context(StorageCommitmentPushModel),
        build_context(MRImageStorage),
    ]
    roles = storage_scp_roles(contexts)
    assert roles == [
        RoleSelection(sop_class_uid=CTImageStorage, scu_role=False, scp_role=True),
        RoleSelection(sop_class_uid=MRImageStorage, scu_role=False, scp_role=True),
    ]
    assert all(r.scu_role for r in storage_scp_roles(contexts, scu_role=True))


# --- acceptor ---------------------------------------------------------------------------


def test_acceptor_picks_first_of_requestors_syntaxes_that_it_supports() -> None:
    items, replies, contexts = negotiate_as_acceptor(
        [rq(1, CTImageStorage, JPEGBaseline8Bit, ImplicitVRLittleEndian, ExplicitVRLittleEndian)],
        [supported(CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian)],
    )
    assert items == [
        PresentationContextAC(context_id=1, result=0, transfer_syntax=ImplicitVRLittleEndian)
    ]
    assert replies == []
    (cx,) = contexts
    assert cx.accepted and cx.transfer_syntax == ImplicitVRLittleEndian
    assert (cx.scu_role, cx.scp_role) == DEFAULT_ROLES


def test_acceptor_results_in_request_order() -> None:
    items, _, contexts = negotiate_as_acceptor(
        [
            rq(1, Verification, ImplicitVRLittleEndian),
            rq(3, MRImageStorage, ImplicitVRLittleEndian),
            rq(5, CTImageStorage, JPEGBaseline8Bit),
            rq(7, CTImageStorage, ExplicitVRBigEndian, ImplicitVRLittleEndian),
        ],
        [supported(Verification), supported(CTImageStorage)],
    )
    assert [(i.context_id, i.result, i.transfer_syntax) for i in items] == [
        (1, ACCEPT, ImplicitVRLittleEndian),
        (3, NO_ABSTRACT, None),
        (5, NO_TRANSFER, None),
        (7, ACCEPT, ExplicitVRBigEndian),
    ]
    assert [cx.result for cx in contexts] == [ACCEPT, NO_ABSTRACT, NO_TRANSFER, ACCEPT]
    # Rejected contexts have no roles.
    assert (contexts[1].scu_role, contexts[1].scp_role) == (None, None)


def test_acceptor_rejects_empty_transfer_syntax_list() -> None:
    items, _, _ = negotiate_as_acceptor([rq(1, Verification)], [supported(Verification)])
    assert items[0].result == NO_TRANSFER


def test_acceptor_pools_syntaxes_of_repeated_supported_entries() -> None:
    items, _, _ = negotiate_as_acceptor(
        [rq(1, CTImageStorage, JPEGBaseline8Bit)],
        [
            supported(CTImageStorage, ImplicitVRLittleEndian),
            supported(CTImageStorage, JPEGBaseline8Bit),
        ],
    )
    assert items[0].transfer_syntax == JPEGBaseline8Bit


@pytest.mark.parametrize(
    "ids",
    [[2], [0], [257], [1, 1], [3, 5, 3]],
)
def test_acceptor_rejects_bad_context_ids(ids: list[int]) -> None:
    with pytest.raises(RemoteProtocolError) as excinfo:
        negotiate_as_acceptor([rq(i, Verification, ImplicitVRLittleEndian) for i in ids], [])
    assert_invalid_parameter(excinfo)


@pytest.mark.parametrize(
    ("abstract", "accepted"),
    [
        (CTImageStorage, True),
        ("1.2.840.10008.5.1.4.1.1.6", True),  # a retired storage class
        (PRIVATE_SOP_CLASS, True),  # unknown: treated as a private storage class
        (PatientRootQueryRetrieveInformationModelFind, False),
        (StorageCommitmentPushModel, False),
        (Verification, False),
    ],
)
def test_accept_any_storage(abstract: str, accepted: bool) -> None:
    request = [rq(1, abstract, JPEGBaseline8Bit, ExplicitVRLittleEndian)]
    items, _, contexts = negotiate_as_acceptor(request, [], accept_any_storage=True)
    assert contexts[0].accepted is accepted
    if accepted:
        # A storage SCP stores bytes as sent: the requestor's first choice, even compressed.
        assert items[0].transfer_syntax == JPEGBaseline8Bit
        assert (contexts[0].scu_role, contexts[0].scp_role) == DEFAULT_ROLES
    else:
        assert items[0].result == NO_ABSTRACT
    # Without the flag nothing unsupported is accepted.
    items, _, _ = negotiate_as_acceptor(request, [])
    assert items[0].result == NO_ABSTRACT


def test_accept_any_storage_leaves_supported_syntaxes_alone() -> None:
    items, _, _ = negotiate_as_acceptor(
        [rq(1, CTImageStorage, ExplicitVRLittleEndian)],
        [supported(CTImageStorage, JPEGBaseline8Bit)],
        accept_any_storage=True,
    )
    assert items[0].result == NO_TRANSFER


@pytest.mark.parametrize("acceptor_order", [False, True])
def test_accept_any_storage_within_given_syntaxes(acceptor_order: bool) -> None:
    """A server told to accept only some syntaxes accepts no others for a class it does not
    know, and picks among them by the same rule as for its supported contexts."""
    limit = (ImplicitVRLittleEndian, ExplicitVRLittleEndian)
    compressed_only = rq(1, PRIVATE_SOP_CLASS, JPEGBaseline8Bit)
    both = rq(
        3, PRIVATE_SOP_CLASS, JPEGBaseline8Bit, ExplicitVRLittleEndian, ImplicitVRLittleEndian
    )
    items, _, contexts = negotiate_as_acceptor(
        [compressed_only, both],
        [],
        accept_any_storage=True,
        any_storage_syntaxes=limit,
        acceptor_order=acceptor_order,
    )
    assert items[0].result == NO_TRANSFER
    assert not contexts[0].accepted
    assert contexts[1].accepted
    assert items[1].transfer_syntax == (
        ImplicitVRLittleEndian if acceptor_order else ExplicitVRLittleEndian
    )


# --- role selection (PS3.7 D.3.3.4) -----------------------------------------------------

# (requestor proposes (SCU, SCP), acceptor agrees to (SCU, SCP) with None = not configured,
#  reply sent or None, the requestor's resulting (SCU, SCP) roles)
ROLE_TABLE = [
    ((True, False), (None, None), None, (True, False)),
    ((False, True), (None, None), None, (True, False)),
    ((True, True), (None, None), None, (True, False)),
    ((True, False), (True, True), (True, False), (True, False)),
    ((False, True), (True, True), (False, True), (False, True)),
    ((True, True), (True, True), (True, True), (True, True)),
    ((True, False), (False, True), (False, False), (False, False)),
    ((False, True), (False, True), (False, True), (False, True)),
    ((True, True), (False, True), (False, True), (False, True)),
    ((True, False), (True, False), (True, False), (True, False)),
    ((False, True), (True, False), (False, False), (False, False)),
    ((True, True), (True, False), (True, False), (True, False)),
    ((True, False), (False, False), (False, False), (False, False)),
    ((False, True), (False, False), (False, False), (False, False)),
    ((True, True), (False, False), (False, False), (False, False)),
    # One of the two left unset: SCU defaults to accepted, SCP to refused.
    ((True, True), (None, True), (True, True), (True, True)),
    ((False, True), (None, True), (False, True), (False, True)),
    ((True, True), (True, None), (True, False), (True, False)),
    ((False, True), (None, False), (False, False), (False, False)),
    # Proposing neither role is not one of the three D.3.3.4 values: treated as absent.
    ((False, False), (True, True), None, (True, False)),
]


@pytest.mark.parametrize(("proposal", "allowed", "reply", "roles"), ROLE_TABLE)
def test_role_selection_table(
    proposal: tuple[bool, bool],
    allowed: tuple[bool | None, bool | None],
    reply: tuple[bool, bool] | None,
    roles: tuple[bool, bool],
) -> None:
    request = RoleSelection(
        sop_class_uid=CTImageStorage, scu_role=proposal[0], scp_role=proposal[1]
    )
    proposed = assign_context_ids([build_context(CTImageStorage, ImplicitVRLittleEndian)])
    items, replies, acceptor_view = negotiate_as_acceptor(
        [cx.as_rq_item() for cx in proposed],
        [supported(CTImageStorage, scu_role=allowed[0], scp_role=allowed[1])],
        [request],
    )
    expected_replies = (
        []
        if reply is None
        else [RoleSelection(sop_class_uid=CTImageStorage, scu_role=reply[0], scp_role=reply[1])]
    )
    assert replies == expected_replies
    requestor_view = negotiate_as_requestor(proposed, items, replies, [request])
    for cx in (acceptor_view[0], requestor_view[0]):
        assert (cx.scu_role, cx.scp_role) == roles
    # The acceptor's own roles are the complement of the requestor's.
    assert acceptor_view[0].local_roles(is_requestor=False) == roles[::-1]
    assert requestor_view[0].local_roles(is_requestor=True) == roles


def test_role_reply_only_for_accepted_supported_classes() -> None:
    requests = [
        build_role(CTImageStorage, scp_role=True),
        build_role(MRImageStorage, scp_role=True),  # not supported
        build_role(Verification, scu_role=True, scp_role=True),  # supported, but rejected
        build_role(CTImageStorage, scu_role=True),  # repeated: the first item counts
    ]
    _, replies, _ = negotiate_as_acceptor(
        [rq(1, CTImageStorage, ImplicitVRLittleEndian), rq(3, Verification, JPEGBaseline8Bit)],
        [
            supported(CTImageStorage, scu_role=True, scp_role=True),
            supported(Verification, scu_role=True, scp_role=True),
        ],
        requests,
    )
    assert replies == [RoleSelection(sop_class_uid=CTImageStorage, scu_role=False, scp_role=True)]


def test_role_applies_to_every_context_of_the_sop_class() -> None:
    proposed = assign_context_ids(
        [
            build_context(CTImageStorage, ImplicitVRLittleEndian),
            build_context(CTImageStorage, JPEGBaseline8Bit),
        ]
    )
    requests = storage_scp_roles(proposed)
    items, replies, acceptor_view = negotiate_as_acceptor(
        [cx.as_rq_item() for cx in proposed],
        [supported(CTImageStorage, ImplicitVRLittleEndian, JPEGBaseline8Bit, scp_role=True)],
        requests,
    )
    requestor_view = negotiate_as_requestor(proposed, items, replies, requests)
    assert acceptor_view == requestor_view
    assert all((cx.scu_role, cx.scp_role) == (False, True) for cx in requestor_view)


# --- requestor --------------------------------------------------------------------------


def proposal() -> tuple[PresentationContext, ...]:
    return assign_context_ids(
        [
            build_context(Verification, ImplicitVRLittleEndian),
            build_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]),
            build_context(MRImageStorage, ImplicitVRLittleEndian),
        ]
    )


def ac(context_id: int, result: int, syntax: str | None = None) -> PresentationContextAC:
    return PresentationContextAC(context_id=context_id, result=result, transfer_syntax=syntax)


def test_requestor_merges_results() -> None:
    contexts = negotiate_as_requestor(
        proposal(),
        [
            ac(3, ACCEPT, ImplicitVRLittleEndian),
            ac(1, ACCEPT, ImplicitVRLittleEndian),
            ac(5, PresentationContextResult.USER_REJECTION, ImplicitVRLittleEndian),
        ],
    )
    assert [cx.context_id for cx in contexts] == [1, 3, 5]
    assert [cx.result for cx in contexts] == [ACCEPT, ACCEPT, 1]
    assert contexts[1].transfer_syntax == ImplicitVRLittleEndian
    assert contexts[1].transfer_syntaxes == (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
    # A rejected context's transfer syntax is not significant (PS3.8 Table 9-18).
    assert contexts[2].transfer_syntax is None and not contexts[2].accepted
    assert contexts[2].result is PresentationContextResult.USER_REJECTION
    assert (contexts[0].scu_role, contexts[0].scp_role) == DEFAULT_ROLES
    assert (contexts[2].scu_role, contexts[2].scp_role) == (None, None)


def test_requestor_keeps_unanswered_contexts_unresolved() -> None:
    contexts = negotiate_as_requestor(proposal(), [ac(1, ACCEPT, ImplicitVRLittleEndian)])
    assert contexts[1] == proposal()[1]
    assert contexts[1].result is None and not contexts[1].accepted


def test_requestor_defaults_roles_when_the_acceptor_does_not_answer() -> None:
    requests = [build_role(CTImageStorage, scp_role=True)]
    contexts = negotiate_as_requestor(
        proposal(), [ac(3, ACCEPT, ImplicitVRLittleEndian)], [], requests
    )
    assert (contexts[1].scu_role, contexts[1].scp_role) == DEFAULT_ROLES


def test_requestor_ignores_acceptance_of_a_role_it_did_not_propose() -> None:
    contexts = negotiate_as_requestor(
        proposal(),
        [ac(3, ACCEPT, ImplicitVRLittleEndian), ac(5, ACCEPT, ImplicitVRLittleEndian)],
        [
            RoleSelection(sop_class_uid=CTImageStorage, scu_role=True, scp_role=True),
            # An answer to a proposal never made: ignored, defaults apply.
            RoleSelection(sop_class_uid=MRImageStorage, scu_role=False, scp_role=True),
        ],
        [build_role(CTImageStorage, scp_role=True)],
    )
    assert (contexts[1].scu_role, contexts[1].scp_role) == (False, True)
    assert (contexts[2].scu_role, contexts[2].scp_role) == DEFAULT_ROLES


@pytest.mark.parametrize(
    "answers",
    [
        [ac(7, ACCEPT, ImplicitVRLittleEndian)],  # never proposed
        [ac(1, ACCEPT, ImplicitVRLittleEndian), ac(1, ACCEPT, ImplicitVRLittleEndian)],
        [ac(1, ACCEPT, ExplicitVRLittleEndian)],  # syntax not proposed for this context
        [ac(1, ACCEPT, None)],  # accepted without a syntax
        [ac(1, 5, ImplicitVRLittleEndian)],  # no such result (Table 9-18)
    ],
)
def test_requestor_rejects_invalid_answers(answers: list[PresentationContextAC]) -> None:
    with pytest.raises(RemoteProtocolError) as excinfo:
        negotiate_as_requestor(proposal(), answers)
    assert_invalid_parameter(excinfo)


def test_requestor_needs_ids() -> None:
    with pytest.raises(ValueError):
        negotiate_as_requestor([build_context(Verification)], [])
    (cx,) = assign_context_ids([build_context(Verification)])
    with pytest.raises(ValueError):
        negotiate_as_requestor([cx, cx], [])


# --- property: both sides agree -----------------------------------------------------------

ABSTRACTS = [
    Verification,
    CTImageStorage,
    MRImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    PRIVATE_SOP_CLASS,
]
SYNTAXES = [
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
]
optional_bool = st.sampled_from([None, True, False])
syntax_lists = st.lists(st.sampled_from(SYNTAXES), unique=True, max_size=len(SYNTAXES))

proposed_contexts = st.lists(
    st.builds(
        PresentationContext,
        abstract_syntax=st.sampled_from(ABSTRACTS),
        transfer_syntaxes=syntax_lists,
    ),
    max_size=12,
).map(assign_context_ids)
supported_contexts = st.lists(
    st.builds(
        PresentationContext,
        abstract_syntax=st.sampled_from(ABSTRACTS),
        transfer_syntaxes=syntax_lists,
        scu_role=optional_bool,
        scp_role=optional_bool,
    ),
    max_size=8,
)
role_items = st.lists(
    st.builds(
        RoleSelection,
        sop_class_uid=st.sampled_from(ABSTRACTS),
        scu_role=st.booleans(),
        scp_role=st.booleans(),
    ),
    max_size=6,
)


@given(proposed_contexts, supported_contexts, role_items, st.booleans())
def test_acceptor_and_requestor_agree(
    proposed: tuple[PresentationContext, ...],
    ours: list[PresentationContext],
    requests: list[RoleSelection],
    any_storage: bool,
) -> None:
    items, replies, acceptor_view = negotiate_as_acceptor(
        [cx.as_rq_item() for cx in proposed], ours, requests, accept_any_storage=any_storage
    )
    requestor_view = negotiate_as_requestor(proposed, items, replies, requests)
    assert acceptor_view == requestor_view

    assert [item.context_id for item in items] == [cx.context_id for cx in proposed]
    supported_syntaxes = {(cx.abstract_syntax, ts) for cx in ours for ts in cx.transfer_syntaxes}
    for cx, item in zip(proposed, items, strict=True):
        if item.result == ACCEPT:
            assert item.transfer_syntax in cx.transfer_syntaxes
            assert any_storage or (cx.abstract_syntax, item.transfer_syntax) in supported_syntaxes
        else:
            assert item.transfer_syntax is None

    proposals: dict[str, RoleSelection] = {}
    for request in requests:
        proposals.setdefault(request.sop_class_uid, request)
    assert len({r.sop_class_uid for r in replies}) == len(replies)
    for reply in replies:
        request = proposals[reply.sop_class_uid]
        # D.3.3.4: never accept a role that was not proposed.
        assert request.scu_role or not reply.scu_role
        assert request.scp_role or not reply.scp_role

    for cx in requestor_view:
        if cx.accepted:
            assert isinstance(cx.scu_role, bool) and isinstance(cx.scp_role, bool)
            if cx.abstract_syntax not in {r.sop_class_uid for r in replies}:
                assert (cx.scu_role, cx.scp_role) == DEFAULT_ROLES
        else:
            assert cx.scu_role is None and cx.scp_role is None


def test_all_lists_public_names() -> None:
    public = {
        name
        for name, value in vars(presentation).items()
        if not name.startswith("_")
        and getattr(value, "__module__", presentation.__name__) == presentation.__name__
        and not isinstance(value, type(presentation))
    }
    assert public == set(presentation.__all__)
