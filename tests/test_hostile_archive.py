"""Issue #13, acceptance 2: ``dicomio qrscp`` (a subprocess) under hostile input and faults.

Each test starts the real server on a free loopback port and drives it phase by phase while
a monitor task opens a fresh association every ~0.1 s and sends a C-ECHO, recording how long
each took. The phases:

- a wildcard bomb (``*A*A*...*B``, 30 stars) against stored 64-character patient names;
- 50 hostile values in each identifier that forms a file path (Patient ID, Study, Series and
  SOP Instance UID): traversal, absolute paths, NUL bytes, 10,000 characters, non-UID UIDs,
  the ``h`` + 16 hex digits forms that collide with the hashed names, unicode, ``.``, ``..``,
  empty, spaces, backslashes (the VM separator), Windows device names;
- a C-FIND whose Study Instance UID is a list of 40,000 UIDs (PS3.4 C.2.2.2.2);
- a 400 MiB private OB element (streamed from a sparse file), with the server's peak RSS read
  from ``/proc/PID/status`` (VmHWM);
- a disk that fills mid-ingest (a 4 MiB tmpfs as ``--data``; skipped if mount is refused).

Then, with the server stopped: nothing was written outside ``--data`` (a snapshot of the
folders around it, taken before and after), every index row has its own existing file inside
the archive, every C-STORE answered Success is in the index with its file byte for byte, no
C-STORE answered with a failure is, and every C-ECHO was answered within 1 s, in every phase.

Problems are collected per phase and reported together, each naming its phase and value,
so that one run lists every defect instead of the first. Data sets are written by hand
(Explicit VR Little Endian) rather than through pydicom, which would refuse or repair the
hostile values, and sent with ``send_c_store(path)``, which sends a file's bytes as they stand.
The command's Affected SOP Instance UID is the hostile value when the command set can carry it
(ASCII, at most 64 characters: PS3.7 6.3.1); otherwise a stand-in UID (the data set then
disagrees with the command, which a server may refuse).

Backends: the client and the server (``qrscp --backend``) both run on the test's backend. The
400 MiB phase runs on asyncio only: it measures the server's memory per data set streamed to
disk, which the backend does not change, and doubling it would double the test's longest
phase and 800 MiB of disk writes.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydicom.dataset import Dataset

from dicomio import AE, Association, DicomioError, Timeouts
from tests.conftest import LOOPBACK, free_port, wait_for_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.anyio,
    pytest.mark.timeout(300),
    # The hostile UIDs are the point: pydicom's UID() warns about each one the client reads.
    pytest.mark.filterwarnings("ignore:Invalid value for VR UI:UserWarning"),
]

VERIFICATION = "1.2.840.10008.1.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
SUCCESS = 0x0000
PENDING = (0xFF00, 0xFF01)
OUT_OF_RESOURCES = 0xA700
#: The acceptance bound on a C-ECHO (association, echo, release) at any time.
ECHO_BOUND = 1.0
#: How long the monitor waits for one C-ECHO before calling the server unresponsive.
ECHO_GIVE_UP = 5.0
BIG_ELEMENT = 400 << 20
#: The server's peak RSS may grow this much while it receives and files the 400 MiB element.
BIG_RSS_ALLOWANCE = 100 << 20
WILDCARD_BOMB = "*A" * 29 + "*B"
#: Patients whose 64-character names the bomb runs against, and those it matches.
BOMB_NAMES = {"BOMB1": "A" * 64, "BOMB2": "AB" * 32, "BOMB3": "A" * 63 + "B"}
BOMB_MATCHES = ["BOMB2", "BOMB3"]
UID_LIST_SIZE = 40_000


# -- Part 10 files written by hand (PS3.10 7.1, PS3.5 7.1.2 Explicit VR Little Endian) ---------

_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UC", b"UN", b"UR", b"UT"}


def element(tag: int, vr: str, value: bytes) -> bytes:
    """One Explicit VR Little Endian element, padded to even length (PS3.5 7.1.2, 6.2)."""
    raw_vr = vr.encode()
    if len(value) & 1:
        value += b"\x00" if vr in ("UI", "OB") else b" "
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + raw_vr
    if raw_vr in _LONG_VRS:
        return head + struct.pack("<HL", 0, len(value)) + value
    if len(value) > 0xFFFF:
        raise ValueError(f"{vr} value of {len(value)} bytes does not fit a 16-bit length")
    return head + struct.pack("<H", len(value)) + value


def meta_group(sop_class: str, sop_instance: str) -> bytes:
    body = b"".join(
        [
            element(0x00020001, "OB", b"\x00\x01"),
            element(0x00020002, "UI", sop_class.encode()),
            element(0x00020003, "UI", sop_instance.encode("ascii")),
            element(0x00020010, "UI", EXPLICIT_LE.encode()),
            element(0x00020012, "UI", b"1.2.826.0.1.3680043.9.7433.13"),
        ]
    )
    return b"\x00" * 128 + b"DICM" + element(0x00020000, "UL", struct.pack("<L", len(body))) + body


def command_uid(value: str, index: int) -> str:
    """The Affected SOP Instance UID for the command set: the value itself if the command set
    can carry it (PS3.7 6.3.1: default repertoire, at most 64 characters), else a stand-in."""
    if value.isascii() and 0 < len(value.rstrip("\x00 ")) <= 64:
        return value.rstrip("\x00 ")
    return f"2.25.{0xD1C0 << 64 | index}"


@dataclass
class Sent:
    """One C-STORE: what was sent, and what came back."""

    phase: str
    label: str
    path: Path
    digest: str  # sha256 of the data set bytes (what the archive must keep byte for byte)
    status: int | None = None
    error: str | None = None

    def describe(self) -> str:
        return f"[{self.phase}] {self.label}"


def _digest_file(path: Path, offset: int) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fp:
        fp.seek(offset)
        while chunk := fp.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def part10_offset(path: Path) -> int:
    """Where a Part 10 file's data set starts (after the meta group), or -1 if it is not one."""
    with open(path, "rb") as fp:
        head = fp.read(144)
    if len(head) < 144 or head[128:132] != b"DICM" or head[132:138] != b"\x02\x00\x00\x00UL":
        return -1
    return 144 + int(struct.unpack_from("<L", head, 140)[0])


