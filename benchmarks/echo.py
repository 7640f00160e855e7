"""S1 (C-ECHO rate on one association) and S2 (association rate), every client x server.

Servers: dicomio SCP, pynetdicom SCP, DCMTK ``storescp --ignore`` (one process, serving
associations one at a time). Clients: dicomio, pynetdicom, DCMTK ``echoscu`` (S1 with
``--repeat N``; S2 one ``echoscu`` process per association, so its figure includes process
start-up, as DCMTK offers no other way to repeat associations).
"""

from __future__ import annotations

from benchmarks.model import (
    DCMTK,
    DICOMIO,
    DICOMIO_UVLOOP,
    PYNETDICOM,
    Row,
    Settings,
    fill,
    measuring,
    rate,
    runs_pair,
    skipped,
    variants,
)
from benchmarks.runner import HarnessError, Server, Workspace, run_clients

CLIENT_KIND = {
    DICOMIO: "dicomio",
    DICOMIO_UVLOOP: "dicomio",
    PYNETDICOM: "pynetdicom",
    DCMTK: "dcmtk",
}
#: What a client or server variant adds to its command line.
EXTRA_ARGS = {DICOMIO_UVLOOP: ["--uvloop"]}
SCP_TITLE = "BENCHSCP"

#: Operations per repetition (quick, full), per implementation; a pair uses the smaller, so
#: that each repetition takes about a second whatever the slower side.
S1_ECHOES = {DICOMIO: (500, 5000), PYNETDICOM: (50, 1000), DCMTK: (1000, 20000)}
S2_ASSOCIATIONS = {DICOMIO: (30, 300), PYNETDICOM: (10, 100), DCMTK: (15, 200)}
S1_ECHOES[DICOMIO_UVLOOP] = S1_ECHOES[DICOMIO]
S2_ASSOCIATIONS[DICOMIO_UVLOOP] = S2_ASSOCIATIONS[DICOMIO]


def start_server(ws: Workspace, impl: str, tag: str) -> Server:
    if impl in (DICOMIO, DICOMIO_UVLOOP):
        return ws.python_server(
            f"{tag}-{impl}", "dicomio-scp", ["--mode", "discard", *EXTRA_ARGS.get(impl, [])]
        )
    if impl == PYNETDICOM:
        return ws.python_server(f"{tag}-pynetdicom", "pynetdicom-scp", ["--mode", "discard"])
    return ws.dcmtk_server(
        f"{tag}-dcmtk", "storescp", ["-aet", SCP_TITLE, "-pdu", "131072", "--ignore"]
    )


def _count(settings: Settings, table: dict[str, tuple[int, int]], *impls: str) -> int:
    return min(settings.pick(*table[impl]) for impl in impls)


def run(settings: Settings, ws: Workspace, selected: set[str]) -> list[Row]:
    rows: list[Row] = []
    impls = variants()
    for server_impl in impls:
        try:
            server = start_server(ws, server_impl, "echo")
        except HarnessError as exc:
            for scenario, unit in (("S1", "echo/s"), ("S2", "assoc/s")):
                if scenario in selected:
                    for client_impl in impls:
                        if not runs_pair(client_impl, server_impl):
                            continue
                        rows.append(
                            Row(
                                scenario,
                                "",
                                client_impl,
                                server_impl,
                                unit,
                                status="error",
                                note=str(exc)[:400],
                            )
                        )
            continue
        try:
            for client_impl in impls:
                if not runs_pair(client_impl, server_impl):
                    continue
                kind = CLIENT_KIND[client_impl]
                extra = EXTRA_ARGS.get(client_impl, [])
                if settings.skips(client_impl, server_impl):
                    rows += [
                        skipped(s, "", client_impl, server_impl, unit)
                        for s, unit in (("S1", "echo/s"), ("S2", "assoc/s"))
                        if s in selected
                    ]
                    continue
                if "S1" in selected:
                    n = _count(settings, S1_ECHOES, client_impl, server_impl)
                    row = Row(
                        "S1",
                        "",
                        client_impl,
                        server_impl,
                        "echo/s",
                        note=f"{n} C-ECHOs per repetition",
                    )
                    if client_impl == DCMTK:
                        row.note += "; echoscu --repeat, time includes its start-up"
                    with measuring(rows, row):
                        reps = run_clients(
                            ws,
                            [
                                [
                                    f"{kind}-echo",
                                    "--port",
                                    str(server.port),
                                    "--count",
                                    str(n),
                                    *extra,
                                ]
                            ],
                            [server],
                            reps=settings.reps,
                            warmup=settings.warmup,
                            rep_timeout=settings.rep_timeout,
                        )
                        fill(row, reps, rate)
                if "S2" in selected:
                    n = _count(settings, S2_ASSOCIATIONS, client_impl, server_impl)
                    row = Row(
                        "S2",
                        "",
                        client_impl,
                        server_impl,
                        "assoc/s",
                        note=f"{n} associations per repetition",
                    )
                    if client_impl == DCMTK:
                        row.note += "; one echoscu process per association"
                    with measuring(rows, row):
                        reps = run_clients(
                            ws,
                            [
                                [
                                    f"{kind}-assoc",
                                    "--port",
                                    str(server.port),
                                    "--count",
                                    str(n),
                                    *extra,
                                ]
                            ],
                            [server],
                            reps=settings.reps,
                            warmup=settings.warmup,
                            rep_timeout=settings.rep_timeout,
                        )
                        fill(row, reps, rate)
        finally:
            ws.stop(server.proc)
    return rows
