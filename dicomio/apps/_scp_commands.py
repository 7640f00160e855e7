"""The service-provider commands: storescp and qrscp. Both serve until SIGINT or SIGTERM,
then shut down gracefully (stop accepting, let open associations finish for a few seconds)."""

from __future__ import annotations

import argparse
import configparser
import logging
import signal
import sys
import tomllib
from pathlib import Path
from typing import Any

import anyio

from dicomio import AE, evt
from dicomio.apps._common import (
    EXIT_OK,
    UsageError,
    server_ssl_context,
    timeouts_from,
)
from dicomio.apps._receive import Receiver
from dicomio.apps.archive import Archive, add_archive_contexts, add_storage_contexts
from dicomio.events import Event
from dicomio.server import Server

__all__ = ["load_config", "parse_destination", "run_qrscp", "run_storescp"]

log = logging.getLogger("dicomio.apps")

VERIFICATION = "1.2.840.10008.1.1"
SHUTDOWN_SECONDS = 5.0
#: The asynchronous operations window the SCPs grant at most (PS3.7 D.3.3.3).
MAX_OPERATIONS = 16


async def _serve_until_signalled(server: Server, what: str) -> None:
    host = server.host or "0.0.0.0"
    print(
        f"{what}: listening on {host}:{server.port} as {server.ae.ae_title}",
        file=sys.stderr,
        flush=True,
    )
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            print(
                f"{what}: {signal.Signals(signum).name}, shutting down",
                file=sys.stderr,
                flush=True,
            )
            return


async def _echo(event: Event) -> int:
    return 0


async def run_storescp(args: argparse.Namespace) -> int:
    receiver = Receiver(Path(args.output_directory), args.layout)
    ae = AE(args.aet, timeouts=timeouts_from(args))
    ae.async_ops_window = (MAX_OPERATIONS, MAX_OPERATIONS)
    ae.add_supported_context(VERIFICATION)
    add_storage_contexts(ae)
    async with ae.start_server(
        (args.bind, args.port),
        evt_handlers=[(evt.EVT_C_ECHO, _echo), (evt.EVT_C_STORE, receiver.handler)],
        ssl_context=server_ssl_context(args),
        shutdown_timeout=SHUTDOWN_SECONDS,
    ) as server:
        await _serve_until_signalled(server, "storescp")
    print(f"storescp: received {len(receiver.received)} instance(s)", file=sys.stderr)
    return EXIT_OK


def parse_destination(text: str) -> tuple[str, tuple[str, int]]:
    """``AET=HOST:PORT`` -> (AET, (HOST, PORT))."""
    aet, sep, address = text.partition("=")
    host, colon, port = address.rpartition(":")
    if not (sep and colon and aet.strip() and host and port.isdigit()):
        raise UsageError(f"--dest {text!r}: expected AET=HOST:PORT")
    return aet.strip(), (host, int(port))


def load_config(path: Path) -> dict[str, Any]:
    """qrscp settings from a TOML file, or an INI file with [qrscp] and [destinations].

    Keys: ``port``, ``ae_title``, ``data``, ``bind``, ``relational``, ``pn_ignore_case`` and
    a ``destinations`` table of ``AET = "HOST:PORT"``.
    """
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        parser = configparser.ConfigParser()
        parser.optionxform = str  # type: ignore[assignment,method-assign]  # AE titles keep case
        try:
            parser.read_string(text, source=str(path))
        except configparser.Error as exc:
            raise UsageError(f"{path}: neither TOML nor INI: {exc}") from None
        data = dict(parser["qrscp"]) if parser.has_section("qrscp") else {}
        if parser.has_section("destinations"):
            data["destinations"] = dict(parser["destinations"])
    settings = dict(data.get("qrscp", data))
    if "destinations" in data and "destinations" not in settings:
        settings["destinations"] = data["destinations"]
    return settings


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "yes", "true", "on")


async def run_qrscp(args: argparse.Namespace) -> int:
    config = load_config(Path(args.config)) if args.config else {}
    port = args.port if args.port is not None else int(config.get("port", 11112))
    aet = args.aet or str(config.get("ae_title", "DICOMIO"))
    data = Path(args.data or str(config.get("data", "./dicomio-data")))
    bind = args.bind or str(config.get("bind", "0.0.0.0"))
    destinations: dict[str, tuple[str, int]] = {}
    for aet_name, address in dict(config.get("destinations", {})).items():
        name, where = parse_destination(f"{aet_name}={address}")
        destinations[name] = where
    for text in args.dest or []:
        name, where = parse_destination(text)
        destinations[name] = where
    relational = args.relational or _flag(config.get("relational", False))
    pn_ignore_case = not args.pn_case_sensitive and _flag(config.get("pn_ignore_case", True))

    archive = Archive(data, relational=relational, pn_ignore_case=pn_ignore_case)
    await archive.open()
    ae = AE(aet, timeouts=timeouts_from(args))
    ae.async_ops_window = (MAX_OPERATIONS, MAX_OPERATIONS)
    add_archive_contexts(ae)
    ae.move_destinations = destinations
    try:
        async with ae.start_server(
            (bind, port),
            evt_handlers=archive.handlers(),
            ssl_context=server_ssl_context(args),
            shutdown_timeout=SHUTDOWN_SECONDS,
        ) as server:
            log.info(
                "archive %s holds %d instance(s); move destinations: %s",
                data,
                await archive.count(),
                ", ".join(destinations) or "none",
            )
            await _serve_until_signalled(server, "qrscp")
    finally:
        archive.close()
    return EXIT_OK
