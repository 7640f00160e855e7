"""Issue #13 item 7: ``dicomio storescp`` and ``dicomio qrscp`` can be locked down from the
command line and from the settings file (docs/security.md).

Each server runs as a subprocess (``python -m dicomio``, on the test's anyio backend) on a
free loopback port; a dicomio requestor checks what it admits and what it rejects
(PS3.8 Table 9-21), and that a fresh association is served normally meanwhile and after.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydicom.dataset import Dataset

from dicomio import AE, AssociationRejected, errors, evt
from dicomio.pdu import UserIdentityRQ
from dicomio.presentation import build_context, storage_scp_roles
from dicomio.sop import CTImageStorage, Verification
from dicomio.sop import StudyRootQueryRetrieveInformationModelGet as GET
from tests.conftest import DCMTK_ENV, LOOPBACK, free_port, stop, wait_for_port
from tests.corpus import make_dataset

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

APPS = pytest.mark.parametrize("app", ["storescp", "qrscp"])
MODES = pytest.mark.parametrize("mode", ["flags", "config"])
#: rejected-permanent by the service user: no reason (1), calling AE (3), called AE (7);
#: rejected-transient by the service provider (presentation): local limit exceeded (2).
NO_REASON, CALLING_AE, CALLED_AE, LIMIT = (1, 1, 1), (1, 1, 3), (1, 1, 7), (2, 3, 2)
EXPLICIT = "1.2.840.10008.1.2.1"


def dicomio(*args: str) -> list[str]:
    return [sys.executable, "-m", "dicomio", *args]


def toml(settings: dict[str, Any], prefix: str = "") -> str:
    """A tiny TOML writer for the settings these tests use (tables nest as [a.b])."""
    lines = [f"{k} = {toml_value(v)}" for k, v in settings.items() if not isinstance(v, dict)]
    for key, value in settings.items():
        if isinstance(value, dict):
            lines.append(f"[{prefix}{key}]")
            lines.append(toml(value, f"{prefix}{key}.").rstrip("\n"))
    return "\n".join(lines) + "\n"


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


@contextmanager
def cli_server(
    app: str,
    tmp_path: Path,
    backend: str,
    *flags: str,
    config: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[int]:
    """``dicomio APP PORT --bind 127.0.0.1 FLAGS [--config FILE]`` until the block ends."""
    port = free_port()
    folder = tmp_path / f"{app}-{port}"
    folder.mkdir()
    where = ["-od", str(folder / "out")] if app == "storescp" else ["--data", str(folder)]
    argv = dicomio(app, str(port), "--bind", LOOPBACK, "--backend", backend, *where, *flags)
    if config is not None:
        path = folder / "settings.toml"
        path.write_text(toml({app: config}))
        argv += ["--config", str(path)]
    log = folder / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env or DCMTK_ENV)
    try:
        try:
            wait_for_port(port, proc, timeout=20)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}: {log.read_text(errors='replace')}") from None
        yield port
    finally:
        stop(proc)


def requestor(calling: str) -> AE:
    ae = AE(calling)
    ae.add_requested_context(Verification)
    return ae


async def outcome(
    port: int, *, calling: str = "SCU", called: str = "ANY-SCP", ext_neg: list[Any] | None = None
) -> Any:
    """The C-ECHO status on a new association, or (result, source, reason) if rejected."""
    with anyio.fail_after(15):
        try:
            async with requestor(calling).associate(
                LOOPBACK, port, ae_title=called, ext_neg=ext_neg
            ) as assoc:
                return int((await assoc.send_c_echo()).Status)
        except AssociationRejected as exc:
            return (exc.result, exc.source, exc.reason)


# -- called and calling AE titles -------------------------------------------------------------


@APPS
@MODES
async def test_ae_titles(tmp_path: Path, anyio_backend: str, app: str, mode: str) -> None:
    if mode == "flags":
        flags = [
            "-aet",
            "LOCKED",
            "--require-called-aet",
            "--require-calling-aet",
            "GOOD",
            "--require-calling-aet",
            "ALSO",
        ]
        config = None
    else:
        flags = []
        config = {
            "ae_title": "LOCKED",
            "require_called_aet": True,
            "require_calling_aet": ["GOOD", "ALSO"],
        }
    with cli_server(app, tmp_path, anyio_backend, *flags, config=config) as port:
        assert await outcome(port, calling="BAD", called="LOCKED") == CALLING_AE
        assert await outcome(port, calling="GOOD", called="WRONG") == CALLED_AE
        with anyio.fail_after(15):
            async with requestor("GOOD").associate(LOOPBACK, port, ae_title="LOCKED") as held:
                assert await outcome(port, calling="BAD", called="LOCKED") == CALLING_AE
                assert await outcome(port, calling="ALSO", called="LOCKED") == 0
                assert (await held.send_c_echo()).Status == 0
        assert await outcome(port, calling="GOOD", called="LOCKED") == 0


async def test_no_lockdown_by_default(tmp_path: Path, anyio_backend: str) -> None:
    with cli_server("storescp", tmp_path, anyio_backend) as port:
        assert await outcome(port, calling="ANYONE", called="WHATEVER") == 0


# -- association limits ----------------------------------------------------------------------


async def admitted_soon(port: int, calling: str) -> None:
    """Accepted within a few seconds: a released association leaves the server's count
    when the server has closed it, a moment after the requestor saw the release."""
    with anyio.fail_after(10):
        while (result := await outcome(port, calling=calling)) == LIMIT:
            await anyio.sleep(0.05)
    assert result == 0


@APPS
@MODES
async def test_association_limits(tmp_path: Path, anyio_backend: str, app: str, mode: str) -> None:
    if mode == "flags":
        flags, config = ["--max-associations", "2", "--max-associations-per-ae", "1"], None
    else:
        # From the file, except one that the command line overrides.
        flags = ["--max-associations-per-ae", "1"]
        config = {"max_associations": 2, "max_associations_per_ae": 5}
    with cli_server(app, tmp_path, anyio_backend, *flags, config=config) as port:
        with anyio.fail_after(30):
            async with requestor("X").associate(LOOPBACK, port) as first:
                assert await outcome(port, calling="X") == LIMIT  # per AE
                async with requestor("Y").associate(LOOPBACK, port) as second:
                    assert await outcome(port, calling="Z") == LIMIT  # in total
                    assert (await first.send_c_echo()).Status == 0
                    assert (await second.send_c_echo()).Status == 0
                await admitted_soon(port, "Z")
        await admitted_soon(port, "X")


# -- timeouts and PDU size -------------------------------------------------------------------


@MODES
async def test_timeouts_and_max_pdu(tmp_path: Path, anyio_backend: str, mode: str) -> None:
    if mode == "flags":
        flags, config = ["-ta", "1", "-tn", "1", "-td", "5", "-pdu", "8192"], None
    else:
        flags = []
        config = {"acse_timeout": 1, "network_timeout": 1.0, "dimse_timeout": 5, "max_pdu": 8192}
    with cli_server("qrscp", tmp_path, anyio_backend, *flags, config=config) as port:
        # ACSE (ARTIM, PS3.8 9.1.5): a connection that sends no A-ASSOCIATE-RQ is closed.
        with anyio.fail_after(10):
            stream = await anyio.connect_tcp(LOOPBACK, port)
            started = time.monotonic()
            async with stream:
                assert await outcome(port) == 0  # served meanwhile
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                    await stream.receive()
            assert 0.5 < time.monotonic() - started < 8
        # Network timeout: an idle association is aborted by the server.
        with anyio.fail_after(20):
            async with requestor("IDLE").associate(LOOPBACK, port) as idle:
                assert idle.remote_max_pdu == 8192  # -pdu / max_pdu
                assert await outcome(port) == 0
                # -tn 1: the server aborts within about a second; the margin is for a
                # loaded machine (this test shares two cores with others).
                await anyio.sleep(4)
                with pytest.raises(errors.DicomioError):
                    await idle.send_c_echo()
        assert await outcome(port) == 0


@pytest.mark.parametrize("mode", ["flags", "config", "control"])
async def test_dimse_timeout(tmp_path: Path, anyio_backend: str, mode: str) -> None:
    """-td bounds the server's wait for a C-GET sub-operation's C-STORE-RSP: a requestor
    whose C-STORE handler takes 2.5 s gets its one sub-operation counted as failed (with
    -td 10, the control, it completes), and the server goes on serving."""
    flags, config = {
        "flags": (["-td", "1"], None),
        "config": ([], {"dimse_timeout": 1}),
        "control": (["-td", "10"], None),
    }[mode]
    ds = make_dataset(
        patient=0, study=0, series=0, image=0, modality="CT", transfer_syntax=EXPLICIT
    )
    with cli_server("qrscp", tmp_path, anyio_backend, *flags, config=config) as port:
        store = AE("STORER")
        store.add_requested_context(CTImageStorage)
        with anyio.fail_after(15):
            async with store.associate(LOOPBACK, port) as assoc:
                assert (await assoc.send_c_store(ds)).Status == 0

        async def slow_store(event: Any) -> int:
            await anyio.sleep(2.5)
            return 0

        contexts = [build_context(GET), build_context(CTImageStorage)]
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ds.StudyInstanceUID
        statuses: list[Dataset] = []
        with anyio.fail_after(20):
            async with AE("GETSCU").associate(
                LOOPBACK,
                port,
                contexts=contexts,
                ext_neg=storage_scp_roles(contexts),
                evt_handlers=[(evt.EVT_C_STORE, slow_store)],
            ) as assoc:
                async for status, _ in assoc.send_c_get(query, GET):
                    statuses.append(status)
        final = statuses[-1]
        if mode == "control":
            assert final.Status == 0 and final.NumberOfCompletedSuboperations == 1, final
        else:
            # "Refused: Out of resources - unable to perform sub-operations" (PS3.4 C.4.3.1.4)
            assert final.Status == 0xA702 and final.NumberOfFailedSuboperations == 1, final
        assert await outcome(port) == 0


# -- user identity ---------------------------------------------------------------------------


def identity(user: bytes, password: bytes = b"", kind: int = 2) -> list[Any]:
    return [
        UserIdentityRQ(
            user_identity_type=kind,
            positive_response_requested=False,
            primary_field=user,
            secondary_field=password,
        )
    ]


@APPS
@pytest.mark.parametrize("anonymous", ["no", "flag", "config"])
async def test_users_from_config(
    tmp_path: Path, anyio_backend: str, app: str, anonymous: str
) -> None:
    config: dict[str, Any] = {"users": {"alice": "s3cret", "bob": ""}}
    flags: list[str] = []
    if anonymous == "flag":
        flags = ["--allow-anonymous"]
    elif anonymous == "config":
        config["allow_anonymous"] = True
    with cli_server(app, tmp_path, anyio_backend, *flags, config=config) as port:
        assert await outcome(port, ext_neg=identity(b"alice", b"wrong")) == NO_REASON
        assert await outcome(port, ext_neg=identity(b"mallory", b"s3cret")) == NO_REASON
        assert await outcome(port, ext_neg=identity(b"alice", kind=1)) == NO_REASON
        assert await outcome(port, ext_neg=identity(b"alice", b"s3cret")) == 0
        assert await outcome(port, ext_neg=identity(b"bob", kind=1)) == 0
        expected = NO_REASON if anonymous == "no" else 0
        assert await outcome(port) == expected
        assert await outcome(port, ext_neg=identity(b"alice", b"s3cret")) == 0


HOOK = """
async def verify(assoc, identity):
    return identity.primary_field == b"hooked" and assoc.remote_ae_title == "HOOKSCU"

