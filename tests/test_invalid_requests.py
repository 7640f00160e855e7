"""Requests with invalid command fields are refused, and no request goes unanswered (#12.2).

A provider must answer every request (PS3.7 9.1, 10.1). A request whose command fields
break PS3.5 (a UID over 64 characters or not a UID by PS3.5 9.1, an AE title over 16
characters) cannot be echoed in an encodable response, and names nothing that can exist:
it is refused before any handler or data set sink runs, with the status PS3.7 Annex C /
PS3.4 give for the field (0117H Invalid SOP Instance, 0122H SOP Class not supported,
A801H Move Destination unknown, C000H Cannot understand). A response that still cannot be
encoded (a handler's doing) is replaced by a failure status, or by an A-ABORT where no
response can be formed; never silence.

The peer that sends what dicomio's own encoder refuses to write is a raw socket with hand
encoded command sets; pynetdicom (which checks only a UID's length by default) is the real
peer for a malformed UID of legal length.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomio import AE, AssociationAborted, evt, stream_to_disk
from dicomio.dimse import CEchoRSP, MessageAssembler, MessageReceived
from dicomio.dimse.commands import COMMAND_ELEMENTS, CStoreRQ, decode_command
from dicomio.pdu import PDataTF, PresentationContextRQ, decode
from dicomio.sop import (
    CTImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StorageCommitmentPushModel,
    Verification,
)
from tests.conftest import LOOPBACK
from tests.test_scp_robustness import (
    SCP_AET,
    SERVER_MAX_PDU,
    RawPeer,
    pdv_bytes,
    raw_peer,
    valid_rq,
)

pytestmark = pytest.mark.anyio

ECHO, STORE, FIND, GET, MOVE, NSERVICE = 1, 3, 5, 7, 9, 11
CONTEXTS = {
    ECHO: Verification,
    STORE: CTImageStorage,
    FIND: PatientRootQueryRetrieveInformationModelFind,
    GET: PatientRootQueryRetrieveInformationModelGet,
    MOVE: PatientRootQueryRetrieveInformationModelMove,
    NSERVICE: StorageCommitmentPushModel,
}
#: 65 characters: one more than PS3.5 9.1 allows; digits and dots otherwise.
UID_65 = "1.2." + "3" * 61
assert len(UID_65) == 65
GOOD_INSTANCE = "1.2.3.4.5"
BAD_UIDS = {
    "65_chars": UID_65,
    "leading_zero": "1.2.03.4",
    "letters": "1.2.abc",
    "trailing_dot": "1.2.3.",
    "empty_component": "1..2",
}
FIELDS = {name: (element, vr) for element, name, vr in COMMAND_ELEMENTS}

#: The message ID of the C-ECHO that checks the association still works.
ECHO_CHECK_ID = 99
INVALID_SOP_INSTANCE, SOP_CLASS_NOT_SUPPORTED = 0x0117, 0x0122
MOVE_DESTINATION_UNKNOWN, CANNOT_UNDERSTAND = 0xA801, 0xC000


# -- hand-encoded command sets (dicomio's encoder would refuse these values) ----------------


def raw_command(command_field: int, has_dataset: bool, **fields: Any) -> bytes:
    """A command set (PS3.7 6.3.1) written by hand, with whatever values it is given."""
    elements: list[tuple[int, bytes]] = [
        (0x0100, struct.pack("<H", command_field)),
        (0x0800, struct.pack("<H", 0x0001 if has_dataset else 0x0101)),
    ]
    for name, value in fields.items():
        element, vr = FIELDS[name]
        if vr == "US":
            raw = struct.pack("<H", value)
        else:
            raw = value.encode("latin-1")
            if len(raw) % 2:
                raw += b"\x00" if vr == "UI" else b" "
        elements.append((element, raw))
    body = b"".join(
        struct.pack("<HHI", 0, element, len(raw)) + raw for element, raw in sorted(elements)
    )
    return struct.pack("<HHII", 0, 0, 4, len(body)) + body


def identifier() -> bytes:
    """A tiny data set, Implicit VR Little Endian: (0010,0020) Patient ID "X "."""
    return struct.pack("<HHI", 0x0010, 0x0020, 2) + b"X "


class Peer:
    """A raw requestor: sends hand-made messages, reads the server's answers."""

    def __init__(self, raw: RawPeer) -> None:
        self.raw = raw
        self.assembler = MessageAssembler()

    async def send(self, context_id: int, command: bytes, dataset: bytes | None) -> None:
        await self.raw.send(pdv_bytes(context_id, 0x03, command))
        if dataset is not None:
            await self.raw.send(pdv_bytes(context_id, 0x02, dataset))

    async def response(self) -> Any:
        """The next whole DIMSE message from the server (fails on an abort or close)."""
        while True:
            pdu = await self.raw.read_pdu()
            assert pdu is not None, "the server closed the connection instead of answering"
            value = decode(pdu)
            assert isinstance(value, PDataTF), f"expected P-DATA-TF, got {value!r}"
            for item in self.assembler.receive(value):
                assert isinstance(item, MessageReceived)
                return item.command

    async def echo_still_works(self, message_id: int = ECHO_CHECK_ID) -> None:
        await self.send(
            ECHO,
            raw_command(0x0030, False, message_id=message_id, affected_sop_class_uid=Verification),
            None,
        )
        rsp = await self.response()
        assert isinstance(rsp, CEchoRSP)
        assert (rsp.message_id_being_responded_to, rsp.status) == (message_id, 0)


