"""The scale-out benchmark (``benchmarks/scaleout.py``) at its smallest: both scenarios on
qrscp with 2 workers on PostgreSQL and on dcmqrscp (and B2's equal-size row, qrscp on
SQLite), with a few instances and studies. Real servers and clients; skipped without DCMTK
or PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import require_dcmtk
from tests.pg_cluster import missing

LABELS = ("qrscp PostgreSQL, 2 workers", "dcmqrscp, 8 storage areas")
TINY = {
    "count": 16,
    "per_study": 2,  # 8 studies: one to each storescu
    "reps": 1,
    "warmup": 0,
    "studies": 200,
    "small": 50,
    "rounds": 1,
    "rounds_each": 1,
}


@pytest.mark.timeout(60)
def test_scaleout_benchmark_measures_every_server(tmp_path: Path) -> None:
    require_dcmtk("storescu", "dcmqrscp")
    reason = missing()
    if reason is not None:
        pytest.skip(reason)
    from benchmarks.scaleout import run
    from benchmarks.scaleout_report import report

    rows, facts = run(TINY, labels=LABELS)

    assert facts["skipped"] == []
    ingest = {r["config"]: r for r in rows if r["scenario"] == "B1"}
    assert set(ingest) == set(LABELS)
    for r in ingest.values():
        assert r["held"] == [16]  # the benchmark also raises when not
        assert r["median"] > 0
        assert r["cpu"]["clients"] > 0
    workers = ingest["qrscp PostgreSQL, 2 workers"]["cpu"]
    assert {"supervisor", "worker 1", "worker 2", "postgres"} <= set(workers)
    assert workers["worker 1"] + workers["worker 2"] > 0
    assert ingest["dcmqrscp, 8 storage areas"]["cpu"]["dcmqrscp"] > 0

    matches = {
        (r["variant"], r["config"], r["query"]): r["matches"]
        for r in rows
        if r["scenario"] == "B2"
    }
    for variant in ("1 client", "8 clients"):
        for config in LABELS[:1]:
            got = [
                matches[variant, config, q] for q in ("exact PatientID", "PatientName wildcard")
            ]
            assert got == [1, 2]  # PID00042; Name07 is studies 7 and 107
            assert matches[variant, config, "StudyDate range"] == 3
            assert matches[variant, config, "IMAGE by SeriesInstanceUID"] == 5
        # At equal size both servers answer alike.
        for query in ("exact PatientID", "PatientName wildcard", "StudyDate range"):
            assert (
                matches[variant, "dcmqrscp", query]
                == matches[variant, "qrscp SQLite, 1 worker, 50 studies", query]
            )

    facts |= {"quick": True, "date": "now"}
    text = report(rows, facts, "")
    assert "## B1 ingest" in text
    assert "## B2 C-FIND latency over 200 studies" in text
    assert "vs dcmqrscp" in text
