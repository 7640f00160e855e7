"""The service-user commands: echoscu, storescu, findscu, getscu, movescu.

Each is ``async def run_x(args) -> int`` (an exit code) over an ``argparse`` namespace built
by ``dicomio.apps.cli``. Option names follow DCMTK's tools where the idea is the same.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from pydicom.dataset import Dataset
from pydicom.uid import UID, RLELossless

from dicomio import AE, errors, evt
from dicomio.apps._common import (
    EXIT_CONNECTION,
    EXIT_FAILURE,
    EXIT_OK,
    UsageError,
    client_ssl_context,
    element_lines,
    keys_to_dataset,
    status_text,
    timeouts_from,
)
from dicomio.apps._progress import Progress, human_bytes
from dicomio.apps._receive import Receiver
from dicomio.apps.archive import add_storage_contexts
from dicomio.dataset import UNCOMPRESSED, read_file_info
from dicomio.presentation import PresentationContext, build_context, storage_scp_roles
from dicomio.sop import StoragePresentationContexts
from dicomio.status import Category, category

__all__ = ["run_echoscu", "run_findscu", "run_getscu", "run_movescu", "run_storescu"]

log = logging.getLogger("dicomio.apps")

VERIFICATION = "1.2.840.10008.1.1"
MODELS = {
    ("P", "find"): "1.2.840.10008.5.1.4.1.2.1.1",
    ("P", "move"): "1.2.840.10008.5.1.4.1.2.1.2",
    ("P", "get"): "1.2.840.10008.5.1.4.1.2.1.3",
    ("S", "find"): "1.2.840.10008.5.1.4.1.2.2.1",
    ("S", "move"): "1.2.840.10008.5.1.4.1.2.2.2",
    ("S", "get"): "1.2.840.10008.5.1.4.1.2.2.3",
}
MAX_CONTEXTS = 128
#: Association-level failures: the association (or connection) is gone.
_LOST = (errors.DicomioError, OSError)


def _ae(args: argparse.Namespace) -> AE:
    ae = AE(args.aet, timeouts=timeouts_from(args))
    return ae


def _model(args: argparse.Namespace, service: str) -> str:
    return MODELS[("S" if args.study_root else "P", service)]


def _connection_error(args: argparse.Namespace, exc: BaseException) -> int:
    print(
        f"E: association with {args.aec} at {args.host}:{args.port} failed: {exc}", file=sys.stderr
    )
    return EXIT_CONNECTION


# -- echoscu --------------------------------------------------------------------------------


async def run_echoscu(args: argparse.Namespace) -> int:
    ae = _ae(args)
    ae.add_requested_context(VERIFICATION)
    try:
        async with ae.associate(
            args.host, args.port, ae_title=args.aec, ssl_context=client_ssl_context(args)
        ) as assoc:
            codes = [int((await assoc.send_c_echo()).Status) for _ in range(args.repeat)]
    except _LOST as exc:
        return _connection_error(args, exc)
    bad = [c for c in codes if c != 0]
    print(
        f"C-ECHO to {args.aec} at {args.host}:{args.port}: "
        f"{status_text(bad[0] if bad else 0, 'C-ECHO')}"
        + (f" ({len(codes)} echoes)" if len(codes) > 1 else "")
    )
    return EXIT_FAILURE if bad else EXIT_OK


# -- storescu -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SendItem:
    path: Path
    sop_class: str
    transfer_syntax: str
    size: int


def _candidates(paths: Sequence[str], skipped: list[tuple[Path, str]]) -> Iterator[Path]:
    for name in paths:
        path = Path(name)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            yield path
        else:
            skipped.append((path, "no such file or folder"))


def scan(paths: Sequence[str]) -> tuple[list[SendItem], list[tuple[Path, str]]]:
    """The Part 10 files among ``paths`` (folders recursively) and, apart, what is not one."""
    items: list[SendItem] = []
    skipped: list[tuple[Path, str]] = []
    for path in _candidates(paths, skipped):
        try:
            info = read_file_info(path)
        except Exception as exc:
            skipped.append((path, f"unreadable: {exc}"))
            continue
        if info is None:
            skipped.append((path, "not a DICOM Part 10 file (no DICM prefix or file meta)"))
            continue
        if not (
            UID(info.sop_class_uid).is_valid
            and UID(info.transfer_syntax).is_valid
            and str(info.sop_instance_uid)
        ):
            skipped.append(
                (
                    path,
                    "the file meta header has no valid SOP class, instance or transfer syntax UID",
                )
            )
            continue
        items.append(
            SendItem(path, str(info.sop_class_uid), str(info.transfer_syntax), info.dataset_length)
        )
    return items, skipped


def plan_associations(
    items: Sequence[SendItem],
) -> list[tuple[list[PresentationContext], list[SendItem]]]:
    """Contexts from the files' SOP classes and transfer syntaxes, 128 per association.

    One context per (SOP class, transfer syntax); an uncompressed syntax also offers
    Explicit and Implicit VR Little Endian, to which the file can be converted.
    """
    keys: dict[tuple[str, str], list[SendItem]] = {}
    for item in items:
        keys.setdefault((item.sop_class, item.transfer_syntax), []).append(item)
    # Deflated contexts go last: a file whose own syntax was not accepted is converted to the
    # first accepted uncompressed context of its class, and dicomio.dataset.encode_dataset
    # does not pad an odd-length deflated stream (DCMTK then aborts: "Odd Fragment Length").
    ordered = sorted(keys, key=lambda key: key[1] == "1.2.840.10008.1.2.1.99")
    plans = []
    for start in range(0, len(ordered), MAX_CONTEXTS):
        chunk = ordered[start : start + MAX_CONTEXTS]
        contexts = []
        for sop_class, ts in chunk:
            syntaxes = [ts]
            if UID(ts) in UNCOMPRESSED:
                syntaxes += ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]
            contexts.append(build_context(sop_class, syntaxes))
        files = sorted((i for key in chunk for i in keys[key]), key=items.index)
        plans.append((contexts, files))
    return plans


async def run_storescu(args: argparse.Namespace) -> int:
    items, skipped = await anyio.to_thread.run_sync(scan, args.paths)
    for path, reason in skipped:
        print(f"E: skipped {path}: {reason}", file=sys.stderr)
    failures: list[tuple[Path, str]] = []
    progress = Progress(len(items), sum(i.size for i in items), sys.stderr)
    ssl_context = client_ssl_context(args)
    lost: BaseException | None = None
    for contexts, files in plan_associations(items):
        ae = _ae(args)
        if args.window > 1:
            ae.async_ops_window = (args.window, 1)
        done: set[Path] = set()
        try:
            async with ae.associate(
                args.host,
                args.port,
                ae_title=args.aec,
                contexts=contexts,
                ssl_context=ssl_context,
            ) as assoc:
                lost = await _send_files(assoc, files, args.window, progress, failures, done)
        except _LOST as exc:
            lost = exc
        if lost is not None:
            log.error("association lost: %s", lost)
            for item in files:
                if item.path not in done:
                    failures.append((item.path, f"not sent: {lost}"))
                    progress.advance(0, ok=False)
    progress.finish()
    sent = len(items) - len(failures)
    total = len(items) + len(skipped)
    print(
        f"storescu: sent {sent} of {total} files ({human_bytes(progress.bytes)}) in "
        f"{progress.elapsed:.1f} s, {progress.files / progress.elapsed:.0f} files/s, "
        f"{human_bytes(progress.bytes / progress.elapsed)}/s"
        + (f"; {len(failures)} failed" if failures else "")
        + (f"; {len(skipped)} skipped (not DICOM)" if skipped else "")
    )
    for path, reason in failures:
        print(f"E: failed {path}: {reason}", file=sys.stderr)
    if items and len(failures) == len(items) and lost is not None:
        return EXIT_CONNECTION
    return EXIT_FAILURE if failures or skipped or not items else EXIT_OK


async def _send_files(
    assoc: Any,
    files: list[SendItem],
    window: int,
    progress: Progress,
    failures: list[tuple[Path, str]],
    done: set[Path],
) -> BaseException | None:
    """Send with up to ``window`` C-STOREs outstanding; the association error, if any."""
    queue = iter(files)
    lost: list[BaseException] = []

    async def worker() -> None:
        for item in queue:
            if lost:
                return
            ok, reason = True, ""
            try:
                status = await assoc.send_c_store(item.path)
                code = int(status.Status)
                if category(code) not in (Category.SUCCESS, Category.WARNING):
                    ok, reason = False, status_text(code, "C-STORE")
                elif code:
                    log.warning("%s: %s", item.path, status_text(code, "C-STORE"))
            except (errors.NoPresentationContext, ValueError) as exc:
                ok, reason = False, str(exc)
            except OSError as exc:
                ok, reason = False, f"cannot read: {exc}"
            except errors.DicomioError as exc:
                lost.append(exc)
                return
            done.add(item.path)
            if not ok:
                failures.append((item.path, reason))
            log.info("%s %s", "sent" if ok else "FAILED", item.path)
            progress.advance(item.size, ok=ok)

    async with anyio.create_task_group() as tg:
        for _ in range(max(1, window)):
            tg.start_soon(worker)
    return lost[0] if lost else None


# -- findscu --------------------------------------------------------------------------------


def _identifier(args: argparse.Namespace) -> Dataset:
    query = keys_to_dataset(args.keys or [])
    if "QueryRetrieveLevel" not in query:
        raise UsageError("give the level: -k QueryRetrieveLevel=PATIENT|STUDY|SERIES|IMAGE")
    return query


async def run_findscu(args: argparse.Namespace) -> int:
    query = _identifier(args)
    model = _model(args, "find")
    ae = _ae(args)
    ae.add_requested_context(model)
    matches = 0
    final = 0xC000
    try:
        async with ae.associate(
            args.host, args.port, ae_title=args.aec, ssl_context=client_ssl_context(args)
        ) as assoc:
            async for status, identifier in assoc.send_c_find(query, model):
                final = int(status.Status)
                if final in (0xFF00, 0xFF01) and identifier is not None:
                    matches += 1
                    _print_match(identifier, matches, as_json=args.json)
    except _LOST as exc:
        return _connection_error(args, exc)
    print(
        f"findscu: {matches} match{'es' if matches != 1 else ''}, final status "
        f"{status_text(final, 'C-FIND')}",
        file=sys.stderr,
    )
    return EXIT_OK if final == 0 else EXIT_FAILURE


def _print_match(identifier: Dataset, n: int, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(identifier.to_json_dict(), ensure_ascii=False, sort_keys=True))
    else:
        print(f"# match {n}")
        for line in element_lines(identifier):
            print(line)
        print()
    sys.stdout.flush()


# -- getscu and movescu ------------------------------------------------------------------------

#: Image classes also offered with RLE Lossless on C-GET associations, so that archives
#: holding RLE files can send them as they are (the 128-context limit leaves room for 7).
_RLE_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
    "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image Storage
    "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
    "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
    "1.2.840.10008.5.1.4.1.1.12.1",  # X-Ray Angiographic Image Storage
)


def _retrieve_summary(
    service: str, final: Dataset | None, received: int | None
) -> tuple[str, int]:
    if final is None:
        return f"{service}: no final response", 0xC000
    code = int(final.Status)
    counts = ", ".join(
        f"{label} {int(final[kw].value)}"
        for label, kw in (
            ("completed", "NumberOfCompletedSuboperations"),
            ("failed", "NumberOfFailedSuboperations"),
            ("warning", "NumberOfWarningSuboperations"),
        )
        if kw in final and final[kw].value is not None
    )
    got = f"; {received} file(s) received" if received is not None else ""
    return (
        f"{service}: final status {status_text(code, service)}; {counts or 'no counts'}{got}",
        code,
    )


async def run_getscu(args: argparse.Namespace) -> int:
    query = _identifier(args)
    model = _model(args, "get")
    out = Path(args.output_directory)
    receiver = Receiver(out, args.layout)
    storage = list(StoragePresentationContexts[: MAX_CONTEXTS - 1 - len(_RLE_CLASSES)])
    storage += [build_context(uid, [RLELossless]) for uid in _RLE_CLASSES]
    contexts = [build_context(model), *storage]
    ae = _ae(args)
    final: Dataset | None = None
    try:
        async with ae.associate(
            args.host,
            args.port,
            ae_title=args.aec,
            contexts=contexts,
            ext_neg=storage_scp_roles(storage),
            evt_handlers=[(evt.EVT_C_STORE, receiver.handler)],
            ssl_context=client_ssl_context(args),
        ) as assoc:
            async for status, _ in assoc.send_c_get(query, model):
                if int(status.Status) not in (0xFF00, 0xFF01):
                    final = status
    except _LOST as exc:
        return _connection_error(args, exc)
    text, code = _retrieve_summary("C-GET", final, len(receiver.received))
    print(text)
    return EXIT_OK if code == 0 else EXIT_FAILURE


async def run_movescu(args: argparse.Namespace) -> int:
    query = _identifier(args)
    model = _model(args, "move")
    destination = args.aem or (args.aet if args.store else None)
    if not destination:
        raise UsageError("give the move destination with -aem AET (or --store)")
    ae = _ae(args)
    ae.add_requested_context(model)
    final: Dataset | None = None
    receiver: Receiver | None = None

    async def move() -> None:
        nonlocal final
        async with ae.associate(
            args.host, args.port, ae_title=args.aec, ssl_context=client_ssl_context(args)
        ) as assoc:
            async for status, _ in assoc.send_c_move(query, destination, model):
                if int(status.Status) not in (0xFF00, 0xFF01):
                    final = status

    try:
        if args.store:
            receiver = Receiver(Path(args.output_directory), args.layout)
            scp = AE(args.aet, timeouts=timeouts_from(args))
            scp.add_supported_context(VERIFICATION)
            add_storage_contexts(scp)
            async with scp.start_server(
                (args.store_bind, args.store_port),
                evt_handlers=[(evt.EVT_C_STORE, receiver.handler)],
                shutdown_timeout=args.acse_timeout,
            ) as server:
                log.info("receiving on port %d as %s", server.port, args.aet)
                await move()
        else:
            await move()
    except _LOST as exc:
        return _connection_error(args, exc)
    text, code = _retrieve_summary(
        "C-MOVE", final, len(receiver.received) if receiver is not None else None
    )
    print(text)
    return EXIT_OK if code == 0 else EXIT_FAILURE
