"""pynetdicom's PascalCase names on DIMSE messages: ``event.request.AffectedSOPInstanceUID``.

Read-only properties named by the PS3.6 keyword of each field a message has (issue #16).
They must not slow down the snake_case fields: a ``__getattr__`` anywhere in a message's
class would take every attribute read off CPython's fast path (measured 9 -> 27 ns per
read on 3.11), so no message class may have one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import attrs
import pytest
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from dicomio import AE, evt
from dicomio.dimse import commands
from dicomio.dimse.commands import (
    COMMAND_ELEMENTS,
    DATA_SET_PRESENT,
    MESSAGE_CLASSES,
    NO_DATA_SET,
    CEchoRQ,
    CMoveRQ,
    CStoreRQ,
    CStoreRSP,
    decode_command,
    encode_command,
)
from dicomio.sop import CTImageStorage, PatientRootQueryRetrieveInformationModelMove
from tests.conftest import LOOPBACK
from tests.test_dimse_commands import ALL_CLASSES, full_message

KEYWORDS = {
    keyword_for_tag(element): field
    for element, field, _vr in COMMAND_ELEMENTS
    if field not in ("command_group_length", "command_data_set_type")
}


def _fields(cls: type) -> set[str]:
    return {f.name for f in attrs.fields(cls)} | {"command_field"}


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("seed", range(3))
def test_every_field_reads_by_its_keyword(cls: type[Any], seed: int) -> None:
    message = decode_command(encode_command(full_message(cls, seed)))
    fields = _fields(type(message))
    for keyword, field in KEYWORDS.items():
        if field in fields:
            assert getattr(message, keyword) == getattr(message, field), keyword
        else:
            assert not hasattr(message, keyword), keyword
    expected = DATA_SET_PRESENT if message.has_dataset else NO_DATA_SET
    assert message.CommandDataSetType == expected


def test_pynetdicom_names_on_a_request() -> None:
    rq = CMoveRQ(
        message_id=3,
        affected_sop_class_uid=PatientRootQueryRetrieveInformationModelMove,
        move_destination="DEST",
        priority=2,
    )
    assert rq.MessageID == 3
    assert rq.MoveDestination == "DEST"
    assert rq.Priority == 2
    assert rq.AffectedSOPClassUID == PatientRootQueryRetrieveInformationModelMove
    assert rq.CommandField == 0x0021
    assert not hasattr(rq, "AffectedSOPInstanceUID")  # C-MOVE-RQ has none (PS3.7 9.3-8)
    rsp = CStoreRSP(message_id_being_responded_to=3, status=0xA700, error_comment="full")
    assert (rsp.MessageIDBeingRespondedTo, rsp.Status, rsp.ErrorComment) == (3, 0xA700, "full")


def test_keywords_cannot_be_set() -> None:
    rq = CEchoRQ(message_id=1)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        rq.MessageID = 2  # type: ignore[attr-defined]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        rq.message_id = 2  # type: ignore[misc]
    assert rq.message_id == 1


def test_the_data_set_names_say_where_the_data_set_is() -> None:
    rq = CStoreRQ(message_id=1, affected_sop_class_uid="1.2.3", affected_sop_instance_uid="1.2")
    with pytest.raises(AttributeError, match=r"no DataSet: .*event\.encoded_dataset\(\)"):
        rq.DataSet  # noqa: B018
    assert not hasattr(rq, "Identifier")


def test_no_message_class_has_a_getattr_fallback() -> None:
    """Only properties: the snake_case fields keep CPython's specialised attribute reads."""
    for cls in MESSAGE_CLASSES.values():
        assert all("__getattr__" not in vars(base) for base in cls.__mro__), cls
        assert cls.__getattribute__ is object.__getattribute__, cls
        assert hasattr(cls, "__slots__"), cls
    assert not hasattr(commands, "__getattr__")


@pytest.mark.anyio
async def test_a_handler_reads_its_request_as_pynetdicom_does() -> None:
    seen: dict[str, Any] = {}

    async def on_store(event: evt.Event) -> int:
        request = event.request
        seen["store"] = (
            request.MessageID,
            request.AffectedSOPClassUID,
            request.AffectedSOPInstanceUID,
            request.Priority,
        )
        return 0

    async def on_move(event: evt.Event) -> AsyncIterator[Any]:
        seen["move"] = (event.request.MoveDestination, event.request.Priority)
        yield 0

    scp, scu = AE("SCP"), AE("SCU")
    move = PatientRootQueryRetrieveInformationModelMove
    for uid in (CTImageStorage, move):
        scp.add_supported_context(uid, ExplicitVRLittleEndian)
        scu.add_requested_context(uid, ExplicitVRLittleEndian)
    ct = Dataset()
    ct.SOPClassUID = CTImageStorage
    ct.SOPInstanceUID = "1.2.3.4.5"
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    handlers = [evt.handler(evt.EVT_C_STORE, on_store), evt.handler(evt.EVT_C_MOVE, on_move)]
    with anyio.fail_after(10):
        async with (
            scp.start_server((LOOPBACK, 0), evt_handlers=handlers) as server,
            scu.associate(LOOPBACK, server.port, ae_title="SCP") as assoc,
        ):
            assert (await assoc.send_c_store(ct, priority=1)).Status == 0
            async for _ in assoc.send_c_move(query, "ELSEWHERE", move, priority=0):
                pass
    message_id, sop_class, sop_instance, priority = seen["store"]
    assert (sop_class, sop_instance, priority) == (CTImageStorage, "1.2.3.4.5", 1)
    assert isinstance(message_id, int)
    assert seen["move"] == ("ELSEWHERE", 0)
