"""Issue #17 benchmarks: ``dicomio qrscp`` scaled out (``--workers``, ``--db``) against dcmqrscp.

Five servers, each in its own processes: qrscp on SQLite with 1 and 2 workers, qrscp on
PostgreSQL with 1 and 2 workers, and DCMTK dcmqrscp (which forks a process per association).

B1 ingest: 8 DCMTK storescu processes at once (``TCP_NODELAY=1``), one association each, send
   their shares of K MR instances of 0.5 MiB (512 x 512 x 16 bits, distinct UIDs) into an
   empty archive: instances/s and MiB/s. Afterwards the index must hold exactly K instances.
B2 C-FIND latency over 10,000 studies / 100,000 instances (2 series of 5 per study), seeded
   by bulk SQL (the index's own tables; no files: C-FIND does not read them): STUDY-level
   exact PatientID (1 study), PatientName wildcard (1 %), a StudyDate range (0.8 %), and an
   IMAGE-level query by SeriesInstanceUID (5 instances). One dicomio client on one
   association, then 8 clients (processes) at once. dcmqrscp caps one storage area at 500
   studies, so it is measured at 500 (seeded through storescu), and qrscp on SQLite too, for
   a ratio at the same size.

CPU: the seconds each server process used during the measurement (``/proc/PID/stat``
utime+stime, read before the server stops; a supervisor's workers are its children, read
separately; dcmqrscp's forked children are summed into it), PostgreSQL's (its postmaster
and every process of the cluster, exited ones included through cutime/cstime) and the
clients' (storescu through ``wait4``, dicomio clients their own ``getrusage``).

``python -m benchmarks.scaleout [--quick] [--reps N]`` writes ``RESULTS-scaleout.md`` and
``results-scaleout.json`` (quick: ``-quick`` in both names) in this folder. A section of the
report headed ``## Reading`` is kept across runs: it is written by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.runner import dcmtk_tool
from benchmarks.scaleout_data import (
    CLIENTS,
    MIB,
    PER_SERIES,
    SERIES_PER_STUDY,
    instance,
    queries,
    seed_index,
    write_shares,
)
from benchmarks.scaleout_report import kept_reading, report
from benchmarks.scaleout_servers import (
    DCMQRSCP,
    DCMQRSCP_STUDIES,
    DCMTK_ENV,
    MAX_PDU,
    Postgres,
    Server,
    delta,
    postgres,
    serving,
    started,
)

HERE = Path(__file__).resolve().parent
#: (label, index, workers); index "dcmqrscp" is DCMTK's server.
CONFIGS: tuple[tuple[str, str, int], ...] = (
    ("qrscp SQLite, 1 worker", "sqlite", 1),
    ("qrscp SQLite, 2 workers", "sqlite", 2),
    ("qrscp PostgreSQL, 1 worker", "postgres", 1),
    ("qrscp PostgreSQL, 2 workers", "postgres", 2),
    # dcmqrscp names a stored file by a random number seeded with the time in seconds:
    # processes forked for associations storing into one area at once pick the same names
    # and lose instances (seen: 155 of 160 held, C-STORE failures "Index database error").
    # So B1 gives it a storage area per client (an AE title each); B2 uses one.
    (f"dcmqrscp, {CLIENTS} storage areas", DCMQRSCP, CLIENTS),
)

# -- B1: ingest ------------------------------------------------------------------------------


def run_storescus(shares: Sequence[Path], server: Server, timeout: float) -> tuple[float, float]:
    """All of ``shares`` sent at once, one storescu each; (seconds, the clients' CPU)."""
    procs = []
    # Their output goes to files: a pipe read one process after another could fill and
    # block the others.
    with contextlib.ExitStack() as stack:
        outputs = [stack.enter_context(tempfile.TemporaryFile()) for _ in shares]
        start = time.perf_counter()
        for n, share in enumerate(shares):
            aet = server.aets[n % len(server.aets)]
            argv = [dcmtk_tool("storescu"), "-aec", aet, "-pdu", str(MAX_PDU), "+sd"]
            procs.append(
                subprocess.Popen(
                    [*argv, "127.0.0.1", str(server.port), str(share)],
                    stdout=subprocess.DEVNULL,
                    stderr=outputs[n],
                    env=DCMTK_ENV,
                )
            )
        timers = [threading.Timer(timeout, p.kill) for p in procs]
        for timer in timers:
            timer.start()
        cpu = 0.0
        try:
            for proc in procs:
                _, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
                cpu += usage.ru_utime + usage.ru_stime
        finally:
            for timer in timers:
                timer.cancel()
            for proc in procs:
                if proc.returncode is None:
                    proc.kill()
                    proc.wait()
        elapsed = time.perf_counter() - start
        failures = []
        for proc, output in zip(procs, outputs, strict=True):
            output.seek(0)
            text = output.read()
            bad = [line for line in text.splitlines() if line.startswith((b"E:", b"F:"))]
            if proc.returncode != 0 or bad:
                failures.append(f"exit {proc.returncode}: {(b' '.join(bad) or text)[-300:]!r}")
    if failures:
        raise RuntimeError(f"storescu into {server.index}: {'; '.join(failures)}")
    return elapsed, cpu


def ingest(
    config: tuple[str, str, int], shares: list[Path], count: int, work: Path, pg: Postgres | None
) -> dict[str, Any]:
    """One B1 measurement into a fresh archive: rate, CPU per process, instances held."""
    _, index, workers = config
    with serving(index, workers, work, pg) as server:
        before, pg_before = server.cpu(), pg.cpu() if pg and index == "postgres" else 0.0
        elapsed, clients_cpu = run_storescus(shares, server, timeout=600)
        cpu = delta(before, server.cpu(settled=True))
        if pg and index == "postgres":
            cpu["postgres"] = pg.cpu() - pg_before
        cpu["clients"] = clients_cpu
        held = server.count()
    if held != count:
        raise RuntimeError(f"{config[0]} holds {held} instances after ingest, not {count}")
    return {"seconds": elapsed, "cpu": cpu, "held": held, "cores": busy(cpu, elapsed)}


# -- B2: C-FIND latency ----------------------------------------------------------------------


def find_client() -> None:
    """A find client process (``python -m benchmarks.scaleout find-client``): for each line
    ``PORT AET STUDIES ROUNDS`` on standard input, associate, say "ready", wait for "go", run
    ROUNDS of every query on the association, release, and print one JSON line: the
    latencies (s) and matches per query and the CPU used, or the error."""
    import anyio

    from dicomio import AE
    from dicomio.sop import StudyRootQueryRetrieveInformationModelFind as FIND

    ae = AE("BENCHFIND")
    ae.add_requested_context(FIND)

    async def one(port: int, aet: str, studies: int, rounds: int) -> dict[str, Any]:
        asked = queries(studies)
        times: dict[str, list[float]] = {name: [] for name in asked}
        matches: dict[str, int] = {}
        async with ae.associate("127.0.0.1", port, ae_title=aet) as assoc:
            print("ready", flush=True)
            if sys.stdin.readline().strip() != "go":
                raise SystemExit("expected go")
            cpu0 = resource.getrusage(resource.RUSAGE_SELF)
            for _ in range(rounds):
                for name, query in asked.items():
                    found = 0
                    start = time.perf_counter()
                    async for status, _identifier in assoc.send_c_find(query, FIND):
                        if status.Status in (0xFF00, 0xFF01):
                            found += 1
                        elif status.Status != 0:
                            raise RuntimeError(f"C-FIND {name}: status {status.Status:#06x}")
                    times[name].append(time.perf_counter() - start)
                    matches[name] = found
            cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
        return {"times": times, "matches": matches, "cpu": cpu}

    for line in sys.stdin:
        if not line.strip():
            continue
        port, aet, studies, rounds = line.split()
        try:
            result = anyio.run(one, int(port), aet, int(studies), int(rounds))
        except Exception as exc:
            result = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(result), flush=True)


