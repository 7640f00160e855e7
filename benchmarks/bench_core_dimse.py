"""Fragmentation + reassembly of a 512 KB C-STORE-RQ through the wire: dicomio against pynetdicom.

One message (C-STORE-RQ command set + a 512 KB data set) is cut into P-DATA-TF PDUs for a
peer whose maximum PDU length is 16 KB, then 1 MB (PS3.8 D.1, E.1), encoded to wire bytes,
delivered as a socket would deliver them, framed and decoded back into PDUs, and put back
together into a command and one data set, all in this process:

- dicomio: ``encode_command`` -> ``fragment_parts`` (the wire bytes: headers and views of the
  data set) -> socket reads -> ``PDUReader.next_pdu_or_run`` -> ``MessageAssembler.receive``:
  the reader hands consecutive data set fragments over as one ``DataRun``, as it does for
  an association (``ULConnection(data_runs=True)``).
- dicomio (PDU values): the same, but the sender goes ``fragment`` -> ``encode_parts`` for
  each ``PDataTF``, the path ``ULConnection.send_pdata`` takes.
- dicomio (via UL): the receiving side an association runs: each read goes to
  ``ULConnection.receive_data`` (an acceptor in Sta6, ``data_runs=True``), whose events go to
  ``MessageAssembler.receive``. This adds the PS3.8 state machine to the first figure.
- pynetdicom: ``C_STORE`` primitive -> ``C_STORE_RQ.primitive_to_message`` ->
  ``encode_msg`` -> ``P_DATA_TF.from_primitive(...).encode()`` -> socket reads -> one
  ``bytes`` per PDU (pynetdicom reads each PDU from its socket into one buffer) ->
  ``P_DATA_TF.decode`` -> ``to_primitive`` -> ``DIMSEMessage.decode_msg``.

- floor (no checks): dicomio's sender, and a receiver that is one loop over the reads with
  one ``unpack_from`` per PDU, trusting every byte (``_floor``). Not a design anyone should
  ship: it shows what per-PDU Python costs before the checks and layers that make a receiver
  safe, so that "dicomio" can be read against it as well as against a copy.

"Socket reads" stand in for the kernel: every encoded byte is copied once into reads of
``READ_SIZE`` bytes, what dicomio's transport asks for (asyncio's own default is the same
256 KiB). That copy is part of all three figures and is also timed on its own ("socket
copy"), so that what each library adds on top of it can be seen.

Baselines for the same 512 KB:

- bytes copy: ``bytes(bytearray(data))``, two plain copies, the baseline the targets are
  stated against.
- memcpy: ``bytes(memoryview(data))``, one copy into a reused allocation: the true floor
  for any implementation that hands the receiver its own ``bytes``. A round trip through
  the wire copies at least twice (into the socket reads, then out into the data set), so
  it cannot get below about 2x memcpy.

Every scenario is measured twice, because glibc's allocator can dominate the figures:

- default heap: in this process, as it is. A round trip allocates and frees about 1 MB
  of large buffers; when freeing them lets glibc shrink the heap (its trim and mmap
  thresholds adapt as it runs), the next round trip page-faults all of it in again, which
  costs more than everything else together (bytes copy: about 430 us instead of 15 us).
  Whether that happens depends on the order of allocations, so it hits some rows and not
  others, and may change from run to run.
- warm heap: in a child process started with fixed thresholds (``WARM_HEAP_ENV``), so that
  freed memory stays in the heap and every figure is the work of the code itself.

The "faults" column gives the minor page faults per round trip, which shows which rows the
allocator hit: a 4 KiB page costs about 2 us to fault in on the virtual machines these
figures come from.

Each figure is the median of several timeit repeats.

    python benchmarks/bench_core_dimse.py [--quick]
"""

from __future__ import annotations

import json
import os
import random
import resource
import statistics
import struct
import subprocess
import sys
import timeit
from collections import deque
from collections.abc import Callable, Iterable
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom.uid import UID

from dicomio.dimse import (
    CStoreRQ,
    MessageAssembler,
    MessageReceived,
    decode_command,
    encode_command,
    fragment,
    fragment_parts,
)
from dicomio.pdu import AssociateAC, AssociateRQ, DataRun, PDataTF, PDUReader, encode, encode_parts
from dicomio.ul import Role, State, ULConnection

