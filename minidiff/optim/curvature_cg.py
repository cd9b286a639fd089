"""What :class:`NaturalGradient`, :class:`HessianFree` and :class:`LevenbergMarquardt` share.

* :func:`conjugate_gradient` — CG on a list of tensors for ``A x = b`` (``A`` only as a product), with a
  warm start ``x0``, a fixed iteration budget, a relative-residual tolerance and, optionally, copies of
  the iterates at chosen iterations (for Hessian-free's CG-iterate backtracking);
* :func:`lm_damping` — Martens' Levenberg–Marquardt rule for the damping λ from the reduction ratio ρ;
* :class:`DampedCurvatureOptimizer` — the damping settings, the ratio ρ and the final commit.

>>> import minidiff as md
>>> A = md.tensor([[3.0, 1.0], [1.0, 2.0]])
>>> res = conjugate_gradient(lambda v: [A @ v[0]], [md.tensor([1.0, -1.0])], max_iter=2)
>>> [round(v, 12) for v in res.x[0].tolist()], res.iterations
([0.6, -0.8], 2)
>>> lm_damping(1.0, 0.1), lm_damping(1.0, 0.5), lm_damping(1.0, 0.9)
(1.5, 1.0, 0.6666666666666666)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ShapeError, check_number
from ..tensor.core import Tensor
from ..transforms.core import value_and_grad
from .base import Optimizer, all_finite

__all__ = ["CGResult", "conjugate_gradient", "lm_damping", "DampedCurvatureOptimizer"]

#: Martens' thresholds and factors: λ ← λ·BOOST if ρ < LOW, λ ← λ·DROP if ρ > HIGH.
LOW, HIGH, BOOST, DROP = 0.25, 0.75, 1.5, 2.0 / 3.0

Vec = list[Tensor]


def dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> float:
    """``Σ_i ⟨a_i, b_i⟩`` as a Python float."""
    return sum(float((x * y).sum()) for x, y in zip(a, b))


@dataclass
class CGResult:
    """The solution ``x``, the iterations done, why CG stopped and the kept ``(iteration, x)`` pairs."""

    x: Vec
    iterations: int
    reason: str
    kept: list[tuple[int, Vec]] = field(default_factory=list)


def conjugate_gradient(
    matvec: Callable[[Vec], Vec],
    b: Vec,
    x0: Vec | None = None,
    *,
    max_iter: int,
    tol: float = 0.0,
    keep: Iterable[int] = (),
) -> CGResult:
    """Solve ``A x = b`` by CG from ``x0`` (zero if None); stop after ``max_iter`` iterations, when
    ``‖r‖ ≤ tol·‖b‖``, or at a direction of non-positive curvature (``A`` is assumed symmetric
    positive definite).  The iterate after each iteration number in ``keep`` is recorded in ``kept``.
    A warm start costs one more product (the initial residual ``b − A x0``)."""
    keep = set(keep)
    x = [0 * bi for bi in b] if x0 is None else list(x0)
    r = list(b) if x0 is None else [bi - ai for bi, ai in zip(b, matvec(x))]
    d, rr = list(r), dot(r, r)
    target = tol * math.sqrt(dot(b, b))
    kept: list[tuple[int, Vec]] = []
    for k in range(max_iter):
        if math.sqrt(rr) <= target:
            return CGResult(x, k, "residual below tolerance", kept)
        ad = matvec(d)
        dad = dot(d, ad)
        if not dad > 0:
            return CGResult(x, k, "non-positive curvature", kept)
        alpha = rr / dad
        x = [xi + alpha * di for xi, di in zip(x, d)]
        r = [ri - alpha * ai for ri, ai in zip(r, ad)]
        rr, rr_old = dot(r, r), rr
        d = [ri + (rr / rr_old) * di for ri, di in zip(r, d)]
        if k + 1 in keep:
            kept.append((k + 1, x))
    return CGResult(x, max_iter, "max_cg_iter reached", kept)


def lm_damping(lam: float, rho: float) -> float:
    """Martens' rule: ``λ·3/2`` if ``ρ < 1/4`` (or ρ is NaN), ``λ·2/3`` if ``ρ > 3/4``, else ``λ``."""
    if not rho >= LOW:
        return lam * BOOST
    return lam * DROP if rho > HIGH else lam


def reduction_ratio(f0: float, f1: float, g: Vec, step: Vec, b_step: Vec) -> float:
    """``ρ = (f(θ+δ) − f(θ)) / (gᵀδ + ½ δᵀBδ)``: the actual change over the quadratic model's
    (undamped curvature ``B``; ``b_step = Bδ``).  −inf when ``f(θ+δ)`` is not finite; NaN if the
    model predicts no decrease."""
    predicted = dot(g, step) + 0.5 * dot(step, b_step)
    if not math.isfinite(f1):
        return -math.inf
    return (f1 - f0) / predicted if predicted < 0 else math.nan


