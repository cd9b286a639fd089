"""L-BFGS (Nocedal, 1980; Liu & Nocedal, 1989) with a strong-Wolfe line search (``docs/papers.md`` §8).

The parameters are treated as one flat vector ``x``.  From the last ``history_size`` pairs
``s = x₊ − x``, ``y = g₊ − g`` the two-loop recursion applies the inverse-Hessian approximation ``H`` to
the gradient without forming it, starting from ``H₀ = γI`` with ``γ = sᵀy / yᵀy`` of the newest pair.
The step length along ``d = −Hg`` satisfies the strong Wolfe conditions

    f(x + αd) ≤ f(x) + c₁ α gᵀd      and      |∇f(x + αd)ᵀd| ≤ c₂ |gᵀd|

(bracketing, then zooming with safeguarded cubic interpolation; Nocedal & Wright, Algorithms 3.5–3.6),
which guarantees ``sᵀy > 0``.  Pairs with ``sᵀy ≤ 10⁻¹⁰`` are skipped anyway.  One :meth:`LBFGS.step`
runs up to ``max_iter`` iterations, as PyTorch's does, and stops early when ``‖g‖∞ ≤ tolerance_grad``,
or the loss or the step changes by less than ``tolerance_change``.

Cost per iteration: the line search's evaluations of f and ∇f (usually one; one gradient each) plus
``4·m`` dot products and axpys of the flat vector for ``m`` stored pairs.  Memory: ``2m`` flat vectors.

>>> import minidiff as md
>>> from minidiff.optim import LBFGS
>>> x = md.tensor([-1.2, 1.0], dtype="float64", requires_grad=True)
>>> rosen = lambda p: 100 * (p[0][1] - p[0][0] ** 2) ** 2 + (1 - p[0][0]) ** 2
>>> opt = LBFGS([x], max_iter=100, tolerance_grad=1e-10, tolerance_change=0.0)
>>> _ = opt.step(rosen)
>>> [round(v, 8) for v in x.tolist()], opt.info["reason"]
([1.0, 1.0], 'gradient below tolerance_grad')
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from ..errors import check_number
from ..modes.reverse import assign_, no_grad
from ..primitives.creation import zeros_like
from ..primitives.ops import abs as abs_
from ..primitives.ops import concatenate, dot
from ..primitives.ops import max as max_
from ..primitives.ops import sum as sum_
from ..tensor.pytree import PyTree
from .base import Optimizer, all_finite, machine_eps, settings_of

__all__ = ["LBFGS"]

LINE_SEARCHES = ("strong_wolfe", None)


class LBFGS(Optimizer):
    """Limited-memory BFGS on all parameters as one vector; ``step(closure)`` re-evaluates the loss.

    ``closure`` is ``closure()`` (zero the grads, compute the loss, ``backward()``, return it) or the
    functional ``closure(params) -> loss``.  ``lr`` scales the first trial step of each line search
    (``min(1, 1/‖g‖₁)·lr`` on the very first iteration, ``lr`` after).  ``line_search=None`` takes the
    fixed step ``lr·d`` instead.  :attr:`info` reports the last step's iterations, evaluations and why it
    stopped.  Only one parameter group is supported (as in PyTorch).
    """

    needs_closure = True

    def __init__(
        self,
        params: PyTree,
        lr: float = 1.0,
        max_iter: int = 20,
        max_eval: int | None = None,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-9,
        history_size: int = 10,
        line_search: str | None = "strong_wolfe",
        c1: float = 1e-4,
        c2: float = 0.9,
        curvature_eps: float = 1e-10,
        max_ls: int = 25,
    ):
        max_eval = max_eval if max_eval is not None else max_iter * 5 // 4
        super().__init__(params, settings_of(locals()))
        if len(self.param_groups) != 1:
            raise ValueError(f"LBFGS: supports one parameter group, got {len(self.param_groups)}")
        self.history: dict[str, Any] = {
            "s": [],
            "y": [],
            "rho": [],
            "gamma": 1.0,
            "n_iter": 0,
            "func_evals": 0,
        }
        self.info: dict = {}

    def validate(self, settings: dict) -> None:
        super().validate(settings)
        name = type(self).__name__
        for key in ("max_iter", "max_eval", "history_size", "max_ls"):
            check_number(name, key, settings[key], low=1, integer=True)
        for key in ("tolerance_grad", "tolerance_change", "curvature_eps"):
            check_number(name, key, settings[key], low=0)
        c1, c2 = settings["c1"], settings["c2"]
        check_number(name, "c1", c1, low=0, high=1, low_open=True, high_open=True)
        check_number(name, "c2", c2, low=0, high=1, low_open=True, high_open=True)
        if not c1 < c2:
            raise ValueError(f"{name}: the Wolfe constants need 0 < c1 < c2 < 1, got c1={c1!r}, c2={c2!r}")
        if settings["line_search"] not in LINE_SEARCHES:
            raise ValueError(
                f"{name}: line_search must be one of {LINE_SEARCHES}, got {settings['line_search']!r}"
            )

    # ------------------------------------------------------------------ flat vectors
    def _flat(self, tensors):
        return concatenate([t.reshape(-1) for t in tensors])

    def _set(self, x) -> None:
        """Put the flat vector ``x`` into the parameters (:func:`minidiff.assign_`, under ``no_grad``)."""
        offset = 0
        with no_grad():
            for p in self.param_groups[0]["params"]:
                assign_(p, x[offset : offset + p.size].reshape(p.shape))
                offset += p.size

    def _evaluate(self, closure):
        """``(loss as float, flat gradient)`` at the parameters' current values."""
        loss, grads = self.evaluate(closure)
        params = self.param_groups[0]["params"]
        grads = [zeros_like(p.detach()) if g is None else g for p, g in zip(params, grads[0])]
        self.history["func_evals"] += 1
        return float(loss), self._flat(grads)

    # ------------------------------------------------------------------ the step
    def step(self, closure: Callable[..., Any] | None = None) -> Any:
        """Up to ``max_iter`` L-BFGS iterations; returns the loss at the starting point (as PyTorch)."""
        if closure is None:
            raise TypeError(
                f"{type(self).__name__}.step: L-BFGS re-evaluates the loss in its line search; pass step(closure)"
            )
        group = self.param_groups[0]
        evals0 = self.history["func_evals"]
        x = self._flat([p.detach() for p in group["params"]])
        loss0, g = self._first_evaluation(closure)
        f = loss0
        info: dict[str, Any] = {"iterations": 0, "func_evals": 1, "reason": "max_iter reached"}
        if float(max_(abs_(g))) <= group["tolerance_grad"]:
            self.info = {**info, "reason": "gradient below tolerance_grad"}
            return loss0
        for _ in range(group["max_iter"]):
            a, x_new, f_new, g_new = self._line_step(closure, x, f, g, group)
            self.history["n_iter"] += 1
            info["iterations"] += 1
            if a == 0.0:
                info["reason"] = "line search made no progress"
                break
            s = x_new - x
            self._remember(s, g_new - g, group)
            x, f_old, f, g = x_new, f, f_new, g_new
            reason = self._stop_reason(f_old, f, g, s, self.history["func_evals"] - evals0, group)
            if reason is not None:
                info["reason"] = reason
                break
        self._set(x)
        self.info = {**info, "func_evals": self.history["func_evals"] - evals0, "loss": f}
        self.steps += 1
        return loss0

    def _first_evaluation(self, closure):
        """``(loss, flat gradient)`` at the start; raises before anything changed if either is not finite."""
        loss, grads = self.evaluate(closure)
        self.check_grads_finite(grads)
        loss0 = float(loss)
        if not math.isfinite(loss0):
            raise FloatingPointError(
                f"{type(self).__name__}.step: the loss is {loss0}, not finite; no parameter was changed"
            )
        params = self.param_groups[0]["params"]
        g = self._flat([zeros_like(p.detach()) if gp is None else gp for p, gp in zip(params, grads[0])])
        self.history["func_evals"] += 1
        return loss0, g

    def _line_step(self, closure, x, f, g, group):
        """One iteration's move along the L-BFGS direction: ``(α, x₊, f₊, g₊)`` (α = 0: no progress)."""
        d, gtd = self._descent_direction(g)
        if self.history["n_iter"] == 0:
            a0 = min(1.0, 1.0 / float(sum_(abs_(g)))) * group["lr"]
        else:
            a0 = group["lr"]
        if group["line_search"] == "strong_wolfe":
            a, f_new, g_new, x_new = self._strong_wolfe(closure, x, f, g, d, gtd, a0, group)
            return a, x_new, f_new, g_new
        return (a0, *self._fixed_step(closure, x, d, a0))

    def _strong_wolfe(self, closure, x, f0, g0, d, gtd0, a0, group):
        """A step ``α`` meeting the strong Wolfe conditions: ``(α, f, g, x + αd)`` of the accepted point."""
        point = _WolfeSearch(self, closure, x, f0, g0, d, gtd0, group).run(a0)
        return point.a, point.f, point.g, point.x

    def _descent_direction(self, g):
        """``(d, gᵀd)``: the two-loop direction, or ``−g`` (history forgotten) if it does not descend."""
        d = self._direction(g)
        gtd = float(dot(g, d))
        if not gtd < 0:
            h = self.history
            h["s"], h["y"], h["rho"], h["gamma"] = [], [], [], 1.0
            d = -g
            gtd = float(dot(g, d))
        return d, gtd

    def _fixed_step(self, closure, x, d, a0):
        """``line_search=None``: ``(x + a0·d, f, g)``; a non-finite result puts the parameters back."""
        x_new = x + a0 * d
        self._set(x_new)
        f_new, g_new = self._evaluate(closure)
        if not (math.isfinite(f_new) and all_finite(g_new)):
            self._set(x)
            raise FloatingPointError(
                f"{type(self).__name__}.step: the loss or gradient became non-finite after a fixed step of "
                f"{a0}; the parameters were put back to the last finite point (lower lr, or use "
                "line_search='strong_wolfe')"
            )
        return x_new, f_new, g_new

    def _remember(self, s, y, group) -> None:
        """Keep the pair ``(s, y)`` (dropping the oldest beyond ``history_size``) if ``sᵀy`` is positive."""
        h = self.history
        sy = float(dot(s, y))
        if sy <= group["curvature_eps"]:
            return
        if len(h["s"]) == group["history_size"]:
            for key in ("s", "y", "rho"):
                h[key].pop(0)
        h["s"].append(s)
        h["y"].append(y)
        h["rho"].append(1.0 / sy)
        h["gamma"] = sy / float(dot(y, y))

    @staticmethod
    def _stop_reason(f_old, f, g, s, evals, group) -> str | None:
        """Why the iterations stop after this one, or None to go on."""
        if float(max_(abs_(g))) <= group["tolerance_grad"]:
            return "gradient below tolerance_grad"
        if abs(f - f_old) < group["tolerance_change"]:
            return "loss change below tolerance_change"
        if float(max_(abs_(s))) <= group["tolerance_change"]:
            return "step below tolerance_change"
        if evals >= group["max_eval"]:
            return "max_eval reached"
        return None

    def _direction(self, g):
        """``−H g`` by the two-loop recursion over the stored pairs."""
        h = self.history
        q = g
        alphas = []
        for s, y, rho in zip(reversed(h["s"]), reversed(h["y"]), reversed(h["rho"])):
            a = rho * float(dot(s, q))
            alphas.append(a)
            q = q - a * y
        r = h["gamma"] * q
        for s, y, rho, a in zip(h["s"], h["y"], h["rho"], reversed(alphas)):
            b = rho * float(dot(y, r))
            r = r + (a - b) * s
        return -r

    # ------------------------------------------------------------------ checkpoints
    def extra_state(self) -> dict:
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self.history.items()}

    def load_extra_state(self, extra: dict) -> None:
        if extra:
            self.history = {k: (list(v) if isinstance(v, list) else v) for k, v in extra.items()}


