"""Every code example in the documentation runs here.

The pages include their Python from ``docs/examples/*.py`` (pymdownx.snippets); this module
runs those files against real peers on loopback: DCMTK's tools where a DICOM peer of another
implementation is the point (the pynetdicom ports of ``docs/migration.md``), a dicomio peer
elsewhere. ``test_no_inline_python_in_pages`` keeps examples out of the pages themselves.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomio import AE, AssociationRejected
from dicomio.apps.cli import build_parser
from tests.conftest import LOOPBACK, free_port, require_dcmtk, run_tool, tool_output
from tests.corpus import Corpus, Instance
from tests.test_scu_dcmtk import QRServer, qrscp  # noqa: F401 (a fixture: dcmqrscp, seeded)

DOCS = Path(__file__).resolve().parent.parent / "docs"
EXAMPLES = DOCS / "examples"

pytestmark = [pytest.mark.timeout(120)]


def example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def uncompressed(corpus: Corpus) -> list[Instance]:
    """Files DCMTK's storescu sends as they are without extra options."""
    little = (ImplicitVRLittleEndian, ExplicitVRLittleEndian)
    return [i for i in corpus.instances if i.transfer_syntax in little]


@asynccontextmanager
async def running(serve: Callable[..., Awaitable[None]], *args: Any) -> AsyncIterator[int]:
    """Run an example's ``serve(..., port, task_status=)``; yield its port; stop it."""
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve, *args, 0)
        try:
            yield port
        finally:
            tg.cancel_scope.cancel()


# -- the pages ------------------------------------------------------------------------------


def test_no_inline_python_in_pages() -> None:
    """A Python block in a page is an include of a file run below, never literal code."""
    for page in DOCS.rglob("*.md"):
        text = page.read_text()
        for block in re.findall(r"```python[^\n]*\n(.*?)```", text, flags=re.DOTALL):
            lines = [line for line in block.strip().splitlines() if line.strip()]
            assert lines and all(line.strip().startswith("--8<--") for line in lines), (
                f"{page.relative_to(DOCS)}: a Python example not included from docs/examples"
            )


def test_every_included_section_exists() -> None:
    for page in DOCS.rglob("*.md"):
        for ref in re.findall(r'--8<-- "([^"]+)"', page.read_text()):
            path, _, section = ref.partition(":")
            source = (DOCS / path).read_text()
            if section:
                assert f"--8<-- [start:{section}]" in source, (page, ref)
                assert f"--8<-- [end:{section}]" in source, (page, ref)


def test_command_lines_in_pages_parse() -> None:
    """Every ``dicomio ...`` command shown in a shell block is accepted by the parser."""
    parser = build_parser()
    seen = 0
    for page in DOCS.rglob("*.md"):
        for block in re.findall(r"```(?:bash|sh|console)\n(.*?)```", page.read_text(), re.DOTALL):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.strip().removeprefix("$ ")
                if line.startswith("dicomio ") and "--help" not in line:
                    parser.parse_args(shlex.split(line, comments=True)[1:])
                    seen += 1
    assert seen >= 3


# -- services as SCP, against DCMTK's tools (docs/services.md) ---------------------------------


@pytest.mark.anyio
@pytest.mark.interop
async def test_scp_basics_against_dcmtk(tmp_path: Path, corpus: Corpus) -> None:
    tools = require_dcmtk("echoscu", "storescu", "findscu", "getscu")
    scp = example("scp_basics")
    store = tmp_path / "store"
    store.mkdir()
    files = uncompressed(corpus)
    peer = ["-aet", "DCMTK", "-aec", "DICOMIO", LOOPBACK]
    with anyio.fail_after(90):
        async with running(scp.serve, store) as port:
            result = await run_tool([tools["echoscu"], *peer, str(port)])
            assert result.returncode == 0, tool_output(result)
            sent = [str(i.path) for i in files]
            result = await run_tool([tools["storescu"], *peer, str(port), *sent])
            assert result.returncode == 0, tool_output(result)
            assert {p.stem for p in store.glob("*.dcm")} == {i.sop_uid for i in files}

            found = tmp_path / "found"
            found.mkdir()
            keys = ["-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID=*", "-k", "PatientName"]
            argv = [tools["findscu"], "-P", "-X", "-od", str(found), *keys, *peer, str(port)]
            result = await run_tool(argv)
            assert result.returncode == 0, tool_output(result)
            answers = {dcmread(p).PatientID for p in found.glob("rsp*.dcm")}
            assert answers == {i.patient_id for i in files}

            got = tmp_path / "got"
            got.mkdir()
            keys = ["-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID=PID000"]
            argv = [tools["getscu"], "-P", "-od", str(got), *keys, *peer, str(port)]
            await run_tool(argv)  # exit status: see INTEROP.md on getscu's release
            want = {i.sop_uid for i in files if i.patient_id == "PID000"}
            assert {dcmread(p).SOPInstanceUID for p in got.iterdir()} == want


