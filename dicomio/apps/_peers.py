"""The peers a fan-out command talks to: ``--peer AET@HOST:PORT`` and ``--peers FILE``.

A peers file is TOML, one ``[[peer]]`` table per peer::

    [[peer]]
    name = "main"              # optional; default AET@HOST:PORT; unique
    ae_title = "PACS"
    host = "10.0.0.5"
    port = 104
    max_associations = 2       # optional: at most this many at once to this peer
    tls = true                 # optional; implied by the tls_* keys
    tls_ca = "ca.pem"          # optional: certificates to verify the peer with
    tls_cert = "me.pem"        # optional: our certificate (chain), and its key
    tls_key = "me.key"

Everything is checked before any association is opened: an unknown key, a missing or
ill-typed value, a bad port, a duplicate name or a TLS file that cannot be loaded is a
``UsageError`` naming the file, the line of the entry and the entry.
"""

from __future__ import annotations

import argparse
import re
import ssl
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dicomio.apps._common import UsageError, client_ssl_context
from dicomio.pool import Peer

__all__ = ["parse_peer", "peers_from", "read_peers_file"]

_KEYS = {
    "name": str,
    "ae_title": str,
    "host": str,
    "port": int,
    "max_associations": int,
    "tls": bool,
    "tls_ca": str,
    "tls_cert": str,
    "tls_key": str,
}
_REQUIRED = ("ae_title", "host", "port")
_ENTRY = re.compile(r"^\s*\[\[\s*peer\s*\]\]")
#: An AE title is 1 to 16 characters of the Default Character Repertoire, no backslash
#: (PS3.5 Table 6.2-1, AE).
_AE_TITLE = re.compile(r"^[ -\[\]-~]{1,16}$")


def _check_port(port: int, where: str) -> int:
    if not 1 <= port <= 65535:
        raise UsageError(f"{where}: port {port} is not between 1 and 65535")
    return port


def _check_ae_title(title: str, where: str) -> str:
    if not _AE_TITLE.match(title) or not title.strip():
        raise UsageError(f"{where}: {title!r} is not an AE title (1-16 characters, no '\\')")
    return title


def parse_peer(text: str, ssl_context: ssl.SSLContext | None = None) -> Peer:
    """``AET@HOST:PORT`` (``AET@[v6 address]:PORT`` for an IPv6 address) as a ``Peer``."""
    where = f"--peer {text}"
    aet, at, rest = text.rpartition("@")
    host, colon, port_text = rest.rpartition(":")
    if not (at and colon and aet and host and port_text.isdigit()):
        raise UsageError(f"{where}: expected AET@HOST:PORT")
    host = host.removeprefix("[").removesuffix("]")
    return Peer(
        ae_title=_check_ae_title(aet, where),
        host=host,
        port=_check_port(int(port_text), where),
        ssl_context=ssl_context,
        name=text,
    )


def read_peers_file(path: str | Path) -> list[Peer]:
    """The peers of a TOML peers file (see the module); ``UsageError`` on anything wrong."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        document = tomllib.loads(text)
    except OSError as exc:
        raise UsageError(f"--peers {path}: cannot read: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"--peers {path}: not valid TOML: {exc}") from None
    unknown = sorted(set(document) - {"peer"})
    if unknown:
        raise UsageError(
            f"--peers {path}: unknown top-level key {unknown[0]!r} (expected [[peer]] tables)"
        )
    entries = document.get("peer", [])
    if not isinstance(entries, list) or not entries:
        raise UsageError(f"--peers {path}: no [[peer]] tables")
    lines = [n for n, line in enumerate(text.splitlines(), 1) if _ENTRY.match(line)]
    peers: list[Peer] = []
    names: dict[str, str] = {}
    for index, entry in enumerate(entries):
        line = lines[index] if index < len(lines) else None
        where = f"{path}" + (f" line {line}" if line else "") + f" (peer {index + 1})"
        peer = _peer_entry(entry, where, path.parent)
        if peer.name in names:
            raise UsageError(f"{where}: duplicate name {peer.name!r} (also {names[peer.name]})")
        names[peer.name] = where
        peers.append(peer)
    return peers


def _peer_entry(entry: Mapping[str, Any], where: str, base: Path) -> Peer:
    for key, value in entry.items():
        kind = _KEYS.get(key)
        if kind is None:
            raise UsageError(f"{where}: unknown key {key!r} (known: {', '.join(_KEYS)})")
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise UsageError(f"{where}: {key} must be a {kind.__name__}, not {value!r}")
    for key in _REQUIRED:
        if key not in entry:
            raise UsageError(f"{where}: {key} is missing")
    title = _check_ae_title(entry["ae_title"], where)
    port = _check_port(entry["port"], where)
    limit = entry.get("max_associations")
    if limit is not None and limit < 1:
        raise UsageError(f"{where}: max_associations must be at least 1, not {limit}")
    name = entry.get("name") or f"{title}@{entry['host']}:{port}"
    return Peer(
        ae_title=title,
        host=entry["host"],
        port=port,
        max_associations=limit,
        ssl_context=_tls(entry, where, base),
        name=name,
    )


def _tls(entry: Mapping[str, Any], where: str, base: Path) -> ssl.SSLContext | None:
    files = {key: entry.get(key) for key in ("tls_ca", "tls_cert", "tls_key")}
    if not entry.get("tls") and not any(files.values()):
        return None
    paths = {key: str(base / value) if value else None for key, value in files.items()}
    for key, value in paths.items():
        if value is not None and not Path(value).is_file():
            raise UsageError(f"{where}: {key} {files[key]!r}: no such file")
    if paths["tls_key"] and not paths["tls_cert"]:
        raise UsageError(f"{where}: tls_key needs tls_cert")
    try:
        return client_ssl_context(
            argparse.Namespace(
                tls=True,
                tls_ca=paths["tls_ca"],
                tls_cert=paths["tls_cert"],
                tls_key=paths["tls_key"],
            )
        )
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise UsageError(f"{where}: cannot load the TLS files: {exc}") from None


def peers_from(args: argparse.Namespace) -> list[Peer] | None:
    """The peers named by ``--peer`` and ``--peers``, or None when neither was given (the
    command then talks to HOST PORT as ever). Duplicate names are refused."""
    given = list(getattr(args, "peer", None) or [])
    files = list(getattr(args, "peers", None) or [])
    if not given and not files:
        return None
    if args.host is not None or args.port is not None:
        raise UsageError("give HOST PORT, or --peer/--peers, not both")
    peers: list[Peer] = []
    if given:
        tls = client_ssl_context(args)
        peers.extend(parse_peer(text, tls) for text in given)
    for path in files:
        peers.extend(read_peers_file(path))
    names: set[str] = set()
    same: dict[Peer, str] = {}
    for peer in peers:
        if peer.name in names:
            raise UsageError(f"peer {peer.name!r} is named twice")
        if peer in same:
            raise UsageError(f"peers {same[peer]!r} and {peer.name!r} are the same peer")
        names.add(peer.name)
        same[peer] = peer.name
    return peers
