"""Acceptance: dicomio's PDU codec agrees with pynetdicom's, field by field, both ways.

For each Hypothesis PDU: pynetdicom decodes dicomio's bytes to the same field values, and
dicomio decodes pynetdicom's encoding of the same values back to an equal value. pynetdicom
is only a test peer here.

pynetdicom quirks met (3.0.4):
- An unknown user information sub-item type makes its decoder raise KeyError (it looks the
  type up in ``PDU_ITEM_TYPES``), although PS3.7 D.3.3 asks receivers to ignore such
  sub-items. Unknown sub-items are therefore left out here and tested in test_pdu_codec.
- It strips one trailing NUL from UIDs it decodes (``_wrap_uid_bytes``), tolerating peers
  that pad UIDs to even length, and writes UIDs unpadded as PS3.5 9.1 asks for network
  negotiation; dicomio does the same on both counts.
- It keeps AE titles as given by ``decode`` of the 16-byte field, stripped; ``A_ASSOCIATE_AC``
  names them ``reserved_aet``/``reserved_aec`` because PS3.8 9.3.3 says they are not tested.
- A PDV item's message control header is kept inside ``presentation_data_value``.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings

from dicomio import AE
from dicomio.pdu import (
    PDU,
    Abort,
    AssociateAC,
    AssociateRJ,
    AssociateRQ,
    AsynchronousOperationsWindow,
    ImplementationClassUID,
    ImplementationVersionName,
    MaximumLength,
    PDataTF,
    PresentationContextAC,
    PresentationContextRQ,
    ReleaseRP,
    ReleaseRQ,
    RoleSelection,
    SOPClassCommonExtendedNegotiation,
    SOPClassExtendedNegotiation,
    UserIdentityAC,
    UserIdentityRQ,
    UserInformationSubItem,
    decode,
    encode,
)
from dicomio.sop import CTImageStorage, Verification
from tests.conftest import LOOPBACK
from tests.strategies import (
    abort_pdus,
    associate_ac_pdus,
    associate_rj_pdus,
    associate_rq_pdus,
    p_data_tf_pdus,
    pdus,
    release_rp_pdus,
    release_rq_pdus,
)

pnd_pdu = pytest.importorskip("pynetdicom.pdu")
pnd_items = pytest.importorskip("pynetdicom.pdu_items")

_SETTINGS = settings(
    deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


# ---------------------------------------------------------------------------------------
# dicomio value -> comparable dict


def _sub_item_dict(sub: UserInformationSubItem) -> dict[str, Any]:
    if isinstance(sub, MaximumLength):
        return {"type": 0x51, "maximum_length": sub.maximum_length}
    if isinstance(sub, ImplementationClassUID):
        return {"type": 0x52, "uid": str(sub.implementation_class_uid)}
    if isinstance(sub, AsynchronousOperationsWindow):
        return {
            "type": 0x53,
            "invoked": sub.maximum_number_operations_invoked,
            "performed": sub.maximum_number_operations_performed,
        }
    if isinstance(sub, RoleSelection):
        return {
            "type": 0x54,
            "uid": str(sub.sop_class_uid),
            "scu": sub.scu_role,
            "scp": sub.scp_role,
        }
    if isinstance(sub, ImplementationVersionName):
        return {"type": 0x55, "name": sub.implementation_version_name}
    if isinstance(sub, SOPClassExtendedNegotiation):
        return {
            "type": 0x56,
            "uid": str(sub.sop_class_uid),
            "info": sub.service_class_application_information,
        }
    if isinstance(sub, SOPClassCommonExtendedNegotiation):
        return {
            "type": 0x57,
            "uid": str(sub.sop_class_uid),
            "service": str(sub.service_class_uid),
            "related": [str(uid) for uid in sub.related_general_sop_class_uids],
        }
    if isinstance(sub, UserIdentityRQ):
        return {
            "type": 0x58,
            "identity_type": sub.user_identity_type,
            "positive": sub.positive_response_requested,
            "primary": sub.primary_field,
            "secondary": sub.secondary_field,
        }
    assert isinstance(sub, UserIdentityAC)
    return {"type": 0x59, "response": sub.server_response}


def ours_to_dict(pdu: PDU) -> dict[str, Any]:
    if isinstance(pdu, AssociateRQ | AssociateAC):
        contexts: list[dict[str, Any]] = []
        for context in pdu.presentation_contexts:
            if isinstance(context, PresentationContextRQ):
                contexts.append(
                    {
                        "id": context.context_id,
                        "abstract": str(context.abstract_syntax),
                        "transfer": [str(uid) for uid in context.transfer_syntaxes],
                    }
                )
            else:
                assert isinstance(context, PresentationContextAC)
                contexts.append(
                    {
                        "id": context.context_id,
                        "result": context.result,
                        "transfer": None
                        if context.transfer_syntax is None
                        else str(context.transfer_syntax),
                    }
                )
        return {
            "pdu": type(pdu).__name__,
            "version": pdu.protocol_version,
            "called": pdu.called_ae_title,
            "calling": pdu.calling_ae_title,
            "application_context": str(pdu.application_context),
            "contexts": contexts,
            "user_information": [_sub_item_dict(sub) for sub in pdu.user_information],
        }
    if isinstance(pdu, AssociateRJ):
        return {
            "pdu": "AssociateRJ",
            "result": pdu.result,
            "source": pdu.source,
            "reason": pdu.reason,
        }
    if isinstance(pdu, PDataTF):
        return {
            "pdu": "PDataTF",
            "pdvs": [
                (pdv.context_id, pdv.is_command, pdv.is_last, bytes(pdv.data)) for pdv in pdu.pdvs
            ],
        }
    if isinstance(pdu, Abort):
        return {"pdu": "Abort", "source": pdu.source, "reason": pdu.reason}
    return {"pdu": type(pdu).__name__}


# ---------------------------------------------------------------------------------------
# pynetdicom object -> comparable dict


def _pnd_sub_item_dict(sub: Any) -> dict[str, Any]:
    name = type(sub).__name__
    if name == "MaximumLengthSubItem":
        return {"type": 0x51, "maximum_length": sub.maximum_length_received}
    if name == "ImplementationClassUIDSubItem":
        return {"type": 0x52, "uid": str(sub.implementation_class_uid)}
    if name == "AsynchronousOperationsWindowSubItem":
        return {
            "type": 0x53,
            "invoked": sub.maximum_number_operations_invoked,
            "performed": sub.maximum_number_operations_performed,
        }
    if name == "SCP_SCU_RoleSelectionSubItem":
        return {
            "type": 0x54,
            "uid": str(sub.sop_class_uid),
            "scu": bool(sub.scu_role),
            "scp": bool(sub.scp_role),
        }
    if name == "ImplementationVersionNameSubItem":
        return {"type": 0x55, "name": sub.implementation_version_name}
    if name == "SOPClassExtendedNegotiationSubItem":
        return {
            "type": 0x56,
            "uid": str(sub.sop_class_uid),
            "info": sub.service_class_application_information,
        }
    if name == "SOPClassCommonExtendedNegotiationSubItem":
        return {
            "type": 0x57,
            "uid": str(sub.sop_class_uid),
            "service": str(sub.service_class_uid),
            "related": [str(uid) for uid in sub.related_general_sop_class_identification],
        }
    if name == "UserIdentitySubItemRQ":
        return {
            "type": 0x58,
            "identity_type": sub.user_identity_type,
            "positive": bool(sub.positive_response_requested),
            "primary": sub.primary_field,
            "secondary": sub.secondary_field,
        }
    assert name == "UserIdentitySubItemAC", name
    return {"type": 0x59, "response": sub.server_response}


def theirs_to_dict(pdu: Any) -> dict[str, Any]:
    if isinstance(pdu, pnd_pdu.A_ASSOCIATE_RQ | pnd_pdu.A_ASSOCIATE_AC):
        is_rq = isinstance(pdu, pnd_pdu.A_ASSOCIATE_RQ)
        application_contexts = [
            str(item.application_context_name)
            for item in pdu.variable_items
            if isinstance(item, pnd_items.ApplicationContextItem)
        ]
        assert len(application_contexts) == 1
        contexts: list[dict[str, Any]] = []
        for item in pdu.variable_items:
            if isinstance(item, pnd_items.PresentationContextItemRQ):
                subs = item.abstract_transfer_syntax_sub_items
                abstract = [s for s in subs if isinstance(s, pnd_items.AbstractSyntaxSubItem)]
                assert len(abstract) == 1
                contexts.append(
                    {
                        "id": item.presentation_context_id,
                        "abstract": str(abstract[0].abstract_syntax_name),
                        "transfer": [
                            str(s.transfer_syntax_name)
                            for s in subs
                            if isinstance(s, pnd_items.TransferSyntaxSubItem)
                        ],
                    }
                )
            elif isinstance(item, pnd_items.PresentationContextItemAC):
                transfer = item.transfer_syntax_sub_item
                # An empty sub-item decodes with transfer_syntax_name None.
                name = transfer[0].transfer_syntax_name if transfer else None
                contexts.append(
                    {
                        "id": item.presentation_context_id,
                        "result": item.result_reason,
                        "transfer": None if name is None else str(name),
                    }
                )
        user_information = pdu.user_information
        return {
            "pdu": "AssociateRQ" if is_rq else "AssociateAC",
            "version": pdu.protocol_version,
            "called": pdu.called_ae_title if is_rq else pdu.reserved_aet.strip(),
            "calling": pdu.calling_ae_title if is_rq else pdu.reserved_aec.strip(),
            "application_context": application_contexts[0],
            "contexts": contexts,
            "user_information": [_pnd_sub_item_dict(sub) for sub in user_information.user_data],
        }
    if isinstance(pdu, pnd_pdu.A_ASSOCIATE_RJ):
        return {
            "pdu": "AssociateRJ",
            "result": pdu.result,
            "source": pdu.source,
            "reason": pdu.reason_diagnostic,
        }
    if isinstance(pdu, pnd_pdu.P_DATA_TF):
        pdvs = []
        for item in pdu.presentation_data_value_items:
            control, data = item.presentation_data_value[0], item.presentation_data_value[1:]
            pdvs.append((item.presentation_context_id, bool(control & 1), bool(control & 2), data))
        return {"pdu": "PDataTF", "pdvs": pdvs}
    if isinstance(pdu, pnd_pdu.A_ABORT_RQ):
        return {"pdu": "Abort", "source": pdu.source, "reason": pdu.reason_diagnostic}
    if isinstance(pdu, pnd_pdu.A_RELEASE_RQ):
        return {"pdu": "ReleaseRQ"}
    assert isinstance(pdu, pnd_pdu.A_RELEASE_RP)
    return {"pdu": "ReleaseRP"}


# ---------------------------------------------------------------------------------------
# dicomio value -> pynetdicom object, built field by field (not from dicomio's bytes)


def _pnd_sub_item(sub: UserInformationSubItem) -> Any:
    if isinstance(sub, MaximumLength):
        item = pnd_items.MaximumLengthSubItem()
        item.maximum_length_received = sub.maximum_length
    elif isinstance(sub, ImplementationClassUID):
        item = pnd_items.ImplementationClassUIDSubItem()
        item.implementation_class_uid = sub.implementation_class_uid
    elif isinstance(sub, AsynchronousOperationsWindow):
        item = pnd_items.AsynchronousOperationsWindowSubItem()
        item.maximum_number_operations_invoked = sub.maximum_number_operations_invoked
        item.maximum_number_operations_performed = sub.maximum_number_operations_performed
    elif isinstance(sub, RoleSelection):
        item = pnd_items.SCP_SCU_RoleSelectionSubItem()
        item.sop_class_uid = sub.sop_class_uid
        item.scu_role = int(sub.scu_role)
        item.scp_role = int(sub.scp_role)
    elif isinstance(sub, ImplementationVersionName):
        item = pnd_items.ImplementationVersionNameSubItem()
        item.implementation_version_name = sub.implementation_version_name
    elif isinstance(sub, SOPClassExtendedNegotiation):
        item = pnd_items.SOPClassExtendedNegotiationSubItem()
        item.sop_class_uid = sub.sop_class_uid
        item.service_class_application_information = sub.service_class_application_information
    elif isinstance(sub, SOPClassCommonExtendedNegotiation):
        item = pnd_items.SOPClassCommonExtendedNegotiationSubItem()
        item.sop_class_uid = sub.sop_class_uid
        item.service_class_uid = sub.service_class_uid
        item.related_general_sop_class_identification = list(sub.related_general_sop_class_uids)
    elif isinstance(sub, UserIdentityRQ):
        item = pnd_items.UserIdentitySubItemRQ()
        item.user_identity_type = sub.user_identity_type
        item.positive_response_requested = int(sub.positive_response_requested)
        item.primary_field = sub.primary_field
        item.secondary_field = sub.secondary_field
    else:
        assert isinstance(sub, UserIdentityAC)
        item = pnd_items.UserIdentitySubItemAC()
        item.server_response = sub.server_response
    return item


def to_theirs(pdu: PDU) -> Any:
    if isinstance(pdu, AssociateRQ | AssociateAC):
        is_rq = isinstance(pdu, AssociateRQ)
        theirs = pnd_pdu.A_ASSOCIATE_RQ() if is_rq else pnd_pdu.A_ASSOCIATE_AC()
        theirs.protocol_version = pdu.protocol_version
        if is_rq:
            theirs.called_ae_title = pdu.called_ae_title
            theirs.calling_ae_title = pdu.calling_ae_title
        else:
            theirs.reserved_aet = pdu.called_ae_title
            theirs.reserved_aec = pdu.calling_ae_title
        application_context = pnd_items.ApplicationContextItem()
        application_context.application_context_name = pdu.application_context
        items: list[Any] = [application_context]
        for context in pdu.presentation_contexts:
            if isinstance(context, PresentationContextRQ):
                item = pnd_items.PresentationContextItemRQ()
                item.presentation_context_id = context.context_id
                abstract = pnd_items.AbstractSyntaxSubItem()
                abstract.abstract_syntax_name = context.abstract_syntax
                subs: list[Any] = [abstract]
                for uid in context.transfer_syntaxes:
                    transfer = pnd_items.TransferSyntaxSubItem()
                    transfer.transfer_syntax_name = uid
                    subs.append(transfer)
                item.abstract_transfer_syntax_sub_items = subs
            else:
                assert isinstance(context, PresentationContextAC)
                item = pnd_items.PresentationContextItemAC()
                item.presentation_context_id = context.context_id
                item.result_reason = context.result
                item.transfer_syntax_sub_item = []
                if context.transfer_syntax is not None:
                    transfer = pnd_items.TransferSyntaxSubItem()
                    transfer.transfer_syntax_name = context.transfer_syntax
                    item.transfer_syntax_sub_item = [transfer]
            items.append(item)
        user_information = pnd_items.UserInformationItem()
        user_information.user_data = [_pnd_sub_item(sub) for sub in pdu.user_information]
        items.append(user_information)
        theirs.variable_items = items
        return theirs
    if isinstance(pdu, AssociateRJ):
        theirs = pnd_pdu.A_ASSOCIATE_RJ()
        theirs.result = pdu.result
        theirs.source = pdu.source
        theirs.reason_diagnostic = pdu.reason
        return theirs
    if isinstance(pdu, PDataTF):
        theirs = pnd_pdu.P_DATA_TF()
        for pdv in pdu.pdvs:
            item = pnd_items.PresentationDataValueItem()
            item.presentation_context_id = pdv.context_id
            control = int(pdv.is_command) | (int(pdv.is_last) << 1)
            item.presentation_data_value = bytes([control]) + bytes(pdv.data)
            theirs.presentation_data_value_items.append(item)
        return theirs
    if isinstance(pdu, Abort):
        theirs = pnd_pdu.A_ABORT_RQ()
        theirs.source = pdu.source
        theirs.reason_diagnostic = pdu.reason
        return theirs
    if isinstance(pdu, ReleaseRQ):
        return pnd_pdu.A_RELEASE_RQ()
    assert isinstance(pdu, ReleaseRP)
    return pnd_pdu.A_RELEASE_RP()


_THEIR_CLASSES = {
    "AssociateRQ": "A_ASSOCIATE_RQ",
    "AssociateAC": "A_ASSOCIATE_AC",
    "AssociateRJ": "A_ASSOCIATE_RJ",
    "PDataTF": "P_DATA_TF",
    "ReleaseRQ": "A_RELEASE_RQ",
    "ReleaseRP": "A_RELEASE_RP",
    "Abort": "A_ABORT_RQ",
}


def check_both_ways(pdu: PDU) -> None:
    ours = encode(pdu)
    # pynetdicom reads dicomio's bytes as the same field values...
    theirs = getattr(pnd_pdu, _THEIR_CLASSES[type(pdu).__name__])()
    theirs.decode(ours)
    assert theirs_to_dict(theirs) == ours_to_dict(pdu)
    # ...and dicomio reads pynetdicom's encoding of the same values as an equal value.
    their_bytes = to_theirs(pdu).encode()
    assert decode(their_bytes) == pdu
    # Both write the same bytes: the layout is fixed, so any difference would be a bug...
    # ...except that for a context item without a transfer syntax pynetdicom 3.0.4 writes
    # no sub-item (it cannot hold an empty one), dicomio an empty one (PS3.8 Table 9-18).
    assert len(ours) - len(their_bytes) == 4 * _contexts_without_syntax(pdu)
    if not _contexts_without_syntax(pdu):
        assert their_bytes == ours


def _contexts_without_syntax(pdu: PDU) -> int:
    if not isinstance(pdu, AssociateAC):
        return 0
    return sum(cx.transfer_syntax is None for cx in pdu.presentation_contexts)


@settings(_SETTINGS, max_examples=1200)
@given(associate_rq_pdus(with_unknown=False))
def test_associate_rq(pdu: AssociateRQ) -> None:
    check_both_ways(pdu)


@settings(_SETTINGS, max_examples=1200)
@given(associate_ac_pdus(with_unknown=False))
def test_associate_ac(pdu: AssociateAC) -> None:
    check_both_ways(pdu)


@settings(_SETTINGS, max_examples=800)
@given(associate_rj_pdus())
def test_associate_rj(pdu: AssociateRJ) -> None:
    check_both_ways(pdu)


@settings(_SETTINGS, max_examples=1000)
@given(p_data_tf_pdus())
def test_p_data_tf(pdu: PDataTF) -> None:
    check_both_ways(pdu)


@settings(_SETTINGS, max_examples=10)
@given(release_rq_pdus())
def test_release_rq(pdu: ReleaseRQ) -> None:
    check_both_ways(pdu)


@settings(_SETTINGS, max_examples=10)
@given(release_rp_pdus())
def test_release_rp(pdu: ReleaseRP) -> None:
    check_both_ways(pdu)


@settings(_SETTINGS, max_examples=800)
@given(abort_pdus())
def test_abort(pdu: Abort) -> None:
    check_both_ways(pdu)


@settings(_SETTINGS, max_examples=2000)
@given(pdus(with_unknown=False))
def test_any_pdu(pdu: PDU) -> None:
    check_both_ways(pdu)


# ---------------------------------------------------------------------------------------
# On the wire: pynetdicom as the requestor reads an A-ASSOCIATE-AC with a rejected context


@pytest.mark.anyio
async def test_pynetdicom_requestor_accepts_ac_with_rejected_context() -> None:
    """A dicomio SCP rejects one proposed context (abstract syntax not supported).

    Its item carries a Transfer Syntax sub-item (PS3.8 Table 9-18); pynetdicom reads the
    AC, sees the rejection, and uses the accepted context.
    """
    from pynetdicom import AE as PynetdicomAE
    from pynetdicom import evt as pnd_evt

    ae = AE("DICOMIO")
    ae.add_supported_context(Verification)
    async with ae.start_server((LOOPBACK, 0)) as server:
        theirs = PynetdicomAE(ae_title="PYNETDICOM")
        theirs.add_requested_context(Verification)
        theirs.add_requested_context(CTImageStorage)

        received: list[bytes] = []

        def on_data(event: Any) -> None:
            received.append(bytes(event.data))

        def run() -> tuple[bool, list[tuple[str, str]], list[str], int]:
            assoc = theirs.associate(
                LOOPBACK,
                server.port,
                ae_title="DICOMIO",
                evt_handlers=[(pnd_evt.EVT_DATA_RECV, on_data)],
            )
            try:
                accepted = [(str(cx.abstract_syntax), cx.result) for cx in assoc.accepted_contexts]
                rejected = [str(cx.abstract_syntax) for cx in assoc.rejected_contexts]
                status = assoc.send_c_echo().Status if assoc.is_established else -1
                return assoc.is_established, accepted, rejected, status
            finally:
                assoc.release()

        with anyio.fail_after(30):
            established, accepted, rejected, status = await anyio.to_thread.run_sync(run)
    assert established
    # The AC as pynetdicom read it: the rejected item (context 3) holds a sub-item.
    ac = received[0]
    assert ac[0] == 0x02
    ac_items = [item for item in _variable_items(ac) if item[0] == 0x21]
    assert [(item[4], item[6]) for item in ac_items] == [(1, 0), (3, 3)]
    for item in ac_items:
        assert item[8] == 0x40 and len(item) == 12 + int.from_bytes(item[10:12], "big")
    assert accepted == [(str(Verification), 0)]
    assert rejected == [str(CTImageStorage)]
    assert status == 0


def _variable_items(pdu: bytes) -> list[bytes]:
    """The whole items of an A-ASSOCIATE-RQ/AC's variable field (after 74 bytes)."""
    items, position = [], 74
    while position < len(pdu):
        length = int.from_bytes(pdu[position + 2 : position + 4], "big")
        items.append(pdu[position : position + 4 + length])
        position += 4 + length
    return items