def scp_ae() -> AE:
    ae = AE(SCP_AET, maximum_pdu_size=SERVER_MAX_PDU)
    for abstract in CONTEXTS.values():
        ae.add_supported_context(
            abstract,
            [ExplicitVRLittleEndian, ImplicitVRLittleEndian],
            scp_role=True,
            scu_role=True,
        )
    ae.move_destinations["KNOWN"] = (LOOPBACK, 1)
    return ae


def rq_contexts() -> list[PresentationContextRQ]:
    return [
        PresentationContextRQ(
            context_id=context_id,
            abstract_syntax=abstract,
            transfer_syntaxes=[ImplicitVRLittleEndian],
        )
        for context_id, abstract in CONTEXTS.items()
    ]


class Recorder:
    """Handlers for every service, each recording that it ran (which it must not)."""

    def __init__(self, directory: Path) -> None:
        self.calls: list[str] = []
        directory.mkdir(exist_ok=True)
        self.directory = directory

        @stream_to_disk(directory)
        async def streamed_store(event: Any) -> int:
            self.calls.append("C-STORE (stream)")
            return 0

        self.streamed_store = streamed_store

    def handlers(self, *, stream: bool) -> list[Any]:
        async def status(event: Any) -> int:
            if event.request.message_id != ECHO_CHECK_ID:  # not echo_still_works()
                self.calls.append(event.event.name)
            return 0

        async def items(event: Any) -> AsyncIterator[Any]:
            self.calls.append(event.event.name)
            yield 0

        store = self.streamed_store if stream else status
        return [
            (evt.EVT_C_ECHO, status),
            (evt.EVT_C_STORE, store),
            (evt.EVT_C_FIND, items),
            (evt.EVT_C_GET, items),
            (evt.EVT_C_MOVE, items),
            *[
                (event, status)
                for event in (
                    evt.EVT_N_EVENT_REPORT,
                    evt.EVT_N_GET,
                    evt.EVT_N_SET,
                    evt.EVT_N_ACTION,
                    evt.EVT_N_CREATE,
                    evt.EVT_N_DELETE,
                )
            ],
        ]


