"""Progress of a transfer: a one-line bar on a terminal, a few plain lines otherwise."""

from __future__ import annotations

import time
from typing import TextIO

__all__ = ["Progress", "human_bytes"]

#: Redraw a terminal bar at most this often; plain output reports every tenth of the total.
REDRAW_SECONDS = 0.1
BAR_WIDTH = 24


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


class Progress:
    """Counts files and bytes; draws on ``stream``, which may or may not be a terminal."""

    def __init__(
        self, total_files: int, total_bytes: int, stream: TextIO, *, tty: bool | None = None
    ) -> None:
        self.total_files = total_files
        self.total_bytes = total_bytes
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.files = 0
        self.bytes = 0
        self.failed = 0
        self.start = time.monotonic()
        self._drawn = 0.0
        self._next_step = 1

    @property
    def elapsed(self) -> float:
        return max(time.monotonic() - self.start, 1e-6)

    def advance(self, nbytes: int, *, ok: bool) -> None:
        self.files += 1
        if ok:
            self.bytes += nbytes
        else:
            self.failed += 1
        if self.tty:
            now = time.monotonic()
            if now - self._drawn >= REDRAW_SECONDS or self.files == self.total_files:
                self._drawn = now
                self._draw()
        elif self.total_files and self.files * 10 >= self._next_step * self.total_files:
            while self.files * 10 >= self._next_step * self.total_files:
                self._next_step += 1
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def line(self) -> str:
        rate = self.bytes / self.elapsed
        failed = f", {self.failed} failed" if self.failed else ""
        return (
            f"{self.files}/{self.total_files} files{failed}, "
            f"{human_bytes(self.bytes)} of {human_bytes(self.total_bytes)}, "
            f"{human_bytes(rate)}/s, {self.files / self.elapsed:.0f} files/s"
        )

    def _draw(self) -> None:
        done = self.files / self.total_files if self.total_files else 1.0
        filled = int(done * BAR_WIDTH)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        self.stream.write(f"\r[{bar}] {done * 100:3.0f}% {self.line()}\x1b[K")
        self.stream.flush()

    def finish(self) -> None:
        """End the bar's line (the terminal case); plain output needs nothing more."""
        if self.tty:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()
