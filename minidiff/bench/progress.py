"""A small progress bar on stderr (a bar on a terminal, a line per 10% elsewhere)."""

from __future__ import annotations

import sys
import time
from typing import Any


class Progress:
    """``with Progress(total, "label") as bar: bar.update(1)``."""

    def __init__(self, total: int, label: str = "", stream: Any = None, enabled: bool = True) -> None:
        self.total, self.label = max(int(total), 1), label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.done = 0
        self.start = time.perf_counter()
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last_decile = -1

    def __enter__(self) -> Progress:
        self._draw()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def update(self, n: int = 1) -> None:
        self.done = min(self.done + n, self.total)
        self._draw()

    def _draw(self) -> None:
        if not self.enabled:
            return
        frac = self.done / self.total
        elapsed = time.perf_counter() - self.start
        if self.tty:
            width = 30
            bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
            self.stream.write(f"\r{self.label:28.28s} [{bar}] {self.done}/{self.total} {elapsed:6.1f}s")
            self.stream.flush()
        else:
            decile = int(frac * 10)
            if decile != self._last_decile and (decile > self._last_decile):
                self._last_decile = decile
                self.stream.write(f"{self.label}: {self.done}/{self.total} ({elapsed:.1f}s)\n")
                self.stream.flush()
