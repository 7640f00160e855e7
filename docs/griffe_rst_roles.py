"""A griffe extension for the documentation build: reST inline roles in docstrings as code.

A few dicomio docstrings use Sphinx roles (``:func:`transcode```, ``:class:`~x.Y```) and the
reST ``::`` that introduces a literal block. Markdown would show the role markup as text, so
each role becomes a code span (``~`` keeps only the last name, as in Sphinx) and ``::`` a colon:
the indented block after it is already a code block in Markdown.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:func|class|meth|attr|mod|data|exc|obj):`(~?)([^`]+)`")


def _code(match: re.Match[str]) -> str:
    short, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


def convert(text: str) -> str:
    text = _ROLE.sub(_code, text)
    return re.sub(r"::$", ":", text, flags=re.MULTILINE)


class RstRoles(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value)

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        # The top-level package is finished after on_object has seen its members.
        if pkg.docstring is not None:
            pkg.docstring.value = convert(pkg.docstring.value)
