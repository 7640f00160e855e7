"""The commands' fan-out modes (issue #15): echoscu and findscu to many peers at once
(``--peer``, ``--peers``), and movescu and getscu of many identifiers (``--keys-file``).

Both run on ``dicomio.fanout`` over an ``AssociationPool``. Ctrl-C (SIGINT) stops the
fan-out at once: the associations in flight are aborted, what arrived is printed, each
peer's summary says it was cancelled, and the exit status is 130.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

from dicomio import AssociationPool, Peer, Retry, evt, fanout
from dicomio.ae import AE
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
from dicomio.apps._peers import peers_from
from dicomio.apps._receive import Receiver
from dicomio.apps._scu_commands import (
    VERIFICATION,
    _model,
    retrieval_contexts,
)
from dicomio.apps.archive import add_storage_contexts
from dicomio.fanout import FanOut, Outcome, PeerReport
from dicomio.presentation import build_context, build_role, storage_scp_roles
from dicomio.status import Category, category

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_SOME",
    "add_fanout_options",
    "add_keys_file_options",
    "fan_out_or",
    "retrieve_many_or",
]

#: Exit codes of a fan-out: every peer answered 0 (EXIT_OK), none 1 (EXIT_FAILURE), some 4;
#: 130 after Ctrl-C. 2 stays the bad command line's, 3 the single peer's lost association.
EXIT_SOME = 4
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = (
    "Exit status with --peer/--peers: 0 every peer answered, 4 some did, 1 none did,"
    " 2 bad command line or peers file, 130 interrupted (Ctrl-C)."
)

Command = Callable[[argparse.Namespace], Awaitable[int]]


def add_fanout_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "several peers at once",
        "Instead of HOST PORT, name the peers: each is asked at once, answers are"
        " printed as they come, and a summary per peer follows. " + EXIT_CODES_HELP,
    )
    group.add_argument(
        "--peer",
        action="append",
        metavar="AET@HOST:PORT",
        help="a peer (repeatable); the --tls options apply to these",
    )
    group.add_argument(
        "--peers",
        action="append",
        metavar="FILE",
        help="a TOML file of [[peer]] tables: name, ae_title, host, port, max_associations,"
        " tls, tls_ca, tls_cert, tls_key (repeatable)",
    )
    group.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="stop waiting for every peer after this long (default: no limit)",
    )
    group.add_argument(
        "--peer-timeout",
        type=float,
        metavar="SECONDS",
        help="stop waiting for a peer this long after it started (default: no limit)",
    )
    group.add_argument(
        "--retries",
        type=int,
        default=2,
        metavar="N",
        help="retry a transient failure (refused, reset, rejected-transient, out of"
        " resources) up to N times, with backoff (default 2)",
    )
    group.add_argument(
        "--max-peers",
        type=int,
        metavar="N",
        help="ask at most N peers at once (default: all)",
    )


def add_keys_file_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "bulk retrieve",
        "Retrieve many identifiers over a few associations, with progress. Each line of"
        " the keys file is one identifier: KEY=VALUE items as for -k (-k keys apply to"
        " every line), or a DICOM JSON object; blank lines and # comments are skipped.",
    )
    group.add_argument("--keys-file", metavar="FILE", help="the identifiers, one per line")
    group.add_argument(
        "--associations",
        type=int,
        default=2,
        metavar="N",
        help="with --keys-file: requests at once, each on its own association (default 2)",
    )
    group.add_argument(
        "--skip-existing",
        action="store_true",
        help="with --keys-file: skip IMAGE-level identifiers whose instance is already in"
        " -od (resume an interrupted retrieve)",
    )


def fan_out_or(single: Command, service: str) -> Command:
    """The command: ``single`` for HOST PORT, the fan-out of ``service`` for peers."""

    async def run(args: argparse.Namespace) -> int:
        peers = peers_from(args)
        if peers is None:
            if args.host is None or args.port is None:
                raise UsageError("give HOST PORT, or the peers with --peer or --peers")
            return await single(args)
        return await _fan_out(args, peers, service)

    return run


def retrieve_many_or(single: Command, service: str) -> Command:
    """The command: ``single`` as ever, or a bulk retrieve with ``--keys-file``."""

    async def run(args: argparse.Namespace) -> int:
        if args.keys_file is None:
            return await single(args)
        return await _retrieve_many(args, service)

    return run


# -- echoscu and findscu to many peers -------------------------------------------------------


async def _until_interrupted(fan: FanOut, interrupted: list[bool]) -> None:
    """Cancel ``fan`` on SIGINT (Ctrl-C): what arrived is still printed."""
    try:
        receiver = anyio.open_signal_receiver(signal.SIGINT)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
        return
    with receiver as signals:
        async for _ in signals:
            interrupted.append(True)
            await fan.cancel()
            return


async def _run(fan: FanOut, on_answer: Callable[[fanout.Answer], None]) -> bool:
    """Run ``fan``, calling ``on_answer`` for each answer; whether Ctrl-C stopped it."""
    interrupted: list[bool] = []
    async with anyio.create_task_group() as tg:
        async with fan as answers:
            tg.start_soon(_until_interrupted, fan, interrupted)
            async for answer in answers:
                on_answer(answer)
        tg.cancel_scope.cancel()
    return bool(interrupted)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    if args.retries < 0:
        raise UsageError("--retries must not be negative")
    if args.max_peers is not None and args.max_peers < 1:
        raise UsageError("--max-peers must be at least 1")
    return {
        "timeout": args.timeout,
        "peer_timeout": args.peer_timeout,
        "retry": Retry(attempts=args.retries + 1),
        "max_peers": args.max_peers,
    }


async def _fan_out(args: argparse.Namespace, peers: list[Peer], service: str) -> int:
    ae = AE(args.aet, timeouts=timeouts_from(args))
    options = _options(args)
    matches: dict[str, int] = {}
    name = "findscu" if service == "find" else "echoscu"
    as_json = bool(getattr(args, "json", False))

    def on_answer(answer: fanout.Answer) -> None:
        peer, status, identifier = answer
        code = int(status.Status)
        if service == "echo":
            if as_json:
                _json_line({"peer": peer.name, "status": code})
            else:
                print(f"C-ECHO to {peer.name}: {status_text(code, 'C-ECHO')}")
        elif identifier is not None and category(code) is Category.PENDING:
            matches[peer.name] = n = matches.get(peer.name, 0) + 1
            if as_json:
                _json_line({"peer": peer.name, "identifier": identifier.to_json_dict()})
            else:
                print(f"# match {n} from {peer.name}")
                for line in element_lines(identifier):
                    print(line)
                print()
        sys.stdout.flush()

    # One request per peer: each association is released as soon as its peer has answered
    # (idle_timeout=0), not held open until the slowest peer is done.
    async with AssociationPool(ae, idle_timeout=0) as pool:
        if service == "echo":
            ae.add_requested_context(VERIFICATION)
            fan = fanout.echo(pool, peers, **options)
        else:
            model = _model(args, "find")
            ae.add_requested_context(model)
            dedupe = getattr(args, "dedupe", None)
            if dedupe is not None and tag_for_keyword(dedupe) is None:
                raise UsageError(f"--dedupe {dedupe}: not a DICOM keyword")
            fan = fanout.find(pool, peers, _identifier(args), model, dedupe=dedupe, **options)
        interrupted = await _run(fan, on_answer)
    reports = list(fan.reports.values())
    for report in reports:
        _summary(name, report, as_json)
    if interrupted:
        print(f"{name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    answered = sum(report.ok for report in reports)
    if answered == len(reports):
        return EXIT_OK
    return EXIT_SOME if answered else EXIT_FAILURE


def _identifier(args: argparse.Namespace) -> Dataset:
    query = keys_to_dataset(args.keys or [])
    if "QueryRetrieveLevel" not in query:
        raise UsageError("give the level: -k QueryRetrieveLevel=PATIENT|STUDY|SERIES|IMAGE")
    return query


def _json_line(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, sort_keys=True))


def _summary(name: str, report: PeerReport, as_json: bool) -> None:
    """One peer's summary: to stdout as a JSON line with --json, else to stderr."""
    if as_json:
        _json_line({"peer": report.peer.name, "summary": report.fields()})
        return
    parts = [report.outcome.value]
    if report.matches:
        parts.append(f"{report.matches} match{'es' if report.matches != 1 else ''}")
    if report.final_status is not None:
        parts.append(f"final status {status_text(report.final_status)}")
    if report.error is not None:
        parts.append(str(report.error))
    parts.append(f"{report.attempts} attempt{'s' if report.attempts != 1 else ''}")
    parts.append(f"{report.elapsed:.2f} s")
    print(f"{name}: {report.peer.name}: " + "; ".join(parts), file=sys.stderr)