class _Point(NamedTuple):
    """A trial point of the line search: step, loss, flat gradient, slope ``gᵀd`` and position."""

    a: float
    f: float
    g: object
    slope: float
    x: object


class _WolfeSearch:
    """The strong-Wolfe line search along ``d`` from ``x`` (Nocedal & Wright, Algorithms 3.5–3.6):
    :meth:`bracket` extrapolates until an interval holds an acceptable step, :meth:`zoom` narrows it."""

    def __init__(self, opt, closure, x, f0, g0, d, gtd0, group):
        self.opt, self.closure, self.d = opt, closure, d
        # a copy: x may be a parameter's own value (``p.detach()``), which each trial changes in place
        self.start = _Point(0.0, f0, g0, gtd0, x.copy())
        self.c1, self.c2, self.max_ls = group["c1"], group["c2"], group["max_ls"]
        self.tolerance_change = group["tolerance_change"]
        self.d_norm = float(max_(abs_(d)))
        self.noise = 4 * machine_eps(d.dtype) * abs(f0)  # the rounding error of f near f0

    def run(self, a0) -> _Point:
        """The accepted point (α = 0 when no step decreased f enough)."""
        found, bracket = self.bracket(a0)
        return found if bracket is None else self.zoom(*bracket)

    def phi(self, a) -> _Point:
        """Loss, gradient and slope at ``x + a·d`` (infinite loss and slope where not finite)."""
        xa = self.start.x + a * self.d
        self.opt._set(xa)
        fa, ga = self.opt._evaluate(self.closure)
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

    def bracket(self, a):
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


def _cubic_min(a1, f1, g1, a2, f2, g2, lo, hi):
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
