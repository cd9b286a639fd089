"""Timing with warm-up, repeats, the median and the interquartile range, and device synchronization.

Every clock reading of the measurement code goes through this module: :func:`measure` (repeated calls
of one function), :func:`measure_interleaved` (several functions, one call of each per round) and
:func:`timed` (one call that cannot be repeated, such as a training step).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..backend import Device
from ..errors import check_number


@dataclass
class Measurement:
    """Seconds per call: median, quartiles and every sample."""

    median: float
    q1: float
    q3: float
    samples: list = field(repr=False)

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    def as_dict(self) -> dict:
        d = asdict(self)
        d["iqr"] = self.iqr
        return d


def summarize(samples: Sequence[float]) -> Measurement:
    """Median and quartiles of a list of timings."""
    samples = list(samples)
    if not samples:
        raise ValueError("summarize: no samples")
    if len(samples) == 1:
        return Measurement(samples[0], samples[0], samples[0], samples)
    q1, med, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return Measurement(statistics.median(samples), q1, q3, samples)


def measure(
    fn: Callable[..., Any],
    repeats: int = 20,
    warmup: int = 3,
    number: int = 1,
    device: Device | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Measurement:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` samples of ``number`` calls each.

    ``device`` (a :class:`minidiff.Device`) is synchronized before each clock reading, so GPU work
    is counted where it runs.  ``clock`` can be replaced (tests use a fake clock).
    """
    check_number("measure", "repeats", repeats, low=1, integer=True)
    check_number("measure", "number", number, low=1, integer=True)
    check_number("measure", "warmup", warmup, low=0, integer=True)
    sync = _synchronizer(device)
    for _ in range(warmup):
        fn()
    sync()
    samples = []
    for _ in range(repeats):
        t0 = clock()
        for _ in range(number):
            fn()
        sync()
        samples.append((clock() - t0) / number)
    return summarize(samples)


def measure_interleaved(
    calls: dict,
    repeats: int = 20,
    warmup: int = 3,
    device: Device | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict:
    """Time every function of ``calls`` (name → function) once per round, round after round, so a change
    of load on a shared machine falls on all of them alike (rather than on whichever was being timed).
    ``warmup`` untimed calls of each first; returns name → :class:`Measurement` of ``repeats`` samples."""
    check_number("measure_interleaved", "repeats", repeats, low=1, integer=True)
    check_number("measure_interleaved", "warmup", warmup, low=0, integer=True)
    sync = _synchronizer(device)
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    sync()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            t0 = clock()
            fn()
            sync()
            samples[name].append(clock() - t0)
    return {name: summarize(s) for name, s in samples.items()}


def timed(
    fn: Callable[[], Any], device: Device | None = None, clock: Callable[[], float] = time.perf_counter
) -> tuple:
    """``(fn(), seconds)``: one call, timed once (a training step, a reference run too long to repeat)."""
    t0 = clock()
    out = fn()
    _synchronizer(device)()
    return out, clock() - t0


def _synchronizer(device: Device | None) -> Callable[[], None]:
    return device.synchronize if device is not None else (lambda: None)


def ratio(num: Measurement, den: Measurement) -> dict:
    """The ratio of two medians with a spread from the quartiles (q1/q3 and q3/q1 as a rough band)."""
    return {
        "value": num.median / den.median,
        "low": num.q1 / den.q3 if den.q3 else float("nan"),
        "high": num.q3 / den.q1 if den.q1 else float("nan"),
    }
