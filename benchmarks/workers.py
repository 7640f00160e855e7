"""S2 and S6 on more than one server process (issue #18, "more cores for many associations").

S2 and S6 proper measure one server process. Here the same clients meet servers that use
more than one:

- dicomio: ``dicomio storescp --workers 2`` (two worker processes sharing the port, the
  kernel spreading connections over them with SO_REUSEPORT);
- DCMTK: ``storescp --fork``, a child process per association.

Variants: S2 with two dicomio client processes at once, each doing its associations one after
another (one process can keep only one core busy); S6 as in ``benchmarks.concurrency``. For
scale, S2's two clients also meet the single-process servers (dicomio's ``benchmarks.peers``
SCP, ``storescp`` without ``--fork``, which serves one association at a time). A server's CPU
time, memory and descriptors include its children's.
"""

from __future__ import annotations

from benchmarks.concurrency import ECHOES, client_processes, measure
from benchmarks.echo import S2_ASSOCIATIONS, SCP_TITLE
from benchmarks.echo import start_server as start_single_server
from benchmarks.model import DCMTK, DICOMIO, Row, Settings, fill, measuring, rate
from benchmarks.runner import HarnessError, Server, Workspace, run_clients, server_descriptors

WORKERS = 2
CLIENTS = 2
#: A process per association: at 10,000 at once that is 10,000 processes on 2 cores.
FORK_MAX = 1000
SINGLE = "2 clients at once, 1 server process"
SEVERAL = "2 clients at once, several server processes"


def _start(ws: Workspace, impl: str, processes: str) -> Server:
    if processes == "one":
        return start_single_server(ws, impl, "workers-one")
    if impl == DICOMIO:
        out = ws.path("workers-od")
        out.mkdir(exist_ok=True)
        args = ["-aet", SCP_TITLE, "-od", str(out), "--workers", str(WORKERS)]
        return ws.dicomio_cli_server(
            "workers-dicomio", "storescp", [*args, "--max-associations", "20000"]
        )
    return ws.dcmtk_server(
        "workers-dcmtk",
        "storescp",
        ["-aet", SCP_TITLE, "-pdu", "131072", "--ignore", "--fork"],
        forks=True,
    )


def _s6_variant(size: int) -> str:
    return f"{size:,} associations, several server processes"


def _error_row(
    scenario: str, variant: str, client: str, impl: str, unit: str, exc: Exception
) -> Row:
    return Row(scenario, variant, client, impl, unit, status="error", note=str(exc)[:400])


def _s2(
    settings: Settings, server: Server, impl: str, variant: str
) -> tuple[Row, list[list[str]]]:
    n = settings.pick(*S2_ASSOCIATIONS[DICOMIO])
    row = Row(
        "S2",
        variant,
        DICOMIO,
        impl,
        "assoc/s",
        note=f"{CLIENTS} dicomio client processes, {n} associations each per repetition",
    )
    if impl == DCMTK:
        row.note += "; storescp --fork" if server.forks else "; storescp serves one at a time"
    elif server.forks:
        row.note += f"; dicomio storescp --workers {WORKERS}"
    argv = ["dicomio-assoc", "--port", str(server.port), "--count", str(n)]
    return row, [argv] * CLIENTS


def run(settings: Settings, ws: Workspace, selected: set[str]) -> list[Row]:
    rows: list[Row] = []
    for processes in ("one", "several"):
        for impl in (DICOMIO, DCMTK):
            s2_wanted = "S2" in selected
            s6_wanted = "S6" in selected and processes == "several"
            if not (s2_wanted or s6_wanted):
                continue
            variant = SINGLE if processes == "one" else SEVERAL
            try:
                server = _start(ws, impl, processes)
            except HarnessError as exc:
                if s2_wanted:
                    rows.append(_error_row("S2", variant, DICOMIO, impl, "assoc/s", exc))
                if s6_wanted:
                    rows += [
                        _error_row(
                            "S6",
                            _s6_variant(size),
                            f"dicomio x{client_processes(size)}",
                            impl,
                            "s",
                            exc,
                        )
                        for size in settings.s6_sizes
                    ]
                continue
            try:
                if s2_wanted:
                    row, argvs = _s2(settings, server, impl, variant)
                    with measuring(rows, row):
                        reps = run_clients(
                            ws,
                            argvs,
                            [server],
                            reps=settings.reps,
                            warmup=settings.warmup,
                            rep_timeout=settings.rep_timeout,
                        )
                        fill(row, reps, rate)
                if s6_wanted:
                    rows += _s6(settings, ws, server, impl)
            finally:
                ws.stop(server.proc)
    return rows


def _s6(settings: Settings, ws: Workspace, server: Server, impl: str) -> list[Row]:
    rows: list[Row] = []
    baseline = server_descriptors(server)
    for size in settings.s6_sizes:
        processes = client_processes(size)
        client = f"dicomio x{processes}"
        row = Row("S6", _s6_variant(size), client, impl, "s", higher_is_better=False)
        if impl == DCMTK and size > FORK_MAX:
            row.status = "n/a"
            row.note = f"storescp --fork not run above {FORK_MAX:,}: a process per association"
            rows.append(row)
            continue
        how = f"dicomio storescp --workers {WORKERS}" if impl == DICOMIO else "storescp --fork"
        row.note = f"{how}; {processes} client processes, {ECHOES} C-ECHOs per association"
        measure(settings, ws, server, row, size, baseline, rows)
    return rows