class FindClients:
    """``CLIENTS`` find client processes, started once for all of B2's servers: each costs
    about a second of CPU to start (imports), which would otherwise land in the
    measurements' neighbourhood eight times per server."""

    def __init__(self) -> None:
        command = [sys.executable, "-m", "benchmarks.scaleout", "find-client"]
        self.procs = [
            subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            for _ in range(CLIENTS)
        ]

    def close(self) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            assert proc.stdout is not None
            proc.stdout.close()

    def run(
        self, server: Server, studies: int, clients: int, rounds: int, pg: Postgres | None
    ) -> dict[str, Any]:
        """The first ``clients`` at once (an association each): their latencies pooled per
        query, the matches, the queries per second, and every process's CPU meanwhile."""
        procs = self.procs[:clients]
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(f"{server.port} {server.aet} {studies} {rounds}\n")
            proc.stdin.flush()
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # the client's own timeouts bound this
            if line.strip() != "ready":
                raise RuntimeError(f"a find client did not associate with {server.index}: {line}")
        before = server.cpu()
        pg_before = pg.cpu() if pg and server.index == "postgres" else 0.0
        start = time.perf_counter()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            assert proc.stdout is not None
            results.append(json.loads(proc.stdout.readline()))
        elapsed = time.perf_counter() - start
        cpu = delta(before, server.cpu())
        if pg and server.index == "postgres":
            cpu["postgres"] = pg.cpu() - pg_before
        errors = [r["error"] for r in results if "error" in r]
        if errors:
            raise RuntimeError(f"find clients against {server.index}: {errors}")
        names = results[0]["times"]
        times = {name: [t for r in results for t in r["times"][name]] for name in names}
        cpu["clients"] = sum(r["cpu"] for r in results)
        return {
            "times": times,
            "matches": results[0]["matches"],
            "cpu": cpu,
            "throughput": sum(len(v) for v in times.values()) / elapsed,
            "cores": busy(cpu, elapsed),
        }


