"""The in-process core micro-benchmarks (``bench_core_pdu``, ``bench_core_dimse``) as rows."""

from __future__ import annotations

import importlib
from typing import Any

from benchmarks.model import Row, Settings
from benchmarks.runner import Workspace

MODULES = ("benchmarks.bench_core_pdu", "benchmarks.bench_core_dimse")


def _row(module: str, result: dict[str, Any]) -> Row:
    # The modules report median/min/max of their timeit repeats; kept as three values so that
    # the report's median, min and max are theirs.
    values = [result["min_s"] * 1e6, result["median_s"] * 1e6, result["max_s"] * 1e6]
    return Row(
        "CORE",
        str(result["scenario"]),
        str(result["impl"]),
        "in-process",
        "µs",
        values=values,
        higher_is_better=False,
        note=f"{module.rsplit('.', 1)[1]}: median of timeit repeats",
    )


def run(settings: Settings, ws: Workspace, selected: set[str]) -> list[Row]:
    rows: list[Row] = []
    for module_name in MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            rows.append(
                Row(
                    "CORE",
                    module_name,
                    "-",
                    "in-process",
                    "µs",
                    status="n/a",
                    note=f"not importable: {exc}",
                )
            )
            continue
        try:
            results = module.run(settings.quick)
        except Exception as exc:
            rows.append(
                Row(
                    "CORE",
                    module_name,
                    "-",
                    "in-process",
                    "µs",
                    status="error",
                    note=f"{type(exc).__name__}: {exc}"[:400],
                )
            )
            continue
        rows += [_row(module_name, result) for result in results]
    return rows
