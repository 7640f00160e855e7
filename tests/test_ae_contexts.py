"""``AE``'s presentation context lists and ``active_associations``, as pynetdicom users expect.

The context scenarios are run on a dicomio ``AE`` and on a pynetdicom ``AE`` side by side
(pynetdicom is a test-only peer); the contexts each ends with must name the same abstract and
transfer syntaxes and roles.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dicomio import AE, evt
from dicomio.sop import StoragePresentationContexts
from tests.conftest import LOOPBACK

VERIFICATION = "1.2.840.10008.1.1"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
IMPLICIT, EXPLICIT, BIG, DEFLATED = (
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.1.99",
)

Step = tuple[str, tuple[Any, ...], dict[str, Any]]

syntax_lists = st.lists(
    st.sampled_from([IMPLICIT, EXPLICIT, BIG, DEFLATED]), min_size=1, max_size=3
)
roles = st.sampled_from([None, True, False])
steps: st.SearchStrategy[list[Step]] = st.lists(
    st.one_of(
        st.tuples(
            st.just("add_supported_context"),
            st.tuples(st.sampled_from([CT, MR]), syntax_lists),
            st.fixed_dictionaries({"scu_role": roles, "scp_role": roles}),
        ),
        st.tuples(
            st.just("remove_supported_context"),
            st.tuples(st.sampled_from([CT, MR]), st.one_of(st.none(), syntax_lists)),
            st.just({}),
        ),
        st.tuples(
            st.just("add_requested_context"),
            st.tuples(st.sampled_from([CT, MR]), syntax_lists),
            st.just({}),
        ),
        st.tuples(
            st.just("remove_requested_context"),
            st.tuples(st.sampled_from([CT, MR]), st.one_of(st.none(), syntax_lists)),
            st.just({}),
        ),
    ),
    max_size=12,
)


# Requested contexts in order (it is the order they are proposed in); supported ones sorted,
# as pynetdicom lists them (an acceptor finds them by abstract syntax, so order means nothing).


def _ours(ae: AE) -> tuple[list[Any], list[Any]]:
    return (
        [(c.abstract_syntax, list(c.transfer_syntaxes)) for c in ae.requested_contexts],
        sorted(
            (c.abstract_syntax, list(c.transfer_syntaxes), c.scu_role, c.scp_role)
            for c in ae.supported_contexts
        ),
    )


def _theirs(ae: Any) -> tuple[list[Any], list[Any]]:
    return (
        [(c.abstract_syntax, list(c.transfer_syntax)) for c in ae.requested_contexts],
        sorted(
            (c.abstract_syntax, list(c.transfer_syntax), c.scu_role, c.scp_role)
            for c in ae.supported_contexts
        ),
    )


@settings(max_examples=300, deadline=None)
@given(steps=steps)
def test_context_lists_change_as_in_pynetdicom(steps: list[Step]) -> None:
    pynetdicom = pytest.importorskip("pynetdicom", reason="pynetdicom is the reference here")
    ours, theirs = AE(), pynetdicom.AE()
    for name, args, kwargs in steps:
        getattr(ours, name)(*args, **kwargs)
        getattr(theirs, name)(*args, **kwargs)
    assert _ours(ours) == _theirs(theirs)


def test_supported_context_merges_syntaxes_and_takes_the_new_roles() -> None:
    ae = AE()
    ae.add_supported_context(CT, IMPLICIT, scu_role=True, scp_role=False)
    ae.add_supported_context(CT, [EXPLICIT, IMPLICIT])
    (cx,) = ae.supported_contexts
    assert list(cx.transfer_syntaxes) == [IMPLICIT, EXPLICIT]
    assert (cx.scu_role, cx.scp_role) == (None, None)


@pytest.mark.parametrize(
    "remove",
    [
        lambda ae: ae.remove_supported_context("1.2.3"),
        lambda ae: ae.remove_supported_context(CT, BIG),
        lambda ae: ae.remove_supported_context(CT, []),
        lambda ae: ae.remove_requested_context("1.2.3"),
        lambda ae: ae.remove_requested_context(CT, BIG),
    ],
)
def test_removing_what_is_not_there_changes_nothing(remove: Callable[[AE], None]) -> None:
    ae = AE()
    ae.add_supported_context(CT, [IMPLICIT, EXPLICIT])
    ae.add_requested_context(CT, [IMPLICIT, EXPLICIT])
    before = _ours(ae)
    remove(ae)
    assert _ours(ae) == before


def test_context_lists_are_the_aes_own() -> None:
    # A preset tuple can be assigned and then added to; the preset itself never changes.
    preset = StoragePresentationContexts
    ae = AE()
    assert len(preset) == 120
    ae.requested_contexts = preset
    for _ in range(8):
        ae.add_requested_context(CT)
    assert len(ae.requested_contexts) == 128 and len(preset) == 120
    with pytest.raises(ValueError):
        ae.add_requested_context(MR)
    with pytest.raises(ValueError):
        ae.requested_contexts = list(preset) * 2
    ae.supported_contexts = preset
    ae.add_supported_context("1.2.840.10008.1.1")
    ae.remove_supported_context(preset[0].abstract_syntax)
    assert len(ae.supported_contexts) == len(preset)
    assert preset[0] in StoragePresentationContexts


# -- active_associations ----------------------------------------------------------------------


async def _until(condition: Callable[[], bool]) -> None:
    with anyio.fail_after(5):
        while not condition():
            await anyio.sleep(0.01)


@pytest.mark.anyio
async def test_active_associations_lists_the_established_ones() -> None:
    scp, scu = AE("SCP"), AE("SCU")
    scp.add_supported_context(VERIFICATION)
    scu.add_requested_context(VERIFICATION)
    async with scp.start_server((LOOPBACK, 0)) as server:
        assert scu.active_associations == [] and scp.active_associations == []
        first = await scu.associate(LOOPBACK, server.port, ae_title="SCP")
        async with scu.associate(LOOPBACK, server.port, ae_title="SCP") as second:
            assert set(scu.active_associations) == {first, second}
            await _until(lambda: len(scp.active_associations) == 2)
            await first.release()
            assert scu.active_associations == [second]
            await _until(lambda: len(scp.active_associations) == 1)
        assert scu.active_associations == []
        await _until(lambda: scp.active_associations == [])
        aborted = await scu.associate(LOOPBACK, server.port, ae_title="SCP")
        await aborted.abort()
        assert scu.active_associations == []
        await _until(lambda: scp.active_associations == [])


@pytest.mark.anyio
async def test_association_sides_as_pynetdicom_names_them() -> None:
    scp, scu = AE("SCP"), AE("SCU")
    scp.add_supported_context(VERIFICATION)
    scu.add_requested_context(VERIFICATION)
    seen: list[Any] = []

    async def on_echo(event: Any) -> int:
        assoc = event.assoc
        seen.append((assoc.mode, assoc.is_acceptor, assoc.requestor, assoc.acceptor))
        return 0

    async with (
        scp.start_server((LOOPBACK, 0), evt_handlers=[(evt.EVT_C_ECHO, on_echo)]) as server,
        scu.associate(LOOPBACK, server.port, ae_title="SCP", max_pdu=32768) as assoc,
    ):
        assert (assoc.mode, assoc.is_requestor, assoc.is_acceptor) == ("requestor", True, False)
        assert (await assoc.send_c_echo()).Status == 0
        requestor, acceptor = assoc.requestor, assoc.acceptor
        assert (requestor.ae_title, requestor.address, requestor.maximum_length) == (
            "SCU",
            LOOPBACK,
            32768,
        )
        assert (acceptor.ae_title, acceptor.address, acceptor.port) == (
            "SCP",
            LOOPBACK,
            server.port,
        )
        assert acceptor.implementation_class_uid == scp.implementation_class_uid
        assert assoc.local == {
            "address": LOOPBACK,
            "port": requestor.port,
            "ae_title": "SCU",
            "pdv_size": 32768,
        }
        assert assoc.remote["port"] == server.port
        assoc.dimse_timeout = 7.5
        assert assoc.timeouts.dimse == 7.5 and assoc.dimse_timeout == 7.5
    ((mode, is_acceptor, their_requestor, their_acceptor),) = seen
    assert (mode, is_acceptor) == ("acceptor", True)
    # Both sides agree on who is who.
    assert their_requestor == requestor
    assert (their_acceptor.ae_title, their_acceptor.port) == ("SCP", server.port)
    assert their_acceptor.maximum_length == scp.maximum_pdu_size


@pytest.mark.anyio
async def test_one_ae_serves_two_titles_with_their_own_contexts() -> None:
    # pynetdicom's start_server(ae_title=, contexts=): the AE's own stay as they are.
    from dicomio import AssociationRejected, NoPresentationContext, build_context

    scp = AE("MAIN")
    scp.require_called_aet = True
    scp.add_supported_context(VERIFICATION)
    scu = AE("SCU")
    scu.add_requested_context(VERIFICATION)
    scu.add_requested_context(CT)
    ct_only = [build_context(CT, IMPLICIT), build_context(CT, EXPLICIT)]
    async with (
        scp.start_server((LOOPBACK, 0)) as main,
        scp.start_server((LOOPBACK, 0), ae_title="STORE", contexts=ct_only) as store,
    ):
        async with scu.associate(LOOPBACK, store.port, ae_title="STORE") as assoc:
            assert [cx.abstract_syntax for cx in assoc.accepted_contexts] == [CT]
            assert assoc.acceptor.ae_title == "STORE"
            with pytest.raises(NoPresentationContext):
                await assoc.send_c_echo()
        with pytest.raises(AssociationRejected):
            await scu.associate(LOOPBACK, store.port, ae_title="MAIN")
        async with scu.associate(LOOPBACK, main.port, ae_title="MAIN") as assoc:
            assert [cx.abstract_syntax for cx in assoc.accepted_contexts] == [VERIFICATION]
            assert (await assoc.send_c_echo()).Status == 0
    assert [cx.abstract_syntax for cx in scp.supported_contexts] == [VERIFICATION]
    (merged,) = store.contexts  # one context per abstract syntax, as the AE keeps them
    assert list(merged.transfer_syntaxes) == [IMPLICIT, EXPLICIT]


def test_a_remembered_proposal_follows_every_change_to_the_ae() -> None:
    """``AE._propose`` keeps the A-ASSOCIATE-RQs it made: whatever changes what would be
    proposed (contexts, titles, PDU size, options) gives a new one, equal to one made afresh."""
    from dicomio.ae import AssociateRequest
    from dicomio.pdu import AsynchronousOperationsWindow, RoleSelection

    ae = AE("FIRST")
    ae.add_requested_context(VERIFICATION)

    def request(ae_title: str = "ANY-SCP", ext_neg: list[Any] | None = None) -> Any:
        return AssociateRequest(
            ae, LOOPBACK, 104, ae_title=ae_title, contexts=None, max_pdu=None,
            ext_neg=ext_neg, ssl_context=None, evt_handlers=None, bind_address=None,
        )  # fmt: skip

    def proposed(**kwargs: Any) -> Any:
        made = ae._propose(request(**kwargs), 16384)
        assert ae._propose(request(**kwargs), 16384) is made  # remembered
        ae._proposals.clear()
        assert ae._propose(request(**kwargs), 16384) == made  # what making it afresh gives
        return made.rq

    seen = [proposed()]
    ae.add_requested_context(CT_IMAGE_STORAGE)
    seen.append(proposed())
    ae.ae_title = "SECOND"
    seen.append(proposed())
    ae.implementation_version_name = "OTHER_1"
    seen.append(proposed())
    ae.async_ops_window = (4, 4)
    seen.append(proposed())
    seen.append(proposed(ae_title="OTHER-SCP"))
    roles = [RoleSelection(sop_class_uid=CT_IMAGE_STORAGE, scu_role=True, scp_role=True)]
    seen.append(proposed(ext_neg=roles))
    assert len({id(rq) for rq in seen}) == len({rq for rq in seen}) == len(seen)
    assert [len(rq.presentation_contexts) for rq in seen[:2]] == [1, 2]
    assert seen[2].calling_ae_title == "SECOND"
    assert seen[5].called_ae_title == "OTHER-SCP"
    assert any(isinstance(i, AsynchronousOperationsWindow) for i in seen[4].user_information)
    assert any(isinstance(i, RoleSelection) for i in seen[6].user_information)
    assert ae._propose(request(), 32768).rq != seen[4]  # another maximum PDU size


@pytest.mark.anyio
async def test_the_same_proposal_answered_otherwise_is_negotiated_afresh() -> None:
    """The requestor remembers how a reply answered a proposal; a peer that answers the
    same proposal otherwise the next time is read afresh."""
    scp, scu = AE("SCP"), AE("SCU")
    scp.add_supported_context(VERIFICATION)
    scp.add_supported_context(CT_IMAGE_STORAGE)
    scu.add_requested_context(VERIFICATION)
    scu.add_requested_context(CT_IMAGE_STORAGE)
    async with scp.start_server((LOOPBACK, 0)) as server:
        for supported in ([VERIFICATION, CT_IMAGE_STORAGE], [VERIFICATION]) * 2:
            scp.supported_contexts = []
            for uid in supported:
                scp.add_supported_context(uid)
            async with scu.associate(LOOPBACK, server.port, ae_title="SCP") as assoc:
                accepted = [cx.abstract_syntax for cx in assoc.accepted_contexts]
                rejected = [cx.abstract_syntax for cx in assoc.rejected_contexts]
            assert accepted == supported
            assert rejected == [CT_IMAGE_STORAGE] * (len(supported) == 1)
