"""RESULTS.md and results.json (quick runs: RESULTS-quick.md ...): the measurements, dicomio's ratios, and issue #6's targets."""

from __future__ import annotations

import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.model import (
    DCMTK,
    DICOMIO,
    DICOMIO_UVLOOP,
    IMPLS,
    PYNETDICOM,
    SCENARIOS,
    TITLES,
    Row,
)

MATRIX_SCENARIOS = ("S1", "S2", "S3", "S4", "S5")


# -- environment ---------------------------------------------------------------------------


def run_meta(module: str, argv: list[str] | None, **fields: Any) -> dict[str, Any]:
    """What every results file records about its run: the command (``python -m module`` and
    its arguments), the date, ``fields``, the load when it started and the environment."""
    return {
        "command": f"python -m {module} " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        **fields,
        "load_start": os.getloadavg()[0],
        "environment": environment(),
    }


def environment() -> dict[str, Any]:
    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    try:
        first = subprocess.run(
            ["/usr/bin/storescp", "--version"], capture_output=True, text=True, timeout=10
        ).stdout.split("\n")[0]
        dcmtk = first.split(" v", 1)[1].split(" ")[0] if " v" in first else first
    except (OSError, subprocess.SubprocessError):
        dcmtk = "not found"
    mem_kb = 0
    with open("/proc/meminfo") as fp:
        for line in fp:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    model = ""
    with open("/proc/cpuinfo") as fp:
        for line in fp:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import dicomio

    return {
        "python": platform.python_version(),
        "dicomio": getattr(dicomio, "__version__", version("dicomio")),
        "pynetdicom": version("pynetdicom"),
        "pydicom": version("pydicom"),
        "anyio": version("anyio"),
        "DCMTK": dcmtk,
        "cores": os.cpu_count(),
        "usable cores": len(os.sched_getaffinity(0)),
        "cpu": model,
        "memory GB": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
    }


# -- lookups and ratios --------------------------------------------------------------------


def find(rows: list[Row], scenario: str, variant: str, client: str, server: str) -> Row | None:
    for row in rows:
        if (row.scenario, row.variant, row.client, row.server) == (
            scenario,
            variant,
            client,
            server,
        ):
            return row if row.status == "ok" and row.values else None
    return None


def advantage(ours: Row | None, theirs: Row | None) -> float | None:
    """How many times better dicomio's median is (> 1: dicomio is better)."""
    if ours is None or theirs is None or not ours.median or not theirs.median:
        return None
    if ours.higher_is_better:
        return ours.median / theirs.median
    return theirs.median / ours.median


