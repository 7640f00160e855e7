"""dicomio as the SCU against pynetdicom 3 as the SCP, in a background thread.

Every DIMSE-C service (C-ECHO, C-STORE, C-FIND, C-GET with role selection, C-MOVE to a
second pynetdicom storage SCP) and every DIMSE-N service (N-EVENT-REPORT, N-GET, N-SET,
N-ACTION, N-CREATE, N-DELETE) with pynetdicom handlers answering status and data set; user
identity negotiation with a server response; the asynchronous operations window; and an
N-EVENT-REPORT sent by the SCP on the same association (storage commitment style), answered
by the requestor's own EVT_N_EVENT_REPORT handler.

pynetdicom runs its servers in threads (``start_server(..., block=False)``); what its handlers
see is recorded in thread-safe lists and checked once our side is done.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomio import AE, errors, evt
from dicomio.dataset import decode_dataset
from dicomio.pdu import UserIdentityRQ
from dicomio.presentation import build_context, storage_scp_roles
from dicomio.sop import (
    CTImageStorage,
    MRImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from tests.conftest import free_port
from tests.corpus import TRANSFER_SYNTAXES, Corpus, Instance, dataset_bytes

pynetdicom = pytest.importorskip("pynetdicom")

pytestmark = [pytest.mark.anyio, pytest.mark.interop]

DEADLINE = 30.0
IMAGE_CLASSES = (CTImageStorage, MRImageStorage)
QR_MODELS = (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)
#: Print Management's Basic Film Session: pynetdicom's service class for it takes all six
#: DIMSE-N services, which is all that matters here.
FILM_SESSION = "1.2.840.10008.5.1.1.1"
STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
PYSCP = "PYSCP"


@dataclass
class Stored:
    sop_uid: str
    transfer_syntax: str
    raw: bytes


@dataclass
class PyPeer:
    """A running pynetdicom SCP and its move destination, and what their handlers saw."""

    port: int
    move_port: int
    corpus: Corpus
    stored: list[Stored] = field(default_factory=list)
    moved: list[Stored] = field(default_factory=list)
    requests: list[tuple[str, Any, Dataset | None]] = field(default_factory=list)
    event_report_status: list[Any] = field(default_factory=list)
    user_identities: list[tuple[int, bytes, bytes]] = field(default_factory=list)
    async_ops: list[tuple[int, int]] = field(default_factory=list)
    find_cancelled: threading.Event = field(default_factory=threading.Event)
    #: Make the C-FIND handler wait (bounded) for a C-CANCEL before each further match.
    find_waits_for_cancel: bool = False
    #: What the user-identity handler answers: (verified, server response).
    identity_answer: tuple[bool, bytes | None] = (True, b"token")

    def reset(self) -> None:
        """Forget what the previous test's requests left behind (the servers live on)."""
        fresh = PyPeer(port=self.port, move_port=self.move_port, corpus=self.corpus)
        self.__dict__.update(fresh.__dict__)


def stored_from(event: Any) -> Stored:
    return Stored(
        str(event.request.AffectedSOPInstanceUID),
        str(event.context.transfer_syntax),
        event.request.DataSet.getvalue(),
    )


def matches(corpus: Corpus, identifier: Dataset) -> list[Instance]:
    """The corpus instances an identifier's unique and Modality keys select (exact match)."""
    keys = {
        "PatientID": "patient_id",
        "StudyInstanceUID": "study_uid",
        "SeriesInstanceUID": "series_uid",
        "SOPInstanceUID": "sop_uid",
        "Modality": "modality",
    }
    criteria = {
        attr: str(identifier.get(keyword, ""))
        for keyword, attr in keys.items()
        if identifier.get(keyword, "")
    }
    return corpus.by(**criteria)


def find_responses(corpus: Corpus, identifier: Dataset) -> list[Dataset]:
    level = identifier.QueryRetrieveLevel
    key = {"PATIENT": "patient_id", "STUDY": "study_uid", "SERIES": "series_uid"}.get(
        level, "sop_uid"
    )
    seen: dict[str, Instance] = {}
    for instance in matches(corpus, identifier):
        seen.setdefault(getattr(instance, key), instance)
    responses = []
    for instance in seen.values():
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.QueryRetrieveLevel = level
        ds.PatientID = instance.patient_id
        ds.PatientName = instance.patient_name
        if level != "PATIENT":
            ds.StudyInstanceUID = instance.study_uid
        if level in ("SERIES", "IMAGE"):
            ds.SeriesInstanceUID = instance.series_uid
            ds.Modality = instance.modality
        if level == "IMAGE":
            ds.SOPInstanceUID = instance.sop_uid
        responses.append(ds)
    return responses