def seed_dcmqrscp(server: Server, files: Path, studies: int) -> None:
    """dcmqrscp's B2 archive, through the network (it has no bulk path): small instances,
    on one association (parallel stores into one area lose instances: see ``CONFIGS``)."""
    files.mkdir(parents=True, exist_ok=True)
    for study in range(studies):
        for series in range(SERIES_PER_STUDY):
            for number in range(PER_SERIES):
                path = files / f"{study:05d}-{series}-{number}.dcm"
                instance(study, series, number, None).save_as(path, enforce_file_format=True)
    run_storescus([files], server, timeout=600)
    held = server.count()
    if held != studies * SERIES_PER_STUDY * PER_SERIES:
        raise RuntimeError(f"dcmqrscp holds {held} instances after seeding")


# -- the run ---------------------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def busy(cpu: dict[str, float], seconds: float) -> float:
    """How many cores the server (PostgreSQL included, clients not) kept busy on average."""
    return sum(v for name, v in cpu.items() if name != "clients") / seconds


def median_cpu(runs: list[dict[str, float]]) -> dict[str, float]:
    return {name: statistics.median(r.get(name, 0.0) for r in runs) for name in runs[0]}


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def settings(quick: bool = False, reps: int | None = None) -> dict[str, int]:
    """Sizes: B1 ``count`` instances, ``per_study`` to a study, ``reps`` runs after
    ``warmup``; B2 ``studies`` (dcmqrscp and the equal-size row: ``small``), ``rounds`` of
    the queries for one client, ``rounds_each`` for each of the 8."""
    if quick:
        # 8 studies of 20: one to each client. 1,000 studies for B2; dcmqrscp 100.
        base = {"count": 160, "per_study": 20, "reps": 1, "warmup": 0}
        base |= {"studies": 1_000, "small": 100, "rounds": 5, "rounds_each": 2}
    else:
        base = {"count": 2_000, "per_study": 20, "reps": 5, "warmup": 1}
        base |= {"studies": 10_000, "small": DCMQRSCP_STUDIES, "rounds": 40, "rounds_each": 10}
    if reps is not None:
        base["reps"] = reps
    return base


def b1(
    work: Path, pg: Postgres | None, s: dict[str, int], configs: Sequence[tuple[str, str, int]]
) -> list[dict[str, Any]]:
    files = work / "b1"
    size = write_shares(files, s["count"], CLIENTS, pixels=True, per_study=s["per_study"])
    shares = sorted(files.iterdir())
    for _ in range(s["warmup"]):  # the files into the page cache, the server's code too
        ingest(configs[0], shares, s["count"], work, pg)
    runs: dict[str, list[dict[str, Any]]] = {c[0]: [] for c in configs}
    for _ in range(s["reps"]):  # configurations interleaved, so that load spreads over all
        for config in configs:
            runs[config[0]].append(ingest(config, shares, s["count"], work, pg))
    shutil.rmtree(files)
    rows = []
    for label, measured in runs.items():
        rates = [s["count"] / m["seconds"] for m in measured]
        rows.append(
            {
                "scenario": "B1",
                "config": label,
                "unit": "instances/s",
                "median": statistics.median(rates),
                "min": min(rates),
                "max": max(rates),
                "runs": len(rates),
                "mib_s": statistics.median(rates) * size / s["count"] / MIB,
                "instances": s["count"],
                "bytes": size,
                "held": [m["held"] for m in measured],
                "cpu": median_cpu([m["cpu"] for m in measured]),
                "cores": statistics.median(m["cores"] for m in measured),
            }
        )
    return rows


