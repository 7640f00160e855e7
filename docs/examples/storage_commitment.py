"""Storage Commitment on one association, both ends in dicomio (PS3.4 J.3).

The SCU asks for commitment with N-ACTION (Action Type ID 1) and waits, on the same
association, for the SCP's N-EVENT-REPORT (Event Type ID 1: all committed) with
``assoc.receive_requests(timeout=...)``; its EVT_N_EVENT_REPORT handler answers it. The SCP
answers the N-ACTION at once and reports from a task its handler starts, on the association
the request came on (it is the SOP class's SCP there: no role selection needed).

Run it: ``python docs/examples/storage_commitment.py``; ``tests/test_storage_commitment.py``
runs ``main()`` on asyncio and trio.
"""

from __future__ import annotations

import anyio
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicomio import AE, Association, evt
from dicomio.sop import StorageCommitmentPushModel

#: The well-known Storage Commitment Push Model SOP Instance (PS3.4 J.3.5).
PUSH_INSTANCE = "1.2.840.10008.1.20.1.1"


async def report(assoc: Association, request: Dataset) -> None:
    """The SCP's result: everything asked for is committed (PS3.4 Table J.3-2)."""
    result = Dataset()
    result.TransactionUID = request.TransactionUID
    result.ReferencedSOPSequence = request.ReferencedSOPSequence
    await assoc.send_n_event_report(result, 1, StorageCommitmentPushModel, PUSH_INSTANCE)


async def main() -> Dataset:
    """Commit one (made-up) CT instance; return the Storage Commitment result received."""
    scp = AE("COMMITSCP")
    scp.add_supported_context(StorageCommitmentPushModel)
    async with anyio.create_task_group() as tg:

        async def on_action(event: evt.Event) -> int:
            # Answer first; the report follows from a task, on the same association.
            tg.start_soon(report, event.assoc, event.action_information)
            return 0x0000

        async with scp.start_server(
            ("127.0.0.1", 0), evt_handlers=[(evt.EVT_N_ACTION, on_action)]
        ) as server:
            results: dict[str, Dataset] = {}

            async def on_report(event: evt.Event) -> int:
                info = event.event_information
                results[str(info.TransactionUID)] = info
                return 0x0000

            scu = AE("COMMITSCU")
            scu.add_requested_context(StorageCommitmentPushModel)
            request = Dataset()
            request.TransactionUID = generate_uid()
            item = Dataset()
            item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
            item.ReferencedSOPInstanceUID = generate_uid()
            request.ReferencedSOPSequence = [item]
            # --8<-- [start:receive]
            # Open the receiver before asking: every request answered from then on is
            # yielded, even a report that comes before the N-ACTION-RSP (read, then, by
            # send_n_action waiting for its response). Wait up to 30 s for each.
            async with (
                scu.associate(
                    "127.0.0.1",
                    server.port,
                    ae_title="COMMITSCP",
                    evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)],
                ) as assoc,
                assoc.receive_requests(timeout=30) as requests,
            ):
                status, _ = await assoc.send_n_action(
                    request, 1, StorageCommitmentPushModel, PUSH_INSTANCE
                )
                assert status.Status == 0x0000
                async for _event in requests:
                    if request.TransactionUID in results:
                        break
            # --8<-- [end:receive]
            # Leaving the block released the association at once.
    return results[request.TransactionUID]


if __name__ == "__main__":
    result = anyio.run(main)
    print("committed:", [str(i.ReferencedSOPInstanceUID) for i in result.ReferencedSOPSequence])
