"""Errors say what happened in the standard's words, next to its numbers (issue #12, item 12).

- ``AssociationRejected``: the Result, Source and Reason/Diag. words of PS3.8 Table 9-21;
- ``AssociationAborted``: the Source and Reason/Diag. words of PS3.8 Table 9-26;
- ``NoPresentationContext``: SOP class and transfer syntax names (``dicomio.sop``) next to
  the UIDs, why the context is missing (never proposed, or rejected with its PS3.8 Table 9-18
  result), and the role when the context was accepted but this side may not use it as SCU
  (SCP/SCU Role Selection, PS3.7 D.3.3.4);
- the command line prints those messages.

The exceptions keep their numeric attributes as they were; only the messages gain words.
The expected words are typed out here from the tables, not taken from dicomio.
"""

from __future__ import annotations

import sys

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    JPEG2000,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)

from dicomio import AE, AssociationAborted, AssociationRejected, NoPresentationContext
from dicomio.errors import LossyTranscodeRefused
from dicomio.presentation import build_role
from dicomio.sop import CTImageStorage, MRImageStorage, Verification
from tests.conftest import LOOPBACK, run_tool, tool_output

# -- PS3.8 Table 9-21 (A-ASSOCIATE-RJ), every value ------------------------------------------

RESULTS = {1: "rejected-permanent", 2: "rejected-transient"}
SOURCES = {
    1: "DICOM UL service-user",
    2: "DICOM UL service-provider (ACSE related function)",
    3: "DICOM UL service-provider (Presentation related function)",
}
REASONS = {
    1: {
        1: "no-reason-given",
        2: "application-context-name-not-supported",
        3: "calling-AE-title-not-recognized",
        4: "reserved",
        5: "reserved",
        6: "reserved",
        7: "called-AE-title-not-recognized",
        8: "reserved",
        9: "reserved",
        10: "reserved",
    },
    2: {1: "no-reason-given", 2: "protocol-version-not-supported"},
    3: {
        0: "reserved",
        1: "temporary-congestion",
        2: "local-limit-exceeded",
        3: "reserved",
        4: "reserved",
        5: "reserved",
        6: "reserved",
        7: "reserved",
    },
}
REJECTIONS = [
    (result, source, reason)
    for result in RESULTS
    for source, reasons in REASONS.items()
    for reason in reasons
]


@pytest.mark.parametrize(("result", "source", "reason"), REJECTIONS)
def test_association_rejected_names_every_table_9_21_value(
    result: int, source: int, reason: int
) -> None:
    exc = AssociationRejected(result, source, reason)
    text = str(exc)
    words = f"{RESULTS[result]}, {SOURCES[source]}, {REASONS[source][reason]}"
    assert words in text, text
    assert f"result={result} source={source} reason={reason}" in text, text
    assert (exc.result, exc.source, exc.reason) == (result, source, reason)


def test_association_rejected_example_from_the_issue() -> None:
    assert str(AssociationRejected(1, 1, 7)) == (
        "association rejected: rejected-permanent, DICOM UL service-user, "
        "called-AE-title-not-recognized (result=1 source=1 reason=7)"
    )


@pytest.mark.parametrize(("result", "source", "reason"), [(0, 1, 1), (3, 9, 200), (1, 1, 11)])
def test_association_rejected_out_of_table_values_still_readable(
    result: int, source: int, reason: int
) -> None:
    """A peer that sends values outside the table gets them reported, not a KeyError."""
    text = str(AssociationRejected(result, source, reason))
    assert f"result={result} source={source} reason={reason}" in text
    assert "unknown" in text


# -- PS3.8 Table 9-26 (A-ABORT), every value -----------------------------------------------

ABORT_SOURCES = {
    0: "DICOM UL service-user (initiated abort)",
    1: "reserved",
    2: "DICOM UL service-provider (initiated abort)",
}
PROVIDER_REASONS = {
    0: "reason-not-specified",
    1: "unrecognized-PDU",
    2: "unexpected-PDU",
    3: "reserved",
    4: "unrecognized-PDU parameter",
    5: "unexpected-PDU parameter",
    6: "invalid-PDU-parameter value",
}


@pytest.mark.parametrize("reason", list(PROVIDER_REASONS))
def test_association_aborted_by_the_provider_names_the_reason(reason: int) -> None:
    exc = AssociationAborted(2, reason)
    text = str(exc)
    assert f"{ABORT_SOURCES[2]}, {PROVIDER_REASONS[reason]}" in text, text
    assert f"source=2 reason={reason}" in text, text
    assert (exc.source, exc.reason) == (2, reason)


@pytest.mark.parametrize("source", [0, 1])
def test_association_aborted_by_the_user_has_no_reason_words(source: int) -> None:
    """Table 9-26: with source 0 the reason field is not significant; so is it for 1."""
    text = str(AssociationAborted(source, 0))
    assert ABORT_SOURCES[source] in text, text
    assert f"source={source} reason=0" in text
    assert not any(word in text for word in PROVIDER_REASONS.values() if word != "reserved")
    assert text.count("reserved") == (source == 1), text


def test_association_aborted_keeps_the_detail() -> None:
    exc = AssociationAborted(2, 6, "presentation context ID 2 is not odd")
    assert str(exc) == (
        "association aborted: DICOM UL service-provider (initiated abort), "
        "invalid-PDU-parameter value (source=2 reason=6): presentation context ID 2 is not odd"
    )
    assert str(AssociationAborted(0, 0, "aborted locally")).endswith(
        "(source=0 reason=0): aborted locally"
    )
    assert str(AssociationAborted(2, 99)).count("unknown") == 1


# -- NoPresentationContext -------------------------------------------------------------------