def fmt(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    magnitude = abs(value)
    if magnitude >= 100:
        text = f"{value:,.0f}"
    elif magnitude >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".strip()


def fmt_ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x" if value < 10 else f"{value:.1f}x"


# -- targets (issues #6, #2) ----------------------------------------------------------------


def targets(rows: list[Row]) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []

    def add(target: str, measured: str, met: bool | None, how: str = "") -> None:
        status = "not evaluated" if met is None else "met" if met else "missed"
        out.append({"target": target, "measured": measured, "status": status, "how": how})

    def pair(scenario: str, variant: str, peer: str) -> float | None:
        return advantage(
            find(rows, scenario, variant, DICOMIO, DICOMIO),
            find(rows, scenario, variant, peer, peer),
        )

    for scenario, variant, goal, label in (
        ("S1", "", 20, "S1 C-ECHO rate ≥ 20x pynetdicom"),
        ("S2", "", 10, "S2 association rate ≥ 10x pynetdicom"),
        (
            "S3",
            "0.5 MiB, server discards",
            15,
            "S3 C-STORE 0.5 MB, server discarding, ≥ 15x pynetdicom",
        ),
        ("S5", "", 10, "S5 C-FIND matches/s ≥ 10x pynetdicom"),
    ):
        ratio = pair(scenario, variant, PYNETDICOM)
        add(
            label,
            fmt_ratio(ratio),
            None if ratio is None else ratio >= goal,
            "dicomio↔dicomio against pynetdicom↔pynetdicom, medians",
        )

    writes = "0.5 MiB, server writes"
    server_ratio = advantage(
        find(rows, "S3", writes, DCMTK, DICOMIO), find(rows, "S3", writes, DCMTK, DCMTK)
    )
    pair_ratio = pair("S3", writes, DCMTK)
    add(
        "S3 C-STORE 0.5 MB, server writing files, ≥ DCMTK storescp's rate",
        f"{fmt_ratio(server_ratio)} as server (both fed by storescu); "
        f"{fmt_ratio(pair_ratio)} dicomio↔dicomio vs DCMTK↔DCMTK",
        None if server_ratio is None else server_ratio >= 1.0,
        "dicomio SCP (stream_to_disk) against storescp -od, same client (storescu)",
    )

    discards, sent = "0.5 MiB, server discards", f"{DICOMIO} (Dataset)"
    servers = (DCMTK, DICOMIO)
    vs_storescu = [
        advantage(find(rows, "S3", discards, sent, s), find(rows, "S3", discards, DCMTK, s))
        for s in servers
    ]
    vs_file = [
        advantage(find(rows, "S3", discards, sent, s), find(rows, "S3", discards, DICOMIO, s))
        for s in servers
    ]
    measured = [*vs_storescu, *vs_file]
    add(
        "S3 SCU sending a Dataset ≥ 0.9x storescu, and within 1.2x of sending its file",
        f"{' / '.join(map(fmt_ratio, vs_storescu))} storescu's rate; "
        f"{' / '.join(map(fmt_ratio, vs_file))} dicomio's sending the file",
        None
        if None in measured
        else all(r is not None and r >= 0.9 for r in vs_storescu)
        and all(r is not None and r >= 1 / 1.2 for r in vs_file),
        "server discarding: storescp --ignore / dicomio; the Datasets dcmread made of the files",
    )

    s4 = next(
        (
            r
            for r in rows
            if r.scenario == "S4"
            and r.client == DICOMIO
            and r.server == DICOMIO
            and r.status == "ok"
            and r.values
        ),
        None,
    )
    if s4 is None:
        add("S4 ≥ 500 MB/s, server peak RSS < 100 MB above idle", "—", None)
    else:
        extra = max(s4.extras.get("server +MB", [math.nan]))
        add(
            "S4 ≥ 500 MB/s, server peak RSS < 100 MB above idle",
            f"{fmt(s4.median, 'MB/s')}, server +{fmt(extra)} MB at most ({s4.variant})",
            s4.median >= 500 and extra < 100,
            "dicomio client from paths → dicomio SCP stream_to_disk",
        )

    # Issue #18, acceptance 4: holding an instance costs about the instance.
    held = [
        r for r in rows if r.scenario == "S4" and r.variant.endswith("server holds it in memory")
    ]
    ours = next((r for r in held if r.client == DCMTK and r.server == DICOMIO), None)
    theirs = next((r for r in held if r.client == DCMTK and r.server == DCMTK), None)
    target = "S4 in memory: server peak RSS above idle ≤ 1.1x the instance, rate ≥ 0.8x storescp"
    if ours is None or ours.status != "ok" or not ours.values:
        add(target, "—", None)
    else:
        instance_mb = float(ours.variant.split(" x ")[1].split(" MiB")[0]) * 1024 * 1024 / 1e6
        growth = max(ours.extras.get("server +MB", [math.nan])) / instance_mb
        speed = advantage(ours, theirs if theirs and theirs.status == "ok" else None)
        add(
            target,
            f"{growth:.2f}x the instance at most; {fmt_ratio(speed)} storescp's rate",
            None if speed is None else growth <= 1.1 and speed >= 0.8,
            "storescu → dicomio SCP (handler reads event.raw) vs storescu → storescp -od",
        )

    s6 = [r for r in rows if r.scenario == "S6" and r.server == DICOMIO and r.status == "ok"]
    big = next((r for r in s6 if r.variant.startswith("10,000")), None)
    summary = (
        ", ".join(f"{r.variant}: {fmt(max(r.extras.get('failures', [0])))} failed" for r in s6)
        or "—"
    )
    add(
        "S6 10,000 concurrent associations, no failure",
        summary,
        None if big is None else max(big.extras.get("failures", [1])) == 0,
        "dicomio server; failures = associations not completing their 20 C-ECHOs, worst rep",
    )

    w1 = find(rows, "S7", "C-ECHO, window 1", DICOMIO, DICOMIO)
    w16 = find(rows, "S7", "C-ECHO, window 16", DICOMIO, DICOMIO)
    ratio = advantage(w16, w1)
    add(
        "S7 window 16 ≥ 2x window 1 on C-ECHO",
        fmt_ratio(ratio),
        None if ratio is None else ratio >= 2,
    )

    cores = len(os.sched_getaffinity(0))
    for row in rows:
        if row.scenario == "S8" and row.client == f"{DICOMIO} (all at once)":
            seq = find(rows, "S8", row.variant, f"{DICOMIO} (one after another)", row.server)
            ratio = advantage(row if row.values else None, seq)
            ceiling = s8_ceiling(row, seq, cores)
            add(
                f"S8 fan-out ≥ 10x sequential ({row.variant})",
                fmt_ratio(ratio),
                None if ratio is None else ratio >= 10,
                "wall time one after another / all at once, one dicomio client process"
                + (f"; {ceiling}" if ceiling else ""),
            )
    out += core_targets(rows)
    return out


def core_targets(rows: list[Row]) -> list[dict[str, str]]:
    """Issue #2's targets for the in-process core benchmarks, from the warm-heap rows."""
    out: list[dict[str, str]] = []

    def median(variant: str, impl: str) -> float | None:
        row = find(rows, "CORE", variant, impl, "in-process")
        return row.median if row is not None else None

    def add(target: str, value: float | None, met: bool | None, how: str) -> None:
        status = "not evaluated" if met is None else "met" if met else "missed"
        out.append({"target": target, "measured": fmt_ratio(value), "status": status, "how": how})

    for row in rows:
        if row.scenario != "CORE" or row.client != DICOMIO:
            continue
        if row.variant.endswith("default heap"):
            continue  # the warm-heap rows are the code's own work; see bench_core_dimse
        ours = row.median
        theirs = median(row.variant, PYNETDICOM)
        ratio = theirs / ours if theirs and ours else None
        add(
            f"core ≥ 5x pynetdicom: {row.variant}",
            ratio,
            None if ratio is None else ratio >= 5,
            "pynetdicom's median / dicomio's, same process",
        )
        copy = median(row.variant, "bytes copy")
        if copy is None:
            continue
        ratio = ours / copy if ours else None
        floor = median(row.variant, "floor (no checks)")
        how = "dicomio's median / bytes(bytearray(data))'s"
        if floor is not None:
            how += f"; a receiver that checks nothing (floor row) takes {fmt_ratio(floor / copy)}"
        add(
            f"core within 3x of a bytes copy: {row.variant}",
            ratio,
            None if ratio is None else ratio <= 3,
            how,
        )
    return out


def s8_ceiling(together: Row, one_by_one: Row | None, cores: int) -> str:
    """How much faster than one after another this machine lets all at once be, and why.

    All at once cannot take less than its query latency, than its client's CPU time (one
    process, one core), or than all the CPU time it needs spread over every core. Only
    waiting can be overlapped: with no query latency, one after another is CPU-bound too.
    """
    client, server = together.extra("client CPU s"), together.extra("server CPU s")
    if one_by_one is None or client is None or server is None or not together.values:
        return ""
    found = re.search(r"([0-9.]+) ms query latency", together.variant)
    latency = float(found.group(1)) / 1000 if found else 0.0
    floor = max(latency, client, (client + server) / cores)
    ceiling = one_by_one.median / floor
    text = (
        f"all at once needs {fmt(client + server)} s of CPU (client {fmt(client)}, "
        f"servers {fmt(server)}) on {cores} shared cores, so it takes at least "
        f"{fmt(floor)} s: at most {fmt_ratio(ceiling)} here"
    )
    if latency == 0:
        text += (
            "; with no query latency one after another is CPU-bound as well, and a fan-out "
            "has nothing to overlap but CPU"
        )
    if ceiling < 10:
        text += "; 10x is out of reach on this machine"
    return text


# -- markdown --------------------------------------------------------------------------------


def _side(row: Row) -> str:
    parts = []
    for name, label in (("server CPU s", "srv CPU"), ("client CPU s", "cli CPU")):
        value = row.extra(name)
        if value is not None:
            parts.append(f"{label} {fmt(value)} s")
    peak, plus = row.extra("server peak MB"), row.extra("server +MB")
    if peak:
        parts.append(f"srv RSS {fmt(peak)} MB (+{fmt(plus)})")
    peak, plus = row.extra("client peak MB"), row.extra("client +MB")
    if peak:
        parts.append(f"cli RSS {fmt(peak)} MB (+{fmt(plus)})")
    if row.scenario == "S6":
        parts.append(f"srv threads {fmt(max(row.extras.get('server threads', [0])))}")
        echo = row.extra("echo/s")
        if echo:
            parts.append(f"{fmt(echo)} echo/s")
    failures = sum(row.extras.get("failures", []))
    if failures:
        parts.append(f"**failures {fmt(failures)}** (all reps)")
    return "; ".join(parts)


def _pair_name(row: Row) -> str:
    return row.client if row.scenario in ("S8", "CORE") else f"{row.client} → {row.server}"


def _ratio_lines(rows: list[Row], scenario: str, variant: str) -> list[str]:
    lines = []

    def cells(get: Callable[[str], tuple[Row | None, Row | None]]) -> list[str]:
        return [fmt_ratio(advantage(*get(peer))) for peer in (PYNETDICOM, DCMTK)]

    def line(label: str, get: Callable[[str], tuple[Row | None, Row | None]]) -> None:
        values = cells(get)
        if any(v != "—" for v in values):
            lines.append(f"| {scenario} | {variant or '—'} | {label} | {' | '.join(values)} |")

    line(
        "both sides (dicomio↔dicomio vs peer↔peer)",
        lambda p: (
            find(rows, scenario, variant, DICOMIO, DICOMIO),
            find(rows, scenario, variant, p, p),
        ),
    )
    for client in IMPLS:
        line(
            f"as server (client: {client})",
            lambda p, c=client: (
                find(rows, scenario, variant, c, DICOMIO),
                find(rows, scenario, variant, c, p),
            ),
        )
    for server in IMPLS:
        line(
            f"as client (server: {server})",
            lambda p, s=server: (
                find(rows, scenario, variant, DICOMIO, s),
                find(rows, scenario, variant, p, s),
            ),
        )
    return lines


def _uvloop_lines(rows: list[Row], scenario: str, variant: str) -> list[str]:
    """dicomio on uvloop against dicomio on asyncio's own loop, side by side (issue #18)."""
    comparisons = (
        ("both sides", (DICOMIO_UVLOOP, DICOMIO_UVLOOP), (DICOMIO, DICOMIO)),
        ("server (client: DCMTK)", (DCMTK, DICOMIO_UVLOOP), (DCMTK, DICOMIO)),
        ("server (client: dicomio)", (DICOMIO, DICOMIO_UVLOOP), (DICOMIO, DICOMIO)),
        ("client (server: DCMTK)", (DICOMIO_UVLOOP, DCMTK), (DICOMIO, DCMTK)),
        ("client (server: dicomio)", (DICOMIO_UVLOOP, DICOMIO), (DICOMIO, DICOMIO)),
    )
    lines = []
    for label, with_uvloop, without in comparisons:
        ours = find(rows, scenario, variant, *with_uvloop)
        theirs = find(rows, scenario, variant, *without)
        if ours is None or theirs is None:
            continue
        lines.append(
            f"| {scenario} | {variant or '—'} | {label} | {fmt(ours.median, ours.unit)} | "
            f"{fmt(theirs.median, theirs.unit)} | {fmt_ratio(advantage(ours, theirs))} |"
        )
    return lines


def markdown(meta: dict[str, Any], rows: list[Row], goals: list[dict[str, str]]) -> str:
    env = meta["environment"]
    out = [
        "# dicomio benchmarks",
        "",
        f"Generated by `{meta['command']}` ({meta['mode']} mode) on {meta['date']}, "
        f"in {meta['runtime_s']:.0f} s. Each figure is the median of the *n* measured "
        f"repetitions (this run: {meta['reps']}, after {meta['warmup']} warm-up; rows kept "
        "from an earlier `--only` run may differ), with the minimum and maximum.",
        "",
        "Load when the run started and ended (1-minute average): "
        f"{meta['load_start']:.2f} and {meta['load_end']:.2f} on {env['usable cores']} cores. "
        "Other work on the machine makes the numbers noisy.",
        "",
        "| python | dicomio | pynetdicom | pydicom | DCMTK | anyio | cores | memory | kernel |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {env['python']} | {env['dicomio']} | {env['pynetdicom']} | {env['pydicom']} | "
        f"{env['DCMTK']} | {env['anyio']} | {env['cores']} ({env['cpu']}) | "
        f"{env['memory GB']} GB | {env['kernel']} |",
        "",
        "## Targets (issues #6 and #2)",
        "",
        "| target | measured | status | how |",
        "|---|---|---|---|",
    ]
    for goal in goals:
        out.append(
            f"| {goal['target']} | {goal['measured']} | **{goal['status']}** | {goal['how']} |"
        )
    out += ["", "## Results", ""]
    out.append(
        "Each client and each server is its own process. *srv*/*cli* CPU: CPU seconds used by "
        "the server / client(s) during one repetition (DCMTK clients: the tool's own, from "
        "`wait4`). RSS: peak during the repetition, and in brackets how far above the "
        "process's RSS just before it. Ratios below are dicomio's advantage: above 1x "
        "dicomio is better. Every Python process (dicomio's and pynetdicom's) starts with "
        "`dicomio.tune_allocator()`, as the `dicomio` command line does: glibc then keeps "
        "16 MiB of freed heap instead of returning it to the kernel after each instance "
        "(without it, a dicomio SCP receiving 0.5 MB instances spent most of its CPU time "
        "faulting the same pages back in)."
    )
    for scenario in SCENARIOS:
        selected = [r for r in rows if r.scenario == scenario]
        if not selected:
            continue
        out += ["", f"### {scenario}: {TITLES[scenario]}", ""]
        out += [
            "| variant | client → server | median | min | max | n | side measurements | notes |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in selected:
            if row.status != "ok":
                out.append(
                    f"| {row.variant or '—'} | {_pair_name(row)} | {row.status} | | | | | "
                    f"{row.note} |"
                )
                continue
            out.append(
                f"| {row.variant or '—'} | {_pair_name(row)} | **{fmt(row.median, row.unit)}** "
                f"| {fmt(row.min)} | {fmt(row.max)} | {len(row.values)} | {_side(row)} "
                f"| {row.note} |"
            )
    ratio_lines: list[str] = []
    for scenario in MATRIX_SCENARIOS:
        variants = dict.fromkeys(r.variant for r in rows if r.scenario == scenario)
        for variant in variants:
            ratio_lines += _ratio_lines(rows, scenario, variant)
    if ratio_lines:
        out += [
            "",
            "## dicomio's ratio to each peer",
            "",
            "| scenario | variant | comparison | vs pynetdicom | vs DCMTK |",
            "|---|---|---|---|---|",
            *ratio_lines,
        ]
    uvloop_lines: list[str] = []
    for scenario in MATRIX_SCENARIOS:
        variants = dict.fromkeys(r.variant for r in rows if r.scenario == scenario)
        for variant in variants:
            uvloop_lines += _uvloop_lines(rows, scenario, variant)
    if uvloop_lines:
        out += [
            "",
            "## dicomio on uvloop",
            "",
            "The same dicomio client and server with `--uvloop` (anyio's asyncio backend on "
            "uvloop's event loop) against the same without it. Above 1x uvloop is better.",
            "",
            "| scenario | variant | uvloop on the | with uvloop | without | ratio |",
            "|---|---|---|---|---|---|",
            *uvloop_lines,
        ]
    skipped = [r for r in rows if r.status != "ok"]
    if skipped:
        out += ["", "## Not run, not applicable, or failed", ""]
        for row in skipped:
            out.append(
                f"- {row.scenario} {row.variant} {_pair_name(row)}: **{row.status}**: {row.note}"
            )
    out += ["", "## Method", "", *meta["method"], ""]
    return "\n".join(out)


METHOD = [
    "- `python -m benchmarks run [--quick] [--only S1,S3] [--s4-mb 1024]`; every server is "
    "started on a free 127.0.0.1 port and stopped at the end. Clients run in lock-step with "
    "the harness: each repetition starts when all clients are ready (associated where the "
    "scenario times operations on one association), and the servers' CPU time, RSS (VmRSS "
    "before, VmHWM after, reset with /proc/PID/clear_refs) and thread count (sampled every "
    "20 ms) are read around it.",
    '- Peers as configured: pynetdicom with `_config.LOG_HANDLER_LEVEL = "none"` and '
    "`maximum_pdu_size = 262144` (dicomio's default), its listen backlog left at "
    "socketserver's 5; DCMTK tools with `-pdu 131072` (their largest) and the environment "
    "variable `TCP_NODELAY=1`: Debian's DCMTK 3.6.7 otherwise leaves Nagle's algorithm on and "
    "every small message waits about 40 ms for a delayed ACK (about 23 C-ECHOs a second instead "
    "of 23,000). dicomio with its defaults.",
    "- Data: CT images in Explicit VR Little Endian with 16-bit pixel data, generated once into "
    "the cache folder and read from the page cache. MB = 1,000,000 bytes; MiB = 1,048,576.",
    "- DCMTK clients are timed from process start to exit, so their figures include start-up "
    "and association (a few milliseconds); Python clients are timed inside the process.",
    "- A pynetdicom client now and then drops a response that arrives before its calling "
    'thread waits for it ("Received unexpected ... service message", pydicom/pynetdicom#875) '
    "and its repetition stalls for the 30 s DIMSE timeout, against any server; such "
    "repetitions are kept (they are what a user gets), counted as failures and named in the "
    "notes. Medians are robust to one of them.",
    "- S6 and S8 are bounded by CPU on a small machine: clients and servers share the cores, so "
    "a fan-out cannot overlap work that is CPU-bound (S8 at 0 ms), and 10,000 associations that "
    "need more CPU than the 30 s ACSE/DIMSE timeouts allow end in timeouts.",
    "- S8's SCPs pause before answering, standing in for a database query: 0 ms, 20 ms, and "
    "100 ms (a real PACS answers a C-FIND in tens to hundreds of milliseconds). Only that "
    "pause can be overlapped; each S8 target row states the most this machine allows, from "
    "the CPU time all at once used (client and servers) spread over its cores.",
]


def paths(directory: Path, mode: str) -> tuple[Path, Path]:
    """(markdown, json) for a mode: a quick run never overwrites the full results."""
    suffix = "-quick" if mode == "quick" else ""
    return directory / f"RESULTS{suffix}.md", directory / f"results{suffix}.json"


def write(directory: Path, meta: dict[str, Any], rows: list[Row]) -> Path:
    goals = targets(rows)
    meta = {**meta, "method": METHOD}
    md, js = paths(directory, meta["mode"])
    directory.mkdir(parents=True, exist_ok=True)
    js.write_text(
        json.dumps(
            {"meta": meta, "targets": goals, "rows": [r.as_dict() for r in rows]},
            indent=1,
            default=str,
        )
        + "\n"
    )
    md.write_text(markdown(meta, rows, goals))
    return md


def load_rows(directory: Path, mode: str) -> list[Row]:
    """Rows of an earlier run in the same mode (for ``--only`` runs to merge into)."""
    try:
        saved = json.loads(paths(directory, mode)[1].read_text())
    except (OSError, ValueError):
        return []
    if saved.get("meta", {}).get("mode") != mode:
        return []
    return [Row.from_dict(r) for r in saved.get("rows", [])]