# Each case: (context, command field, data set?, fields, expected status, expected offending
# element or None). ``BAD`` stands for the bad UID under test.
BAD = object()
_STORE = {"affected_sop_class_uid": CTImageStorage, "affected_sop_instance_uid": GOOD_INSTANCE}
_N = {"requested_sop_class_uid": StorageCommitmentPushModel}
CASES: dict[str, tuple[int, int, bool, dict[str, Any], int]] = {
    "c_store_instance": (
        STORE,
        0x0001,
        True,
        {**_STORE, "affected_sop_instance_uid": BAD},
        INVALID_SOP_INSTANCE,
    ),
    "c_store_class": (
        STORE,
        0x0001,
        True,
        {**_STORE, "affected_sop_class_uid": BAD},
        SOP_CLASS_NOT_SUPPORTED,
    ),
    "c_echo_class": (
        ECHO,
        0x0030,
        False,
        {"affected_sop_class_uid": BAD},
        SOP_CLASS_NOT_SUPPORTED,
    ),
    "c_find_class": (FIND, 0x0020, True, {"affected_sop_class_uid": BAD}, SOP_CLASS_NOT_SUPPORTED),
    "c_get_class": (GET, 0x0010, True, {"affected_sop_class_uid": BAD}, SOP_CLASS_NOT_SUPPORTED),
    "c_move_class": (
        MOVE,
        0x0021,
        True,
        {"affected_sop_class_uid": BAD, "move_destination": "KNOWN"},
        SOP_CLASS_NOT_SUPPORTED,
    ),
    "n_event_report_instance": (
        NSERVICE,
        0x0100,
        False,
        {
            "affected_sop_class_uid": StorageCommitmentPushModel,
            "affected_sop_instance_uid": BAD,
            "event_type_id": 1,
        },
        INVALID_SOP_INSTANCE,
    ),
    "n_get_instance": (
        NSERVICE,
        0x0110,
        False,
        {**_N, "requested_sop_instance_uid": BAD},
        INVALID_SOP_INSTANCE,
    ),
    "n_get_class": (
        NSERVICE,
        0x0110,
        False,
        {"requested_sop_class_uid": BAD, "requested_sop_instance_uid": GOOD_INSTANCE},
        SOP_CLASS_NOT_SUPPORTED,
    ),
    "n_set_instance": (
        NSERVICE,
        0x0120,
        True,
        {**_N, "requested_sop_instance_uid": BAD},
        INVALID_SOP_INSTANCE,
    ),
    "n_action_instance": (
        NSERVICE,
        0x0130,
        True,
        {**_N, "requested_sop_instance_uid": BAD, "action_type_id": 1},
        INVALID_SOP_INSTANCE,
    ),
    "n_create_instance": (
        NSERVICE,
        0x0140,
        True,
        {"affected_sop_class_uid": StorageCommitmentPushModel, "affected_sop_instance_uid": BAD},
        INVALID_SOP_INSTANCE,
    ),
    "n_create_class": (
        NSERVICE,
        0x0140,
        True,
        {"affected_sop_class_uid": BAD},
        SOP_CLASS_NOT_SUPPORTED,
    ),
    "n_delete_instance": (
        NSERVICE,
        0x0150,
        False,
        {**_N, "requested_sop_instance_uid": BAD},
        INVALID_SOP_INSTANCE,
    ),
}


async def refused(
    tmp_path: Path,
    context_id: int,
    command_field: int,
    has_dataset: bool,
    fields: dict[str, Any],
    *,
    stream: bool = False,
) -> tuple[Any, Recorder]:
    """Send one request, then an echo; return the response to the request."""
    recorder = Recorder(tmp_path / "stored")
    ae = scp_ae()
    async with (
        ae.start_server((LOOPBACK, 0), evt_handlers=recorder.handlers(stream=stream)) as server,
        raw_peer(server.port) as raw,
    ):
        await raw.associate(valid_rq(presentation_contexts=rq_contexts()))
        peer = Peer(raw)
        await peer.send(
            context_id,
            raw_command(command_field, has_dataset, message_id=7, **fields),
            identifier() if has_dataset else None,
        )
        rsp = await peer.response()
        await peer.echo_still_works()
    return rsp, recorder


