"""The service-user commands: echoscu, storescu, findscu, getscu, movescu.

Each is ``async def run_x(args) -> int`` (an exit code) over an ``argparse`` namespace built
by ``dicomio.apps.cli``. Option names follow DCMTK's tools where the idea is the same.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import struct
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    AllTransferSyntaxes,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pydicom.valuerep import VR

from dicomio import AE, errors, evt
from dicomio._structure import check_file
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
from dicomio.apps._syntaxes import syntax_list
from dicomio.apps.archive import add_storage_contexts
from dicomio.dataset import UNCOMPRESSED, parse_file_meta, part10_header, read_file_info
from dicomio.presentation import (
    PresentationContext,
    build_context,
    build_role,
    storage_scp_roles,
)
from dicomio.sop import StoragePresentationContexts
from dicomio.status import PENDING_CODES, Category, category

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
_VR_NAMES = frozenset(str(vr) for vr in VR)
#: A UID as PS3.5 9.1 spells it, checked before pydicom sees it (which warns on bad ones).
_UID_TEXT = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
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
    #: For a data set without file meta (PS3.10 7.1): where it starts in the file and its
    #: instance UID, to send it with a meta header of our own. None for a Part 10 file.
    bare_offset: int | None = None
    sop_instance: str = ""


def _candidates(paths: Sequence[str], skipped: list[tuple[Path, str]]) -> Iterator[Path]:
    for name in paths:
        path = Path(name)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            yield path
        else:
            skipped.append((path, "no such file or folder"))


#: Why a file was skipped, by kind, for the summary line (``scan``'s reasons start so).
NOT_DICOM = "not a DICOM file"
TRUNCATED = "truncated or malformed"
NO_INSTANCE = "not an instance"


def scan(paths: Sequence[str]) -> tuple[list[SendItem], list[tuple[Path, str]]]:
    """What can be sent among ``paths`` (folders recursively) and, apart, what cannot.

    A Part 10 file is sent as it is; a data set without file meta is sent in the transfer
    syntax it is in (detected as pydicom does). Either is first checked to be whole
    (``dicomio._structure``): a file cut short would be stored and served as corrupt.
    """
    items: list[SendItem] = []
    skipped: list[tuple[Path, str]] = []
    for path in _candidates(paths, skipped):
        try:
            item, reason = _examine(path)
        except Exception as exc:
            skipped.append((path, f"unreadable: {exc}"))
            continue
        if item is None:
            skipped.append((path, reason))
        else:
            items.append(item)
    return items, skipped


def _examine(path: Path) -> tuple[SendItem | None, str]:
    info = read_file_info(path)
    if info is None:
        return _examine_bare(path)
    if not (
        UID(info.sop_class_uid).is_valid
        and UID(info.transfer_syntax).is_valid
        and str(info.sop_instance_uid)
    ):
        return None, (
            f"{NO_INSTANCE}: the file meta has no valid SOP class, instance or transfer syntax UID"
        )
    reason = check_file(path, str(info.transfer_syntax))
    if reason is not None:
        return None, f"{TRUNCATED} data set: {reason}"
    item = SendItem(path, str(info.sop_class_uid), str(info.transfer_syntax), info.dataset_length)
    return item, ""


def _examine_bare(path: Path) -> tuple[SendItem | None, str]:
    """A file without a usable file meta group: a data set whose syntax is detected."""
    not_dicom = f"{NOT_DICOM} (no file meta, and not a data set in any transfer syntax)"
    with open(path, "rb") as fp:
        head = fp.read(65536)
    size = path.stat().st_size
    offset, syntax = 0, None
    parsed = parse_file_meta(head)
    if parsed is not None:  # a preamble and a meta group that names no syntax, or no UIDs
        elements, offset = parsed
        if 0x00020010 in elements:
            syntax = elements[0x00020010].decode("ascii", "replace").rstrip("\x00 ")
    if syntax is None:
        syntax = _detect_syntax(head[offset : offset + 6])
    if syntax is None or offset >= size or check_file(path, syntax) is not None:
        return None, not_dicom
    try:
        ds = dcmread(path, force=True, stop_before_pixels=True)
    except Exception:
        return None, not_dicom
    sop_class, sop_instance = str(ds.get("SOPClassUID", "")), str(ds.get("SOPInstanceUID", ""))
    if not (UID(sop_class).is_valid and UID(sop_instance).is_valid):
        return None, f"{NO_INSTANCE}: a data set without file meta or valid SOP UIDs"
    return SendItem(path, sop_class, syntax, size - offset, offset, sop_instance), ""


def _detect_syntax(first: bytes) -> str | None:
    """The transfer syntax of a data set without file meta, guessed from its first element
    as pydicom guesses it: a valid explicit VR means Explicit VR, Big Endian if the group
    read as little endian is 0x0400 or more; otherwise Implicit VR Little Endian."""
    if len(first) < 6:
        return None
    group, _, vr = struct.unpack("<HH2s", first)
    if vr.decode("latin-1") in _VR_NAMES:
        return str(ExplicitVRBigEndian if group >= 1024 else ExplicitVRLittleEndian)
    return str(ImplicitVRLittleEndian)


def plan_associations(
    items: Sequence[SendItem], propose: Sequence[str] = (), *, uncompressed: bool = True
) -> list[tuple[list[PresentationContext], list[SendItem]]]:
    """Presentation contexts for the files, at most 128 per association, and the files each
    association sends.

    Per SOP class, by default: one context per transfer syntax of its files, listing
    Explicit and Implicit VR Little Endian after an uncompressed one (the file can be
    converted to them), and one uncompressed context if any file is compressed (it can be
    decompressed, ``send_c_store``). Each of ``propose`` gets a context of its own, so that
    the acceptor can take it (or refuse it) alone. With ``uncompressed=False``, only the
    ``propose`` contexts. All the contexts of a class go on the same association.
    """
    by_class: dict[str, dict[str, list[SendItem]]] = {}
    for item in items:
        by_class.setdefault(item.sop_class, {}).setdefault(item.transfer_syntax, []).append(item)
    rank = {id(item): n for n, item in enumerate(items)}
    plans: list[tuple[list[PresentationContext], list[SendItem]]] = []
    contexts: list[PresentationContext] = []
    files: list[SendItem] = []

    def flush() -> None:
        if contexts:
            # Deflated contexts go last: a file whose own syntax was not accepted is
            # converted to the first accepted uncompressed context of its class, and
            # encode_dataset does not pad an odd-length deflated stream (DCMTK then aborts:
            # "Odd Fragment Length").
            contexts.sort(key=lambda cx: cx.transfer_syntaxes[0] == _DEFLATED)
            plans.append((contexts[:], sorted(files, key=lambda i: rank[id(i)])))
            contexts.clear()
            files.clear()

    for sop_class, by_syntax in by_class.items():
        wanted = _class_syntax_lists(list(by_syntax), propose, uncompressed)
        if contexts and len(contexts) + len(wanted) > MAX_CONTEXTS:
            flush()
        for start in range(0, len(wanted), MAX_CONTEXTS):
            # Only a class with more than 128 syntax lists (none in practice) is split.
            if start:
                flush()
            contexts.extend(
                build_context(sop_class, ts) for ts in wanted[start : start + MAX_CONTEXTS]
            )
        files.extend(i for group in by_syntax.values() for i in group)
    flush()
    return plans


_DEFLATED = "1.2.840.10008.1.2.1.99"


def _class_syntax_lists(
    own: list[str], propose: Sequence[str], uncompressed: bool
) -> list[list[str]]:
    """The transfer syntax lists, one per context, that storescu proposes for one class."""
    lists: list[list[str]] = []
    if uncompressed:
        for ts in own:
            native = UID(ts) in UNCOMPRESSED
            lists.append([ts, _EXPLICIT_LE, _IMPLICIT_LE] if native else [ts])
        if any(UID(ts) not in UNCOMPRESSED for ts in own):
            lists.append([_EXPLICIT_LE, _IMPLICIT_LE])
    for ts in propose:
        if not any(listed[0] == ts for listed in lists):
            lists.append([ts])
    unique: dict[tuple[str, ...], list[str]] = {}
    for listed in lists:
        unique.setdefault(tuple(dict.fromkeys(listed)), listed)
    return [list(key) for key in unique]


async def run_storescu(args: argparse.Namespace) -> int:
    items, skipped = await anyio.to_thread.run_sync(scan, args.paths)
    for path, reason in skipped:
        print(f"E: skipped {path}: {reason}", file=sys.stderr)
    failures: list[tuple[Path, str]] = []
    progress = Progress(len(items), sum(i.size for i in items), sys.stderr)
    ssl_context = client_ssl_context(args)
    lost: BaseException | None = None
    propose = syntax_list(args.propose, "--propose")
    if args.no_uncompressed and not propose:
        raise UsageError("--no-uncompressed needs the syntaxes to propose: --propose or -x...")
    for contexts, files in plan_associations(
        items, propose, uncompressed=not args.no_uncompressed
    ):
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
                lost = await _send_files(
                    assoc, files, args.window, progress, failures, done, args.allow_lossy
                )
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
        + (f"; {len(skipped)} skipped ({_kinds(skipped)})" if skipped else "")
    )
    for path, reason in failures:
        print(f"E: failed {path}: {reason}", file=sys.stderr)
    if items and len(failures) == len(items) and lost is not None:
        return EXIT_CONNECTION
    return EXIT_FAILURE if failures or skipped or not items else EXIT_OK


def _kinds(skipped: list[tuple[Path, str]]) -> str:
    """``3 not DICOM, 2 truncated or malformed``: what the skipped files were."""
    counts: dict[str, int] = {}
    for _, reason in skipped:
        kinds = (NOT_DICOM, TRUNCATED, NO_INSTANCE)
        kind = next((k for k in kinds if reason.startswith(k)), "other")
        counts[kind] = counts.get(kind, 0) + 1
    return ", ".join(f"{n} {kind}" for kind, n in counts.items())


async def _send_files(
    assoc: Any,
    files: list[SendItem],
    window: int,
    progress: Progress,
    failures: list[tuple[Path, str]],
    done: set[Path],
    allow_lossy: bool = False,
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
                if item.bare_offset is None:
                    status = await assoc.send_c_store(item.path, allow_lossy=allow_lossy)
                else:
                    status = await _send_bare(assoc, item, allow_lossy)
                code = int(status.Status)
                if category(code) not in (Category.SUCCESS, Category.WARNING):
                    ok, reason = False, status_text(code, "C-STORE")
                elif code:
                    log.warning("%s: %s", item.path, status_text(code, "C-STORE"))
            except (errors.NoPresentationContext, errors.TranscodeError, ValueError) as exc:
                # This file cannot go (no context, or no conversion allowed, installed or
                # possible); the others still do.
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


async def _send_bare(assoc: Any, item: SendItem, allow_lossy: bool = False) -> Dataset:
    """C-STORE a data set without file meta, its bytes as they are in the file.

    It goes through a Part 10 copy with a meta header naming the detected syntax, which
    ``send_c_store`` then sends as it sends any file (converting it only if that syntax
    was not accepted).
    """
    assert item.bare_offset is not None
    offset = item.bare_offset

    def copy() -> Path:
        fd, name = tempfile.mkstemp(prefix=".dicomio-bare-", suffix=".dcm")
        with open(fd, "wb") as out, open(item.path, "rb") as src:
            out.write(part10_header(item.sop_class, item.sop_instance, item.transfer_syntax))
            src.seek(offset)
            while chunk := src.read(1 << 20):
                out.write(chunk)
        return Path(name)

    path = await anyio.to_thread.run_sync(copy)
    try:
        status: Dataset = await assoc.send_c_store(path, allow_lossy=allow_lossy)
        return status
    finally:
        path.unlink(missing_ok=True)


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
                if final in PENDING_CODES and identifier is not None:
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

# What a C-GET SCU proposes to receive on (PS3.4 C.4.3; PS3.8 9.3.2.2). The acceptor
# agrees to one transfer syntax per presentation context, and the C-GET SCP can send an
# instance as it is stored only on a context of its class accepted in its own syntax: each
# (class, syntax) that should arrive unconverted needs a context of its own, and an
# association has at most 128 (odd IDs 1..255), one of them for the Q/R model. So:
#
# - By default, image classes that are commonly compressed get one context per common
#   compressed syntax (6 x 10 = 60), and the most used storage classes (those first) one
#   context each that lists Explicit and Implicit VR Little Endian, which any uncompressed
#   instance can be converted to (67 classes). DCMTK 3.6.7 getscu instead proposes each
#   storage class once, with the uncompressed syntaxes, or with the one compressed syntax
#   a +x option prefers (+xs, +xy, +xv, +xt, +xr ...): one compressed syntax per run.
# - With --storage-class, only the named classes are proposed, each with every syntax
#   pydicom knows in a context of its own (uncompressed first, common compressed next),
#   round robin over the classes until the 127 contexts are used: one class gets all 39,
#   three get every syntax that matters, more share the budget in that priority.
# The acceptor may still take fewer; a class or syntax left out fails with 0xA702 or is
# converted by the sender, and says so in the sub-operation counts.

#: Compressed syntaxes in the order they are met in practice (a guess documented here:
#: JPEG baseline for lossy colour, JPEG lossless SV1 and J2K for CT/MR archives, RLE and
#: JPEG-LS from older modalities).
_COMMON_COMPRESSED = (
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
)
#: Image classes given the compressed syntaxes by default.
_COMPRESSED_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
    "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image Storage
    "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame Image Storage
    "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
    "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
    "1.2.840.10008.5.1.4.1.1.1.2",  # Digital Mammography X-Ray Image Storage - For Pres.
    "1.2.840.10008.5.1.4.1.1.12.1",  # X-Ray Angiographic Image Storage
    "1.2.840.10008.5.1.4.1.1.20",  # Nuclear Medicine Image Storage
)
_EXPLICIT_LE, _IMPLICIT_LE = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"


def _syntax_priority() -> list[str]:
    """Every transfer syntax pydicom knows: uncompressed, common compressed, the rest."""
    first = [_EXPLICIT_LE, _IMPLICIT_LE, *_COMMON_COMPRESSED]
    first += ["1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57"]
    first += ["1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"]
    return list(dict.fromkeys([*first, *map(str, AllTransferSyntaxes)]))


def retrieval_contexts(storage_classes: Sequence[str] = ()) -> list[PresentationContext]:
    """The storage contexts a C-GET SCU proposes (at most 127; see the comment above).

    Each of ``storage_classes`` is ``UID`` (every syntax pydicom knows) or
    ``UID:TS[,TS...]`` (those syntaxes only, each in a context of its own).
    """
    budget = MAX_CONTEXTS - 1
    if storage_classes:
        wanted: dict[str, list[str]] = {}
        for text in storage_classes:
            uid, _, listed = text.partition(":")
            syntaxes = [ts.strip() for ts in listed.split(",") if ts.strip()] or _syntax_priority()
            for ts in syntaxes:
                if not (_UID_TEXT.fullmatch(uid.strip()) and _UID_TEXT.fullmatch(ts)):
                    raise UsageError(f"--storage-class {text}: expected UID or UID:TS[,TS...]")
            wanted.setdefault(uid.strip(), []).extend(syntaxes)
        # Round robin: every class gets its first syntax before any gets its second.
        rank = {ts: n for n, ts in enumerate(_syntax_priority())}
        pairs = [
            (n, rank.get(ts, len(rank)), uid, ts)
            for uid, syntaxes in wanted.items()
            for n, ts in enumerate(dict.fromkeys(syntaxes))
        ]
        pairs.sort(key=lambda pair: (pair[0], pair[1]))
        return [build_context(uid, ts) for _, _, uid, ts in pairs[:budget]]
    compressed = [build_context(c, ts) for c in _COMPRESSED_CLASSES for ts in _COMMON_COMPRESSED]
    common = [str(cx.abstract_syntax) for cx in StoragePresentationContexts]
    ordered = list(dict.fromkeys([*_COMPRESSED_CLASSES, *common]))
    uncompressed = [
        build_context(c, [_EXPLICIT_LE, _IMPLICIT_LE]) for c in ordered[: budget - len(compressed)]
    ]
    return uncompressed + compressed


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


def _print_failures(final: Dataset | None, identifier: Dataset | None) -> None:
    """The final response's Error Comment and Failed SOP Instance UID List (PS3.4 C.4.2.1.4,
    C.4.3.1.3.1), which say which sub-operations failed and why."""
    comment = str(final.get("ErrorComment", "") or "").strip() if final is not None else ""
    if comment:
        print(f"E: error comment: {comment}", file=sys.stderr)
    failed = identifier.get("FailedSOPInstanceUIDList") if identifier is not None else None
    values = [failed] if isinstance(failed, str) else list(failed or ())
    for uid in values:
        print(f"E: failed SOP instance: {uid}", file=sys.stderr)


async def run_getscu(args: argparse.Namespace) -> int:
    query = _identifier(args)
    model = _model(args, "get")
    out = Path(args.output_directory)
    receiver = Receiver(out, args.layout)
    storage = retrieval_contexts(args.storage_classes or ())
    contexts = [build_context(model), *storage]
    roles = storage_scp_roles(storage)
    recognised = {str(role.sop_class_uid) for role in roles}
    for cx in storage:  # a private class named with --storage-class needs its role too
        if str(cx.abstract_syntax) not in recognised:
            recognised.add(str(cx.abstract_syntax))
            roles.append(build_role(cx.abstract_syntax, scp_role=True))
    ae = _ae(args)
    final: Dataset | None = None
    final_identifier: Dataset | None = None
    try:
        async with ae.associate(
            args.host,
            args.port,
            ae_title=args.aec,
            contexts=contexts,
            ext_neg=roles,
            evt_handlers=[(evt.EVT_C_STORE, receiver.handler)],
            ssl_context=client_ssl_context(args),
        ) as assoc:
            async for status, identifier in assoc.send_c_get(query, model):
                if int(status.Status) not in PENDING_CODES:
                    final, final_identifier = status, identifier
    except _LOST as exc:
        return _connection_error(args, exc)
    text, code = _retrieve_summary("C-GET", final, receiver.count)
    print(text)
    _print_failures(final, final_identifier)
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
    final_identifier: Dataset | None = None
    receiver: Receiver | None = None

    async def move() -> None:
        nonlocal final, final_identifier
        async with ae.associate(
            args.host, args.port, ae_title=args.aec, ssl_context=client_ssl_context(args)
        ) as assoc:
            async for status, identifier in assoc.send_c_move(query, destination, model):
                if int(status.Status) not in PENDING_CODES:
                    final, final_identifier = status, identifier

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
        "C-MOVE", final, receiver.count if receiver is not None else None
    )
    print(text)
    _print_failures(final, final_identifier)
    return EXIT_OK if code == 0 else EXIT_FAILURE
