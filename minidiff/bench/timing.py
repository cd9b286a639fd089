"""Timing with warm-up, repeats, the median and the interquartile range, and device synchronization."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field


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


def summarize(samples) -> Measurement:
    """Median and quartiles of a list of timings."""
    samples = list(samples)
    if not samples:
        raise ValueError("summarize: no samples")
    if len(samples) == 1:
        return Measurement(samples[0], samples[0], samples[0], samples)
    q1, med, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return Measurement(statistics.median(samples), q1, q3, samples)


def measure(
    fn, repeats: int = 20, warmup: int = 3, number: int = 1, device=None, clock=time.perf_counter
) -> Measurement:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` samples of ``number`` calls each.

    ``device`` (a :class:`minidiff.Device`) is synchronized before each clock reading, so GPU work
    is counted where it runs.  ``clock`` can be replaced (tests use a fake clock).
    """
    if repeats < 1 or number < 1 or warmup < 0:
        raise ValueError(
            f"measure: repeats and number must be >= 1 and warmup >= 0, got {repeats}, {number}, {warmup}"
        )
    sync = device.synchronize if device is not None else (lambda: None)
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


def ratio(num: Measurement, den: Measurement) -> dict:
    """The ratio of two medians with a spread from the quartiles (q1/q3 and q3/q1 as a rough band)."""
    return {
        "value": num.median / den.median,
        "low": num.q1 / den.q3 if den.q3 else float("nan"),
        "high": num.q3 / den.q1 if den.q1 else float("nan"),
    }