@pytest.mark.parametrize("bad", list(BAD_UIDS))
@pytest.mark.parametrize("case", list(CASES))
async def test_request_with_invalid_uid_is_refused(tmp_path: Path, case: str, bad: str) -> None:
    """Every DIMSE-C and DIMSE-N request with a malformed UID: the status, no handler."""
    context_id, command_field, has_dataset, fields, status = CASES[case]
    fields = {name: BAD_UIDS[bad] if value is BAD else value for name, value in fields.items()}
    with anyio.fail_after(10):
        rsp, recorder = await refused(tmp_path, context_id, command_field, has_dataset, fields)
    assert rsp.command_field == command_field | 0x8000
    assert rsp.message_id_being_responded_to == 7
    assert rsp.status == status
    # The offending value is never echoed; the valid ones are (all U(=) fields).
    bad_value = BAD_UIDS[bad]
    assert bad_value not in (rsp.affected_sop_class_uid, rsp.affected_sop_instance_uid)
    if status == INVALID_SOP_INSTANCE:
        assert rsp.affected_sop_class_uid == next(
            v for k, v in fields.items() if k.endswith("sop_class_uid")
        )
        assert rsp.affected_sop_instance_uid is None
    else:
        assert rsp.affected_sop_class_uid is None
    assert recorder.calls == []


@pytest.mark.parametrize("stream", [False, True], ids=["in_memory", "stream_to_disk"])
async def test_refused_store_stores_nothing(tmp_path: Path, stream: bool) -> None:
    """The issue's case: a 65-character Affected SOP Instance UID, nothing written anywhere."""
    fields = {**_STORE, "affected_sop_instance_uid": UID_65}
    with anyio.fail_after(10):
        rsp, recorder = await refused(tmp_path, STORE, 0x0001, True, fields, stream=stream)
    assert rsp.status == INVALID_SOP_INSTANCE
    assert recorder.calls == []
    assert list(recorder.directory.iterdir()) == []


async def test_bad_move_originator_is_cannot_understand(tmp_path: Path) -> None:
    fields = {**_STORE, "move_originator_application_entity_title": "A" * 17}
    with anyio.fail_after(10):
        rsp, recorder = await refused(tmp_path, STORE, 0x0001, True, fields)
    assert rsp.status == CANNOT_UNDERSTAND
    assert rsp.offending_element == (0x00001030,)
    assert rsp.error_comment
    assert (rsp.affected_sop_class_uid, rsp.affected_sop_instance_uid) == (
        CTImageStorage,
        GOOD_INSTANCE,
    )
    assert recorder.calls == []


@pytest.mark.parametrize("destination", ["A" * 17, "BACK\\SLASH"])
async def test_bad_move_destination_is_unknown(tmp_path: Path, destination: str) -> None:
    fields = {
        "affected_sop_class_uid": PatientRootQueryRetrieveInformationModelMove,
        "move_destination": destination,
    }
    with anyio.fail_after(10):
        rsp, recorder = await refused(tmp_path, MOVE, 0x0021, True, fields)
    assert rsp.status == MOVE_DESTINATION_UNKNOWN
    assert rsp.affected_sop_class_uid == PatientRootQueryRetrieveInformationModelMove
    assert recorder.calls == []


async def test_default_echo_refuses_bad_class_uid(tmp_path: Path) -> None:
    """No C-ECHO handler: the reader's own fast answer must not echo a bad UID either."""
    ae = scp_ae()
    with anyio.fail_after(10):
        async with ae.start_server((LOOPBACK, 0)) as server, raw_peer(server.port) as raw:
            await raw.associate(valid_rq(presentation_contexts=rq_contexts()))
            peer = Peer(raw)
            await peer.send(
                ECHO,
                raw_command(0x0030, False, message_id=3, affected_sop_class_uid=UID_65),
                None,
            )
            rsp = await peer.response()
            assert (rsp.message_id_being_responded_to, rsp.status) == (3, 0x0122)
            await peer.echo_still_works()


