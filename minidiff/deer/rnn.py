"""DEER for recurrences ``y_i = f(y_{i-1}, x_i; θ)``: Newton's method over the whole trajectory.

Each Newton iteration (section 2 of the method specifications):

1. shift the current guess, ``p_i = y_{i-1}`` (``p_0 = y0``);
2. at every step at once, ``J_i = ∂f/∂y (p_i, x_i)`` by minidiff's forward mode in vector mode
   (n tangent directions in one pass) and ``b_i = f(p_i, x_i) − J_i p_i``;
3. solve the linear recurrence ``y_i = J_i y_{i-1} + b_i`` with :func:`~minidiff.deer.affine_scan`;
4. stop when ``|Δy| ≤ atol + rtol·|y|`` everywhere *and* the recurrence's own residual
   ``|y_i − f(y_{i-1}, x_i)|`` passes the same test (a step-size test alone can accept a wrong
   trajectory).

The iterate is guarded (NaN → 0, magnitudes clipped to 1e8).  :func:`deer_rnn` is a minidiff
primitive: its derivatives never go through the iterations.  At the converged trajectory the VJP
runs the transposed recurrence ``λ_i = ȳ_i + J_{i+1}ᵀ λ_{i+1}`` backwards in time (one scan) and
pulls ``λ`` back through ``f`` at all steps at once (one reverse pass) for the parameter, input
and initial-state cotangents; the JVP drives the same forward recurrence with
``∂f/∂θ·θ̇ + ∂f/∂x·ẋ``.  Both rules are written with minidiff operations (and the differentiable
scan), so second-order modes (HVPs) work through them.

The cell ``f(y, x, params)`` must broadcast over leading axes: it is called once on all time steps
and batch entries, ``y`` of shape ``(*batch, T, n)`` and ``x`` of shape ``(*batch, T, m)``.  Cells
written with ``@``, elementwise operations and slicing of the last axis do (see
:mod:`minidiff.deer.cells`).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable
from typing import Any

from ..backend import small_products
from ..errors import DTypeError, MinidiffError, ShapeError, check_number
from ..primitives.custom import primitive
from ..primitives.shape import broadcast_to, concatenate, expand_dims, moveaxis, stack, sum_to
from ..tensor import pytree
from ..tensor.core import DTypeLike, Tensor, Tracer
from ..tensor.kernel import array_kernel, array_namespace
from ..tensor.pytree import PyTree
from ..transforms.core import jvp, vjp
from .scan import _mv, _transposed_scan, affine_scan

__all__ = [
    "deer_rnn",
    "sequential_rnn",
    "DeerStats",
    "DeerConvergenceWarning",
    "DeerConvergenceError",
    "default_tolerances",
]

#: Clip for the iterate (an unstable early iterate can overflow; the fixed point is unaffected).
GUARD = 1e8


class DeerConvergenceWarning(RuntimeWarning):
    """Newton's iteration stopped at ``max_iter`` (or diverged) without meeting its tolerances."""


class DeerConvergenceError(MinidiffError, RuntimeError):
    """Raised instead of the warning with ``on_failure="raise"``."""


