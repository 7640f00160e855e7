"""C-STORE-RSPs with only a status, sent from a command set template.

The SCP answers a C-STORE whose handler gave a bare status with bytes built once per
presentation context, SOP class, status and instance UID length
(``dicomio.dimse.fragment.instance_uid_template``), the request's message ID and its
instance UID: these tests hold the answers to what was asked, with UIDs of several
lengths, several statuses, handlers that answer with an Error Comment (the ordinary path)
in between, and debug logging (the ordinary path too). dicomio to dicomio on 127.0.0.1,
asyncio, trio and uvloop; every wait bounded.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest
from pydicom.dataset import Dataset

from dicomio import AE, _scp, evt
from dicomio.dimse.fragment import instance_uid_template
from dicomio.sop import CTImageStorage, MRImageStorage

pytestmark = [pytest.mark.anyio, pytest.mark.uvloop, pytest.mark.timeout(60)]

LOOPBACK = "127.0.0.1"

#: (SOP Instance UID, SOP class, what the handler answers, the status expected): UIDs of odd
#: and even lengths, repeated so that each kind is answered from its template too.
_CASES: list[tuple[str, str, Any, int]] = []
for _round in range(3):
    for _n in (7, 10, 123, 4567):
        _CASES.append((f"1.2.3.{_n}", CTImageStorage, 0x0000, 0x0000))
        _CASES.append((f"1.2.3.{_n + 1}", CTImageStorage, 0xB000, 0xB000))
        _CASES.append((f"1.2.840.9.{_n}", MRImageStorage, 0x0000, 0x0000))
    _CASES.append(("1.2.3.99", CTImageStorage, "comment", 0xA700))


def _ae(title: str) -> AE:
    ae = AE(title)
    for sop_class in (CTImageStorage, MRImageStorage):
        ae.add_supported_context(sop_class)
        ae.add_requested_context(sop_class)
    ae.dimse_timeout = 20
    return ae


async def _on_store(event: Any) -> Any:
    answer = next(a for uid, _, a, _ in _CASES if uid == event.request.affected_sop_instance_uid)
    if answer == "comment":
        status = Dataset()
        status.Status = 0xA700
        status.ErrorComment = "disk full"
        return status
    return answer


async def _store_all(port: int) -> list[tuple[str, int, str | None]]:
    answers: list[tuple[str, int, str | None]] = []
    async with _ae("SCU").associate(LOOPBACK, port, ae_title="SCP") as assoc:
        for uid, sop_class, _, _ in _CASES:
            ds = Dataset()
            ds.SOPClassUID = sop_class
            ds.SOPInstanceUID = uid
            ds.PatientID = "P"
            with anyio.fail_after(10):
                rsp = await assoc.send_c_store(ds)
            assert rsp.AffectedSOPInstanceUID == uid
            assert rsp.AffectedSOPClassUID == sop_class
            answers.append((uid, int(rsp.Status), rsp.get("ErrorComment")))
    return answers


def _expected() -> list[tuple[str, int, str | None]]:
    return [
        (uid, status, "disk full" if answer == "comment" else None)
        for uid, _, answer, status in _CASES
    ]


async def test_store_answers_from_templates(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[tuple[bytes, bytes] | None] = []

    def counted(*args: Any) -> tuple[bytes, bytes] | None:
        made.append(instance_uid_template(*args))
        return made[-1]

    monkeypatch.setattr(_scp, "instance_uid_template", counted)
    handlers = [(evt.EVT_C_STORE, _on_store)]
    async with _ae("SCP").start_server((LOOPBACK, 0), evt_handlers=handlers) as server:
        assert await _store_all(server.port) == _expected()
    # One per (class, status, encoded UID length), of which there are six here: the first
    # answer of each takes the ordinary path, the second makes the template.
    assert len(made) == 6
    assert None not in made


async def test_store_answers_with_debug_logging(caplog: pytest.LogCaptureFixture) -> None:
    handlers = [(evt.EVT_C_STORE, _on_store)]
    with caplog.at_level(logging.DEBUG, logger="dicomio"):
        async with _ae("SCP").start_server((LOOPBACK, 0), evt_handlers=handlers) as server:
            assert await _store_all(server.port) == _expected()
    sent = [r.getMessage() for r in caplog.records if "sending CStoreRSP" in r.getMessage()]
    assert len(sent) == len(_CASES)