def test_invalid_field_accepts_valid_requests() -> None:
    from dicomio.dimse.commands import invalid_field  # new in #12: imported here, so that
    # the rest of this file runs (and fails) on the code before it

    rq = CStoreRQ(
        message_id=1,
        affected_sop_class_uid=CTImageStorage,
        affected_sop_instance_uid="0.1.2.10.999",
        move_originator_application_entity_title="ANY-SCU 16 chars",
    )
    assert invalid_field(rq) is None
    # Decoded, as a peer's request is: building it here would have pydicom warn.
    fields = {**_STORE, "affected_sop_instance_uid": UID_65}
    bad = decode_command(raw_command(0x0001, True, message_id=1, **fields))
    problem = invalid_field(bad)
    assert problem is not None
    assert (problem.name, problem.tag) == ("affected_sop_instance_uid", 0x1000)


def test_a_class_uid_found_valid_is_not_checked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """SOP class UIDs found valid are remembered (a few per process); instance UIDs and AE
    titles are checked every time, and an invalid class UID is refused every time."""
    from dicomio.dimse import commands

    monkeypatch.setattr(commands, "_valid_classes", set())
    matched: list[str] = []

    def counting_match(value: str) -> Any:
        matched.append(value)
        return commands._UID_PATTERN.fullmatch(value)

    monkeypatch.setattr(commands, "_uid_match", counting_match)
    for n in range(3):
        rq = CStoreRQ(
            message_id=n,
            affected_sop_class_uid=CTImageStorage,
            affected_sop_instance_uid=f"1.2.3.{n}",
        )
        assert commands.invalid_field(rq) is None
    assert matched == [CTImageStorage, "1.2.3.0", "1.2.3.1", "1.2.3.2"]
    assert commands._valid_classes == {CTImageStorage}
    # A class UID that is not valid is not remembered, and refused again.
    fields = {**_STORE, "affected_sop_class_uid": "1.02.3"}
    for _ in range(2):
        bad = decode_command(raw_command(0x0001, True, message_id=1, **fields))
        problem = commands.invalid_field(bad)
        assert problem is not None and problem.name == "affected_sop_class_uid"
    assert commands._valid_classes == {CTImageStorage}
    # A remembered class UID as a Move Destination is still checked as an AE title (and
    # at 26 characters it is not one).
    fields = {
        "affected_sop_class_uid": PatientRootQueryRetrieveInformationModelMove,
        "move_destination": CTImageStorage,
    }
    move = decode_command(raw_command(0x0021, True, message_id=1, priority=0, **fields))
    problem = commands.invalid_field(move)
    assert problem is not None and problem.name == "move_destination"
    # The set stops growing at its bound.
    kept = {CTImageStorage, PatientRootQueryRetrieveInformationModelMove}
    assert commands._valid_classes == kept
    monkeypatch.setattr(commands, "_VALID_CLASSES_KEPT", 2)
    other = CStoreRQ(
        message_id=9, affected_sop_class_uid="1.2.3.4.5", affected_sop_instance_uid="1.2.3"
    )
    assert commands.invalid_field(other) is None
    assert commands._valid_classes == kept


# -- responses that cannot be encoded: a failure status or an A-ABORT, never silence --------


def _client(port: int, *contexts: str) -> Any:
    client = AE("CLIENT")
    for context in (Verification, *contexts):
        client.add_requested_context(context)
    return client.associate(LOOPBACK, port, ae_title=SCP_AET)


def _ct() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = GOOD_INSTANCE
    ds.PatientID = "X"
    return ds


