"""Python servers under test, one per process: ``python -m benchmarks.peers KIND [options]``.

    python -m benchmarks.peers dicomio-scp --mode discard|write|memory|find [--dir D] [--servers K]
        [--uvloop]
    python -m benchmarks.peers pynetdicom-scp --mode discard|write|stream|memory|find [--dir D]

Each listens on 127.0.0.1 (port 0 unless ``--port``), prints one JSON line
``{"ports": [...], "pid": N}`` once it accepts connections, and serves until SIGTERM or
SIGINT. Every server supports Verification, CT Image Storage and Study Root C-FIND.

Modes: ``discard`` answers C-STORE with Success without looking at the data set; ``write``
stores it as a file in ``--dir`` (dicomio: ``stream_to_disk``, written while it arrives;
pynetdicom: ``event.encoded_dataset()``, the undecoded bytes); ``stream`` is pynetdicom with
``STORE_RECV_CHUNKED_DATASET`` (its own write-while-receiving); ``memory`` reads every byte of
the data set as received, in memory, and keeps nothing (dicomio: ``event.raw``; pynetdicom:
``event.request.DataSet``, without a copy); ``find`` answers every C-FIND
with ``--matches`` precomputed identifiers, after ``--find-delay`` seconds (a stand-in for a
database query).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import resource
import signal
import sys
import threading
import zlib
from pathlib import Path
from typing import Any

from benchmarks.data import find_identifiers

VERIFICATION = "1.2.840.10008.1.1"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
#: Largest PDU each Python peer proposes for receiving (dicomio's default; see RESULTS.md).
MAX_PDU = 262_144


def raise_nofile() -> int:
    """Raise the open-file limit to its hard limit (thousands of sockets per process)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def set_up_process() -> None:
    """What every Python benchmark process, dicomio's and pynetdicom's alike, does first.

    Besides the file limit: ``dicomio.tune_allocator()``, which the ``dicomio`` command line
    calls too. It is a glibc setting, not dicomio code, so pynetdicom's processes get it as
    well and the ratios stay a comparison of the libraries (see RESULTS.md).
    """
    from dicomio import tune_allocator

    raise_nofile()
    tune_allocator()


def freeze_heap() -> None:
    """Leave what the imports built out of garbage collections, as the ``dicomio`` command
    line does (``gc.freeze()``), for both libraries' servers alike: a full collection then
    looks only at what serving made. Called once everything is imported, before serving."""
    gc.freeze()


def _announce(ports: list[int]) -> None:
    print(json.dumps({"ports": ports, "pid": os.getpid()}), flush=True)


# -- dicomio -----------------------------------------------------------------------------


def dicomio_scp(args: argparse.Namespace) -> None:
    import anyio

    from dicomio import AE, evt, stream_to_disk

    identifiers = find_identifiers(args.matches) if args.mode == "find" else []
    directory = Path(args.dir) if args.dir else None

    async def on_store_discard(event: Any) -> int:
        return 0x0000

    async def on_store_memory(event: Any) -> int:
        # Reads every byte of the data set as received, as a handler using it would.
        zlib.crc32(event.raw or b"")
        return 0x0000

    async def on_store_write(event: Any) -> int:
        uid = event.request.affected_sop_instance_uid
        os.replace(event.dataset_path, directory / f"CT.{uid}.dcm")  # type: ignore[operator]
        return 0x0000

    async def on_find(event: Any) -> Any:
        if args.find_delay:
            await anyio.sleep(args.find_delay)
        for identifier in identifiers:
            yield 0xFF00, identifier

    handlers: list[Any] = [(evt.EVT_C_FIND, on_find)]
    if args.mode == "write":
        assert directory is not None
        handlers.append((evt.EVT_C_STORE, stream_to_disk(directory)(on_store_write)))
    elif args.mode == "memory":
        handlers.append((evt.EVT_C_STORE, on_store_memory))
    else:
        handlers.append((evt.EVT_C_STORE, on_store_discard))

    def make_ae() -> AE:
        ae = AE(args.ae_title)
        ae.add_supported_context(VERIFICATION)
        ae.add_supported_context(CT_IMAGE_STORAGE)
        ae.add_supported_context(STUDY_ROOT_FIND)
        ae.maximum_associations = 1_000_000
        # Under S6's load an A-ASSOCIATE-RQ can wait in the socket longer than the 30 s
        # default ARTIM before the loop reads it; the scenario measures capacity, not that.
        ae.acse_timeout = 300.0
        if args.window:
            ae.async_ops_window = (args.window, args.window)
        return ae

    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            servers = []
            for _ in range(args.servers):
                server = await stack.enter_async_context(
                    make_ae().start_server(
                        ("127.0.0.1", args.port if args.servers == 1 else 0),
                        evt_handlers=handlers,
                        shutdown_timeout=1.0,
                    )
                )
                servers.append(server)
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                _announce([s.port for s in servers])
                async for _ in signals:
                    break

    freeze_heap()
    anyio.run(main, backend_options={"use_uvloop": args.uvloop})


