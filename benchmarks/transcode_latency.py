"""Issue #14: the event loop stays free, and memory stays bounded, while a server transcodes.

``python -m benchmarks.transcode_latency [--reps N] [--series-frames F] [--big-frames F]``

A dicomio server (``AE.start_server`` in its own process) answers a C-GET from DCMTK
``getscu``, which proposes only uncompressed transfer syntaxes, for instances stored JPEG-LS
Lossless: every sub-operation must decompress (PS3.5 A.4.3). Meanwhile this process keeps a
second association to the same server and sends a C-ECHO every 10 ms, recording each
round trip. Two workloads:

- ``series``: a 100 MB series, four multi-frame instances of 512x512 16-bit frames (the
  issue's words: "a C-ECHO to the same server answers within 50 ms while it transcodes a
  100 MB multi-frame series").
- ``large``: one large multi-frame instance, for memory: the peak RSS (``VmHWM`` in
  ``/proc/<pid>/status``) of the server process and of its codec worker processes, beside
  the instance's compressed (input) and decoded (output) sizes.

Each runs with ``ae.isolate_codecs`` True (codec worker processes, the default) and False
(worker threads of the server process), on a fresh server per repetition. Before each
measured retrieval a one-frame instance is retrieved, so that the codec worker process is
already started (its start costs about a second, once). Echo latency is reported for the
idle server (before the retrieval) and for the C-GET's duration; wall time is getscu's whole
run (associate to release) and MB/s counts decoded pixels.

The data (synthetic CT-like frames, 12 bits stored) is made once with dicomio.transcode and
cached in ``/tmp/dicomio-bench-cache-<uid>/transcode-latency``. Results go to
``benchmarks/results-transcode.json`` and ``benchmarks/RESULTS-transcode.md``; the codec
throughput table of ``python -m benchmarks.transcode`` can be pasted in with ``--codec-table``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLSLossless,
    generate_uid,
)

from benchmarks import report
from benchmarks.qr_archive import free_port, stop, wait_port
from dicomio import AE, evt
from dicomio.sop import StudyRootQueryRetrieveInformationModelGet as GET
from dicomio.sop import Verification

HERE = Path(__file__).resolve().parent
SIZE = 512
FRAME_BYTES = SIZE * SIZE * 2
ECHO_PERIOD = 0.010
IDLE_ECHOES = 200
SERVER_AET = "TRANSCODE"
#: The C-GET may take this long before the run is declared failed.
GET_TIMEOUT = 240.0


# -- data ---------------------------------------------------------------------------------------


def _frames(count: int, seed: int) -> np.ndarray:
    """Smooth anatomy-like 12-bit frames with noise (as benchmarks/transcode.py makes them)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    bases = []
    for _ in range(8):
        image = 600 + 800 * x
        for _ in range(12):
            cy, cx, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.03, 0.2)
            image += rng.uniform(300, 1500) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / r**2)
        bases.append(image)
    stack = np.empty((count, SIZE, SIZE), dtype=np.uint16)
    for index in range(count):
        noisy = bases[index % len(bases)] + rng.normal(0, 12, (SIZE, SIZE)) + index % 50
        stack[index] = np.clip(noisy, 0, 4095).astype(np.uint16)
    return stack


