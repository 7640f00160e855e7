"""Hypothesis strategies for every PDU, item and sub-item of ``dicomio.pdu`` (valid values).

Shared by the codec, reader and Upper Layer tests. ``pdus()`` spans all seven PDU types and,
through the association PDUs, every item and sub-item.
"""

from __future__ import annotations

from hypothesis import strategies as st
from pydicom.uid import UID

from dicomio.pdu import (
    DICOM_APPLICATION_CONTEXT,
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
    PresentationDataValue,
    ReleaseRP,
    ReleaseRQ,
    RoleSelection,
    SOPClassCommonExtendedNegotiation,
    SOPClassExtendedNegotiation,
    UnknownSubItem,
    UserIdentityAC,
    UserIdentityRQ,
    UserInformationSubItem,
)

__all__ = [
    "abort_pdus",
    "ae_titles",
    "associate_ac_pdus",
    "associate_rj_pdus",
    "associate_rq_pdus",
    "async_windows",
    "context_ids",
    "extended_negotiations",
    "common_extended_negotiations",
    "implementation_class_uids",
    "implementation_version_names",
    "known_sub_items",
    "maximum_lengths",
    "p_data_tf_pdus",
    "pdus",
    "pdvs",
    "presentation_contexts_ac",
    "presentation_contexts_rq",
    "release_rp_pdus",
    "release_rq_pdus",
    "role_selections",
    "sub_items",
    "uids",
    "unknown_sub_items",
    "user_identities_ac",
    "user_identities_rq",
]

# PS3.5 AE VR: default character repertoire without control characters or backslash.
_AE_ALPHABET = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "\\")

_WELL_KNOWN_UIDS = [
    "1.2.840.10008.1.1",  # Verification
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "1.2.840.10008.5.1.4.1.2.1.1",  # Patient Root Q/R FIND
    "1.2.840.10008.4.2",  # Storage Service Class
    DICOM_APPLICATION_CONTEXT,
]


def ae_titles() -> st.SearchStrategy[str]:
    """1-16 characters of the AE repertoire, no leading or trailing spaces (PS3.5 AE)."""
    return st.text(_AE_ALPHABET, min_size=1, max_size=16).filter(
        lambda title: title == title.strip(" ")
    )


def uids() -> st.SearchStrategy[UID]:
    """UIDs of valid form (PS3.5 9.1), 1-64 characters, odd and even lengths.

    Components are digits without a leading zero unless the component is "0". Sizes are
    bounded by construction rather than filtered, which keeps generation fast.
    """
    short = st.lists(st.integers(0, 99999).map(str), min_size=2, max_size=10).map(".".join)
    longest = st.integers(10**49, 10**50 - 1).map(lambda n: f"1.2.840.10008.{n}")  # 64 chars
    return st.one_of(st.sampled_from(_WELL_KNOWN_UIDS), short, longest).map(UID)


def context_ids() -> st.SearchStrategy[int]:
    """Odd presentation context IDs 1-255 (PS3.8 9.3.2.2)."""
    return st.integers(0, 127).map(lambda n: 2 * n + 1)


def presentation_contexts_rq() -> st.SearchStrategy[PresentationContextRQ]:
    return st.builds(
        PresentationContextRQ,
        context_id=context_ids(),
        abstract_syntax=uids(),
        transfer_syntaxes=st.lists(uids(), min_size=1, max_size=4),
    )


def presentation_contexts_ac() -> st.SearchStrategy[PresentationContextAC]:
    return st.builds(
        PresentationContextAC,
        context_id=context_ids(),
        result=st.integers(0, 4),
        transfer_syntax=st.one_of(st.none(), uids()),
    )


def maximum_lengths() -> st.SearchStrategy[MaximumLength]:
    return st.builds(
        MaximumLength,
        maximum_length=st.one_of(st.sampled_from([0, 16382, 65536]), st.integers(0, 2**32 - 1)),
    )


def implementation_class_uids() -> st.SearchStrategy[ImplementationClassUID]:
    return st.builds(ImplementationClassUID, implementation_class_uid=uids())


def implementation_version_names() -> st.SearchStrategy[ImplementationVersionName]:
    return st.builds(ImplementationVersionName, implementation_version_name=ae_titles())


def async_windows() -> st.SearchStrategy[AsynchronousOperationsWindow]:
    return st.builds(
        AsynchronousOperationsWindow,
        maximum_number_operations_invoked=st.integers(0, 65535),
        maximum_number_operations_performed=st.integers(0, 65535),
    )


def role_selections() -> st.SearchStrategy[RoleSelection]:
    return st.builds(
        RoleSelection, sop_class_uid=uids(), scu_role=st.booleans(), scp_role=st.booleans()
    )


def extended_negotiations() -> st.SearchStrategy[SOPClassExtendedNegotiation]:
    return st.builds(
        SOPClassExtendedNegotiation,
        sop_class_uid=uids(),
        service_class_application_information=st.binary(max_size=32),
    )


def common_extended_negotiations() -> st.SearchStrategy[SOPClassCommonExtendedNegotiation]:
    return st.builds(
        SOPClassCommonExtendedNegotiation,
        sop_class_uid=uids(),
        service_class_uid=uids(),
        related_general_sop_class_uids=st.lists(uids(), max_size=3),
    )


