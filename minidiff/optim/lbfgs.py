"""L-BFGS (Nocedal, 1980; Liu & Nocedal, 1989) with a strong-Wolfe line search (``docs/papers.md`` §8).

The parameters are treated as one flat vector ``x``.  From the last ``history_size`` pairs
``s = x₊ − x``, ``y = g₊ − g`` the two-loop recursion applies the inverse-Hessian approximation ``H`` to
the gradient without forming it, starting from ``H₀ = γI`` with ``γ = sᵀy / yᵀy`` of the newest pair.
The step length along ``d = −Hg`` satisfies the strong Wolfe conditions

    f(x + αd) ≤ f(x) + c₁ α gᵀd      and      |∇f(x + αd)ᵀd| ≤ c₂ |gᵀd|

(bracketing, then zooming with safeguarded cubic interpolation; Nocedal & Wright, Algorithms 3.5–3.6;
:mod:`.line_search`, shared with the dense :class:`.BFGS` and :class:`.DFP`),
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
from typing import Any

from ..errors import check_number
from ..primitives.creation import zeros_like
from ..primitives.ops import abs as abs_
from ..primitives.ops import dot
from ..primitives.ops import max as max_
from ..primitives.ops import sum as sum_
from ..tensor.pytree import PyTree
from .base import Optimizer, all_finite, settings_of
from .flat import assign_flat, flatten
from .line_search import strong_wolfe

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
        return flatten(tensors)

    def _set(self, x) -> None:
        """Put the flat vector ``x`` into the parameters (:func:`.flat.assign_flat`)."""
        assign_flat(self.param_groups[0]["params"], x)

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

        def evaluate(xa):
            self._set(xa)
            return self._evaluate(closure)

        point = strong_wolfe(evaluate, x, f0, g0, d, gtd0, a0, group)
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
