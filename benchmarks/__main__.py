"""``python -m benchmarks run [--quick] [--only S1,S3] [...]``: run and write the report.

A full run writes ``benchmarks/RESULTS.md`` and ``results.json``; a quick run writes
``RESULTS-quick.md`` and ``results-quick.json`` so that it never replaces full results. With
``--only``, the new rows replace those scenarios' rows in the existing file of that mode.

Exit status: 0 when every selected measurement was taken (whether or not targets are met),
1 when some measurement could not be taken (a server did not start, a client failed or timed
out), 2 on a harness bug or interruption. Every process started is stopped on the way out.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import FrameType

from benchmarks import async_ops, concurrency, core, echo, find, report, store, workers
from benchmarks.model import SCENARIOS, Row, Settings
from benchmarks.runner import Workspace

FAMILIES = (
    (("S1", "S2"), echo.run),
    (("S3", "S4"), store.run),
    (("S5", "S8"), find.run),
    (("S6",), concurrency.run),
    (("S2", "S6"), workers.run),
    (("S7",), async_ops.run),
    (("CORE",), core.run),
)
HERE = Path(__file__).resolve().parent


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the benchmarks and write RESULTS.md/results.json")
    run.add_argument("--quick", action="store_true", help="fewer, smaller runs (< 2 minutes)")
    run.add_argument("--only", help=f"comma-separated subset of {','.join(SCENARIOS)}")
    run.add_argument("--reps", type=int, help="measured repetitions (default 5, quick 3)")
    run.add_argument("--warmup", type=int, help="warm-up repetitions (default 1)")
    run.add_argument("--s4-mb", type=float, help="S4 instance size in MiB (default 100, quick 20)")
    run.add_argument("--s4-count", type=int, default=5, help="S4 instances per repetition")
    run.add_argument("--s6", help="S6 association counts (default 100,1000,10000; quick 100)")
    run.add_argument(
        "--output-dir",
        type=Path,
        default=HERE,
        help="where RESULTS.md/results.json go (quick: RESULTS-quick.md ...)",
    )
    run.add_argument(
        "--cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / f"dicomio-bench-cache-{os.getuid()}",
        help="generated data sets, kept between runs",
    )
    run.add_argument("--keep", action="store_true", help="keep the scratch folder and logs")
    return parser.parse_args(argv)


def _settings(args: argparse.Namespace) -> Settings:
    quick = args.quick
    sizes = args.s6 or ("100" if quick else "100,1000,10000")
    return Settings(
        quick=quick,
        reps=args.reps or (3 if quick else 5),
        warmup=1 if args.warmup is None else args.warmup,
        cache=args.cache,
        s4_mb=args.s4_mb or (20.0 if quick else 100.0),
        s4_count=args.s4_count,
        s6_sizes=tuple(int(s) for s in sizes.split(",")),
        rep_timeout=60.0 if quick else 600.0,
    )


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    settings = _settings(args)
    selected = set(SCENARIOS)
    if args.only:
        selected = {s.strip().upper() for s in args.only.split(",") if s.strip()}
        unknown = selected - set(SCENARIOS)
        if unknown:
            print(f"unknown scenarios: {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
    mode = "quick" if settings.quick else "full"
    rows: list[Row] = []
    if args.only:
        rows = [r for r in report.load_rows(args.output_dir, mode) if r.scenario not in selected]
    signal.signal(signal.SIGTERM, _terminate)
    scratch = Path(tempfile.mkdtemp(prefix="dicomio-bench-"))
    ws = Workspace(scratch, settings.cache)
    started = time.monotonic()
    meta = report.run_meta(
        "benchmarks", argv, mode=mode, reps=settings.reps, warmup=settings.warmup
    )
    status = 0
    try:
        for scenarios, family in FAMILIES:
            wanted = selected & set(scenarios)
            if not wanted:
                continue
            print(f"running {', '.join(sorted(wanted))} ...", flush=True)
            family_started = time.monotonic()
            new = family(settings, ws, wanted)
            # S2 and S6 come from two families each: add to, never replace, this run's rows
            # (those of an earlier --only run were left out above).
            rows += new
            for row in new:
                if row.status == "error":
                    print(
                        f"  error: {row.scenario} {row.variant} {row.client} → {row.server}: "
                        f"{row.note}",
                        file=sys.stderr,
                    )
            print(f"  done in {time.monotonic() - family_started:.1f} s", flush=True)
            _write(args.output_dir, meta, rows, started)
        if any(r.status == "error" for r in rows if r.scenario in selected):
            status = 1
    except KeyboardInterrupt:
        print("interrupted: stopping every process", file=sys.stderr)
        status = 2
    except Exception:
        traceback.print_exc()
        status = 2
    finally:
        ws.close()
        if args.keep or status:
            print(f"scratch folder and logs kept in {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    if rows:
        _write(args.output_dir, meta, rows, started)
    order = {s: i for i, s in enumerate(SCENARIOS)}
    written = report.paths(args.output_dir, mode)[0]
    print(f"wrote {written} in {time.monotonic() - started:.0f} s")
    for goal in report.targets(sorted(rows, key=lambda r: order[r.scenario])):
        print(f"  {goal['status']:>13}: {goal['target']}: {goal['measured']}")
    return status


def _write(directory: Path, meta: dict[str, object], rows: list[Row], started: float) -> None:
    meta = {**meta, "runtime_s": time.monotonic() - started, "load_end": os.getloadavg()[0]}
    order = {s: i for i, s in enumerate(SCENARIOS)}
    report.write(directory, meta, sorted(rows, key=lambda r: order[r.scenario]))


if __name__ == "__main__":
    sys.exit(main())
