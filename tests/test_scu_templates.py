"""The requestor's C-ECHO-RQ, sent from a command set template, and its remembered context.

``send_c_echo`` sends the bytes of a template made once per presentation context and peer
maximum length (``dicomio._scu._echo_template``) with the request's message ID: Hypothesis
holds the template to encoding and fragmenting the request afresh (end to end, with many
echoes outstanding and with debug logging, in ``tests/test_echo_answers.py``).
``_context_as_scu`` remembers its answers for the accepted contexts it found them in.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dicomio._scu import ServiceUserMixin, _echo_request, _echo_template
from dicomio.dimse import encode_command, fragment_parts
from dicomio.presentation import PresentationContext
from dicomio.sop import Verification
from dicomio.ul import Role

LOOPBACK = "127.0.0.1"


@settings(max_examples=200, deadline=None)
@given(
    message_id=st.integers(0, 0xFFFF),
    context_id=st.integers(1, 255).filter(lambda n: n & 1),
    max_pdu=st.sampled_from([0, 40, 80, 86, 128, 16384, 1 << 20]),
)
def test_echo_template_gives_the_request_bytes(
    message_id: int, context_id: int, max_pdu: int
) -> None:
    """Filled with a message ID, the template is the C-ECHO-RQ encoded and fragmented
    afresh; a peer whose maximum length splits the command set gets no template."""
    expected = b"".join(
        fragment_parts(context_id, encode_command(_echo_request(message_id)), None, max_pdu)
    )
    template = _echo_template(context_id, max_pdu)
    if template is None:
        assert expected.count(b"\x04\x00\x00\x00") > 1  # more than one P-DATA-TF
        return
    head, tail = template
    assert head + message_id.to_bytes(2, "little") + tail == expected


class _Side(ServiceUserMixin):
    """What ``_context_as_scu`` reads of an association, and nothing else."""

    def __init__(self, contexts: tuple[PresentationContext, ...]) -> None:
        self.role = Role.REQUESTOR
        self.accepted_contexts = contexts
        self.requested_contexts = contexts
        self.rejected_contexts = ()


def _context(context_id: int, abstract_syntax: Any, transfer_syntax: str) -> PresentationContext:
    return PresentationContext(
        context_id=context_id,
        abstract_syntax=abstract_syntax,
        transfer_syntaxes=[transfer_syntax],
        transfer_syntax=transfer_syntax,
        result=0,
        scu_role=True,
    )


def test_context_as_scu_is_remembered_for_the_accepted_contexts() -> None:
    first = _context(1, Verification, "1.2.840.10008.1.2")
    side = _Side((first,))
    assert side._context_as_scu(Verification) is first
    assert side._context_as_scu(Verification) is first
    # New accepted contexts (a new tuple): asked again, not remembered.
    other = _context(3, Verification, "1.2.840.10008.1.2.1")
    side.accepted_contexts = (other,)
    assert side._context_as_scu(Verification) is other
    # A transfer syntax asked for is looked up each time.
    side.accepted_contexts = (first, other)
    assert side._context_as_scu(Verification, "1.2.840.10008.1.2.1") is other
    assert side._context_as_scu(Verification) is first


def test_response_status_is_a_fresh_copy_each_time() -> None:
    """Remembered status Datasets are copied: changing one a caller got changes no other,
    and each equals the status Dataset built afresh for the same response."""
    from dicomio._scu import response_status
    from dicomio.dimse import CEchoRSP, CMoveRSP
    from dicomio.status import status_dataset

    def echo_rsp(message_id: int, status: int = 0) -> CEchoRSP:
        return CEchoRSP(
            message_id_being_responded_to=message_id,
            status=status,
            affected_sop_class_uid=Verification,
        )

    first = response_status(echo_rsp(1))
    first.Status = 0xC000
    first.ErrorComment = "changed by the caller"
    second = response_status(echo_rsp(2))
    fresh = status_dataset(0, AffectedSOPClassUID=Verification)
    assert second == fresh and second is not first
    assert "ErrorComment" not in second
    assert response_status(echo_rsp(3, 0x0122)).Status == 0x0122
    # A value that cannot be a key (a list of offending elements) still gives its status.
    move = CMoveRSP(
        message_id_being_responded_to=4,
        status=0xA900,
        offending_element=[0x00100010, 0x00100020],
    )
    assert response_status(move).OffendingElement == [0x00100010, 0x00100020]
    assert response_status(move).Status == 0xA900


def test_store_response_statuses_are_remembered_apart_from_the_instance_uid() -> None:
    """C-STORE-RSPs differ in their Affected SOP Instance UID: each status Dataset has its
    own, equal to the one built afresh, while one remembered status serves them all."""
    from dicomio import _scu
    from dicomio._scu import response_status
    from dicomio.dimse import CStoreRSP
    from dicomio.status import status_dataset

    ct = "1.2.840.10008.5.1.4.1.1.2"

    def store_rsp(message_id: int, uid: str, status: int = 0) -> CStoreRSP:
        return CStoreRSP(
            message_id_being_responded_to=message_id,
            status=status,
            affected_sop_class_uid=ct,
            affected_sop_instance_uid=uid,
        )

    _scu._STATUSES.clear()
    uids = [f"1.2.826.0.1.3680043.8.498.{n}" for n in range(1, 200)]  # odd and even lengths
    for n, uid in enumerate(uids, 1):
        got = response_status(store_rsp(n, uid))
        assert got == status_dataset(0, AffectedSOPClassUID=ct, AffectedSOPInstanceUID=uid)
        assert got.AffectedSOPInstanceUID == uid
    assert len(_scu._STATUSES) == 1
    warning = response_status(store_rsp(7, uids[0], 0xB000))
    assert (warning.Status, warning.AffectedSOPInstanceUID) == (0xB000, uids[0])
    # A value that cannot be raw (not ASCII) is set as pydicom sets it, with its warning.
    with pytest.warns(UserWarning, match="Invalid value for VR UI"):
        odd = response_status(store_rsp(8, "1.2.\u00e9"))
    assert odd.AffectedSOPInstanceUID == "1.2.\u00e9"