def write_instance(
    path: Path,
    *,
    phase: str,
    label: str,
    index: int,
    patient_id: str,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    patient_name: str = "HOSTILE^TEST",
    payload: int = 0,
    big: int = 0,
) -> Sent:
    """A Secondary Capture data set with the given identifiers, as a Part 10 file.

    ``payload`` adds that many bytes of private OB data written out; ``big`` adds a private
    OB element of that size as a hole in a sparse file (streamed, never in memory).
    """

    def text(value: str) -> bytes:
        return value.encode("utf-8", "surrogateescape")

    head = element(0x00080005, "CS", b"ISO_IR 192")
    head += element(0x00080016, "UI", SECONDARY_CAPTURE.encode())
    head += element(0x00080018, "UI", text(sop_uid))
    head += element(0x00080060, "CS", b"OT")
    head += element(0x00090010, "LO", b"DICOMIO HOSTILE")
    tail = element(0x00100010, "PN", text(patient_name))
    tail += element(0x00100020, "LO", text(patient_id))
    tail += element(0x0020000D, "UI", text(study_uid))
    tail += element(0x0020000E, "UI", text(series_uid))
    tail += element(0x00204000, "LT", f"{phase} {index} {label[:200]}".encode(errors="replace"))
    with open(path, "wb") as fp:
        fp.write(meta_group(SECONDARY_CAPTURE, command_uid(sop_uid, index)))
        offset = fp.tell()
        fp.write(head)
        if payload:
            fp.write(element(0x00091001, "OB", bytes(range(256)) * (payload // 256)))
        if big:
            fp.write(struct.pack("<HH", 0x0009, 0x1002) + b"OB" + struct.pack("<HL", 0, big))
            fp.seek(big, os.SEEK_CUR)  # a hole: reads back as zeros, costs no disk or memory
        fp.write(tail)
    return Sent(phase, label, path, _digest_file(path, offset))


# -- hostile values -----------------------------------------------------------------------------


def old_hashed_name(value: str) -> str:
    """How ``safe_name`` on main names an unsafe value: ``h`` + 16 hex digits of its SHA-1."""
    return "h" + hashlib.sha1(value.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def hostile_values(outside: Path) -> list[str]:
    """50 values for an identifier that becomes part of a file path; ``outside`` is a folder
    next to the archive, for absolute paths that a broken mapping would write into."""
    base = [
        "../../x",
        "../../../../../../escaped",
        "..\\..\\x",
        "/etc/passwd",
        str(outside / "abs"),
        "/",
        ".",
        "..",
        "...",
        "",
        "  1.2.3.9  ",
        "1.2.3\x00",
        "1.2\x00/../../x",
        "\x00\x00x",
        "a" * 10_000,
        "1." * 5_000,
        "1.2.3.4\\5.6.7.8",  # the VM separator: two values
        "\\",
        "CON",
        "NUL",
        "PRN.dcm",
        "COM1",
        "LPT1",
        "aux",
        "Ünïcødé-ñame",
        "患者",
        "\u202ereversed",
        "emoji-\U0001f600",
        "abc",
        "1.2.3.",
        "01.2.3",
        "1..2",
        "1.2.-3",
        "1" * 65,
        "2.25." + "9" * 60,
        "h0123456789abcdef",
        "x" * 64,
        "x" * 65,
        "name with spaces",
        "tab\tinside",
        "new\nline",
        "semi;colon",
        "star*and?",
        "$(touch pwned)",
        "%2e%2e%2fx",
        "~root",
    ]
    # Each value the old scheme hashed, written as its hashed name: two different identifiers
    # that the old mapping gives one file or folder (issue #13 defect 2).
    # Values stay distinct after trailing padding is stripped (PS3.5 6.2), so that no store
    # legitimately replaces another one's instance.
    collisions = [
        old_hashed_name(v) for v in ("../../x", "a" * 10_000, "1.2\x00/../../x", "/etc/passwd")
    ]
    values = list(dict.fromkeys([*base, *collisions]))
    assert len(values) == 50, len(values)
    assert len({v.rstrip(" \x00") for v in values}) == 50
    return values


# -- the server ---------------------------------------------------------------------------------


class QRSCP:
    """``python -m dicomio qrscp`` on a free loopback port; output to a log file."""

    def __init__(self, data: Path, log: Path, backend: str) -> None:
        self.data = data
        self.log = log
        self.backend = backend
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "dicomio",
                    "qrscp",
                    str(self.port),
                    "--bind",
                    LOOPBACK,
                    "--data",
                    str(self.data),
                    "--backend",
                    self.backend,
                    "-aet",
                    "DICOMIO",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        wait_for_port(self.port, self.proc, timeout=30)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, *, kill: bool = False) -> int | None:
        """Stop the server (SIGTERM, or SIGKILL for a frozen one); its exit status."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        return proc.returncode

    def tail(self, lines: int = 15) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def proc_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as fp:
        for line in fp:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux 4.0+: write 5 to clear_refs)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fp:
            fp.write("5")
    except OSError:
        return False
    return True


# -- the C-ECHO monitor and the report -------------------------------------------------------


@dataclass
class Report:
    """Problems found so far, and the C-ECHO latencies per phase."""

    problems: list[str] = field(default_factory=list)
    phase: str = "start"
    latencies: dict[str, list[float]] = field(default_factory=dict)
    paused: bool = False

    def problem(self, text: str) -> None:
        self.problems.append(f"[{self.phase}] {text}")

    def record_echo(self, seconds: float) -> None:
        if not self.paused:
            self.latencies.setdefault(self.phase, []).append(seconds)

    def end_phase(self, next_phase: str) -> None:
        samples = self.latencies.get(self.phase, [])
        if not samples:
            self.problem("no C-ECHO was measured in this phase")
        elif max(samples) >= ECHO_BOUND:
            slow = sum(1 for s in samples if s >= ECHO_BOUND)
            self.problem(
                f"C-ECHO took up to {max(samples):.2f} s ({slow} of {len(samples)} at or over "
                f"{ECHO_BOUND:.0f} s; {ECHO_GIVE_UP:.0f} s means no answer)"
            )
        self.phase = next_phase

    def summary(self) -> str:
        lines = [
            f"{phase}: {len(s)} echoes, max {max(s):.3f} s" for phase, s in self.latencies.items()
        ]
        return "C-ECHO latency per phase: " + "; ".join(lines)


def client_ae() -> AE:
    # A frozen server never answers C-CANCEL: give up on it after 2 s, not the default 10.
    ae = AE("HOSTILE", timeouts=Timeouts(cancel=2.0))
    ae.add_requested_context(VERIFICATION)
    # Explicit VR Little Endian only: the files are sent as they stand, never re-encoded.
    ae.add_requested_context(SECONDARY_CAPTURE, EXPLICIT_LE)
    # Implicit VR only: 40,000 UIDs do not fit Explicit VR's 16-bit length for UI.
    ae.add_requested_context(PATIENT_ROOT_FIND, IMPLICIT_LE)
    ae.add_requested_context(STUDY_ROOT_FIND, IMPLICIT_LE)
    return ae


async def timed_echo(ae: AE, port: int) -> float:
    """Seconds for a C-ECHO on a fresh association; ECHO_GIVE_UP if it did not succeed."""
    started = time.monotonic()
    with anyio.move_on_after(ECHO_GIVE_UP):
        try:
            async with ae.associate(LOOPBACK, port, ae_title="DICOMIO") as assoc:
                status = await assoc.send_c_echo()
            if status.Status == SUCCESS:
                return time.monotonic() - started
        except (DicomioError, OSError):
            pass
    return ECHO_GIVE_UP


async def echo_monitor(ae: AE, server: QRSCP, report: Report, stop: anyio.Event) -> None:
    while not stop.is_set():
        if not report.paused:
            report.record_echo(await timed_echo(ae, server.port))
        with anyio.move_on_after(0.1):
            await stop.wait()


@asynccontextmanager
async def monitored(ae: AE, server: QRSCP, report: Report) -> AsyncIterator[None]:
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(echo_monitor, ae, server, report, stop)
        try:
            yield
        finally:
            stop.set()


async def boundary(ae: AE, server: QRSCP, report: Report, next_phase: str) -> None:
    """One more C-ECHO, then the phase's verdict on latency."""
    report.record_echo(await timed_echo(ae, server.port))
    report.end_phase(next_phase)


async def restart(server: QRSCP, report: Report, why: str) -> None:
    report.paused = True
    try:
        report.problem(f"{why}: killed and restarted the server; its log ends:\n{server.tail()}")
        server.stop(kill=True)
        await anyio.to_thread.run_sync(server.start)
    finally:
        report.paused = False


# -- sending --------------------------------------------------------------------------------


async def store_all(
    ae: AE, server: QRSCP, sent: list[Sent], report: Report, *, timeout: float = 120
) -> None:
    """C-STORE each file, on one association while that works: after an exception the item
    in flight records it, and the rest go on a new association (three failed in a row give
    up, and every item left records why)."""
    queue = list(sent)
    failures = 0
    while queue:
        try:
            with anyio.fail_after(timeout):
                async with ae.associate(LOOPBACK, server.port, ae_title="DICOMIO") as assoc:
                    failures = 0
                    while queue:
                        item = queue.pop(0)
                        try:
                            item.status = int((await assoc.send_c_store(item.path)).Status)
                        except BaseException as exc:
                            item.error = f"{type(exc).__name__}: {exc}"[:300]
                            raise
        except (DicomioError, OSError, TimeoutError) as exc:
            failures += 1
            if server.proc is not None and server.proc.poll() is not None:
                report.problem(f"server exited with {server.proc.returncode}:\n{server.tail()}")
                server.proc = None
                await anyio.to_thread.run_sync(server.start)
            if failures >= 3:
                for item in queue:
                    item.error = f"not sent: three associations failed, the last with {exc!r}"
                return


async def find(
    assoc: Association, identifier: Dataset, model: str
) -> tuple[list[Dataset], int | None]:
    matches: list[Dataset] = []
    final: int | None = None
    async for status, found in assoc.send_c_find(identifier, model):
        code = int(status.Status) if "Status" in status else None
        if code in PENDING and found is not None:
            matches.append(found)
        else:
            final = code
    return matches, final


# -- checks after the server stopped ------------------------------------------------------------


def snapshot(root: Path, skip: set[Path]) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root`` except ``skip`` (path -> size, mtime_ns)."""
    seen: dict[str, tuple[int, int]] = {}
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = [d for d in dirs if here / d not in skip]
        for name in [*dirs, *files]:
            path = here / name
            if path in skip:
                continue
            st = path.lstat()
            seen[str(path)] = (st.st_size if not path.is_dir() else 0, st.st_mtime_ns)
    return seen


@contextmanager
def read_only_index(data: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(f"file:{data / 'index.sqlite'}?mode=ro", uri=True)
    try:
        yield conn
    finally:
        conn.close()


def check_archive(data: Path, sent: list[Sent], report: Report) -> None:
    """Every index row has its own existing file; every Success is indexed, byte for byte;
    nothing refused is indexed; no data set in transit was left behind."""
    files = (data / "files").resolve()
    with read_only_index(data) as conn:
        rows = conn.execute("SELECT sop_uid, path FROM instances").fetchall()
    by_path: dict[Path, list[str]] = {}
    by_digest: dict[str, str] = {}
    for sop_uid, relative in rows:
        path = (files / relative).resolve()
        by_path.setdefault(path, []).append(sop_uid)
        if not path.is_relative_to(files):
            report.problem(f"index row {sop_uid[:80]!r} points outside files/: {relative!r}")
        elif not path.is_file():
            report.problem(f"index row {sop_uid[:80]!r} has no file: {relative!r}")
        else:
            offset = part10_offset(path)
            if offset < 0:
                report.problem(f"index row {sop_uid[:80]!r}: {relative!r} is not Part 10")
            else:
                by_digest[_digest_file(path, offset)] = sop_uid
    for path, owners in by_path.items():
        if len(owners) > 1:
            names = ", ".join(repr(o[:40]) for o in owners)
            report.problem(f"{len(owners)} index rows share one file {path.name}: {names}")
    for item in sent:
        if item.status == SUCCESS and item.digest not in by_digest:
            report.problem(f"{item.describe()}: Success, but no index row has its bytes")
        elif item.status is not None and item.status != SUCCESS and item.digest in by_digest:
            report.problem(f"{item.describe()}: status 0x{item.status:04X}, yet it is indexed")
        elif item.status is None:
            report.problem(f"{item.describe()}: no C-STORE status ({item.error})")
    indexed = set(by_path)
    orphans = [p for p in files.rglob("*") if p.is_file() and p.resolve() not in indexed]
    if orphans:
        report.problem(f"{len(orphans)} file(s) in files/ that no index row names: {orphans[:5]}")
    leftovers = [
        p
        for p in data.rglob("*")
        if p.is_file() and (p.suffix == ".part" or p.parent.name == "incoming")
    ]
    if leftovers:
        report.problem(f"{len(leftovers)} data set(s) in transit left behind: {leftovers[:5]}")


def check_outside(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]
) -> list[str]:
    changed = [p for p in after if before.get(p) != after[p]]
    gone = [p for p in before if p not in after]
    out = [f"written outside --data: {p}" for p in sorted(changed)[:20]]
    out += [f"removed outside --data: {p}" for p in sorted(gone)[:20]]
    for absolute in (Path("/etc/passwd.dcm"), Path("/escaped.dcm"), Path("/x.dcm")):
        if absolute.exists():
            out.append(f"written outside --data: {absolute}")
    return out


def layout(tmp_path: Path) -> tuple[Path, Path, Path]:
    """tmp_path/root/{sibling-a, outer/{data, sibling-b}}: (root, outer, data). The traversal
    values climb at most six levels from a series folder, which stays inside ``root``."""
    root = tmp_path / "root"
    outer = root / "outer"
    for folder in (root / "sibling-a", outer / "sibling-b"):
        folder.mkdir(parents=True)
        (folder / "keep.txt").write_text("untouched\n")
    return root, outer, outer / "data"


def fresh_uid(counter: Iterator[int]) -> str:
    return f"2.25.{0xD1C0D1C0 << 32 | next(counter)}"


# -- the tests ---------------------------------------------------------------------------------


@dataclass
class Run:
    """What the phases of one run share: the client, the server, the report, what was sent."""

    ae: AE
    server: QRSCP
    report: Report
    inputs: Path
    sent: list[Sent] = field(default_factory=list)
    counter: Iterator[int] = field(default_factory=lambda: iter(range(1, 1 << 30)))

    def uid(self) -> str:
        return fresh_uid(self.counter)

    def make(self, phase: str, label: str, **ids: Any) -> Sent:
        index = len(self.sent) + 1
        item = write_instance(
            self.inputs / f"{index:05d}.dcm", phase=phase, label=label, index=index, **ids
        )
        self.sent.append(item)
        return item

    async def store(self, batch: list[Sent], *, timeout: float = 120) -> None:
        await store_all(self.ae, self.server, batch, self.report, timeout=timeout)

    async def boundary(self, next_phase: str) -> None:
        await boundary(self.ae, self.server, self.report, next_phase)


async def phase_baseline(run: Run) -> list[str]:
    """Valid studies (the C-FIND UID list looks for them) and the 64-character patient names
    the wildcard bomb runs against; returns the study UIDs."""
    studies = [run.uid() for _ in range(5)]
    batch = [
        run.make(
            "baseline",
            f"study {n}",
            patient_id="BASE",
            study_uid=study,
            series_uid=run.uid(),
            sop_uid=run.uid(),
        )
        for n, study in enumerate(studies)
    ]
    batch += [
        run.make(
            "baseline",
            f"64-character name of {pid}",
            patient_id=pid,
            patient_name=name,
            study_uid=run.uid(),
            series_uid=run.uid(),
            sop_uid=run.uid(),
        )
        for pid, name in BOMB_NAMES.items()
    ]
    await run.store(batch)
    for item in batch:
        if item.status != SUCCESS:
            run.report.problem(f"{item.describe()}: status {item.status} {item.error or ''}")
    return studies


async def phase_wildcard_bomb(run: Run) -> None:
    """``*A*A*...*B`` (30 stars) against the stored names: answered, and right (defect 1).
    A server that does not answer in 15 s is killed and restarted so the other phases run."""
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    query.PatientName = WILDCARD_BOMB
    query.PatientID = ""
    started = time.monotonic()
    answered = False
    with anyio.move_on_after(15):
        try:
            async with run.ae.associate(LOOPBACK, run.server.port, ae_title="DICOMIO") as assoc:
                matches, final = await find(assoc, query, PATIENT_ROOT_FIND)
            answered = True
            found = sorted(str(m.get("PatientID", "")) for m in matches)
            if final != SUCCESS or found != BOMB_MATCHES:
                run.report.problem(
                    f"PatientName={WILDCARD_BOMB}: final status {final}, matches {found},"
                    f" expected Success and {BOMB_MATCHES}"
                )
        except DicomioError as exc:
            answered = True
            run.report.problem(f"PatientName={WILDCARD_BOMB}: {type(exc).__name__}: {exc}")
    if not answered:
        took = time.monotonic() - started
        await restart(run.server, run.report, f"no C-FIND answer in {took:.0f} s (defect 1)")


async def phase_hostile_identifiers(run: Run, outside: Path) -> None:
    """50 hostile values in each path-forming identifier, one C-STORE each (defect 2)."""
    values = hostile_values(outside)
    study, series = run.uid(), run.uid()
    slots = {
        "PatientID": "patient_id",
        "StudyInstanceUID": "study_uid",
        "SeriesInstanceUID": "series_uid",
        "SOPInstanceUID": "sop_uid",
    }
    for key, slot in slots.items():
        batch = []
        for value in values:
            # The levels above the hostile one are shared, the ones below are new.
            ids = {
                "patient_id": "HOSTILE",
                "study_uid": study if slot in ("series_uid", "sop_uid") else run.uid(),
                "series_uid": series if slot == "sop_uid" else run.uid(),
                "sop_uid": run.uid(),
                slot: value,
            }
            shown = repr(value) if len(value) <= 40 else f"{value[:20]!r}... ({len(value)})"
            batch.append(run.make("hostile identifiers", f"{key}={shown}", **ids))
        await run.store(batch)


async def phase_uid_list(run: Run, stored_studies: list[str]) -> None:
    """A C-FIND whose Study Instance UID holds 40,000 UIDs (PS3.4 C.2.2.2.2), among them the
    stored studies: answered within 5 s with exactly those."""
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    absent = [f"1.2.826.0.1.3680043.9.7433.99.{n}" for n in range(UID_LIST_SIZE - 5)]
    query.StudyInstanceUID = [*absent[:20_000], *stored_studies, *absent[20_000:]]
    query.PatientID = ""
    started = time.monotonic()
    try:
        with anyio.fail_after(30):
            async with run.ae.associate(LOOPBACK, run.server.port, ae_title="DICOMIO") as assoc:
                matches, final = await find(assoc, query, STUDY_ROOT_FIND)
        took = time.monotonic() - started
        found = sorted(str(m.get("StudyInstanceUID", "")) for m in matches)
        if final != SUCCESS or found != sorted(stored_studies):
            run.report.problem(
                f"{UID_LIST_SIZE} UIDs: final status {final}, {len(found)} matches"
                f" {found[:6]}, expected Success and the {len(stored_studies)} stored"
                " studies in the list"
            )
        if took > 5:
            run.report.problem(f"{UID_LIST_SIZE} UIDs answered in {took:.1f} s (> 5 s)")
    except (DicomioError, TimeoutError) as exc:
        run.report.problem(f"{UID_LIST_SIZE} UIDs: {type(exc).__name__}: {exc}")


async def phase_big_element(run: Run) -> None:
    """A data set with a 400 MiB private OB element: stored, and the server's peak RSS grows
    far less than the element (defect 4)."""
    big = run.make(
        "400 MiB private element",
        "(0009,1002) OB of 400 MiB",
        patient_id="BIG",
        study_uid=run.uid(),
        series_uid=run.uid(),
        sop_uid=run.uid(),
        big=BIG_ELEMENT,
    )
    server = run.server
    rss_before = proc_kb(server.pid, "VmRSS") << 10
    if not reset_peak_rss(server.pid):
        pytest.fail("cannot reset the server's VmHWM (/proc/PID/clear_refs)")
    await run.store([big], timeout=240)
    if server.proc is not None and server.proc.poll() is None:
        grown = (proc_kb(server.pid, "VmHWM") << 10) - rss_before
        if grown >= BIG_RSS_ALLOWANCE:
            run.report.problem(
                f"server peak RSS grew {grown / (1 << 20):.0f} MiB for a"
                f" {BIG_ELEMENT >> 20} MiB element (allowed {BIG_RSS_ALLOWANCE >> 20} MiB;"
                " defect 4)"
            )
    if big.status != SUCCESS:
        run.report.problem(f"{big.describe()}: status {big.status} {big.error or ''}")


def verdict(report: Report, sent: list[Sent]) -> None:
    stored = sum(1 for s in sent if s.status == SUCCESS)
    refused = sorted({f"0x{s.status:04X}" for s in sent if s.status not in (None, SUCCESS)})
    print(report.summary())
    print(f"{len(sent)} C-STOREs: {stored} Success, refused with {refused}")
    assert not report.problems, (
        f"{len(report.problems)} problem(s):\n"
        + "\n".join(report.problems)
        + f"\n{report.summary()}"
    )


async def test_qrscp_under_hostile_input(anyio_backend: str, tmp_path: Path) -> None:
    root, outer, data = layout(tmp_path)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    data.mkdir()
    server = QRSCP(data, tmp_path / "qrscp.log", anyio_backend)
    before = snapshot(root, {data})
    run = Run(client_ae(), server, Report(), inputs)
    await anyio.to_thread.run_sync(server.start)
    try:
        async with monitored(run.ae, server, run.report):
            run.report.phase = "baseline"
            studies = await phase_baseline(run)
            await run.boundary("wildcard bomb")
            await phase_wildcard_bomb(run)
            await run.boundary("hostile identifiers")
            await phase_hostile_identifiers(run, outer / "sibling-b")
            await run.boundary("40,000 UID list")
            await phase_uid_list(run, studies)
            await run.boundary("400 MiB private element")
            if anyio_backend == "asyncio":  # once: see the module docstring
                await phase_big_element(run)
            await run.boundary("end")
    finally:
        server.stop()

    report = run.report
    for item in run.sent:
        if item.status is None:
            report.phase = item.phase
            report.problem(f"{item.label}: no C-STORE status ({item.error})")
    report.phase = "after"
    check_archive(data, [s for s in run.sent if s.status is not None], report)
    for text in check_outside(before, snapshot(root, {data})):
        report.problem(text)
    verdict(report, run.sent)


async def test_qrscp_disk_full_mid_ingest(anyio_backend: str, tmp_path: Path) -> None:
    """A 4 MiB tmpfs as --data, filled by 40 stores of ~200 KB: each C-STORE is answered
    Success or 0xA700 (PS3.4 B.2.3), the partial file is removed, the association and the
    server go on (issue #13 defect 3)."""
    root, _, data = layout(tmp_path)
    data.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(data)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(
            "cannot mount a 4 MiB tmpfs for the full-disk phase (needs root or CAP_SYS_ADMIN):"
            f" {mounted.stderr.decode(errors='replace').strip()}"
        )
    try:
        inputs = tmp_path / "inputs"
        inputs.mkdir()
        server = QRSCP(data, tmp_path / "qrscp.log", anyio_backend)
        before = snapshot(root, {data})
        report = Report(phase="disk full")
        counter = iter(range(1, 1 << 30))
        study, series = fresh_uid(counter), fresh_uid(counter)
        sent = [
            write_instance(
                inputs / f"{n:03d}.dcm",
                phase="disk full",
                label=f"instance {n} of 40 (~200 KB)",
                index=n,
                patient_id="FULL",
                study_uid=study,
                series_uid=series,
                sop_uid=fresh_uid(counter),
                payload=200_000 + 1_000 * n,
            )
            for n in range(40)
        ]
        ae = client_ae()
        await anyio.to_thread.run_sync(server.start)
        try:
            async with monitored(ae, server, report):
                await store_all(ae, server, sent, report)
                await boundary(ae, server, report, "end")
        finally:
            server.stop()
        report.phase = "after"
        statuses = [s.status for s in sent]
        if SUCCESS not in statuses:
            report.problem(f"no C-STORE succeeded before the disk filled: {statuses}")
        if OUT_OF_RESOURCES not in statuses:
            report.problem(
                "no C-STORE was answered 0xA700 Refused: Out of Resources: "
                + ", ".join("None" if s is None else f"0x{s:04X}" for s in statuses)
            )
        check_archive(data, [s for s in sent if s.status is not None], report)
        for item in sent:
            if item.status is None:
                report.problem(f"{item.label}: no C-STORE status ({item.error}) (defect 3)")
        for text in check_outside(before, snapshot(root, {data})):
            report.problem(text)
        verdict(report, sent)
    finally:
        subprocess.run(["umount", "-l", str(data)], capture_output=True, timeout=30, check=False)