def plain(assoc, identity):
    return identity.primary_field == b"hooked", b"welcome"
"""


@pytest.mark.parametrize("how", ["flag-file", "flag-module", "config"])
async def test_user_identity_hook(tmp_path: Path, anyio_backend: str, how: str) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "my_hooks.py").write_text(HOOK)
    env = dict(DCMTK_ENV)
    env["PYTHONPATH"] = f"{hooks}:{env.get('PYTHONPATH', '')}"
    flags: list[str] = []
    config = None
    if how == "flag-file":
        flags = ["--user-identity-hook", f"{hooks / 'my_hooks.py'}:verify"]
    elif how == "flag-module":
        flags = ["--user-identity-hook", "my_hooks:plain"]
    else:
        config = {"user_identity_hook": "my_hooks:verify"}
    with cli_server("storescp", tmp_path, anyio_backend, *flags, config=config, env=env) as port:
        assert await outcome(port, calling="HOOKSCU") == NO_REASON
        assert await outcome(port, calling="HOOKSCU", ext_neg=identity(b"other")) == NO_REASON
        assert await outcome(port, calling="HOOKSCU", ext_neg=identity(b"hooked")) == 0


# -- the settings file and --help ------------------------------------------------------------


BAD_CONFIGS = [
    ("max_asociations = 3\n", "max_asociations"),
    ('max_associations = "ten"\n', "max_associations"),
    ("max_associations = 0\n", "max_associations"),
    ("require_called_aet = 1\n", "require_called_aet"),
    ("require_calling_aet = [1, 2]\n", "require_calling_aet"),
    ("acse_timeout = -1\n", "acse_timeout"),
    ("[users]\nalice = 1234\n", "users.alice"),
    ('user_identity_hook = "no_such_module_here:verify"\n', "no_such_module_here"),
    ('user_identity_hook = "no colon"\n', "no colon"),
    ('user_identity_hook = "m:f"\n[users]\na = "b"\n', "users or user_identity_hook"),
    ("[qrscp]\nmax_pdu = 1\n", "qrscp"),  # a qrscp table in a storescp file: unknown key
    ("[storescp]\nnot valid toml or ini", "neither TOML"),
    ("[elsewhere]\nkey = value\n", "[elsewhere]"),
    ('layout = "sideways"\n', "layout"),
    # A setting above the [storescp] table would be silently ignored: refused.
    ("max_associations = 3\n[storescp]\nport = 1\n", "'max_associations' is outside"),
]


@pytest.mark.parametrize(("text", "named"), BAD_CONFIGS)
def test_bad_config_refused_at_start(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "settings.toml"
    path.write_text(text)
    result = subprocess.run(
        dicomio("storescp", str(free_port()), "--config", str(path), "-od", str(tmp_path)),
        capture_output=True,
        timeout=30,
        env=DCMTK_ENV,
        check=False,
    )
    message = result.stderr.decode(errors="replace")
    assert result.returncode == 2, message
    assert named in message, message


def test_bad_flag_values_refused(tmp_path: Path) -> None:
    for flags in (["--max-associations", "0"], ["-tn", "-1"], ["--max-associations-per-ae", "0"]):
        result = subprocess.run(
            dicomio("qrscp", str(free_port()), "--data", str(tmp_path), *flags),
            capture_output=True,
            timeout=30,
            env=DCMTK_ENV,
            check=False,
        )
        assert result.returncode == 2, (flags, result.stderr)
        assert b"must be at least" in result.stderr, result.stderr


def test_ini_config(tmp_path: Path) -> None:
    from dicomio.apps._server_config import check_config, load_config

    path = tmp_path / "settings.ini"
    path.write_text(
        "[qrscp]\nmax_associations = 4\nrequire_called_aet = yes\n"
        "require_calling_aet = A, B\nnetwork_timeout = 2.5\n"
        "[users]\nalice = s3cret\n[destinations]\nSTORE = 127.0.0.1:104\n"
    )
    assert check_config(load_config(path, "qrscp"), "qrscp", str(path)) == {
        "max_associations": 4,
        "require_called_aet": True,
        "require_calling_aet": ("A", "B"),
        "network_timeout": 2.5,
        "users": {"alice": "s3cret"},
        "destinations": {"STORE": "127.0.0.1:104"},
    }


@APPS
def test_help_lists_every_lockdown_flag(app: str) -> None:
    result = subprocess.run(
        dicomio(app, "--help"), capture_output=True, timeout=30, env=DCMTK_ENV, check=False
    )
    out = result.stdout.decode()
    assert result.returncode == 0
    for flag in (
        "--config",
        "--require-calling-aet",
        "--require-called-aet",
        "--max-associations",
        "--max-associations-per-ae",
        "--acse-timeout",
        "--dimse-timeout",
        "--network-timeout",
        "--max-pdu",
        "--user-identity-hook",
        "--allow-anonymous",
        "docs/security.md",
    ):
        assert flag in out, flag


def test_security_page_example_is_a_valid_settings_file(tmp_path: Path) -> None:
    from dicomio.apps._server_config import check_config, load_config

    page = (Path(__file__).parent.parent / "docs" / "security.md").read_text()
    example = page.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "settings.toml"
    path.write_text(example)
    settings = check_config(load_config(path, "qrscp"), "qrscp", str(path))
    assert settings["require_calling_aet"] == ("CT1", "MR1", "VIEWER")
    assert settings["users"] == {"viewer": "a long random passphrase"}
    assert settings["destinations"] == {"VIEWER": "10.0.0.7:11112"}


# -- DCMTK as the requestor ------------------------------------------------------------------


def test_dcmtk_storescu_against_a_locked_storescp(tmp_path: Path) -> None:
    """DCMTK's storescu with and without -usr/-pwd and with a listed or unlisted -aet."""
    from tests.conftest import require_dcmtk

    storescu = require_dcmtk("storescu")["storescu"]
    ds = make_dataset(
        patient=0, study=0, series=0, image=5, modality="CT", transfer_syntax=EXPLICIT
    )
    sample = tmp_path / "ct.dcm"
    ds.save_as(sample, enforce_file_format=True)
    config = {"require_calling_aet": ["GOOD"], "users": {"alice": "s3cret"}}

    def send(*options: str) -> subprocess.CompletedProcess[bytes]:
        argv = [storescu, *options, "-aec", "ANY", LOOPBACK, str(port), str(sample)]
        return subprocess.run(argv, capture_output=True, timeout=30, env=DCMTK_ENV, check=False)

    with cli_server("storescp", tmp_path, "asyncio", config=config) as port:
        out = next(tmp_path.glob("storescp-*")) / "out"
        for options in (
            ["-aet", "GOOD"],  # no identity
            ["-aet", "GOOD", "-usr", "alice", "-pwd", "wrong"],
            ["-aet", "BAD", "-usr", "alice", "-pwd", "s3cret"],
        ):
            result = send(*options)
            assert result.returncode != 0, options
            assert b"Association Rejected" in result.stdout + result.stderr, options
        assert not list(out.glob("*.dcm"))
        result = send("-aet", "GOOD", "-usr", "alice", "-pwd", "s3cret")
        assert result.returncode == 0, result.stdout + result.stderr
        assert [p.name for p in out.glob("*.dcm")] == [f"{ds.SOPInstanceUID}.dcm"]


async def test_tls_and_users_from_config(tmp_path: Path, anyio_backend: str) -> None:
    """The deployment docs/security.md recommends: TLS and users, all from the settings
    file. A TLS requestor with the password gets in; plain TCP does not."""
    import ssl

    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_cert = ca.issue_cert(LOOPBACK)
    pem = tmp_path / "server.pem"
    server_cert.private_key_and_cert_chain_pem.write_to_path(str(pem))
    config = {"tls_cert": str(pem), "users": {"alice": "s3cret"}}
    client = ssl.create_default_context()
    ca.configure_trust(client)
    with cli_server("qrscp", tmp_path, anyio_backend, config=config) as port:
        with anyio.fail_after(15):
            async with requestor("SCU").associate(
                LOOPBACK, port, ssl_context=client, ext_neg=identity(b"alice", b"s3cret")
            ) as assoc:
                assert (await assoc.send_c_echo()).Status == 0
        with anyio.fail_after(15), pytest.raises(errors.DicomioError):
            await requestor("SCU").associate(LOOPBACK, port, ext_neg=identity(b"alice", b"s3cret"))
        with anyio.fail_after(15), pytest.raises(AssociationRejected):
            await requestor("SCU").associate(LOOPBACK, port, ssl_context=client)
