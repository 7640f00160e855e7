"""Time spent in chosen functions of a benchmark server: ``python -m benchmarks.timed``.

    python -m benchmarks.timed --funcs dicomio._scp:ServiceProviderMixin._take_data,\\
        dicomio.dimse.commands:decode_command -- dicomio-scp --mode discard

Runs ``benchmarks.peers`` (the arguments after ``--``) with each named function replaced by
a wrapper that adds its wall time and its calls to a tally; when the server exits (SIGTERM,
as the harness stops it) the tally goes to stderr as one JSON line,
``{"timed": {"module:qualname": {"seconds": S, "calls": N}, ...}}``. Drive the server with
any client of ``benchmarks.clients`` and divide by the number of messages.

Why not cProfile: its cost per call (about half a microsecond) doubles a hot path made of
a few hundred small calls and shifts its balance, and py-spy's samples are too coarse for a
path of 200 µs. A handful of wrappers (each about 0.2 µs) time the parts of a message where
they run, in the server whose caches the data sets have just gone through, which is slower
than the same function in a loop (``decode_command``: 11 µs there, 4 µs in a loop).

A wrapper's time includes the functions it calls, wrapped or not; for a coroutine function
it is the time from the call to the end of the coroutine, waits included, so time the
functions that do not wait for the peer. A name is ``module:function`` or
``module:Class.method``. A method is replaced on its class; a function on its module and in
every module loaded by then that imported it by name (``from m import f``), which would
otherwise keep calling the original.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import importlib
import inspect
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from benchmarks import peers

_clock = time.perf_counter_ns


class Tally:
    """Wall time and calls per wrapped function."""

    def __init__(self) -> None:
        self.totals: dict[str, list[int]] = {}

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        """A function that does what ``function`` does and adds its time to ``name``'s."""
        entry = self.totals.setdefault(name, [0, 0])
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def timed_coroutine(*args: Any, **kwargs: Any) -> Any:
                start = _clock()
                try:
                    return await function(*args, **kwargs)
                finally:
                    entry[0] += _clock() - start
                    entry[1] += 1

            return timed_coroutine

        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = _clock()
            try:
                return function(*args, **kwargs)
            finally:
                entry[0] += _clock() - start
                entry[1] += 1

        return timed

    def install(self, name: str) -> None:
        """Replace ``module:qualname`` by its timed wrapper where it is defined."""
        module_name, _, qualname = name.partition(":")
        if not qualname:
            raise ValueError(f"{name!r}: expected module:function or module:Class.method")
        owner: Any = importlib.import_module(module_name)
        *path, attribute = qualname.split(".")
        for part in path:
            owner = getattr(owner, part)
        # The class's own attribute, not what getattr finds (a staticmethod stays one).
        original = inspect.getattr_static(owner, attribute)
        if isinstance(original, staticmethod | classmethod):
            kind = type(original)
            setattr(owner, attribute, kind(self.wrap(name, original.__func__)))
            return
        timed = self.wrap(name, original)
        setattr(owner, attribute, timed)
        if not path:
            # The modules that hold the same function under a name of their own.
            for module in list(sys.modules.values()):
                namespace = getattr(module, "__dict__", None)
                if not isinstance(namespace, dict):
                    continue
                for key, value in list(namespace.items()):
                    if value is original:
                        namespace[key] = timed

    def report(self) -> dict[str, dict[str, float | int]]:
        return {
            name: {"seconds": total / 1e9, "calls": calls}
            for name, (total, calls) in self.totals.items()
        }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.timed")
    parser.add_argument(
        "--funcs", required=True, help="comma-separated module:function or module:Class.method"
    )
    parser.add_argument("server", nargs=argparse.REMAINDER, help="-- and benchmarks.peers' own")
    args = parser.parse_args(argv)
    server = args.server[1:] if args.server[:1] == ["--"] else args.server
    tally = Tally()
    for name in filter(None, (part.strip() for part in args.funcs.split(","))):
        tally.install(name)

    def report() -> None:
        print(json.dumps({"timed": tally.report()}), file=sys.stderr, flush=True)

    atexit.register(report)
    peers.main(server)


if __name__ == "__main__":
    main()
