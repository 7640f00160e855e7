"""What every ``dicomio`` command shares: options, logging, TLS, ``-k`` keys, exit codes."""

from __future__ import annotations

import argparse
import hashlib
import logging
import re
import ssl
import sys
from collections.abc import Sequence
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from dicomio.config import Timeouts
from dicomio.status import describe

__all__ = [
    "EXIT_CONNECTION",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "UsageError",
    "add_network_options",
    "add_tls_options",
    "client_ssl_context",
    "keys_to_dataset",
    "is_valid_uid",
    "safe_name",
    "server_ssl_context",
    "setup_logging",
    "status_text",
    "timeouts_from",
]

#: Exit codes: success; a DICOM operation failed (status, or some files not sent); bad usage
#: (argparse uses 2 as well); the association or the network failed.
EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_CONNECTION = 0, 1, 2, 3

log = logging.getLogger("dicomio.apps")


class UsageError(Exception):
    """A command line that cannot be run (reported with exit code 2)."""


def setup_logging(args: argparse.Namespace) -> None:
    level = logging.WARNING
    if getattr(args, "debug", False):
        level = logging.DEBUG
    elif getattr(args, "verbose", False):
        level = logging.INFO
    # The workers of --workers share the supervisor's stderr: each line says whose it is.
    who = "[%(process)d] " if getattr(args, "worker_fd", None) is not None else ""
    logging.basicConfig(
        level=level, format=f"%(levelname).1s: {who}%(message)s", stream=sys.stderr, force=True
    )


def add_network_options(parser: argparse.ArgumentParser, *, aet: str, called: bool = True) -> None:
    """-aet/-aec and DCMTK's timeout options (-to connect, -ta ACSE, -td DIMSE)."""
    parser.add_argument(
        "-aet",
        "--aetitle",
        dest="aet",
        default=aet,
        metavar="AET",
        help=f"our AE title (default {aet})",
    )
    if called:
        parser.add_argument(
            "-aec",
            "--call",
            dest="aec",
            default="ANY-SCP",
            metavar="AET",
            help="the called (peer) AE title (default ANY-SCP)",
        )
    parser.add_argument(
        "-to",
        "--connect-timeout",
        dest="connect_timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="TCP connect timeout",
    )
    parser.add_argument(
        "-ta",
        "--acse-timeout",
        dest="acse_timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="association request/release timeout",
    )
    parser.add_argument(
        "-td",
        "--dimse-timeout",
        dest="dimse_timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="timeout for each DIMSE response",
    )


def add_tls_options(parser: argparse.ArgumentParser, *, server: bool = False) -> None:
    group = parser.add_argument_group("TLS (PS3.15 B.1)")
    if not server:
        group.add_argument(
            "--tls", action="store_true", help="use TLS (implied by the other --tls-* options)"
        )
    group.add_argument("--tls-cert", metavar="PEM", help="our certificate (chain)")
    group.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    group.add_argument("--tls-ca", metavar="PEM", help="certificates to verify the peer with")
    if server:
        group.add_argument(
            "--tls-require-client-cert",
            action="store_true",
            help="refuse clients without a certificate signed by --tls-ca",
        )


def timeouts_from(args: argparse.Namespace) -> Timeouts:
    return Timeouts(
        connect=getattr(args, "connect_timeout", 30.0),
        acse=getattr(args, "acse_timeout", 30.0),
        dimse=getattr(args, "dimse_timeout", 60.0),
    )


def client_ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The TLS context for an SCU, or None when no TLS option was given.

    Peers are identified by their certificate (``--tls-ca``), not by host name: DICOM
    nodes are usually addressed by IP, so host name checking is off.
    """
    if not (getattr(args, "tls", False) or args.tls_cert or args.tls_key or args.tls_ca):
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=args.tls_ca)
    context.check_hostname = False
    if args.tls_cert:
        context.load_cert_chain(args.tls_cert, args.tls_key)
    return context


def server_ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The TLS context for an SCP, or None when it serves plain TCP."""
    if not args.tls_cert:
        if args.tls_key or args.tls_require_client_cert:
            raise UsageError("--tls-key and --tls-require-client-cert need --tls-cert")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.tls_cert, args.tls_key)
    if args.tls_ca:
        context.load_verify_locations(cafile=args.tls_ca)
    if args.tls_require_client_cert:
        if not args.tls_ca:
            raise UsageError("--tls-require-client-cert needs --tls-ca")
        context.verify_mode = ssl.CERT_REQUIRED
    return context