DATA_SIZE = 512 * 1024
MAX_PDU_LENGTHS = {"16 KB": 16 * 1024, "1 MB": 1024 * 1024}
#: Bytes per socket read: dicomio.association.READ_SIZE, and asyncio's default.
READ_SIZE = 256 * 1024
#: glibc settings that keep freed memory in the heap (fixed thresholds, no trimming).
WARM_HEAP_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(256 << 20)}
DEFAULT_HEAP = "default heap"
WARM_HEAP = "warm heap"
# UID values, as both libraries' C-STORE SCUs take them from the data set or file meta
# information (pydicom reads UI elements as UID).
SOP_CLASS = UID("1.2.840.10008.5.1.4.1.1.2")
SOP_INSTANCE = UID("1.2.826.0.1.3680043.8.498.12345678901234567890")


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _measure(func: Callable[[], object], repeat: int, number: int) -> dict[str, float]:
    func()  # warm up
    faults = _minor_faults()
    times = [t / number for t in timeit.repeat(func, repeat=repeat, number=number)]
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        # Page faults per call: what tells an allocator effect from the code's own work.
        "faults": (_minor_faults() - faults) / (repeat * number),
    }


def socket_reads(writes: Iterable[bytes | memoryview], read_size: int = READ_SIZE) -> list[bytes]:
    """What a receiver reads for these writes: full reads of ``read_size`` bytes, then the rest.

    Each byte is copied exactly once, as the kernel copies it from the sender's buffers into
    the receiver's; only a write cut by a read boundary is sliced (without a copy) to do so.
    """
    reads: list[bytes] = []
    pending: list[bytes | memoryview] = []
    pending_size = 0
    for write in writes:
        size = len(write)
        if pending_size + size < read_size:
            pending.append(write)
            pending_size += size
            continue
        view = memoryview(write)
        while pending_size + len(view) >= read_size:
            cut = read_size - pending_size
            pending.append(view[:cut])
            reads.append(b"".join(pending))
            pending = []
            pending_size = 0
            view = view[cut:]
        if view:
            pending.append(view)
            pending_size = len(view)
    if pending_size:
        reads.append(b"".join(pending))
    return reads


def _command() -> bytes:
    return encode_command(
        CStoreRQ(
            message_id=1, affected_sop_class_uid=SOP_CLASS, affected_sop_instance_uid=SOP_INSTANCE
        )
    )


def _receive(reads: list[bytes], max_pdu: int) -> bytes:
    """dicomio's receiving side: frame and decode the reads, reassemble the message."""
    reader = PDUReader(max_pdu)
    assembler = MessageAssembler()
    events = []
    for chunk in reads:
        reader.feed(chunk)
        while (pdu := reader.next_pdu_or_run()) is not None:
            events += assembler.receive(pdu)  # type: ignore[arg-type]
    (event,) = events
    assert isinstance(event, MessageReceived) and event.dataset is not None
    return event.dataset


def _dicomio(data: bytes, max_pdu: int) -> Callable[[], bytes]:
    def round_trip() -> bytes:
        writes = fragment_parts(1, _command(), data, max_pdu)
        return _receive(socket_reads(writes), max_pdu)

    return round_trip


def _established_acceptor(max_pdu: int) -> ULConnection:
    """An acceptor's Upper Layer in Sta6 (data transfer), as an association holds it."""
    ul = ULConnection(Role.ACCEPTOR, max_pdu_length=max_pdu, data_runs=True)
    ul.connection_made(now=0.0)
    ul.receive_data(encode(AssociateRQ(called_ae_title="SCP", calling_ae_title="SCU")), now=0.0)
    ul.send_associate_ac(AssociateAC(called_ae_title="SCP", calling_ae_title="SCU"), now=0.0)
    ul.data_to_send()
    assert ul.state is State.STA6
    return ul


def _dicomio_ul(data: bytes, max_pdu: int) -> Callable[[], bytes]:
    ul = _established_acceptor(max_pdu)
    assembler = MessageAssembler()

    def round_trip() -> bytes:
        writes = fragment_parts(1, _command(), data, max_pdu)
        messages = []
        for chunk in socket_reads(writes):
            for event in ul.receive_data(chunk, now=0.0):
                assert isinstance(event, (PDataTF, DataRun))
                messages += assembler.receive(event)
        (message,) = messages
        assert isinstance(message, MessageReceived) and message.dataset is not None
        return message.dataset

    return round_trip


