"""Levenberg–Marquardt for least squares ``f(θ) = ½‖r(θ)‖²`` with ``JᵀJ`` never formed.

``step(closure)`` takes the residual function ``closure(params) -> r`` (a tensor of any shape, the list
of parameter values in :meth:`parameters` order).  Each step solves

    (JᵀJ + λI) δ = −Jᵀr

by conjugate gradient, ``J·v`` by one forward-mode pass (``jvp``) and ``Jᵀ·u`` by one walk of the
residual's kept tape (``vjp``), then computes the gain ratio
``ρ = (f(θ) − f(θ+δ)) / (f(θ) − ½‖r + Jδ‖²)`` — the actual decrease over the linear model's.  The step is
accepted when ρ > 0 (else the parameters stay) and λ follows Martens' rule: ``λ·3/2`` if ρ < 1/4,
``λ·2/3`` if ρ > 3/4.  λ must be > 0.  ``lr`` scales δ (1 is the LM step).

Cost per step: one residual pass kept for ``Jᵀ``, one ``jvp`` + one ``vjp`` per CG iteration, one
residual evaluation and one more product for ρ.

>>> import minidiff as md
>>> from minidiff.optim import LevenbergMarquardt
>>> w = md.tensor([0.0, 0.0], requires_grad=True)
>>> A, b = md.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]), md.tensor([1.0, 2.0, 2.0])
>>> opt = LevenbergMarquardt([w], damping=1e-10, max_cg_iter=2)
>>> _ = opt.step(lambda ps: A @ ps[0] - b)
>>> [round(v, 6) for v in w.tolist()], opt.info["accepted"]   # the least-squares solution
([1.0, 1.0], True)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import DTypeError, describe
from ..modes.reverse import no_grad
from ..tensor.core import Tensor
from ..tensor.pytree import PyTree
from ..transforms.core import jvp, vjp
from .curvature_cg import DampedCurvatureOptimizer, conjugate_gradient, reduction_ratio

__all__ = ["LevenbergMarquardt"]


class LevenbergMarquardt(DampedCurvatureOptimizer):
    """Levenberg–Marquardt with CG on ``JᵀJ + λI`` (see the module docstring); ``step(r)`` returns the
    loss ``½‖r‖²`` before the step.  :attr:`info`: CG iterations and stop reason, ρ, whether the step was
    accepted, the damping per group.

    Group settings ``lr`` and ``damping``: there is one ``JᵀJ`` over every group's parameters and one CG
    solve of ``(JᵀJ + Λ) δ = −Jᵀr`` with ``Λ`` diagonal, each group's λ on its block (a per-block
    Marquardt damping); group k moves by ``lr_k·δ_k``, and one ρ multiplies every group's λ by the
    same factor.  ``max_cg_iter`` and ``cg_tol`` are whole-run settings.

    >>> import minidiff as md
    >>> a, c = md.zeros(1, requires_grad=True), md.zeros(1, requires_grad=True)
    >>> opt = LevenbergMarquardt([{"params": [a]}, {"params": [c], "damping": 1.0}], damping=1e-12)
    >>> _ = opt.step(lambda ps: md.concatenate([ps[0] - 1.0, ps[1] - 1.0]))
    >>> round(a.item(), 6), round(c.item(), 6)   # (1 + λ_k) δ_k = 1 for each block
    (1.0, 0.5)
    """

    def __init__(
        self,
        params: PyTree,
        lr: float = 1.0,
        damping: float = 1e-2,
        *,
        max_cg_iter: int = 50,
        cg_tol: float = 1e-10,
    ) -> None:
        super().__init__(params, lr, damping, max_cg_iter, cg_tol, adapt_damping=True)

    def step(self, closure: Callable[..., Any] | None = None) -> Any:
        """One LM step with the residual function ``closure(params) -> r``."""
        name = type(self).__name__
        r_fn = self.loss_function(closure)
        params = self.parameters()
        x = [p.detach() for p in params]
        r, back = vjp(r_fn, x)
        if not isinstance(r, Tensor) or r.dtype.kind != "f":
            what = describe(r) if isinstance(r, Tensor) else type(r).__name__
            raise DTypeError(f"{name}.step: the closure must return a floating residual tensor, got {what}")

        def jtj(v: list[Tensor]) -> list[Tensor]:  # Jᵀ(Jv): one jvp, one walk of the kept tape
            return back(jvp(r_fn, (x,), (v,))[1])[0]

        with no_grad():
            loss = 0.5 * (r * r).sum()
            g = back(r)[0]
        self.check_grads_finite(self.by_group(g))
        with no_grad():
            res = conjugate_gradient(
                self.damped(jtj), [-gi for gi in g], max_iter=self.max_cg_iter, tol=self.cg_tol
            )
            step = [lr * d for lr, d in zip(self.per_param("lr"), res.x)]
            new = [xi + si for xi, si in zip(x, step)]
            r1 = r_fn(new)
            f1 = float(0.5 * (r1 * r1).sum())
            rho = reduction_ratio(float(loss), f1, g, step, jtj(step))
            accepted = rho > 0
        info = {"cg_iterations": res.iterations, "cg_stop": res.reason, "accepted": accepted}
        self.finish(params, new if accepted else None, rho, info)
        return loss