async def test_unencodable_store_response_becomes_failure() -> None:
    """A handler's non-ASCII Error Comment: the peer gets C000H at once, not a timeout."""

    async def store(event: Any) -> Dataset:
        status = Dataset()
        status.Status = 0
        status.ErrorComment = "stored naïvely"
        return status

    with anyio.fail_after(10):
        async with (
            scp_ae().start_server(
                (LOOPBACK, 0), evt_handlers=[(evt.EVT_C_STORE, store)]
            ) as server,
            _client(server.port, CTImageStorage) as assoc,
        ):
            status = await assoc.send_c_store(_ct())
            assert status.Status == CANNOT_UNDERSTAND
            assert "ErrorComment" in status
            assert (await assoc.send_c_echo()).Status == 0


async def test_unencodable_n_create_response_becomes_failure() -> None:
    """A handler names a 70-character SOP Instance UID: the peer gets 0110H."""

    async def create(event: Any) -> tuple[int, Dataset]:
        reply = Dataset()
        reply.SOPInstanceUID = "1." + "2" * 68
        return 0, reply

    with anyio.fail_after(10):
        async with (
            scp_ae().start_server(
                (LOOPBACK, 0), evt_handlers=[(evt.EVT_N_CREATE, create)]
            ) as server,
            _client(server.port, StorageCommitmentPushModel) as assoc,
        ):
            status, _ = await assoc.send_n_create(Dataset(), StorageCommitmentPushModel)
            assert status.Status == 0x0110
            assert (await assoc.send_c_echo()).Status == 0


async def test_unencodable_pending_response_aborts() -> None:
    """A C-GET handler announces 70,000 sub-operations, more than a US count can say: no
    Pending response can be formed, and a failure would end an operation still running, so
    the provider aborts; the requestor learns at once instead of waiting for a timeout."""

    async def get(event: Any) -> AsyncIterator[Any]:
        yield 70_000
        yield 0xFF00, _ct()

    async def store(event: Any) -> int:
        return 0

    with anyio.fail_after(10):
        async with scp_ae().start_server(
            (LOOPBACK, 0), evt_handlers=[(evt.EVT_C_GET, get)]
        ) as server:
            client = AE("CLIENT")
            client.add_requested_context(PatientRootQueryRetrieveInformationModelGet)
            client.add_requested_context(CTImageStorage)
            query = Dataset()
            query.QueryRetrieveLevel = "PATIENT"
            query.PatientID = "X"
            with pytest.raises(AssociationAborted):
                async with client.associate(
                    LOOPBACK,
                    server.port,
                    ae_title=SCP_AET,
                    evt_handlers=[(evt.EVT_C_STORE, store)],
                    ext_neg=[_scp_role(CTImageStorage)],
                ) as assoc:
                    async for _ in assoc.send_c_get(
                        query, PatientRootQueryRetrieveInformationModelGet
                    ):
                        pass


def _scp_role(sop_class: str) -> Any:
    from dicomio import build_role

    return build_role(sop_class, scp_role=True)


# -- a real peer: pynetdicom checks only a UID's length by default --------------------------