def start_pynetdicom(peer: PyPeer) -> tuple[Any, Any]:
    """The main SCP and the storage SCP it moves to; both threaded servers."""
    from pynetdicom import AE as PynetdicomAE
    from pynetdicom import build_context as pyn_build_context
    from pynetdicom import evt as pevt

    # -- the move destination
    dest = PynetdicomAE("MOVEDEST")
    for cls in IMAGE_CLASSES:
        dest.add_supported_context(cls, list(TRANSFER_SYNTAXES))

    def on_moved(event: Any) -> int:
        peer.moved.append(stored_from(event))
        return 0x0000

    dest_server = dest.start_server(
        ("127.0.0.1", peer.move_port), block=False, evt_handlers=[(pevt.EVT_C_STORE, on_moved)]
    )

    # -- the main SCP
    ae = PynetdicomAE(PYSCP)
    ae.add_supported_context(Verification)
    for cls in IMAGE_CLASSES:
        ae.add_supported_context(cls, list(TRANSFER_SYNTAXES), scu_role=True, scp_role=True)
    for model in QR_MODELS:
        ae.add_supported_context(model)
    ae.add_supported_context(FILM_SESSION)
    ae.add_supported_context(STORAGE_COMMITMENT)

    def on_store(event: Any) -> int:
        peer.stored.append(stored_from(event))
        return 0x0000

    def on_find(event: Any) -> Iterator[tuple[int, Dataset | None]]:
        identifier = event.identifier
        peer.requests.append(("C-FIND", event.request, identifier))
        for n, ds in enumerate(find_responses(peer.corpus, identifier)):
            # pynetdicom's is_cancelled consumes the C-CANCEL: read it once per step.
            cancelled = event.is_cancelled
            if peer.find_waits_for_cancel and n > 0:
                # Give the C-CANCEL time to arrive, so that it is seen here, mid-operation.
                deadline = time.monotonic() + 5.0
                while not cancelled and time.monotonic() < deadline:
                    time.sleep(0.01)
                    cancelled = event.is_cancelled
            if cancelled:
                peer.find_cancelled.set()
                yield 0xFE00, None
                return
            yield 0xFF00, ds

    def on_get(event: Any) -> Iterator[Any]:
        wanted = matches(peer.corpus, event.identifier)
        yield len(wanted)
        for instance in wanted:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            yield 0xFF00, dcmread(instance.path)

    def on_move(event: Any) -> Iterator[Any]:
        peer.requests.append(("C-MOVE", event.request, event.identifier))
        if event.move_destination.strip() != "MOVEDEST":
            yield None, None
            return
        wanted = matches(peer.corpus, event.identifier)
        # One context per (SOP class, transfer syntax): each file goes as it stands.
        contexts = [
            pyn_build_context(cls, ts) for cls in IMAGE_CLASSES for ts in TRANSFER_SYNTAXES
        ]
        yield "127.0.0.1", peer.move_port, {"contexts": contexts}
        yield len(wanted)
        for instance in wanted:
            yield 0xFF00, dcmread(instance.path)

    def n_reply(name: str) -> Any:
        def handler(event: Any) -> tuple[int, Dataset]:
            dataset = None
            if event.request.__class__.__name__ in ("N_SET", "N_CREATE"):
                dataset = event.attribute_list
            elif event.request.__class__.__name__ == "N_ACTION":
                dataset = event.action_information
            elif event.request.__class__.__name__ == "N_EVENT_REPORT":
                dataset = event.event_information
            peer.requests.append((name, event.request, dataset))
            reply = Dataset()
            reply.PatientID = f"{name}-REPLY"
            if name == "N-CREATE" and not event.request.AffectedSOPInstanceUID:
                # The SCP assigns the instance UID when the SCU gave none (PS3.7 10.1.5).
                reply.AffectedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.777"
            if name == "N-ACTION" and event.request.RequestedSOPClassUID == STORAGE_COMMITMENT:
                # Storage commitment style: report the result on the same association,
                # before answering the N-ACTION itself.
                info = Dataset()
                info.TransactionUID = dataset.TransactionUID
                status = event.assoc.send_n_event_report(
                    info, 1, STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE
                )
                peer.event_report_status.append(status)
            return 0x0000, reply

        return handler

    def on_n_delete(event: Any) -> int:
        peer.requests.append(("N-DELETE", event.request, None))
        return 0x0000

    def on_user_id(event: Any) -> tuple[bool, bytes | None]:
        peer.user_identities.append(
            (event.user_id_type, event.primary_field, event.secondary_field)
        )
        return peer.identity_answer

    def on_async_ops(event: Any) -> tuple[int, int]:
        peer.async_ops.append((event.nr_invoked, event.nr_performed))
        return event.nr_invoked, event.nr_performed

    handlers = [
        (pevt.EVT_C_STORE, on_store),
        (pevt.EVT_C_FIND, on_find),
        (pevt.EVT_C_GET, on_get),
        (pevt.EVT_C_MOVE, on_move),
        (pevt.EVT_N_GET, n_reply("N-GET")),
        (pevt.EVT_N_SET, n_reply("N-SET")),
        (pevt.EVT_N_CREATE, n_reply("N-CREATE")),
        (pevt.EVT_N_ACTION, n_reply("N-ACTION")),
        (pevt.EVT_N_EVENT_REPORT, n_reply("N-EVENT-REPORT")),
        (pevt.EVT_N_DELETE, on_n_delete),
        (pevt.EVT_USER_ID, on_user_id),
        (pevt.EVT_ASYNC_OPS, on_async_ops),
    ]
    server = ae.start_server(("127.0.0.1", peer.port), block=False, evt_handlers=handlers)
    return server, dest_server


