"""What a benchmark run is configured with, and what it produces: rows of measurements."""

from __future__ import annotations

import statistics
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.runner import HarnessError, Rep

DICOMIO, PYNETDICOM, DCMTK = "dicomio", "pynetdicom", "DCMTK"
IMPLS = (DICOMIO, PYNETDICOM, DCMTK)
#: dicomio on uvloop's event loop (``dicomio[uvloop]``, ``--uvloop``): a variant, not a peer.
DICOMIO_UVLOOP = "dicomio+uvloop"
#: (client, server) pairs S1-S3 add for it, beside the same pairs without uvloop: both sides,
#: each side alone against dicomio on asyncio's own loop, and each side against DCMTK (whose
#: cost is small and steady, so the difference is dicomio's).
UVLOOP_PAIRS = (
    (DICOMIO_UVLOOP, DICOMIO_UVLOOP),
    (DICOMIO_UVLOOP, DICOMIO),
    (DICOMIO, DICOMIO_UVLOOP),
    (DICOMIO_UVLOOP, DCMTK),
    (DCMTK, DICOMIO_UVLOOP),
)


def uvloop_installed() -> bool:
    """Whether the uvloop variants can run (without uvloop they are left out of the run)."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def variants() -> tuple[str, ...]:
    """The implementations S1-S3 start as clients and servers: IMPLS, plus dicomio+uvloop."""
    return (*IMPLS, DICOMIO_UVLOOP) if uvloop_installed() else IMPLS


def runs_pair(client: str, server: str) -> bool:
    """Whether S1-S3 measure ``client`` against ``server`` (uvloop only in UVLOOP_PAIRS)."""
    if DICOMIO_UVLOOP in (client, server):
        return (client, server) in UVLOOP_PAIRS
    return True


MB = 1_000_000

TITLES = {
    "S1": "C-ECHO rate on one association",
    "S2": "Association rate: associate, C-ECHO, release, one after another",
    "S3": "C-STORE of many 0.5 MB instances on one association",
    "S4": "C-STORE of large instances: throughput and peak RSS",
    "S5": "C-FIND with many matches",
    "S6": "Concurrent associations, 20 C-ECHOs each, against one server process",
    "S7": "Asynchronous operations on one association (16 tasks)",
    "S8": "Fan-out: one C-FIND to each of 50 SCPs",
    "CORE": "Core micro-benchmarks (in-process, no sockets)",
}
SCENARIOS = tuple(TITLES)


@dataclass
class Settings:
    quick: bool
    reps: int
    warmup: int
    cache: Path
    s4_mb: float
    s4_count: int
    s6_sizes: tuple[int, ...]
    rep_timeout: float

    def pick(self, quick: Any, full: Any) -> Any:
        return quick if self.quick else full

    def skips(self, client: str, server: str) -> bool:
        """Quick mode runs dicomio's pairs and each peer with itself, not peer x peer."""
        return (
            self.quick
            and DICOMIO not in (client, server)
            and DICOMIO_UVLOOP not in (client, server)
            and client != server
        )


@dataclass
class Row:
    """One (scenario, variant, client, server) measurement: a value per repetition."""

    scenario: str
    variant: str
    client: str
    server: str
    unit: str
    values: list[float] = field(default_factory=list)
    higher_is_better: bool = True
    #: Per-repetition side measurements: "server CPU s", "server peak MB", ...
    extras: dict[str, list[float]] = field(default_factory=dict)
    status: str = "ok"  # ok | n/a | skipped | error
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def min(self) -> float:
        return min(self.values) if self.values else float("nan")

    @property
    def max(self) -> float:
        return max(self.values) if self.values else float("nan")

    def extra(self, name: str) -> float | None:
        values = self.extras.get(name)
        return statistics.median(values) if values else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "variant": self.variant,
            "client": self.client,
            "server": self.server,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            "status": self.status,
            "note": self.note,
            "values": self.values,
            "median": self.median if self.values else None,
            "min": self.min if self.values else None,
            "max": self.max if self.values else None,
            "extras": self.extras,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Row:
        return cls(
            scenario=data["scenario"],
            variant=data["variant"],
            client=data["client"],
            server=data["server"],
            unit=data["unit"],
            values=list(data["values"]),
            higher_is_better=data["higher_is_better"],
            extras=dict(data["extras"]),
            status=data["status"],
            note=data["note"],
        )


def fill(row: Row, reps: list[Rep], value: Callable[[Rep], float]) -> Row:
    """Set ``row``'s values from measured repetitions, with the standard side measurements."""
    row.values = [value(rep) for rep in reps]
    extras: dict[str, list[float]] = {
        "failures": [float(rep.failures) for rep in reps],
        "server CPU s": [rep.server_cpu_s for rep in reps],
        "server peak MB": [rep.server_peak_kb * 1024 / MB for rep in reps],
        "server +MB": [(rep.server_peak_kb - rep.server_idle_kb) * 1024 / MB for rep in reps],
        "server threads": [float(rep.server_threads) for rep in reps],
        "client CPU s": [rep.client_cpu_s for rep in reps],
        "client peak MB": [rep.client_peak_kb * 1024 / MB for rep in reps],
        "client +MB": [(rep.client_peak_kb - rep.client_idle_kb) * 1024 / MB for rep in reps],
        "wall s": [rep.wall for rep in reps],
    }
    row.extras.update(extras)
    if any(rep.failures for rep in reps):
        errors: dict[str, int] = {}
        for rep in reps:
            for client in rep.clients:
                for name, n in (client.get("errors") or {}).items():
                    errors[name] = errors.get(name, 0) + int(n)
                if client.get("error"):
                    errors[client["error"]] = errors.get(client["error"], 0) + 1
        detail = ", ".join(f"{k} x{v}" for k, v in sorted(errors.items()))
        row.note = "; ".join(filter(None, [row.note, f"failures: {detail or 'see failures'}"]))
    return row


def rate(rep: Rep) -> float:
    """Completed operations per second of wall time."""
    return rep.count / rep.wall if rep.wall > 0 else 0.0


def megabytes_per_second(rep: Rep) -> float:
    total = sum(int(c.get("bytes", 0)) for c in rep.clients)
    return total / MB / rep.wall if rep.wall > 0 else 0.0


@contextmanager
def measuring(rows: list[Row], row: Row) -> Iterator[Row]:
    """Append ``row``; if the body fails, mark it as an error with the reason."""
    rows.append(row)
    started = time.monotonic()
    try:
        yield row
    except HarnessError as exc:
        row.status, row.values = "error", []
        row.note = "; ".join(filter(None, [row.note, str(exc)[:400]]))
    except Exception as exc:
        row.status, row.values = "error", []
        last = traceback.format_exception(exc)[-1].strip()
        row.note = "; ".join(filter(None, [row.note, f"harness bug: {last}"[:400]]))
    finally:
        print(
            f"  {row.scenario} {row.variant or ''} {row.client} → {row.server}: "
            f"{row.status}, {time.monotonic() - started:.1f} s",
            flush=True,
        )


def skipped(scenario: str, variant: str, client: str, server: str, unit: str) -> Row:
    return Row(
        scenario,
        variant,
        client,
        server,
        unit,
        status="skipped",
        note="quick mode runs dicomio's pairs and each peer with itself",
    )


def not_applicable(
    scenario: str, variant: str, client: str, server: str, unit: str, reason: str
) -> Row:
    return Row(scenario, variant, client, server, unit, status="n/a", note=reason)
