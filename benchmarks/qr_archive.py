"""Issue #5 benchmarks: dicomio's reference archive (``dicomio qrscp``) against DCMTK dcmqrscp.

A1 ingest: DCMTK storescu (one association, ``TCP_NODELAY=1``) sends N small instances into
   an empty archive: ``dicomio qrscp`` and ``dcmqrscp``, each in its own process; instances/s.
A2 C-FIND latency: one dicomio client, one association, STUDY-level Study Root queries:
   an exact PatientID (one match) and a PatientName wildcard (about 1 % of studies). Over 500
   studies for both servers, and over 10,000 studies for dicomio alone: dcmqrscp caps one
   storage area at 500 studies (its quota deletes older studies beyond it).

Run alone with ``python -m benchmarks.qr_archive [--quick]``; rows use the suite's schema.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from dicomio import AE
from dicomio.sop import StudyRootQueryRetrieveInformationModelFind as FIND

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
RUNS = 5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def dataset(study: int, instance: int) -> Dataset:
    """A small Secondary Capture instance, no pixel data: the index is what is measured."""
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid(entropy_srcs=["bench", str(study), str(instance)])
    ds.PatientID = f"PID{study:05d}"
    ds.PatientName = f"Name{study % 100:02d}^Given{study:05d}"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["bench", str(study)])
    ds.StudyDate = f"2024{1 + study % 12:02d}{1 + study % 28:02d}"
    ds.StudyTime = "120000"
    ds.StudyID = str(study)
    ds.AccessionNumber = f"A{study:06d}"
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["bench", str(study), "s"])
    ds.SeriesNumber = 1
    ds.Modality = "OT"
    ds.InstanceNumber = instance + 1
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def write_files(folder: Path, studies: int, per_study: int) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for study in range(studies):
        for instance in range(per_study):
            dataset(study, instance).save_as(
                folder / f"{study:05d}-{instance}.dcm", enforce_file_format=True
            )
            n += 1
    return n


def dcmqrscp_config(root: Path, port: int) -> Path:
    storage = root / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    config = root / "dcmqrscp.cfg"
    config.write_text(
        f"NetworkTCPPort = {port}\nMaxPDUSize = 16384\nMaxAssociations = 16\n"
        "UserName = root\nGroupName = root\n"
        "HostTable BEGIN\nHostTable END\nVendorTable BEGIN\nVendorTable END\n"
        f"AETable BEGIN\nDCMQRSCP {storage} RW (500, 4096mb) ANY\nAETable END\n"
    )
    return config


class Server:
    """A Q/R SCP in its own process: ``dicomio`` (qrscp) or ``dcmtk`` (dcmqrscp)."""

    def __init__(self, kind: str, root: Path) -> None:
        self.kind = kind
        self.root = root
        self.port = free_port()
        self.aet = "DICOMIO" if kind == "dicomio" else "DCMQRSCP"
        if kind == "dicomio":
            command = [
                sys.executable,
                "-m",
                "dicomio",
                "qrscp",
                str(self.port),
                "--data",
                str(root / "data"),
                "--bind",
                "127.0.0.1",
            ]
            env = dict(os.environ)
        else:
            config = dcmqrscp_config(root, self.port)
            command = ["/usr/bin/dcmqrscp", "-c", str(config), str(self.port)]
            env = DCMTK_ENV
        self.log = open(root / f"{kind}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        wait_port(self.port, self.proc)

    def stop(self) -> None:
        stop(self.proc)
        self.log.close()


def ingest(kind: str, files: Path, count: int, work: Path) -> float:
    """Seconds for DCMTK storescu to store every file in ``files`` into a fresh archive."""
    root = Path(tempfile.mkdtemp(dir=work))
    server = Server(kind, root)
    try:
        start = time.perf_counter()
        result = subprocess.run(
            [
                "/usr/bin/storescu",
                "-aec",
                server.aet,
                "+sd",
                "+r",
                "127.0.0.1",
                str(server.port),
                str(files),
            ],
            env=DCMTK_ENV,
            capture_output=True,
            timeout=600,
        )
        elapsed = time.perf_counter() - start
        if result.returncode != 0:
            raise RuntimeError(f"storescu into {kind} failed: {result.stderr[-500:]!r}")
        return elapsed
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    _ = count


async def find_latencies(port: int, aet: str, queries: list[Dataset], repeat: int) -> list[float]:
    """Per-query wall times (s) of C-FINDs on one association, each answer read to the end."""
    ae = AE("BENCHFIND")
    ae.add_requested_context(FIND)
    times: list[float] = []
    async with ae.associate("127.0.0.1", port, ae_title=aet) as assoc:
        for _ in range(repeat):
            for query in queries:
                start = time.perf_counter()
                async for status, _identifier in assoc.send_c_find(query, FIND):
                    if status.Status not in (0xFF00, 0xFF01, 0x0000):
                        raise RuntimeError(f"C-FIND failed: {status.Status:#06x}")
                times.append(time.perf_counter() - start)
    return times


def study_queries() -> dict[str, Dataset]:
    exact = Dataset()
    exact.QueryRetrieveLevel = "STUDY"
    exact.PatientID = "PID00042"
    exact.StudyInstanceUID = ""
    exact.StudyDate = ""
    wildcard = Dataset()
    wildcard.QueryRetrieveLevel = "STUDY"
    wildcard.PatientName = "Name07^*"
    wildcard.StudyInstanceUID = ""
    wildcard.PatientID = ""
    return {"exact PatientID": exact, "PatientName wildcard": wildcard}


def seed_dicomio(root: Path, studies: int) -> None:
    """Fill a dicomio archive offline, through its own store API (as received files would)."""
    from dicomio.apps.archive import Archive

    async def fill() -> None:
        async with Archive(root / "data") as archive:
            for study in range(studies):
                await archive.store(dataset(study, 0))

    anyio.run(fill)


def row(scenario: str, impl: str, samples: list[float], unit: str, **extra: Any) -> dict[str, Any]:
    return {
        "scenario": scenario,
        "impl": impl,
        "unit": unit,
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "runs": len(samples),
        **extra,
    }


def run(quick: bool = False) -> list[dict[str, Any]]:
    if not Path("/usr/bin/dcmqrscp").exists():
        return [{"scenario": "A1/A2", "impl": "dcmtk", "note": "DCMTK not installed"}]
    rows: list[dict[str, Any]] = []
    runs = 3 if quick else RUNS
    ingest_studies, per_study = (50, 4) if quick else (250, 4)
    big = 1_000 if quick else 10_000
    with tempfile.TemporaryDirectory(prefix="dicomio-bench-qr-") as tmp:
        work = Path(tmp)
        files = work / "files"
        count = write_files(files, ingest_studies, per_study)

        # A1: ingest rate, DCMTK storescu as the client of each server.
        for kind in ("dicomio", "dcmtk"):
            ingest(kind, files, count, work)  # warm-up
            rates = [count / ingest(kind, files, count, work) for _ in range(runs)]
            rows.append(row(f"A1 ingest {count} instances (storescu)", kind, rates, "instances/s"))

        # A2: C-FIND latency over 500 studies on both, 10,000 on dicomio.
        queries = study_queries()
        repeat = 10 if quick else 40
        for kind, studies in (("dicomio", 500), ("dcmtk", 500), ("dicomio", big)):
            root = Path(tempfile.mkdtemp(dir=work))
            seed_files = work / f"seed{studies}"
            if kind == "dicomio":
                seed_dicomio(root, studies)
            server = Server(kind, root)
            try:
                if kind == "dcmtk":
                    if not seed_files.exists():
                        write_files(seed_files, studies, 1)
                    subprocess.run(
                        [
                            "/usr/bin/storescu",
                            "-aec",
                            server.aet,
                            "+sd",
                            "+r",
                            "127.0.0.1",
                            str(server.port),
                            str(seed_files),
                        ],
                        env=DCMTK_ENV,
                        check=True,
                        capture_output=True,
                        timeout=600,
                    )
                for name, query in queries.items():
                    samples = anyio.run(find_latencies, server.port, server.aet, [query], repeat)
                    rows.append(
                        row(
                            f"A2 C-FIND {name}, {studies} studies",
                            kind,
                            [s * 1000 for s in samples],
                            "ms",
                        )
                    )
            finally:
                server.stop()
    return rows


def report(rows: list[dict[str, Any]]) -> str:
    lines = ["| scenario | impl | median | min | max | unit |", "|---|---|---|---|---|---|"]
    for r in rows:
        if "median" not in r:
            lines.append(f"| {r['scenario']} | {r['impl']} | {r.get('note', '')} | | | |")
            continue
        lines.append(
            f"| {r['scenario']} | {r['impl']} | {r['median']:.1f} | {r['min']:.1f} | "
            f"{r['max']:.1f} | {r['unit']} |"
        )
    by = {(r["scenario"], r["impl"]): r for r in rows if "median" in r}
    for (scenario, impl), r in by.items():
        peer = by.get((scenario, "dcmtk"))
        if impl == "dicomio" and peer:
            better = (
                r["median"] / peer["median"] if r["unit"] != "ms" else peer["median"] / r["median"]
            )
            lines.append(
                f"| {scenario} | dicomio vs dcmqrscp | {better:.2f}x | | | (>1 = dicomio better) |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = run(args.quick)
    print(report(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
