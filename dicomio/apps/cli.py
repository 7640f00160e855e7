"""The ``dicomio`` command (also ``python -m dicomio``): DICOM network tools on dicomio.

Subcommands: ``echoscu``, ``storescu``, ``findscu``, ``getscu``, ``movescu`` (service users)
and ``storescp``, ``qrscp`` (service providers). Flags follow DCMTK's tools where the same idea
exists (``-aet``, ``-aec``, ``-aem``, ``-k``, ``-P``/``-S``, ``-od``, ``-v``/``-d``).

Exit status: 0 only on full success; 1 when a DICOM operation failed or some files were not
sent; 2 for a bad command line; 3 when the association or the connection failed. echoscu
and findscu with --peer/--peers: 0 when every peer answered, 4 when some did, 1 when none
did; 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Awaitable, Callable, Sequence

import anyio

from dicomio import __version__, tune_allocator
from dicomio.apps._common import (
    EXIT_USAGE,
    UsageError,
    add_network_options,
    add_tls_options,
    setup_logging,
)
from dicomio.apps._fanout_commands import (
    add_fanout_options,
    add_keys_file_options,
    fan_out_or,
    retrieve_many_or,
)
from dicomio.apps._receive import LAYOUTS
from dicomio.apps._scp_commands import run_qrscp, run_storescp
from dicomio.apps._scu_commands import (
    run_echoscu,
    run_findscu,
    run_getscu,
    run_movescu,
    run_storescu,
)
from dicomio.apps._syntaxes import add_syntax_letters, names_help

__all__ = ["build_parser", "main"]

Command = Callable[[argparse.Namespace], Awaitable[int]]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="verbose mode")
    parser.add_argument("-d", "--debug", action="store_true", help="debug mode")
    parser.add_argument(
        "--backend",
        choices=("asyncio", "trio"),
        default="asyncio",
        help="the event loop to run on (default asyncio)",
    )
    parser.add_argument(
        "--uvloop",
        action="store_true",
        help="run asyncio on uvloop's event loop (pip install 'dicomio[uvloop]'); "
        "with --workers, every worker does",
    )


def _peer(parser: argparse.ArgumentParser, *, or_peers: bool = False) -> None:
    if not or_peers:
        parser.add_argument("host", help="the peer's host name or address")
        parser.add_argument("port", type=int, help="the peer's TCP port")
        return
    parser.add_argument(
        "host", nargs="?", help="the peer's host name or address (or --peer/--peers)"
    )
    parser.add_argument("port", nargs="?", type=int, help="the peer's TCP port")


def _model(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "-P",
        "--patient",
        dest="study_root",
        action="store_false",
        help="Patient Root information model (default)",
    )
    group.add_argument(
        "-S",
        "--study",
        dest="study_root",
        action="store_true",
        help="Study Root information model",
    )
    # Both flags write one destination, and argparse takes the default from the first: set
    # it here, or -P's store_false would make Study Root the default.
    parser.set_defaults(study_root=False)
    parser.add_argument(
        "-k",
        "--key",
        dest="keys",
        action="append",
        metavar="KEY[=VALUE]",
        help="a query key: keyword or gggg,eeee, with or without a value (repeatable)",
    )


def _output(parser: argparse.ArgumentParser, default: str = ".") -> None:
    parser.add_argument(
        "-od",
        "--output-directory",
        default=default,
        metavar="DIR",
        help=f"where received files go (default {default})",
    )
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="flat",
        help="flat: DIR/<SOPInstanceUID>.dcm; hierarchy: "
        "DIR/<PatientID>/<StudyUID>/<SeriesUID>/<SOPInstanceUID>.dcm",
    )


def _proposals(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "transfer syntaxes proposed",
        "By default each file's own syntax is proposed for its SOP class, and the"
        " uncompressed ones (Explicit, Implicit VR Little Endian) beside it: a file the"
        " receiver takes only uncompressed is decompressed before it is sent. Each syntax"
        " named here is proposed as well, in a context of its own; a file is compressed"
        " (losslessly) to it when the receiver accepts nothing closer. Names: " + names_help(),
    )
    group.add_argument(
        "--propose",
        action="append",
        metavar="SYNTAX",
        help="also propose this transfer syntax, a UID or a name (repeatable)",
    )
    add_syntax_letters(group, "-", "propose", "as --propose {name} (DCMTK storescu's letter)")
    group.add_argument(
        "--no-uncompressed",
        action="store_true",
        help="propose only the --propose syntaxes (not the files' own, nor uncompressed)",
    )
    group.add_argument(
        "--allow-lossy",
        action="store_true",
        help="allow lossy compression when the receiver accepts only lossy syntaxes (the"
        " instance then gets a new SOP Instance UID); default: such files fail",
    )


def _acceptance(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "transfer syntaxes accepted and stored",
        "By default every syntax pydicom knows is accepted, in the requestor's order of"
        " preference, and each instance is kept as received, byte for byte. With --accept,"
        " --accept-uncompressed or a +x option, the acceptor picks per context the first of"
        " its own list that was proposed. Names: " + names_help(),
    )
    group.add_argument(
        "--accept",
        action="append",
        metavar="SYNTAX",
        help="accept only the syntaxes listed, in this order of preference (repeatable; a"
        " UID or a name; settings file: accept = [...])",
    )
    group.add_argument(
        "+x=",
        "--accept-uncompressed",
        dest="accept",
        action="append_const",
        const="uncompressed",
        help="accept the uncompressed syntaxes: Explicit VR Little Endian, Big Endian,"
        " Implicit VR Little Endian (DCMTK storescp's default)",
    )
    add_syntax_letters(
        group,
        "+",
        "prefer",
        "prefer {name}, then accept the uncompressed syntaxes (as DCMTK storescp)",
    )
    group.add_argument(
        "+xa",
        "--accept-all",
        action="store_true",
        default=None,
        help="accept every syntax pydicom knows, in the requestor's order (the default)",
    )
    group.add_argument(
        "--store-as",
        metavar="SYNTAX",
        help="convert each received instance to this syntax before filing it (a codec"
        " worker process; lossless only unless --allow-lossy); an instance that cannot be"
        " converted is refused (0xC000) and nothing is kept of it. Default: as received",
    )
    group.add_argument(
        "--allow-lossy",
        action="store_true",
        default=None,
        help="let --store-as compress lossily (the instance gets a new SOP Instance UID)",
    )


def _server(parser: argparse.ArgumentParser) -> None:
    """The settings storescp and qrscp share beyond -aet and the timeouts: the settings
    file, the PDU size and the lock-down (docs/security.md). Each is also a key of the
    settings file (``dicomio.apps._server_config``); the command line wins."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="settings file, TOML or INI, in a [storescp] or [qrscp] table: the long option"
        " names with '_' for '-' (max_associations = 8), ae_title, a [users] table of"
        " name = password (qrscp: pn_ignore_case, a [destinations] table); options given"
        " here win",
    )
    parser.add_argument(
        "-tn",
        "--network-timeout",
        dest="network_timeout",
        type=float,
        metavar="SECONDS",
        help="abort an association idle for this long (default: never)",
    )
    parser.add_argument(
        "-pdu",
        "--max-pdu",
        dest="max_pdu",
        type=int,
        metavar="BYTES",
        help="the largest PDU we receive (default 262144; 0: no limit)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="serve from N processes sharing the port, each with its own event loop"
        " (default 1); the limits below then apply to each (docs/archive.md)",
    )
    # Internal: the listening socket a --workers supervisor hands to each worker.
    parser.add_argument("--worker-fd", type=int, default=None, help=argparse.SUPPRESS)
    group = parser.add_argument_group("access control (see docs/security.md)")
    group.add_argument(
        "--require-called-aet",
        action=argparse.BooleanOptionalAction,
        help="reject associations not addressed to -aet (A-ASSOCIATE-RJ 1/1/7)",
    )
    group.add_argument(
        "--require-calling-aet",
        dest="require_calling_aet",
        action="append",
        metavar="AET",
        help="accept only these calling AE titles (repeatable; others: A-ASSOCIATE-RJ 1/1/3)",
    )
    group.add_argument(
        "--max-associations",
        dest="max_associations",
        type=int,
        metavar="N",
        help="at most N associations at once (default 1000); more: A-ASSOCIATE-RJ 2/3/2",
    )
    group.add_argument(
        "--max-associations-per-ae",
        dest="max_associations_per_ae",
        type=int,
        metavar="N",
        help="at most N associations at once per calling AE title (default: no limit)",
    )
    group.add_argument(
        "--user-identity-hook",
        dest="user_identity_hook",
        metavar="MODULE:FUNCTION",
        help="check each User Identity with FUNCTION(assoc, identity) -> bool (MODULE may"
        " be a path/to/file.py); or list users and passwords in the settings file [users]",
    )
    group.add_argument(
        "--allow-anonymous",
        action=argparse.BooleanOptionalAction,
        help="with a user identity check, also admit requestors that send no User Identity"
        " (default: reject them, A-ASSOCIATE-RJ 1/1/1)",
    )
    # Unset means "from the settings file, else the default" (apply_config).
    parser.set_defaults(
        port=None,
        aet=None,
        bind=None,
        connect_timeout=None,
        acse_timeout=None,
        dimse_timeout=None,
        tls_require_client_cert=None,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dicomio",
        description="DICOM network tools built on dicomio.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"dicomio {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, run: Command, help_text: str, prefix_chars: str = "-"
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            allow_abbrev=False,
            prefix_chars=prefix_chars,
        )
        p.set_defaults(run=run)
        _common(p)
        return p

    p = command("echoscu", fan_out_or(run_echoscu, "echo"), "Verification SCU: send C-ECHO.")
    _peer(p, or_peers=True)
    add_network_options(p, aet="ECHOSCU")
    p.add_argument(
        "-r",
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="send N C-ECHOs on the association",
    )
    p.add_argument(
        "--json", action="store_true", help="with --peer/--peers: one JSON object per line"
    )
    add_fanout_options(p)
    add_tls_options(p)

    p = command(
        "storescu", run_storescu, "Storage SCU: send files and folders (recursively) with C-STORE."
    )
    _peer(p)
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders to send")
    add_network_options(p, aet="STORESCU")
    p.add_argument(
        "--window",
        type=int,
        default=1,
        metavar="N",
        help="propose an asynchronous operations window of N and keep up to N"
        " C-STOREs outstanding (default 1)",
    )
    _proposals(p)
    add_tls_options(p)

    p = command(
        "findscu",
        fan_out_or(run_findscu, "find"),
        "Query/Retrieve FIND SCU: send C-FIND, print matches.",
    )
    _peer(p, or_peers=True)
    add_network_options(p, aet="FINDSCU")
    _model(p)
    p.add_argument(
        "--json",
        action="store_true",
        help="print each match as DICOM JSON (PS3.18 F.2), one object per line (with"
        ' --peer/--peers: {"peer": NAME, "identifier": ...}, then a summary per peer)',
    )
    p.add_argument(
        "--dedupe",
        metavar="KEYWORD",
        help="with --peer/--peers: print a match only the first time its KEYWORD value"
        " (e.g. StudyInstanceUID) is seen, from any peer",
    )
    add_fanout_options(p)
    add_tls_options(p)

    p = command(
        "getscu",
        retrieve_many_or(run_getscu, "get"),
        "Query/Retrieve GET SCU: C-GET, receiving the instances on the association.",
    )
    _peer(p)
    add_network_options(p, aet="GETSCU")
    _model(p)
    _output(p)
    p.add_argument(
        "--storage-class",
        dest="storage_classes",
        action="append",
        metavar="UID[:TS,...]",
        help="receive only this storage SOP class, in the transfer syntaxes listed or else"
        " in every one pydicom knows, each in a presentation context of its own"
        " (repeatable; 127 contexts are shared among the classes round robin). Default:"
        " the common storage classes uncompressed, and common image classes in the common"
        " compressed syntaxes as well",
    )
    add_keys_file_options(p)
    add_tls_options(p)

    p = command(
        "movescu",
        retrieve_many_or(run_movescu, "move"),
        "Query/Retrieve MOVE SCU: C-MOVE to -aem, or to ourselves with --store.",
    )
    _peer(p)
    add_network_options(p, aet="MOVESCU")
    _model(p)
    p.add_argument(
        "-aem",
        "--move",
        dest="aem",
        metavar="AET",
        help="the move destination's AE title (default: -aet with --store)",
    )
    p.add_argument(
        "--store",
        action="store_true",
        help="receive the moved instances ourselves, on --store-port",
    )
    p.add_argument(
        "--store-port",
        type=int,
        default=11113,
        metavar="PORT",
        help="port to receive on with --store (default 11113)",
    )
    p.add_argument(
        "--store-bind",
        default="0.0.0.0",
        metavar="HOST",
        help="address to receive on with --store (default all)",
    )
    _output(p)
    add_keys_file_options(p)
    add_tls_options(p)

    p = command(
        "storescp",
        run_storescp,
        "Storage SCP: accept every storage SOP class and transfer syntax into -od.",
        # "+" starts options too: DCMTK's SCPs spell their acceptance flags +x=, +xa, +xr.
        prefix_chars="-+",
    )
    p.add_argument("port", type=int, nargs="?", default=None, help="TCP port (default 11112)")
    add_network_options(p, aet="STORESCP", called=False)
    p.add_argument(
        "--bind", default="0.0.0.0", metavar="HOST", help="address to listen on (default all)"
    )
    _output(p)
    _acceptance(p)
    add_tls_options(p, server=True)
    _server(p)
    p.set_defaults(output_directory=None, layout=None)

    p = command(
        "qrscp",
        run_qrscp,
        "Query/Retrieve SCP: Verification, Storage, FIND/GET/MOVE (Patient and Study"
        " Root) over an archive indexed in SQLite or PostgreSQL.",
        prefix_chars="-+",
    )
    p.add_argument(
        "port",
        type=int,
        nargs="?",
        default=None,
        help="TCP port (default 11112, or the config file's)",
    )
    add_network_options(p, aet="DICOMIO", called=False)
    p.set_defaults(aet=None)
    p.add_argument(
        "--bind", default=None, metavar="HOST", help="address to listen on (default all)"
    )
    p.add_argument(
        "--data", default=None, metavar="DIR", help="the archive folder (default ./dicomio-data)"
    )
    p.add_argument(
        "--db",
        default=None,
        metavar="URL",
        help="the index: postgresql://user@host/db to share one archive between processes"
        " or machines, or an SQLite file (default: index.sqlite in the archive folder)",
    )
    p.add_argument(
        "--dest",
        action="append",
        metavar="AET=HOST:PORT",
        help="a C-MOVE destination (repeatable)",
    )
    p.add_argument(
        "--relational",
        action="store_true",
        default=None,
        help="allow relational queries (PS3.4 C.4.1.2.2)",
    )
    p.add_argument(
        "--pn-case-sensitive",
        dest="pn_ignore_case",
        action="store_false",
        default=None,
        help="match person names case-sensitively (default: ignore case)",
    )
    _acceptance(p)
    add_tls_options(p, server=True)
    _server(p)
    return parser


def _event_loop(args: argparse.Namespace) -> tuple[str, dict[str, object]]:
    """The anyio backend and its options for ``--backend`` and ``--uvloop``."""
    if not args.uvloop:
        return args.backend, {}
    if args.backend != "asyncio":
        raise UsageError(
            "--uvloop is an event loop for asyncio: it does not go with --backend trio"
        )
    try:
        import uvloop  # noqa: F401
    except ImportError:
        raise UsageError(
            "--uvloop needs uvloop, which is not installed: pip install 'dicomio[uvloop]'"
        ) from None
    return "asyncio", {"use_uvloop": True}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``dicomio`` command; returns its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # What a --workers supervisor runs again in each worker.
    args.command_line = list(sys.argv[1:] if argv is None else argv)
    setup_logging(args)
    # A dicomio command is the whole process: keep freed buffers for the next instance.
    tune_allocator()
    # ... and what the imports built lives as long as it: out of the garbage collector's
    # sight, a full collection looks only at what the command made since. A fan-out to 100
    # peers spent about a fifth of its CPU time in the collector, mostly on those objects
    # (docs/performance.md).
    gc.freeze()
    run: Command = args.run
    try:
        backend, options = _event_loop(args)
        return anyio.run(run, args, backend=backend, backend_options=options)
    except UsageError as exc:
        print(f"dicomio {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
