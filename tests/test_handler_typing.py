"""``mypy --strict`` checks a user's handlers against their events (issue #16, acceptance 5).

tests/typing/handlers_ok.py binds a right handler to every event type (with ``evt.handler``,
as pynetdicom-style tuples in ``evt_handlers``, and with ``Association.bind``) and must be
clean; every line of tests/typing/handlers_bad.py marked ``# E: <fragment>`` must get an
error whose message holds the fragment, and no other line any error. Both files go to one
mypy run (about 15 s without a cache) with a cache of its own, so nothing is left behind,
with the typed handlers example of docs/migration.md.
"""

from __future__ import annotations

import importlib.util
import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed"),
]

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "typing"
#: The migration page's typed handlers example is checked with the fixtures.
EXAMPLE = ROOT / "docs" / "examples" / "migration.py"
_ERROR = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): error: (?P<message>.*)$")


def _expected(path: Path) -> dict[int, str]:
    """``{line: fragment}`` from the file's ``# E: fragment`` comments (not its docstring)."""
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    return {
        token.start[0]: token.string.split("E:", 1)[1].strip()
        for token in tokens
        if token.type == tokenize.COMMENT and re.match(r"#\s*E:", token.string)
    }


@pytest.fixture(scope="module")
def mypy_errors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[int, list[str]]]:
    """``{file name: {line: [messages]}}`` from one ``mypy --strict`` run over the files."""
    cache = tmp_path_factory.mktemp("mypy-cache")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(cache),
            "--no-pretty",
            "--hide-error-context",
            "--no-error-summary",
            "--show-absolute-path",
            str(FIXTURES / "handlers_ok.py"),
            str(FIXTURES / "handlers_bad.py"),
            str(EXAMPLE),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # 0: no error, 1: errors found; anything else is mypy itself failing.
    assert result.returncode in (0, 1), result.stdout + result.stderr
    errors: dict[str, dict[int, list[str]]] = {}
    for line in result.stdout.splitlines():
        match = _ERROR.match(line)
        if match is None:
            # A note (continuation of an error) or a crash report; crashes fail below.
            assert ": note: " in line, line
            continue
        name = Path(match["file"]).name
        errors.setdefault(name, {}).setdefault(int(match["line"]), []).append(match["message"])
    return errors


def test_right_handlers_for_every_event_are_clean(
    mypy_errors: dict[str, dict[int, list[str]]],
) -> None:
    assert mypy_errors.get("handlers_ok.py", {}) == {}


def test_every_wrong_handler_is_flagged_and_nothing_else(
    mypy_errors: dict[str, dict[int, list[str]]],
) -> None:
    expected = _expected(FIXTURES / "handlers_bad.py")
    assert len(expected) >= 30  # the fixture parsed: one or more per event type
    reported = mypy_errors.get("handlers_bad.py", {})
    missing = {
        line: fragment
        for line, fragment in expected.items()
        if not any(fragment in message for message in reported.get(line, []))
    }
    unexpected = {line: messages for line, messages in reported.items() if line not in expected}
    assert missing == {}
    assert unexpected == {}


def test_the_bad_fixture_names_every_event_type() -> None:
    """Each EVT_* constant has a wrong handler in the bad file and a right one in the ok file."""
    import dicomio.events as evt

    names = {name for name in evt.__all__ if name.startswith("EVT_")}
    bad = (FIXTURES / "handlers_bad.py").read_text()
    ok = (FIXTURES / "handlers_ok.py").read_text()
    assert {n for n in names if f"evt.{n}," not in bad} == set()
    assert {n for n in names if f"evt.{n}," not in ok} == set()


def test_the_migration_pages_typed_handlers_are_clean(
    mypy_errors: dict[str, dict[int, list[str]]],
) -> None:
    lines = EXAMPLE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines, 1) if "[start:typed_handlers]" in line)
    end = next(i for i, line in enumerate(lines, 1) if "[end:typed_handlers]" in line)
    errors = mypy_errors.get(EXAMPLE.name, {})
    assert {line: m for line, m in errors.items() if start < line < end} == {}