@pytest.fixture(scope="module")
def pynetdicom_servers(corpus: Corpus) -> Iterator[PyPeer]:
    """Started once per module: shutting a pynetdicom server down takes a poll interval."""
    peer = PyPeer(port=free_port(), move_port=free_port(), corpus=corpus)
    server, dest_server = start_pynetdicom(peer)
    try:
        yield peer
    finally:
        server.shutdown()
        dest_server.shutdown()


@pytest.fixture
def pyscp(pynetdicom_servers: PyPeer) -> PyPeer:
    pynetdicom_servers.reset()
    return pynetdicom_servers


def scu(*abstract_syntaxes: str) -> AE:
    ae = AE("DICOMIOSCU")
    for uid in abstract_syntaxes:
        ae.add_requested_context(uid)
    return ae


def one_context_per_syntax(ae: AE) -> None:
    for cls in IMAGE_CLASSES:
        for ts in TRANSFER_SYNTAXES:
            ae.add_requested_context(cls, ts)


def same_instance(instance: Instance, got: Stored) -> None:
    """What arrived is the instance: in its own syntax, and byte for byte unless re-encoded."""
    assert got.sop_uid == instance.sop_uid
    assert got.transfer_syntax == instance.transfer_syntax
    assert got.raw == dataset_bytes(instance.path), instance.path.name


# -- DIMSE-C ----------------------------------------------------------------------------------


async def test_c_echo(pyscp: PyPeer) -> None:
    ae = scu(Verification)
    with anyio.fail_after(DEADLINE):
        async with ae.associate("127.0.0.1", pyscp.port, ae_title=PYSCP) as assoc:
            assert (await assoc.send_c_echo()).Status == 0
            assert (
                assoc.remote_implementation_class_uid == pynetdicom.PYNETDICOM_IMPLEMENTATION_UID
            )
    assert assoc.is_released


async def test_c_store_every_file_byte_identical(pyscp: PyPeer, corpus: Corpus) -> None:
    ae = AE("DICOMIOSCU")
    one_context_per_syntax(ae)
    with anyio.fail_after(DEADLINE):
        async with ae.associate("127.0.0.1", pyscp.port, ae_title=PYSCP) as assoc:
            for instance in corpus.instances:
                assert (await assoc.send_c_store(instance.path)).Status == 0
    assert len(pyscp.stored) == len(corpus.instances)
    for instance, got in zip(corpus.instances, pyscp.stored, strict=True):
        same_instance(instance, got)