@pytest.mark.interop
@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # pydicom, on our test data
@pytest.mark.parametrize("bad", ["1.2.3.abc", "1.2.03.4"])
async def test_pynetdicom_store_with_malformed_uid_is_refused(tmp_path: Path, bad: str) -> None:
    """pynetdicom sends what it is given; dicomio answers 0117H, stores nothing, goes on."""
    import functools

    from pynetdicom import AE as PynetdicomAE

    recorder = Recorder(tmp_path / "stored")
    ds = _ct()
    ds.SOPInstanceUID = bad
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian

    def run(port: int) -> tuple[int, int, int]:
        ae = PynetdicomAE(ae_title="PYNETDICOM")
        ae.add_requested_context(CTImageStorage, ImplicitVRLittleEndian)
        ae.add_requested_context(StorageCommitmentPushModel)
        ae.add_requested_context(Verification)
        assoc = ae.associate(LOOPBACK, port, ae_title=SCP_AET)
        assert assoc.is_established
        try:
            store = assoc.send_c_store(ds)
            action, _ = assoc.send_n_action(None, 1, StorageCommitmentPushModel, bad)
            echo = assoc.send_c_echo()
            return int(store.Status), int(action.Status), int(echo.Status)
        finally:
            assoc.release()

    with anyio.fail_after(30):
        async with scp_ae().start_server(
            (LOOPBACK, 0), evt_handlers=recorder.handlers(stream=True)
        ) as server:
            store, action, echo = await anyio.to_thread.run_sync(
                functools.partial(run, server.port)
            )
    assert (store, action) == (INVALID_SOP_INSTANCE, INVALID_SOP_INSTANCE)
    assert echo == 0
    assert recorder.calls == ["EVT_C_ECHO"]
    assert list(recorder.directory.iterdir()) == []


# -- the last resort: a request whose handling fails in our own code is still answered ----


@pytest.mark.parametrize("service", ["c_store", "n_create"])
async def test_internal_error_still_answers(monkeypatch: pytest.MonkeyPatch, service: str) -> None:
    """A bug between handler and response (simulated by breaking a helper the dispatch
    uses) leaves no request unanswered: the peer gets C000H / 0110H, not a timeout."""
    import dicomio._scp

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("simulated bug")

    async def store(event: Any) -> int:
        return 0

    async def create(event: Any) -> int:
        return 0

    if service == "c_store":
        monkeypatch.setattr(dicomio._scp, "_call_for_status", broken)
    else:
        monkeypatch.setattr(dicomio._scp, "generate_uid", broken)
    handlers = [(evt.EVT_C_STORE, store), (evt.EVT_N_CREATE, create)]
    with anyio.fail_after(10):
        async with (
            scp_ae().start_server((LOOPBACK, 0), evt_handlers=handlers) as server,
            _client(server.port, CTImageStorage, StorageCommitmentPushModel) as assoc,
        ):
            if service == "c_store":
                assert (await assoc.send_c_store(_ct())).Status == CANNOT_UNDERSTAND
            else:
                status, _ = await assoc.send_n_create(Dataset(), StorageCommitmentPushModel)
                assert status.Status == 0x0110
            assert (await assoc.send_c_echo()).Status == 0


@pytest.mark.parametrize(
    ("context_id", "command_field", "fields"),
    [
        (STORE, 0x0001, {"affected_sop_class_uid": CTImageStorage}),  # no instance UID
        (STORE, 0x0001, {"affected_sop_instance_uid": GOOD_INSTANCE}),  # no class UID
        (NSERVICE, 0x0130, {**_N, "requested_sop_instance_uid": GOOD_INSTANCE}),  # no action
    ],
    ids=["c_store_no_instance", "c_store_no_class", "n_action_no_type"],
)
async def test_missing_mandatory_field_aborts(
    tmp_path: Path, context_id: int, command_field: int, fields: dict[str, Any]
) -> None:
    """A request without a field PS3.7 marks mandatory is not a message dicomio can hold
    (``decode_command`` refuses it), so no response names it: the provider aborts at once
    (A-ABORT, source 2), which the requestor sees instead of a silent wait. Nothing runs."""
    recorder = Recorder(tmp_path / "stored")
    with anyio.fail_after(10):
        async with (
            scp_ae().start_server(
                (LOOPBACK, 0), evt_handlers=recorder.handlers(stream=True)
            ) as server,
            raw_peer(server.port) as raw,
        ):
            await raw.associate(valid_rq(presentation_contexts=rq_contexts()))
            await Peer(raw).send(
                context_id, raw_command(command_field, True, message_id=7, **fields), identifier()
            )
            pdu = await raw.read_pdu()
            assert pdu is not None and pdu[0] == 0x07, f"expected A-ABORT, got {pdu!r}"
            assert pdu[8] == 2  # source: the service provider (PS3.8 Table 9-26)
    assert recorder.calls == []
    assert list(recorder.directory.iterdir()) == []


