"""S5 (one C-FIND with many matches) and S8 (one C-FIND to each of 50 SCPs at once).

S5 servers: dicomio and pynetdicom SCPs answer with precomputed IMAGE-level identifiers;
DCMTK ``dcmqrscp`` matches against its index, seeded with ``dcmqridx``. Its index file is
limited to 32 MB, about 8.4 KB per record, so it holds at most about 3,900 instances: it
answers ``DCMQR_MATCHES`` matches, not 10,000. ``dcmqrscp --single-process`` (3.6.7) crashes
on the second association, so it runs in its default mode, a child process per association
(its CPU time is counted once the child is reaped; its RSS is sampled).

S8: one client process queries 50 dicomio SCPs, served by 5 processes of 10 AEs each, all at
once and then one after another. Each SCP answers 100 matches after a pause standing in for
its database query: 0 ms (no latency at all), 20 ms, and 100 ms (a real PACS answers a C-FIND
in tens to hundreds of milliseconds). A fan-out can only overlap what is not CPU work: at
0 ms one after another is itself CPU-bound, and all at once shares the same two cores, so
it cannot come near 10x there; the report states each variant's ceiling from the CPU it
measured (``report.targets``).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from benchmarks import data
from benchmarks.echo import CLIENT_KIND, SCP_TITLE
from benchmarks.model import (
    DCMTK,
    DICOMIO,
    IMPLS,
    PYNETDICOM,
    Row,
    Settings,
    fill,
    measuring,
    rate,
    skipped,
)
from benchmarks.runner import HarnessError, Server, Workspace, dcmtk_tool, run_clients

#: dcmqrscp's index limit (see the module docstring); the full figure stays under it.
DCMQR_MATCHES = (1000, 3000)
S8_SCPS, S8_PROCESSES, S8_MATCHES = 50, 5, 100
#: Query latencies of the S8 SCPs, in seconds: none, short, and a real PACS's.
S8_DELAYS = (0.0, 0.020, 0.100)


def s8_variant(delay: float) -> str:
    """The S8 variant label for a query latency (``report`` reads the latency back)."""
    return f"{S8_MATCHES} matches each, {delay * 1000:g} ms query latency"


def dcmqr_storage(settings: Settings, count: int) -> Path:
    """A dcmqrscp storage folder with an index of ``count`` instances (made once, cached)."""
    folder = settings.cache / f"dcmqr-{count}"
    index = folder / "index.dat"
    done = folder / ".complete"
    if done.exists() and index.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    index.unlink(missing_ok=True)
    paths = data.store_set(settings.cache, 0, count)
    tool = dcmtk_tool("dcmqridx")
    for start in range(0, count, 500):
        batch = [str(p) for p in paths[start : start + 500]]
        result = subprocess.run([tool, str(folder), *batch], capture_output=True, timeout=600)
        if result.returncode != 0 or b"E:" in result.stderr + result.stdout:
            raise HarnessError(f"dcmqridx failed: {(result.stderr + result.stdout)[-300:]!r}")
    done.touch()
    return folder


def _dcmqrscp(ws: Workspace, storage: Path) -> Server:
    config = ws.path("dcmqrscp.cfg")
    user = os.environ.get("USER") or _user()
    config.write_text(
        "NetworkTCPPort = 104\nMaxPDUSize = 131072\nMaxAssociations = 16\n"
        f"UserName = {user}\nGroupName = {_group()}\n"
        "HostTable BEGIN\nHostTable END\nVendorTable BEGIN\nVendorTable END\n"
        f"AETable BEGIN\n{SCP_TITLE} {storage} R (200, 1024mb) ANY\nAETable END\n"
    )
    return ws.dcmtk_server("find-dcmtk", "dcmqrscp", ["-c", str(config)], forks=True)


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def _group() -> str:
    import grp

    return grp.getgrgid(os.getgid()).gr_name


def run_s5(settings: Settings, ws: Workspace) -> list[Row]:
    rows: list[Row] = []
    matches = settings.pick(1000, 10_000)
    dcmqr_matches = min(matches, settings.pick(*DCMQR_MATCHES))
    for server_impl in IMPLS:
        count = dcmqr_matches if server_impl == DCMTK else matches
        try:
            if server_impl == DCMTK:
                server = _dcmqrscp(ws, dcmqr_storage(settings, count))
            else:
                server = ws.python_server(
                    f"find-{server_impl}",
                    f"{server_impl}-scp",
                    ["--mode", "find", "--matches", str(count)],
                )
        except HarnessError as exc:
            for client_impl in IMPLS:
                rows.append(
                    Row(
                        "S5",
                        "",
                        client_impl,
                        server_impl,
                        "match/s",
                        status="error",
                        note=str(exc)[:400],
                    )
                )
            continue
        try:
            for client_impl in IMPLS:
                if settings.skips(client_impl, server_impl):
                    rows.append(skipped("S5", "", client_impl, server_impl, "match/s"))
                    continue
                row = Row(
                    "S5",
                    "",
                    client_impl,
                    server_impl,
                    "match/s",
                    note=f"{count} matches per C-FIND",
                )
                if server_impl == DCMTK:
                    row.note += "; dcmqrscp matches each query against its index"
                    if count < matches:
                        row.note += f" (which cannot hold {matches:,})"
                if client_impl == DCMTK:
                    row.note += "; findscu: time includes its start-up"
                with measuring(rows, row):
                    reps = run_clients(
                        ws,
                        [
                            [
                                f"{CLIENT_KIND[client_impl]}-find",
                                "--port",
                                str(server.port),
                                "--count",
                                str(count),
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


def run_s8(settings: Settings, ws: Workspace) -> list[Row]:
    rows: list[Row] = []
    per_process = S8_SCPS // S8_PROCESSES
    server_label = f"{S8_SCPS} dicomio SCPs in {S8_PROCESSES} processes"
    for delay in S8_DELAYS:
        variant = s8_variant(delay)
        try:
            servers = ws.python_servers(
                [
                    (
                        f"fanout-{index}",
                        "dicomio-scp",
                        [
                            "--mode",
                            "find",
                            "--matches",
                            str(S8_MATCHES),
                            "--servers",
                            str(per_process),
                            "--find-delay",
                            str(delay),
                        ],
                    )
                    for index in range(S8_PROCESSES)
                ]
            )
        except HarnessError as exc:
            rows.append(
                Row(
                    "S8",
                    variant,
                    DICOMIO,
                    server_label,
                    "s",
                    higher_is_better=False,
                    status="error",
                    note=str(exc)[:400],
                )
            )
            continue
        ports = ",".join(str(p) for server in servers for p in server.ports)
        try:
            for client_impl in (DICOMIO, PYNETDICOM):
                for sequential in (False, True):
                    how = "one after another" if sequential else "all at once"
                    row = Row(
                        "S8",
                        variant,
                        f"{client_impl} ({how})",
                        server_label,
                        "s",
                        higher_is_better=False,
                    )
                    if settings.quick and client_impl != DICOMIO:
                        row.status = "skipped"
                        row.note = "quick mode measures the dicomio client only"
                        rows.append(row)
                        continue
                    if client_impl == PYNETDICOM and not sequential:
                        row.note = "a thread per association (pynetdicom is synchronous)"
                    argv = [
                        f"{client_impl}-fanout",
                        "--targets",
                        ports,
                        "--count",
                        str(S8_MATCHES),
                    ]
                    if sequential:
                        argv.append("--sequential")
                    with measuring(rows, row):
                        reps = run_clients(
                            ws,
                            [argv],
                            servers,
                            reps=settings.reps,
                            warmup=settings.warmup,
                            rep_timeout=settings.rep_timeout,
                        )
                        fill(row, reps, lambda rep: rep.wall)
        finally:
            for server in servers:
                ws.stop(server.proc)
    rows.append(
        Row(
            "S8",
            "",
            DCMTK,
            server_label,
            "s",
            higher_is_better=False,
            status="n/a",
            note="findscu queries one peer per process; a fan-out would measure the "
            "shell, not DCMTK",
        )
    )
    return rows


def run(settings: Settings, ws: Workspace, selected: set[str]) -> list[Row]:
    rows: list[Row] = []
    if "S5" in selected:
        rows += run_s5(settings, ws)
    if "S8" in selected:
        rows += run_s8(settings, ws)
    return rows