def _ct(transfer_syntax: str, sop_class: str = CTImageStorage) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = "1.2.3.4.5.6.7"
    ds.PatientName = "Name^Test"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


@pytest.mark.anyio
async def test_no_context_names_the_sop_class_and_the_rejection() -> None:
    scp = AE("SCP")
    scp.add_supported_context(Verification)
    scu = AE("SCU")
    scu.add_requested_context(Verification)
    scu.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    async with (
        scp.start_server((LOOPBACK, 0)) as server,
        scu.associate(LOOPBACK, server.port, ae_title="SCP") as assoc,
    ):
        with pytest.raises(NoPresentationContext) as info:
            await assoc.send_c_store(_ct(ExplicitVRLittleEndian))
        text = str(info.value)
        assert f"CT Image Storage ({CTImageStorage})" in text, text
        # Proposed, and rejected by the acceptor with PS3.8 Table 9-18 result 3.
        assert "abstract-syntax-not-supported" in text, text
        (echo,) = assoc.accepted_contexts
        syntax = echo.transfer_syntax
        assert syntax is not None
        assert f"Verification SOP Class ({Verification}) in {syntax.name} ({syntax})" in text

        # Never proposed at all: said so, with the name.
        with pytest.raises(NoPresentationContext) as info:
            await assoc.send_c_store(_ct(ExplicitVRLittleEndian, MRImageStorage))
        text = str(info.value)
        assert f"MR Image Storage ({MRImageStorage})" in text, text
        assert "not proposed" in text, text


@pytest.mark.anyio
async def test_no_conversion_names_the_transfer_syntaxes() -> None:
    """A data set that could reach the accepted syntax only lossily: the refusal names the
    SOP class, its own syntax and the accepted one, and the way to allow it."""
    scp = AE("SCP")
    scp.add_supported_context(CTImageStorage, JPEG2000)
    scu = AE("SCU")
    scu.add_requested_context(CTImageStorage, [JPEGBaseline8Bit, JPEG2000])
    async with (
        scp.start_server((LOOPBACK, 0)) as server,
        scu.associate(LOOPBACK, server.port, ae_title="SCP") as assoc,
    ):
        with pytest.raises(LossyTranscodeRefused) as info:
            await assoc.send_c_store(_ct(JPEGBaseline8Bit))
    text = str(info.value)
    assert f"CT Image Storage ({CTImageStorage})" in text, text
    assert f"JPEG Baseline (Process 1) ({JPEGBaseline8Bit})" in text, text
    assert f"JPEG 2000 Image Compression ({JPEG2000})" in text, text
    assert "allow_lossy=True" in text, text


@pytest.mark.anyio
async def test_no_context_says_when_the_role_is_the_reason() -> None:
    """Accepted, but the requestor proposed only the SCP role: it may not send C-STOREs."""
    scp = AE("SCP")
    scp.add_supported_context(CTImageStorage, ImplicitVRLittleEndian, scp_role=True)
    scu = AE("SCU")
    scu.add_requested_context(CTImageStorage, ImplicitVRLittleEndian)
    async with (
        scp.start_server((LOOPBACK, 0)) as server,
        scu.associate(
            LOOPBACK,
            server.port,
            ae_title="SCP",
            ext_neg=[build_role(CTImageStorage, scp_role=True)],
        ) as assoc,
    ):
        assert [cx.abstract_syntax for cx in assoc.accepted_contexts] == [CTImageStorage]
        with pytest.raises(NoPresentationContext) as info:
            await assoc.send_c_store(_ct(ImplicitVRLittleEndian))
    text = str(info.value)
    assert f"CT Image Storage ({CTImageStorage})" in text, text
    assert "accepted" in text and "SCU role" in text, text
    assert "requestor" in text and "PS3.7 D.3.3.4" in text, text
    assert "abstract-syntax-not-supported" not in text


@pytest.mark.anyio
async def test_acceptor_without_the_role_is_told_why() -> None:
    """The acceptor may act as SCU on a context only if the requestor took the SCP role."""
    scp = AE("SCP")
    scp.add_supported_context(Verification)
    scu = AE("SCU")
    scu.add_requested_context(Verification)
    seen: list[str] = []

    async def on_echo(event: object) -> int:
        try:
            await event.assoc.send_c_echo()  # type: ignore[attr-defined]
        except NoPresentationContext as exc:
            seen.append(str(exc))
        return 0

    from dicomio import evt

    async with (
        scp.start_server((LOOPBACK, 0), evt_handlers=[(evt.EVT_C_ECHO, on_echo)]) as server,
        scu.associate(LOOPBACK, server.port, ae_title="SCP") as assoc,
    ):
        assert (await assoc.send_c_echo()).Status == 0
    (text,) = seen
    assert f"Verification SOP Class ({Verification})" in text, text
    assert "acceptor" in text and "SCP role" in text, text


# -- the command line prints the words ----------------------------------------------------


@pytest.mark.anyio
async def test_echoscu_prints_the_rejection_in_words() -> None:
    scp = AE("RIGHT")
    scp.require_called_aet = True
    scp.add_supported_context(Verification)
    async with scp.start_server((LOOPBACK, 0)) as server:
        result = await run_tool(
            [
                sys.executable,
                "-m",
                "dicomio",
                "echoscu",
                "-aec",
                "WRONG",
                LOOPBACK,
                str(server.port),
            ],
            timeout=60,
        )
    output = tool_output(result)
    assert result.returncode != 0, output
    assert "rejected-permanent, DICOM UL service-user, called-AE-title-not-recognized" in output, (
        output
    )
    assert "result=1 source=1 reason=7" in output, output