@pytest.mark.interop
@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # pydicom, on our test data
async def test_dcmtk_storescu_with_malformed_uid_is_refused(tmp_path: Path) -> None:
    """DCMTK storescu sends a file whose SOP Instance UID is "1.2.3.abc" as it stands:
    dicomio answers 0117H (storescu: "Unknown Status: 0x117"), stores nothing, goes on."""
    import pydicom

    from tests.conftest import require_dcmtk, run_tool, tool_output

    tools = require_dcmtk("storescu")
    ds = pydicom.dcmread(Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.abc"
    bad = tmp_path / "bad.dcm"
    ds.save_as(bad)
    recorder = Recorder(tmp_path / "stored")
    with anyio.fail_after(60):
        async with scp_ae().start_server(
            (LOOPBACK, 0), evt_handlers=recorder.handlers(stream=True)
        ) as server:
            result = await run_tool(
                [tools["storescu"], "-v", "-aec", SCP_AET, LOOPBACK, str(server.port), str(bad)]
            )
    output = tool_output(result)
    assert "Received Store Response (Unknown Status: 0x117)" in output, output
    assert "Releasing Association" in output, output
    assert recorder.calls == []
    assert list(recorder.directory.iterdir()) == []


async def test_c_get_requestor_refuses_bad_sub_operation() -> None:
    """The requestor's side of C-GET serves C-STORE sub-operations too: a sub-operation
    with a 65-character SOP Instance UID gets 0117H there, and its handler never runs."""
    from dicomio.dimse import CGetRSP
    from tests.fake_peer import fake_acceptor

    seen: dict[str, Any] = {}

    async def script(conn: Any) -> None:
        rq = await conn.accept()
        get_rq, _ = await conn.read_message()
        store_cx = next(
            cx.context_id
            for cx in rq.presentation_contexts
            if cx.abstract_syntax == CTImageStorage
        )
        command = raw_command(
            0x0001, True, message_id=1, **{**_STORE, "affected_sop_instance_uid": UID_65}
        )
        await conn.send(pdv_bytes(store_cx, 0x03, command))
        await conn.send(pdv_bytes(store_cx, 0x02, identifier()))
        seen["store_rsp"], _ = await conn.read_message()
        await conn.send_message(
            CGetRSP(
                message_id_being_responded_to=get_rq.message_id,
                affected_sop_class_uid=PatientRootQueryRetrieveInformationModelGet,
                status=0,
                number_of_completed_sub_operations=0,
                number_of_failed_sub_operations=1,
                number_of_warning_sub_operations=0,
            ),
            context_id=conn.context_id,
        )
        await conn.drain()

    calls: list[Any] = []

    async def store(event: Any) -> int:
        calls.append(event)
        return 0

    client = AE("CLIENT")
    client.add_requested_context(PatientRootQueryRetrieveInformationModelGet)
    client.add_requested_context(CTImageStorage, ImplicitVRLittleEndian)
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    query.PatientID = "X"
    with anyio.fail_after(10):
        async with (
            fake_acceptor(script) as peer,
            client.associate(
                LOOPBACK,
                peer.port,
                ae_title="FAKE",
                evt_handlers=[(evt.EVT_C_STORE, store)],
                ext_neg=[_scp_role(CTImageStorage)],
            ) as assoc,
        ):
            statuses = [
                int(s.Status)
                async for s, _ in assoc.send_c_get(
                    query, PatientRootQueryRetrieveInformationModelGet
                )
            ]
    assert not peer.errors, peer.errors
    assert statuses == [0]
    rsp = seen["store_rsp"]
    assert (rsp.message_id_being_responded_to, rsp.status) == (1, INVALID_SOP_INSTANCE)
    assert calls == []