#: A UID as PS3.5 9.1 defines it: dot-separated numbers without leading zeros, 64 at most.
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
#: Characters a name keeps as they are; everything else is escaped (see ``safe_name``).
_KEPT = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
#: Escaped names longer than this are hashed instead (file names stop at 255 bytes).
_MAX_ESCAPED = 128


def is_valid_uid(value: str) -> bool:
    """Whether ``value`` is a UID by the construction rules of PS3.5 9.1."""
    return len(value) <= 64 and _UID.fullmatch(value) is not None


def safe_name(value: str) -> str:
    """A file or folder name for an identifier, different for every different identifier.

    Three kinds of name, told apart by their first character, so no two kinds can meet:

    - a valid UID (PS3.5 9.1) is its own name (it starts with a digit);
    - any other value of up to a few dozen characters is ``v`` plus the value escaped:
      ``a-z``, ``0-9`` and ``-`` kept, an upper-case letter as ``_`` and the letter in
      lower case, every other character as ``%XX`` per UTF-8 byte. The escape can be read
      back, so the mapping is injective, even on file systems that ignore case;
    - a longer value is ``h`` plus the SHA-256 of its UTF-8 bytes (64 hex digits).
    """
    if is_valid_uid(value):
        return value
    parts = ["v"]
    for char in value:
        if char in _KEPT:
            parts.append(char)
        elif "A" <= char <= "Z":
            parts.append("_" + char.lower())
        else:
            parts.extend(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))
    name = "".join(parts)
    if len(name) <= _MAX_ESCAPED:
        return name
    return "h" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


_TAG = re.compile(r"^\(?([0-9A-Fa-f]{4}),([0-9A-Fa-f]{4})\)?$")


def _parse_tag(name: str) -> int:
    m = _TAG.match(name.strip())
    if m:
        return int(Tag(int(m.group(1), 16), int(m.group(2), 16)))
    tag = tag_for_keyword(name.strip())
    if tag is None:
        raise UsageError(f"-k {name}: not a DICOM keyword or a (gggg,eeee) tag")
    return int(tag)


def keys_to_dataset(keys: Sequence[str]) -> Dataset:
    """DCMTK-style ``-k`` keys: ``Keyword=value``, ``Keyword`` (zero length) or ``gggg,eeee=``.

    Several values are separated by backslashes. If a value is not ASCII and no Specific
    Character Set is given, UTF-8 (ISO_IR 192) is declared, since that is what a shell passes.
    """
    ds = Dataset()
    non_ascii = False
    for item in keys:
        name, sep, value = item.partition("=")
        tag = _parse_tag(name)
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            raise UsageError(f"-k {item}: unknown tag, give it as a keyword") from None
        if vr == "SQ":
            ds.add_new(tag, vr, [])
            continue
        if not sep or value == "":
            ds.add_new(tag, vr, None)
            continue
        non_ascii = non_ascii or not value.isascii()
        values: Any = value.split("\\") if "\\" in value else value
        ds.add_new(tag, vr, values)
    if non_ascii and "SpecificCharacterSet" not in ds:
        ds.SpecificCharacterSet = "ISO_IR 192"
    return ds


def status_text(code: int, service: str | None = None) -> str:
    return f"0x{code:04X} ({describe(code, service)})"


def element_lines(ds: Dataset) -> list[str]:
    """A data set as readable lines: tag, VR, keyword and value."""
    lines = []
    for elem in ds:
        keyword = elem.keyword or keyword_for_tag(elem.tag) or "?"
        if elem.VR == "SQ":
            value = f"<{len(elem.value)} item(s)>"
        elif elem.value is None or elem.value == "":
            value = ""
        else:
            value = (
                str(elem.value)
                if not isinstance(elem.value, list)
                else "\\".join(str(v) for v in elem.value)
            )
        lines.append(
            f"({elem.tag.group:04X},{elem.tag.element:04X}) {elem.VR} {keyword:<32} [{value}]"
        )
    return lines