async def test_c_store_dataset_converted_to_the_accepted_syntax(
    pyscp: PyPeer, corpus: Corpus
) -> None:
    instance = corpus.by(transfer_syntax=ExplicitVRLittleEndian)[0]
    ds = dcmread(instance.path)
    ae = AE("DICOMIOSCU")
    ae.add_requested_context(instance.sop_class, ImplicitVRLittleEndian)
    with anyio.fail_after(DEADLINE):
        async with ae.associate("127.0.0.1", pyscp.port, ae_title=PYSCP) as assoc:
            assert (await assoc.send_c_store(ds)).Status == 0
    (got,) = pyscp.stored
    assert got.transfer_syntax == ImplicitVRLittleEndian
    received = decode_dataset(got.raw, ImplicitVRLittleEndian)
    assert received.SOPInstanceUID == ds.SOPInstanceUID
    assert received.PixelData == ds.PixelData


@pytest.mark.parametrize(
    "model",
    [PatientRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelFind],
)
async def test_c_find(pyscp: PyPeer, corpus: Corpus, model: str) -> None:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = "PID001"
    query.PatientName = ""
    query.StudyInstanceUID = ""
    ae = scu(model)
    statuses, found = [], []
    with anyio.fail_after(DEADLINE):
        async with ae.associate("127.0.0.1", pyscp.port, ae_title=PYSCP) as assoc:
            async for status, identifier in assoc.send_c_find(query, model):
                statuses.append(int(status.Status))
                if identifier is not None:
                    found.append(identifier)
    assert statuses == [0xFF00, 0xFF00, 0x0000]
    assert {str(ds.StudyInstanceUID) for ds in found} == {
        i.study_uid for i in corpus.by(patient_id="PID001")
    }
    assert {str(ds.PatientName) for ds in found} == {"Müller^Jürgen"}
    (_, request, identifier) = pyscp.requests[0]
    assert request.AffectedSOPClassUID == model
    assert identifier.PatientID == "PID001"


async def test_c_find_cancel(pyscp: PyPeer) -> None:
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.SOPInstanceUID = ""
    model = StudyRootQueryRetrieveInformationModelFind
    ae = scu(model, Verification)
    pyscp.find_waits_for_cancel = True
    with anyio.fail_after(DEADLINE):
        async with ae.associate("127.0.0.1", pyscp.port, ae_title=PYSCP) as assoc:
            async with assoc.send_c_find(query, model) as responses:
                async for status, _ in responses:
                    assert status.Status == 0xFF00
                    break
            assert (await assoc.send_c_echo()).Status == 0
    assert pyscp.find_cancelled.is_set()


async def test_c_find_bare_break_cancels(pyscp: PyPeer) -> None:
    """``break`` without ``async with``: the C-CANCEL leaves with the next write."""
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.SOPInstanceUID = ""
    model = StudyRootQueryRetrieveInformationModelFind
    ae = scu(model, Verification)
    pyscp.find_waits_for_cancel = True
    with anyio.fail_after(DEADLINE):
        async with ae.associate("127.0.0.1", pyscp.port, ae_title=PYSCP) as assoc:
            async for status, _ in assoc.send_c_find(query, model):
                assert status.Status == 0xFF00
                break
            # The late final response (Cancel) is absorbed; the echo gets its own answer.
            assert (await assoc.send_c_echo()).Status == 0
            assert (await assoc.send_c_echo()).Status == 0
    assert pyscp.find_cancelled.is_set()


GET_MODELS = [
    StudyRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelGet,
]


