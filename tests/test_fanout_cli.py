"""``dicomio echoscu``/``findscu`` to several peers and ``movescu``/``getscu --keys-file``
(issue #15): peers files checked at start, JSON lines carrying the peer, a summary per
peer, the exit status, Ctrl-C, bulk retrieve with progress and resume.

The commands run in this process (``args.run(args)``) against in-process servers, except
for Ctrl-C, which needs a process to interrupt.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydicom.dataset import Dataset

from dicomio import AE, evt
from dicomio.apps._common import UsageError
from dicomio.apps._peers import parse_peer, read_peers_file
from dicomio.apps.cli import build_parser
from dicomio.sop import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    Verification,
)
from tests.conftest import LOOPBACK, free_port
from tests.corpus import Corpus

pytestmark = [pytest.mark.timeout(60)]

FIND = PatientRootQueryRetrieveInformationModelFind


async def command(*argv: str) -> int:
    args = build_parser().parse_args(list(argv))
    with anyio.fail_after(30):
        code: int = await args.run(args)
    return code


def find_scp(studies: tuple[str, ...] = (), *, stall: bool = False) -> tuple[AE, list[Any]]:
    async def on_find(event: evt.Event) -> AsyncIterator[tuple[int, Dataset | None]]:
        if stall:
            with anyio.move_on_after(20):
                await anyio.sleep_forever()
        for study in studies:
            ds = Dataset()
            ds.QueryRetrieveLevel = "STUDY"
            ds.StudyInstanceUID = study
            yield 0xFF00, ds

    ae = AE("FANSCP")
    ae.add_supported_context(Verification)
    ae.add_supported_context(FIND)
    return ae, [(evt.EVT_C_FIND, on_find)]


# -- peers on the command line and in files ------------------------------------------------


def test_peer_option() -> None:
    peer = parse_peer("PACS@10.0.0.5:104")
    assert (peer.ae_title, peer.host, peer.port, peer.name) == (
        "PACS",
        "10.0.0.5",
        104,
        "PACS@10.0.0.5:104",
    )
    assert parse_peer("A@[::1]:11112").host == "::1"
    for bad in ("PACS@host", "host:104", "PACS@host:0", "PACS@host:99999", "@host:104"):
        with pytest.raises(UsageError, match="--peer"):
            parse_peer(bad)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_peers_file(tmp_path: Path) -> None:
    good = write(
        tmp_path / "peers.toml",
        '[[peer]]\nname = "a"\nae_title = "A"\nhost = "127.0.0.1"\nport = 104\n'
        'max_associations = 2\n\n[[peer]]\nae_title = "B"\nhost = "127.0.0.1"\nport = 105\n',
    )
    a, b = read_peers_file(good)
    assert (a.name, a.max_associations, b.name) == ("a", 2, "B@127.0.0.1:105")
    cases = {
        "unknown key 'colour'": '[[peer]]\nae_title = "A"\nhost = "h"\nport = 1\n'
        '\n[[peer]]\nae_title = "B"\nhost = "h"\nport = 2\ncolour = "red"\n',
        "port 70000": '[[peer]]\nae_title = "A"\nhost = "h"\nport = 70000\n',
        "port must be a int": '[[peer]]\nae_title = "A"\nhost = "h"\nport = "104"\n',
        "duplicate name 'x'": '[[peer]]\nname = "x"\nae_title = "A"\nhost = "h"\nport = 1\n'
        '[[peer]]\nname = "x"\nae_title = "B"\nhost = "h"\nport = 2\n',
        "tls_ca 'missing.pem': no such file": '[[peer]]\nae_title = "A"\nhost = "h"\n'
        'port = 1\ntls_ca = "missing.pem"\n',
        "host is missing": '[[peer]]\nae_title = "A"\nport = 1\n',
        "unknown top-level key": 'timeout = 3\n[[peer]]\nae_title = "A"\nhost = "h"\nport = 1\n',
        "not valid TOML": "[[peer]\n",
    }
    for expected, text in cases.items():
        with pytest.raises(UsageError, match=expected) as info:
            read_peers_file(write(tmp_path / "bad.toml", text))
        assert "bad.toml" in str(info.value)
    with pytest.raises(UsageError, match=r"line 6 \(peer 2\)"):
        read_peers_file(write(tmp_path / "bad.toml", cases["unknown key 'colour'"]))
    bad_pem = write(tmp_path / "bad.pem", "not a certificate\n")
    text = f'[[peer]]\nae_title = "A"\nhost = "h"\nport = 1\ntls_ca = "{bad_pem.name}"\n'
    with pytest.raises(UsageError, match="cannot load the TLS files"):
        read_peers_file(write(tmp_path / "bad.toml", text))


def test_a_bad_peers_file_is_refused_before_anything_runs(tmp_path: Path) -> None:
    bad = write(tmp_path / "peers.toml", '[[peer]]\nae_title = "A"\nhost = "h"\nport = 0\n')
    result = subprocess.run(
        [sys.executable, "-m", "dicomio", "echoscu", "--peers", str(bad)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert b"peers.toml line 1 (peer 1): port 0" in result.stderr


# -- fan-out runs ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_findscu_and_echoscu_to_several_peers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ae1, handlers1 = find_scp(("1.1", "1.2"))
    ae2, handlers2 = find_scp(("2.1", "1.2"))
    down = free_port()
    async with (
        ae1.start_server((LOOPBACK, 0), evt_handlers=handlers1) as one,
        ae2.start_server((LOOPBACK, 0), evt_handlers=handlers2) as two,
    ):
        peers = write(
            tmp_path / "peers.toml",
            f'[[peer]]\nname = "two"\nae_title = "FANSCP"\nhost = "{LOOPBACK}"\n'
            f"port = {two.port}\nmax_associations = 1\n",
        )
        keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID"]
        argv = ["--peer", f"FANSCP@{LOOPBACK}:{one.port}", "--peers", str(peers)]
        assert await command("findscu", *argv, *keys, "--json") == 0
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        matches = [(x["peer"], x["identifier"]["0020000D"]["Value"][0]) for x in lines[:-2]]
        one_name = f"FANSCP@{LOOPBACK}:{one.port}"
        assert sorted(matches) == [
            (one_name, "1.1"),
            (one_name, "1.2"),
            ("two", "1.2"),
            ("two", "2.1"),
        ]
        summaries = {x["peer"]: x["summary"] for x in lines[-2:]}
        assert summaries["two"]["outcome"] == "ok" and summaries["two"]["matches"] == 2

        assert await command("findscu", *argv, *keys, "--dedupe", "StudyInstanceUID") == 0
        captured = capsys.readouterr()
        assert captured.out.count("# match") == 3
        assert "findscu: two: ok" in captured.err

        code = await command("echoscu", *argv, "--peer", f"X@{LOOPBACK}:{down}", "--retries", "0")
        captured = capsys.readouterr()
        assert code == 4  # some answered
        assert captured.out.count("C-ECHO to") == 2
        assert f"echoscu: X@{LOOPBACK}:{down}: failed" in captured.err

    code = await command("echoscu", "--peer", f"X@{LOOPBACK}:{down}", "--retries", "0")
    assert code == 1  # none answered
    capsys.readouterr()


@pytest.mark.anyio
async def test_findscu_releases_each_peer_once_it_has_answered(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A one-shot query does not hold a peer's association open while the slower peers
    are still answering: the fast peer's A-RELEASE comes before the slow peer answers."""
    order: list[str] = []
    fast_released = anyio.Event()

    async def on_released(event: evt.Event) -> None:
        order.append("fast released")
        fast_released.set()

    async def slow_find(event: evt.Event) -> AsyncIterator[tuple[int, Dataset | None]]:
        with anyio.move_on_after(5):  # bounded: a requestor that keeps it open fails below
            await fast_released.wait()
        order.append("slow answers")
        yield 0x0000, None

    fast_ae, fast_handlers = find_scp(("1.1",))
    slow_ae, _ = find_scp()
    async with (
        fast_ae.start_server(
            (LOOPBACK, 0), evt_handlers=[*fast_handlers, (evt.EVT_RELEASED, on_released)]
        ) as fast,
        slow_ae.start_server((LOOPBACK, 0), evt_handlers=[(evt.EVT_C_FIND, slow_find)]) as slow,
    ):
        argv = [
            "--peer",
            f"FANSCP@{LOOPBACK}:{fast.port}",
            "--peer",
            f"FANSCP@{LOOPBACK}:{slow.port}",
        ]
        assert await command("findscu", *argv, "-k", "QueryRetrieveLevel=STUDY") == 0
    assert order == ["fast released", "slow answers"]
    assert capsys.readouterr().out.count("# match") == 1


