"""Clients under test, one per process: ``python -m benchmarks.clients KIND [options]``.

Kinds: ``{dicomio,pynetdicom,dcmtk}-{echo,assoc,store,find}``, ``dicomio-many`` (S6),
``dicomio-async`` (S7), ``{dicomio,pynetdicom}-fanout`` (S8). A ``dcmtk-*`` kind runs the
DCMTK tool (by absolute path) once per repetition and reports that child's CPU time and peak
RSS (``wait4``); its elapsed time includes the tool's start-up and association.

The harness drives repetitions over stdin/stdout, one JSON line each way per step, so that it
can sample the server between them:

    client: {"phase": "begin"}          (set up, e.g. associated; nothing in flight)
    harness: go
    client: {"phase": "end", "elapsed": s, "count": n, "failures": f, ...}
    ...  (``--reps`` times)
    client: {"phase": "done"}

Timed sections are bounded: every network wait has dicomio's or pynetdicom's own timeout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.data import PATIENT_ID, SERIES_UID, STUDY_UID, find_query
from benchmarks.peers import (
    CT_IMAGE_STORAGE,
    MAX_PDU,
    STUDY_ROOT_FIND,
    VERIFICATION,
    set_up_process,
)
from benchmarks.runner import DCMTK_ENV, dcmtk_tool

EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
CALLING_AE = "BENCHSCU"
#: DCMTK's largest receive PDU (its tools accept 4096..131072).
DCMTK_MAX_PDU = 131_072
#: GNU time, for the peak RSS of a DCMTK tool.
TIME = "/usr/bin/time"


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fp:
        for line in fp:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Reps:
    """The client side of the begin/go/end protocol (see the module docstring)."""

    def __init__(self) -> None:
        self._t0 = self._cpu0 = 0.0
        self._idle_kb = 0

    def begin(self) -> None:
        print(json.dumps({"phase": "begin"}), flush=True)
        line = sys.stdin.readline()
        if line.strip() != "go":
            raise SystemExit(f"expected 'go' from the harness, got {line!r}")
        try:
            # Reset VmHWM to the current RSS (Linux >= 4.0) so that peak RSS is per repetition.
            with open("/proc/self/clear_refs", "w") as fp:
                fp.write("5")
        except OSError:
            pass
        self._idle_kb = _status_kb("VmRSS")
        self._cpu0 = _cpu()
        self._t0 = time.monotonic()

    def end(self, count: int, failures: int = 0, **extra: Any) -> None:
        t1 = time.monotonic()
        record = {
            "phase": "end",
            "start": self._t0,
            "end": t1,
            "elapsed": t1 - self._t0,
            "count": count,
            "failures": failures,
            "cpu_s": _cpu() - self._cpu0,
            "peak_kb": _status_kb("VmHWM"),
            "idle_kb": self._idle_kb,
        }
        record.update(extra)
        print(json.dumps(record), flush=True)

    @staticmethod
    def done() -> None:
        print(json.dumps({"phase": "done"}), flush=True)


def _error_name(exc: BaseException) -> str:
    """The exception type and its message without numbers (ports, counts), for tallies."""
    message = re.sub(r"[0-9]+(\.[0-9]+)*", "N", str(exc))[:60]
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


# -- dicomio -------------------------------------------------------------------------------


def _dicomio_ae(args: argparse.Namespace) -> Any:
    from dicomio import AE

    ae = AE(CALLING_AE)
    ae.add_requested_context(VERIFICATION)
    # Only the files' own syntax: the data set is sent as it stands, never re-encoded.
    ae.add_requested_context(CT_IMAGE_STORAGE, EXPLICIT_VR_LE)
    ae.add_requested_context(STUDY_ROOT_FIND)
    if getattr(args, "window", 0):
        ae.async_ops_window = (args.window, args.window)
    if args.kind == "dicomio-many":
        # S6 runs 10,000 associations at once on 2 shared cores: the server serves them all
        # in turn, so a set-up or a C-ECHO can wait tens of seconds for its share of CPU
        # (slowest set-up seen: 31 s), longer than the 30 s defaults. A load test sets its
        # timeouts to its load.
        from dicomio import Timeouts

        ae.timeouts = Timeouts(connect=300.0, acse=300.0, dimse=300.0)
    return ae


def dicomio_client(args: argparse.Namespace) -> None:
    import anyio

    reps = Reps()
    ae = _dicomio_ae(args)
    kind = args.kind.removeprefix("dicomio-")

    async def associate() -> Any:
        return await ae.associate(args.host, args.port, ae_title=args.called)

    async def echo_rep() -> None:
        assoc = await associate()
        reps.begin()
        done = failures = 0
        try:
            for _ in range(args.count):
                status = await assoc.send_c_echo()
                done += 1
                failures += status.Status != 0
        except Exception as exc:
            reps.end(done, failures + args.count - done, error=_error_name(exc))
            await assoc.abort()
            return
        reps.end(done, failures)
        await assoc.release()

    async def assoc_rep() -> None:
        reps.begin()
        done = failures = 0
        errors: Counter[str] = Counter()
        for _ in range(args.count):
            try:
                async with ae.associate(args.host, args.port, ae_title=args.called) as assoc:
                    status = await assoc.send_c_echo()
                    failures += status.Status != 0
                done += 1
            except Exception as exc:
                failures += 1
                errors[_error_name(exc)] += 1
        reps.end(done, failures, errors=dict(errors))

    async def store_rep() -> None:
        paths = _paths(args)
        items: list[Any] = list(paths)
        if args.dataset:
            from pydicom import dcmread

            # The caller holds the Datasets already: reading them is not timed.
            items = [dcmread(path) for path in paths]
        assoc = await associate()
        reps.begin()
        done = failures = 0
        try:
            for item in items:
                status = await assoc.send_c_store(item)
                done += 1
                failures += status.Status != 0
        except Exception as exc:
            reps.end(
                done,
                failures + len(paths) - done,
                error=_error_name(exc),
                bytes=_size(paths[:done]),
            )
            await assoc.abort()
            return
        reps.end(done, failures, bytes=_size(paths))
        await assoc.release()

    async def find_rep() -> None:
        query = find_query()
        assoc = await associate()
        reps.begin()
        matches = failures = 0
        try:
            async for status, _identifier in assoc.send_c_find(query, STUDY_ROOT_FIND):
                if status.Status in (0xFF00, 0xFF01):
                    matches += 1
                elif status.Status != 0:
                    failures += 1
        except Exception as exc:
            reps.end(matches, failures + 1, error=_error_name(exc))
            await assoc.abort()
            return
        reps.end(matches, failures + (matches != args.count))
        await assoc.release()

    async def many_rep() -> None:
        """S6: ``--count`` associations at once, each doing ``--echoes`` C-ECHOs.

        Also reports the slowest association set-up (TCP connect to A-ASSOCIATE-AC), the
        slowest C-ECHO, and the most associations this process had established at once.
        """
        errors: Counter[str] = Counter()
        completed = established = peak = 0
        slowest_setup = slowest_echo = 0.0

        async def one() -> None:
            nonlocal completed, established, peak, slowest_setup, slowest_echo
            started = time.monotonic()
            try:
                async with ae.associate(args.host, args.port, ae_title=args.called) as assoc:
                    now = time.monotonic()
                    slowest_setup = max(slowest_setup, now - started)
                    established += 1
                    peak = max(peak, established)
                    try:
                        for _ in range(args.echoes):
                            sent = now
                            status = await assoc.send_c_echo()
                            now = time.monotonic()
                            slowest_echo = max(slowest_echo, now - sent)
                            if status.Status != 0:
                                errors["status"] += 1
                                return
                    finally:
                        established -= 1
                completed += 1
            except Exception as exc:
                errors[_error_name(exc)] += 1

        reps.begin()
        async with anyio.create_task_group() as tg:
            for _ in range(args.count):
                tg.start_soon(one)
        reps.end(
            completed,
            args.count - completed,
            errors=dict(errors),
            peak_established=peak,
            slowest_setup_s=slowest_setup,
            slowest_echo_s=slowest_echo,
        )

    async def async_rep() -> None:
        """S7: ``--count`` operations from ``--tasks`` tasks sharing one association."""
        dataset = None
        if args.op == "store":
            from pydicom import dcmread

            dataset = dcmread(_paths(args)[0])
        assoc = await associate()
        window = assoc.async_ops_window
        left = args.count
        failures = 0

        async def worker() -> None:
            nonlocal left, failures
            while left > 0:
                left -= 1
                if dataset is None:
                    status = await assoc.send_c_echo()
                else:
                    status = await assoc.send_c_store(dataset)
                failures += status.Status != 0

        reps.begin()
        try:
            async with anyio.create_task_group() as tg:
                for _ in range(args.tasks):
                    tg.start_soon(worker)
        except Exception as exc:
            reps.end(args.count - left, args.count, error=_error_name(exc), window=window)
            await assoc.abort()
            return
        reps.end(args.count, failures, window=list(window))
        await assoc.release()

    async def fanout_rep() -> None:
        """S8: one C-FIND to each target, all at once or one after another."""
        query = find_query()
        targets = _targets(args)
        matches = 0
        errors: Counter[str] = Counter()

        async def one(host: str, port: int) -> None:
            nonlocal matches
            try:
                async with ae.associate(host, port, ae_title=args.called) as assoc:
                    async for status, _identifier in assoc.send_c_find(query, STUDY_ROOT_FIND):
                        if status.Status in (0xFF00, 0xFF01):
                            matches += 1
            except Exception as exc:
                errors[_error_name(exc)] += 1

        reps.begin()
        if args.sequential:
            for host, port in targets:
                await one(host, port)
        else:
            async with anyio.create_task_group() as tg:
                for host, port in targets:
                    tg.start_soon(one, host, port)
        failures = sum(errors.values()) + (matches != args.count * len(targets))
        reps.end(matches, failures, errors=dict(errors), targets=len(targets))

    rep = {
        "echo": echo_rep,
        "assoc": assoc_rep,
        "store": store_rep,
        "find": find_rep,
        "many": many_rep,
        "async": async_rep,
        "fanout": fanout_rep,
    }[kind]

    async def main() -> None:
        for _ in range(args.reps):
            await rep()
        reps.done()

    anyio.run(main, backend_options={"use_uvloop": args.uvloop})


# -- pynetdicom ----------------------------------------------------------------------------


class _PynetdicomProblems(logging.Handler):
    """Counts pynetdicom's own warnings that explain a failure, for the report.

    "Received unexpected ... service message" followed by a DIMSE timeout is a pynetdicom
    race: the response arrived before its calling thread waited for it (seen against
    every server; pydicom/pynetdicom#875).
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "unexpected" in message:
            self.seen["pynetdicom: response arrived unexpected (its race, #875)"] += 1
        elif "timeout" in message.lower():
            self.seen["pynetdicom: DIMSE timeout"] += 1

    def take(self) -> dict[str, int]:
        seen, self.seen = dict(self.seen), Counter()
        return seen


def pynetdicom_client(args: argparse.Namespace) -> None:
    from pynetdicom import AE, _config

    problems = _PynetdicomProblems()
    logging.getLogger("pynetdicom").addHandler(problems)
    _config.LOG_HANDLER_LEVEL = "none"
    # Its documented switch for sending a file's data set without decoding it (S4).
    _config.STORE_SEND_CHUNKED_DATASET = args.chunked
    reps = Reps()
    ae = AE(CALLING_AE)
    ae.maximum_pdu_size = MAX_PDU
    ae.add_requested_context(VERIFICATION)
    ae.add_requested_context(CT_IMAGE_STORAGE, EXPLICIT_VR_LE)
    ae.add_requested_context(STUDY_ROOT_FIND)
    kind = args.kind.removeprefix("pynetdicom-")

    def associate(host: str | None = None, port: int | None = None) -> Any:
        assoc = ae.associate(host or args.host, port or args.port, ae_title=args.called)
        if not assoc.is_established:
            raise ConnectionError("association not established")
        return assoc

    def echo_rep() -> None:
        assoc = associate()
        reps.begin()
        done = failures = 0
        for _ in range(args.count):
            status = assoc.send_c_echo()
            if not status or "Status" not in status:
                break
            done += 1
            failures += status.Status != 0
        reps.end(done, failures + args.count - done, errors=problems.take())
        assoc.release()

    def assoc_rep() -> None:
        reps.begin()
        done = failures = 0
        errors: Counter[str] = Counter()
        for _ in range(args.count):
            try:
                assoc = associate()
            except ConnectionError:
                failures += 1
                errors["not established"] += 1
                continue
            status = assoc.send_c_echo()
            failures += not status or status.Status != 0
            assoc.release()
            done += 1
        reps.end(done, failures, errors={**errors, **problems.take()})

    def store_rep() -> None:
        paths = _paths(args)
        assoc = associate()
        reps.begin()
        done = failures = 0
        for path in paths:
            status = assoc.send_c_store(str(path))
            if not status or "Status" not in status:
                break
            done += 1
            failures += status.Status != 0
        reps.end(
            done, failures + len(paths) - done, bytes=_size(paths[:done]), errors=problems.take()
        )
        assoc.release()

    def find_one(assoc: Any) -> tuple[int, int]:
        matches = failures = 0
        for status, _identifier in assoc.send_c_find(find_query(), STUDY_ROOT_FIND):
            if not status or "Status" not in status:
                failures += 1
            elif status.Status in (0xFF00, 0xFF01):
                matches += 1
            elif status.Status != 0:
                failures += 1
        return matches, failures

    def find_rep() -> None:
        assoc = associate()
        reps.begin()
        matches, failures = find_one(assoc)
        reps.end(matches, failures + (matches != args.count), errors=problems.take())
        assoc.release()

    def fanout_rep() -> None:
        from concurrent.futures import ThreadPoolExecutor

        targets = _targets(args)

        def one(target: tuple[str, int]) -> tuple[int, int]:
            try:
                assoc = associate(*target)
            except ConnectionError:
                return 0, 1
            try:
                return find_one(assoc)
            finally:
                assoc.release()

        reps.begin()
        if args.sequential:
            results = [one(t) for t in targets]
        else:
            with ThreadPoolExecutor(len(targets)) as pool:
                results = list(pool.map(one, targets))
        matches = sum(m for m, _ in results)
        failures = sum(f for _, f in results) + (matches != args.count * len(targets))
        reps.end(matches, failures, targets=len(targets), errors=problems.take())

    rep: Callable[[], None] = {
        "echo": echo_rep,
        "assoc": assoc_rep,
        "store": store_rep,
        "find": find_rep,
        "fanout": fanout_rep,
    }[kind]
    for _ in range(args.reps):
        rep()
    reps.done()


# -- DCMTK ---------------------------------------------------------------------------------


def _run_tool(argv: list[str], timeout: float) -> tuple[int, str, float, int]:
    """Run one tool; (exit code, output, CPU seconds, its own peak RSS in KB).

    CPU comes from ``wait4``. Peak RSS comes from GNU time: a child forked from this Python
    process would report this process's RSS as its peak (the kernel keeps the high-water
    mark of the image it replaced at exec), a child of ``time`` does not.
    """
    with tempfile.TemporaryFile() as out, tempfile.NamedTemporaryFile("r") as usage_file:
        proc = subprocess.Popen(
            [TIME, "-f", "%M", "-o", usage_file.name, *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **DCMTK_ENV},
        )
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
        try:
            peak_kb = int(usage_file.read().split()[-1])
        except (ValueError, IndexError):
            peak_kb = 0
    return proc.returncode, text, usage.ru_utime + usage.ru_stime, peak_kb


def dcmtk_client(args: argparse.Namespace) -> None:
    reps = Reps()
    kind = args.kind.removeprefix("dcmtk-")
    common = ["-aet", CALLING_AE, "-aec", args.called, "-pdu", str(DCMTK_MAX_PDU)]
    where = [args.host, str(args.port)]
    runs: list[list[str]]
    paths: list[Path] = []
    if kind == "echo":
        runs = [[dcmtk_tool("echoscu"), *common, "--repeat", str(args.count), *where]]
    elif kind == "assoc":
        runs = [[dcmtk_tool("echoscu"), *common, *where]] * args.count
    elif kind == "store":
        paths = _paths(args)
        runs = [[dcmtk_tool("storescu"), *common, "-nh", *where, *map(str, paths)]]
    elif kind == "find":
        keys = [
            "-k",
            "QueryRetrieveLevel=IMAGE",
            "-k",
            f"PatientID={PATIENT_ID}",
            "-k",
            f"StudyInstanceUID={STUDY_UID}",
            "-k",
            f"SeriesInstanceUID={SERIES_UID}",
            "-k",
            "SOPInstanceUID",
            "-k",
            "InstanceNumber",
        ]
        # Quiet: logging each response at info level would cost findscu more than the
        # protocol. The count is then taken on trust from the final Success status.
        runs = [[dcmtk_tool("findscu"), "-S", *common, *keys, *where]]
    else:
        raise SystemExit(f"unknown DCMTK client {args.kind}")
    for _ in range(args.reps):
        reps.begin()
        cpu = 0.0
        peak = 0
        failures = 0
        codes: Counter[int] = Counter()
        for argv in runs:
            code, text, used, rss = _run_tool(argv, args.timeout)
            cpu += used
            peak = max(peak, rss)
            codes[code] += 1
            errors = sum(1 for line in text.splitlines() if line.startswith(("E:", "F:")))
            failures += bool(code != 0 or errors)
        if kind == "echo":
            count = args.count if not failures else 0
        elif kind == "assoc":
            count = args.count - failures
        elif kind == "store":
            count = len(paths) if not failures else 0
        else:
            count = args.count if not failures else 0
        extra: dict[str, Any] = {"exit_codes": {str(k): v for k, v in codes.items()}}
        if kind == "store":
            extra["bytes"] = _size(paths)
        reps.end(count, failures, child_cpu_s=cpu, child_peak_kb=peak, **extra)
    reps.done()


# -- shared --------------------------------------------------------------------------------


def _paths(args: argparse.Namespace) -> list[Path]:
    folder = Path(args.files)
    return sorted(folder.glob("*.dcm"))[: args.count]


def _size(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths)


def _targets(args: argparse.Namespace) -> list[tuple[str, int]]:
    return [(args.host, int(port)) for port in args.targets.split(",")]


def _parser() -> argparse.ArgumentParser:
    kinds = [
        f"{impl}-{op}"
        for impl in ("dicomio", "pynetdicom", "dcmtk")
        for op in ("echo", "assoc", "store", "find")
    ] + ["dicomio-many", "dicomio-async", "dicomio-fanout", "pynetdicom-fanout"]
    parser = argparse.ArgumentParser(prog="python -m benchmarks.clients")
    parser.add_argument("kind", choices=kinds)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--called", default="BENCHSCP", help="called AE title")
    parser.add_argument("--count", type=int, default=1, help="operations (or files) per rep")
    parser.add_argument("--reps", type=int, default=1, help="repetitions, warm-up included")
    parser.add_argument("--files", help="folder of instance files (store kinds)")
    parser.add_argument("--echoes", type=int, default=20, help="C-ECHOs per association (many)")
    parser.add_argument("--tasks", type=int, default=16, help="concurrent tasks (async)")
    parser.add_argument("--window", type=int, default=0, help="async ops window to propose")
    parser.add_argument("--op", choices=["echo", "store"], default="echo")
    parser.add_argument("--targets", help="comma-separated ports (fanout)")
    parser.add_argument("--sequential", action="store_true", help="fanout one at a time")
    parser.add_argument(
        "--chunked", action="store_true", help="pynetdicom: STORE_SEND_CHUNKED_DATASET"
    )
    parser.add_argument(
        "--dataset", action="store_true", help="dicomio store: send the files as read Datasets"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="per DCMTK tool run")
    parser.add_argument("--uvloop", action="store_true", help="dicomio on uvloop's event loop")
    return parser


def run(argv: list[str]) -> None:
    args = _parser().parse_args(argv)
    if args.kind.startswith("dicomio-"):
        dicomio_client(args)
    elif args.kind.startswith("pynetdicom-"):
        pynetdicom_client(args)
    else:
        dcmtk_client(args)


def main(argv: list[str] | None = None) -> None:
    """``KIND [options]`` runs one client; ``worker`` runs one per JSON argv line on stdin.

    A worker stays up between measurements, so that a client's start-up (imports) is paid
    once per implementation rather than once per measurement.
    """
    argv = sys.argv[1:] if argv is None else argv
    set_up_process()
    if argv[:1] != ["worker"]:
        run(argv)
        return
    for line in sys.stdin:
        if line.strip():
            run(json.loads(line))


if __name__ == "__main__":
    main()