@pytest.mark.parametrize("model", GET_MODELS)
async def test_c_get_series_with_role_selection(pyscp: PyPeer, corpus: Corpus, model: str) -> None:
    # A series with RLE, Deflated and another syntax: every one must come back as it is.
    series = next(
        uid for uid in corpus.series_uids
        if len({i.transfer_syntax for i in corpus.by(series_uid=uid)}) == 3
        and TRANSFER_SYNTAXES[-1] in {i.transfer_syntax for i in corpus.by(series_uid=uid)}
    )  # fmt: skip
    wanted = corpus.by(series_uid=series)
    received: list[Stored] = []

    async def on_store(event: Any) -> int:
        received.append(
            Stored(
                str(event.request.affected_sop_instance_uid),
                str(event.context.transfer_syntax),
                bytes(event.raw),
            )
        )
        return 0x0000

    contexts = [build_context(model)] + [
        build_context(cls, ts) for cls in IMAGE_CLASSES for ts in TRANSFER_SYNTAXES
    ]
    query = Dataset()
    query.QueryRetrieveLevel = "SERIES"
    query.PatientID = wanted[0].patient_id
    query.StudyInstanceUID = wanted[0].study_uid
    query.SeriesInstanceUID = series
    statuses = []
    with anyio.fail_after(DEADLINE):
        async with AE("GETSCU").associate(
            "127.0.0.1", pyscp.port, ae_title=PYSCP, contexts=contexts,
            ext_neg=storage_scp_roles(contexts), evt_handlers=[(evt.EVT_C_STORE, on_store)],
        ) as assoc:  # fmt: skip
            storage = [cx for cx in assoc.accepted_contexts if cx.abstract_syntax != model]
            assert len(storage) == len(contexts) - 1
            assert all(cx.scp_role and cx.scu_role is False for cx in storage)
            async for status, _ in assoc.send_c_get(query, model):
                statuses.append(status)
    assert [int(s.Status) for s in statuses] == [0xFF00] * len(wanted) + [0x0000]
    assert statuses[-1].NumberOfCompletedSuboperations == len(wanted)
    assert [s.NumberOfRemainingSuboperations for s in statuses[:-1]] == list(
        range(len(wanted) - 1, -1, -1)
    )
    assert len(received) == len(wanted)
    for instance, got in zip(wanted, received, strict=True):
        same_instance(instance, got)


async def test_c_get_without_role_selection_fails_its_sub_operations(
    pyscp: PyPeer, corpus: Corpus
) -> None:
    """No SCP role negotiated: pynetdicom cannot send the C-STOREs, and says so in the status."""
    model = StudyRootQueryRetrieveInformationModelGet
    wanted = corpus.by(series_uid=corpus.series_uids[0])
    contexts = [
        build_context(model),
        build_context(wanted[0].sop_class, wanted[0].transfer_syntax),
    ]
    query = Dataset()
    query.QueryRetrieveLevel = "SERIES"
    query.StudyInstanceUID = wanted[0].study_uid
    query.SeriesInstanceUID = wanted[0].series_uid
    with anyio.fail_after(DEADLINE):
        async with AE("GETSCU").associate(
            "127.0.0.1", pyscp.port, ae_title=PYSCP, contexts=contexts
        ) as assoc:
            statuses = [s async for s, _ in assoc.send_c_get(query, model)]
    final = statuses[-1]
    assert final.Status in (0xA702, 0xB000), final
    assert final.NumberOfFailedSuboperations == len(wanted)
    assert final.get("NumberOfCompletedSuboperations", 0) == 0


@pytest.mark.parametrize(
    "model",
    [StudyRootQueryRetrieveInformationModelMove, PatientRootQueryRetrieveInformationModelMove],
)
async def test_c_move_study_to_a_second_scp(pyscp: PyPeer, corpus: Corpus, model: str) -> None:
    wanted = corpus.by(study_uid=corpus.study_uids[1])
    assert len(wanted) == 6
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = wanted[0].patient_id
    query.StudyInstanceUID = wanted[0].study_uid
    ae = scu(model)
    with anyio.fail_after(DEADLINE):
        async with ae.associate("127.0.0.1", pyscp.port, ae_title=PYSCP) as assoc:
            statuses = [s async for s, _ in assoc.send_c_move(query, "MOVEDEST", model)]
    assert [int(s.Status) for s in statuses] == [0xFF00] * len(wanted) + [0x0000]
    assert statuses[-1].NumberOfCompletedSuboperations == len(wanted)
    moved = {got.sop_uid: got for got in pyscp.moved}
    assert set(moved) == {i.sop_uid for i in wanted}
    for instance in wanted:
        same_instance(instance, moved[instance.sop_uid])
    (_, request, _) = next(r for r in pyscp.requests if r[0] == "C-MOVE")
    assert request.MoveDestination.strip() == "MOVEDEST"


