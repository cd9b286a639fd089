"""Dense quasi-Newton and Newton methods for small problems: :class:`BFGS`, :class:`DFP`, :class:`SR1`,
:class:`Newton` (``docs/optimizers.md``, "Dense quasi-Newton and Newton").

All four treat the parameters as one flat vector ``x`` of ``n`` entries (:mod:`.flat`) and keep an
``n × n`` matrix, so they refuse more than ``max_params`` parameters (default :data:`DENSE_LIMIT` =
5000; use :class:`.LBFGS` or :class:`.NewtonCG` beyond).  With ``s = x₊ − x`` and ``y = g₊ − g``:

* :class:`BFGS` updates the inverse Hessian ``H₊ = (I − ρsyᵀ) H (I − ρysᵀ) + ρssᵀ``, ``ρ = 1/sᵀy``;
* :class:`DFP` updates it as ``H₊ = H − Hyyᵀ H / yᵀHy + ssᵀ/sᵀy``;
  both step along ``d = −Hg`` with the strong-Wolfe line search of :mod:`.line_search` (the one
  :class:`.LBFGS` uses), start from ``H = I`` (as SciPy; ``scale_initial=True`` rescales it to
  ``(sᵀy/yᵀy) I`` before the first update, Nocedal & Wright eq. 6.20, which on the κ = 10⁴ quadratic of
  ``benchmarks/dense_optimizers.py`` takes 129 iterations instead of 24), and skip pairs with ``sᵀy ≤ curvature_eps·‖s‖‖y‖`` (relative: an
  absolute bound would skip every pair once the steps are small);
* :class:`SR1` updates the Hessian ``B₊ = B + rrᵀ/rᵀs``, ``r = y − Bs``, skipped when
  ``|sᵀr| < r_skip·‖s‖‖r‖`` (``r_skip = 10⁻⁸``), inside a trust region: the step minimizes the model
  ``gᵀp + ½pᵀBp`` over ``‖p‖ ≤ Δ`` exactly (eigendecomposition of ``B`` and the secular equation);
* :class:`Newton` takes the exact Hessian (:func:`minidiff.hessian` of the loss as a function of the
  flat vector), and on ``H = QΛQᵀ`` replaces every eigenvalue by ``max(|λ|, floor)`` with
  ``floor = eigenvalue_floor · max(1, max|λ|)``: negative curvature is flipped (a descent direction
  that still uses it), near-zero curvature is bounded.  The step ``−Q diag(1/|λ|) Qᵀ g`` is then
  taken with the strong-Wolfe line search, trying ``α = 1`` first.

One ``step(closure)`` runs up to ``max_iter`` iterations (as :class:`.LBFGS`) and stops early when
``‖g‖∞ ≤ tolerance_grad`` or the loss or step changes by less than ``tolerance_change``; :attr:`info`
says how many and why.  A loss that is not a finite scalar raises before anything changed; any error
during the iterations puts the parameters back where the step started.

Parameter groups: the matrix is one dense model over the concatenation of every group's parameters
(in :meth:`parameters` order), and ``max_params`` counts them all.  The settings that define that one
problem — every setting but ``lr`` (SR1 has no ``lr``: all of its settings) — must be equal in every
group; a group that differs is refused with a ``ValueError`` naming the setting, the values and the
groups, by the constructor, :meth:`add_param_group` and :meth:`load_state_dict`, before anything
changes.  A group's ``lr`` multiplies its block of the search direction, ``d = D d₀`` with ``D`` the
diagonal of each entry's ``lr`` (1 everywhere by default, so ``d₀`` is the method's own direction);
the line search then tries ``α = 1`` along ``d`` (the first BFGS/DFP iteration
``min(1, 1/‖g‖₁)``), so with one group ``lr`` is the first trial step.  With unequal ``lr`` ``D d₀``
may fail to be a descent direction; that iteration then steps along ``−D g``.  A group with
``lr = 0`` is held fixed: its gradient entries (and Newton's Hessian rows and columns) are left out,
so the method solves the problem in the other groups' parameters, and ``tolerance_grad`` tests only
theirs.  :meth:`add_param_group` changes the matrix's dimension, so it restarts the curvature model
(the matrix, and SR1's trust radius, start again as in a new optimizer; the counts are kept).

>>> import minidiff as md
>>> from minidiff.optim import BFGS
>>> x = md.tensor([-1.2, 1.0], dtype="float64", requires_grad=True)
>>> rosen = lambda p: 100 * (p[0][1] - p[0][0] ** 2) ** 2 + (1 - p[0][0]) ** 2
>>> opt = BFGS([x], max_iter=200, tolerance_grad=1e-10, tolerance_change=0.0)
>>> _ = opt.step(rosen)
>>> [round(v, 8) for v in x.tolist()], opt.info["reason"]
([1.0, 1.0], 'gradient below tolerance_grad')
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..errors import ShapeError, check_number
from ..primitives.creation import eye, full, zeros_like
from ..primitives.elementwise import maximum, where
from ..primitives.linalg import eigh
from ..primitives.matrix import dot, outer
from ..primitives.ops import abs as abs_
from ..primitives.ops import max as max_
from ..primitives.ops import sum as sum_
from ..tensor.core import Tensor
from ..tensor.pytree import PyTree
from ..transforms.core import hessian
from .base import Optimizer, all_finite, settings_of
from .flat import assign_flat, flatten, unflatten
from .line_search import strong_wolfe

__all__ = ["BFGS", "DFP", "DENSE_LIMIT", "Newton", "SR1"]

DENSE_LIMIT = 5000
"""The default ``max_params`` of the dense methods: their matrix holds ``n²`` numbers."""

Step = tuple[Tensor, float, Tensor, "str | None"]


class _Dense(Optimizer):
    """What the dense methods share: one flat vector over every group's parameters, the size limit,
    the iteration loop and checkpoints."""

    needs_closure = True
    #: The settings that may differ between groups; every other one defines the joint problem.
    per_group: tuple[str, ...] = ("lr",)

    def __init__(self, params: PyTree, settings: dict) -> None:
        super().__init__(params, settings)
        self.n = sum(p.size for p in self.parameters())
        self.history: dict[str, Any] = {"matrix": None, "n_iter": 0, "func_evals": 0}
        self.info: dict[str, Any] = {}

    def check_groups(self, groups: list[dict]) -> None:
        """The joint settings agree in every group, and all groups together fit in ``max_params``."""
        name, first = type(self).__name__, groups[0]
        for key in first:
            if key == "params" or key in self.per_group:
                continue
            differ = [(gi, g[key]) for gi, g in enumerate(groups) if g[key] != first[key]]
            if differ:
                values = ", ".join(f"group {gi} has {v!r}" for gi, v in [(0, first[key]), *differ])
                free = f"only {', '.join(self.per_group)} may differ" if self.per_group else "none may differ"
                raise ValueError(
                    f"{name}: the setting {key!r} must be the same in every parameter group (one dense "
                    f"model over all of them; {free}), but {values}"
                )
        n = sum(p.size for g in groups for p in g["params"])
        limit = first["max_params"]
        if n > limit:
            raise ValueError(
                f"{name}: {n} parameters is above the limit max_params={limit} of the dense methods "
                f"(an {n}×{n} matrix over every group's parameters); use md.optim.LBFGS (or NewtonCG) "
                "for problems this large"
            )

    def add_param_group(self, group: dict) -> None:
        """Add a group (its joint settings must equal the others'); the matrix changes dimension, so the
        curvature model restarts as in a new optimizer (step and evaluation counts are kept)."""
        super().add_param_group(group)
        self.n = sum(p.size for p in self.parameters())
        self._reset_model()

    def _reset_model(self) -> None:
        self.history["matrix"] = None

    def validate(self, settings: dict) -> None:
        super().validate(settings)
        name = type(self).__name__
        for key in ("max_iter", "max_params", "max_ls"):
            if key in settings:
                check_number(name, key, settings[key], low=1, integer=True)
        for key in ("tolerance_grad", "tolerance_change", "curvature_eps", "eigenvalue_floor"):
            if key in settings:
                check_number(name, key, settings[key], low=0)
        if "c1" in settings:
            c1, c2 = settings["c1"], settings["c2"]
            check_number(name, "c1", c1, low=0, high=1, low_open=True, high_open=True)
            check_number(name, "c2", c2, low=0, high=1, low_open=True, high_open=True)
            if not c1 < c2:
                raise ValueError(
                    f"{name}: the Wolfe constants need 0 < c1 < c2 < 1, got c1={c1!r}, c2={c2!r}"
                )

    # ------------------------------------------------------------------ evaluations
    def _params(self) -> list[Tensor]:
        return list[Tensor](self.parameters())

    def _scales(self, like: Tensor) -> Tensor | None:
        """The diagonal preconditioner ``D``: each entry's group ``lr`` (None for a method without lr)."""
        if "lr" not in self._defaults:
            return None
        return flatten(
            [
                full(p.shape, g["lr"], dtype=like.dtype, device=like.device)
                for g in self.param_groups
                for p in g["params"]
            ]
        )

    def _evaluate(self, closure: Callable[..., Any]) -> tuple[float, Tensor]:
        """``(loss, flat gradient)`` at the parameters' current values; the loss must be a scalar."""
        try:
            loss, grads = self.evaluate(closure)
        except ShapeError as e:
            raise ShapeError(
                f"{type(self).__name__}.step: the closure must return a scalar loss ({e})"
            ) from e
        if isinstance(loss, Tensor) and loss.size != 1:
            raise ShapeError(
                f"{type(self).__name__}.step: the closure must return a scalar loss, got shape {loss.shape}"
            )
        self.history["func_evals"] += 1
        flat = [gp for gs in grads for gp in gs]
        g = [zeros_like(p.detach()) if gp is None else gp for p, gp in zip(self._params(), flat)]
        return float(loss), self._masked(flatten(g))

    def _evaluate_at(self, closure: Callable[..., Any], x: Tensor) -> tuple[float, Tensor]:
        assign_flat(self._params(), x)
        return self._evaluate(closure)

    def _start(self, closure: Callable[..., Any]) -> tuple[float, Tensor]:
        f, g = self._evaluate(closure)
        if not (math.isfinite(f) and all_finite(g)):
            what = "loss" if not math.isfinite(f) else "gradient"
            raise FloatingPointError(
                f"{type(self).__name__}.step: the {what} at the starting point is not finite (loss {f}); "
                "no parameter was changed"
            )
        return f, g

    def _line_search(
        self, closure: Callable[..., Any], x: Tensor, f: float, g: Tensor, d: Tensor, a0: float
    ) -> Any:
        return strong_wolfe(
            lambda xa: self._evaluate_at(closure, xa), x, f, g, d, float(dot(g, d)), a0, self.param_groups[0]
        )

    # ------------------------------------------------------------------ the step
    def step(self, closure: Callable[..., Any] | None = None) -> Any:
        """Up to ``max_iter`` iterations; returns the loss at the starting point (as :class:`.LBFGS`)."""
        name = type(self).__name__
        if closure is None:
            raise TypeError(f"{name}.step: this method re-evaluates the loss; pass step(closure)")
        group, evals0 = self.param_groups[0], self.history["func_evals"]
        x0 = flatten([p.detach() for p in self._params()]).copy()
        self._set_scales(x0)
        f0, g = self._start(closure)
        x, f = x0, f0
        info: dict[str, Any] = {"iterations": 0, "reason": "max_iter reached"}
        reason = "gradient below tolerance_grad" if self._small(g) else None
        if self._free is not None and not bool(self._free.any()):
            reason = "every parameter group has lr = 0"
        try:
            while reason is None and info["iterations"] < group["max_iter"]:
                x, f, g, reason = self._iterate(closure, x, f, g)
                self.history["n_iter"] += 1
                info["iterations"] += 1
        except BaseException:
            assign_flat(self._params(), x0)
            raise
        assign_flat(self._params(), x)
        self.info = {**info, "reason": reason or info["reason"], "loss": f}
        self.info["func_evals"] = self.history["func_evals"] - evals0
        self.steps += 1
        return f0

    def _set_scales(self, like: Tensor) -> None:
        """``self._d`` (the preconditioner, None if the method has no lr) and ``self._free`` (True where
        the group's lr > 0; None if every entry is free) for this step."""
        self._d = self._scales(like)
        free = None if self._d is None else self._d > 0
        self._free = None if free is None or bool(free.all()) else free

    def _small(self, g: Tensor) -> bool:
        return float(max_(abs_(g))) <= self.param_groups[0]["tolerance_grad"]

    def _masked(self, g: Tensor) -> Tensor:
        """``g`` with the entries of frozen groups (lr = 0) set to 0: the gradient of the problem in the
        other groups' parameters, which is all the methods see."""
        return g if self._free is None else where(self._free, g, 0.0)

    def _masked_hessian(self, H: Tensor) -> Tensor:
        """``H`` with the rows and columns of frozen groups replaced by the identity's."""
        if self._free is None:
            return H
        return where(outer(self._free, self._free), H, self._identity(H))

    def _scaled(self, d: Tensor) -> Tensor:
        """``D d``: each group's block of the direction times its lr."""
        return d if self._d is None else self._d * d

    def _stop_reason(self, f_old: float, f: float, g: Tensor, s: Tensor) -> str | None:
        group = self.param_groups[0]
        if self._small(g):
            return "gradient below tolerance_grad"
        if abs(f - f_old) < group["tolerance_change"]:
            return "loss change below tolerance_change"
        if float(max_(abs_(s))) <= group["tolerance_change"]:
            return "step below tolerance_change"
        return None

    def _iterate(self, closure: Callable[..., Any], x: Tensor, f: float, g: Tensor) -> Step:
        raise NotImplementedError

    def _identity(self, like: Tensor) -> Tensor:
        return eye(self.n, dtype=like.dtype, device=like.device)

    # ------------------------------------------------------------------ checkpoints
    def extra_state(self) -> dict:
        return dict(self.history)

    def load_extra_state(self, extra: dict) -> None:
        if extra:
            self.history = dict(extra)


class _InverseUpdate(_Dense):
    """BFGS and DFP: ``d = −Hg``, a strong-Wolfe line search, then the inverse-Hessian update."""

    def __init__(
        self,
        params: PyTree,
        lr: float = 1.0,
        max_iter: int = 100,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-12,
        c1: float = 1e-4,
        c2: float = 0.9,
        max_ls: int = 25,
        curvature_eps: float = 1e-10,
        scale_initial: bool = False,
        max_params: int = DENSE_LIMIT,
    ) -> None:
        super().__init__(params, settings_of(locals()))

    def _iterate(self, closure: Callable[..., Any], x: Tensor, f: float, g: Tensor) -> Step:
        H = self.history["matrix"]
        d = self._scaled(-g if H is None else -(H @ g))
        if H is not None and not float(dot(g, d)) < 0:
            if not float(dot(g, H @ g)) > 0:  # H lost positive definiteness: start again from I
                self.history["matrix"] = None
            d = self._scaled(-g)  # D·(−Hg) is not a descent direction: steepest descent in D's metric
        first = self.history["matrix"] is None
        a0 = min(1.0, 1.0 / float(sum_(abs_(g)))) if first else 1.0
        point = self._line_search(closure, x, f, g, d, a0)
        if point.a == 0.0:
            return x, f, g, "line search made no progress"
        s, y = point.x - x, point.g - g
        sy = float(dot(s, y))
        if sy > self.param_groups[0]["curvature_eps"] * math.sqrt(float(dot(s, s)) * float(dot(y, y))):
            if first:
                H = self._identity(g)
                if self.param_groups[0]["scale_initial"]:
                    H = (sy / float(dot(y, y))) * H
            self.history["matrix"] = self._update(H, s, y, sy)
        return point.x, point.f, point.g, self._stop_reason(f, point.f, point.g, s)

    def _update(self, H: Tensor, s: Tensor, y: Tensor, sy: float) -> Tensor:
        raise NotImplementedError


class BFGS(_InverseUpdate):
    """Dense BFGS with the strong-Wolfe line search; ``step(closure)`` (either closure style).

    Settings: ``lr`` (per group: multiplies the group's block of the direction ``−Hg``, so with one group
    it is the line search's first trial step; 0 holds the group fixed), and, equal in every group,
    ``max_iter`` per step, ``tolerance_grad``, ``tolerance_change``, the Wolfe constants ``c1``, ``c2``,
    ``max_ls`` line-search evaluations, ``curvature_eps`` (pairs with ``sᵀy ≤ curvature_eps·‖s‖‖y‖`` are
    skipped), ``scale_initial``, ``max_params`` (counting every group).  Groups: see the module docstring.

    >>> import minidiff as md
    >>> A = md.tensor([[3.0, 1.0], [1.0, 2.0]], dtype="float64")
    >>> b = md.tensor([1.0, -1.0], dtype="float64")
    >>> x = md.zeros(2, dtype="float64", requires_grad=True)
    >>> opt = md.optim.BFGS([x], tolerance_grad=1e-12)
    >>> _ = opt.step(lambda p: 0.5 * (p[0] @ A @ p[0]) - b @ p[0])
    >>> [round(v, 10) for v in x.tolist()]
    [0.6, -0.8]

    Two groups, one dense model; the second is held fixed (``lr=0``), the first minimizes over itself:

    >>> u = md.zeros(1, dtype="float64", requires_grad=True)
    >>> v = md.ones(1, dtype="float64", requires_grad=True)
    >>> opt = md.optim.BFGS([{"params": [u]}, {"params": [v], "lr": 0.0}], tolerance_grad=1e-12)
    >>> _ = opt.step(lambda p: ((p[0] - 2 * p[1]) ** 2).sum() + (p[1] ** 2).sum())
    >>> [round(u.item(), 10), v.item()]
    [2.0, 1.0]
    """

    def _update(self, H: Tensor, s: Tensor, y: Tensor, sy: float) -> Tensor:
        rho, Hy = 1.0 / sy, H @ y
        return H - rho * (outer(Hy, s) + outer(s, Hy)) + (rho * rho * float(dot(y, Hy)) + rho) * outer(s, s)


class DFP(_InverseUpdate):
    """Dense DFP (Davidon–Fletcher–Powell) with the strong-Wolfe line search; settings and groups as
    :class:`BFGS` (``lr`` per group, every other setting equal in every group).

    >>> import minidiff as md
    >>> x = md.tensor([3.0, -1.0], dtype="float64", requires_grad=True)
    >>> opt = md.optim.DFP([x], tolerance_grad=1e-10)
    >>> _ = opt.step(lambda p: (p[0][0] - 1) ** 2 + 10 * (p[0][1] + 2) ** 2)
    >>> [round(v, 8) for v in x.tolist()]
    [1.0, -2.0]
    """

    def _update(self, H: Tensor, s: Tensor, y: Tensor, sy: float) -> Tensor:
        Hy = H @ y
        return H - outer(Hy, Hy) / float(dot(y, Hy)) + outer(s, s) / sy


class SR1(_Dense):
    """Dense symmetric-rank-one updates in a trust region (Nocedal & Wright, Algorithm 6.2).

    Settings: ``radius`` (initial Δ), ``eta`` (a trial step is accepted when the reduction ratio
    ``ρ = (f − f₊)/(model decrease)`` exceeds it), ``r_skip`` (the skipping rule), ``max_iter`` (trial
    steps, accepted or not), ``tolerance_grad``, ``tolerance_change`` (also the smallest Δ),
    ``max_params``.  Δ doubles when ``ρ > 0.75`` and the step reached ``0.8Δ``, halves when ``ρ < 0.1``.
    SR1 has no ``lr`` (the trust region sets the step length), so it has no per-group setting: its
    groups only partition the parameters, and every setting must be equal in every group.

    >>> import minidiff as md
    >>> x = md.tensor([-1.2, 1.0], dtype="float64", requires_grad=True)
    >>> rosen = lambda p: 100 * (p[0][1] - p[0][0] ** 2) ** 2 + (1 - p[0][0]) ** 2
    >>> opt = md.optim.SR1([x], max_iter=300, tolerance_grad=1e-9)
    >>> _ = opt.step(rosen)
    >>> [round(v, 6) for v in x.tolist()]
    [1.0, 1.0]
    """

    def __init__(
        self,
        params: PyTree,
        radius: float = 1.0,
        eta: float = 1e-4,
        r_skip: float = 1e-8,
        max_iter: int = 100,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-12,
        max_params: int = DENSE_LIMIT,
    ) -> None:
        super().__init__(params, settings_of(locals()))
        self.history["radius"] = float(radius)

    def _reset_model(self) -> None:
        super()._reset_model()
        self.history["radius"] = float(self.param_groups[0]["radius"])

    def validate(self, settings: dict) -> None:
        super().validate(settings)
        name = type(self).__name__
        check_number(name, "radius", settings["radius"], low=0, low_open=True)
        check_number(name, "eta", settings["eta"], low=0, high=0.25, high_open=True)
        check_number(name, "r_skip", settings["r_skip"], low=0, high=1, high_open=True)

    def _iterate(self, closure: Callable[..., Any], x: Tensor, f: float, g: Tensor) -> Step:
        group = self.param_groups[0]
        B = self.history["matrix"]
        B = self._identity(g) if B is None else B
        radius = self.history["radius"]
        p = trust_region_step(B, g, radius)
        Bp = B @ p
        predicted = -(float(dot(g, p)) + 0.5 * float(dot(p, Bp)))
        f_new, g_new = self._evaluate_at(closure, x + p)
        finite = math.isfinite(f_new) and all_finite(g_new)
        ratio = (f - f_new) / predicted if finite and predicted > 0 else -math.inf
        if finite:
            self.history["matrix"] = self._update(B, Bp, p, g_new - g)
        p_norm = math.sqrt(float(dot(p, p)))
        if ratio > 0.75 and p_norm >= 0.8 * radius:
            radius *= 2.0
        elif ratio < 0.1:
            radius *= 0.5
        self.history["radius"] = radius
        if ratio <= group["eta"]:
            small = radius < group["tolerance_change"]
            return x, f, g, "trust radius below tolerance_change" if small else None
        return x + p, f_new, g_new, self._stop_reason(f, f_new, g_new, p)

    def _update(self, B: Tensor, Bs: Tensor, s: Tensor, y: Tensor) -> Tensor:
        r = y - Bs
        sr = float(dot(s, r))
        bound = self.param_groups[0]["r_skip"] * math.sqrt(float(dot(s, s)) * float(dot(r, r)))
        if abs(sr) < bound or sr == 0.0:
            return B  # the skipping rule: a tiny denominator would blow the update up
        return B + outer(r, r) / sr


class Newton(_Dense):
    """Newton's method with the exact Hessian, eigenvalues floored in absolute value, and the
    strong-Wolfe line search; ``step(closure)`` needs the functional closure ``f(params) -> loss``.

    Settings: ``lr`` (per group: multiplies the group's block of the Newton direction, so with one group
    it is the first trial step; 0 holds the group fixed and Newton works on the other groups' Hessian
    block), and, equal in every group, ``eigenvalue_floor`` (relative: ``|λ| ≥ floor·max(1, max|λ|)``),
    ``max_iter``, ``tolerance_grad``, ``tolerance_change``, ``c1``, ``c2``, ``max_ls``, ``max_params``.
    Cost per iteration: one Hessian (``n`` Hessian-vector products' worth), one ``n × n``
    eigendecomposition, and the line search's evaluations (usually one).

    >>> import minidiff as md
    >>> x = md.tensor([0.5, 0.5], dtype="float64", requires_grad=True)
    >>> opt = md.optim.Newton([x], tolerance_grad=1e-12)
    >>> _ = opt.step(lambda p: (p[0] ** 4).sum() / 4 - (p[0] ** 2).sum() / 2)  # x = 0 is a saddle
    >>> [round(abs(v), 10) for v in x.tolist()]
    [1.0, 1.0]
    """

    def __init__(
        self,
        params: PyTree,
        lr: float = 1.0,
        eigenvalue_floor: float = 1e-8,
        max_iter: int = 100,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-12,
        c1: float = 1e-4,
        c2: float = 0.9,
        max_ls: int = 25,
        max_params: int = DENSE_LIMIT,
    ) -> None:
        super().__init__(params, settings_of(locals()))

    def step(self, closure: Callable[..., Any] | None = None) -> Any:
        """Up to ``max_iter`` Newton iterations; the closure must be the functional ``f(params)``."""
        if closure is not None:
            self.loss_function(closure)  # refuses closure() before anything is evaluated
        return super().step(closure)

    def _iterate(self, closure: Callable[..., Any], x: Tensor, f: float, g: Tensor) -> Step:
        loss = self.loss_function(closure)
        params = self._params()
        H = self._masked_hessian(hessian(lambda v: loss(unflatten(v, params)))(x))
        d = self._scaled(floored_newton_direction(H, g, self.param_groups[0]["eigenvalue_floor"]))
        if not float(dot(g, d)) < 0:  # D·(Newton direction) is not a descent direction
            d = self._scaled(-g)
        point = self._line_search(closure, x, f, g, d, 1.0)
        if point.a == 0.0:
            return x, f, g, "line search made no progress"
        return point.x, point.f, point.g, self._stop_reason(f, point.f, point.g, point.x - x)


def floored_newton_direction(H: Tensor, g: Tensor, floor: float) -> Tensor:
    """``−Q diag(1/max(|λ|, floor·max(1, max|λ|))) Qᵀ g`` for ``H = QΛQᵀ``: a descent direction always.

    >>> import minidiff as md
    >>> H = md.tensor([[2.0, 0.0], [0.0, -4.0]], dtype="float64")
    >>> floored_newton_direction(H, md.tensor([2.0, 4.0], dtype="float64"), 1e-8).tolist()
    [-1.0, -1.0]
    """
    lam, Q = eigh(0.5 * (H + H.T))
    size = abs_(lam)
    size = maximum(size, floor * max(1.0, float(max_(size))))
    return -(Q @ ((Q.T @ g) / size))


def trust_region_step(B: Tensor, g: Tensor, radius: float) -> Tensor:
    """The minimizer of ``gᵀp + ½pᵀBp`` over ``‖p‖ ≤ radius`` (``B`` symmetric, possibly indefinite).

    With ``B = QΛQᵀ`` and ``a = Qᵀg``: the Newton step if ``B`` is positive definite and it fits,
    else ``p(σ) = −Q a/(Λ + σ)`` on the boundary, ``σ > max(0, −λ_min)`` found by safeguarded Newton
    on ``1/‖p(σ)‖ − 1/radius`` (Moré & Sorensen); in the hard case (``a`` orthogonal to the lowest
    eigenvector) ``p(−λ_min)`` plus that eigenvector up to the boundary.

    >>> import minidiff as md
    >>> B = md.tensor([[1.0, 0.0], [0.0, -1.0]], dtype="float64")
    >>> p = trust_region_step(B, md.tensor([1.0, 0.0], dtype="float64"), 2.0)  # the hard case
    >>> [round(abs(v), 12) for v in p.tolist()], round(float(md.linalg.norm(p)), 12)
    ([0.5, 1.936491673104], 2.0)
    """
    lam, Q = eigh(0.5 * (B + B.T))
    a = Q.T @ g
    lam_min = float(lam[0])
    if lam_min > 0:
        p = -(Q @ (a / lam))
        if float(dot(p, p)) <= radius * radius:
            return p

    def norm(sigma: float) -> float:
        return math.sqrt(float(sum_((a / (lam + sigma)) ** 2)))

    lo = max(0.0, -lam_min)
    hi = lo + math.sqrt(float(dot(g, g))) / radius + 1.0
    if norm(lo + 1e-12 * max(1.0, hi)) <= radius:  # the hard case
        return _hard_case(Q, lam, a, lo, radius)
    sigma = _secular_root(lam, a, radius, lo, hi)
    return -(Q @ (a / (lam + sigma)))


def _secular_root(lam: Tensor, a: Tensor, radius: float, lo: float, hi: float) -> float:
    """``σ ∈ (lo, hi)`` with ``‖a/(λ + σ)‖ = radius``: Newton on ``1/‖p‖ − 1/radius``, bisection guard."""
    sigma = hi
    for _ in range(100):
        w = lam + sigma
        n2 = float(sum_((a / w) ** 2))
        n = math.sqrt(n2)
        if abs(n - radius) <= 1e-12 * radius:
            break
        if n > radius:
            lo = sigma
        else:
            hi = sigma
        phi = 1.0 / n - 1.0 / radius
        dphi = float(sum_(a * a / (w * w * w))) / (n2 * n)
        step = sigma - phi / dphi if dphi > 0 else -1.0
        sigma = step if lo < step < hi else 0.5 * (lo + hi)
        if hi - lo <= 1e-15 * max(1.0, hi):
            break
    return sigma


def _hard_case(Q: Tensor, lam: Tensor, a: Tensor, sigma: float, radius: float) -> Tensor:
    """``p(σ)`` with the components along the lowest eigenvector dropped, plus ``τ q₁`` to the boundary."""
    w = lam + sigma
    keep = abs_(w) > 1e-12 * max(1.0, float(max_(abs_(lam))))
    coeffs = -(a * keep) / (w + (1 - keep))
    p = Q @ coeffs
    tau = math.sqrt(max(radius * radius - float(dot(p, p)), 0.0))
    return p + tau * Q[:, 0]