@pytest.mark.anyio
async def test_ctrl_c_prints_what_was_gathered(anyio_backend: str) -> None:
    fast_ae, fast_handlers = find_scp(("1.1",))
    slow_ae, slow_handlers = find_scp(stall=True)
    async with (
        fast_ae.start_server((LOOPBACK, 0), evt_handlers=fast_handlers) as fast,
        slow_ae.start_server((LOOPBACK, 0), evt_handlers=slow_handlers) as slow,
    ):
        argv = [
            sys.executable,
            "-m",
            "dicomio",
            "findscu",
            "--peer",
            f"FANSCP@{LOOPBACK}:{fast.port}",
            "--peer",
            f"SLOW@{LOOPBACK}:{slow.port}",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "--json",
            "--backend",
            anyio_backend,
        ]
        with anyio.fail_after(30):
            async with await anyio.open_process(argv) as proc:
                assert proc.stdout is not None and proc.stderr is not None
                out = b""
                while b'"peer"' not in out:  # the fast peer's match: the slow one is asking
                    out += await proc.stdout.receive()
                proc.send_signal(signal.SIGINT)
                interrupted = anyio.current_time()
                async for chunk in proc.stdout:
                    out += chunk
                err = b"".join([chunk async for chunk in proc.stderr])
                code = await proc.wait()
                took = anyio.current_time() - interrupted
    assert code == 130, err
    assert took < 5  # promptly: nothing waits on the stalled peer
    lines = [json.loads(line) for line in out.decode().splitlines()]
    summaries = {x["peer"]: x["summary"]["outcome"] for x in lines if "summary" in x}
    # The fast peer's final response may or may not have come before the signal.
    assert summaries[f"FANSCP@{LOOPBACK}:{fast.port}"] in ("ok", "cancelled")
    assert summaries[f"SLOW@{LOOPBACK}:{slow.port}"] == "cancelled"
    assert [x["peer"] for x in lines if "identifier" in x] == [f"FANSCP@{LOOPBACK}:{fast.port}"]
    assert b"interrupted" in err