def _instance(study: str, series: str, number: int, frames: int) -> bytes:
    """A JPEG-LS Lossless Part 10 CT instance with ``frames`` frames."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName = "Bench^Transcode"
    ds.PatientID = "BENCHTC"
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240101", "101010", "1", ""
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 1, number
    ds.Rows = ds.Columns = SIZE
    ds.NumberOfFrames = frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = _frames(frames, seed=number).tobytes()
    ds["PixelData"].VR = "OW"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    del ds
    from dicomio.transcode import transcode

    return transcode(buf.getvalue(), JPEGLSLossless)


def prepare(cache: Path, workloads: dict[str, tuple[int, int]]) -> dict[str, dict[str, Any]]:
    """Write each workload (name -> (instances, frames each)) once; describe what is there."""
    root = cache / "transcode-latency"
    found: dict[str, dict[str, Any]] = {}
    for name, (count, frames) in {"warmup": (1, 1), **workloads}.items():
        folder = root / f"{name}-{count}x{frames}"
        if not (folder / "done").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            print(f"  making {name}: {count} x {frames} frames, JPEG-LS Lossless", flush=True)
            study, series = generate_uid(), generate_uid()
            for number in range(1, count + 1):
                (folder / f"{number:03d}.dcm").write_bytes(
                    _instance(study, series, number, frames)
                )
            (folder / "done").write_text(study)
        files = sorted(folder.glob("*.dcm"))
        found[name] = {
            "folder": str(folder),
            "study": (folder / "done").read_text(),
            "instances": count,
            "frames": frames,
            "compressed_bytes": sum(f.stat().st_size for f in files),
            "decoded_bytes": count * frames * FRAME_BYTES,
        }
    return found


# -- the server (a subprocess) --------------------------------------------------------------------


def serve(port: int, folders: list[str], threads: bool) -> None:
    """Serve C-ECHO and Study Root C-GET of the instances in ``folders``, keyed by study."""
    by_study: dict[str, list[Path]] = {}
    for folder in folders:
        for path in sorted(Path(folder).glob("*.dcm")):
            study = str(dcmread(path, stop_before_pixels=True).StudyInstanceUID)
            by_study.setdefault(study, []).append(path)

    async def on_get(event: Any) -> Any:
        paths = by_study.get(str(event.identifier.get("StudyInstanceUID", "")), [])
        yield len(paths)
        for path in paths:
            yield 0xFF00, path

    async def main() -> None:
        ae = AE(SERVER_AET)
        ae.isolate_codecs = not threads
        ae.add_supported_context(Verification)
        ae.add_supported_context(GET)
        syntaxes = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGLSLossless]
        ae.add_supported_context(CTImageStorage, syntaxes, scu_role=True, scp_role=True)
        handlers = [(evt.EVT_C_GET, on_get)]
        with anyio.open_signal_receiver(signal.SIGTERM) as signals:
            async with ae.start_server(("127.0.0.1", port), evt_handlers=handlers):
                print("LISTENING", flush=True)
                async for _ in signals:  # stop cleanly when the benchmark is done with us
                    break

    anyio.run(main)


# -- measuring ------------------------------------------------------------------------------------


def _status_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as fp:
            for line in fp:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return kids


def _memory(pid: int) -> dict[str, Any]:
    workers = _children(pid)
    return {
        "server_hwm_mb": _status_kb(pid, "VmHWM") / 1024,
        "server_rss_mb": _status_kb(pid, "VmRSS") / 1024,
        "worker_hwm_mb": [_status_kb(w, "VmHWM") / 1024 for w in workers],
    }


async def _getscu(port: int, study: str, out: Path) -> tuple[float, str]:
    argv = [
        "getscu",
        "-v",
        "-S",
        "-aet",
        "GETSCU",
        "-aec",
        SERVER_AET,
        "--ignore",
        "-od",
        str(out),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={study}",
        "127.0.0.1",
        str(port),
    ]
    started = time.perf_counter()
    with anyio.fail_after(GET_TIMEOUT):
        result = await anyio.run_process(argv, check=False)
    elapsed = time.perf_counter() - started
    text = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
    return elapsed, text


def _sub_ops(text: str) -> tuple[int, int]:
    """(completed, failed) from getscu's last "Sub-Operations Remaining: ..." line."""
    found = re.findall(r"Completed: (\d+), Failed: (\d+)", text)
    return (int(found[-1][0]), int(found[-1][1])) if found else (-1, -1)


def _probe(port: int) -> Any:
    ae = AE("PROBE")
    ae.add_requested_context(Verification)
    return ae.associate("127.0.0.1", port, ae_title=SERVER_AET)


async def _echoes(assoc: Any, count: int | None, stop: anyio.Event | None) -> list[float]:
    """Round trips (s) of C-ECHOs sent every ECHO_PERIOD, ``count`` of them or until ``stop``."""
    rtts: list[float] = []
    while (count is None or len(rtts) < count) and not (stop is not None and stop.is_set()):
        sent = time.perf_counter()
        with anyio.fail_after(30):
            await assoc.send_c_echo()
        rtts.append(time.perf_counter() - sent)
        await anyio.sleep(max(0.0, sent + ECHO_PERIOD - time.perf_counter()))
    return rtts