def user_identities_rq() -> st.SearchStrategy[UserIdentityRQ]:
    # PS3.7 Table D.3-14: the secondary field is used only with type 2 (username + passcode).
    return st.integers(1, 5).flatmap(
        lambda identity_type: st.builds(
            UserIdentityRQ,
            user_identity_type=st.just(identity_type),
            positive_response_requested=st.booleans(),
            primary_field=st.binary(min_size=1, max_size=48),
            secondary_field=st.binary(max_size=24) if identity_type == 2 else st.just(b""),
        )
    )


def user_identities_ac() -> st.SearchStrategy[UserIdentityAC]:
    return st.builds(UserIdentityAC, server_response=st.binary(max_size=48))


def unknown_sub_items() -> st.SearchStrategy[UnknownSubItem]:
    """Sub-items of types this implementation does not know (not 51H-59H)."""
    return st.builds(
        UnknownSubItem,
        item_type=st.integers(0, 255).filter(lambda t: not 0x51 <= t <= 0x59),
        data=st.binary(max_size=24),
    )


def known_sub_items() -> st.SearchStrategy[UserInformationSubItem]:
    """Every user information sub-item type defined by PS3.8 D.1 and PS3.7 D.3.3."""
    return st.one_of(
        maximum_lengths(),
        implementation_class_uids(),
        async_windows(),
        role_selections(),
        implementation_version_names(),
        extended_negotiations(),
        common_extended_negotiations(),
        user_identities_rq(),
        user_identities_ac(),
    )


def sub_items(*, unknown: bool = True) -> st.SearchStrategy[UserInformationSubItem]:
    if not unknown:
        return known_sub_items()
    return st.one_of(known_sub_items(), unknown_sub_items())


def _user_information(unknown: bool) -> st.SearchStrategy[list[UserInformationSubItem]]:
    return st.lists(sub_items(unknown=unknown), max_size=8)


def associate_rq_pdus(*, with_unknown: bool = True) -> st.SearchStrategy[AssociateRQ]:
    return st.builds(
        AssociateRQ,
        called_ae_title=ae_titles(),
        calling_ae_title=ae_titles(),
        application_context=st.one_of(st.just(DICOM_APPLICATION_CONTEXT), uids()),
        presentation_contexts=st.lists(presentation_contexts_rq(), max_size=6),
        user_information=_user_information(with_unknown),
        protocol_version=st.one_of(st.just(1), st.integers(0, 65535)),
    )


def associate_ac_pdus(*, with_unknown: bool = True) -> st.SearchStrategy[AssociateAC]:
    return st.builds(
        AssociateAC,
        called_ae_title=ae_titles(),
        calling_ae_title=ae_titles(),
        application_context=st.one_of(st.just(DICOM_APPLICATION_CONTEXT), uids()),
        presentation_contexts=st.lists(presentation_contexts_ac(), max_size=6),
        user_information=_user_information(with_unknown),
        protocol_version=st.one_of(st.just(1), st.integers(0, 65535)),
    )


# PS3.8 Table 9-21: the reasons each source may give.
_REJECT_REASONS = {1: [1, 2, 3, 7], 2: [1, 2], 3: [1, 2]}


def associate_rj_pdus() -> st.SearchStrategy[AssociateRJ]:
    return st.tuples(st.sampled_from([1, 2]), st.sampled_from([1, 2, 3])).flatmap(
        lambda rs: st.builds(
            AssociateRJ,
            result=st.just(rs[0]),
            source=st.just(rs[1]),
            reason=st.sampled_from(_REJECT_REASONS[rs[1]]),
        )
    )


def pdvs() -> st.SearchStrategy[PresentationDataValue]:
    return st.builds(
        PresentationDataValue,
        context_id=context_ids(),
        is_command=st.booleans(),
        is_last=st.booleans(),
        data=st.binary(max_size=64),
    )


def p_data_tf_pdus() -> st.SearchStrategy[PDataTF]:
    return st.builds(PDataTF, pdvs=st.lists(pdvs(), min_size=1, max_size=4))


def release_rq_pdus() -> st.SearchStrategy[ReleaseRQ]:
    return st.just(ReleaseRQ())


def release_rp_pdus() -> st.SearchStrategy[ReleaseRP]:
    return st.just(ReleaseRP())


def abort_pdus() -> st.SearchStrategy[Abort]:
    # PS3.8 Table 9-26: source 0 (user), 1 (reserved) or 2 (provider); reasons 0-6.
    return st.builds(Abort, source=st.integers(0, 2), reason=st.integers(0, 6))


def pdus(*, with_unknown: bool = True) -> st.SearchStrategy[PDU]:
    """Any of the seven PDUs, with every item and sub-item reachable."""
    return st.one_of(
        associate_rq_pdus(with_unknown=with_unknown),
        associate_ac_pdus(with_unknown=with_unknown),
        associate_rj_pdus(),
        p_data_tf_pdus(),
        release_rq_pdus(),
        release_rp_pdus(),
        abort_pdus(),
    )