# -- bulk retrieve --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_bulk_get_and_move_with_keys_file(
    corpus: Corpus, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    instances = corpus.instances[:5]
    by_uid = {i.sop_uid: i for i in instances}

    async def on_get(event: evt.Event) -> AsyncIterator[Any]:
        yield 1
        yield 0xFF00, by_uid[str(event.identifier.SOPInstanceUID)].path

    scp = AE("QRSCP")
    scp.add_supported_context(PatientRootQueryRetrieveInformationModelGet)
    scp.add_supported_context(PatientRootQueryRetrieveInformationModelMove)
    for sop_class in {i.sop_class for i in instances}:
        scp.add_supported_context(sop_class, scu_role=True, scp_role=True)
    keys = tmp_path / "keys.txt"
    keys.write_text(
        "# one instance per line\n"
        + "".join(f"SOPInstanceUID={i.sop_uid} PatientID={i.patient_id}\n" for i in instances)
    )
    out = tmp_path / "got"
    handlers = [(evt.EVT_C_GET, on_get), (evt.EVT_C_MOVE, on_get)]
    async with scp.start_server((LOOPBACK, 0), evt_handlers=handlers) as server:
        common = [LOOPBACK, str(server.port), "-aec", "QRSCP", "-k", "QueryRetrieveLevel=IMAGE"]
        common += ["--keys-file", str(keys), "-od", str(out)]
        assert await command("getscu", *common, "--associations", "2") == 0
        text = capsys.readouterr()
        assert "5/5 requests; sub-operations: 5 completed, 0 failed" in text.out
        assert sorted(p.stem for p in out.glob("*.dcm")) == sorted(by_uid)
        for p in list(out.glob("*.dcm"))[:3]:
            p.unlink()
        assert await command("getscu", *common, "--skip-existing") == 0
        text = capsys.readouterr()
        assert "3/3 requests; sub-operations: 3 completed" in text.out
        assert "2 skipped (already received)" in text.out

        port = free_port()
        scp.move_destinations = {"MOVESCU": (LOOPBACK, port)}
        moved = tmp_path / "moved"
        argv = [*common[:-2], "-od", str(moved), "--store", "--store-port", str(port)]
        assert await command("movescu", *argv, "--store-bind", LOOPBACK) == 0
        text = capsys.readouterr()
        assert "5/5 requests; sub-operations: 5 completed" in text.out
        assert len(list(moved.glob("*.dcm"))) == 5
