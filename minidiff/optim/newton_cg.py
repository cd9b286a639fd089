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

from ..reverse import no_grad
from ..transforms import HVP_MODES, hvp, value_and_grad
from .base import Optimizer, assign_

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
        params,
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
        for key, v in (("max_cg_iter", max_cg_iter), ("max_ls", max_ls)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: {key} must be a positive integer, got {v!r}")
        if cg_tol is not None and not (isinstance(cg_tol, (int, float)) and cg_tol >= 0):
            raise ValueError(f"{name}: cg_tol must be None or a non-negative number, got {cg_tol!r}")
        if not (isinstance(c1, (int, float)) and 0 < c1 < 1):
            raise ValueError(f"{name}: c1 must lie in (0, 1), got {c1!r}")
        if hvp_mode not in HVP_MODES:
            raise ValueError(f"{name}: hvp_mode must be one of {HVP_MODES}, got {hvp_mode!r}")
        self.max_cg_iter, self.cg_tol, self.line_search = max_cg_iter, cg_tol, bool(line_search)
        self.c1, self.max_ls, self.hvp_mode = c1, max_ls, hvp_mode
        self.info: dict = {}

    def step(self, closure=None):
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

        def matvec(v):
            hv = hvp(f, (x,), (v,), mode=self.hvp_mode)[0]
            return [h + lm * vi if lm else h for h, vi, lm in zip(hv, v, lam)]

        with no_grad():
            z, reason, iters = self._cg(matvec, g)
            step = [lr * zi for lr, zi in zip(lrs, z)]
            slope = _dot(g, step)
            t, f0, trials = 1.0, float(loss), 0
            if self.line_search and slope < 0:
                while trials < self.max_ls:
                    trials += 1
                    trial = float(f([xi + t * si for xi, si in zip(x, step)]))
                    if math.isfinite(trial) and trial <= f0 + self.c1 * t * slope:
                        break
                    t *= 0.5
                else:
                    t = 0.0
            new = [xi + t * si for xi, si in zip(x, step)]
        if any(not bool(_finite(v)) for v in new):
            raise FloatingPointError(
                f"{name}.step: the Newton step is not finite (CG stopped by {reason}); no parameter was "
                "changed — add damping"
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

    def _cg(self, matvec, g):
        """Approximately solve ``A z = −g``; returns ``(z, reason it stopped, iterations)``."""
        gnorm = math.sqrt(_dot(g, g))
        tol = (self.cg_tol if self.cg_tol is not None else min(0.5, math.sqrt(gnorm))) * gnorm
        tol = max(tol, 8 * float(g[0].device.xp.finfo(g[0].dtype).eps) * gnorm)  # "exact": to rounding
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


def _finite(t):
    from ..ops import all as all_
    from ..ops import isfinite

    return all_(isfinite(t))
