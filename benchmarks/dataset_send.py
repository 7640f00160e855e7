"""Sending a Dataset against sending its file, and against storescu (issue #18).

    python -m benchmarks.dataset_send [--count 200] [--reps 5] [--server dicomio,dcmtk]

S3's clients send files. This compares, on one association to a server discarding what it
receives (dicomio's, then DCMTK's ``storescp --ignore``), the same 0.5 MiB CT instances sent:

- ``storescu``: DCMTK's client, given the files (its time includes start-up and reading);
- ``dicomio path``: ``send_c_store(path)``, the file's bytes as they stand;
- ``dicomio Dataset``: ``send_c_store(ds)`` of the data sets ``dcmread`` made of the same
  files beforehand (reading is not timed: the caller already holds the Dataset).

The clients take turns within each repetition, so a change of load on a shared machine
touches all of them. Figures are medians over the repetitions; CPU is the client's own.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import data
from benchmarks.clients import CALLING_AE, DCMTK_MAX_PDU, EXPLICIT_VR_LE
from benchmarks.echo import SCP_TITLE
from benchmarks.runner import DCMTK_ENV, Workspace, dcmtk_tool
from benchmarks.store import S3_SIZE, start_server

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def _storescu(port: int, paths: list[Path]) -> tuple[float, float]:
    argv = [dcmtk_tool("storescu"), "-aet", CALLING_AE, "-aec", SCP_TITLE]
    argv += ["-pdu", str(DCMTK_MAX_PDU), "-nh", "127.0.0.1", str(port), *map(str, paths)]
    before = os.times()
    start = time.perf_counter()
    env = {**os.environ, **DCMTK_ENV}
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    wall = time.perf_counter() - start
    after = os.times()
    cpu = after.children_user + after.children_system
    return wall, cpu - before.children_user - before.children_system


def _dicomio(port: int, items: list[Any]) -> tuple[float, float]:
    import anyio

    from dicomio import AE

    ae = AE(CALLING_AE)
    ae.add_requested_context(CT_IMAGE_STORAGE, EXPLICIT_VR_LE)

    async def main() -> tuple[float, float]:
        async with ae.associate("127.0.0.1", port, ae_title=SCP_TITLE) as assoc:
            start, cpu = time.perf_counter(), time.process_time()
            for item in items:
                status = await assoc.send_c_store(item)
                if status.Status != 0:
                    raise RuntimeError(f"C-STORE failed: 0x{status.Status:04X}")
            return time.perf_counter() - start, time.process_time() - cpu

    return anyio.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--server", default="dicomio,dcmtk")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / f"dicomio-bench-cache-{os.getuid()}",
    )
    args = parser.parse_args()

    from pydicom import dcmread

    paths = data.store_set(args.cache, S3_SIZE, args.count)
    megabytes = sum(path.stat().st_size for path in paths) / 1e6
    with tempfile.TemporaryDirectory(prefix="dicomio-dataset-send-") as scratch:
        ws = Workspace(Path(scratch), args.cache)
        try:
            for impl in args.server.split(","):
                server = start_server(ws, impl, "discard", None)
                port = server.port
                clients = {
                    "storescu": lambda port=port: _storescu(port, paths),
                    "dicomio path": lambda port=port: _dicomio(port, paths),
                    "dicomio Dataset": lambda port=port: _dicomio(
                        port, [dcmread(path) for path in paths]
                    ),
                }
                # The Dataset client reads its files before the clock starts, in the lambda.
                times: dict[str, list[tuple[float, float]]] = {name: [] for name in clients}
                for rep in range(args.reps + 1):
                    for name, run in clients.items():
                        result = run()
                        if rep:  # the first is a warm-up
                            times[name].append(result)
                ws.stop(server.proc)
                load = os.getloadavg()[0]
                print(f"\nserver: {impl} (discarding); {args.count} x 0.5 MiB; load {load:.2f}")
                wall = {
                    name: statistics.median(t for t, _ in runs) for name, runs in times.items()
                }
                for name, runs in times.items():
                    cpu = statistics.median(c for _, c in runs)
                    print(
                        f"  {name:16} {megabytes / wall[name]:7.0f} MB/s  "
                        f"wall {wall[name] * 1e3:7.1f} ms  client CPU {cpu * 1e3:7.1f} ms"
                    )
                print(
                    f"  Dataset vs storescu (rate): {wall['storescu'] / wall['dicomio Dataset']:.2f}x;"
                    f" Dataset time vs path time: "
                    f"{wall['dicomio Dataset'] / wall['dicomio path']:.2f}x"
                )
        finally:
            ws.close()


if __name__ == "__main__":
    main()