async def test_c_move_to_an_unknown_destination(pyscp: PyPeer, corpus: Corpus) -> None:
    model = StudyRootQueryRetrieveInformationModelMove
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = corpus.study_uids[0]
    ae = scu(model)
    with anyio.fail_after(DEADLINE):
        async with ae.associate("127.0.0.1", pyscp.port, ae_title=PYSCP) as assoc:
            statuses = [s async for s, _ in assoc.send_c_move(query, "NOWHERE", model)]
    assert [int(s.Status) for s in statuses] == [0xA801]


# -- DIMSE-N ----------------------------------------------------------------------------------


def request_seen(peer: PyPeer, name: str) -> tuple[Any, Dataset | None]:
    found = [(rq, ds) for n, rq, ds in peer.requests if n == name]
    assert len(found) == 1, peer.requests
    return found[0]


def attributes(**values: Any) -> Dataset:
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


async def test_n_services(pyscp: PyPeer) -> None:
    instance = "1.2.826.0.1.3680043.8.498.42"
    ae = scu(FILM_SESSION)
    with anyio.fail_after(DEADLINE):
        async with ae.associate("127.0.0.1", pyscp.port, ae_title=PYSCP) as assoc:
            status, reply = await assoc.send_n_get(
                [0x00100010, 0x00100020], FILM_SESSION, instance
            )
            assert status.Status == 0 and reply is not None
            assert reply.PatientID == "N-GET-REPLY"

            status, reply = await assoc.send_n_set(
                attributes(NumberOfCopies=2), FILM_SESSION, instance
            )
            assert status.Status == 0 and reply is not None
            assert reply.PatientID == "N-SET-REPLY"

            status, reply = await assoc.send_n_create(
                attributes(NumberOfCopies=1), FILM_SESSION, instance
            )
            assert status.Status == 0 and reply is not None
            assert reply.PatientID == "N-CREATE-REPLY"
            assert status.AffectedSOPInstanceUID == instance

            status, reply = await assoc.send_n_action(
                attributes(PatientID="ACT"), 1, FILM_SESSION, instance
            )
            assert status.Status == 0 and reply is not None
            assert reply.PatientID == "N-ACTION-REPLY"

            status, reply = await assoc.send_n_event_report(
                attributes(PatientID="EVT"), 2, FILM_SESSION, instance
            )
            assert status.Status == 0 and reply is not None
            assert reply.PatientID == "N-EVENT-REPORT-REPLY"

            status = await assoc.send_n_delete(FILM_SESSION, instance)
            assert status.Status == 0

    rq, _ = request_seen(pyscp, "N-GET")
    assert rq.RequestedSOPInstanceUID == instance
    assert [int(t) for t in rq.AttributeIdentifierList] == [0x00100010, 0x00100020]
    rq, ds = request_seen(pyscp, "N-SET")
    assert rq.RequestedSOPInstanceUID == instance and ds is not None and ds.NumberOfCopies == 2
    rq, ds = request_seen(pyscp, "N-CREATE")
    assert rq.AffectedSOPInstanceUID == instance and ds is not None and ds.NumberOfCopies == 1
    rq, ds = request_seen(pyscp, "N-ACTION")
    assert rq.ActionTypeID == 1 and ds is not None and ds.PatientID == "ACT"
    rq, ds = request_seen(pyscp, "N-EVENT-REPORT")
    assert rq.EventTypeID == 2 and ds is not None and ds.PatientID == "EVT"
    rq, _ = request_seen(pyscp, "N-DELETE")
    assert rq.RequestedSOPInstanceUID == instance


async def test_n_create_without_an_instance_uid(pyscp: PyPeer) -> None:
    ae = scu(FILM_SESSION)
    with anyio.fail_after(DEADLINE):
        async with ae.associate("127.0.0.1", pyscp.port, ae_title=PYSCP) as assoc:
            status, reply = await assoc.send_n_create(attributes(NumberOfCopies=1), FILM_SESSION)
    assert status.Status == 0
    # The SCP's UID comes back in the response command (PS3.7 10.1.5.1.4).
    assert status.AffectedSOPInstanceUID == "1.2.826.0.1.3680043.8.498.777"
    assert reply is not None and reply.PatientID == "N-CREATE-REPLY"
    rq, _ = request_seen(pyscp, "N-CREATE")
    assert not rq.AffectedSOPInstanceUID


