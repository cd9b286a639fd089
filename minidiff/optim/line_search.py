"""The strong-Wolfe line search shared by :class:`.LBFGS` and the dense quasi-Newton methods.

Nocedal & Wright, Algorithms 3.5–3.6: :meth:`_WolfeSearch.bracket` extrapolates (safeguarded cubic
interpolation) until an interval holds a step meeting

    f(x + αd) ≤ f(x) + c₁ α gᵀd      and      |∇f(x + αd)ᵀd| ≤ c₂ |gᵀd|,

then :meth:`_WolfeSearch.zoom` narrows it.  Near a minimum, where ``c₁αgᵀd`` drowns in the rounding of
``f``, the approximate Wolfe condition of Hager & Zhang is accepted too.

>>> import minidiff as md
>>> x0 = md.tensor([2.0], dtype="float64")
>>> def evaluate(x):  # f(x) = x², at a flat vector
...     return float((x * x).sum()), 2 * x
>>> settings = {"c1": 1e-4, "c2": 0.9, "max_ls": 25, "tolerance_change": 1e-12}
>>> point = strong_wolfe(evaluate, x0, 4.0, 2 * x0, md.tensor([-1.0], dtype="float64"), -4.0, 1.0, settings)
>>> point.a, point.f
(1.0, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import NamedTuple

from ..primitives.ops import abs as abs_
from ..primitives.ops import dot
from ..primitives.ops import max as max_
from ..tensor.core import Tensor
from .base import all_finite, machine_eps

__all__ = ["strong_wolfe"]

Evaluate = Callable[[Tensor], tuple[float, Tensor]]
"""``evaluate(x) -> (loss, flat gradient)`` with the parameters set to the flat vector ``x``."""


def strong_wolfe(
    evaluate: Evaluate, x: Tensor, f0: float, g0: Tensor, d: Tensor, gtd0: float, a0: float, settings: Mapping
) -> _Point:
    """The accepted point ``(α, f, g, slope, x + αd)`` along ``d`` from ``x`` (α = 0: no step decreased f
    enough).  ``settings`` holds ``c1``, ``c2``, ``max_ls`` and ``tolerance_change``; the last point
    ``evaluate`` saw is not necessarily the accepted one, so callers set the parameters afterwards."""
    return _WolfeSearch(evaluate, x, f0, g0, d, gtd0, settings).run(a0)


class _Point(NamedTuple):
    """A trial point of the line search: step, loss, flat gradient, slope ``gᵀd`` and position."""

    a: float
    f: float
    g: Tensor
    slope: float
    x: Tensor


class _WolfeSearch:
    """The strong-Wolfe line search along ``d`` from ``x`` (Nocedal & Wright, Algorithms 3.5–3.6):
    :meth:`bracket` extrapolates until an interval holds an acceptable step, :meth:`zoom` narrows it."""

    def __init__(
        self, evaluate: Evaluate, x: Tensor, f0: float, g0: Tensor, d: Tensor, gtd0: float, group: Mapping
    ) -> None:
        self.evaluate, self.d = evaluate, d
        # a copy: x may be a parameter's own value (``p.detach()``), which each trial changes in place
        self.start = _Point(0.0, f0, g0, gtd0, x.copy())
        self.c1, self.c2, self.max_ls = group["c1"], group["c2"], group["max_ls"]
        self.tolerance_change = group["tolerance_change"]
        self.d_norm = float(max_(abs_(d)))
        self.noise = 4 * machine_eps(d.dtype) * abs(f0)  # the rounding error of f near f0

    def run(self, a0: float) -> _Point:
        """The accepted point (α = 0 when no step decreased f enough)."""
        found, bracket = self.bracket(a0)
        if bracket is not None:
            return self.zoom(*bracket)
        assert found is not None  # bracket returns one or the other
        return found

    def phi(self, a: float) -> _Point:
        """Loss, gradient and slope at ``x + a·d`` (infinite loss and slope where not finite)."""
        xa = self.start.x + a * self.d
        fa, ga = self.evaluate(xa)
        if not (math.isfinite(fa) and all_finite(ga)):
            return _Point(a, math.inf, ga, math.inf, xa)
        return _Point(a, fa, ga, float(dot(ga, self.d)), xa)

    def sufficient_decrease(self, cur: _Point) -> bool:
        return cur.f <= self.start.f + self.c1 * cur.a * self.start.slope

    def flat_enough(self, cur: _Point) -> bool:
        return abs(cur.slope) <= -self.c2 * self.start.slope

    def approximately_wolfe(self, cur: _Point) -> bool:
        # Hager & Zhang: near a minimum the decrease c₁αgᵀd drowns in the rounding of f, but the
        # slope is still reliable, so accept f within rounding of f0 and a flat enough slope
        return cur.f <= self.start.f + self.noise and self.flat_enough(cur)

    def bracket(self, a: float) -> tuple[_Point | None, tuple[_Point, _Point] | None]:
        """``(accepted point, None)`` or ``(None, (lo, hi))`` with an acceptable step between them."""
        prev = self.start
        for i in range(self.max_ls):
            cur = self.phi(a)
            if self.approximately_wolfe(cur):
                return cur, None
            if not self.sufficient_decrease(cur) or (i > 0 and cur.f >= prev.f):
                return None, (prev, cur)
            if self.flat_enough(cur):
                return cur, None
            if cur.slope >= 0:
                return None, (cur, prev)
            lo, hi = a + 0.01 * (a - prev.a), 10 * a
            prev, a = cur, _cubic_min(prev.a, prev.f, prev.slope, a, cur.f, cur.slope, lo, hi)
        return prev, None  # kept extrapolating: take the last point (it decreases f)

    def zoom(self, lo: _Point, hi: _Point) -> _Point:
        """Narrow ``[lo, hi]`` by safeguarded cubic interpolation; ``lo`` keeps sufficient decrease."""
        for _ in range(self.max_ls):
            left, right = min(lo.a, hi.a), max(lo.a, hi.a)
            width = right - left
            if width * self.d_norm < self.tolerance_change:
                break
            if math.isfinite(hi.f):
                a = _cubic_min(
                    lo.a, lo.f, lo.slope, hi.a, hi.f, hi.slope, left + 0.1 * width, right - 0.1 * width
                )
            else:
                a = (left + right) / 2
            cur = self.phi(a)
            if self.approximately_wolfe(cur):
                return cur
            if not self.sufficient_decrease(cur) or cur.f >= lo.f:
                hi = cur
                continue
            if self.flat_enough(cur):
                return cur
            if cur.slope * (hi.a - lo.a) >= 0:
                hi = lo
            lo = cur
        return lo  # the best point with sufficient decrease (α = 0: none)


def _cubic_min(
    a1: float, f1: float, g1: float, a2: float, f2: float, g2: float, lo: float, hi: float
) -> float:
    """The minimizer of the cubic through ``(a1, f1, g1)`` and ``(a2, f2, g2)``, clamped to ``[lo, hi]``."""
    try:
        d1 = g1 + g2 - 3 * (f1 - f2) / (a1 - a2)
        sq = d1 * d1 - g1 * g2
        if sq >= 0:
            d2 = math.copysign(math.sqrt(sq), a2 - a1)
            t = a2 - (a2 - a1) * (g2 + d2 - d1) / (g2 - g1 + 2 * d2)
            if math.isfinite(t):
                return min(max(t, lo), hi)
    except (ZeroDivisionError, OverflowError):
        pass
    return (lo + hi) / 2
