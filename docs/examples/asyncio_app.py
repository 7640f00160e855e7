"""Tutorial: awaiting associations in an asyncio application (``docs/tutorials/asyncio.md``).

Plain asyncio (``asyncio.run``, ``asyncio.gather``, ``asyncio.timeout``): dicomio runs on it
through anyio with nothing to set up. ``tests/test_docs_examples.py`` runs it against DCMTK's
storescp on loopback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from dicomio import AE, DicomioError
from dicomio.sop import CTImageStorage, MRImageStorage, Verification


# --8<-- [start:echo]
async def echo(host: str, port: int, ae_title: str) -> bool:
    """Is the peer there and does it speak DICOM? Failures are exceptions, not flags."""
    ae = AE("MONITOR")
    ae.add_requested_context(Verification)
    ae.acse_timeout = 5  # pynetdicom's attribute names work; ae.timeouts holds them all
    try:
        async with ae.associate(host, port, ae_title=ae_title) as assoc:
            status = await assoc.send_c_echo()
            return bool(status.Status == 0x0000)
    except (DicomioError, OSError):  # rejected, aborted, refused, timed out...
        return False


# --8<-- [end:echo]


# --8<-- [start:many]
async def check_peers(peers: Sequence[tuple[str, int, str]]) -> dict[str, bool]:
    """Echo every peer at once: each association is a coroutine, not a thread."""
    results = await asyncio.gather(*(echo(*peer) for peer in peers))
    return {
        f"{title}@{host}:{port}": ok
        for (host, port, title), ok in zip(peers, results, strict=True)
    }


# --8<-- [end:many]


# --8<-- [start:shared]
async def send_folder(host: str, port: int, ae_title: str, paths: Sequence[Path]) -> int:
    """One association shared by several tasks; each call waits its turn (window 1)."""
    ae = AE("SENDER")
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(MRImageStorage)
    sent = 0
    async with ae.associate(host, port, ae_title=ae_title) as assoc:

        async def send(path: Path) -> None:
            nonlocal sent
            status = await assoc.send_c_store(path)
            if status.Status == 0x0000:
                sent += 1

        async with asyncio.timeout(60):  # asyncio's own cancellation works on every wait
            async with asyncio.TaskGroup() as tasks:
                for path in paths:
                    tasks.create_task(send(path))
    return sent


# --8<-- [end:shared]


if __name__ == "__main__":
    print(asyncio.run(check_peers([("127.0.0.1", 11112, "ANY-SCP")])))
