"""L0-L2 and the shared pure modules stay sans-IO (ARCHITECTURE.md, Layers).

Scans the source with ``ast`` rather than importing it, so a forbidden import is caught even
inside a function or under ``if TYPE_CHECKING``. Files are found by globbing, so modules
written later are covered without editing this test.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "dicomio"
SANS_IO_PACKAGES = ("pdu", "ul", "dimse")
SANS_IO_MODULES = ("presentation.py", "status.py", "sop.py", "errors.py")
FORBIDDEN = frozenset({"anyio", "asyncio", "trio", "socket", "ssl", "select", "threading", "time"})


def sans_io_files() -> list[Path]:
    files = [path for pkg in SANS_IO_PACKAGES for path in (PACKAGE / pkg).rglob("*.py")]
    files += [PACKAGE / name for name in SANS_IO_MODULES if (PACKAGE / name).exists()]
    return sorted(files)


def imported_modules(tree: ast.AST) -> set[str]:
    """Top-level names of every absolute import in ``tree`` (relative ones stay in dicomio)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "__import__"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value.split(".")[0])
    return found


def test_the_scan_finds_the_layers() -> None:
    files = sans_io_files()
    assert PACKAGE / "pdu" / "items.py" in files
    assert PACKAGE / "errors.py" in files


@pytest.mark.parametrize("path", sans_io_files(), ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_no_io_imports(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    bad = imported_modules(tree) & FORBIDDEN
    assert not bad, f"{path.relative_to(PACKAGE.parent)} imports {sorted(bad)}"


@pytest.mark.parametrize(
    "source",
    [
        "import time",
        "import asyncio.streams",
        "from anyio import sleep",
        "from socket import socket",
        "def f():\n    import threading",
        "__import__('select')",
    ],
)
def test_the_scan_catches_io_imports(source: str) -> None:
    assert imported_modules(ast.parse(source)) & FORBIDDEN