# -- services as SCU, against the SCP above (docs/services.md) -------------------------------


@pytest.mark.anyio
async def test_scu_basics_against_the_scp(tmp_path: Path, corpus: Corpus) -> None:
    scp, scu = example("scp_basics"), example("scu_basics")
    store = tmp_path / "store"
    store.mkdir()
    files = [i.path for i in corpus.instances]  # every syntax: converted where needed
    with anyio.fail_after(60):
        async with running(scp.serve, store) as port:
            statuses = await scu.echo_and_store(LOOPBACK, port, files)
            assert statuses == [0] * (1 + len(files))
            patients = await scu.find_patients(LOOPBACK, port)
            assert sorted(patients) == sorted({i.patient_id for i in corpus.instances})
            assert len(await scu.find_patients(LOOPBACK, port, first_only=True)) == 1
            got = tmp_path / "got"
            got.mkdir()
            count = await scu.get_patient(LOOPBACK, port, "PID001", got)
            assert count == len(corpus.by(patient_id="PID001")) == len(list(got.iterdir()))


# -- the tutorial: an asyncio application ---------------------------------------------------


@pytest.mark.interop
def test_asyncio_app_against_storescp(dcmtk_storescp: tuple[int, Path], corpus: Corpus) -> None:
    import asyncio

    app = example("asyncio_app")
    port, out = dcmtk_storescp
    closed = free_port()
    files = [i.path for i in uncompressed(corpus)]

    async def main() -> tuple[dict[str, bool], int]:
        async with asyncio.timeout(60):
            peers = [(LOOPBACK, port, "STORESCP"), (LOOPBACK, closed, "NOBODY")]
            return await app.check_peers(peers), await app.send_folder(
                LOOPBACK, port, "STORESCP", files
            )

    health, sent = asyncio.run(main())  # the page's own asyncio.run, no anyio in sight
    assert health == {f"STORESCP@{LOOPBACK}:{port}": True, f"NOBODY@{LOOPBACK}:{closed}": False}
    assert sent == len(files) == len(list(out.glob("*.dcm")))


# -- Moving from pynetdicom (docs/migration.md) ---------------------------------------------


def test_pynetdicom_before_code_compiles() -> None:
    """The "before" column is pynetdicom's code; it is imported (its functions not run)."""
    pytest.importorskip("pynetdicom")
    before = example("pynetdicom_before")
    assert callable(before.storage_scp) and callable(before.get_scp)


@pytest.mark.anyio
@pytest.mark.interop
async def test_migration_storage_scp_receives_from_storescu(
    tmp_path: Path, corpus: Corpus
) -> None:
    tools = require_dcmtk("storescu")
    migration = example("migration")
    files = uncompressed(corpus)
    with anyio.fail_after(60):
        async with running(migration.run_storage_scp, tmp_path) as port:
            argv = [tools["storescu"], "-aec", "ANY-SCP", LOOPBACK, str(port)]
            result = await run_tool([*argv, *(str(i.path) for i in files)])
            assert result.returncode == 0, tool_output(result)
    for instance in files:
        stored = dcmread(tmp_path / f"{instance.sop_uid}.dcm")
        assert stored.SOPInstanceUID == instance.sop_uid
        assert stored.PatientID == instance.patient_id  # storescu may change the syntax