async def test_n_event_report_from_the_scp_on_the_same_association(pyscp: PyPeer) -> None:
    """Storage commitment style: the SCP reports inside its N-ACTION handler; we answer."""
    reports: list[tuple[Any, Dataset]] = []

    async def on_event_report(event: Any) -> tuple[int, Dataset]:
        reports.append((event.request, event.event_information))
        reply = Dataset()
        reply.PatientID = "ACK"
        return 0x0000, reply

    transaction = "1.2.826.0.1.3680043.8.498.4242"
    ae = scu(STORAGE_COMMITMENT)
    with anyio.fail_after(DEADLINE):
        async with ae.associate(
            "127.0.0.1", pyscp.port, ae_title=PYSCP,
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_event_report)],
        ) as assoc:  # fmt: skip
            status, _ = await assoc.send_n_action(
                attributes(TransactionUID=transaction), 1, STORAGE_COMMITMENT,
                STORAGE_COMMITMENT_INSTANCE,
            )  # fmt: skip
            assert status.Status == 0
    ((request, info),) = reports
    assert request.event_type_id == 1
    assert request.affected_sop_class_uid == STORAGE_COMMITMENT
    assert info.TransactionUID == transaction
    ((report_status, report_reply),) = pyscp.event_report_status
    assert report_status.Status == 0
    assert report_reply.PatientID == "ACK"


# -- negotiation ------------------------------------------------------------------------------


@pytest.mark.parametrize(("identity_type", "expected"), [(5, b"token"), (4, b"token"), (2, None)])
async def test_user_identity(pyscp: PyPeer, identity_type: int, expected: bytes | None) -> None:
    ae = scu(Verification)
    identity = UserIdentityRQ(
        user_identity_type=identity_type, positive_response_requested=True,
        primary_field=b"alice", secondary_field=b"secret" if identity_type == 2 else b"",
    )  # fmt: skip
    with anyio.fail_after(DEADLINE):
        async with ae.associate(
            "127.0.0.1", pyscp.port, ae_title=PYSCP, ext_neg=[identity]
        ) as assoc:
            # pynetdicom answers with a server response for Kerberos, SAML and JWT only
            # (PS3.7 D.3.3.7.2: for a username, with or without passcode, there is none).
            assert assoc.user_identity_response == expected
            assert (await assoc.send_c_echo()).Status == 0
    assert pyscp.user_identities[0][:2] == (identity_type, b"alice")


async def test_user_identity_refused(pyscp: PyPeer) -> None:
    pyscp.identity_answer = (False, None)
    ae = scu(Verification)
    identity = UserIdentityRQ(
        user_identity_type=2, positive_response_requested=True,
        primary_field=b"mallory", secondary_field=b"guess",
    )  # fmt: skip
    with anyio.fail_after(DEADLINE), pytest.raises(errors.AssociationRejected) as info:
        await ae.associate("127.0.0.1", pyscp.port, ae_title=PYSCP, ext_neg=[identity])
    assert info.value.result in (1, 2)


async def test_asynchronous_operations_window(pyscp: PyPeer) -> None:
    ae = scu(Verification)
    ae.async_ops_window = (5, 5)
    with anyio.fail_after(DEADLINE):
        async with ae.associate("127.0.0.1", pyscp.port, ae_title=PYSCP) as assoc:
            # pynetdicom performs one operation at a time and answers (1, 1) (D.3.3.3).
            assert assoc.async_ops_window == (1, 1)
            results: list[int] = []

            async def echo() -> None:
                results.append(int((await assoc.send_c_echo()).Status))

            # More callers than the window: they queue and all succeed.
            async with anyio.create_task_group() as tg:
                for _ in range(8):
                    tg.start_soon(echo)
            assert results == [0] * 8
    assert pyscp.async_ops == [(5, 5)]


async def test_no_window_proposed_means_one(pyscp: PyPeer) -> None:
    ae = scu(Verification)
    with anyio.fail_after(DEADLINE):
        async with ae.associate("127.0.0.1", pyscp.port, ae_title=PYSCP) as assoc:
            assert assoc.async_ops_window == (1, 1)
            assert assoc.associate_rq is not None
            assert not any(
                type(item).__name__ == "AsynchronousOperationsWindow"
                for item in assoc.associate_rq.user_information
            )
    # Nothing proposed, so pynetdicom's handler was never asked.
    assert pyscp.async_ops == []
