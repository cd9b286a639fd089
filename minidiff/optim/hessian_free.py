"""Hessian-free optimization (Martens, 2010): CG on damped Gauss-Newton products.

``step(closure)`` takes ``closure = (model_fn, loss_fn)`` as :class:`NaturalGradient` does; the loss is
``f(θ) = loss_fn(model_fn(θ))`` and the curvature the generalized Gauss-Newton matrix
``G = Jᵀ ∇²loss_fn(z) J`` (:func:`minidiff.curvature.gauss_newton`, never formed).  Each step:

1. CG on ``(G + λI) p = −g`` for at most ``max_cg_iter`` iterations (the fixed budget) or until the
   relative residual is below ``cg_tol``, started from ``warm_start ×`` the previous step's direction
   (``warm_start=0`` starts from zero);
2. CG-iterate backtracking: the iterates after iterations ``⌈γ^j⌉`` (γ = ``backtrack_ratio``, 1.3 by
   default) and the last one are kept, and the one with the lowest ``f(θ + lr·p)`` is taken
   (``backtrack=False``: the last iterate, one loss evaluation for ρ);
3. if that loss is not below ``f(θ)`` (or is not finite) the step is rejected and the parameters
   stay; otherwise ``θ ← θ + lr·p``.  With ``adapt_damping`` (default on) λ follows Martens' rule from
   ``ρ = (f(θ+δ) − f(θ)) / (gᵀδ + ½δᵀGδ)``: ``λ·3/2`` if ρ < 1/4, ``λ·2/3`` if ρ > 3/4.

The direction kept for the warm start is CG's last iterate (Martens' choice), saved by ``state_dict``.

Cost per step: one gradient, one model pass kept for ``Jᵀ``, one GGN product per CG iteration (+1 for
a warm start's residual), one loss per kept iterate, one product for ρ.

>>> import minidiff as md
>>> from minidiff.optim import HessianFree
>>> w = md.tensor([0.0, 0.0], requires_grad=True)
>>> A, b = md.tensor([[2.0, 0.0], [1.0, 1.0]]), md.tensor([2.0, 3.0])
>>> opt = HessianFree([w], damping=1e-9, adapt_damping=False, max_cg_iter=2)
>>> _ = opt.step((lambda ps: A @ ps[0], lambda z: 0.5 * ((z - b) ** 2).sum()))
>>> [round(v, 6) for v in w.tolist()]                  # least squares ‖Aw − b‖²/2: one GN step solves it
[1.0, 2.0]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..curvature.products import gauss_newton
from ..errors import check_number
from ..modes.reverse import no_grad
from ..tensor.core import Tensor
from ..tensor.pytree import PyTree
from .curvature_cg import CGResult, DampedCurvatureOptimizer, conjugate_gradient, reduction_ratio

__all__ = ["HessianFree", "backtrack_iterations"]


def backtrack_iterations(max_iter: int, ratio: float) -> list[int]:
    """The CG iterations whose iterates are kept: ``⌈ratio^j⌉`` for j = 0, 1, … up to ``max_iter``.

    >>> backtrack_iterations(10, 1.3)
    [1, 2, 3, 4, 5, 7, 9, 10]
    """
    out, j = {max_iter}, 0
    while (k := math.ceil(ratio**j)) < max_iter:
        out.add(k)
        j += 1
    return sorted(out)


class HessianFree(DampedCurvatureOptimizer):
    """Martens' Hessian-free method (see the module docstring).

    Group settings: ``lr`` and ``damping`` λ.  Whole-run settings: ``max_cg_iter`` (the CG budget),
    ``cg_tol``, ``warm_start`` (decay of the previous direction, in [0, 1]), ``backtrack``,
    ``backtrack_ratio`` (> 1), ``adapt_damping``.  :attr:`info`: CG iterations and stop reason, the
    chosen iterate, whether the step was accepted, ρ and the damping.

    Several groups share one CG solve over all parameters with each group's λ on its block; group k
    moves by ``lr_k·p_k``.  The warm start needs every parameter's previous direction, so after
    :meth:`add_param_group` the next step starts CG from zero.
    """

    def __init__(
        self,
        params: PyTree,
        lr: float = 1.0,
        damping: float = 1.0,
        *,
        max_cg_iter: int = 50,
        cg_tol: float = 1e-10,
        warm_start: float = 0.95,
        backtrack: bool = True,
        backtrack_ratio: float = 1.3,
        adapt_damping: bool = True,
    ) -> None:
        super().__init__(params, lr, damping, max_cg_iter, cg_tol, adapt_damping)
        check_number("HessianFree", "warm_start", warm_start, low=0, high=1)
        check_number("HessianFree", "backtrack_ratio", backtrack_ratio, low=1, low_open=True)
        self.warm_start, self.backtrack, self.backtrack_ratio = warm_start, bool(backtrack), backtrack_ratio

    def _warm_start(self, params: list[Any]) -> list[Tensor] | None:
        """``warm_start ×`` the previous step's last CG iterate, or None (first step, or no warm start)."""
        if not self.warm_start or any("direction" not in self.state[id(p)] for p in params):
            return None
        return [self.warm_start * self.state[id(p)]["direction"] for p in params]

    def _best_iterate(
        self, f: Callable[[list[Tensor]], Tensor], x: list[Tensor], res: CGResult
    ) -> tuple[float, int, list[Tensor]]:
        """``(f(x + lr·p), CG iteration of p, lr·p)`` for the kept iterate p with the lowest finite loss
        (the last iterate alone without backtracking)."""
        lrs = self.per_param("lr")
        candidates = res.kept if self.backtrack and res.kept else [(res.iterations, res.x)]
        if candidates[-1][1] is not res.x:
            candidates = [*candidates, (res.iterations, res.x)]
        tried = []
        for k, p in candidates:
            step = [lr * pi for lr, pi in zip(lrs, p)]
            tried.append((float(f([xi + si for xi, si in zip(x, step)])), k, step))
        return min(tried, key=lambda t: t[0] if math.isfinite(t[0]) else math.inf)

    def step(self, closure: Any = None) -> Any:
        """One Hessian-free step; ``closure = (model_fn, loss_fn)``.  Returns the loss before it."""
        model_fn, loss_fn, params, x, f, loss, g = self.loss_and_gradient(closure)
        gv = gauss_newton(model_fn, loss_fn, x)
        x0 = self._warm_start(params)
        keep = backtrack_iterations(self.max_cg_iter, self.backtrack_ratio) if self.backtrack else ()
        with no_grad():
            res = conjugate_gradient(
                self.damped(gv), [-gi for gi in g], x0, max_iter=self.max_cg_iter, tol=self.cg_tol, keep=keep
            )
            f1, chosen, step = self._best_iterate(f, x, res)
            rho = reduction_ratio(float(loss), f1, g, step, gv(step))
            accepted = math.isfinite(f1) and f1 < float(loss)
            new = [xi + si for xi, si in zip(x, step)] if accepted else None
        info = {
            "cg_iterations": res.iterations,
            "cg_stop": res.reason,
            "cg_iterate": chosen,
            "accepted": accepted,
        }
        self.finish(params, new, rho, info, [{"direction": d} for d in res.x])
        return loss
