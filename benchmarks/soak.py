"""``python -m benchmarks.soak --minutes 30 --seed 1``: a seeded fuzz soak of the two servers.

Issue #13, acceptance 3 (opt-in, not in CI). Starts ``dicomio qrscp`` and ``dicomio storescp``
on loopback and runs several concurrent fuzz connections against them for the given time.
Each input is a whole TCP session built from valid parts (A-ASSOCIATE-RQ with Verification,
Secondary Capture storage and Study Root FIND contexts; C-ECHO, C-STORE of a small data set and
C-FIND requests in P-DATA-TF PDUs; A-RELEASE-RQ) and then mutated: bit flips, truncation, PDU
and item lengths out of range, random PDU types, reordered items and PDUs, corrupted command
sets, random bytes, a slow drip, an abrupt close, a stall (PS3.8 9.3, PS3.7 6.3.1, PS3.8 E.2).

Meanwhile a control C-ECHO on a fresh association goes to each server every second; no answer
within 2 s is a hang, and a server process that exits is a crash (it is restarted, and the
soak goes on). File descriptors (``/proc/PID/fd``) and VmRSS of each server are read after a
warm-up and at the end, each time after the fuzz connections have been closed for a few
seconds; the report says whether they stayed flat within 5%.

Replaying: input N of seed S is built from ``random.Random(f"{S}:{N}")`` alone, whatever ran
before it, so ``--replay N --seed S`` sends exactly that input again. On a crash or a hang the
inputs in flight and the last ones sent to that server are saved (bytes and a JSON
description) under ``--failures``.

Writes ``RESULTS-soak.md`` and ``results-soak.json`` into ``--output-dir`` (default: this
folder). Exit status: 0 when there were no crashes or hangs and memory and descriptors were
flat; 1 otherwise; 2 on a harness error.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import anyio
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite

from benchmarks.runner import free_port, open_descriptors, proc_status
from dicomio import AE, DicomioError
from dicomio.dimse.commands import CEchoRQ, CFindRQ, CStoreRQ, encode_command
from dicomio.pdu import (
    AssociateRQ,
    ImplementationClassUID,
    MaximumLength,
    PDataTF,
    PresentationContextRQ,
    PresentationDataValue,
    ReleaseRQ,
    encode,
)

HERE = Path(__file__).resolve().parent
LOOPBACK = "127.0.0.1"
VERIFICATION = "1.2.840.10008.1.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
#: A control C-ECHO not answered in this time is a hang.
HANG_SECONDS = 2.0
#: How long the fuzz connections are all closed before descriptors and memory are read.
QUIESCE_SECONDS = 4.0
#: Descriptors and RSS may differ this much between start and end.
FLAT = 0.05
#: Each fuzz session is cut off after this long, whatever it is doing.
SESSION_SECONDS = 8.0
KINDS = (
    "valid",
    "bitflip",
    "truncate",
    "pdu_length",
    "pdu_type",
    "item_length",
    "pdv_length",
    "command",
    "reorder",
    "duplicate",
    "garbage",
    "drip",
    "close",
    "stall",
)


# -- building inputs --------------------------------------------------------------------------


def _dataset_bytes(ds: Dataset) -> bytes:
    """A data set encoded in Implicit VR Little Endian, without a file meta group."""
    buffer = BytesIO()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = IMPLICIT_LE
    dcmwrite(buffer, ds, enforce_file_format=False, implicit_vr=True, little_endian=True)
    return buffer.getvalue()


def _store_dataset(rng: random.Random) -> tuple[str, bytes]:
    uid = f"2.25.{rng.getrandbits(96)}"
    ds = Dataset()
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = uid
    ds.PatientID = f"SOAK{rng.randrange(20)}"
    ds.PatientName = "SOAK^FUZZ"
    ds.StudyInstanceUID = f"2.25.{rng.randrange(50)}"
    ds.SeriesInstanceUID = f"2.25.{1000 + rng.randrange(100)}"
    ds.Modality = "OT"
    ds.ImageComments = "x" * rng.randrange(0, 3000)
    return uid, _dataset_bytes(ds)


def _find_identifier(rng: random.Random) -> bytes:
    ds = Dataset()
    ds.QueryRetrieveLevel = rng.choice(["STUDY", "SERIES", "PATIENT"])
    ds.PatientID = rng.choice(["", "*", "SOAK1", "SOAK*", "?OAK?"])
    ds.StudyInstanceUID = ""
    if ds.QueryRetrieveLevel == "SERIES":
        ds.StudyInstanceUID = f"2.25.{rng.randrange(50)}"
        ds.SeriesInstanceUID = ""
    ds.PatientName = rng.choice(["", "*", "SOAK^*"])
    return _dataset_bytes(ds)


def _pdata(context_id: int, data: bytes, *, command: bool, max_pdv: int) -> list[bytes]:
    """A message part as P-DATA-TF PDUs of one PDV each, fragmented at ``max_pdv`` bytes."""
    pdus = []
    for start in range(0, max(len(data), 1), max_pdv):
        chunk = data[start : start + max_pdv]
        last = start + max_pdv >= len(data)
        pdv = PresentationDataValue(context_id, command, last, chunk)
        pdus.append(encode(PDataTF([pdv])))
    return pdus


def valid_session(rng: random.Random, called: str) -> tuple[list[bytes], set[int]]:
    """A well-formed session: association, one to four DIMSE requests, release; and the
    steps after which a real SCU would wait for a reply."""
    contexts = [
        PresentationContextRQ(
            context_id=1, abstract_syntax=VERIFICATION, transfer_syntaxes=[IMPLICIT_LE]
        ),
        PresentationContextRQ(
            context_id=3,
            abstract_syntax=SECONDARY_CAPTURE,
            transfer_syntaxes=[IMPLICIT_LE, EXPLICIT_LE],
        ),
        PresentationContextRQ(
            context_id=5, abstract_syntax=STUDY_ROOT_FIND, transfer_syntaxes=[IMPLICIT_LE]
        ),
    ]
    rq = AssociateRQ(
        called_ae_title=called,
        calling_ae_title="SOAKFUZZ",
        presentation_contexts=contexts,
        user_information=[
            MaximumLength(maximum_length=rng.choice([0, 4096, 16384, 1 << 20])),
            ImplementationClassUID(implementation_class_uid="1.2.826.0.1.3680043.9.7433.1"),
        ],
    )
    steps = [encode(rq)]
    waits = {0}
    max_pdv = rng.choice([64, 1024, 16372])
    for message_id in range(1, rng.randint(1, 4) + 1):
        what = rng.choice(["echo", "store", "find"])
        if what == "echo":
            steps += _pdata(
                1, encode_command(CEchoRQ(message_id=message_id)), command=True, max_pdv=max_pdv
            )
            waits.add(len(steps) - 1)
        elif what == "store":
            uid, data = _store_dataset(rng)
            command = CStoreRQ(
                message_id=message_id,
                affected_sop_class_uid=SECONDARY_CAPTURE,
                affected_sop_instance_uid=uid,
            )
            steps += _pdata(3, encode_command(command), command=True, max_pdv=max_pdv)
            steps += _pdata(3, data, command=False, max_pdv=max_pdv)
            waits.add(len(steps) - 1)
        else:
            command = CFindRQ(message_id=message_id, affected_sop_class_uid=STUDY_ROOT_FIND)
            steps += _pdata(5, encode_command(command), command=True, max_pdv=max_pdv)
            steps += _pdata(5, _find_identifier(rng), command=False, max_pdv=max_pdv)
            waits.add(len(steps) - 1)
    steps.append(encode(ReleaseRQ()))
    waits.add(len(steps) - 1)
    return steps, waits


def _flip_bits(rng: random.Random, data: bytes, start: int = 0) -> bytes:
    buf = bytearray(data)
    if len(buf) <= start:
        return data
    for _ in range(rng.randint(1, 8)):
        pos = rng.randrange(start, len(buf))
        buf[pos] ^= 1 << rng.randrange(8)
    return bytes(buf)


def _variable_items(pdu: bytes) -> list[tuple[int, int]]:
    """(offset, total length) of each item of an A-ASSOCIATE-RQ (PS3.8 9.3.2)."""
    items, pos = [], 74
    while pos + 4 <= len(pdu):
        length = struct.unpack_from(">H", pdu, pos + 2)[0]
        items.append((pos, 4 + length))
        pos += 4 + length
    return items


@dataclass
class Input:
    """One fuzz session: which server, how it was mutated, the bytes, and how to send them."""

    index: int
    target: str
    kind: str
    steps: list[bytes]
    #: Steps after which to wait (at most 0.5 s) for a reply, as a real SCU would.
    waits: set[int] = field(default_factory=set)
    #: Seconds to wait between single bytes ("drip") or before closing ("stall").
    delay: float = 0.0
    #: "drip": bytes per write.
    chunk: int = 0
    note: str = ""

    def describe(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "target": self.target,
            "kind": self.kind,
            "note": self.note,
            "delay": self.delay,
            "chunk": self.chunk,
            "steps": [step.hex() for step in self.steps],
        }


def build_input(seed: int, index: int) -> Input:
    """Input ``index`` of ``seed``: a function of the two alone, so it can be replayed."""
    rng = random.Random(f"{seed}:{index}")
    target = rng.choice(["qrscp", "storescp"])
    kind = rng.choice(KINDS)
    steps, waits = valid_session(rng, "DICOMIO" if target == "qrscp" else "STORESCP")
    item = Input(index, target, kind, steps, waits)
    pick = rng.randrange(len(steps))
    if kind == "bitflip":
        steps[pick] = _flip_bits(rng, steps[pick])
        item.note = f"step {pick}"
    elif kind == "truncate":
        cut = rng.randrange(len(steps[pick]))
        item.steps = [*steps[:pick], steps[pick][:cut]]
        item.note = f"step {pick} cut at {cut}, then close"
    elif kind == "pdu_length":
        value = rng.choice([0, 1, 5, len(steps[pick]) - 5, len(steps[pick]), 0xFFFFFFFF])
        value = rng.choice([value, rng.getrandbits(32)])
        steps[pick] = steps[pick][:2] + struct.pack(">L", value) + steps[pick][6:]
        item.note = f"step {pick} PDU length {value}"
    elif kind == "pdu_type":
        value = rng.randrange(256)
        steps[pick] = bytes([value]) + steps[pick][1:]
        item.note = f"step {pick} PDU type 0x{value:02X}"
    elif kind == "item_length":
        items = _variable_items(steps[0])
        offset, _ = rng.choice(items)
        value = rng.choice([0, 1, 3, 0xFFFF, rng.getrandbits(16)])
        steps[0] = steps[0][: offset + 2] + struct.pack(">H", value) + steps[0][offset + 4 :]
        item.note = f"associate item at {offset} length {value}"
    elif kind == "pdv_length":
        pick = rng.randrange(1, len(steps) - 1) if len(steps) > 2 else 0
        value = rng.choice([0, 1, 2, 0xFFFFFFFF, rng.getrandbits(32)])
        steps[pick] = steps[pick][:6] + struct.pack(">L", value) + steps[pick][10:]
        item.note = f"step {pick} PDV length {value}"
    elif kind == "command":
        # Flip bits after the PDV header (12 bytes): inside the command set or data set.
        pick = rng.randrange(1, len(steps) - 1) if len(steps) > 2 else 0
        steps[pick] = _flip_bits(rng, steps[pick], 12)
        item.note = f"step {pick} message bytes"
    elif kind == "reorder":
        how = rng.choice(["items", "swap", "reverse"])
        if how == "items":
            items = _variable_items(steps[0])
            parts = [steps[0][o : o + n] for o, n in items]
            rng.shuffle(parts)
            body = steps[0][6:74] + b"".join(parts)
            steps[0] = steps[0][:2] + struct.pack(">L", len(body)) + body
        elif how == "swap":
            a, b = rng.randrange(len(steps)), rng.randrange(len(steps))
            steps[a], steps[b] = steps[b], steps[a]
        else:
            steps.reverse()
        item.note = how
    elif kind == "duplicate":
        item.steps = [*steps[: pick + 1], steps[pick], *steps[pick + 1 :]]
        item.note = f"step {pick} twice"
    elif kind == "garbage":
        size = rng.choice([1, 6, 100, 5000, 70000])
        item.steps = [*steps[:pick], rng.randbytes(size)]
        item.note = f"{size} random bytes after {pick} steps"
    elif kind == "drip":
        item.chunk = rng.choice([1, 2, 7])
        item.delay = rng.choice([0.0005, 0.002, 0.01])
        item.note = f"{item.chunk} byte(s) every {item.delay * 1000:.1f} ms"
    elif kind == "close":
        whole = b"".join(steps)
        item.steps = [whole[: rng.randrange(len(whole))]]
        item.note = f"close after {len(item.steps[0])} of {len(whole)} bytes"
    elif kind == "stall":
        whole = b"".join(steps)
        item.steps = [whole[: rng.randrange(len(whole))]]
        item.delay = rng.uniform(0.5, 3.0)
        item.note = f"stall {item.delay:.1f} s after {len(item.steps[0])} bytes"
    return item


# -- sending inputs -----------------------------------------------------------------------------


def _complete_pdus(data: bytes | bytearray) -> int:
    count, pos = 0, 0
    while pos + 6 <= len(data):
        length = struct.unpack_from(">L", data, pos + 2)[0]
        if pos + 6 + length > len(data):
            break
        pos += 6 + length
        count += 1
    return count


async def send_input(item: Input, port: int) -> str:
    """Send one input on a new connection; how the session ended (for the tallies)."""
    received = bytearray()
    closed_by_peer = False
    arrived = anyio.Event()
    with anyio.move_on_after(SESSION_SECONDS) as scope:
        try:
            stream = await anyio.connect_tcp(LOOPBACK, port)
        except OSError as exc:
            return f"connect failed: {type(exc).__name__}"
        async with stream:

            async def reader() -> None:
                nonlocal closed_by_peer, arrived
                try:
                    while True:
                        received.extend(await stream.receive(65536))
                        arrived, woken = anyio.Event(), arrived
                        woken.set()
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    closed_by_peer = True
                    arrived.set()

            async def wait_for_reply(seen: int, timeout: float) -> None:
                with anyio.move_on_after(timeout):
                    while _complete_pdus(received) <= seen and not closed_by_peer:
                        await arrived.wait()

            async with anyio.create_task_group() as tg:
                tg.start_soon(reader)
                try:
                    if item.kind == "drip":
                        whole = b"".join(item.steps)
                        for pos in range(0, len(whole), item.chunk):
                            await stream.send(whole[pos : pos + item.chunk])
                            await anyio.sleep(item.delay)
                    else:
                        for n, step in enumerate(item.steps):
                            seen = _complete_pdus(received)
                            await stream.send(step)
                            if n in item.waits:
                                await wait_for_reply(seen, 0.5)
                    if item.kind == "stall":
                        await anyio.sleep(item.delay)
                    elif item.kind not in ("truncate", "close"):
                        await wait_for_reply(_complete_pdus(received), 0.5)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                    pass
                tg.cancel_scope.cancel()
    if scope.cancelled_caught:
        return "cut off"
    return "closed by peer" if closed_by_peer else "closed by us"


# -- the servers ----------------------------------------------------------------------------------


def proc_rss_kb(pid: int) -> int:
    return proc_status(pid).get("VmRSS", 0)


def proc_fd_kinds(pid: int) -> dict[str, int]:
    """Open descriptors by kind (socket, pipe, anon_inode, or the file's name), to tell a
    leak of connections from a pool of files that grew."""
    kinds: collections.Counter[str] = collections.Counter()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return {}
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        kinds[target.split(":")[0] if ":" in target else Path(target).name] += 1
    return dict(kinds)


@dataclass
class ServerProcess:
    name: str
    argv: list[str]
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    recent: collections.deque[Input] = field(default_factory=lambda: collections.deque(maxlen=16))
    in_flight: dict[int, Input] = field(default_factory=dict)
    crashes: int = 0
    hangs: int = 0
    checks: int = 0
    max_echo: float = 0.0
    samples: list[dict[str, float]] = field(default_factory=list)

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dicomio", *self.argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}")
            with socket.socket() as sock:
                sock.settimeout(0.2)
                if sock.connect_ex((LOOPBACK, self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} is not listening on {self.port} after 30 s")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def sample(self, label: str, elapsed: float) -> dict[str, float]:
        values = {
            "label": label,  # type: ignore[dict-item]
            "t_s": round(elapsed, 1),
            "fds": open_descriptors(self.pid),
            "rss_kb": proc_rss_kb(self.pid),
            "fd_kinds": proc_fd_kinds(self.pid),  # type: ignore[dict-item]
        }
        self.samples.append(values)
        return values


# -- the soak ------------------------------------------------------------------------------------


@dataclass
class Tally:
    sent: int = 0
    by_kind: collections.Counter[str] = field(default_factory=collections.Counter)
    by_target: collections.Counter[str] = field(default_factory=collections.Counter)
    endings: collections.Counter[str] = field(default_factory=collections.Counter)
    failures: list[dict[str, Any]] = field(default_factory=list)


def save_failure(
    what: str, server: ServerProcess, seed: int, folder: Path, tally: Tally, elapsed: float
) -> None:
    """Save the inputs in flight and the last ones sent to ``server``, bytes and description
    (for the first 20 failures: a server that stays hung fails every check)."""
    folder.mkdir(parents=True, exist_ok=True)
    suspects = {i.index: i for i in [*server.recent, *server.in_flight.values()]}
    saved = []
    for index, item in sorted(suspects.items()) if len(tally.failures) < 20 else ():
        stem = folder / f"seed{seed}-input{index}"
        stem.with_suffix(".bin").write_bytes(b"".join(item.steps))
        stem.with_suffix(".json").write_text(json.dumps({"seed": seed, **item.describe()}))
        saved.append(index)
    record = {
        "what": what,
        "server": server.name,
        "t_s": round(elapsed, 1),
        "seed": seed,
        "in_flight": sorted(server.in_flight),
        "saved_inputs": saved,
    }
    tally.failures.append(record)
    print(f"  {what} of {server.name} at {elapsed:.0f} s: {json.dumps(record)}", flush=True)


async def control_echo(ae: AE, port: int) -> float | None:
    """Seconds for a C-ECHO on a fresh association, or None if none came within HANG_SECONDS."""
    started = time.monotonic()
    with anyio.move_on_after(HANG_SECONDS):
        try:
            async with ae.associate(LOOPBACK, port, ae_title="ANY") as assoc:
                status = await assoc.send_c_echo()
            if int(status.Status) == 0:
                return time.monotonic() - started
        except (DicomioError, OSError):
            pass
    return None


def _warmup_seconds(args: argparse.Namespace) -> float:
    """Fuzzing before the start sample: by default 5% of the run, 10 s to 60 s.

    ``--warmup-minutes`` sets it: the allocator's kept heap (``tune_allocator``'s 16 MiB
    top pad, per arena) fills over the first quarter hour of fuzzing, so a start sample
    taken before that counts the pad filling as growth.
    """
    if args.warmup_minutes is not None:
        return float(args.warmup_minutes) * 60
    return float(min(max(10.0, args.minutes * 60 * 0.05), 60.0))


async def soak(args: argparse.Namespace, servers: dict[str, ServerProcess]) -> Tally:
    tally = Tally()
    counter = itertools.count(args.start_index)
    started = time.monotonic()
    warmup = _warmup_seconds(args)
    deadline = started + warmup + args.minutes * 60
    phase = {"fuzzing": True, "stop": False}
    ae = _control_ae()
    # Held by the watchdog while it checks a server, and by the sampler while it waits and
    # reads: a control association open at that moment would count as a descriptor.
    checking = anyio.Lock()

    async def worker() -> None:
        while not phase["stop"]:
            if not phase["fuzzing"]:
                await anyio.sleep(0.05)
                continue
            index = next(counter)
            item = build_input(args.seed, index)
            server = servers[item.target]
            server.in_flight[index] = item
            try:
                ending = await send_input(item, server.port)
            finally:
                del server.in_flight[index]
                server.recent.append(item)
            tally.sent += 1
            tally.by_kind[item.kind] += 1
            tally.by_target[item.target] += 1
            tally.endings[ending] += 1

    async def watchdog() -> None:
        while not phase["stop"]:
            for server in servers.values():
                elapsed = time.monotonic() - started
                if not server.alive():
                    code = server.proc.returncode if server.proc is not None else None
                    server.crashes += 1
                    save_failure(
                        f"crash (exit {code})", server, args.seed, args.failures, tally, elapsed
                    )
                    await anyio.to_thread.run_sync(server.start)
                    continue
                async with checking:
                    took = await control_echo(ae, server.port)
                server.checks += 1
                if took is None:
                    server.hangs += 1
                    save_failure("hang", server, args.seed, args.failures, tally, elapsed)
                else:
                    server.max_echo = max(server.max_echo, took)
            await anyio.sleep(0.5)

    async def quiesce_and_sample(label: str) -> None:
        # No new inputs; wait for the sessions in flight to end (each is bounded by
        # SESSION_SECONDS), then give the servers QUIESCE_SECONDS to close their side.
        phase["fuzzing"] = False
        with anyio.move_on_after(SESSION_SECONDS + 2):
            while any(server.in_flight for server in servers.values()):
                await anyio.sleep(0.1)
        async with checking:
            await anyio.sleep(QUIESCE_SECONDS)
            for server in servers.values():
                if server.alive():
                    values = server.sample(label, time.monotonic() - started)
                    print(f"  {server.name} {label}: {values}", flush=True)
        phase["fuzzing"] = True

    async def conductor() -> None:
        await anyio.sleep(warmup)
        await quiesce_and_sample("start")
        next_report = time.monotonic() + 60
        while time.monotonic() < deadline:
            await anyio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            if time.monotonic() >= next_report:
                next_report += 60
                elapsed = time.monotonic() - started
                print(
                    f"  {elapsed:.0f} s: {tally.sent} inputs, "
                    + ", ".join(
                        f"{s.name} crashes {s.crashes} hangs {s.hangs}"
                        f" fds {open_descriptors(s.pid) if s.alive() else '-'}"
                        f" rss {proc_rss_kb(s.pid) // 1024 if s.alive() else '-'} MiB"
                        for s in servers.values()
                    ),
                    flush=True,
                )
        await quiesce_and_sample("end")
        phase["stop"] = True

    async with anyio.create_task_group() as tg:
        for _ in range(args.connections):
            tg.start_soon(worker)
        tg.start_soon(watchdog)
        tg.start_soon(conductor)
    return tally


# -- report ---------------------------------------------------------------------------------------


def _change(start: float, end: float) -> float:
    return (end - start) / start if start else 0.0


def verdicts(servers: dict[str, ServerProcess]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for server in servers.values():
        marks = {s["label"]: s for s in server.samples}
        start, end = marks.get("start"), marks.get("end")  # type: ignore[call-overload]
        entry: dict[str, Any] = {
            "crashes": server.crashes,
            "hangs": server.hangs,
            "control_echoes": server.checks,
            "max_control_echo_s": round(server.max_echo, 3),
            "start": start,
            "end": end,
        }
        if start and end:
            entry["fds_change"] = round(_change(start["fds"], end["fds"]), 4)
            entry["rss_change"] = round(_change(start["rss_kb"], end["rss_kb"]), 4)
            entry["flat"] = abs(entry["fds_change"]) <= FLAT and abs(entry["rss_change"]) <= FLAT
        else:
            entry["flat"] = False
        out[server.name] = entry
    return out


def write_report(
    directory: Path, meta: dict[str, Any], tally: Tally, result: dict[str, dict[str, Any]]
) -> Path:
    data = {
        **meta,
        "inputs_sent": tally.sent,
        "by_kind": dict(sorted(tally.by_kind.items())),
        "by_target": dict(tally.by_target),
        "endings": dict(tally.endings),
        "servers": result,
        "failures": tally.failures,
    }
    (directory / "results-soak.json").write_text(json.dumps(data, indent=2) + "\n")
    lines = [
        "# Fuzz soak of `dicomio qrscp` and `dicomio storescp` (issue #13, acceptance 3)",
        "",
        f"Command: `{meta['command']}`  ",
        f"Date: {meta['date']}; seed {meta['seed']}; {meta['connections']} concurrent fuzz"
        f" connections; {meta['minutes']} min after a {meta['warmup_s']:.0f} s warm-up;"
        f" ran {meta['runtime_s']:.0f} s; load average {meta['load_start']:.2f} at start,"
        f" {meta['load_end']:.2f} at end.",
        "",
        f"Inputs sent: **{tally.sent}** ("
        + ", ".join(f"{k} {v}" for k, v in sorted(tally.by_kind.items()))
        + "); to "
        + ", ".join(f"{k} {v}" for k, v in sorted(tally.by_target.items()))
        + ". Session endings: "
        + ", ".join(f"{k} {v}" for k, v in sorted(tally.endings.items()))
        + ".",
        "",
        "| server | crashes | hangs (no C-ECHO in 2 s) | control C-ECHOs | slowest | fds start → end"
        " | VmRSS start → end | flat within 5% |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in result.items():
        start, end = entry["start"] or {}, entry["end"] or {}
        fds = f"{start.get('fds', '-')} → {end.get('fds', '-')}"
        if "fds_change" in entry:
            fds += f" ({entry['fds_change']:+.1%})"
        rss = f"{start.get('rss_kb', 0) / 1024:.1f} → {end.get('rss_kb', 0) / 1024:.1f} MiB"
        if "rss_change" in entry:
            rss += f" ({entry['rss_change']:+.1%})"
        lines.append(
            f"| {name} | {entry['crashes']} | {entry['hangs']} | {entry['control_echoes']} |"
            f" {entry['max_control_echo_s']:.3f} s | {fds} | {rss} |"
            f" {'yes' if entry['flat'] else '**no**'} |"
        )
    for name, entry in result.items():
        before = (entry["start"] or {}).get("fd_kinds", {})
        after = (entry["end"] or {}).get("fd_kinds", {})
        moved = [
            f"{kind} {before.get(kind, 0)} → {after.get(kind, 0)}"
            for kind in sorted({*before, *after})
            if before.get(kind, 0) != after.get(kind, 0)
        ]
        if moved:
            lines += ["", f"{name}: descriptors that changed: {', '.join(moved)}."]
        if entry["crashes"]:
            lines += [
                "",
                f"{name} was restarted after each crash: its end figures are of a"
                " later process than its start figures.",
            ]
    lines += [
        "",
        "Descriptors and RSS are read after the fuzz connections were closed for"
        f" {QUIESCE_SECONDS:.0f} s, once after the warm-up and once at the end.",
    ]
    if tally.failures:
        lines += ["", "## Crashes and hangs", ""]
        lines += [f"- {json.dumps(f)}" for f in tally.failures]
        lines += [
            "",
            f"Inputs saved under `{meta['failures']}`; replay one with"
            f" `python -m benchmarks.soak --seed {meta['seed']} --replay INDEX`.",
        ]
    path = directory / "RESULTS-soak.md"
    path.write_text("\n".join(lines) + "\n")
    return path


# -- main -----------------------------------------------------------------------------------------


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="fuzzing time after warm-up")
    parser.add_argument(
        "--warmup-minutes",
        type=float,
        default=None,
        help="fuzzing before the start sample (default: 5%% of --minutes, 10-60 s)",
    )
    parser.add_argument("--seed", type=int, default=1, help="the fuzzer's seed (default 1)")
    parser.add_argument("--connections", type=int, default=6, help="concurrent fuzz sessions")
    parser.add_argument("--start-index", type=int, default=0, help="first input index")
    parser.add_argument("--replay", type=int, metavar="INDEX", help="send input INDEX once")
    parser.add_argument("--output-dir", type=Path, default=HERE, help="where the report goes")
    parser.add_argument(
        "--failures",
        type=Path,
        default=HERE / "soak-failures",
        help="where inputs of crashes and hangs are saved",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder and logs")
    return parser.parse_args(argv)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    signal.signal(signal.SIGTERM, _terminate)
    scratch = Path(tempfile.mkdtemp(prefix="dicomio-soak-"))
    timeouts = ["-ta", "10", "-td", "10"]
    qr_port, store_port = free_port(), free_port()
    servers = {
        "qrscp": ServerProcess(
            "qrscp",
            ["qrscp", str(qr_port), "--bind", LOOPBACK, "--data", str(scratch / "qr"), *timeouts],
            qr_port,
            scratch / "qrscp.log",
        ),
        "storescp": ServerProcess(
            "storescp",
            [
                "storescp",
                str(store_port),
                "--bind",
                LOOPBACK,
                "-od",
                str(scratch / "store"),
                *timeouts,
            ],
            store_port,
            scratch / "storescp.log",
        ),
    }
    status = 2
    began = time.monotonic()
    load_start = os.getloadavg()[0]
    try:
        for server in servers.values():
            server.start()
        if args.replay is not None:
            item = build_input(args.seed, args.replay)
            print(json.dumps(item.describe())[:2000])
            server = servers[item.target]
            ending = anyio.run(send_input, item, server.port)
            alive = server.alive()
            took = anyio.run(control_echo, _control_ae(), server.port) if alive else None
            print(f"input {args.replay}: {ending}; {server.name} alive {alive}, C-ECHO {took}")
            status = 0 if alive and took is not None else 1
            return status
        print(
            f"soak: seed {args.seed}, {args.connections} connections, {args.minutes} min;"
            f" qrscp :{qr_port}, storescp :{store_port}; scratch {scratch}",
            flush=True,
        )
        tally = anyio.run(soak, args, servers)
        result = verdicts(servers)
        meta = {
            "command": "python -m benchmarks.soak "
            + " ".join(sys.argv[1:] if argv is None else argv),
            "date": time.strftime("%Y-%m-%d %H:%M %Z"),
            "seed": args.seed,
            "minutes": args.minutes,
            "connections": args.connections,
            "warmup_s": _warmup_seconds(args),
            "runtime_s": time.monotonic() - began,
            "load_start": load_start,
            "load_end": os.getloadavg()[0],
            "failures": str(args.failures),
        }
        args.output_dir.mkdir(parents=True, exist_ok=True)
        written = write_report(args.output_dir, meta, tally, result)
        print(f"wrote {written}: {tally.sent} inputs")
        for name, entry in result.items():
            print(f"  {name}: {json.dumps(entry)}")
        ok = all(e["crashes"] == 0 and e["hangs"] == 0 and e["flat"] for e in result.values())
        status = 0 if ok else 1
    except KeyboardInterrupt:
        print("interrupted: stopping the servers", file=sys.stderr)
        status = 2
    except Exception:
        traceback.print_exc()
        status = 2
    finally:
        for server in servers.values():
            server.stop()
        if args.keep or status:
            print(f"scratch folder and logs kept in {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return status


def _control_ae() -> AE:
    ae = AE("SOAKCTRL")
    ae.add_requested_context(VERIFICATION)
    return ae


if __name__ == "__main__":
    sys.exit(main())
