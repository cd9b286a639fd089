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

from ..creation import zeros_like
from ..ops import abs as abs_
from ..ops import concatenate, dot
from ..ops import max as max_
from ..ops import sum as sum_
from .base import Optimizer, assign_

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
        params,
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
        super().__init__(
            params,
            dict(
                lr=lr,
                max_iter=max_iter,
                max_eval=max_eval if max_eval is not None else max_iter * 5 // 4,
                tolerance_grad=tolerance_grad,
                tolerance_change=tolerance_change,
                history_size=history_size,
                line_search=line_search,
                c1=c1,
                c2=c2,
                curvature_eps=curvature_eps,
                max_ls=max_ls,
            ),
        )
        if len(self.param_groups) != 1:
            raise ValueError(f"LBFGS: supports one parameter group, got {len(self.param_groups)}")
        self.history = {"s": [], "y": [], "rho": [], "gamma": 1.0, "n_iter": 0, "func_evals": 0}
        self.info: dict = {}

    def validate(self, settings: dict) -> None:
        super().validate(settings)
        name = type(self).__name__
        for key in ("max_iter", "max_eval", "history_size", "max_ls"):
            v = settings[key]
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: {key} must be a positive integer, got {v!r}")
        for key in ("tolerance_grad", "tolerance_change", "curvature_eps"):
            v = settings[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise ValueError(f"{name}: {key} must be a non-negative number, got {v!r}")
        c1, c2 = settings["c1"], settings["c2"]
        if not (isinstance(c1, (int, float)) and isinstance(c2, (int, float)) and 0 < c1 < c2 < 1):
            raise ValueError(f"{name}: the Wolfe constants need 0 < c1 < c2 < 1, got c1={c1!r}, c2={c2!r}")
        if settings["line_search"] not in LINE_SEARCHES:
            raise ValueError(
                f"{name}: line_search must be one of {LINE_SEARCHES}, got {settings['line_search']!r}"
            )

    # ------------------------------------------------------------------ flat vectors
    def _flat(self, tensors):
        return concatenate([t.reshape(-1) for t in tensors])

    def _set(self, x) -> None:
        offset = 0
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
    def step(self, closure=None):
        """Up to ``max_iter`` L-BFGS iterations; returns the loss at the starting point (as PyTorch)."""
        name = type(self).__name__
        if closure is None:
            raise TypeError(
                f"{name}.step: L-BFGS re-evaluates the loss in its line search; pass step(closure)"
            )
        group = self.param_groups[0]
        h = self.history
        evals0 = h["func_evals"]
        params = group["params"]
        x = self._flat([p.detach() for p in params])
        loss, grads = self.evaluate(closure)
        self.check_grads_finite(grads)  # raises before anything changed
        loss0 = float(loss)
        if not math.isfinite(loss0):
            raise FloatingPointError(
                f"{name}.step: the loss is {loss0}, not finite; no parameter was changed"
            )
        g = self._flat([zeros_like(p.detach()) if gp is None else gp for p, gp in zip(params, grads[0])])
        h["func_evals"] += 1
        f = loss0
        info = {"iterations": 0, "func_evals": 1, "reason": "max_iter reached"}
        if float(max_(abs_(g))) <= group["tolerance_grad"]:
            info["reason"] = "gradient below tolerance_grad"
            self.info = info
            return loss0
        for _ in range(group["max_iter"]):
            d = self._direction(g)
            gtd = float(dot(g, d))
            if not gtd < 0:  # not a descent direction: forget the history, go downhill
                h["s"], h["y"], h["rho"], h["gamma"] = [], [], [], 1.0
                d = -g
                gtd = float(dot(g, d))
            if h["n_iter"] == 0:
                a0 = min(1.0, 1.0 / float(sum_(abs_(g)))) * group["lr"]
            else:
                a0 = group["lr"]
            if group["line_search"] == "strong_wolfe":
                a, f_new, g_new, x_new = self._strong_wolfe(closure, x, f, g, d, gtd, a0, group)
            else:
                a, x_new = a0, x + a0 * d
                self._set(x_new)
                f_new, g_new = self._evaluate(closure)
                if not (math.isfinite(f_new) and bool(_all_finite(g_new))):
                    self._set(x)
                    raise FloatingPointError(
                        f"{name}.step: the loss or gradient became non-finite after a fixed step of {a0}; "
                        "the parameters were put back to the last finite point (lower lr, or use "
                        "line_search='strong_wolfe')"
                    )
            h["n_iter"] += 1
            info["iterations"] += 1
            if a == 0.0:
                info["reason"] = "line search made no progress"
                break
            s, y = x_new - x, g_new - g
            sy = float(dot(s, y))
            if sy > group["curvature_eps"]:
                if len(h["s"]) == group["history_size"]:
                    for key in ("s", "y", "rho"):
                        h[key].pop(0)
                h["s"].append(s)
                h["y"].append(y)
                h["rho"].append(1.0 / sy)
                h["gamma"] = sy / float(dot(y, y))
            x, f_old, f, g = x_new, f, f_new, g_new
            if float(max_(abs_(g))) <= group["tolerance_grad"]:
                info["reason"] = "gradient below tolerance_grad"
                break
            if abs(f - f_old) < group["tolerance_change"]:
                info["reason"] = "loss change below tolerance_change"
                break
            if float(max_(abs_(s))) <= group["tolerance_change"]:
                info["reason"] = "step below tolerance_change"
                break
            if h["func_evals"] - evals0 >= group["max_eval"]:
                info["reason"] = "max_eval reached"
                break
        self._set(x)
        info["func_evals"] = h["func_evals"] - evals0
        info["loss"] = f
        self.info = info
        self.steps += 1
        return loss0

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

    def _strong_wolfe(self, closure, x, f0, g0, d, gtd0, a0, group):
        """A step ``α`` meeting the strong Wolfe conditions: ``(α, f, g, x + αd)`` of the accepted point."""
        c1, c2, max_ls = group["c1"], group["c2"], group["max_ls"]
        d_norm = float(max_(abs_(d)))
        noise = 4 * float(d.device.xp.finfo(d.dtype).eps) * abs(f0)  # the rounding error of f near f0

        def phi(a):
            xa = x + a * d
            self._set(xa)
            fa, ga = self._evaluate(closure)
            ok = math.isfinite(fa) and bool(_all_finite(ga))
            if not ok:
                return (a, math.inf, ga, math.inf, xa)
            return (a, fa, ga, float(dot(ga, d)), xa)

        prev = (0.0, f0, g0, gtd0, x)
        a = a0
        bracket = None

        def approximately_wolfe(cur):
            # Hager & Zhang: near a minimum the decrease c₁αgᵀd drowns in the rounding of f, but the
            # slope is still reliable, so accept f within rounding of f0 and a flat enough slope
            return cur[1] <= f0 + noise and abs(cur[3]) <= -c2 * gtd0

        for i in range(max_ls):
            cur = phi(a)
            if approximately_wolfe(cur):
                return cur[0], cur[1], cur[2], cur[4]
            if cur[1] > f0 + c1 * a * gtd0 or (i > 0 and cur[1] >= prev[1]):
                bracket = (prev, cur)
                break
            if abs(cur[3]) <= -c2 * gtd0:
                return cur[0], cur[1], cur[2], cur[4]
            if cur[3] >= 0:
                bracket = (cur, prev)
                break
            lo, hi = a + 0.01 * (a - prev[0]), 10 * a
            nxt = _cubic_min(prev[0], prev[1], prev[3], a, cur[1], cur[3], lo, hi)
            prev, a = cur, nxt
        if bracket is None:  # kept extrapolating: take the last point (it decreases f)
            return prev[0], prev[1], prev[2], prev[4]
        lo, hi = bracket
        for _ in range(max_ls):
            left, right = min(lo[0], hi[0]), max(lo[0], hi[0])
            width = right - left
            if width * d_norm < group["tolerance_change"]:
                break
            if math.isfinite(hi[1]):
                a = _cubic_min(
                    lo[0], lo[1], lo[3], hi[0], hi[1], hi[3], left + 0.1 * width, right - 0.1 * width
                )
            else:
                a = (left + right) / 2
            cur = phi(a)
            if approximately_wolfe(cur):
                return cur[0], cur[1], cur[2], cur[4]
            if cur[1] > f0 + c1 * a * gtd0 or cur[1] >= lo[1]:
                hi = cur
            else:
                if abs(cur[3]) <= -c2 * gtd0:
                    return cur[0], cur[1], cur[2], cur[4]
                if cur[3] * (hi[0] - lo[0]) >= 0:
                    hi = lo
                lo = cur
        return lo[0], lo[1], lo[2], lo[4]  # the best point with sufficient decrease (α = 0: none)

    # ------------------------------------------------------------------ checkpoints
    def extra_state(self) -> dict:
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self.history.items()}

    def load_extra_state(self, extra: dict) -> None:
        if extra:
            self.history = {k: (list(v) if isinstance(v, list) else v) for k, v in extra.items()}


def _all_finite(t):
    from ..ops import all as all_
    from ..ops import isfinite

    return all_(isfinite(t))


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
