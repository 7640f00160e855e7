"""Logging: DEBUG shows PDU and DIMSE summaries with the peer; INFO never shows patient data."""

from __future__ import annotations

import logging

import anyio
import pytest
from pydicom.dataset import Dataset

from dicomio import AE, evt
from dicomio.sop import CTImageStorage, PatientRootQueryRetrieveInformationModelFind, Verification

pytestmark = pytest.mark.anyio
FIND = PatientRootQueryRetrieveInformationModelFind


async def exchange() -> int:
    scp = AE("SCP")
    for uid in (Verification, CTImageStorage, FIND):
        scp.add_supported_context(uid)

    async def on_store(event: evt.Event) -> int:
        return 0

    async def on_find(event: evt.Event):  # type: ignore[no-untyped-def]
        ds = Dataset()
        ds.PatientName = "Secret^Patient"
        ds.PatientID = "SECRET-ID"
        yield 0xFF00, ds

    handlers = [(evt.EVT_C_STORE, on_store), (evt.EVT_C_FIND, on_find)]
    async with scp.start_server(("127.0.0.1", 0), evt_handlers=handlers) as server:
        scu = AE("SCU")
        for uid in (Verification, CTImageStorage, FIND):
            scu.add_requested_context(uid)
        with anyio.fail_after(10):
            async with scu.associate("127.0.0.1", server.port, ae_title="SCP") as assoc:
                await assoc.send_c_echo()
                ds = Dataset()
                ds.SOPClassUID = CTImageStorage
                ds.SOPInstanceUID = "1.2.3"
                ds.PatientName = "Secret^Patient"
                ds.PatientID = "SECRET-ID"
                await assoc.send_c_store(ds)
                query = Dataset()
                query.QueryRetrieveLevel = "PATIENT"
                query.PatientID = "SECRET-ID"
                async for _ in assoc.send_c_find(query, FIND):
                    pass
        return server.port


async def test_debug_shows_pdu_and_dimse_summaries(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="dicomio"):
        await exchange()
    text = caplog.text
    assert "A-ASSOCIATE-RQ SCU->SCP" in text
    assert "A-ASSOCIATE-AC 3/3 contexts accepted" in text
    assert "CEchoRQ id=1" in text and "CEchoRSP id=1 status=0x0000" in text
    assert "CStoreRQ" in text and "CFindRSP" in text
    assert all(
        "[127.0.0.1:" in r.getMessage() for r in caplog.records if r.name == "dicomio.association"
    )
    assert "SECRET" not in text and "Secret" not in text


async def test_info_has_no_patient_identifiers(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="dicomio"):
        await exchange()
    assert "association accepted" in caplog.text
    assert "SECRET" not in caplog.text and "Secret" not in caplog.text


async def test_reject_and_abort_log_lines_speak_ps38_words(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The server's reject line and the requestor's peer-abort line carry the table words."""
    scp = AE("SCP")
    scp.add_supported_context(Verification)
    scp.require_called_aet = True

    async def on_echo(event: evt.Event) -> int:
        await event.assoc.abort()
        return 0

    handlers = [(evt.EVT_C_ECHO, on_echo)]
    scu = AE("SCU")
    scu.add_requested_context(Verification)
    with caplog.at_level(logging.INFO, logger="dicomio"):
        async with scp.start_server(("127.0.0.1", 0), evt_handlers=handlers) as server:
            with anyio.fail_after(10):
                with pytest.raises(Exception, match="called-AE-title-not-recognized"):
                    await scu.associate("127.0.0.1", server.port, ae_title="WRONG")
                with pytest.raises(Exception, match="aborted"):
                    async with scu.associate("127.0.0.1", server.port, ae_title="SCP") as a:
                        await a.send_c_echo()
    text = caplog.text
    assert (
        "rejecting: association rejected: rejected-permanent, DICOM UL service-user, "
        "called-AE-title-not-recognized (result=1 source=1 reason=7)" in text
    )
    assert "peer aborted: association aborted: DICOM UL service-user (initiated abort)" in text
