"""Transfer syntaxes on the command line: the short names and DCMTK letters the tools take.

One table for every command: ``storescu --propose``, ``storescp``/``qrscp --accept`` and
``--store-as`` take a UID or one of the names below; ``storescu -xr``-style and
``storescp +xr``-style flags use the letters DCMTK 3.6.7's storescu and storescp use for
the same syntax (PS3.5 Table A-1 and Annex A for the UIDs).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from pydicom.uid import UID, AllTransferSyntaxes

from dicomio.apps._common import UsageError

__all__ = [
    "DCMTK_LETTERS",
    "SYNTAX_NAMES",
    "UNCOMPRESSED_ACCEPTED",
    "add_syntax_letters",
    "parse_syntax",
    "syntax_list",
]

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
BIG_ENDIAN = "1.2.840.10008.1.2.2"

#: Short name -> transfer syntax UID, one row per syntax.
SYNTAX_NAMES: dict[str, str] = {
    "implicit": IMPLICIT_LE,
    "explicit": EXPLICIT_LE,
    "big-endian": BIG_ENDIAN,
    "deflated": "1.2.840.10008.1.2.1.99",
    "jpeg-baseline": "1.2.840.10008.1.2.4.50",
    "jpeg-extended": "1.2.840.10008.1.2.4.51",
    "jpeg-lossless": "1.2.840.10008.1.2.4.70",  # Process 14, Selection Value 1
    "jpeg-lossless-p14": "1.2.840.10008.1.2.4.57",
    "jpeg-ls-lossless": "1.2.840.10008.1.2.4.80",
    "jpeg-ls-near-lossless": "1.2.840.10008.1.2.4.81",
    "j2k-lossless": "1.2.840.10008.1.2.4.90",
    "j2k": "1.2.840.10008.1.2.4.91",
    "htj2k-lossless": "1.2.840.10008.1.2.4.201",
    "htj2k": "1.2.840.10008.1.2.4.203",
    "rle": "1.2.840.10008.1.2.5",
}

#: DCMTK 3.6.7's letters, as in storescu ``-xr`` (propose) and storescp ``+xr`` (prefer).
DCMTK_LETTERS: dict[str, str] = {
    "e": "explicit",
    "b": "big-endian",
    "i": "implicit",
    "d": "deflated",
    "s": "jpeg-lossless",
    "y": "jpeg-baseline",
    "x": "jpeg-extended",
    "v": "j2k-lossless",
    "w": "j2k",
    "t": "jpeg-ls-lossless",
    "u": "jpeg-ls-near-lossless",
    "r": "rle",
}

#: What DCMTK storescp accepts by default (``+x=``): the uncompressed syntaxes, Explicit VR
#: first (little endian being this machine's byte order in practice).
UNCOMPRESSED_ACCEPTED = (EXPLICIT_LE, BIG_ENDIAN, IMPLICIT_LE)


def parse_syntax(text: str, option: str = "transfer syntax") -> str:
    """A UID, or a name of ``SYNTAX_NAMES``, as the UID; ``UsageError`` otherwise."""
    name = text.strip().lower()
    if name in SYNTAX_NAMES:
        return SYNTAX_NAMES[name]
    if UID(text.strip()) in AllTransferSyntaxes:
        return text.strip()
    raise UsageError(
        f"{option} {text!r}: not a transfer syntax dicomio knows; give a UID or one of "
        + ", ".join(SYNTAX_NAMES)
    )


def syntax_list(texts: Sequence[str] | None, option: str) -> list[str]:
    """The UIDs of ``texts`` (names or UIDs), repeats dropped, order kept."""
    return list(dict.fromkeys(parse_syntax(t, option) for t in texts or ()))


def names_help() -> str:
    return ", ".join(SYNTAX_NAMES)


def add_syntax_letters(
    parser: argparse._ActionsContainer, prefix: str, dest: str, template: str
) -> None:
    """DCMTK-style one-syntax flags (``-xr`` or ``+xr``) that append the syntax's name to
    ``dest``; ``template`` is their help, with ``{name}`` for the syntax."""
    for letter, name in DCMTK_LETTERS.items():
        parser.add_argument(
            f"{prefix}x{letter}",
            dest=dest,
            action="append_const",
            const=name,
            help=template.format(name=name),
        )
