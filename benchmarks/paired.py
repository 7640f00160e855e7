"""``python -m benchmarks.paired``: issue #18's ratios to DCMTK, measured in pairs.

The main harness measures one row after another: on a shared machine whose speed drifts by
tens of percent within minutes, two rows measured five minutes apart can differ by more
than the difference under test. Here each comparison has two arms that share everything
but the one thing compared (the server, or both ends), measured in alternation, one
repetition each, for several rounds (A B, B A, A B ...). Each round gives a ratio of two
measurements taken seconds apart; the report gives the median of those ratios and their
range, besides each arm's median.

Comparisons (issue #18, acceptance lines 1 to 3):

- ``S1-echoscu``, ``S1-dicomio``: C-ECHOs on one association from DCMTK's ``echoscu
  --repeat`` or dicomio's client, to the dicomio SCP and to ``storescp``: rate, and server
  CPU per echo.
- ``S2``: associate, C-ECHO, release, one after another, from dicomio's client, to each
  server: rate, and server CPU per association.
- ``S3-server``: 0.5 MiB C-STOREs from dicomio's client (files), each server discarding:
  rate, and server CPU per GB.
- ``S3-storescu``: the same with DCMTK's ``storescu`` as the client of both servers. It
  sends a 0.5 MiB instance in about eight reads' worth of segments (dicomio's client: two or
  three), so the server's cost per read weighs more.
- ``S3-both``: dicomio's client to the dicomio SCP, against ``storescu`` to ``storescp``.
- ``S3-dataset``: dicomio's client sending Datasets, against ``storescu``, both to
  ``storescp``.

Before every S3 repetition the files are read once more, so that each arm finds them in the
page cache. Writes ``RESULTS-paired.md`` and ``results-paired.json`` (``--output-dir``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import data, report
from benchmarks.runner import Rep, Server, Workspace, run_clients

HERE = Path(__file__).resolve().parent
SCP_TITLE = "BENCHSCP"
S3_SIZE = 512 * 1024
GB = 1e9


@dataclass
class Arm:
    """One side of a comparison: a client (``benchmarks.clients`` argv) and its server."""

    label: str
    server: str  # a key of the servers started
    argv: list[str]


@dataclass
class Comparison:
    name: str
    what: str
    unit: str
    ours: Arm
    theirs: Arm
    #: Server CPU per unit of work, where the two arms have different servers.
    cpu_label: str
    cpu_per: Callable[[Rep], float] | None
    warm: bool = False
    rounds: list[dict[str, float]] = field(default_factory=list)


def _rate(rep: Rep) -> float:
    return rep.count / rep.wall if rep.wall > 0 else 0.0


def _bytes(rep: Rep) -> int:
    return sum(int(c.get("bytes", 0)) for c in rep.clients)


def comparisons(files: Path, count: int, echoes: int, associations: int) -> list[Comparison]:
    port = "{port}"
    echo = ["--count", str(echoes), "--port", port]
    store = ["--count", str(count), "--files", str(files), "--port", port]

    def per_op(rep: Rep) -> float:
        return rep.server_cpu_s / max(rep.count, 1) * 1e6

    def per_gb(rep: Rep) -> float:
        return rep.server_cpu_s / max(_bytes(rep), 1) * GB

    return [
        Comparison(
            "S1-echoscu",
            "C-ECHO on one association, DCMTK echoscu --repeat as the client",
            "echo/s",
            Arm("echoscu → dicomio", "dicomio", ["dcmtk-echo", *echo]),
            Arm("echoscu → storescp", "storescp", ["dcmtk-echo", *echo]),
            "server CPU µs/echo",
            per_op,
        ),
        Comparison(
            "S1-dicomio",
            "C-ECHO on one association, dicomio's client",
            "echo/s",
            Arm("dicomio → dicomio", "dicomio", ["dicomio-echo", *echo]),
            Arm("dicomio → storescp", "storescp", ["dicomio-echo", *echo]),
            "server CPU µs/echo",
            per_op,
        ),
        Comparison(
            "S2",
            "associate, C-ECHO, release, one after another, dicomio's client",
            "assoc/s",
            Arm(
                "dicomio → dicomio",
                "dicomio",
                ["dicomio-assoc", "--count", str(associations), "--port", port],
            ),
            Arm(
                "dicomio → storescp",
                "storescp",
                ["dicomio-assoc", "--count", str(associations), "--port", port],
            ),
            "server CPU µs/assoc",
            per_op,
        ),
        Comparison(
            "S3-server",
            "0.5 MiB C-STOREs on one association, dicomio's client sending files, server discards",
            "store/s",
            Arm("dicomio → dicomio", "dicomio", ["dicomio-store", *store]),
            Arm("dicomio → storescp", "storescp", ["dicomio-store", *store]),
            "server CPU s/GB",
            per_gb,
            warm=True,
        ),
        Comparison(
            "S3-storescu",
            "0.5 MiB C-STOREs on one association, storescu sending files, server discards",
            "store/s",
            Arm("storescu → dicomio", "dicomio", ["dcmtk-store", *store]),
            Arm("storescu → storescp", "storescp", ["dcmtk-store", *store]),
            "server CPU s/GB",
            per_gb,
            warm=True,
        ),
        Comparison(
            "S3-both",
            "0.5 MiB C-STOREs on one association, each toolkit to itself, server discards",
            "store/s",
            Arm("dicomio → dicomio", "dicomio", ["dicomio-store", *store]),
            Arm("storescu → storescp", "storescp", ["dcmtk-store", *store]),
            "server CPU s/GB",
            per_gb,
            warm=True,
        ),
        Comparison(
            "S3-dataset",
            "0.5 MiB C-STOREs to storescp: dicomio sending Datasets, storescu sending files",
            "store/s",
            Arm(
                "dicomio (Dataset) → storescp", "storescp", ["dicomio-store", "--dataset", *store]
            ),
            Arm("storescu → storescp", "storescp", ["dcmtk-store", *store]),
            "",
            None,
            warm=True,
        ),
    ]


def _warm(files: Path, count: int) -> None:
    """Read the files once: each arm then finds them in the page cache."""
    for path in sorted(files.glob("*.dcm"))[:count]:
        with open(path, "rb") as fp:
            while fp.read(1 << 20):
                pass


def _measure(ws: Workspace, arm: Arm, servers: dict[str, Server], between: Any) -> Rep:
    server = servers[arm.server]
    argv = [a.replace("{port}", str(server.port)) for a in arm.argv]
    if between is not None:
        between()
    (rep,) = run_clients(ws, [argv], [server], reps=1, warmup=0, rep_timeout=600.0)
    if rep.failures:
        raise RuntimeError(f"{arm.label}: {rep.failures} failures: {rep.clients}")
    return rep


def run(
    ws: Workspace, selected: Sequence[Comparison], rounds: int, files: Path, count: int
) -> None:
    servers = {
        "dicomio": ws.python_server("paired-dicomio", "dicomio-scp", ["--mode", "discard"]),
        "storescp": ws.dcmtk_server(
            "paired-storescp", "storescp", ["-aet", SCP_TITLE, "-pdu", "131072", "--ignore"]
        ),
    }
    for comparison in selected:
        between = (lambda: _warm(files, count)) if comparison.warm else None
        # One of each first, not counted: start-up, imports, first associations.
        for arm in (comparison.ours, comparison.theirs):
            _measure(ws, arm, servers, between)
        for index in range(rounds):
            arms = [comparison.ours, comparison.theirs]
            if index % 2:
                arms.reverse()
            reps = {arm.label: _measure(ws, arm, servers, between) for arm in arms}
            ours, theirs = reps[comparison.ours.label], reps[comparison.theirs.label]
            cpu = comparison.cpu_per
            last = {
                "ours_rate": _rate(ours),
                "theirs_rate": _rate(theirs),
                "ours_cpu": cpu(ours) if cpu else 0.0,
                "theirs_cpu": cpu(theirs) if cpu else 0.0,
            }
            comparison.rounds.append(last)
            line = (
                f"  {comparison.name} round {index + 1}: {last['ours_rate']:,.0f} vs "
                f"{last['theirs_rate']:,.0f} {comparison.unit} "
                f"({last['ours_rate'] / max(last['theirs_rate'], 1e-9):.2f}x)"
            )
            if cpu:
                line += (
                    f"; {comparison.cpu_label} {last['ours_cpu']:.3g} vs {last['theirs_cpu']:.3g}"
                )
            print(line, flush=True)


def _summary(comparison: Comparison) -> dict[str, Any]:
    rounds = comparison.rounds
    rate_ratios = [r["ours_rate"] / r["theirs_rate"] for r in rounds if r["theirs_rate"]]
    cpu_ratios = [r["ours_cpu"] / r["theirs_cpu"] for r in rounds if r["theirs_cpu"]] or [0.0]
    return {
        "name": comparison.name,
        "what": comparison.what,
        "unit": comparison.unit,
        "ours": comparison.ours.label,
        "theirs": comparison.theirs.label,
        "cpu_label": comparison.cpu_label,
        "rounds": rounds,
        "ours_rate": statistics.median(r["ours_rate"] for r in rounds),
        "theirs_rate": statistics.median(r["theirs_rate"] for r in rounds),
        "rate_ratio": statistics.median(rate_ratios),
        "rate_ratio_range": [min(rate_ratios), max(rate_ratios)],
        "rate_ratio_above_1": sum(x >= 1 for x in rate_ratios),
        "ours_cpu": statistics.median(r["ours_cpu"] for r in rounds),
        "theirs_cpu": statistics.median(r["theirs_cpu"] for r in rounds),
        "cpu_ratio": statistics.median(cpu_ratios),
        "cpu_ratio_range": [min(cpu_ratios), max(cpu_ratios)],
    }


def markdown(meta: dict[str, Any], summaries: list[dict[str, Any]]) -> str:
    lines = [
        "# dicomio against DCMTK, measured in pairs (issue #18)",
        "",
        f"Generated by `{meta['command']}` on {meta['date']}, in {meta['seconds']:.0f} s: "
        f"{meta['rounds']} rounds, each arm measured once per round, the two arms in "
        "alternating order. Load (1-minute average) at the start and end: "
        f"{meta['load_start']:.2f} and {meta['load_end']:.2f} on {os.cpu_count()} cores.",
        "",
        "Ratios are dicomio's over DCMTK's, taken within each round, then the median over the "
        "rounds (and the lowest and highest). A rate ratio above 1x and a CPU ratio below 1x "
        "are dicomio's advantage.",
        "",
        "| comparison | dicomio arm | DCMTK arm | dicomio | DCMTK | rate ratio (range) | "
        "rounds ≥ 1x | server CPU | CPU ratio (range) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        low, high = s["rate_ratio_range"]
        cpu_low, cpu_high = s["cpu_ratio_range"]
        cpu = (
            f"{s['cpu_label']}: {s['ours_cpu']:.3g} vs {s['theirs_cpu']:.3g} | "
            f"**{s['cpu_ratio']:.2f}x** ({cpu_low:.2f}-{cpu_high:.2f})"
            if s["cpu_label"]
            else "(the same server) | —"
        )
        lines.append(
            f"| {s['name']} | {s['ours']} | {s['theirs']} | {s['ours_rate']:,.0f} {s['unit']} "
            f"| {s['theirs_rate']:,.0f} {s['unit']} | **{s['rate_ratio']:.2f}x** "
            f"({low:.2f}-{high:.2f}) | {s['rate_ratio_above_1']}/{len(s['rounds'])} | {cpu} |"
        )
    lines += ["", "## What is compared", ""]
    lines += [f"- **{s['name']}**: {s['what']}." for s in summaries]
    env = meta["environment"]
    lines += [
        "",
        "## Environment",
        "",
        "| " + " | ".join(env) + " |",
        "|" + "---|" * len(env),
        "| " + " | ".join(str(v) for v in env.values()) + " |",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.paired")
    parser.add_argument("--rounds", type=int, default=7, help="measured rounds (default 7)")
    parser.add_argument("--only", help="comma-separated comparisons (default: all)")
    parser.add_argument("--count", type=int, default=1000, help="0.5 MiB instances per S3 rep")
    parser.add_argument("--echoes", type=int, default=5000, help="C-ECHOs per S1 rep")
    parser.add_argument("--associations", type=int, default=300, help="associations per S2 rep")
    parser.add_argument("--output-dir", type=Path, default=HERE)
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / f"dicomio-bench-cache-{os.getuid()}",
    )
    args = parser.parse_args(argv)
    files = data.store_set(args.cache, S3_SIZE, args.count)[0].parent
    every = comparisons(files, args.count, args.echoes, args.associations)
    wanted = {w.strip() for w in args.only.split(",")} if args.only else None
    selected = [c for c in every if wanted is None or c.name in wanted]
    if wanted is not None and len(selected) != len(wanted):
        print(
            f"unknown comparisons in {args.only}; known: {[c.name for c in every]}",
            file=sys.stderr,
        )
        return 2
    meta = report.run_meta("benchmarks.paired", argv, rounds=args.rounds)
    started = time.monotonic()
    ws = Workspace(Path(tempfile.mkdtemp(prefix="dicomio-paired-")), args.cache)
    try:
        run(ws, selected, args.rounds, files, args.count)
    finally:
        ws.close()
    meta["seconds"] = time.monotonic() - started
    meta["load_end"] = os.getloadavg()[0]
    summaries = [_summary(c) for c in selected if c.rounds]
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "results-paired.json").write_text(
        json.dumps({"meta": meta, "comparisons": summaries}, indent=1)
    )
    (args.output_dir / "RESULTS-paired.md").write_text(markdown(meta, summaries))
    for s in summaries:
        cpu = f", {s['cpu_label']} {s['cpu_ratio']:.2f}x" if s["cpu_label"] else ""
        print(f"{s['name']}: rate {s['rate_ratio']:.2f}x{cpu}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
