"""Issue #4 acceptance 5: an async web app embeds the SCP in its lifespan, same event loop.

An HTTP client and a DICOM client talk to the one application in the same run.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import anyio
import pytest

from dicomio import AE
from dicomio.sop import CTImageStorage, MRImageStorage, Verification
from tests.corpus import Corpus, dataset_bytes

fastapi = pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

pytestmark = pytest.mark.anyio

EXAMPLE = Path(__file__).parent.parent / "docs" / "examples" / "fastapi_app.py"


def load_example():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("fastapi_app_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_fastapi_app_stores_and_lists_instances(tmp_path: Path, corpus: Corpus) -> None:
    app = load_example().create_app(tmp_path / "store", dicom_port=0)
    files = [i for i in corpus.instances if i.transfer_syntax != "1.2.840.10008.1.2.5"][:6]
    with anyio.fail_after(30):
        async with app.router.lifespan_context(app):
            port = app.state.dicom_port
            scu = AE("WEBTEST")
            scu.add_requested_context(Verification)
            for sop_class in (CTImageStorage, MRImageStorage):
                scu.add_requested_context(sop_class, sorted({i.transfer_syntax for i in files}))
            async with scu.associate("127.0.0.1", port, ae_title="FASTAPI") as assoc:
                assert (await assoc.send_c_echo()).Status == 0
                for instance in files:
                    assert (await assoc.send_c_store(instance.path)).Status == 0

            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
                listed = (await client.get("/instances")).json()
                assert [i["sop_instance_uid"] for i in listed] == sorted(i.sop_uid for i in files)
                assert {i["calling_ae_title"] for i in listed} == {"WEBTEST"}
                first = files[0]
                response = await client.get(f"/instances/{first.sop_uid}")
                assert response.status_code == 200
                # The stored file carries the data set exactly as it was sent.
                stored = tmp_path / "stored.dcm"
                stored.write_bytes(response.content)
                assert dataset_bytes(stored) == dataset_bytes(first.path)
                assert (await client.get("/instances/1.2.3")).status_code == 404