def b2(
    work: Path, pg: Postgres | None, s: dict[str, int], configs: Sequence[tuple[str, str, int]]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    variants = (("1 client", 1, s["rounds"]), (f"{CLIENTS} clients", CLIENTS, s["rounds_each"]))

    def measure(label: str, server: Server, studies: int) -> None:
        for variant, clients, rounds in variants:
            result = pool.run(server, studies, clients, rounds, pg)
            rows.append(
                {
                    "scenario": "B2 CPU",
                    "variant": variant,
                    "config": label,
                    "studies": studies,
                    "throughput": result["throughput"],
                    "cpu": result["cpu"],
                    "cores": result["cores"],
                }
            )
            for name, times in result["times"].items():
                ms = [t * 1000 for t in times]
                rows.append(
                    {
                        "scenario": "B2",
                        "variant": variant,
                        "config": label,
                        "studies": studies,
                        "query": name,
                        "unit": "ms",
                        "median": statistics.median(ms),
                        "p95": percentile(ms, 0.95),
                        "min": min(ms),
                        "max": max(ms),
                        "runs": len(ms),
                        "matches": result["matches"][name],
                    }
                )

    pool = FindClients()
    try:
        seeded: dict[str, str | None] = {}
        for label, index, workers in configs:
            if index == DCMQRSCP:
                with serving(index, 1, work, pg) as server:
                    seed_dcmqrscp(server, work / "b2-dcmqrscp", s["small"])
                    measure(DCMQRSCP, server, s["small"])
                continue
            root = work / f"b2-{index}"
            if index not in seeded:
                # One seeded index per backend, served by 1 and then 2 workers.
                seeded[index] = pg.new_database() if index == "postgres" and pg else None
                seed_index(seeded[index], root / "data", s["studies"])
            with started(Server(index, workers, root, seeded[index])) as server:
                measure(label, server, s["studies"])
        # qrscp at dcmqrscp's size, for a ratio at equal size.
        seed_index(None, work / "b2-small" / "data", s["small"])
        with started(Server("sqlite", 1, work / "b2-small")) as server:
            measure(f"qrscp SQLite, 1 worker, {s['small']} studies", server, s["small"])
    finally:
        pool.close()
    return rows


def run(
    s: dict[str, int], only: str = "B1,B2", labels: Sequence[str] | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The selected scenarios with sizes ``s`` (``settings``) on the servers of ``CONFIGS``
    (those ``labels`` name, default all); (rows, facts about the run for the report)."""
    for tool in ("storescu", "dcmqrscp"):
        dcmtk_tool(tool)  # DCMTK missing: say so before anything starts
    facts: dict[str, Any] = {"settings": s, "load_before": load(), "cores": os.cpu_count()}
    t0 = time.monotonic()
    rows: list[dict[str, Any]] = []
    wanted = [c for c in CONFIGS if labels is None or c[0] in labels]
    with tempfile.TemporaryDirectory(prefix="dicomio-bench-scaleout-") as tmp, postgres() as pg:
        work = Path(tmp)
        configs = [c for c in wanted if c[1] != "postgres" or pg is not None]
        facts["skipped"] = [c[0] for c in wanted if c not in configs]
        if "B1" in only:
            rows += b1(work, pg, s, configs)
            facts["load_after_b1"] = load()
        if "B2" in only:
            rows += b2(work, pg, s, configs)
    facts["load_after"] = load()
    facts["seconds"] = time.monotonic() - t0
    return rows, facts


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["find-client"]:
        find_client()
        return
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaleout", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    parser.add_argument("--reps", type=int, help="B1 measured runs per server (default 5)")
    parser.add_argument("--only", default="B1,B2", help="B1, B2 or both (default)")
    parser.add_argument("--output-dir", type=Path, default=HERE)
    args = parser.parse_args(argv)
    suffix = "-quick" if args.quick else ""
    markdown = args.output_dir / f"RESULTS-scaleout{suffix}.md"
    rows, facts = run(settings(args.quick, args.reps), args.only)
    facts["quick"] = args.quick
    facts["date"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = report(rows, facts, kept_reading(markdown))
    args.output_dir.mkdir(parents=True, exist_ok=True)
    markdown.write_text(text)
    (args.output_dir / f"results-scaleout{suffix}.json").write_text(
        json.dumps({"facts": facts, "rows": rows}, indent=2) + "\n"
    )
    print(text)


if __name__ == "__main__":
    main()
