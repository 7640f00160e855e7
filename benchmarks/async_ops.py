"""S7: asynchronous operations (PS3.7 D.3.3.3) on one association, dicomio to dicomio.

16 tasks share one association and issue 10,000 C-ECHOs, then 2,000 C-STOREs of a 10 KB
instance, with the window negotiated as 1 (one request outstanding at a time) or 16. Both
sides offer (16, 16). pynetdicom does not perform asynchronous operations (it negotiates
the window but handles one request at a time) and DCMTK's tools do not issue them.
"""

from __future__ import annotations

from benchmarks import data
from benchmarks.model import DCMTK, DICOMIO, PYNETDICOM, Row, Settings, fill, measuring, rate
from benchmarks.runner import HarnessError, Workspace, run_clients

TASKS = 16
WINDOWS = (1, 16)
SMALL = 10 * 1024


def run(settings: Settings, ws: Workspace, selected: set[str]) -> list[Row]:
    rows: list[Row] = []
    files = data.store_set(settings.cache, SMALL, 1)[0].parent
    operations = {"echo": settings.pick(2000, 10_000), "store": settings.pick(400, 2000)}
    try:
        server = ws.python_server(
            "async-dicomio", "dicomio-scp", ["--mode", "discard", "--window", "16"]
        )
    except HarnessError as exc:
        return [Row("S7", "", DICOMIO, DICOMIO, "op/s", status="error", note=str(exc)[:400])]
    try:
        for op, count in operations.items():
            name = "C-ECHO" if op == "echo" else "C-STORE 10 KB"
            for window in WINDOWS:
                row = Row(
                    "S7",
                    f"{name}, window {window}",
                    DICOMIO,
                    DICOMIO,
                    "op/s",
                    note=f"{count} operations from {TASKS} tasks",
                )
                with measuring(rows, row):
                    reps = run_clients(
                        ws,
                        [
                            [
                                "dicomio-async",
                                "--port",
                                str(server.port),
                                "--op",
                                op,
                                "--count",
                                str(count),
                                "--tasks",
                                str(TASKS),
                                "--window",
                                str(window),
                                "--files",
                                str(files),
                            ]
                        ],
                        [server],
                        reps=settings.reps,
                        warmup=settings.warmup,
                        rep_timeout=settings.rep_timeout,
                    )
                    negotiated = reps[0].clients[0].get("window")
                    if negotiated and list(negotiated) != [window, window]:
                        row.note += f"; negotiated window {negotiated}"
                    fill(row, reps, rate)
    finally:
        ws.stop(server.proc)
    for impl in (PYNETDICOM, DCMTK):
        reason = (
            "performs one operation at a time whatever the window"
            if impl == PYNETDICOM
            else "its tools issue one request at a time"
        )
        rows.append(Row("S7", "", impl, impl, "op/s", status="n/a", note=reason))
    return rows