@pytest.mark.anyio
@pytest.mark.interop
async def test_migration_find_scu_queries_dcmqrscp(
    qrscp: QRServer,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    migration = example("migration")
    with anyio.fail_after(30):
        matches = await migration.find_scu(LOOPBACK, qrscp.port, "DCMQRSCP", "Doe*")
    assert {m.PatientID for m in matches} == {"PID000"}
    assert "C-FIND query status: 0x0000" in capsys.readouterr().out
    with anyio.fail_after(30), pytest.raises(AssociationRejected):
        await migration.find_scu(LOOPBACK, qrscp.port, "WRONG-AET", "Doe*")


@pytest.mark.anyio
@pytest.mark.interop
async def test_migration_get_scp_serves_getscu(tmp_path: Path, corpus: Corpus) -> None:
    tools = require_dcmtk("getscu")
    migration = example("migration")
    fdir = tmp_path / "archive"
    fdir.mkdir()
    files = uncompressed(corpus)
    for instance in files:
        (fdir / instance.path.name).write_bytes(instance.path.read_bytes())
    got = tmp_path / "got"
    got.mkdir()
    keys = ["-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID=PID001"]
    with anyio.fail_after(60):
        async with running(migration.run_get_scp, fdir) as port:
            argv = [tools["getscu"], "-P", "-aec", "ANY-SCP", "-od", str(got), *keys]
            result = await run_tool([*argv, LOOPBACK, str(port)])
    want = {i.sop_uid for i in files if i.patient_id == "PID001"}
    assert {dcmread(p).SOPInstanceUID for p in got.iterdir()} == want, tool_output(result)


@pytest.mark.anyio
async def test_migration_roles_blocking_and_logging(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import logging

    from dicomio import evt
    from dicomio.sop import CTImageStorage, Verification

    migration = example("migration")
    ae = AE()
    ae.add_requested_context(CTImageStorage)
    contexts, ext_neg = migration.roles(ae)
    assert "attrs.evolve" in capsys.readouterr().out
    assert contexts[0].transfer_syntaxes == (ExplicitVRLittleEndian,)
    assert ext_neg[0].scp_role and not ext_neg[0].scu_role

    # Two associations whose handler makes a blocking call: with the call in a worker
    # thread, they overlap (0.2 s each) instead of running one after the other.
    scp = AE()
    scp.add_supported_context(Verification)
    scu = AE()
    scu.add_requested_context(Verification)
    handlers = [(evt.EVT_C_ECHO, migration.handle_echo)]
    async with scp.start_server((LOOPBACK, 0), evt_handlers=handlers) as server:

        async def echo() -> None:
            async with scu.associate(LOOPBACK, server.port) as assoc:
                assert (await assoc.send_c_echo()).Status == 0

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for _ in range(2):
                    tg.start_soon(echo)

    logger = migration.logging_setup()
    try:
        assert logger.name == "dicomio" and logger.level == logging.DEBUG
    finally:
        for handler in list(logger.handlers):
            if type(handler).__name__ == "_DebugHandler":
                logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)


@pytest.mark.anyio
async def test_migration_typed_handlers(tmp_path: Path) -> None:
    """The typed handlers example: a store with its extra argument, a find, as bound."""
    from pydicom.dataset import Dataset

    from dicomio import evt
    from dicomio.sop import CTImageStorage, PatientRootQueryRetrieveInformationModelFind

    migration = example("migration")
    find = PatientRootQueryRetrieveInformationModelFind
    scp, scu = AE(), AE()
    for uid in (CTImageStorage, find):
        scp.add_supported_context(uid)
        scu.add_requested_context(uid)
    ct = Dataset()
    ct.SOPClassUID = CTImageStorage
    ct.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    query.PatientID = ""
    handlers = migration.typed_handlers(tmp_path)
    assert isinstance(handlers[0], evt.HandlerBinding)
    with anyio.fail_after(10):
        async with (
            scp.start_server((LOOPBACK, 0), evt_handlers=handlers) as server,
            scu.associate(LOOPBACK, server.port) as assoc,
        ):
            assert (await assoc.send_c_store(ct)).Status == 0
            found = [ds async for status, ds in assoc.send_c_find(query, find) if ds]
    assert dcmread(tmp_path / f"{ct.SOPInstanceUID}.dcm").SOPClassUID == CTImageStorage
    assert [ds.PatientID for ds in found] == ["PID000"]


# -- associations, the window, TLS, logging -------------------------------------------------


@pytest.mark.anyio
async def test_associations_example() -> None:
    from dicomio.sop import Verification

    assocs = example("associations")
    scp = AE("ANY-SCP")
    scp.add_supported_context(Verification)
    scp.require_called_aet = True
    with anyio.fail_after(30):
        async with scp.start_server((LOOPBACK, 0)) as server:
            await assocs.two_forms(LOOPBACK, server.port)
            assert await assocs.describe(LOOPBACK, server.port, "ANY-SCP") == "status 0x0000"
            rejected = await assocs.describe(LOOPBACK, server.port, "SOMEONE")
            assert rejected == "rejected: result 1, source 1, reason 7"
        assert await assocs.describe(LOOPBACK, free_port(), "ANY-SCP") == "nothing listens there"


@pytest.mark.anyio
async def test_window_example() -> None:
    window = example("window")
    ae, handlers = window.server_ae()
    with anyio.fail_after(30):
        async with ae.start_server((LOOPBACK, 0), evt_handlers=handlers) as server:
            negotiated, elapsed = await window.eight_at_once(LOOPBACK, server.port)
            assert negotiated == (8, 8)
            assert elapsed < 8 * 0.2 * 0.75  # they overlapped (one by one: at least 1.6 s)
            found = await window.first_matches(LOOPBACK, server.port, 5)
            assert found == [f"P{n:06d}" for n in range(1, 6)]


@pytest.mark.anyio
async def test_tls_identity_example(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    tls = example("tls_identity")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    server = tls.server_context(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
    client = tls.client_context(str(tmp_path / "ca.pem"))
    with anyio.fail_after(30):
        async with running(tls.serve, server) as port:
            assert await tls.echo(client, LOOPBACK, port, b"secret") == 0
            with pytest.raises(AssociationRejected):
                await tls.echo(client, LOOPBACK, port, b"guess")
            stranger = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
            with pytest.raises(ssl.SSLError):
                await tls.echo(stranger, LOOPBACK, port, b"secret")


def test_logging_example() -> None:
    import logging

    logging_setup = example("logging_setup")
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        logging_setup.configure()
        assert logging.getLogger("dicomio.association").getEffectiveLevel() == logging.DEBUG
        assert logging.getLogger("dicomio.server").getEffectiveLevel() == logging.INFO
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("dicomio").setLevel(logging.NOTSET)
        logging.getLogger("dicomio.association").setLevel(logging.NOTSET)


@pytest.mark.anyio
async def test_storage_commitment_section_is_the_tested_example() -> None:
    # docs/index.md includes a section of storage_commitment.py, which
    # tests/test_storage_commitment.py runs on both backends; here: once more, quickly.
    result = await example("storage_commitment").main()
    assert len(result.ReferencedSOPSequence) == 1


# -- the deployment recipe (docs/deployment.md; tests/test_deployment.py runs it) ----------


def test_haproxy_config_holds_the_health_check_the_example_makes() -> None:
    from dicomio.pdu import AssociateRQ, ReleaseRQ, decode

    printed = subprocess.run(
        [sys.executable, str(EXAMPLES / "health_check.py"), "ARCHIVE", "HEALTHCHECK"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "PYTHONPATH": str(DOCS.parent)},
    ).stdout
    config = (EXAMPLES / "haproxy.cfg").read_text()
    lines = printed.splitlines()
    assert len(lines) == 2 and all(line in config.splitlines() for line in lines)
    associate, release = example("health_check").health_check("ARCHIVE", "HEALTHCHECK")
    request = decode(bytes.fromhex(associate))
    assert isinstance(request, AssociateRQ)
    assert (request.called_ae_title, request.calling_ae_title) == ("ARCHIVE", "HEALTHCHECK")
    assert [str(c.abstract_syntax) for c in request.presentation_contexts] == ["1.2.840.10008.1.1"]
    assert isinstance(decode(bytes.fromhex(release)), ReleaseRQ)


def test_node_settings_file_loads_as_qrscp_loads_it() -> None:
    from dicomio.apps._server_config import apply_config

    args = build_parser().parse_args(["qrscp", "--config", str(EXAMPLES / "qrscp-node.toml")])
    apply_config(args, "qrscp")
    assert (args.aet, args.port, args.workers) == ("ARCHIVE", 11112, 4)
    assert str(args.db).startswith("postgresql://") and args.data == "/mnt/archive"
    assert set(args.config_destinations) == {"VIEWER", "WORKSTATION"}