def _dicomio_values(data: bytes, max_pdu: int) -> Callable[[], bytes]:
    def round_trip() -> bytes:
        writes: list[bytes | memoryview] = []
        for pdu in fragment(1, _command(), data, max_pdu):
            writes += encode_parts(pdu)
        return _receive(socket_reads(writes), max_pdu)

    return round_trip


#: PDU header and first PDV header (PS3.8 9.3.5): type, length, PDV length, context, control.
_PDATA_HEADERS = struct.Struct(">BxLLBB")


def _floor(data: bytes, max_pdu: int) -> Callable[[], bytes]:
    """The least a pure-Python receiver does: one loop over the reads, no checks, no layers.

    The sender is dicomio's. The receiver reads each PDU header with one ``unpack_from``,
    decodes the command, keeps a view of each data set fragment (the one PDU cut by each read
    boundary is joined, as any receiver must) and joins the fragments at the end. It trusts
    every byte: no PDU type, length, context or flag is checked, there is no state machine
    and no event. Nothing should ship like this; the row shows what per-PDU Python costs
    before any of the work that makes a receiver safe, so that the gap between it and
    "dicomio" is what the checks and the layers cost.
    """
    unpack = _PDATA_HEADERS.unpack_from

    def round_trip() -> bytes:
        fragments: list[bytes | memoryview] = []
        carry: list[memoryview] = []  # the parts so far of a PDU cut by read boundaries
        carried = 0
        for raw in socket_reads(fragment_parts(1, _command(), data, max_pdu)):
            view = memoryview(raw)
            position = 0
            end = len(raw)
            if carry:
                first = carry[0]
                head = first[:6] if len(first) >= 6 else b"".join([*carry, view[:6]])
                take = 6 + int.from_bytes(head[2:6], "big") - carried
                if take > end:
                    carry.append(view)
                    carried += end
                    continue
                pdu = memoryview(b"".join([*carry, view[:take]]))
                (decode_command if pdu[11] & 1 else fragments.append)(pdu[12:])
                position = take
            while end - position >= 12:
                _, length, _, _, control = unpack(raw, position)
                stop = position + 6 + length
                if stop > end:
                    break
                if control & 1:
                    decode_command(view[position + 12 : stop])
                else:
                    fragments.append(view[position + 12 : stop])
                position = stop
            carry = [view[position:]] if position < end else []
            carried = end - position
        return b"".join(fragments)

    return round_trip


def _socket_copy(data: bytes, max_pdu: int) -> Callable[[], list[bytes]]:
    writes = fragment_parts(1, _command(), data, max_pdu)
    return lambda: socket_reads(writes)


def _pdu_frames(reads: Iterable[bytes]) -> Iterable[bytes]:
    """One ``bytes`` per PDU, each byte copied once, as pynetdicom's DUL reads them."""
    pieces: deque[memoryview] = deque()
    buffered = 0
    for chunk in reads:
        pieces.append(memoryview(chunk))
        buffered += len(chunk)
        while buffered >= 6:
            header = b"".join(pieces)[:6] if len(pieces[0]) < 6 else pieces[0][:6]
            need = 6 + struct.unpack_from(">L", header, 2)[0]
            if need > buffered:
                break
            buffered -= need
            frame: list[memoryview] = []
            while need:
                piece = pieces.popleft()
                if len(piece) > need:
                    pieces.appendleft(piece[need:])
                    piece = piece[:need]
                frame.append(piece)
                need -= len(piece)
            yield b"".join(frame)


def _pynetdicom(data: bytes, max_pdu: int) -> Callable[[], bytes] | None:
    try:
        from pynetdicom.dimse_messages import C_STORE_RQ, DIMSEMessage
        from pynetdicom.dimse_primitives import C_STORE
        from pynetdicom.pdu import P_DATA_TF
    except ImportError:
        return None

    def round_trip() -> bytes:
        primitive = C_STORE()
        primitive.MessageID = 1
        primitive.AffectedSOPClassUID = SOP_CLASS
        primitive.AffectedSOPInstanceUID = SOP_INSTANCE
        primitive.Priority = 0
        primitive.DataSet = BytesIO(data)
        message = C_STORE_RQ()
        message.primitive_to_message(primitive)
        writes = []
        for pdata in message.encode_msg(1, max_pdu):
            pdu = P_DATA_TF()
            pdu.from_primitive(pdata)
            writes.append(pdu.encode())
        received = DIMSEMessage()
        done = False
        for frame in _pdu_frames(socket_reads(writes)):
            pdu = P_DATA_TF()
            pdu.decode(frame)
            done = received.decode_msg(pdu.to_primitive())
        assert done and received.data_set is not None
        return bytes(received.data_set.getvalue())

    return round_trip