# -- pynetdicom --------------------------------------------------------------------------


def pynetdicom_scp(args: argparse.Namespace) -> None:
    import shutil

    from pynetdicom import AE, _config, evt

    # Its documented switch for event logging; with "standard" every message is also
    # formatted for the log. Benchmarks measure the protocol, so it is off.
    _config.LOG_HANDLER_LEVEL = "none"
    if args.mode == "stream":
        _config.STORE_RECV_CHUNKED_DATASET = True
    identifiers = find_identifiers(args.matches) if args.mode == "find" else []
    directory = Path(args.dir) if args.dir else None

    def on_store(event: Any) -> int:
        if args.mode == "write":
            uid = event.request.AffectedSOPInstanceUID
            with open(directory / f"CT.{uid}.dcm", "wb") as fp:  # type: ignore[operator]
                fp.write(event.encoded_dataset())
        elif args.mode == "memory":
            zlib.crc32(event.request.DataSet.getbuffer())
        elif args.mode == "stream":
            uid = event.request.AffectedSOPInstanceUID
            shutil.move(event.dataset_path, directory / f"CT.{uid}.dcm")  # type: ignore[operator]
        return 0x0000

    def on_find(event: Any) -> Any:
        if args.find_delay:
            threading.Event().wait(args.find_delay)
        for identifier in identifiers:
            yield 0xFF00, identifier

    handlers = [(evt.EVT_C_STORE, on_store), (evt.EVT_C_FIND, on_find)]
    freeze_heap()
    servers = []
    for _ in range(args.servers):
        ae = AE(args.ae_title)
        ae.add_supported_context(VERIFICATION)
        ae.add_supported_context(CT_IMAGE_STORAGE)
        ae.add_supported_context(STUDY_ROOT_FIND)
        ae.maximum_associations = 1_000_000
        # Under S6's load an A-ASSOCIATE-RQ can wait in the socket longer than the 30 s
        # default ARTIM before the loop reads it; the scenario measures capacity, not that.
        ae.acse_timeout = 300.0
        ae.maximum_pdu_size = MAX_PDU
        servers.append(
            ae.start_server(
                ("127.0.0.1", args.port if args.servers == 1 else 0),
                block=False,
                evt_handlers=handlers,
            )
        )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    _announce([s.server_address[1] for s in servers])
    while not stop.wait(0.5):
        pass
    for server in servers:
        server.shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers")
    parser.add_argument("kind", choices=["dicomio-scp", "pynetdicom-scp"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--servers", type=int, default=1, help="listening AEs in this process")
    parser.add_argument(
        "--mode", choices=["discard", "write", "stream", "memory", "find"], default="discard"
    )
    parser.add_argument("--dir", help="output folder for --mode write/stream")
    parser.add_argument("--matches", type=int, default=0, help="C-FIND matches per query")
    parser.add_argument("--find-delay", type=float, default=0.0)
    parser.add_argument("--window", type=int, default=0, help="async ops window (dicomio)")
    parser.add_argument("--ae-title", default="BENCHSCP")
    parser.add_argument("--uvloop", action="store_true", help="dicomio on uvloop's event loop")
    args = parser.parse_args(argv)
    set_up_process()
    if args.kind == "dicomio-scp":
        dicomio_scp(args)
    else:
        pynetdicom_scp(args)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