async def one_run(
    workload: dict[str, Any], warmup: dict[str, Any], threads: bool
) -> dict[str, Any]:
    """A fresh server: warm up, idle echoes, then the C-GET with echoes alongside."""
    port = free_port()
    cmd = [sys.executable, "-m", "benchmarks.transcode_latency", "serve", "--port", str(port)]
    cmd += ["--folder", warmup["folder"], "--folder", workload["folder"]]
    cmd += ["--threads"] if threads else []
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]),
    }
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    out = Path(tempfile.mkdtemp(prefix="dicomio-tclat-"))
    try:
        wait_port(port, server)
        _, text = await _getscu(port, warmup["study"], out)
        if _sub_ops(text) != (1, 0):
            raise RuntimeError(f"warm-up retrieval failed:\n{text[-2000:]}")
        before = _memory(server.pid)
        async with _probe(port) as assoc:
            idle = await _echoes(assoc, IDLE_ECHOES, None)
            done = anyio.Event()
            busy: list[float] = []

            async def probe() -> None:
                busy.extend(await _echoes(assoc, None, done))

            async with anyio.create_task_group() as tg:
                tg.start_soon(probe)
                try:
                    wall, text = await _getscu(port, workload["study"], out)
                finally:
                    done.set()
        completed, failed = _sub_ops(text)
        if (completed, failed) != (workload["instances"], 0):
            raise RuntimeError(
                f"C-GET: {completed} completed, {failed} failed, expected "
                f"{workload['instances']}:\n{text[-2000:]}"
            )
        after = _memory(server.pid)
    finally:
        stop(server)
        shutil.rmtree(out, ignore_errors=True)
    return {
        "wall_s": wall,
        "decoded_mb_s": workload["decoded_bytes"] / 1e6 / wall,
        "idle_ms": [round(r * 1000, 3) for r in idle],
        "busy_ms": [round(r * 1000, 3) for r in busy],
        "memory_before": before,
        "memory_after": after,
    }


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over repetitions of each repetition's statistics."""

    def med(key: str) -> float:
        return float(statistics.median(run[key] for run in runs))

    out: dict[str, Any] = {"reps": len(runs), "wall_s": med("wall_s"), "mb_s": med("decoded_mb_s")}
    for phase in ("idle", "busy"):
        values = [r[f"{phase}_ms"] for r in runs]
        out[phase] = {
            "p50_ms": statistics.median(_pct(v, 0.5) for v in values),
            "p99_ms": statistics.median(_pct(v, 0.99) for v in values),
            "max_ms": statistics.median(max(v) for v in values),
            "worst_max_ms": max(max(v) for v in values),
            "over_50ms": statistics.median(sum(x > 50 for x in v) for v in values),
            "echoes": statistics.median(len(v) for v in values),
        }
    out["server_base_mb"] = statistics.median(r["memory_before"]["server_hwm_mb"] for r in runs)
    out["server_peak_mb"] = statistics.median(r["memory_after"]["server_hwm_mb"] for r in runs)
    out["worker_base_mb"] = statistics.median(
        max(r["memory_before"]["worker_hwm_mb"], default=0.0) for r in runs
    )
    out["worker_peak_mb"] = statistics.median(
        max(r["memory_after"]["worker_hwm_mb"], default=0.0) for r in runs
    )
    out["workers"] = max(len(r["memory_after"]["worker_hwm_mb"]) for r in runs)
    return out


# -- report ---------------------------------------------------------------------------------------


