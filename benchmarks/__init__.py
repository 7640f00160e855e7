"""End-to-end benchmarks: dicomio against pynetdicom and DCMTK on loopback.

Run ``python -m benchmarks run [--quick] [--only S1,S3]``; results go to
``benchmarks/RESULTS.md`` and ``benchmarks/results.json``. Each client and each server runs
in its own process (``benchmarks.clients``, ``benchmarks.peers``, or a DCMTK tool) so that
CPU time and peak RSS belong to one implementation. The scenarios are those of issue #6
(S1-S8) plus the in-process core micro-benchmarks (``bench_core_pdu``, ``bench_core_dimse``).

This package is imported by every client and server process: keep it free of heavy imports.
"""
