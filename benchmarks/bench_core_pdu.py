"""Encode + decode of a large A-ASSOCIATE-RQ (PS3.8 9.3.2): dicomio against pynetdicom.

The request proposes 120 presentation contexts with 3 transfer syntaxes each, plus typical
user information (maximum length, implementation class UID and version name, asynchronous
operations window, a few SCP/SCU role selections). Both libraries run in this process on
the same PDU; each figure is the median of several timeit repeats.

    python benchmarks/bench_core_pdu.py [--quick]
"""

from __future__ import annotations

import statistics
import sys
import timeit
from collections.abc import Callable
from typing import Any

from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
)

from dicomio.pdu import (
    AssociateRQ,
    AsynchronousOperationsWindow,
    ImplementationClassUID,
    ImplementationVersionName,
    MaximumLength,
    PresentationContextRQ,
    RoleSelection,
    UserInformationSubItem,
    decode,
    encode,
)

SCENARIO = "A-ASSOCIATE-RQ 120 contexts x 3 TS: encode+decode"


def build_request() -> AssociateRQ:
    transfer_syntaxes = [ImplicitVRLittleEndian, ExplicitVRLittleEndian, JPEG2000Lossless]
    contexts = [
        PresentationContextRQ(
            context_id=2 * index + 1,
            abstract_syntax=f"1.2.840.10008.5.1.4.1.1.{index + 1}",
            transfer_syntaxes=transfer_syntaxes,
        )
        for index in range(120)
    ]
    user_information: list[UserInformationSubItem] = [
        MaximumLength(maximum_length=16382),
        ImplementationClassUID(implementation_class_uid="1.2.826.0.1.3680043.9.3811.3.0.0"),
        ImplementationVersionName(implementation_version_name="DICOMIO_010"),
        AsynchronousOperationsWindow(
            maximum_number_operations_invoked=4, maximum_number_operations_performed=4
        ),
        *(
            RoleSelection(
                sop_class_uid=f"1.2.840.10008.5.1.4.1.1.{index + 1}", scu_role=True, scp_role=True
            )
            for index in range(4)
        ),
    ]
    return AssociateRQ(
        called_ae_title="ANY-SCP",
        calling_ae_title="DICOMIO",
        presentation_contexts=contexts,
        user_information=user_information,
    )


def _measure(func: Callable[[], Any], repeat: int, number: int) -> dict[str, float]:
    func()  # warm up caches and imports
    times = [t / number for t in timeit.repeat(func, repeat=repeat, number=number)]
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
    }


def run(quick: bool) -> list[dict[str, Any]]:
    """Time both implementations; return rows {scenario, impl, median_s, min_s, max_s}."""
    repeat, number = (5, 20) if quick else (9, 100)
    request = build_request()
    wire = encode(request)
    assert decode(wire) == request

    def dicomio_round_trip() -> None:
        decode(encode(request))

    rows = [
        {"scenario": SCENARIO, "impl": "dicomio", **_measure(dicomio_round_trip, repeat, number)}
    ]

    try:
        from pynetdicom.pdu import A_ASSOCIATE_RQ
    except ImportError:
        return rows
    # The same PDU as a pynetdicom object, built by its own decoder from identical bytes.
    theirs = A_ASSOCIATE_RQ()
    theirs.decode(wire)
    assert theirs.encode() == wire

    def pynetdicom_round_trip() -> None:
        A_ASSOCIATE_RQ().decode(theirs.encode())

    pynetdicom_number = max(1, number // 10)
    rows.append(
        {
            "scenario": SCENARIO,
            "impl": "pynetdicom",
            **_measure(pynetdicom_round_trip, repeat, pynetdicom_number),
        }
    )
    return rows


def main() -> None:
    rows = run(quick="--quick" in sys.argv[1:])
    print(f"{SCENARIO}, {len(encode(build_request()))} bytes")
    print(f"{'impl':<12}{'median':>12}{'min':>12}{'max':>12}")
    for row in rows:
        print(
            f"{row['impl']:<12}{row['median_s'] * 1e3:>10.3f}ms"
            f"{row['min_s'] * 1e3:>10.3f}ms{row['max_s'] * 1e3:>10.3f}ms"
        )
    if len(rows) == 2:
        print(f"pynetdicom / dicomio = {rows[1]['median_s'] / rows[0]['median_s']:.1f}x")


if __name__ == "__main__":
    main()
