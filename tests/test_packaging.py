"""The package as users get it: build the sdist and wheel, install the wheel in a fresh venv.

The wheel is installed with ``--no-deps`` into a venv made without ``--system-site-packages``;
its dependencies (pydicom, anyio, attrs) are made visible through a ``.pth`` file naming this
interpreter's site-packages, appended after the venv's own. A ``.pth`` line only adds a path:
the ``.pth`` files inside it (an editable install of dicomio, say) are not run, so the
``dicomio`` that imports is the wheel's. The build itself runs in build's isolated environment,
which fetches setuptools from the package index (or ``PIP_FIND_LINKS``).

Deselect with ``-m 'not packaging'``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

import dicomio

pytestmark = [pytest.mark.packaging, pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parent.parent

# What setuptools prints when the configuration uses something deprecated (a license table
# instead of an SPDX expression, license classifiers, ...): the warning class names and the
# "!!" banner around their long explanation.
_SETUPTOOLS_WARNING = re.compile(r"Setuptools\w*Warning|DeprecationWarning|^\s*!!\s*$", re.M)


def _clean_env() -> dict[str, str]:
    # The test run puts the worktree on PYTHONPATH; the installed wheel must stand alone.
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME"}}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(args: list[str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        args,
        cwd=cwd,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done


def _has_build() -> bool:
    try:
        import build  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path | None, str]:
    """Build once: (wheel, sdist or None without the ``build`` package, build output)."""
    out = tmp_path_factory.mktemp("dist")
    if _has_build():
        done = _run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], cwd=out)
    else:
        done = _run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(ROOT)],
            cwd=out,
        )
    wheels = list(out.glob("dicomio-*.whl"))
    sdists = list(out.glob("dicomio-*.tar.gz"))
    assert len(wheels) == 1, list(out.iterdir())
    return wheels[0], (sdists[0] if sdists else None), done.stdout + done.stderr


def test_build_prints_no_setuptools_warning(dist: tuple[Path, Path | None, str]) -> None:
    _wheel, _sdist, output = dist
    found = _SETUPTOOLS_WARNING.findall(output)
    assert not found, output


def test_wheel_metadata_and_contents(dist: tuple[Path, Path | None, str]) -> None:
    wheel, _sdist, _output = dist
    version = dicomio.__version__
    assert wheel.name.startswith(f"dicomio-{version}-py3-none-any")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        info = f"dicomio-{version}.dist-info"
        metadata = zf.read(f"{info}/METADATA").decode()
        entry_points = zf.read(f"{info}/entry_points.txt").decode()
    headers = metadata.split("\n\n", 1)[0].splitlines()
    assert "License-Expression: MIT" in headers
    assert "License-File: LICENSE" in headers
    assert f"Version: {version}" in headers
    assert not any(h.startswith("Classifier: License") for h in headers)
    for extra in ("codecs", "trio", "docs", "test"):
        assert f"Provides-Extra: {extra}" in headers
    assert f"{info}/licenses/LICENSE" in names
    # The codec worker runs as `python -m dicomio._codec_worker` in its own process, so it
    # must be an importable module of the installed package; py.typed marks it typed.
    assert "dicomio/_codec_worker.py" in names
    assert "dicomio/py.typed" in names
    assert "dicomio/apps/cli.py" in names
    assert not any(n.startswith("tests/") for n in names), "tests are not shipped"
    assert "dicomio = dicomio.apps.cli:main" in entry_points


def test_sdist_contents(dist: tuple[Path, Path | None, str]) -> None:
    _wheel, sdist, _output = dist
    if sdist is None:
        pytest.skip("the 'build' package is not installed: only the wheel was built")
    with tarfile.open(sdist) as tf:
        names = {name.split("/", 1)[1] for name in tf.getnames() if "/" in name}
    assert {"LICENSE", "pyproject.toml", "README.md", "dicomio/py.typed"} <= names
    assert "dicomio/_codec_worker.py" in names


def test_wheel_installs_and_runs_in_a_fresh_venv(
    dist: tuple[Path, Path | None, str], tmp_path: Path
) -> None:
    wheel, _sdist, _output = dist
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path, timeout=60)
    python = venv / "bin" / "python"
    # This interpreter's pip installs into the venv (pip >= 22.3: --python); no index, no deps.
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        cwd=tmp_path,
    )
    site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            cwd=tmp_path,
        ).stdout.strip()
    )
    paths = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (site / "_host_site_packages.pth").write_text("".join(f"{p}\n" for p in paths))

    probe = _run(
        [
            str(python),
            "-c",
            "import dicomio, dicomio._codec_worker, dicomio.transcode, pathlib; "
            "print(dicomio.__version__); print(pathlib.Path(dicomio.__file__).resolve())",
        ],
        cwd=tmp_path,
    )
    version, location = probe.stdout.split()
    assert version == dicomio.__version__
    assert Path(location).is_relative_to(site.resolve()), "imported the wheel's copy"
    assert (site / "dicomio" / "py.typed").is_file()

    help_text = _run([str(venv / "bin" / "dicomio"), "--help"], cwd=tmp_path).stdout
    assert "usage: dicomio" in help_text
