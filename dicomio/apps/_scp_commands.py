"""The service-provider commands: storescp and qrscp. Both serve until SIGINT or SIGTERM,
then shut down gracefully (stop accepting, let open associations finish for a few seconds).
With ``--workers N`` the command supervises N worker processes on its port instead
(``dicomio.apps._workers``); each worker is this same command given ``--worker-fd``."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from pathlib import Path

import anyio
import attrs

from dicomio import AE, evt
from dicomio.apps._common import (
    EXIT_CONNECTION,
    EXIT_OK,
    UsageError,
    server_ssl_context,
    timeouts_from,
)
from dicomio.apps._receive import LAYOUTS, Receiver
from dicomio.apps._server_config import apply_config, identity_verifier, load_config
from dicomio.apps._syntaxes import UNCOMPRESSED_ACCEPTED, parse_syntax, syntax_list
from dicomio.apps._workers import (
    Supervisor,
    balances_reuse_port,
    bind_sockets,
    wait_supervisor_gone,
)
from dicomio.apps.archive import Archive, add_archive_contexts, add_storage_contexts
from dicomio.apps.index._base import SchemaTooNew
from dicomio.config import Timeouts
from dicomio.events import Event
from dicomio.server import Server

__all__ = ["load_config", "parse_destination", "run_qrscp", "run_storescp"]

log = logging.getLogger("dicomio.apps")

VERIFICATION = "1.2.840.10008.1.1"
SHUTDOWN_SECONDS = 5.0
#: The asynchronous operations window the SCPs grant at most (PS3.7 D.3.3.3).
MAX_OPERATIONS = 16


async def _serve_until_signalled(server: Server, what: str, *, worker: bool = False) -> None:
    """Return on SIGINT or SIGTERM, or for a ``worker``, when its supervisor is gone."""
    host = server.host or "0.0.0.0"
    print(
        f"{what}: listening on {host}:{server.port} as {server.ae.ae_title}",
        file=sys.stderr,
        flush=True,
    )

    async def orphaned(scope: anyio.CancelScope) -> None:
        await wait_supervisor_gone()
        print(f"{what}: the supervisor is gone, shutting down", file=sys.stderr, flush=True)
        scope.cancel()

    async with anyio.create_task_group() as tg:
        if worker:
            tg.start_soon(orphaned, tg.cancel_scope)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                print(
                    f"{what}: {signal.Signals(signum).name}, shutting down",
                    file=sys.stderr,
                    flush=True,
                )
                break
        if worker:
            # The same signal may come twice (from the supervisor, and from a service
            # manager signalling the whole group): the second must not cut the drain
            # short. The supervisor kills a worker that drains for too long.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        tg.cancel_scope.cancel()


def _supervising(args: argparse.Namespace) -> bool:
    """Whether this run supervises workers (``--workers`` over 1, and not a worker itself)."""
    return bool(args.workers > 1 and _worker_fd(args) is None)


def _worker_fd(args: argparse.Namespace) -> int | None:
    fd: int | None = getattr(args, "worker_fd", None)
    return fd


def _worker_socket(args: argparse.Namespace) -> socket.socket | None:
    """The listening socket a supervisor handed this worker, if it is one."""
    fd = _worker_fd(args)
    return None if fd is None else socket.socket(fileno=fd)


def _name(args: argparse.Namespace, what: str) -> str:
    return what if _worker_fd(args) is None else f"{what}[{os.getpid()}]"


async def _supervise(args: argparse.Namespace, what: str) -> int:
    """Bind the port and run ``args.workers`` copies of this command on it until a signal."""
    command_line = getattr(args, "command_line", None)
    if command_line is None:
        raise UsageError("--workers needs the command line (run through dicomio.apps.cli)")
    sockets = bind_sockets(args.bind, args.port, args.workers)
    host, port = sockets[0].getsockname()[:2]
    how = "SO_REUSEPORT" if balances_reuse_port() else "one shared socket"
    print(
        f"{what}: listening on {host}:{port} with {args.workers} worker processes ({how})",
        file=sys.stderr,
        flush=True,
    )
    # The workers run this same command line; given last, these options win over it.
    argv = [sys.executable, "-m", "dicomio", *command_line, "--workers", "1"]
    return await Supervisor(what, argv, sockets).run()


async def _echo(event: Event) -> int:
    return 0


def _acceptance(args: argparse.Namespace, app: str) -> list[str] | None:
    """Apply the settings file; the transfer syntaxes to accept, in our order of preference,
    or None for every one pydicom knows in the requestor's order. Also checks --store-as.

    ``--accept`` lists exactly what is accepted (``uncompressed`` standing for the three
    uncompressed syntaxes, from ``+x=``); each ``+x`` letter prefers its syntax and then
    accepts the uncompressed ones too, as DCMTK storescp does; ``+xa`` accepts all.
    """
    given_on_command_line = bool(args.accept or args.prefer)
    if args.accept_all and given_on_command_line:
        raise UsageError("+xa/--accept-all accepts everything: give it alone, or a list")
    if args.prefer and args.accept is None:
        args.accept = []  # the command line's list wins over the settings file's
    apply_config(args, app)
    if args.store_as is not None:
        args.store_as = parse_syntax(args.store_as, "--store-as")
    if args.accept_all:
        return None
    listed: list[str] = []
    for text in args.accept or ():
        listed.extend(UNCOMPRESSED_ACCEPTED if text == "uncompressed" else [text])
    preferred = syntax_list(args.prefer, "+x")
    accepted = syntax_list(listed, "--accept") + preferred
    if preferred:
        accepted += UNCOMPRESSED_ACCEPTED
    return list(dict.fromkeys(accepted)) or None


def _apply_acceptance(ae: AE, accepted: list[str] | None) -> None:
    if accepted is not None:
        ae.prefer_own_syntax_order = True
        log.info("accepting %s, in this order", ", ".join(accepted))


async def run_storescp(args: argparse.Namespace) -> int:
    accepted = _acceptance(args, "storescp")
    if args.layout not in LAYOUTS:
        raise UsageError(f"layout must be one of {', '.join(LAYOUTS)}, not {args.layout!r}")
    ae = AE(args.aet or "STORESCP", timeouts=_timeouts(args))
    _lock_down(ae, args)
    ae.async_ops_window = (MAX_OPERATIONS, MAX_OPERATIONS)
    ae.add_supported_context(VERIFICATION)
    add_storage_contexts(ae, syntaxes=accepted)
    _apply_acceptance(ae, accepted)
    ssl_context = server_ssl_context(args)
    receiver = Receiver(
        Path(args.output_directory),
        args.layout,
        store_as=args.store_as,
        allow_lossy=args.allow_lossy,
    )
    if _supervising(args):
        return await _supervise(args, "storescp")
    what = _name(args, "storescp")
    async with ae.start_server(
        (args.bind, args.port),
        evt_handlers=[(evt.EVT_C_ECHO, _echo), (evt.EVT_C_STORE, receiver.handler)],
        ssl_context=ssl_context,
        shutdown_timeout=SHUTDOWN_SECONDS,
        sock=_worker_socket(args),
    ) as server:
        await _serve_until_signalled(server, what, worker=_worker_fd(args) is not None)
    print(f"{what}: received {receiver.count} instance(s)", file=sys.stderr)
    return EXIT_OK


def parse_destination(text: str) -> tuple[str, tuple[str, int]]:
    """``AET=HOST:PORT`` -> (AET, (HOST, PORT))."""
    aet, sep, address = text.partition("=")
    host, colon, port = address.rpartition(":")
    if not (sep and colon and aet.strip() and host and port.isdigit()):
        raise UsageError(f"--dest {text!r}: expected AET=HOST:PORT")
    return aet.strip(), (host, int(port))


def _lock_down(ae: AE, args: argparse.Namespace) -> None:
    """The acceptor policy of the settings (docs/security.md) on ``ae``."""
    ae.maximum_pdu_size = args.max_pdu
    ae.require_called_aet = args.require_called_aet
    ae.require_calling_aet = list(args.require_calling_aet)
    ae.maximum_associations = args.max_associations
    ae.maximum_associations_per_ae = args.max_associations_per_ae
    ae.allow_anonymous = args.allow_anonymous
    ae.user_identity_verifier = identity_verifier(args)
    if ae.user_identity_verifier is not None and not args.tls_cert:
        log.warning("user identities are checked, but without TLS they cross the network in clear")


def _timeouts(args: argparse.Namespace) -> Timeouts:
    return attrs.evolve(timeouts_from(args), network=args.network_timeout)


async def run_qrscp(args: argparse.Namespace) -> int:
    accepted = _acceptance(args, "qrscp")
    aet = args.aet or "DICOMIO"
    data = Path(args.data)
    destinations: dict[str, tuple[str, int]] = {}
    for aet_name, address in args.config_destinations.items():
        name, where = parse_destination(f"{aet_name}={address}")
        destinations[name] = where
    for text in args.dest or []:
        name, where = parse_destination(text)
        destinations[name] = where

    ae = AE(aet, timeouts=_timeouts(args))
    _lock_down(ae, args)
    ae.async_ops_window = (MAX_OPERATIONS, MAX_OPERATIONS)
    add_archive_contexts(ae, syntaxes=accepted)
    _apply_acceptance(ae, accepted)
    ae.move_destinations = destinations
    ssl_context = server_ssl_context(args)
    try:
        archive = Archive(
            data,
            db=args.db,
            relational=args.relational,
            pn_ignore_case=args.pn_ignore_case,
            store_as=args.store_as,
            allow_lossy=args.allow_lossy,
            clean_incoming=_worker_fd(args) is None,
        )
    except (ValueError, ImportError) as exc:
        raise UsageError(f"--db: {exc}") from exc
    # A supervisor opens the index once before any worker does: the schema is created or
    # migrated, and incoming/ cleaned, while nobody else uses them.
    cannot_open: tuple[type[Exception], ...] = (*archive.index.errors, SchemaTooNew)
    try:
        await archive.open()
    except cannot_open as exc:
        log.error("cannot open the index %s: %s", archive.index.location, exc)
        return EXIT_CONNECTION
    if _supervising(args):
        archive.close()
        return await _supervise(args, "qrscp")
    what = _name(args, "qrscp")
    try:
        async with ae.start_server(
            (args.bind, args.port),
            evt_handlers=archive.handlers(),
            ssl_context=ssl_context,
            shutdown_timeout=SHUTDOWN_SECONDS,
            sock=_worker_socket(args),
        ) as server:
            log.info(
                "archive %s holds %d instance(s); move destinations: %s",
                data,
                await archive.count(),
                ", ".join(destinations) or "none",
            )
            await _serve_until_signalled(server, what, worker=_worker_fd(args) is not None)
    finally:
        archive.close()
    return EXIT_OK