def scalar_loss(name: str, value: Any) -> Tensor:
    """``value`` if it is a scalar floating tensor, else a ShapeError naming ``name``."""
    if not isinstance(value, Tensor) or value.shape != ():
        shape = getattr(value, "shape", type(value).__name__)
        raise ShapeError(f"{name}.step: the loss must be a scalar tensor, got {shape}")
    return value


def split_closure(name: str, closure: Any) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """``(model_fn, loss_fn)`` from ``closure``, or a TypeError saying what ``step`` needs."""
    if not (isinstance(closure, (tuple, list)) and len(closure) == 2 and all(map(callable, closure))):
        raise TypeError(
            f"{name}.step: pass step((model_fn, loss_fn)) with model_fn(params) -> output and "
            f"loss_fn(output) -> scalar loss; got {type(closure).__name__}"
        )
    return closure[0], closure[1]


class DampedCurvatureOptimizer(Optimizer):
    """Group settings ``lr`` and ``damping`` (λ ≥ 0, > 0 when adapted); whole-run CG settings and the
    Levenberg–Marquardt adaptation switch.  Subclasses define ``step``.

    Several groups share one CG solve over all parameters: the system is ``(B + Λ) δ = −g`` with ``Λ``
    diagonal, each group's λ on its block (:meth:`damped`), and the step is ``lr_k·δ_k`` on group k's
    block.  The adaptation multiplies every group's λ by the same factor (one ρ for the whole step)."""

    needs_closure = True

    def __init__(
        self, params: Any, lr: float, damping: float, max_cg_iter: int, cg_tol: float, adapt_damping: bool
    ) -> None:
        name = type(self).__name__
        self.adapt_damping = bool(adapt_damping)
        super().__init__(params, dict(lr=lr, damping=damping))
        check_number(name, "max_cg_iter", max_cg_iter, low=1, integer=True)
        check_number(name, "cg_tol", cg_tol, low=0)
        self.max_cg_iter, self.cg_tol = max_cg_iter, cg_tol
        self.info: dict = {}

    def validate(self, settings: dict) -> None:
        name = type(self).__name__
        check_number(name, "lr", settings["lr"], low=0, low_open=True)
        check_number(name, "damping", settings["damping"], low=0, low_open=self.adapt_damping)

    def loss_and_gradient(
        self, closure: Any
    ) -> tuple[Callable[..., Any], Callable[..., Any], list, Vec, Callable, Tensor, Vec]:
        """What a model-and-loss step starts from: ``(model_fn, loss_fn, params, x, f, loss, g)``, with
        ``x`` the parameters' values, ``f(x)`` the checked scalar loss, and its value and gradient at
        ``x`` (refused, nothing changed, if the gradient is not finite)."""
        name = type(self).__name__
        model_fn, loss_fn = split_closure(name, closure)
        params = self.parameters()
        x = [p.detach() for p in params]

        def f(ps: list[Tensor]) -> Tensor:
            return scalar_loss(name, loss_fn(model_fn(ps)))

        loss, g = value_and_grad(f)(x)
        self.check_grads_finite(self.by_group(g))
        return model_fn, loss_fn, params, x, f, loss, g

    def per_param(self, key: str) -> list[float]:
        """Each parameter's group setting ``key``, in :meth:`parameters` order."""
        return [grp[key] for grp in self.param_groups for _ in grp["params"]]

    def by_group(self, flat: Vec) -> list[Vec]:
        """A list in :meth:`parameters` order cut into one list per group (to name a group in errors)."""
        it = iter(flat)
        return [[next(it) for _ in grp["params"]] for grp in self.param_groups]

    def damped(self, product: Callable[[Vec], Vec]) -> Callable[[Vec], Vec]:
        """``v ↦ Bv + λv`` with each parameter's group damping λ."""
        lam = self.per_param("damping")
        return lambda v: [bv + lm * vi if lm else bv for bv, vi, lm in zip(product(v), v, lam)]

    def finish(
        self, params: Sequence[Any], new: Vec | None, rho: float, info: dict, states: list | None = None
    ) -> None:
        """Check ``new`` is finite, adapt every group's λ from ρ (if enabled) and commit (``new`` None:
        the step is rejected, the parameters stay)."""
        if new is not None and not all(all_finite(v) for v in new):
            raise FloatingPointError(
                f"{type(self).__name__}.step: the step is not finite (CG stopped by {info.get('cg_stop')});"
                " no parameter was changed — increase damping"
            )
        if self.adapt_damping:
            for grp in self.param_groups:
                grp["damping"] = lm_damping(grp["damping"], rho)
        self.info = {**info, "rho": rho, "damping": [grp["damping"] for grp in self.param_groups]}
        values: list = [None] * len(params) if new is None else list(new)
        self.commit(zip(params, values, states or [None] * len(params)))
