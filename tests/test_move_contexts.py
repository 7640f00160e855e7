"""The C-MOVE sub-association's presentation contexts (issue #12 item 5).

A dicomio C-MOVE SCP moves the test corpus (CT and MR in Implicit VR LE, Explicit VR LE,
Explicit VR BE, Deflated and RLE Lossless) to a destination. Some C-STORE SCPs look the
transfer syntax up by SOP class, not by context ID: each SOP class must have one context
for all its uncompressed instances, listing Explicit and Implicit VR Little Endian, and only
a compressed syntax a context of its own. A dicomio acceptor records the A-ASSOCIATE-RQ it
is offered; DCMTK storescp, as the real destination, must receive every instance.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydicom.dataset import Dataset

from dicomio import AE, evt
from dicomio.apps.archive import add_storage_contexts
from dicomio.events import Event
from dicomio.sop import PatientRootQueryRetrieveInformationModelMove
from tests.conftest import DCMTK_ENV, LOOPBACK, free_port, require_dcmtk, stop, wait_for_port
from tests.corpus import Corpus

pytestmark = [pytest.mark.anyio, pytest.mark.interop, pytest.mark.timeout(120)]

EXPLICIT, IMPLICIT, RLE = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.5"
DEADLINE = 60


async def move_corpus(corpus: Corpus, destination: tuple[str, int]) -> Dataset:
    """C-MOVE every corpus file from an in-process dicomio SCP to ``destination``."""

    async def on_move(event: Event) -> AsyncIterator[Any]:
        yield len(corpus.instances)
        for instance in corpus.instances:
            yield 0xFF00, instance.path

    scp = AE("MOVESCP")
    scp.add_supported_context(PatientRootQueryRetrieveInformationModelMove)
    scp.move_destinations = {"DEST": destination}
    scu = AE("MOVESCU")
    scu.add_requested_context(PatientRootQueryRetrieveInformationModelMove)
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    query.PatientID = "*"
    final = Dataset()
    async with (
        scp.start_server((LOOPBACK, 0), evt_handlers=[(evt.EVT_C_MOVE, on_move)]) as server,
        scu.associate(LOOPBACK, server.port, ae_title="MOVESCP") as assoc,
    ):
        async for status, _ in assoc.send_c_move(
            query, "DEST", PatientRootQueryRetrieveInformationModelMove
        ):
            if int(status.Status) not in (0xFF00, 0xFF01):
                final = status
    return final


async def test_one_uncompressed_context_per_sop_class(corpus: Corpus) -> None:
    offered: list[Any] = []
    stored: list[str] = []

    async def on_requested(event: Event) -> None:
        offered.extend(event.assoc.associate_rq.presentation_contexts)

    async def on_store(event: Event) -> int:
        stored.append(str(event.request.affected_sop_instance_uid))
        return 0

    destination = AE("DEST")
    add_storage_contexts(destination)
    with anyio.fail_after(DEADLINE):
        async with destination.start_server(
            (LOOPBACK, 0),
            evt_handlers=[(evt.EVT_REQUESTED, on_requested), (evt.EVT_C_STORE, on_store)],
        ) as server:
            final = await move_corpus(corpus, (LOOPBACK, server.port))
    assert int(final.Status) == 0 and final.NumberOfCompletedSuboperations == 24
    assert sorted(stored) == sorted(i.sop_uid for i in corpus.instances)
    by_class: dict[str, list[tuple[str, ...]]] = {}
    for cx in offered:
        by_class.setdefault(str(cx.abstract_syntax), []).append(
            tuple(str(ts) for ts in cx.transfer_syntaxes)
        )
    assert set(by_class) == {i.sop_class for i in corpus.instances}
    for sop_class, contexts in by_class.items():
        # One context for every uncompressed instance (Implicit, Explicit, Big Endian and
        # Deflated files of the class alike), one for RLE, and nothing else.
        assert sorted(contexts) == sorted([(EXPLICIT, IMPLICIT), (RLE,)]), sop_class


def offered_to_storescp(log: str) -> dict[str, list[tuple[str, ...]]]:
    """The presentation contexts DCMTK storescp -v +v logged for each A-ASSOCIATE-RQ that
    proposed any, by abstract syntax (DCMTK's names: =CTImageStorage, =RLELossless ...)."""
    offered: dict[str, list[tuple[str, ...]]] = {}
    abstract, syntaxes = "", None
    for line in log.splitlines():
        text = line.removeprefix("I:").strip()
        if text.startswith("Abstract Syntax:"):
            abstract = text.split(":", 1)[1].strip()
        elif text.startswith("Proposed Transfer Syntax(es):"):
            syntaxes = offered.setdefault(abstract, [])
            syntaxes.append(())
        elif syntaxes is not None and text.startswith("="):
            syntaxes[-1] = (*syntaxes[-1], text)
        else:
            syntaxes = None
    return offered


async def test_move_to_dcmtk_storescp(corpus: Corpus, tmp_path: Path) -> None:
    """DCMTK storescp (+xa accepts every syntax it knows) as the move destination: it logs
    the contexts it was offered (-v +v) and must receive and write every instance."""
    tools = require_dcmtk("storescp")
    out = tmp_path / "out"
    out.mkdir()
    port = free_port()
    log = tmp_path / "storescp.log"
    with open(log, "wb") as sink:
        argv = [tools["storescp"], "-v", "+v", "+xa", "-aet", "STORESCP", "-od", str(out)]
        proc = subprocess.Popen(
            [*argv, "-fe", ".dcm", str(port)], stdout=sink, stderr=subprocess.STDOUT, env=DCMTK_ENV
        )
    try:
        wait_for_port(port, proc)
        with anyio.fail_after(DEADLINE):
            final = await move_corpus(corpus, (LOOPBACK, port))
            assert int(final.Status) == 0, final
            assert final.NumberOfCompletedSuboperations == len(corpus.instances)
            expected = [out / f"{i.modality}.{i.sop_uid}.dcm" for i in corpus.instances]
            # storescp writes each file when the C-STORE is done; the last may still be
            # on its way to disk when the move's final response arrives.
            while not all(p.exists() for p in expected):
                await anyio.sleep(0.05)
    finally:
        stop(proc)
    uncompressed = ("=LittleEndianExplicit", "=LittleEndianImplicit")
    assert offered_to_storescp(log.read_text(errors="replace")) == {
        "=CTImageStorage": [uncompressed, ("=RLELossless",)],
        "=MRImageStorage": [uncompressed, ("=RLELossless",)],
    }