def write_report(path: Path, results: dict[str, Any], codec_table: str) -> None:
    meta, data = results["meta"], results["data"]
    env = meta["environment"]
    lines = [
        "# Transcoding benchmarks (issue #14, acceptance 5)",
        "",
        f"Run {meta['date']}: `{meta['command']}`, {meta['runtime_s']:.0f} s, "
        f"{meta['reps']} repetitions per cell (medians shown), load average "
        f"{meta['load_start']:.2f} at start, {meta['load_end']:.2f} at end.",
        "",
        f"Machine: {env.get('cpu', '?')}, {env.get('usable cores', '?')} usable cores (shared "
        f"with other work), {env.get('memory GB', '?')} GB, Linux {env.get('kernel')}; "
        f"Python {env.get('python')}, pydicom {env.get('pydicom')}, anyio "
        f"{env.get('anyio')}, DCMTK {env.get('DCMTK')}.",
        "",
        "## Event loop latency while the server transcodes",
        "",
        "A dicomio server process answers a Study Root C-GET from DCMTK `getscu` (which",
        "proposes only uncompressed syntaxes) for JPEG-LS Lossless instances, so it decodes",
        "every frame; a second association sends a C-ECHO every 10 ms to the same server.",
        "`isolate_codecs`: True runs the codec in worker processes (the default), False in",
        "worker threads of the server process. Idle: 200 echoes before the C-GET, same server.",
        "Wall time: getscu from associate to release; MB/s of decoded pixels. A one-frame",
        "retrieval before each measured one starts the codec worker.",
        "",
    ]
    for name, item in data.items():
        w = item["workload"]
        lines += [
            f"### {name}: {w['instances']} instance(s) x {w['frames']} frames of 512x512x16 bits: "
            f"{w['decoded_bytes'] / 1e6:.0f} MB decoded, {w['compressed_bytes'] / 1e6:.1f} MB "
            "JPEG-LS",
            "",
            "| isolate_codecs | echo p50 / p99 / max ms, idle | echo p50 / p99 / max ms, "
            "during C-GET | echoes > 50 ms (of n) | C-GET wall s | MB/s |",
            "|---|---|---|---|---|---|",
        ]
        for mode, s in item["modes"].items():
            i, b = s["idle"], s["busy"]
            lines.append(
                f"| {mode} | {i['p50_ms']:.2f} / {i['p99_ms']:.2f} / {i['max_ms']:.1f} "
                f"| {b['p50_ms']:.2f} / {b['p99_ms']:.2f} / {b['max_ms']:.1f} "
                f"(worst rep {b['worst_max_ms']:.1f}) "
                f"| {b['over_50ms']:.0f} of {b['echoes']:.0f} | {s['wall_s']:.2f} | {s['mb_s']:.0f} |"
            )
        lines.append("")
    lines += [
        "## Memory during one transcode",
        "",
        "Peak RSS (`VmHWM`) of the server process and of its largest codec worker process,",
        "after the one-frame warm-up (base) and after the measured C-GET (peak); medians.",
        "Where the codec ran (the worker, or the server with threads), its growth over base is",
        "set beside the issue's expectation: the largest instance's input and output and one",
        "decoded frame (0.5 MB).",
        "",
        "| workload | isolate_codecs | largest instance: input (JPEG-LS) / output (decoded) "
        "MB | server peak (base) MB | worker peak (base) MB | codec's growth MB | expected MB "
        "|",
        "|---|---|---|---|---|---|---|",
    ]
    for name, item in data.items():
        w = item["workload"]
        largest = w["frames"] * FRAME_BYTES / 1e6
        largest_in = w["compressed_bytes"] / w["instances"] / 1e6
        for mode, s in item["modes"].items():
            worker = "-"
            growth = s["server_peak_mb"] - s["server_base_mb"]
            if s["workers"]:
                worker = f"{s['worker_peak_mb']:.0f} ({s['worker_base_mb']:.0f})"
                growth = s["worker_peak_mb"] - s["worker_base_mb"]
            lines.append(
                f"| {name} | {mode} | {largest_in:.1f} / {largest:.0f} "
                f"| {s['server_peak_mb']:.0f} ({s['server_base_mb']:.0f}) | {worker} "
                f"| {growth:.0f} | {largest_in + largest + FRAME_BYTES / 1e6:.0f} |"
            )
    lines += ["", "## Verdict (computed)", ""]
    for name, item in data.items():
        for mode, s in item["modes"].items():
            worst = s["busy"]["worst_max_ms"]
            met = "within" if worst <= 50 else "NOT within"
            lines.append(
                f"- {name}, isolate_codecs {mode}: slowest C-ECHO during the C-GET over all "
                f"repetitions {worst:.0f} ms, {met} the 50 ms target."
            )
    notes = str(results.get("notes", "")).strip()
    if notes:
        lines += ["", "## Findings", "", notes]
    lines.append("")
    if codec_table:
        lines += [
            "## Codec throughput: dicomio.transcode vs DCMTK",
            "",
            "From `python -m benchmarks.transcode` (its defaults), run on the same machine just",
            "before. dicomio's columns time `dicomio.transcode.transcode` in-process; DCMTK's",
            "time the whole tool, process start and file I/O included (the dcmconv row is that",
            "fixed cost). Every result was decoded by the other side and compared pixel for",
            "pixel. pydicom has no JPEG lossless encoder and DCMTK 3.6.7 no JPEG 2000 tools.",
            "",
            codec_table.strip().replace("\n|", "\n\n|", 1),
            "",
        ]
    lines += [
        "## How to rerun",
        "",
        "```",
        "PYTHONPATH=. python -m benchmarks.transcode > /tmp/codec.txt  # codec table, 1 min",
        "PYTHONPATH=. python -m benchmarks.transcode_latency --reps 5 --codec-table /tmp/codec.txt",
        "# about 3 minutes (--reps 3, the default: 2); then, to add or change the findings:",
        "PYTHONPATH=. python -m benchmarks.transcode_latency --report-only --notes notes.md",
        "```",
        "",
        "Data is cached in `/tmp/dicomio-bench-cache-<uid>/transcode-latency` (first run makes",
        "it: about a minute). Needs DCMTK's `getscu` and `dicomio[codecs]`.",
        "",
    ]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.transcode_latency")
    sub = parser.add_subparsers(dest="command")
    srv = sub.add_parser("serve", help="(internal) the server process")
    srv.add_argument("--port", type=int, required=True)
    srv.add_argument("--folder", action="append", required=True)
    srv.add_argument("--threads", action="store_true")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--series-frames", type=int, default=50, help="frames per instance (x4)")
    parser.add_argument("--big-frames", type=int, default=300, help="frames of the large one")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / f"dicomio-bench-cache-{os.getuid()}",
    )
    parser.add_argument("--output-dir", type=Path, default=HERE)
    parser.add_argument("--codec-table", type=Path, help="a file holding transcode.py's output")
    parser.add_argument("--report-only", action="store_true", help="rewrite the .md from JSON")
    parser.add_argument("--notes", type=Path, help="a Markdown file of findings to include")
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.port, args.folder, args.threads)
        return 0

    json_path = args.output_dir / "results-transcode.json"
    md_path = args.output_dir / "RESULTS-transcode.md"
    codec_table = ""
    if args.codec_table:
        text = args.codec_table.read_text()
        codec_table = "\n".join(
            line for line in text.splitlines() if line.startswith(("|", "image:"))
        )
    results: dict[str, Any]
    if args.report_only:
        results = json.loads(json_path.read_text())
        codec_table = codec_table or results.get("codec_table", "")
        results["codec_table"] = codec_table
        if args.notes:
            results["notes"] = args.notes.read_text()
        json_path.write_text(json.dumps(results, indent=1))
        write_report(md_path, results, codec_table)
        print(f"wrote {md_path}")
        return 0
    if shutil.which("getscu") is None:
        print(
            "DCMTK getscu is not on PATH: it is the C-GET SCU of this benchmark", file=sys.stderr
        )
        return 1

    started = time.monotonic()
    meta = report.run_meta("benchmarks.transcode_latency", argv, reps=args.reps)
    print("data ...", flush=True)
    data = prepare(args.cache, {"series": (4, args.series_frames), "large": (1, args.big_frames)})
    results = {"meta": meta, "data": {}, "codec_table": codec_table}
    if args.notes:
        results["notes"] = args.notes.read_text()
    for name in ("series", "large"):
        workload = data[name]
        modes: dict[str, Any] = {}
        raw: dict[str, Any] = {}
        for threads in (False, True):
            mode = "False (threads)" if threads else "True (processes)"
            runs = []
            for rep in range(args.reps):
                run = anyio.run(one_run, workload, data["warmup"], threads)
                print(
                    f"  {name} isolate={not threads} rep {rep + 1}: {run['wall_s']:.2f} s, "
                    f"echo max {max(run['busy_ms']):.1f} ms, server HWM "
                    f"{run['memory_after']['server_hwm_mb']:.0f} MB, workers "
                    f"{[round(w) for w in run['memory_after']['worker_hwm_mb']]} MB",
                    flush=True,
                )
                runs.append(run)
            modes[mode] = summarize(runs)
            raw[mode] = runs
        results["data"][name] = {"workload": workload, "modes": modes, "runs": raw}
    meta["runtime_s"] = time.monotonic() - started
    meta["load_end"] = os.getloadavg()[0]
    json_path.write_text(json.dumps(results, indent=1))
    write_report(md_path, results, codec_table)
    print(f"wrote {md_path} and {json_path} in {meta['runtime_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
