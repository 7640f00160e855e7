"""Fragmentation + reassembly of a 512 KB C-STORE-RQ: dicomio against pynetdicom.

One message (C-STORE-RQ command set + a 512 KB data set) is cut into P-DATA-TF PDUs for a
peer whose maximum PDU length is 16 KB, then 1 MB (PS3.8 D.1, E.1), and put back together
into a command and one data set, all in this process:

- dicomio: ``encode_command`` -> ``fragment`` -> ``pdu.codec.encode_parts`` for each PDU
  (the wire encoding, when that module is present) -> ``MessageAssembler.receive``.
- pynetdicom: ``C_STORE`` primitive -> ``C_STORE_RQ.primitive_to_message`` ->
  ``encode_msg`` -> ``P_DATA_TF.from_primitive(...).encode()`` (likewise, when dicomio's
  codec is measured) -> ``DIMSEMessage.decode_msg``.
- bytes copy: ``bytes(bytearray(data))``, two plain copies of the data set, the baseline
  the targets are stated against. Beware: most of its time is not copying but the
  allocator; each 512 KB buffer is a fresh mmap whose pages fault in, and freeing the
  bytearray while the bytes live defeats glibc's reuse of the mapping.
- memcpy: ``bytes(memoryview(data))``, one copy into a reused allocation: the true floor
  for any implementation that hands the receiver its own ``bytes``.

Each figure is the median of several timeit repeats.

    python benchmarks/bench_core_dimse.py [--quick]
"""

from __future__ import annotations

import importlib.util
import random
import statistics
import sys
import timeit
from collections.abc import Callable
from io import BytesIO
from typing import Any

from dicomio.dimse import CStoreRQ, MessageAssembler, MessageReceived, encode_command, fragment

DATA_SIZE = 512 * 1024
MAX_PDU_LENGTHS = {"16 KB": 16 * 1024, "1 MB": 1024 * 1024}
SOP_CLASS = "1.2.840.10008.5.1.4.1.1.2"
SOP_INSTANCE = "1.2.826.0.1.3680043.8.498.12345678901234567890"

# PDU wire encoding is part of the dicomio measurement only if the L0 codec offers it.
HAVE_CODEC = importlib.util.find_spec("dicomio.pdu.codec") is not None
if HAVE_CODEC:
    from dicomio.pdu import codec

    HAVE_CODEC = hasattr(codec, "encode_parts")


def _measure(func: Callable[[], object], repeat: int, number: int) -> dict[str, float]:
    times = [t / number for t in timeit.repeat(func, repeat=repeat, number=number)]
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}


def _dicomio(data: bytes, max_pdu: int) -> Callable[[], bytes]:
    def round_trip() -> bytes:
        message = CStoreRQ(
            message_id=1, affected_sop_class_uid=SOP_CLASS, affected_sop_instance_uid=SOP_INSTANCE
        )
        assembler = MessageAssembler()
        events = []
        for pdu in fragment(1, encode_command(message), data, max_pdu):
            if HAVE_CODEC:
                codec.encode_parts(pdu)
            events.extend(assembler.receive(pdu))
        (event,) = events
        assert isinstance(event, MessageReceived) and event.dataset is not None
        return event.dataset

    return round_trip


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
        received = DIMSEMessage()
        done = False
        for pdata in message.encode_msg(1, max_pdu):
            if HAVE_CODEC:
                pdu = P_DATA_TF()
                pdu.from_primitive(pdata)
                pdu.encode()
            done = received.decode_msg(pdata)
        assert done and received.data_set is not None
        return bytes(received.data_set.getvalue())

    return round_trip


def run(quick: bool) -> list[dict[str, Any]]:
    """Time each implementation; return rows {scenario, impl, median_s, min_s, max_s}."""
    repeat, number = (5, 5) if quick else (9, 40)
    data = random.Random(512).randbytes(DATA_SIZE)
    rows: list[dict[str, Any]] = []
    for label, max_pdu in MAX_PDU_LENGTHS.items():
        scenario = f"C-STORE-RQ 512 KB at {label} max PDU: fragment+reassemble"
        ours = _dicomio(data, max_pdu)
        assert ours() == data
        rows.append({"scenario": scenario, "impl": "dicomio", **_measure(ours, repeat, number)})
        theirs = _pynetdicom(data, max_pdu)
        if theirs is not None:
            assert theirs() == data
            rows.append(
                {
                    "scenario": scenario,
                    "impl": "pynetdicom",
                    **_measure(theirs, repeat, max(1, number // 4)),
                }
            )
        rows.append(
            {
                "scenario": scenario,
                "impl": "bytes copy",
                **_measure(lambda: bytes(bytearray(data)), repeat, number),
            }
        )
        rows.append(
            {
                "scenario": scenario,
                "impl": "memcpy",
                **_measure(lambda: bytes(memoryview(data)), repeat, number),
            }
        )
    return rows


def main() -> None:
    rows = run(quick="--quick" in sys.argv[1:])
    wire = "including P-DATA-TF encoding" if HAVE_CODEC else "without P-DATA-TF encoding"
    print(f"dicomio measured {wire}")
    by_scenario: dict[str, dict[str, float]] = {}
    for row in rows:
        by_scenario.setdefault(row["scenario"], {})[row["impl"]] = row["median_s"]
    for scenario, medians in by_scenario.items():
        print(scenario)
        print(f"  {'impl':<12}{'median':>12}{'min':>12}{'max':>12}")
        for row in rows:
            if row["scenario"] == scenario:
                print(
                    f"  {row['impl']:<12}{row['median_s'] * 1e6:>10.1f}us"
                    f"{row['min_s'] * 1e6:>10.1f}us{row['max_s'] * 1e6:>10.1f}us"
                )
        ours = medians["dicomio"]
        if "pynetdicom" in medians:
            print(f"  pynetdicom / dicomio = {medians['pynetdicom'] / ours:.1f}x (target >= 5x)")
        print(f"  dicomio / bytes copy = {ours / medians['bytes copy']:.2f}x (target <= 3x)")
        print(f"  dicomio / memcpy = {ours / medians['memcpy']:.1f}x")


if __name__ == "__main__":
    main()
