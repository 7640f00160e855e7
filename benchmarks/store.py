"""S3 (many 0.5 MB C-STOREs on one association) and S4 (large C-STOREs), client x server.

S3 runs twice: servers discarding what they receive, and servers writing files:

- dicomio SCP: discard = handler returns Success; write = ``stream_to_disk`` (the data set is
  written while it arrives, then renamed).
- pynetdicom SCP: discard = handler returns Success without decoding; write =
  ``event.encoded_dataset()`` written to a file (its fastest documented way).
- DCMTK: ``storescp --ignore``; ``storescp -od DIR``.

S4 runs servers in their bounded-memory mode: dicomio ``stream_to_disk``, pynetdicom
``STORE_RECV_CHUNKED_DATASET``, DCMTK ``storescp -od DIR +B`` (bit-preserving, written as
received); then servers holding each instance in memory (issue #18: peak RSS about the object):
dicomio and pynetdicom with a handler reading every byte as received (``event.raw``;
``event.request.DataSet``), DCMTK ``storescp -od DIR`` (built in memory, then written). Clients
send from files: dicomio ``send_c_store(path)`` (streamed), pynetdicom with
``STORE_SEND_CHUNKED_DATASET``, DCMTK ``storescu``.

All clients send the same files (Explicit VR Little Endian CT images) from the page cache.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks import data
from benchmarks.echo import CLIENT_KIND, EXTRA_ARGS, SCP_TITLE
from benchmarks.model import (
    DCMTK,
    DICOMIO,
    DICOMIO_UVLOOP,
    IMPLS,
    MB,
    PYNETDICOM,
    Row,
    Settings,
    fill,
    measuring,
    megabytes_per_second,
    rate,
    runs_pair,
    skipped,
    variants,
)
from benchmarks.runner import HarnessError, Server, Workspace, empty_folder, run_clients

S3_SIZE = 512 * 1024
#: Instances per repetition (quick, full) per client; full mode sends 1,000 whoever sends.
S3_COUNT = {DICOMIO: (100, 1000), PYNETDICOM: (40, 1000), DCMTK: (100, 1000)}
S3_COUNT[DICOMIO_UVLOOP] = S3_COUNT[DICOMIO]


def start_server(ws: Workspace, impl: str, mode: str, folder: Path | None) -> Server:
    tag = f"store-{mode}-{impl}"
    if impl in (DICOMIO, DICOMIO_UVLOOP):
        if mode in ("discard", "memory"):
            args = ["--mode", mode]
        else:
            args = ["--mode", "write", "--dir", str(folder)]
        return ws.python_server(tag, "dicomio-scp", [*args, *EXTRA_ARGS.get(impl, [])])
    if impl == PYNETDICOM:
        args = ["--mode", mode] + ([] if folder is None else ["--dir", str(folder)])
        return ws.python_server(tag, "pynetdicom-scp", args)
    args = ["-aet", SCP_TITLE, "-pdu", "131072"]
    if mode == "discard":
        args.append("--ignore")
    elif mode == "memory":
        # storescp has no handler to give the data set to: it builds it in memory and then
        # writes it (without +B), the nearest to a Python handler reading event.raw.
        args += ["-od", str(folder)]
    else:
        args += ["-od", str(folder)]
        if mode == "stream":
            args.append("+B")
    return ws.dcmtk_server(tag, "storescp", args)


def _matrix(
    settings: Settings,
    ws: Workspace,
    rows: list[Row],
    *,
    scenario: str,
    variant: str,
    server_mode: str,
    files: Path,
    counts: dict[str, int],
    unit: str,
    chunked: bool,
    datasets: bool = False,
    uvloop: bool = False,
) -> None:
    # (row's client name, implementation, extra arguments): with ``datasets``, dicomio also
    # sends each file as the Dataset dcmread made of it (issue #18's "SCU sending a Dataset").
    # With ``uvloop``, dicomio+uvloop joins as client and server (the pairs of UVLOOP_PAIRS).
    impls = variants() if uvloop else IMPLS
    clients: list[tuple[str, str, list[str]]] = [
        (impl, impl, EXTRA_ARGS.get(impl, [])) for impl in impls
    ]
    if datasets:
        clients.append((f"{DICOMIO} (Dataset)", DICOMIO, ["--dataset"]))
    for server_impl in impls:
        folder = (
            None
            if server_mode == "discard" or (server_mode == "memory" and server_impl != DCMTK)
            else ws.folder(f"{scenario}-{server_impl}-{server_mode}-out")
        )
        try:
            server = start_server(ws, server_impl, server_mode, folder)
        except HarnessError as exc:
            for client_name, client_impl, _ in clients:
                if not runs_pair(client_impl, server_impl):
                    continue
                rows.append(
                    Row(
                        scenario,
                        variant,
                        client_name,
                        server_impl,
                        unit,
                        status="error",
                        note=str(exc)[:400],
                    )
                )
            continue
        try:
            for client_name, client_impl, extra in clients:
                if not runs_pair(client_impl, server_impl) or (
                    "--dataset" in extra and server_impl == DICOMIO_UVLOOP
                ):
                    continue
                if settings.skips(client_impl, server_impl):
                    rows.append(skipped(scenario, variant, client_name, server_impl, unit))
                    continue
                count = counts[client_impl]
                argv = [
                    f"{CLIENT_KIND[client_impl]}-store",
                    "--port",
                    str(server.port),
                    "--count",
                    str(count),
                    "--files",
                    str(files),
                ]
                if chunked and client_impl == PYNETDICOM:
                    argv.append("--chunked")
                argv += extra
                row = Row(
                    scenario,
                    variant,
                    client_name,
                    server_impl,
                    unit,
                    note=f"{count} instances per repetition",
                )
                if client_impl == DCMTK:
                    row.note += "; storescu: time includes its start-up and reading the files"
                if "--dataset" in extra:
                    row.note += "; Datasets read with dcmread before the clock starts"
                with measuring(rows, row):
                    reps = run_clients(
                        ws,
                        [argv],
                        [server],
                        reps=settings.reps,
                        warmup=settings.warmup,
                        rep_timeout=settings.rep_timeout,
                        between=(lambda f=folder: empty_folder(f)) if folder else None,
                    )
                    fill(row, reps, megabytes_per_second if unit == "MB/s" else rate)
        finally:
            ws.stop(server.proc)
            if folder is not None:
                empty_folder(folder)


def run(settings: Settings, ws: Workspace, selected: set[str]) -> list[Row]:
    rows: list[Row] = []
    if "S3" in selected:
        counts = {impl: settings.pick(*S3_COUNT[impl]) for impl in variants()}
        paths = data.store_set(settings.cache, S3_SIZE, max(counts.values()))
        for mode in ("discard", "write"):
            _matrix(
                settings,
                ws,
                rows,
                scenario="S3",
                variant=f"0.5 MiB, server {mode}s",
                server_mode=mode,
                files=paths[0].parent,
                counts=counts,
                unit="store/s",
                chunked=False,
                datasets=mode == "discard",
                uvloop=True,
            )
    if "S4" in selected:
        size = int(settings.s4_mb * 1024 * 1024) // 2 * 2
        paths = data.store_set(settings.cache, size, settings.s4_count)
        first = len(rows)
        _matrix(
            settings,
            ws,
            rows,
            scenario="S4",
            variant=f"{settings.s4_count} x {settings.s4_mb:g} MiB, server writes",
            server_mode="stream",
            files=paths[0].parent,
            counts=dict.fromkeys(IMPLS, settings.s4_count),
            unit="MB/s",
            chunked=True,
        )
        # Issue #18: the server holds each instance in memory, once, while a handler reads it.
        _matrix(
            settings,
            ws,
            rows,
            scenario="S4",
            variant=f"{settings.s4_count} x {settings.s4_mb:g} MiB, server holds it in memory",
            server_mode="memory",
            files=paths[0].parent,
            counts=dict.fromkeys(IMPLS, settings.s4_count),
            unit="MB/s",
            chunked=True,
        )
        for row in rows[first:]:
            row.note = "; ".join(filter(None, [f"MB = {MB:,} bytes", row.note]))
    return rows