def measure(quick: bool, heap: str) -> list[dict[str, Any]]:
    """Time each implementation in this process; rows {scenario, impl, median_s, min_s, max_s}."""
    repeat, number = (5, 5) if quick else (11, 40)
    data = random.Random(512).randbytes(DATA_SIZE)
    rows: list[dict[str, Any]] = []
    for label, max_pdu in MAX_PDU_LENGTHS.items():
        scenario = f"C-STORE-RQ 512 KB at {label} max PDU: fragment+wire+reassemble, {heap}"

        def add(
            impl: str, func: Callable[[], object], number: int = number, scenario: str = scenario
        ) -> None:
            rows.append({"scenario": scenario, "impl": impl, **_measure(func, repeat, number)})

        ours = _dicomio(data, max_pdu)
        assert ours() == data
        add("dicomio", ours)
        values = _dicomio_values(data, max_pdu)
        assert values() == data
        add("dicomio (PDU values)", values)
        via_ul = _dicomio_ul(data, max_pdu)
        assert via_ul() == data
        add("dicomio (via UL)", via_ul)
        theirs = _pynetdicom(data, max_pdu)
        if theirs is not None:
            assert theirs() == data
            add("pynetdicom", theirs, max(1, number // 4))
        floor = _floor(data, max_pdu)
        assert floor() == data
        add("floor (no checks)", floor)
        add("socket copy", _socket_copy(data, max_pdu))
        add("bytes copy", lambda: bytes(bytearray(data)))
        add("memcpy", lambda: bytes(memoryview(data)))
    return rows


def run(quick: bool) -> list[dict[str, Any]]:
    """Both heap regimes: this process as it is, then a child process with a warm heap."""
    rows = measure(quick, DEFAULT_HEAP)
    command = [sys.executable, "-m", "benchmarks.bench_core_dimse", "--warm-heap-rows"]
    child = subprocess.run(
        [*command, *(["--quick"] if quick else [])],
        env={**os.environ, **WARM_HEAP_ENV},
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    rows += json.loads(child.stdout)
    return rows


def main() -> None:
    quick = "--quick" in sys.argv[1:]
    if "--warm-heap-rows" in sys.argv[1:]:
        print(json.dumps(measure(quick, WARM_HEAP)))
        return
    rows = run(quick)
    by_scenario: dict[str, dict[str, float]] = {}
    for row in rows:
        by_scenario.setdefault(row["scenario"], {})[row["impl"]] = row["median_s"]
    for scenario, medians in by_scenario.items():
        print(scenario)
        print(f"  {'impl':<22}{'median':>12}{'min':>12}{'max':>12}{'faults':>9}")
        for row in rows:
            if row["scenario"] == scenario:
                print(
                    f"  {row['impl']:<22}{row['median_s'] * 1e6:>10.1f}us"
                    f"{row['min_s'] * 1e6:>10.1f}us{row['max_s'] * 1e6:>10.1f}us"
                    f"{row['faults']:>9.0f}"
                )
        ours = medians["dicomio"]
        if "pynetdicom" in medians:
            print(f"  pynetdicom / dicomio = {medians['pynetdicom'] / ours:.1f}x (target >= 5x)")
        print(f"  dicomio / bytes copy = {ours / medians['bytes copy']:.2f}x (target <= 3x)")
        floor = medians["floor (no checks)"]
        print(f"  floor (no checks) / bytes copy = {floor / medians['bytes copy']:.2f}x")
        print(f"  dicomio / memcpy = {ours / medians['memcpy']:.1f}x")
        beyond = (ours - medians["socket copy"]) / medians["memcpy"]
        print(f"  (dicomio - socket copy) / memcpy = {beyond:.1f}x")


if __name__ == "__main__":
    main()
