"""docs/examples/find_everywhere.py, the fan-out tutorial's tool (issue #15 acceptance 4),
run as a function on asyncio and trio and as a script, against in-process archives."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydicom.dataset import Dataset

from dicomio import AE, Peer, evt
from dicomio.sop import StudyRootQueryRetrieveInformationModelFind
from tests.conftest import LOOPBACK, free_port

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

EXAMPLE = Path(__file__).parent.parent / "docs" / "examples" / "find_everywhere.py"


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("find_everywhere_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def archive(studies: dict[str, str]) -> tuple[AE, list[Any]]:
    async def on_find(event: evt.Event) -> AsyncIterator[tuple[int, Dataset]]:
        if event.identifier.PatientID != "P1":
            return
        for uid, description in studies.items():
            ds = Dataset()
            ds.QueryRetrieveLevel = "STUDY"
            ds.PatientID = "P1"
            ds.StudyInstanceUID = uid
            ds.StudyDate = "20260101"
            ds.StudyDescription = description
            yield 0xFF00, ds

    ae = AE("PACS")
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    return ae, [(evt.EVT_C_FIND, on_find)]


ARCHIVES = ({"1.1": "CT HEAD", "1.2": "MR KNEE"}, {"1.2": "MR KNEE", "2.1": "XR CHEST"})


async def test_find_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    down = Peer(ae_title="GONE", host=LOOPBACK, port=free_port())
    async with AsyncExitStack() as stack:
        ports = []
        for studies in ARCHIVES:
            ae, handlers = archive(studies)
            server = await stack.enter_async_context(
                ae.start_server((LOOPBACK, 0), evt_handlers=handlers)
            )
            ports.append(server.port)
        peers = [Peer(ae_title="PACS", host=LOOPBACK, port=port) for port in ports]
        with anyio.fail_after(20):
            found = await load_example().find_everywhere("P1", [*peers, down])
        assert sorted(found) == ["1.1", "1.2", "2.1"]
        out = capsys.readouterr().out
        assert out.count("MR KNEE") == 1 and "XR CHEST" in out
        assert f"{down}: failed" in out

        argv = [sys.executable, str(EXAMPLE), "P1", *(f"PACS@{LOOPBACK}:{p}" for p in ports)]
        with anyio.fail_after(30):
            result = await anyio.run_process(argv, check=False)
        assert result.returncode == 0, result.stderr.decode()
        lines = result.stdout.decode().splitlines()
        # Each study once, from whichever archive answered first.
        assert sorted(line.split(": ", 1)[1] for line in lines) == [
            "20260101 CT HEAD",
            "20260101 MR KNEE",
            "20260101 XR CHEST",
        ]


def test_the_tutorial_shows_the_example() -> None:
    """The page includes the file whole (mkdocs' snippets), and the tool is under 40 lines."""
    page = (EXAMPLE.parent.parent / "fanout.md").read_text()
    assert '--8<-- "examples/find_everywhere.py"' in page
    assert len(EXAMPLE.read_text().splitlines()) < 40