class DeerStats(dict):
    """What one DEER solve did: ``iterations``, ``residual`` (max |y_i − f(y_{i-1}, x_i)|),
    ``step`` (max |Δy| of the last iteration), ``converged`` and the ``tolerances`` used."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def default_tolerances(dtype: DTypeLike) -> tuple[float, float]:
    """``(atol, rtol)`` of the spec: (1e-4, 1e-3) in float32 and below, (1e-6, 1e-4) in float64.

    Example:
        >>> import minidiff as md
        >>> from minidiff.deer import default_tolerances
        >>> default_tolerances(md.float64)
        (1e-06, 0.0001)
    """
    return (1e-6, 1e-4) if dtype.itemsize >= 8 else (1e-4, 1e-3)


# ----------------------------------------------------------------------------- building blocks
def _shift(ys, y0):
    """``(y0, y_0, …, y_{T-2})``: where every step starts."""
    first = expand_dims(broadcast_to(y0, ys.shape[:-2] + ys.shape[-1:]), -2)
    return concatenate([first, ys[..., :-1, :]], axis=-2)


def _jacobian(f, P, xs, params):
    """``f(P, xs)`` and ``∂f/∂y`` at every (batch, time) position: one vector-mode forward pass with
    n tangent directions.  Returns ``F (..., n)`` and ``J (..., n, n)``."""
    F, JT = jvp(lambda p: f(p, xs, params), (P,), (_tangent_basis(P.detach()),), vectorized=True)
    return F, moveaxis(JT, 0, -1)  # JT[k, ..., i] = ∂f_i/∂y_k


@array_kernel
def _tangent_basis(ns, P):
    """The n unit tangents ``e_k`` at every position of ``P``: shape ``(n, *P.shape)``.

    Materialized, not a zero-stride broadcast: NumPy's matmul falls back to a slow non-BLAS loop on
    zero strides (measured 10-50x slower on the cells' products)."""
    n = P.shape[-1]
    basis = ns.broadcast_to(
        ns.eye(n, dtype=P.dtype).reshape((n,) + (1,) * (P.ndim - 1) + (n,)), (n,) + P.shape
    )
    return ns.ascontiguousarray(basis)


#: The Newton loop computes the Jacobians a block of time steps at a time, so that the n tangent
#: copies of the cell's intermediate values stay in cache rather than streaming through memory
#: (bytes of one block's Jacobians; see docs/deer.md for the measurement).
JACOBIAN_BLOCK_BYTES = 1 << 20


def _jacobian_in_blocks(f, P, xs, params):
    """:func:`_jacobian` in blocks of time steps (same result, less memory traffic) when every input
    is a concrete value; traced inputs (a rule differentiated again) take the one-pass route."""
    if any(type(t) is not Tensor for t in [P, xs, *pytree.flatten(params)[0]]):
        return _jacobian(f, P, xs, params)
    T, n = P.shape[-2], P.shape[-1]
    batch = math.prod(P.shape[:-2])
    block = max(1, JACOBIAN_BLOCK_BYTES // max(1, batch * n * n * P.dtype.itemsize))
    if block >= T:
        return _jacobian(f, P, xs, params)
    F, J = _empty_steps(P)
    for start in range(0, T, block):
        steps = slice(start, start + block)
        Fb, Jb = _jacobian(f, P[..., steps, :], xs[..., steps, :], params)
        _check_output(Fb, P[..., steps, :])
        _put_steps(F, J, Fb, Jb, steps=steps)
    return F, J


@array_kernel
def _empty_steps(ns, P):
    """Fresh buffers for ``F`` (shaped like ``P``) and ``J`` (``P.shape + (n,)``), filled block by block."""
    return ns.empty(P.shape, dtype=P.dtype), ns.empty(P.shape + P.shape[-1:], dtype=P.dtype)


@array_kernel
def _put_steps(ns, F, J, Fb, Jb, *, steps):
    """Write one block of time steps into the buffers of :func:`_empty_steps` (which no one else has
    seen yet: filling them is how they are built, not a change of a value in use)."""
    F[..., steps, :] = Fb
    J[..., steps, :, :] = Jb


def _check_output(F, like):
    if not isinstance(F, Tensor) or F.shape != like.shape:
        raise ShapeError(
            f"deer_rnn: the cell returned {getattr(F, 'shape', type(F).__name__)} for a state of shape "
            f"{like.shape}; f(y, x, params) must return the next state, shaped like y (and broadcast "
            "over leading axes)"
        )
    if F.dtype != like.dtype:
        raise DTypeError(f"deer_rnn: the cell returned dtype {F.dtype} for a state of dtype {like.dtype}")


def _max_abs(ns, a) -> float:
    return float(ns.max(ns.abs(a))) if a.size else 0.0


def _within(ns, diff, ref, atol, rtol) -> bool:
    return bool(ns.all(ns.abs(diff) <= atol + rtol * ns.abs(ref)))


def _outside_minidiff() -> int:
    """The ``stacklevel`` of the first caller outside minidiff (through any nesting of transforms)."""
    import os
    import sys
    from types import FrameType

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frame: FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(root + os.sep):
        frame, level = frame.f_back, level + 1
    return level


def _quiet(ns):
    """Silence NumPy's overflow/invalid warnings (CuPy never warns)."""
    errstate = getattr(ns, "errstate", None)
    return errstate(over="ignore", invalid="ignore") if errstate is not None else contextlib.nullcontext()


# ----------------------------------------------------------------------------- the Newton solve
def _newton(f, y0, xs, params, *, max_iter, atol, rtol, init, method):
    """The DEER iteration on concrete tensors, its products of n×n Jacobians under the backend's
    thread policy for small products; returns ``(ys, stats)``."""
    with small_products(y0.shape[-1]):
        return _newton_iterations(
            f, y0, xs, params, max_iter=max_iter, atol=atol, rtol=rtol, init=init, method=method
        )


def _newton_iterations(f, y0, xs, params, *, max_iter, atol, rtol, init, method):
    shape = xs.shape[:-1] + y0.shape[-1:]
    Y = (broadcast_to(expand_dims(y0, -2), shape) if init is None else init).copy()
    step_ok, it, step = False, 0, math.inf
    if init is not None:  # a warm start may already be the solution: check before any Newton step
        F = f(_shift(Y, y0), xs, params)
        _check_output(F, Y)
        step_ok = _residual_test(F, Y, atol=atol, rtol=rtol)[1]
        step = 0.0 if step_ok else math.inf
    while not step_ok and it < max_iter:
        P = _shift(Y, y0)
        F, J = _jacobian_in_blocks(f, P, xs, params)
        _check_output(F, P)
        b = _offsets(F, J, P)
        with _quiet(array_namespace(J)):  # an unstable early iterate may overflow: guarded below
            new = affine_scan(J, b, y0, method=method)
        Y, step, step_ok = _guarded_step(new, Y, atol=atol, rtol=rtol)
        it += 1
    # confirm on the residual of the recurrence itself
    F = f(_shift(Y, y0), xs, params)
    _check_output(F, Y)
    residual, within = _residual_test(F, Y, atol=atol, rtol=rtol)
    stats = DeerStats(
        iterations=it,
        residual=residual,
        step=step,
        converged=bool(step_ok and within),
        tolerances=(atol, rtol),
    )
    return Y, stats


@array_kernel
def _offsets(ns, F, J, P):
    """``b_i = f(p_i) − J_i p_i``: the offsets of the linearized recurrence."""
    return F - _mv(ns, J, P, False)


@array_kernel
def _guarded_step(ns, new, Y, *, atol, rtol):
    """``(guarded new iterate, max |Δy|, whether Δy passes the tolerances)``: NaN → 0, clipped to ±GUARD."""
    new = ns.clip(ns.nan_to_num(new, nan=0.0, posinf=GUARD, neginf=-GUARD), -GUARD, GUARD)
    diff = new - Y
    return new, _max_abs(ns, diff), _within(ns, diff, new, atol, rtol)


@array_kernel
def _residual_test(ns, F, Y, *, atol, rtol):
    """``(max |f(y_{i-1}) − y_i| (inf if not finite), whether it passes the tolerances)``."""
    res = F - Y
    residual = _max_abs(ns, res) if ns.all(ns.isfinite(res)) else math.inf
    return residual, _within(ns, res, Y, atol, rtol)


def nonfinite(x) -> bool:
    """Whether ``x`` holds a NaN or an infinity (any example of a vmapped batch): read on the plain
    value under every transform's tracer, since this checks inputs before anything runs."""
    while isinstance(x, Tracer):
        x = x.primal
    return not _all_finite(x)


@array_kernel
def _all_finite(ns, t) -> bool:
    return bool(ns.all(ns.isfinite(t)))


@primitive(name="deer_rnn")
def _deer_p(y0, xs, *leaves, f, treedef, max_iter, atol, rtol, init, on_failure, method, box):
    y0, xs = y0.detach(), xs.detach()
    params = pytree.unflatten(treedef, [leaf.detach() for leaf in leaves])
    ys, stats = _newton(f, y0, xs, params, max_iter=max_iter, atol=atol, rtol=rtol, init=init, method=method)
    box["stats"] = stats
    if not stats.converged:
        msg = (
            f"deer_rnn: Newton's iteration did not converge for states of shape {tuple(ys.shape)} after "
            f"{stats.iterations} iterations (max_iter={max_iter}): last step {stats.step:.3g}, residual "
            f"max|y_i - f(y_(i-1), x_i)| = {stats.residual:.3g}, tolerances atol={atol:g}, rtol={rtol:g}; "
            "the recurrence may be chaotic or unstable; raise max_iter, warm-start with init=, or use "
            "sequential_rnn"
        )
        if on_failure == "raise":
            raise DeerConvergenceError(msg)
        warnings.warn(msg, DeerConvergenceWarning, stacklevel=_outside_minidiff())
    return ys


@_deer_p.defjvp
def _deer_jvp(primals, tangents, *, output, **params):
    (y0, xs, *leaves), (dy0, dxs, *dleaves) = primals, tangents
    f, treedef = params["f"], params["treedef"]
    P = _shift(output, y0)  # the converged trajectory, as the forward pass found it
    theta = pytree.unflatten(treedef, leaves)
    dtheta = pytree.unflatten(treedef, list(dleaves))
    with small_products(y0.shape[-1]):
        _, J = _jacobian_in_blocks(f, P, xs, theta)
        _, drive = jvp(lambda x, th: f(P, x, th), (xs, theta), (dxs, dtheta))
        return affine_scan(J, drive, broadcast_to(dy0, y0.shape), method=params["method"])


@_deer_p.defvjp(reads="output y0 xs leaves")
def _deer_vjp(cotangent, output, y0, xs, *leaves, **params):
    f, treedef = params["f"], params["treedef"]
    P = _shift(output, y0)
    theta = pytree.unflatten(treedef, list(leaves))
    with small_products(y0.shape[-1]):
        _, J = _jacobian_in_blocks(f, P, xs, theta)
        lam = _transposed_scan(J, cotangent, False, params["method"])
        _, back = vjp(lambda p, x, th: f(p, x, th), P, xs, theta)
        gP, gx, gtheta = back(lam)
    gy0 = gP[..., 0, :]
    # y0, xs and the parameters were broadcast against the batch: sum each cotangent back to its shape
    cts = (gy0, gx, *pytree.flatten(gtheta)[0])
    return tuple(sum_to(c, x.shape) for c, x in zip(cts, (y0, xs, *leaves)))


# ----------------------------------------------------------------------------- public functions
def _validate(op, y0, xs, params):
    for name, t in (("y0", y0), ("xs", xs)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: {name} must be a minidiff Tensor, got {type(t).__name__}")
    if xs.ndim < 2:
        raise ShapeError(f"{op}: xs must have shape (*batch, T, m), got {xs.shape}")
    if y0.ndim < 1:
        raise ShapeError(f"{op}: y0 must have shape (*batch, n), got {y0.shape}")
    batch = xs.shape[:-2]
    yb = y0.shape[:-1]
    if len(yb) > len(batch) or any(a not in (1, b) for a, b in zip(yb[::-1], batch[::-1])):
        raise ShapeError(
            f"{op}: y0 of shape {y0.shape} does not match the batch axes {batch} of xs of shape {xs.shape}"
        )
    leaves, treedef = pytree.flatten(params)
    for t in [y0, xs] + leaves:
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: params leaves must be minidiff Tensors, got {type(t).__name__}")
        if t.dtype.kind != "f":
            raise DTypeError(f"{op}: expected floating-point tensors, got {t.dtype} of shape {t.shape}")
    if y0.dtype != xs.dtype:
        raise DTypeError(f"{op}: y0 has dtype {y0.dtype} but xs has {xs.dtype}")
    return leaves, treedef


def deer_rnn(
    f: Callable[..., Any],
    y0: Tensor,
    xs: Tensor,
    params: PyTree,
    *,
    max_iter: int = 100,
    atol: float | None = None,
    rtol: float | None = None,
    init: Tensor | None = None,
    on_failure: str = "warn",
    method: str = "auto",
    return_stats: bool = False,
) -> Any:
    """Evaluate ``y_i = f(y_{i-1}, x_i; params)`` for all i at once by DEER (Newton + parallel scan).

    Args:
        f: the cell ``f(y, x, params) -> next y``; it must broadcast over leading axes (it is called
            on all steps at once with ``y (*batch, T, n)``, ``x (*batch, T, m)``).
        y0: ``(*batch, n)`` initial state (batch axes may be missing: broadcast to those of ``xs``).
        xs: ``(*batch, T, m)`` inputs.
        params: a pytree of floating tensors (differentiable, like ``y0`` and ``xs``).
        max_iter: Newton iterations at most (the spec's default, 100).
        atol, rtol: the convergence test ``|Δy| ≤ atol + rtol·|y|`` and the same on the residual
            ``|y_i − f(y_{i-1}, x_i)|``; defaults by dtype, see :func:`default_tolerances`.
        init: ``(*batch, T, n)`` initial guess (a warm start, e.g. the previous training step's
            solution); ``y0`` broadcast over time when ``None``.
        on_failure: ``"warn"`` (a :class:`DeerConvergenceWarning`) or ``"raise"``
            (:class:`DeerConvergenceError`) when the tolerances are not met.
        method: the scan, see :func:`~minidiff.deer.affine_scan`.
        return_stats: also return a :class:`DeerStats`.

    Returns:
        ``ys`` of shape ``(*batch, T, n)`` (the states ``y_0 … y_{T-1}`` after each input), or
        ``(ys, stats)``.  Differentiable in ``y0``, ``xs`` and ``params`` by grad, jvp, vjp and the
        HVP modes, through DEER's own rules.

    Example:
        >>> import minidiff as md
        >>> from minidiff.deer import deer_rnn, sequential_rnn
        >>> f = lambda y, x, p: md.tanh(y * p["w"] + x)
        >>> xs, y0, p = md.linspace(-1.0, 1.0, 6).reshape(6, 1), md.zeros(1), {"w": md.tensor([0.5])}
        >>> ys, stats = deer_rnn(f, y0, xs, p, return_stats=True)
        >>> stats.converged, bool(md.max(md.abs(ys - sequential_rnn(f, y0, xs, p))).item() < 1e-8)
        (True, True)
    """
    op = "deer_rnn"
    leaves, treedef = _validate(op, y0, xs, params)
    if on_failure not in ("warn", "raise"):
        raise ValueError(f"{op}: on_failure must be 'warn' or 'raise', got {on_failure!r}")
    check_number(op, "max_iter", max_iter, low=1, integer=True)
    for name, t in [("y0", y0), ("xs", xs)] + [(f"params leaf {i}", t) for i, t in enumerate(leaves)]:
        if nonfinite(t):
            raise ValueError(f"{op}: {name} of shape {t.shape} contains NaN or infinite values")
    shape = xs.shape[:-1] + y0.shape[-1:]
    if init is not None:
        if not isinstance(init, Tensor) or tuple(init.shape) != tuple(shape):
            raise ShapeError(
                f"{op}: init must have the trajectory's shape {shape}, got {getattr(init, 'shape', init)}"
            )
        init = init.detach().astype(xs.dtype)
    d_atol, d_rtol = default_tolerances(xs.dtype)
    atol = d_atol if atol is None else float(atol)
    rtol = d_rtol if rtol is None else float(rtol)
    if xs.shape[-2] == 0:
        raise ShapeError(f"{op}: xs has no time steps (shape {xs.shape})")
    box: dict = {}
    ys = _deer_p(
        y0,
        xs,
        *leaves,
        f=f,
        treedef=treedef,
        max_iter=max_iter,
        atol=atol,
        rtol=rtol,
        init=init,
        on_failure=on_failure,
        method=method,
        box=box,
    )
    return (ys, box["stats"]) if return_stats else ys


def sequential_rnn(f: Callable[..., Any], y0: Tensor, xs: Tensor, params: PyTree) -> Tensor:
    """The reference: ``y_i = f(y_{i-1}, x_i; params)`` by a Python loop of minidiff operations
    (differentiable through the tape or forward mode like any minidiff code).

    Returns ``(*batch, T, n)``, the same layout as :func:`deer_rnn`.

    Example:
        >>> import minidiff as md
        >>> from minidiff.deer import sequential_rnn
        >>> sequential_rnn(lambda y, x, p: p * y + x, md.zeros(1), md.ones((3, 1)), md.tensor(2.0)).tolist()
        [[1.0], [3.0], [7.0]]
    """
    _validate("sequential_rnn", y0, xs, params)
    y = broadcast_to(y0, xs.shape[:-2] + y0.shape[-1:])
    out = []
    for i in range(xs.shape[-2]):
        y = f(y, xs[..., i, :], params)
        out.append(y)
    return stack(out, axis=-2)
