"""S6: C associations at once, each doing 20 C-ECHOs, against one server process.

The clients are dicomio, spread over several client processes (``client_processes``), each
opening its share of the associations at the same moment (no ramp). Measured: wall time from
the first client's start to the last one's end, associations that did not complete all their
C-ECHOs, and the server's peak RSS and thread count. Also: the most connections the server
held open at once (its descriptors above those it had just after starting, sampled every
0.5 s), which shows whether the associations really were open together, and the slowest
association set-up and C-ECHO.

Servers: dicomio (one event loop; listen backlog 4,096, capped by ``net.core.somaxconn``),
pynetdicom (a thread per association; listen backlog 5, socketserver's default), DCMTK
``storescp`` without ``--fork``, which serves one association at a time (backlog 50); its
``--fork`` mode is a process per association, which is not "one server process".
"""

from __future__ import annotations

from benchmarks.echo import SCP_TITLE
from benchmarks.model import DCMTK, DICOMIO, IMPLS, PYNETDICOM, Row, Settings, fill, measuring
from benchmarks.runner import HarnessError, Server, Workspace, open_descriptors, run_clients

ECHOES = 20
#: pynetdicom needs a thread per association; at 10,000 that is beyond what it was made for
#: (each thread also polls every millisecond), so it is not run there.
PYNETDICOM_MAX = 1000


def client_processes(associations: int) -> int:
    return 2 if associations <= 100 else 4


def start_server(ws: Workspace, impl: str) -> Server:
    if impl == DICOMIO:
        return ws.python_server("many-dicomio", "dicomio-scp", ["--mode", "discard"])
    if impl == PYNETDICOM:
        return ws.python_server("many-pynetdicom", "pynetdicom-scp", ["--mode", "discard"])
    return ws.dcmtk_server("many-dcmtk", "storescp", ["-aet", SCP_TITLE, "--ignore"])


def run(settings: Settings, ws: Workspace, selected: set[str]) -> list[Row]:
    rows: list[Row] = []
    for server_impl in IMPLS:
        sizes = list(settings.s6_sizes)
        if settings.quick and server_impl != DICOMIO:
            rows += [
                Row(
                    "S6",
                    f"{size:,} associations",
                    f"dicomio x{client_processes(size)}",
                    server_impl,
                    "s",
                    higher_is_better=False,
                    status="skipped",
                    note="quick mode measures the dicomio server only",
                )
                for size in sizes
            ]
            continue
        try:
            server = start_server(ws, server_impl)
        except HarnessError as exc:
            for size in sizes:
                rows.append(
                    Row(
                        "S6",
                        f"{size:,} associations",
                        DICOMIO,
                        server_impl,
                        "s",
                        higher_is_better=False,
                        status="error",
                        note=str(exc)[:400],
                    )
                )
            continue
        # The server's descriptors with no connection open, for "connections at once".
        baseline = open_descriptors(server.pid)
        try:
            for size in sizes:
                variant = f"{size:,} associations"
                processes = client_processes(size)
                if server_impl == PYNETDICOM and size > PYNETDICOM_MAX:
                    rows.append(
                        Row(
                            "S6",
                            variant,
                            f"dicomio x{processes}",
                            server_impl,
                            "s",
                            higher_is_better=False,
                            status="n/a",
                            note=f"not run above {PYNETDICOM_MAX:,}: a thread per association, "
                            "each polling every 1 ms",
                        )
                    )
                    continue
                row = Row(
                    "S6",
                    variant,
                    f"dicomio x{processes}",
                    server_impl,
                    "s",
                    higher_is_better=False,
                    note=f"{processes} client processes, {ECHOES} C-ECHOs per association",
                )
                if server_impl == DCMTK:
                    row.note += "; storescp serves one association at a time"
                measure(settings, ws, server, row, size, baseline, rows)
        finally:
            ws.stop(server.proc)
    return rows


def measure(
    settings: Settings,
    ws: Workspace,
    server: Server,
    row: Row,
    size: int,
    baseline: int,
    rows: list[Row],
) -> None:
    """Fill ``row`` (appended to ``rows``): ``size`` associations at once against ``server``
    from ``client_processes(size)`` dicomio clients, each doing ECHOES C-ECHOs.
    ``baseline``: the server's open descriptors with no connection."""
    processes = client_processes(size)
    shares = [size // processes + (i < size % processes) for i in range(processes)]
    argvs = [
        ["dicomio-many", "--port", str(server.port), "--count", str(n), "--echoes", str(ECHOES)]
        for n in shares
    ]
    with measuring(rows, row):
        reps = run_clients(
            ws,
            argvs,
            [server],
            reps=settings.reps,
            warmup=settings.warmup,
            rep_timeout=max(settings.rep_timeout, 900.0),
            descriptor_baseline=baseline,
        )
        fill(row, reps, lambda rep: rep.wall)
        row.extras["echo/s"] = [rep.count * ECHOES / rep.wall for rep in reps]
        row.extras["server open at once"] = [float(rep.server_connections or 0) for rep in reps]
        for key, name in (
            ("slowest_setup_s", "slowest set-up s"),
            ("slowest_echo_s", "slowest C-ECHO s"),
        ):
            row.extras[name] = [max(float(c.get(key, 0.0)) for c in rep.clients) for rep in reps]
        row.note += (
            f"; server held {min(row.extras['server open at once']):,.0f} "
            f"connections at once (peak of the weakest rep); slowest set-up "
            f"{max(row.extras['slowest set-up s']):.2f} s, slowest C-ECHO "
            f"{max(row.extras['slowest C-ECHO s']):.2f} s"
        )
