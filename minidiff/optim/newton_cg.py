"""Truncated Newton (Newton-CG): solve ``(H + λI) p = −g`` approximately by conjugate gradients.

``H`` is never formed: CG needs only Hessian-vector products, each a forward-mode derivative of the
reverse-mode gradient (:func:`minidiff.hvp`, ``"fwd-over-rev"`` by default) of the functional closure
``f(params)``.  CG stops at ``max_cg_iter`` iterations, at the residual tolerance — ``cg_tol·‖g‖`` if
given, else the forcing term ``min(0.5, √‖g‖)·‖g‖`` of Nocedal & Wright (Algorithm 7.1), which makes
the outer iteration superlinear — or at the first direction of non-positive curvature (then the
iterate so far is used, or ``−g`` if there is none).  ``damping`` λ adds ``λI`` (Levenberg–Marquardt
style) so that CG sees a positive-definite matrix on non-convex losses.  The step is ``lr·p``, shortened
by Armijo backtracking (halving) when ``line_search=True``.

Cost per step: one gradient, one HVP per CG iteration (≈ 2–2.5 gradients each), and one loss
evaluation per line-search trial.

>>> import minidiff as md
>>> from minidiff.optim import NewtonCG
>>> A = md.tensor([[3.0, 1.0], [1.0, 2.0]])
>>> b = md.tensor([1.0, -1.0])
>>> x = md.zeros(2, requires_grad=True)
>>> quad = lambda p: 0.5 * (p[0] @ A @ p[0]) - b @ p[0]
>>> opt = NewtonCG([x], cg_tol=0.0)
>>> _ = opt.step(quad)
>>> [round(v, 12) for v in x.tolist()], [round(v, 12) for v in md.linalg.solve(A, b).tolist()]
([0.6, -0.8], [0.6, -0.8])
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..errors import check_number
from ..modes.reverse import assign_, no_grad
from ..tensor.core import Tensor
from ..tensor.pytree import PyTree
from ..transforms.core import HVP_MODES, hvp, value_and_grad
from .base import Optimizer, all_finite, machine_eps

__all__ = ["NewtonCG"]


def _dot(a: list, b: list) -> float:
    return sum(float((x * y).sum()) for x, y in zip(a, b))


class NewtonCG(Optimizer):
    """Newton-CG; ``step(closure)`` needs the functional closure ``f(params) -> loss`` (for the HVPs).

    Group settings: ``lr`` (step scale, 1 is the Newton step) and ``damping`` (λ ≥ 0).  Whole-run
    settings: ``max_cg_iter``, ``cg_tol``, ``line_search``, ``c1`` (Armijo constant), ``max_ls``
    (backtracking trials) and ``hvp_mode``.  :attr:`info` reports the last step's CG iterations, the
    step length and why CG stopped.
    """

    needs_closure = True

    def __init__(
        self,
        params: PyTree,
        lr: float = 1.0,
        damping: float = 0.0,
        max_cg_iter: int = 50,
        cg_tol: float | None = None,
        line_search: bool = True,
        c1: float = 1e-4,
        max_ls: int = 20,
        hvp_mode: str = "fwd-over-rev",
    ):
        super().__init__(params, dict(lr=lr, damping=damping))
        name = type(self).__name__
        check_number(name, "max_cg_iter", max_cg_iter, low=1, integer=True)
        check_number(name, "max_ls", max_ls, low=1, integer=True)
        check_number(name, "cg_tol", cg_tol, low=0, none_ok=True)
        check_number(name, "c1", c1, low=0, high=1, low_open=True, high_open=True)
        if hvp_mode not in HVP_MODES:
            raise ValueError(f"{name}: hvp_mode must be one of {HVP_MODES}, got {hvp_mode!r}")
        self.max_cg_iter, self.cg_tol, self.line_search = max_cg_iter, cg_tol, bool(line_search)
        self.c1, self.max_ls, self.hvp_mode = c1, max_ls, hvp_mode
        self.info: dict = {}

    def step(self, closure: Callable[..., Any] | None = None) -> Any:
        """One Newton-CG step; returns the loss before it."""
        name = type(self).__name__
        if closure is None:
            raise TypeError(
                f"{name}.step: Newton-CG needs Hessian-vector products; pass step(f) with f(params)"
            )
        f = self.loss_function(closure)
        params = self.parameters()
        x = [p.detach() for p in params]
        loss, g = value_and_grad(f)(x)
        self.check_grads_finite([g])
        lam = [grp["damping"] for grp in self.param_groups for _ in grp["params"]]
        lrs = [grp["lr"] for grp in self.param_groups for _ in grp["params"]]

        def matvec(v: list[Tensor]) -> list[Tensor]:
            hv = hvp(f, (x,), (v,), mode=self.hvp_mode)[0]
            return [h + lm * vi if lm else h for h, vi, lm in zip(hv, v, lam)]

        with no_grad():
            z, reason, iters = self._cg(matvec, g)
            step = [lr * zi for lr, zi in zip(lrs, z)]
            t, trials = self._backtrack(f, x, step, float(loss), _dot(g, step))
            new = [xi + t * si for xi, si in zip(x, step)]
            if not all(all_finite(v) for v in new):
                raise FloatingPointError(
                    f"{name}.step: the Newton step is not finite (CG stopped by {reason}); no parameter "
                    "was changed — add damping"
                )
            for p, v in zip(params, new):
                assign_(p, v)
        self.info = {
            "cg_iterations": iters,
            "cg_stop": reason,
            "step_length": t,
            "line_search_trials": trials,
        }
        self.steps += 1
        return loss

    def _backtrack(
        self, f: Callable[..., Tensor], x: list[Tensor], step: list[Tensor], f0: float, slope: float
    ) -> Any:
        """``(t, trials)``: Armijo backtracking (halving) along ``step``; t = 1 without line search or
        ascent, t = 0 when no trial decreased f enough."""
        if not (self.line_search and slope < 0):
            return 1.0, 0
        t = 1.0
        for trials in range(1, self.max_ls + 1):
            trial = float(f([xi + t * si for xi, si in zip(x, step)]))
            if math.isfinite(trial) and trial <= f0 + self.c1 * t * slope:
                return t, trials
            t *= 0.5
        return 0.0, self.max_ls

    def _cg(self, matvec: Callable[[list[Tensor]], list[Tensor]], g: list[Tensor]) -> Any:
        """Approximately solve ``A z = −g``; returns ``(z, reason it stopped, iterations)``."""
        gnorm = math.sqrt(_dot(g, g))
        tol = (self.cg_tol if self.cg_tol is not None else min(0.5, math.sqrt(gnorm))) * gnorm
        tol = max(tol, 8 * machine_eps(g[0].dtype) * gnorm)  # "exact": to rounding
        z = [0 * gi for gi in g]
        r = [-gi for gi in g]
        d = list(r)
        rr = gnorm * gnorm
        for k in range(self.max_cg_iter):
            if math.sqrt(rr) <= tol:
                return z, "residual below tolerance", k
            ad = matvec(d)
            dad = _dot(d, ad)
            if not dad > 0:
                if k == 0:
                    return [-gi for gi in g], "non-positive curvature at the first direction", k
                return z, "non-positive curvature", k
            alpha = rr / dad
            z = [zi + alpha * di for zi, di in zip(z, d)]
            r = [ri - alpha * ai for ri, ai in zip(r, ad)]
            rr_new = _dot(r, r)
            beta = rr_new / rr
            d = [ri + beta * di for ri, di in zip(r, d)]
            rr = rr_new
        return z, "max_cg_iter reached", self.max_cg_iter
