"""Natural gradient: the step ``δ = −lr·(F + λI)⁻¹ g`` with the Fisher ``F`` of the model's predictive
distribution, applied by conjugate gradient on Fisher-vector products (``F`` is never formed).

``step(closure)`` takes the pair ``closure = (model_fn, loss_fn)``: ``model_fn(params) -> z`` maps the
list of parameter values (in :meth:`parameters` order) to the model's output and ``loss_fn(z)`` returns
the scalar loss (for example the batch's mean cross-entropy); ``g = ∇(loss_fn ∘ model_fn)``.

``likelihood``:

* ``"categorical"`` — ``z`` are logits (N, C): ``F = Jᵀ M J`` with ``M = (1/N) ⊕_i (diag p_i − p_i p_iᵀ)``
  (:func:`minidiff.curvature.fisher`, ``fisher="analytic"``), or its Monte-Carlo estimate from
  ``n_samples`` labels per example drawn from the model (``fisher="sampled"``, drawn with the
  optimizer's generator, saved by ``state_dict``);
* ``"gaussian"`` — ``z`` (N, …) is the mean of a Gaussian of variance ``variance``: ``F = JᵀJ/(N σ²)``
  (a Gauss-Newton product, :func:`minidiff.curvature.gauss_newton`; analytic only).

Damping: with ``adapt_damping=True`` each step also evaluates ``f(θ+δ)`` and one more product ``Fδ`` and
sets ``λ ← λ·3/2`` if the reduction ratio ``ρ = (f(θ+δ) − f(θ)) / (gᵀδ + ½δᵀFδ) < 1/4``, ``λ ← λ·2/3`` if
``ρ > 3/4`` (Martens' Levenberg–Marquardt rule).  The step is always applied.

Cost per step: one gradient, one model pass kept for ``Jᵀ``, one Fisher product (a forward-mode pass and a
reverse pass) per CG iteration, plus one loss and one product for ρ when adapting.

>>> import minidiff as md
>>> from minidiff.optim import NaturalGradient
>>> w = md.zeros(2, requires_grad=True)
>>> model = lambda ps: md.reshape(ps[0], (1, 2))                # one example, logits = w
>>> loss = lambda z: -md.log_softmax(z, axis=-1)[0, 0]          # label 0
>>> opt = NaturalGradient([w], damping=0.5, max_cg_iter=2)
>>> _ = opt.step((model, loss))
>>> [round(v, 12) for v in w.tolist()]                          # (F + ½I)⁻¹(½, −½) with F = ¼[[1,−1],[−1,1]]
[0.5, -0.5]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..curvature.products import fisher, gauss_newton
from ..errors import check_number
from ..modes.reverse import no_grad
from ..primitives.random import RngLike, as_generator
from ..tensor.core import Tensor
from ..tensor.pytree import PyTree
from .curvature_cg import DampedCurvatureOptimizer, conjugate_gradient, reduction_ratio

__all__ = ["NaturalGradient", "LIKELIHOODS"]

LIKELIHOODS = ("categorical", "gaussian")


class NaturalGradient(DampedCurvatureOptimizer):
    """Natural gradient by CG on Fisher-vector products (see the module docstring).

    Group settings: ``lr`` (1 is the full step) and ``damping`` λ — one CG solve over every group's
    parameters with each group's λ on its block, group k moving by ``lr_k·δ_k``.  Whole-run settings: ``likelihood``,
    ``fisher`` ("analytic" or "sampled"), ``n_samples``, ``variance``, ``max_cg_iter``, ``cg_tol``
    (relative residual), ``adapt_damping``, ``seed``/``rng`` (sampled labels).  :attr:`info` reports the
    last step's CG iterations, why CG stopped, ρ (NaN when not adapting) and the damping.
    """

    def __init__(
        self,
        params: PyTree,
        lr: float = 1.0,
        damping: float = 1e-3,
        *,
        likelihood: str = "categorical",
        fisher: str = "analytic",
        n_samples: int = 1,
        variance: float = 1.0,
        max_cg_iter: int = 50,
        cg_tol: float = 1e-10,
        adapt_damping: bool = False,
        seed: RngLike = 0,
        rng: RngLike = None,
    ) -> None:
        super().__init__(params, lr, damping, max_cg_iter, cg_tol, adapt_damping)
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"NaturalGradient: likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        if fisher not in ("analytic", "sampled"):
            raise ValueError(f"NaturalGradient: fisher must be 'analytic' or 'sampled', got {fisher!r}")
        if fisher == "sampled" and likelihood != "categorical":
            raise ValueError(
                "NaturalGradient: fisher='sampled' is implemented for likelihood='categorical' only"
            )
        check_number("NaturalGradient", "n_samples", n_samples, low=1, integer=True)
        check_number("NaturalGradient", "variance", variance, low=0, low_open=True)
        self.likelihood, self.fisher, self.n_samples, self.variance = likelihood, fisher, n_samples, variance
        self.rng = as_generator(
            seed if rng is None else rng, self.parameters()[0].device, op="NaturalGradient"
        )

    def extra_state(self) -> dict:
        return {"rng": self.rng.get_state()}

    def load_extra_state(self, extra: dict) -> None:
        if "rng" in extra:
            self.rng.set_state(extra["rng"])

    def curvature(
        self, model_fn: Callable[..., Any], x: list[Tensor]
    ) -> Callable[[list[Tensor]], list[Tensor]]:
        """The Fisher product ``v ↦ F v`` at ``x``."""
        if self.likelihood == "categorical":
            return fisher(model_fn, x, self.fisher, n_samples=self.n_samples, rng=self.rng)
        prod = gauss_newton(model_fn, lambda z: (z * z).sum() * 0.5, x)
        scale = 1.0 / (prod.z.shape[0] * self.variance) if prod.z.ndim else 1.0 / self.variance
        return lambda v: [scale * fv for fv in prod(v)]

    def step(self, closure: Any = None) -> Any:
        """One natural-gradient step; ``closure = (model_fn, loss_fn)``.  Returns the loss before it."""
        model_fn, loss_fn, params, x, f, loss, g = self.loss_and_gradient(closure)
        fv = self.curvature(model_fn, x)
        with no_grad():
            res = conjugate_gradient(
                self.damped(fv), [-gi for gi in g], max_iter=self.max_cg_iter, tol=self.cg_tol
            )
            step = [lr * d for lr, d in zip(self.per_param("lr"), res.x)]
            new = [xi + si for xi, si in zip(x, step)]
            rho = float("nan")
            if self.adapt_damping:
                rho = reduction_ratio(float(loss), float(f(new)), g, step, fv(step))
        self.finish(params, new, rho, {"cg_iterations": res.iterations, "cg_stop": res.reason})
        return loss