# -- movescu and getscu of many identifiers --------------------------------------------------


def read_keys_file(path: str, defaults: list[str]) -> list[Dataset]:
    """The identifiers of a keys file (see ``add_keys_file_options``)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--keys-file {path}: cannot read: {exc}") from None
    identifiers = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        where = f"--keys-file {path} line {number}"
        try:
            if text.startswith("{"):
                ds = keys_to_dataset(defaults)
                ds.update(Dataset.from_json(text))
            else:
                ds = keys_to_dataset([*defaults, *shlex.split(text)])
        except UsageError as exc:
            raise UsageError(f"{where}: {exc}") from None
        except ValueError as exc:
            raise UsageError(f"{where}: {exc}") from None
        if "QueryRetrieveLevel" not in ds:
            raise UsageError(f"{where}: no QueryRetrieveLevel (give it here or with -k)")
        identifiers.append(ds)
    if not identifiers:
        raise UsageError(f"--keys-file {path}: no identifiers")
    return identifiers


def _arrived(directory: Path) -> set[str]:
    """SOP Instance UIDs already received in ``directory`` (the file names, either layout)."""
    return {p.stem for p in directory.rglob("*.dcm")} if directory.is_dir() else set()


async def _retrieve_many(args: argparse.Namespace, service: str) -> int:
    if args.associations < 1:
        raise UsageError("--associations must be at least 1")
    if args.host is None or args.port is None:
        raise UsageError("give HOST PORT")
    identifiers = read_keys_file(args.keys_file, args.keys or [])
    out = Path(args.output_directory)
    skip = _arrived(out) if args.skip_existing else None
    model = _model(args, service)
    ae = AE(args.aet, timeouts=timeouts_from(args))
    receiver: Receiver | None = None
    contexts = None
    roles: list[Any] = []
    handlers: list[Any] = []
    if service == "get":
        receiver = Receiver(out, args.layout)
        storage = retrieval_contexts(args.storage_classes or ())
        contexts = [build_context(model), *storage]
        roles = storage_scp_roles(storage)
        named = {str(role.sop_class_uid) for role in roles}
        roles += [
            build_role(cx.abstract_syntax, scp_role=True)
            for cx in storage
            if str(cx.abstract_syntax) not in named
        ]
        handlers = [(evt.EVT_C_STORE, receiver.handler)]
    else:
        ae.add_requested_context(model)
    peer = Peer(
        ae_title=args.aec,
        host=args.host,
        port=args.port,
        contexts=contexts,
        ext_neg=roles,
        ssl_context=client_ssl_context(args),
        max_associations=args.associations,
    )
    finals: list[int] = []
    tty = sys.stderr.isatty()

    async def retrieve() -> tuple[FanOut, bool]:
        async with AssociationPool(
            ae, max_per_peer=args.associations, idle_timeout=None, evt_handlers=handlers
        ) as pool:
            if service == "get":
                fan = fanout.get(
                    pool, [peer], identifiers, model, skip=skip, per_peer=args.associations
                )
            else:
                fan = fanout.move(
                    pool,
                    [peer],
                    identifiers,
                    _destination(args),
                    model,
                    skip=skip,
                    per_peer=args.associations,
                )

            def on_answer(answer: fanout.Answer) -> None:
                code = int(answer.status.Status)
                final = category(code) is not Category.PENDING
                if final:
                    finals.append(code)
                if tty:
                    print(f"\r{fan.progress()}\x1b[K", end="", file=sys.stderr, flush=True)
                elif final:
                    print(str(fan.progress()), file=sys.stderr, flush=True)

            interrupted = await _run(fan, on_answer)
            if tty:
                print(file=sys.stderr)
            return fan, interrupted

    if service == "move" and args.store:
        receiver = Receiver(out, args.layout)
        scp = AE(args.aet, timeouts=timeouts_from(args))
        scp.add_supported_context(VERIFICATION)
        add_storage_contexts(scp)
        async with scp.start_server(
            (args.store_bind, args.store_port),
            evt_handlers=[(evt.EVT_C_STORE, receiver.handler)],
            shutdown_timeout=args.acse_timeout,
        ):
            fan, interrupted = await retrieve()
    else:
        fan, interrupted = await retrieve()
    return _retrieve_result(args, service, fan, finals, receiver, len(identifiers), interrupted)


def _destination(args: argparse.Namespace) -> str:
    destination: str | None = args.aem or (args.aet if args.store else None)
    if not destination:
        raise UsageError("give the move destination with -aem AET (or --store)")
    return destination


def _retrieve_result(
    args: argparse.Namespace,
    service: str,
    fan: FanOut,
    finals: list[int],
    receiver: Receiver | None,
    listed: int,
    interrupted: bool,
) -> int:
    name = f"C-{service.upper()}"
    progress = fan.progress()
    (report,) = fan.reports.values()
    skipped = listed - progress.requests
    got = f"; {receiver.count} file(s) received" if receiver is not None else ""
    print(
        f"{name}: {progress}"
        + (f"; {skipped} skipped (already received)" if skipped else "")
        + got
    )
    failed = [code for code in finals if category(code) is Category.FAILURE]
    for code in sorted(set(failed)):
        print(
            f"E: {failed.count(code)} request(s) ended {status_text(code, name)}", file=sys.stderr
        )
    if report.error is not None:
        print(f"E: association with {report.peer.name} failed: {report.error}", file=sys.stderr)
    if interrupted:
        print(f"{name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if report.outcome is not Outcome.OK and not finals:
        return EXIT_CONNECTION
    bad = report.outcome is not Outcome.OK or any(code != 0 for code in finals)
    return EXIT_FAILURE if bad or progress.failed else EXIT_OK
