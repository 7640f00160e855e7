"""The documentation site: every public name is in the API reference, the command-line
reference follows the parser, and ``mkdocs build --strict`` passes."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import pkgutil
import re
import subprocess
import sys
import zlib
from pathlib import Path
from types import ModuleType

import pytest

import dicomio
from dicomio.apps import cli

ROOT = Path(__file__).resolve().parent.parent

# Public modules without ``__all__``: a package that only holds modules, and the two modules
# whose names ``dicomio.pdu`` exports (and its reference page documents).
NO_ALL = {"dicomio.apps", "dicomio.pdu.items", "dicomio.pdu.pdus"}


def _gen_pages() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_pages", ROOT / "docs" / "gen_pages.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _have_mkdocs() -> bool:
    return all(
        importlib.util.find_spec(name) is not None
        for name in ("mkdocs", "mkdocstrings", "material", "griffe")
    )


needs_mkdocs = pytest.mark.skipif(
    not _have_mkdocs(), reason="mkdocs is not installed: pip install -e '.[docs]'"
)


def test_every_public_module_has_all() -> None:
    """A public module without ``__all__`` would be left out of the reference silently."""
    public = [
        info.name
        for info in pkgutil.walk_packages(dicomio.__path__, "dicomio.")
        if not any(part.startswith("_") for part in info.name.split("."))
    ]
    missing = [
        name
        for name in public
        if name not in NO_ALL and not hasattr(importlib.import_module(name), "__all__")
    ]
    assert missing == []


@needs_mkdocs
def test_every_public_name_is_rendered_on_a_reference_page() -> None:
    gen = _gen_pages()
    pages = gen.reference_pages()
    modules = gen.public_modules()
    assert set(pages) == {f"reference/{m}.md" for m in modules}
    assert "dicomio.transcode" in modules and "dicomio.sop" in modules
    rendered = {
        line.removeprefix("::: ").strip()
        for page in pages.values()
        for line in page.splitlines()
        if line.startswith("::: ")
    }
    package = gen._load()
    missing = []
    for module in modules:
        for name in importlib.import_module(module).__all__:
            where = gen.documented_at(package, module, name)
            if where not in rendered:
                missing.append(f"{module}.{name} (expected at {where})")
            elif where != f"{module}.{name}":
                # Re-exported: the module's own page links to where it is rendered.
                assert f"[`{where}`][{where}]" in pages[f"reference/{module}.md"]
    assert missing == []


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@needs_mkdocs
def test_cli_page_names_every_command_and_option() -> None:
    page = _gen_pages().cli_page()
    for name, sub in _subcommands().items():
        assert f"## `dicomio {name}`" in page
        section = page.split(f"## `dicomio {name}`", 1)[1].split("\n## ", 1)[0]
        for action in sub._actions:
            if action.help == argparse.SUPPRESS:
                continue  # internal, e.g. --worker-fd (a --workers supervisor to its workers)
            for flag in action.option_strings:
                assert re.search(rf"`{re.escape(flag)}[ `]", section), (name, flag)
            if not action.option_strings:
                assert f"`{action.metavar or action.dest}`" in section, (name, action.dest)


@needs_mkdocs
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    """The site builds with warnings as errors, and its inventory holds every public name."""
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        env={**_env(), "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (site / "cli" / "index.html").exists()
    # objects.inv (Sphinx inventory v2): four header lines, then zlib-compressed entries.
    raw = (site / "objects.inv").read_bytes().split(b"\n", 4)[4]
    inventory = {line.split(" ", 1)[0] for line in zlib.decompress(raw).decode().splitlines()}
    gen = _gen_pages()
    package = gen._load()
    missing = [
        f"{module}.{name}"
        for module in gen.public_modules()
        for name in importlib.import_module(module).__all__
        if gen.documented_at(package, module, name) not in inventory
    ]
    assert missing == []


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env
