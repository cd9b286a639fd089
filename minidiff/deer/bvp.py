"""Two-point boundary-value problems ``y'' = f(y, y', r; θ)`` on ``[a, b]`` by Newton's method.

The interval is cut into a uniform grid of ``n`` points ``r_0 = a, …, r_{n-1} = b`` (step ``h``), and
at every point the equation is replaced by second-order central differences::

    (y_{i-1} − 2 y_i + y_{i+1}) / h² − f(y_i, (y_{i+1} − y_{i-1}) / (2h), r_i; θ) = 0.

A Dirichlet end ``y(a) = α`` replaces its row by ``y_0 − α = 0``; a Neumann end ``y'(a) = β`` keeps
the equation at ``r_0`` with the ghost value ``y_{-1} = y_1 − 2hβ`` (so the centred ``y'`` there is
``β`` exactly, and the scheme stays second order).  The residual's Jacobian in ``y`` is tridiagonal;
it is read by forward mode (three JVPs, one per column colour ``j mod 3``: ``f`` acts pointwise, so
columns three apart never touch the same row), the band gathered from them with minidiff operations,
and every Newton step is one banded solve (:func:`minidiff.linalg.solve_banded`: LAPACK ``gtsv`` on
the CPU).

Derivatives with respect to ``θ`` and the boundary values never go through the iterations: at the
solution ``R(y*, θ) = 0``, so ``∂y*/∂θ = −J⁻¹ ∂R/∂θ`` (implicit function theorem).  The JVP is one
banded solve with ``J``, the VJP one banded solve with ``Jᵀ`` followed by a VJP of the residual.  Both
rules are written with differentiable minidiff operations (the band from forward-mode JVPs, gathered
by masks and padding; ``solve_banded``, itself differentiable), evaluated at the traced solution, so
derivatives of derivatives (``grad`` of ``grad``, ``md.hessian``, ``hvp``) and vmapped derivatives
work like any other.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

from ..errors import DTypeError, LinAlgError, ShapeError, check_number
from ..primitives import ops
from ..primitives.creation import arange, asarray, linspace
from ..primitives.custom import primitive
from ..primitives.linalg import solve_banded
from ..primitives.shape import concatenate, pad, reshape, stack
from ..tensor import pytree
from ..tensor.core import Tensor
from ..tensor.pytree import PyTree
from ..transforms.core import jvp, vjp
from .rnn import DeerConvergenceError, DeerConvergenceWarning, DeerStats, _outside_minidiff, nonfinite

__all__ = ["deer_bvp", "BOUNDARY_KINDS"]

#: The boundary conditions :func:`deer_bvp` accepts at each end.
BOUNDARY_KINDS = ("dirichlet", "neumann")


# ----------------------------------------------------------------------------- the discretization
def _residual(f, y, r, theta, bc, *, h, kinds):
    """``R(y)`` of length n: the central-difference equation at every point, the Dirichlet rows
    replaced by ``y_end − value`` and the Neumann ends closed by their ghost values."""
    left, right = kinds
    ghost_l = y[1:2] - 2.0 * h * bc[0:1] if left == "neumann" else y[0:1]
    ghost_r = y[-2:-1] + 2.0 * h * bc[1:2] if right == "neumann" else y[-1:]
    prev = concatenate([ghost_l, y[:-1]])
    nxt = concatenate([y[1:], ghost_r])
    eq = (prev - 2.0 * y + nxt) / (h * h) - f(y, (nxt - prev) / (2.0 * h), r, theta)
    first = y[0:1] - bc[0:1] if left == "dirichlet" else eq[0:1]
    last = y[-1:] - bc[1:2] if right == "dirichlet" else eq[-1:]
    return concatenate([first, eq[1:-1], last])


def _banded_jacobian(f, y, r, theta, bc, *, h, kinds):
    """``(R(y), ab)``: the residual and its tridiagonal Jacobian in LAPACK band storage
    ``ab[1 + i − j, j] = ∂R_i/∂y_j``, from three forward-mode JVPs, all minidiff operations (so
    differentiable in ``y``, ``θ`` and ``bc`` when those are traced)."""
    n = y.shape[0]
    colour = arange(n, device=y.device) % 3
    masks = stack([(colour == k).astype(y.dtype) for k in range(3)])  # masks[k, j] = [j ≡ k mod 3]
    R, JV = jvp(lambda v: _residual(f, v, r, theta, bc, h=h, kinds=kinds), (y,), (masks,), vectorized=True)
    # the column j of J sits in rows j-1, j, j+1 of JV[j mod 3] = J·masks[j mod 3]: pick them by masks
    diag = (masks * JV).sum(axis=0)
    up = (masks * pad(JV[:, :-1], ((0, 0), (1, 0)))).sum(axis=0)  # ab[0, j] = J[j-1, j]
    low = (masks * pad(JV[:, 1:], ((0, 0), (0, 1)))).sum(axis=0)  # ab[2, j] = J[j+1, j]
    return R, stack([up, diag, low])


def _check_pointwise(f, y, r, theta, bc, ab, *, h, kinds):
    """The coloured JVPs are right only if ``f`` acts pointwise: compare ``J·v`` from the band with
    one JVP along a direction ``v`` without structure (once per solve, before Newton's first step),
    to a tolerance relative to the largest entry of the band (``|v| ≤ 1``)."""
    n = y.shape[0]
    v = ops.sin(arange(n, device=y.device) * 0.7548776662).astype(y.dtype)
    _, Jv = jvp(lambda u: _residual(f, u, r, theta, bc, h=h, kinds=kinds), (y,), (v,))
    gap = float(abs((_band_matvec(ab, v) - Jv).numpy()).max())
    rel = 1e-8 if _itemsize(y) >= 8 else 1e-4  # rounding of the band's ~1/h² entries in J·v
    if not gap <= rel * (1.0 + float(abs(ab.numpy()).max())):
        raise ValueError(
            "deer_bvp: f must act pointwise along the grid (f(y, dy, r, params)[i] may depend only on "
            "y[i], dy[i], r[i]); its Jacobian is not tridiagonal"
        )


def _band_matvec(ab, v):
    """``J v`` for a tridiagonal ``J`` in band storage."""
    return ab[1] * v + pad(ab[0, 1:] * v[1:], (0, 1)) + pad(ab[2, :-1] * v[:-1], (1, 0))


def _transpose_band(ab):
    """The band storage of ``Jᵀ`` from that of a tridiagonal ``J``."""
    return stack([pad(ab[2, :-1], (1, 0)), ab[1], pad(ab[0, 1:], (0, 1))])


def _solve(ab, rhs):
    """``J⁻¹ rhs`` for the tridiagonal ``J`` whose band is ``ab`` (differentiable in both)."""
    return solve_banded((1, 1), ab, rhs)


# ----------------------------------------------------------------------------- Newton's iteration
def _newton(f, r, theta, bc, *, h, kinds, init, max_iter, tol):
    """Newton on ``R(y) = 0`` with a banded solve per step; returns ``(y, stats)``."""
    y = init
    it, step, converged, singular = 0, math.inf, False, False
    while it < max_iter and not converged:
        R, ab = _banded_jacobian(f, y, r, theta, bc, h=h, kinds=kinds)
        if it == 0:
            _check_pointwise(f, y, r, theta, bc, ab, h=h, kinds=kinds)
        if not (abs(R.numpy()).max() < math.inf and abs(ab.numpy()).max() < math.inf):
            break
        try:
            dy = _solve(ab, R)
        except LinAlgError:
            singular = True
            break
        y = y - dy
        host = y.numpy()
        step = float(abs(dy.numpy()).max())
        it += 1
        converged = step <= tol * (1.0 + float(abs(host).max())) and step < math.inf
    R = _residual(f, y, r, theta, bc, h=h, kinds=kinds).numpy()
    residual = float(abs(R).max())
    finite = residual < math.inf
    stats = DeerStats(
        iterations=it, residual=residual if finite else math.inf, step=step, converged=converged and finite
    )
    stats["singular"] = singular
    return y, stats


def _failure_message(stats, n, max_iter, tol):
    why = "the Newton matrix is singular" if stats["singular"] else "the tolerance was not met"
    return (
        f"deer_bvp: Newton's iteration did not converge on the grid of {n} points after "
        f"{stats.iterations} iterations (max_iter={max_iter}): {why}; last step {stats.step:.3g}, "
        f"max residual {stats.residual:.3g}, tol={tol:g}; give a closer init=, raise max_iter, or check "
        "that the problem has a (locally unique) solution"
    )


@primitive(name="deer_bvp")
def _bvp_p(bc, *leaves, f, treedef, r, h, kinds, init, max_iter, tol, on_failure, box):
    theta = pytree.unflatten(treedef, [leaf.detach() for leaf in leaves])
    y, stats = _newton(f, r, theta, bc.detach(), h=h, kinds=kinds, init=init, max_iter=max_iter, tol=tol)
    box["stats"] = stats
    if not stats.converged:
        msg = _failure_message(stats, r.shape[0], max_iter, tol)
        if on_failure == "raise" or stats["singular"]:
            raise DeerConvergenceError(msg)
        warnings.warn(msg, DeerConvergenceWarning, stacklevel=_outside_minidiff())
    return y


@_bvp_p.defjvp
def _bvp_jvp(primals, tangents, *, output, f, treedef, r, h, kinds, **_):
    """``ẏ = −J⁻¹ (∂R/∂θ θ̇ + ∂R/∂bc ḃc)``: one banded solve with the Jacobian at the solution.
    Written with minidiff operations at the (possibly traced) solution and inputs: differentiable."""
    (bc, *leaves), (dbc, *dleaves) = primals, tangents
    theta = pytree.unflatten(treedef, list(leaves))
    _, ab = _banded_jacobian(f, output, r, theta, bc, h=h, kinds=kinds)

    def moved(b, *ls):
        return _residual(f, output, r, pytree.unflatten(treedef, list(ls)), b, h=h, kinds=kinds)

    _, dR = jvp(moved, (bc, *leaves), (dbc, *dleaves))
    return -_solve(ab, dR)


@_bvp_p.defvjp(reads="output bc leaves")
def _bvp_vjp(cotangent, output, bc, *leaves, f, treedef, r, h, kinds, **_):
    """``λ = J⁻ᵀ ȳ`` (one transposed banded solve), then ``(θ̄, b̄c) = −λᵀ ∂R/∂(θ, bc)``."""
    theta = pytree.unflatten(treedef, list(leaves))
    _, ab = _banded_jacobian(f, output, r, theta, bc, h=h, kinds=kinds)
    lam = _solve(_transpose_band(ab), cotangent)
    _, back = vjp(
        lambda b, ls: _residual(f, output, r, pytree.unflatten(treedef, ls), b, h=h, kinds=kinds),
        bc,
        list(leaves),
    )
    gbc, gleaves = back(-lam)
    return (gbc, *gleaves)


# ----------------------------------------------------------------------------- public function
def _boundary(op, side, spec):
    """``(kind, value)`` of one end, checked."""
    if not (isinstance(spec, (tuple, list)) and len(spec) == 2 and spec[0] in BOUNDARY_KINDS):
        raise ValueError(
            f"{op}: {side} must be a pair (kind, value) with kind one of {BOUNDARY_KINDS}, got {spec!r}"
        )
    kind, value = spec
    if isinstance(value, Tensor):
        if value.size != 1:
            raise ShapeError(f"{op}: the {side} boundary value must be a scalar, got shape {value.shape}")
        return kind, reshape(value, ())
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(
            f"{op}: the {side} boundary value must be a finite number or a scalar tensor, got {value!r}"
        )
    return kind, float(value)


def _grid(op, grid, dtype):
    """``(r, h)`` from ``(a, b, n)`` or a uniform 1-D tensor of grid points."""
    if isinstance(grid, Tensor):
        if grid.ndim != 1 or grid.shape[0] < 3:
            raise ShapeError(
                f"{op}: the grid must be a 1-D tensor of at least 3 points, got shape {grid.shape}"
            )
        g = grid.detach().numpy()
        d = g[1:] - g[:-1]
        h = float(d.mean())
        if not (h > 0 and abs(d - h).max() <= 1e-8 * max(1.0, abs(g).max())):
            raise ValueError(
                f"{op}: the grid must be uniform and increasing (steps from {d.min():g} to {d.max():g})"
            )
        return grid.detach().astype(dtype), h
    if not (isinstance(grid, (tuple, list)) and len(grid) == 3):
        raise TypeError(f"{op}: the grid must be (a, b, n) or a 1-D tensor of points, got {grid!r}")
    a, b, n = grid
    check_number(op, "n", n, low=3, integer=True)
    if not (math.isfinite(a) and math.isfinite(b) and b > a):
        raise ValueError(f"{op}: the interval must satisfy a < b (finite), got a={a!r}, b={b!r}")
    return linspace(float(a), float(b), n, dtype=dtype), (float(b) - float(a)) / (n - 1)


def deer_bvp(
    f: Callable[..., Any],
    params: PyTree,
    grid: Any,
    *,
    left: tuple[str, Any],
    right: tuple[str, Any],
    init: Tensor | None = None,
    max_iter: int = 50,
    tol: float | None = None,
    on_failure: str = "warn",
    return_stats: bool = False,
) -> Any:
    """Solve ``y'' = f(y, y', r; params)`` on a uniform grid with a boundary condition at each end.

    Second-order central differences, Newton's method with one tridiagonal solve per step (its
    Jacobian read by forward mode), derivatives by the implicit function theorem (see the module).

    Args:
        f: ``f(y, dy, r, params) -> y''``, pointwise: called with the three of shape ``(n,)``.
        params: a pytree of floating tensors ``θ`` (differentiable, like tensor boundary values).
        grid: ``(a, b, n)`` (n ≥ 3 points from a to b) or a 1-D uniform increasing tensor of points.
        left, right: ``("dirichlet", value)`` (``y = value``) or ``("neumann", value)``
            (``y' = value``) at ``a`` and at ``b``; a value is a number or a scalar tensor.
        init: ``(n,)`` initial guess (zeros when ``None``); Newton finds the solution nearest to it.
        max_iter: Newton iterations at most.
        tol: stop when ``max|Δy| ≤ tol·(1 + max|y|)``; 1e-10 in float64, 1e-5 in float32.
        on_failure: ``"warn"`` (:class:`DeerConvergenceWarning`) or ``"raise"``
            (:class:`DeerConvergenceError`) when ``tol`` is not met; a singular Newton matrix
            always raises.
        return_stats: also return a :class:`DeerStats` (iterations, residual, step, converged).

    Returns:
        ``y`` at the grid points, shape ``(n,)`` (or ``(y, stats)``).  Derivatives in ``params`` and
        the boundary values, of any order and under ``vmap``, cost one banded solve per JVP or VJP
        (never the Newton iterations).

    Example (Bratu, ``y'' + e^y = 0``, ``y(0) = y(1) = 0``, lower branch; max ≈ 0.1405):
        >>> import minidiff as md
        >>> from minidiff.deer import deer_bvp
        >>> bratu = lambda y, dy, r, lam: -lam * md.exp(y)
        >>> y = deer_bvp(bratu, md.tensor(1.0), (0.0, 1.0, 201), left=("dirichlet", 0.0), right=("dirichlet", 0.0))
        >>> round(float(y.max()), 4)
        0.1405
    """
    op = "deer_bvp"
    if on_failure not in ("warn", "raise"):
        raise ValueError(f"{op}: on_failure must be 'warn' or 'raise', got {on_failure!r}")
    check_number(op, "max_iter", max_iter, low=1, integer=True)
    leaves, treedef = pytree.flatten(params)
    for t in leaves:
        if not isinstance(t, Tensor) or t.dtype.kind != "f":
            raise DTypeError(
                f"{op}: params leaves must be floating-point tensors, got {getattr(t, 'dtype', t)!r}"
            )
        if nonfinite(t):
            raise ValueError(f"{op}: a params leaf of shape {t.shape} contains NaN or infinite values")
    (lk, lv), (rk, rv) = _boundary(op, "left", left), _boundary(op, "right", right)
    dtype = (
        leaves[0].dtype if leaves else next((v.dtype for v in (lv, rv) if isinstance(v, Tensor)), "float64")
    )
    r, h = _grid(op, grid, dtype)
    n = r.shape[0]
    bc = stack(
        [
            asarray(lv, dtype=dtype, device=r.device) if not isinstance(lv, Tensor) else lv.astype(dtype),
            asarray(rv, dtype=dtype, device=r.device) if not isinstance(rv, Tensor) else rv.astype(dtype),
        ]
    )
    if init is None:
        init = r * 0.0
    elif not isinstance(init, Tensor) or tuple(init.shape) != (n,):
        raise ShapeError(
            f"{op}: init must have the grid's shape ({n},), got {getattr(init, 'shape', init)!r}"
        )
    tol = (1e-10 if _itemsize(r) >= 8 else 1e-5) if tol is None else float(tol)
    box: dict = {}
    y = _bvp_p(
        bc,
        *leaves,
        f=f,
        treedef=treedef,
        r=r,
        h=h,
        kinds=(lk, rk),
        init=init.detach().astype(dtype),
        max_iter=max_iter,
        tol=tol,
        on_failure=on_failure,
        box=box,
    )
    return (y, box["stats"]) if return_stats else y


def _itemsize(t: Tensor) -> int:
    return int(t.dtype.itemsize)
