"""What a handler finds on ``event``, under pynetdicom's names, dicomio to dicomio."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from io import BytesIO
from typing import Any

import anyio
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian

from dicomio import AE, evt
from dicomio.sop import (
    CTImageStorage,
    ModalityPerformedProcedureStep,
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    StorageCommitmentPushModel,
)
from tests.conftest import LOOPBACK

pytestmark = pytest.mark.anyio

FIND = PatientRootQueryRetrieveInformationModelFind
MOVE = PatientRootQueryRetrieveInformationModelMove
CONTEXTS = [CTImageStorage, ModalityPerformedProcedureStep, StorageCommitmentPushModel, FIND, MOVE]


def _pair() -> tuple[AE, AE]:
    scp, scu = AE("SCP"), AE("SCU")
    for uid in CONTEXTS:
        scp.add_supported_context(uid, ExplicitVRLittleEndian)
        scu.add_requested_context(uid, ExplicitVRLittleEndian)
    return scp, scu


async def test_request_fields_by_pynetdicom_names() -> None:
    seen: dict[str, Any] = {}

    async def on_store(event: evt.Event) -> int:
        seen["timestamp"] = event.timestamp
        seen["file"] = event.encoded_dataset()
        seen["bare"] = event.encoded_dataset(include_meta=False)
        return 0

    async def on_action(event: evt.Event) -> tuple[int, None]:
        seen["action_type"] = event.action_type
        return 0, None

    async def on_report(event: evt.Event) -> tuple[int, None]:
        seen["event_type"] = event.event_type
        return 0, None

    async def on_get(event: evt.Event) -> tuple[int, Dataset]:
        seen["attribute_identifiers"] = event.attribute_identifiers
        return 0, Dataset()

    async def on_set(event: evt.Event) -> tuple[int, Dataset]:
        seen["modification_list"] = event.modification_list.PerformedProcedureStepStatus
        return 0, event.modification_list

    async def on_move(event: evt.Event) -> AsyncIterator[Any]:
        seen["move_destination"] = event.move_destination
        yield (LOOPBACK, 1)  # never used: no matches
        yield 0

    handlers = [
        (evt.EVT_C_STORE, on_store),
        (evt.EVT_N_ACTION, on_action),
        (evt.EVT_N_EVENT_REPORT, on_report),
        (evt.EVT_N_GET, on_get),
        (evt.EVT_N_SET, on_set),
        (evt.EVT_C_MOVE, on_move),
    ]
    ct = Dataset()
    ct.SOPClassUID = CTImageStorage
    ct.SOPInstanceUID = "1.2.3.4.5"
    ct.PatientName = "Fields^Test"
    mpps = Dataset()
    mpps.PerformedProcedureStepStatus = "COMPLETED"
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    scp, scu = _pair()
    before = datetime.datetime.now()
    with anyio.fail_after(10):
        async with (
            scp.start_server((LOOPBACK, 0), evt_handlers=handlers) as server,
            scu.associate(LOOPBACK, server.port, ae_title="SCP") as assoc,
        ):
            assert (await assoc.send_c_store(ct)).Status == 0
            uid = "1.2.840.10008.1.20.1.1"
            await assoc.send_n_action(Dataset(), 7, StorageCommitmentPushModel, uid)
            await assoc.send_n_event_report(Dataset(), 3, StorageCommitmentPushModel, uid)
            tags = [Tag("PatientName"), Tag("PatientID")]
            await assoc.send_n_get(tags, ModalityPerformedProcedureStep, "1.2.3")
            await assoc.send_n_set(mpps, ModalityPerformedProcedureStep, "1.2.3")
            async for _ in assoc.send_c_move(query, "ELSEWHERE", MOVE):
                pass
    assert before <= seen["timestamp"] <= datetime.datetime.now()
    stored = dcmread(BytesIO(seen["file"]))
    assert stored.PatientName == "Fields^Test"
    assert stored.file_meta.MediaStorageSOPInstanceUID == "1.2.3.4.5"
    assert stored.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert stored.file_meta.SourceApplicationEntityTitle == "SCU"
    assert seen["file"].endswith(seen["bare"]) and seen["file"][128:132] == b"DICM"
    assert seen["action_type"] == 7 and seen["event_type"] == 3
    assert seen["attribute_identifiers"] == [Tag("PatientName"), Tag("PatientID")]
    assert seen["modification_list"] == "COMPLETED"
    assert seen["move_destination"] == "ELSEWHERE"


async def test_a_find_handler_sees_is_cancelled() -> None:
    looked: list[bool] = []
    cancel_arrived = anyio.Event()

    async def on_find(event: evt.Event) -> AsyncIterator[tuple[int, Dataset]]:
        try:
            for i in range(10_000):
                looked.append(event.is_cancelled)
                ds = Dataset()
                ds.PatientID = str(i)
                yield 0xFF00, ds
                await anyio.sleep(0.005)
        finally:
            looked.append(event.is_cancelled)
            cancel_arrived.set()

    scp, scu = _pair()
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    with anyio.fail_after(10):
        async with (
            scp.start_server((LOOPBACK, 0), evt_handlers=[(evt.EVT_C_FIND, on_find)]) as server,
            scu.associate(LOOPBACK, server.port, ae_title="SCP") as assoc,
        ):
            results = assoc.send_c_find(query, FIND)
            async for status, _ in results:
                if status.Status == 0xFF00 and not cancel_arrived.is_set():
                    await results.cancel()
                    await cancel_arrived.wait()
    assert looked[0] is False  # before the C-CANCEL
    assert looked[-1] is True  # the handler, stopped, can tell why


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("password", [b"secret", b"wrong", b"raise"])
async def test_evt_user_id_handler_as_in_pynetdicom(kind: str, password: bytes) -> None:
    from dicomio import AssociationRejected
    from dicomio.pdu import UserIdentityRQ

    seen: list[tuple[int, bytes, bytes | None]] = []

    def check(event: evt.Event, kind_: int, primary: bytes, secondary: bytes | None) -> Any:
        seen.append((kind_, primary, secondary))
        if secondary == b"raise":
            raise RuntimeError("directory unreachable")
        return secondary == b"secret", b"token-for-" + primary

    async def check_async(event: evt.Event, *fields: Any) -> Any:
        return check(event, *fields)

    scp, scu = _pair()
    handler = check if kind == "sync" else check_async
    identity = UserIdentityRQ(
        user_identity_type=2,
        positive_response_requested=True,
        primary_field=b"alice",
        secondary_field=password,
    )
    with anyio.fail_after(10):
        async with scp.start_server(
            (LOOPBACK, 0), evt_handlers=[(evt.EVT_USER_ID, handler)]
        ) as server:
            if password == b"secret":
                async with scu.associate(
                    LOOPBACK, server.port, ae_title="SCP", ext_neg=[identity]
                ) as assoc:
                    assert assoc.user_identity_response == b"token-for-alice"
            else:
                with pytest.raises(AssociationRejected) as raised:
                    await scu.associate(LOOPBACK, server.port, ae_title="SCP", ext_neg=[identity])
                # Rejected permanently by the service user, no reason given (PS3.8 9.3.4).
                assert (raised.value.result, raised.value.source, raised.value.reason) == (1, 1, 1)
    assert seen == [(2, b"alice", password)]


async def test_negotiation_events_as_in_pynetdicom() -> None:
    from dicomio.pdu import (
        AsynchronousOperationsWindow,
        SOPClassCommonExtendedNegotiation,
        SOPClassExtendedNegotiation,
    )

    seen: dict[str, Any] = {}

    def async_ops(event: evt.Event, invoked: int, performed: int) -> tuple[int, int]:
        seen["async_ops"] = (invoked, performed)
        return 4, 2

    async def sop_extended(event: evt.Event, app_info: dict[str, bytes]) -> dict[str, bytes]:
        seen["sop_extended"] = app_info
        # A reply for a class that was not proposed is not sent (PS3.7 D.3.3.5).
        return {CTImageStorage: b"\x01\x00", "1.2.3.4": b"\x01\x00"}

    def sop_common(event: evt.Event, items: dict[str, Any]) -> dict[str, Any]:
        seen["sop_common"] = sorted(items)
        return items

    handlers: list[tuple[evt.EventType, Any]] = [
        (evt.EVT_ASYNC_OPS, async_ops),
        (evt.EVT_SOP_EXTENDED, sop_extended),
        (evt.EVT_SOP_COMMON, sop_common),
    ]
    scp, scu = _pair()
    scu.async_ops_window = (8, 8)
    ext_neg = [
        SOPClassExtendedNegotiation(
            sop_class_uid=CTImageStorage, service_class_application_information=b"\x01\x01"
        ),
        SOPClassCommonExtendedNegotiation(
            sop_class_uid=CTImageStorage, service_class_uid="1.2.840.10008.4.2"
        ),
    ]
    with anyio.fail_after(10):
        async with (
            scp.start_server((LOOPBACK, 0), evt_handlers=handlers) as server,
            scu.associate(LOOPBACK, server.port, ae_title="SCP", ext_neg=ext_neg) as assoc,
        ):
            assert assoc.associate_ac is not None
            items = assoc.associate_ac.user_information
            (window,) = [i for i in items if isinstance(i, AsynchronousOperationsWindow)]
            replies = [i for i in items if isinstance(i, SOPClassExtendedNegotiation)]
            assert not [i for i in items if isinstance(i, SOPClassCommonExtendedNegotiation)]
    assert seen == {
        "async_ops": (8, 8),
        "sop_extended": {CTImageStorage: b"\x01\x01"},
        "sop_common": [CTImageStorage],
    }
    assert (
        window.maximum_number_operations_invoked,
        window.maximum_number_operations_performed,
    ) == (
        4,
        2,
    )
    assert [(r.sop_class_uid, r.service_class_application_information) for r in replies] == [
        (CTImageStorage, b"\x01\x00")
    ]
