"""Associations and timeouts: ``docs/associations.md``. Run by ``tests/test_docs_examples.py``
against a dicomio server, on asyncio and trio."""

from __future__ import annotations

from dicomio import AE, AssociationRejected, ConnectionRefused, DIMSETimeout, Timeouts
from dicomio.sop import Verification


# --8<-- [start:timeouts]
def make_ae() -> AE:
    ae = AE(
        "MYSCU",
        timeouts=Timeouts(connect=5, acse=10, dimse=30, network=60, cancel=10),
    )
    ae.dimse_timeout = 15  # pynetdicom's names read and write ae.timeouts
    ae.add_requested_context(Verification)
    return ae


# --8<-- [end:timeouts]


# --8<-- [start:forms]
async def two_forms(host: str, port: int) -> None:
    ae = make_ae()
    # 1. A block: released when it ends, aborted if it raised.
    async with ae.associate(host, port, ae_title="ANY-SCP") as assoc:
        await assoc.send_c_echo()
    # 2. An object to keep: release (or abort) it yourself.
    assoc = await ae.associate(host, port, ae_title="ANY-SCP")
    try:
        await assoc.send_c_echo()
    finally:
        await assoc.release()


# --8<-- [end:forms]


# --8<-- [start:failures]
async def describe(host: str, port: int, called: str) -> str:
    ae = make_ae()
    try:
        async with ae.associate(host, port, ae_title=called) as assoc:
            status = await assoc.send_c_echo()
    except AssociationRejected as exc:  # result, source and reason of the A-ASSOCIATE-RJ
        return f"rejected: result {exc.result}, source {exc.source}, reason {exc.reason}"
    except ConnectionRefused:  # also a ConnectionRefusedError
        return "nothing listens there"
    except DIMSETimeout:
        return "no answer in time"
    return f"status 0x{status.Status:04X}"


# --8<-- [end:failures]
