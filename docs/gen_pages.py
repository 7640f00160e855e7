"""Pages generated at build time, so they cannot drift from the code: the API reference and
the command-line reference.

mkdocs loads this file as a hook (``hooks:`` in ``mkdocs.yml``): ``on_config`` fills the "API
reference" section of the navigation and ``on_files`` adds the generated pages to the build.
Nothing is written into ``docs/``. ``tests/test_docs.py`` imports the same functions.

The API reference has a page per public module: every module under ``dicomio`` with no
component starting with an underscore that defines ``__all__``. Each name in ``__all__`` is
rendered (a mkdocstrings ``:::`` block) on the page of the public module that defines it; a
module that re-exports a name another public module documents links there instead. Which
module defines a name is read statically with griffe, the loader mkdocstrings itself uses.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_DIR = "reference"
CLI_PAGE = "cli.md"
NAV_SECTION = "API reference"


def public_modules() -> list[str]:
    """Every public module of dicomio that declares ``__all__``, in import order."""
    import dicomio

    names = ["dicomio"]
    for info in pkgutil.walk_packages(dicomio.__path__, "dicomio."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        names.append(info.name)
    return sorted(n for n in names if hasattr(importlib.import_module(n), "__all__"))


def exported(module: str) -> list[str]:
    return list(importlib.import_module(module).__all__)


def _is_public(path: str) -> bool:
    return not any(part.startswith("_") for part in path.split("."))


def _load() -> Any:
    import griffe

    return griffe.load(
        "dicomio", search_paths=[str(ROOT)], resolve_aliases=True, resolve_external=False
    )


def documented_at(package: Any, module: str, name: str) -> str:
    """Where ``module.name`` is rendered: its own path, or the public module defining it.

    Classes and functions say where they were defined (``__module__``); for other values
    (constants, preset lists) griffe follows the import that brought the name in.
    """
    here = f"{module}.{name}"
    value = getattr(importlib.import_module(module), name)
    if inspect.ismodule(value):
        return value.__name__
    if inspect.isclass(value) or inspect.isfunction(value):
        owner, qualname = value.__module__, value.__qualname__
    else:
        member = (package[module.removeprefix("dicomio.")] if module != "dicomio" else package)[
            name
        ]
        if not member.is_alias:
            return here
        target = member.final_target
        owner, qualname = target.parent.path, target.name
    if owner != module and owner in _modules_set() and qualname in exported(owner):
        return f"{owner}.{qualname}"
    return here


_MODULES: set[str] = set()


def _modules_set() -> set[str]:
    if not _MODULES:
        _MODULES.update(public_modules())
    return _MODULES


def reference_page(package: Any, module: str) -> str:
    """The Markdown of one module's reference page."""
    lines = [
        f"::: {module}",
        "    options:",
        "      members: false",
        "      heading_level: 1",
        "      show_root_full_path: true",
        "",
    ]
    elsewhere: list[tuple[str, str]] = []
    for name in exported(module):
        where = documented_at(package, module, name)
        if where == f"{module}.{name}":
            lines += [f"::: {where}", ""]
        else:
            elsewhere.append((name, where))
    if elsewhere:
        lines += [
            "## Re-exported names",
            "",
            "Documented where they are defined:",
            "",
            "| name | documented at |",
            "|---|---|",
        ]
        lines += [f"| `{name}` | [`{where}`][{where}] |" for name, where in elsewhere]
        lines.append("")
    return "\n".join(lines)


def reference_pages() -> dict[str, str]:
    """``{path under docs/: Markdown}`` for every public module."""
    package = _load()
    return {
        f"{REFERENCE_DIR}/{module}.md": reference_page(package, module)
        for module in public_modules()
    }


# -- the command line ---------------------------------------------------------------------


def _flags(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    metavar = ""
    if action.nargs != 0:
        metavar = " " + str(action.metavar or action.dest.upper())
        if action.choices is not None and action.metavar is None:
            metavar = " {" + ",".join(map(str, action.choices)) + "}"
    return ", ".join(f"`{flag}{metavar}`" for flag in action.option_strings)


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    text = action.help or ""
    if "%" in text:
        params = dict(vars(action), prog=parser.prog)
        if params.get("choices") is not None:
            params["choices"] = ", ".join(map(str, params["choices"]))
        text = text % params
    return text.replace("|", "\\|").replace("\n", " ")


def _options_table(parser: argparse.ArgumentParser) -> list[str]:
    lines: list[str] = []
    for group in parser._action_groups:
        actions = [
            a
            for a in group._group_actions
            if a.help != argparse.SUPPRESS and not isinstance(a, argparse._SubParsersAction)
        ]
        if not actions:
            continue
        title = group.title or "options"
        lines += [f"**{title}**", ""]
        if group.description:
            lines += [group.description, ""]
        lines += ["| argument | meaning |", "|---|---|"]
        lines += [f"| {_flags(a)} | {_help(parser, a)} |" for a in actions]
        lines.append("")
    return lines


def cli_page() -> str:
    """The command-line reference, read from ``dicomio.apps.cli.build_parser()``."""
    from dicomio.apps import cli

    parser = cli.build_parser()
    doc = (cli.__doc__ or "").split("\n\n", 1)
    lines = [
        "# Command-line reference",
        "",
        "Generated from `dicomio.apps.cli.build_parser()` when the site is built.",
        "Run `dicomio COMMAND --help` for the same text in a terminal.",
        "",
        doc[1].strip() if len(doc) > 1 else "",
        "",
    ]
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in subparsers._choices_actions}
    for name, sub in subparsers.choices.items():
        lines += [f"## `dicomio {name}`", ""]
        if helps.get(name):
            lines += [str(helps[name]), ""]
        if sub.description and sub.description != helps.get(name):
            lines += [sub.description, ""]
        lines += _options_table(sub)
        if sub.epilog:
            lines += [sub.epilog, ""]
    return "\n".join(lines)


# -- mkdocs hooks ---------------------------------------------------------------------------


def on_config(config: Any) -> Any:
    nav = config["nav"] or []
    pages = [{m: f"{REFERENCE_DIR}/{m}.md"} for m in public_modules()]
    for item in nav:
        if isinstance(item, dict) and NAV_SECTION in item:
            item[NAV_SECTION] = pages
    return config


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    generated = dict(reference_pages())
    generated[CLI_PAGE] = cli_page()
    for path, content in generated.items():
        files.append(File.generated(config, path, content=content))
    return files
