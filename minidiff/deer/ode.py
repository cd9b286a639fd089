"""DEER for ordinary differential equations: a whole trajectory of ``dy/dt = f(y, t, θ)`` at once.

The unknown is the trajectory ``Y = (y_0 … y_T)`` on the time grid ``ts``.  One DEER iteration
linearizes ``f`` around the current guess at every grid point (all points at once, the Jacobians
by vector-mode forward AD), which turns the ODE into a *linear* one, ``dy/dt + G(t) y = h(t)`` with
``G = −∂f/∂y`` and ``h = f + G y``.  On each interval ``[t_i, t_{i+1}]`` the coefficients are taken
constant at the mean of their end values; with ``M = Ḡ Δt`` and ``q = h̄ Δt`` the exact step of
that linear ODE is

    y_{i+1} = e^{−M} y_i + φ(M) q,        φ(M) = M⁻¹ (I − e^{−M}),

an affine recurrence that one parallel scan (:func:`minidiff.deer.affine_scan`) solves for every
``i`` together.  ``expm="series"`` uses the reference code's truncated series
``φ ≈ I − M/2 + M²/6 − M³/24`` and ``e^{−M} ≈ I − φ M``; ``expm="exact"`` evaluates both from one
matrix exponential of the block matrix ``[[−M, I], [0, 0]]`` (whose exponential is
``[[e^{−M}, φ(M)], [0, I]]``), computed by this module's own scaling-and-squaring Taylor
exponential written with minidiff operations (so it is differentiable; it agrees with
``scipy.linalg.expm`` to float64 rounding).

The iteration's fixed point is the solution of a discretization (a one-step scheme, implicit in
``y_{i+1}``): ``y_{i+1} = Φ_i(y_i, y_{i+1}; θ)`` with ``Φ_i`` the right-hand side above evaluated
with ``f`` linearized at ``y_i`` and at ``y_{i+1}``.  :func:`sequential_odeint` solves the same
scheme one step at a time.

Gradients are the **exact derivatives of that discretized scheme** (the implicit-function theorem
applied to the fixed-point equation), never a differentiation through the iterations: with
``P_i = ∂Φ_i/∂y_i`` and ``Q_i = ∂Φ_i/∂y_{i+1}`` (vector-mode forward AD, 2n directions) the tangent
obeys the linear recurrence ``ẏ_{i+1} = (I − Q_i)⁻¹ (P_i ẏ_i + ∂Φ_i/∂θ·θ̇)`` — one scan — and the
cotangents come from the transposed recurrence run backwards in time — one scan — followed by one
reverse pass through ``Φ`` for ``θ``.  These agree with differentiating :func:`sequential_odeint`
through the tape (up to how tightly both were converged).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

from ..errors import DTypeError, ShapeError, check_number
from ..primitives import ops
from ..primitives.creation import asarray, eye, zeros
from ..primitives.custom import primitive
from ..primitives.linalg import expm as _expm  # the public md.linalg.expm (scaling and squaring)
from ..primitives.linalg import solve
from ..primitives.ops import (
    broadcast_to,
    clip,
    concatenate,
    flip,
    isfinite,
    isnan,
    matmul,
    moveaxis,
    reshape,
    stack,
    swapaxes,
    where,
)
from ..tensor import pytree
from ..tensor.core import Tensor, Tracer
from ..tensor.kernel import array_namespace
from ..tensor.pytree import PyTree
from ..transforms.core import jvp, vjp, vmap
from .rnn import DeerConvergenceError, DeerConvergenceWarning, DeerStats, default_tolerances, nonfinite
from .scan import affine_scan

__all__ = ["deer_odeint", "sequential_odeint", "EXPM_METHODS"]

#: The ways to evaluate ``e^{−M}`` and ``φ(M)`` on each interval.
EXPM_METHODS = ("series", "exact")
_ON_FAILURE = ("warn", "raise")
_GUARD = 1e8  # iterates are clipped to this magnitude (the fixed point is unaffected)


# ----------------------------------------------------------------------------- the linearization
def _matvec(A, y):
    return matmul(A, y[..., None])[..., 0]


def _fields(f, Y, t, params):
    """``f`` and its Jacobian at every row of ``Y`` ``(N, n)`` with times ``t`` ``(N,)``.

    One vmapped evaluation of ``f`` carries ``n`` tangent directions ``e_k`` (the same for every
    row): the k-th output tangent is column k of every row's Jacobian.
    """
    N, n = Y.shape
    fv = vmap(lambda y, s: f(y, s, params))
    basis = broadcast_to(reshape(eye(n, dtype=Y.dtype, device=Y.device), (n, 1, n)), (n, N, n))
    F, dF = jvp(lambda Yv: fv(Yv, t), (Y,), (basis,), vectorized=True)  # dF[k, i] = J_i e_k
    return F, moveaxis(dF, 0, -1)


def _exp_phi(M, method: str):
    """``(e^{−M}, φ(M))`` for a stack of matrices ``M``."""
    n = M.shape[-1]
    ident = eye(n, dtype=M.dtype, device=M.device)
    if method == "series":
        M2 = matmul(M, M)
        phi = ident - M / 2 + M2 / 6 - matmul(M2, M) / 24
        return ident - matmul(phi, M), phi
    lead = M.shape[:-2]
    top = concatenate([-M, broadcast_to(ident, lead + (n, n))], axis=-1)
    X = concatenate([top, zeros(lead + (n, 2 * n), dtype=M.dtype, device=M.device)], axis=-2)
    E = _expm(X)
    return E[..., :n, :n], E[..., :n, n:]


def _affine_maps(Fl, Jl, Yl, Fr, Jr, Yr, dt, method):
    """The affine map ``y ↦ A y + b`` of each interval, from ``f`` and ``∂f/∂y`` at its two ends.

    ``F*``, ``Y*``: ``(..., n)``; ``J*``: ``(..., n, n)``; ``dt`` broadcasts against the leading axes.
    """
    half = reshape(dt, dt.shape + (1,)) / 2
    M = -(Jl + Jr) * half[..., None]  # Ḡ Δt with G = −∂f/∂y
    q = (Fl - _matvec(Jl, Yl) + Fr - _matvec(Jr, Yr)) * half  # h̄ Δt with h = f + G y
    E, phi = _exp_phi(M, method)
    return E, _matvec(phi, q)


def _step_fn(f, treedef, tl, tr, dt, method):
    """``Φ(Yl, Yr, leaves)``: the scheme's right-hand side on every interval, ``(B, T, n)``.

    Written with minidiff operations only, so the gradient rules differentiate it (in ``Yl``, ``Yr``
    and the parameters) by forward and reverse mode.
    """

    def phi(Yl, Yr, leaves):
        params = pytree.unflatten(treedef, list(leaves))
        B, T, n = Yl.shape
        Fl, Jl = _fields(f, reshape(Yl, (B * T, n)), tl, params)
        Fr, Jr = _fields(f, reshape(Yr, (B * T, n)), tr, params)
        shape = (B, T, n)
        A, b = _affine_maps(
            reshape(Fl, shape),
            reshape(Jl, shape + (n,)),
            Yl,
            reshape(Fr, shape),
            reshape(Jr, shape + (n,)),
            Yr,
            dt,
            method,
        )
        return _matvec(A, Yl) + b

    return phi


# ----------------------------------------------------------------------------- the solver
def _solve(f, y0, leaves, ts, treedef, opts, init):
    """The DEER iterations on concrete tensors: ``(Y (B, T+1, n), DeerStats)``.

    A far-off iterate may overflow on the way: the backend's floating-point notices are silenced
    here, because the guard clips such iterates and the convergence test judges the result.
    """
    errstate = getattr(array_namespace(y0), "errstate", None)
    if errstate is None:
        return _iterate(f, y0, leaves, ts, treedef, opts, init)
    with errstate(over="ignore", invalid="ignore", divide="ignore"):
        return _iterate(f, y0, leaves, ts, treedef, opts, init)


def _iterate(f, y0, leaves, ts, treedef, opts, init):
    params = pytree.unflatten(treedef, list(leaves))
    B, n = y0.shape
    T1 = ts.shape[0]
    dt = ts[1:] - ts[:-1]
    tg = reshape(broadcast_to(ts, (B, T1)), (B * T1,))
    atol, rtol = opts["atol"], opts["rtol"]
    head = y0[:, None, :]
    Y = broadcast_to(head, (B, T1, n)) if init is None else concatenate([head, init[:, 1:]], axis=1)
    step_ok, step, iters = False, math.inf, 0
    while True:
        F, J = _fields(f, reshape(Y, (B * T1, n)), tg, params)
        if isinstance(F, Tracer):
            raise TypeError(
                "deer_odeint: f returned a traced value for untraced inputs: it closes over a tensor "
                "being differentiated; pass every such tensor through params instead"
            )
        F, J = reshape(F, (B, T1, n)), reshape(J, (B, T1, n, n))
        A, b = _affine_maps(F[:, :-1], J[:, :-1], Y[:, :-1], F[:, 1:], J[:, 1:], Y[:, 1:], dt, opts["expm"])
        tail = Y[:, 1:]
        resid = ops.abs(tail - (_matvec(A, Y[:, :-1]) + b))
        res_ok = bool(ops.all(resid <= atol + rtol * ops.abs(tail)).item())
        residual = float(ops.max(resid).detach().item())
        if (step_ok and res_ok) or iters >= opts["max_iter"]:
            stats = DeerStats(
                iterations=iters,
                residual=residual,
                step=step,
                converged=step_ok and res_ok,
                tolerances=(atol, rtol),
            )
            return Y, stats
        new = affine_scan(A, b, y0, method=opts["method"])
        new = clip(where(isnan(new), 0.0, new), -_GUARD, _GUARD)  # the NaN/overflow guard
        change = ops.abs(new - tail)
        step = float(ops.max(change).detach().item())
        step_ok = bool(ops.all(change <= atol + rtol * ops.abs(new)).item())
        Y = concatenate([head, new], axis=1)
        iters += 1


def _report(stats: DeerStats, opts) -> None:
    if stats.converged:
        return
    msg = (
        f"deer_odeint: no convergence after {stats.iterations} iterations (max_iter="
        f"{opts['max_iter']}): last step {stats.step:.3g}, scheme residual {stats.residual:.3g}, "
        f"atol={opts['atol']:g}, rtol={opts['rtol']:g}; the returned trajectory is not the solution "
        "(refine the time grid, raise max_iter, or start from a better init)"
    )
    if opts["on_failure"] == "raise":
        raise DeerConvergenceError(msg)
    warnings.warn(msg, DeerConvergenceWarning, stacklevel=4)


@primitive(name="deer_odeint")
def _deer_ode_p(y0, *leaves, f, ts, treedef, opts, box, init=None):
    """The primitive: ``y0`` ``(B, n)`` and the parameter leaves in, ``(B, T+1, n)`` out."""
    Y, stats = _solve(f, y0, leaves, ts, treedef, opts, init)
    _report(stats, opts)
    box["stats"] = stats
    return Y


def _tangent_system(y0, leaves, Y, *, f, ts, treedef, opts):
    """``(Ap, D, Φ)``: the tangent recurrence ``ẏ_{i+1} = Ap_i ẏ_i + D_i⁻¹ ∂Φ_i/∂θ·θ̇`` at ``Y``."""
    B, T1, n = Y.shape
    T = T1 - 1
    tl = reshape(broadcast_to(ts[:-1], (B, T)), (B * T,))
    tr = reshape(broadcast_to(ts[1:], (B, T)), (B * T,))
    phi = _step_fn(f, treedef, tl, tr, ts[1:] - ts[:-1], opts["expm"])
    Yl, Yr = Y[:, :-1], Y[:, 1:]
    ident = eye(n, dtype=Y.dtype, device=Y.device)
    none = zeros((n, B, T, n), dtype=Y.dtype, device=Y.device)
    basis = broadcast_to(reshape(ident, (n, 1, 1, n)), (n, B, T, n))
    _, d = jvp(
        lambda a, c: phi(a, c, leaves),
        (Yl, Yr),
        (concatenate([basis, none]), concatenate([none, basis])),
        vectorized=True,
    )  # d[k] = P e_k (k < n), Q e_{k-n} (k ≥ n)
    P, Q = moveaxis(d[:n], 0, -1), moveaxis(d[n:], 0, -1)
    D = ident - Q
    return solve(D, P), D, phi, Yl, Yr


def _ode_jvp(primals, tangents, *, output, f, ts, treedef, opts, box, init=None):
    y0, *leaves = primals
    y0_dot, *leaf_dots = tangents
    Y = output  # the converged trajectory, as the forward pass found it
    Ap, D, phi, Yl, Yr = _tangent_system(y0, leaves, Y, f=f, ts=ts, treedef=treedef, opts=opts)
    if leaves:
        _, c = jvp(lambda *ls: phi(Yl, Yr, ls), tuple(leaves), tuple(leaf_dots))
        drive = solve(D, c[..., None])[..., 0]
    else:
        drive = zeros(Yr.shape, dtype=Y.dtype, device=Y.device)
    tail = affine_scan(Ap, drive, y0_dot, method=opts["method"])
    return concatenate([y0_dot[:, None, :], tail], axis=1)


def _ode_vjp(cotangent, output, y0, *leaves, f, ts, treedef, opts, box, init=None):
    G = cotangent
    Ap, D, phi, Yl, Yr = _tangent_system(y0, leaves, output, f=f, ts=ts, treedef=treedef, opts=opts)
    # λ_T = G_T, λ_i = G_i + Ap_iᵀ λ_{i+1}: the transposed recurrence, run backwards in time
    rev = affine_scan(
        flip(swapaxes(Ap, -1, -2), axis=1), flip(G[:, :-1], axis=1), G[:, -1], method=opts["method"]
    )
    lam = flip(rev, axis=1)  # λ_0 … λ_{T-1}
    lam_next = concatenate([lam[:, 1:], G[:, -1:]], axis=1)  # λ_1 … λ_T
    if not leaves:
        return (lam[:, 0],)
    mu = solve(swapaxes(D, -1, -2), lam_next[..., None])[..., 0]  # D_i⁻ᵀ λ_{i+1}
    _, back = vjp(lambda *ls: phi(Yl, Yr, ls), *leaves)
    return (lam[:, 0], *back(mu))


_deer_ode_p.defjvp(_ode_jvp)
_deer_ode_p.defvjp(_ode_vjp, reads="output y0 leaves")


# ----------------------------------------------------------------------------- checks
def _validate(op, f, y0, ts, params, expm, on_failure, max_iter, atol, rtol, init):
    """Check every argument before anything runs; returns ``(y0, ts, leaves, treedef, init)``."""
    _check_options(op, f, expm, on_failure, max_iter, atol, rtol)
    y0 = asarray(y0)
    if y0.dtype.kind != "f":
        raise DTypeError(f"{op}: y0 must be floating point, got {y0.dtype} of shape {y0.shape}")
    if y0.ndim < 1 or y0.shape[-1] == 0:
        raise ShapeError(f"{op}: y0 must have shape (*batch, n) with n ≥ 1, got {y0.shape}")
    ts = _check_grid(op, ts, y0.dtype)
    leaves, treedef = pytree.flatten(params)
    leaves = [asarray(p) for p in leaves]
    for name, x in [("y0", y0)] + [(f"params leaf {i}", p) for i, p in enumerate(leaves)]:
        if x.dtype.kind == "f" and bool(nonfinite(x)):
            raise ValueError(f"{op}: {name} of shape {x.shape} holds NaN or infinite values")
    if init is not None:
        init = _check_init(op, asarray(init), y0, ts)
    _check_f(op, f, y0, ts, leaves, treedef)
    return y0, ts, leaves, treedef, init


def _check_options(op, f, expm, on_failure, max_iter, atol, rtol) -> None:
    if not callable(f):
        raise TypeError(f"{op}: f must be callable as f(y, t, params), got {type(f).__name__}")
    if expm not in EXPM_METHODS:
        raise ValueError(f"{op}: unknown expm {expm!r}; expected one of {EXPM_METHODS}")
    if on_failure not in _ON_FAILURE:
        raise ValueError(f"{op}: unknown on_failure {on_failure!r}; expected one of {_ON_FAILURE}")
    check_number(op, "max_iter", max_iter, low=1, integer=True)
    for name, tol in (("atol", atol), ("rtol", rtol)):
        check_number(op, name, tol, low=0, none_ok=True)


def _check_grid(op, ts, dtype) -> Tensor:
    """``ts`` as a finite, strictly monotone 1-D grid of ``dtype``."""
    if isinstance(ts, Tracer):
        raise TypeError(f"{op}: derivatives with respect to the time grid ts are not implemented")
    ts = asarray(ts)
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ShapeError(f"{op}: ts must be a 1-D grid of at least 2 time points, got shape {ts.shape}")
    if ts.dtype.kind not in "fiu":
        raise DTypeError(f"{op}: ts must be numeric, got {ts.dtype}")
    ts = ts.astype(dtype)
    if not bool(ops.all(isfinite(ts)).item()):
        raise ValueError(f"{op}: ts holds NaN or infinite values: {ts.detach().numpy()}")
    d = ts[1:] - ts[:-1]
    if not (bool(ops.all(d > 0).item()) or bool(ops.all(d < 0).item())):
        raise ValueError(
            f"{op}: ts must be strictly monotone (all steps of one sign, none zero), got {ts.detach().numpy()}"
        )
    return ts


def _check_init(op, init, y0, ts) -> Tensor:
    want = y0.shape[:-1] + (ts.shape[0], y0.shape[-1])
    if init.shape != want:
        raise ShapeError(f"{op}: init must have shape (*batch, len(ts), n) = {want}, got {init.shape}")
    if init.dtype != y0.dtype:
        raise DTypeError(f"{op}: init has dtype {init.dtype} but y0 has {y0.dtype}")
    if nonfinite(init):
        raise ValueError(f"{op}: init of shape {init.shape} holds NaN or infinite values")
    return init


def _check_f(op, f, y0, ts, leaves, treedef) -> None:
    """One evaluation of f: its output must be a state of y0's shape and dtype."""
    y_first = reshape(y0, (-1, y0.shape[-1]))[0]
    out = f(y_first.detach(), ts[0], pytree.unflatten(treedef, [p.detach() for p in leaves]))
    if not isinstance(out, Tensor) or out.shape != y_first.shape:
        raise ShapeError(
            f"{op}: f(y, t, params) must return a state of shape {y_first.shape} like y (y0 has shape "
            f"{y0.shape}), got {getattr(out, 'shape', type(out).__name__)}"
        )
    if out.dtype != y0.dtype:
        raise DTypeError(f"{op}: f returned {out.dtype} for a state of dtype {y0.dtype}")


# ----------------------------------------------------------------------------- public functions
def deer_odeint(
    f: Callable[..., Any],
    y0: Tensor,
    ts: Tensor,
    params: PyTree = None,
    *,
    max_iter: int = 100,
    atol: float | None = None,
    rtol: float | None = None,
    init: PyTree = None,
    expm: str = "series",
    on_failure: str = "warn",
    method: str = "auto",
    return_stats: bool = False,
) -> Any:
    """Solve ``dy/dt = f(y, t, params)`` on the grid ``ts`` by DEER: every step at once.

    Args:
        f: the vector field, written for **one** state: ``f(y, t, params)`` with ``y`` of shape
            ``(n,)``, ``t`` a 0-d tensor and ``params`` as given here; it returns ``(n,)``.  DEER
            evaluates it at every grid point at once through :func:`minidiff.vmap`.  Every tensor
            to differentiate must come in through ``params`` (a tensor or a pytree of them).
        y0: initial state ``(*batch, n)``; a batch of initial states shares ``ts`` and ``params``.
        ts: strictly monotone 1-D grid of ``T+1 ≥ 2`` times; ``ts[0]`` is the time of ``y0``.
            Not differentiated.
        params: tensors (pytree) passed to ``f``.
        max_iter: DEER iterations (linearize + scan) before giving up.
        atol, rtol: convergence test ``|Δy| ≤ atol + rtol·|y|`` on every element, then the same
            test on the scheme's residual; defaults (1e-6, 1e-4) in float64, (1e-4, 1e-3) otherwise.
        init: initial guess ``(*batch, T+1, n)`` (e.g. the previous training step's solution);
            ``y0`` broadcast over time by default.
        expm: ``"series"`` (the reference's 4th-order series for ``φ`` and ``e^{−M}``) or
            ``"exact"`` (this module's differentiable scaling-and-squaring matrix exponential).
        on_failure: on non-convergence ``"warn"`` (a ``DeerConvergenceWarning``) or ``"raise"``
            (``DeerConvergenceError``), the classes of :mod:`minidiff.deer.rnn`; the stats say
            ``converged=False`` either way.
        method: the scan, see :func:`~minidiff.deer.affine_scan`.
        return_stats: also return a :class:`~minidiff.deer.rnn.DeerStats`: ``iterations`` (DEER
            iterations, each one linearization and one scan), ``residual`` (the largest
            ``|y_{i+1} − Φ_i(y_i, y_{i+1})|`` of the scheme at the returned trajectory), ``step``
            (the largest change of the last iteration), ``converged`` (both tests passed) and
            ``tolerances``.

    Returns:
        ``(*batch, T+1, n)``, the states at ``ts`` (``y0`` first); with ``return_stats``, a pair.
        Differentiable in ``y0`` and ``params`` (forward and reverse mode, exact derivatives of the
        discretized scheme; the rules run one scan each, never through the iterations).

    Example:
        >>> import minidiff as md
        >>> from minidiff.deer.ode import deer_odeint
        >>> decay = lambda y, t, k: -k * y                 # y' = -k y,  y(t) = e^{-k t}
        >>> ts = md.linspace(0.0, 1.0, 101, dtype="float64")
        >>> ys, stats = deer_odeint(decay, md.tensor([1.0]), ts, md.tensor(2.0), return_stats=True)
        >>> round(ys[-1, 0].item(), 5), stats.converged
        (0.13534, True)
        >>> round(md.grad(lambda k: deer_odeint(decay, md.tensor([1.0]), ts, k)[-1, 0])(md.tensor(2.0)).item(), 5)
        -0.13534
    """
    y0, ts, leaves, treedef, init = _validate(
        "deer_odeint", f, y0, ts, params, expm, on_failure, max_iter, atol, rtol, init
    )
    d_atol, d_rtol = default_tolerances(y0.dtype)
    opts = dict(
        atol=d_atol if atol is None else float(atol),
        rtol=d_rtol if rtol is None else float(rtol),
        max_iter=max_iter,
        expm=expm,
        on_failure=on_failure,
        method=method,
    )
    batch, n = y0.shape[:-1], y0.shape[-1]
    B = math.prod(batch)
    flat_init = None if init is None else reshape(init, (B, ts.shape[0], n)).detach()
    box: dict = {}
    Y = _deer_ode_p(
        reshape(y0, (B, n)), *leaves, f=f, ts=ts, treedef=treedef, opts=opts, box=box, init=flat_init
    )
    Y = reshape(Y, batch + (ts.shape[0], n))
    return (Y, box["stats"]) if return_stats else Y


def sequential_odeint(
    f: Callable[..., Any],
    y0: Tensor,
    ts: Tensor,
    params: PyTree = None,
    *,
    expm: str = "series",
    tol: float | None = None,
    max_iter: int = 50,
) -> Tensor:
    """The same scheme as :func:`deer_odeint`, solved one interval after the other.

    Each step solves ``y_{i+1} = Φ_i(y_i, y_{i+1})`` by fixed-point iteration from ``y_i`` (the map
    contracts by a factor of order ``Δt²·|∂f/∂y|²`` plus ``Δt·|Δy|·|∂²f/∂y²|``, so a few iterations
    suffice on a sensible grid) until the update is below ``tol`` (default ``1e-13`` in float64,
    ``1e-6`` otherwise, relative to ``1 + |y|``).  Written with minidiff operations only: minidiff's
    tape (or forward mode) differentiates straight through it — the reference DEER's derivative
    rules are tested against.

    Example:
        >>> import minidiff as md
        >>> from minidiff.deer.ode import sequential_odeint
        >>> ts = md.linspace(0.0, 1.0, 101, dtype="float64")
        >>> ys = sequential_odeint(lambda y, t, k: -k * y, md.tensor([1.0]), ts, md.tensor(2.0))
        >>> round(ys[-1, 0].item(), 5)
        0.13534
    """
    y0, ts, leaves, treedef, _ = _validate(
        "sequential_odeint", f, y0, ts, params, expm, "raise", max_iter, None, None, None
    )
    if tol is None:
        tol = 1e-13 if str(y0.dtype) == "float64" else 1e-6
    params = pytree.unflatten(treedef, leaves) if leaves else params
    batch, n = y0.shape[:-1], y0.shape[-1]
    B = math.prod(batch)
    y = reshape(y0, (B, n))
    ys = [y]
    for i in range(ts.shape[0] - 1):
        tl = broadcast_to(ts[i], (B,))
        tr = broadcast_to(ts[i + 1], (B,))
        dt = ts[i + 1] - ts[i]
        Fl, Jl = _fields(f, y, tl, params)
        yr = y
        for _ in range(max_iter):
            Fr, Jr = _fields(f, yr, tr, params)
            A, b = _affine_maps(Fl, Jl, y, Fr, Jr, yr, dt, expm)
            new = _matvec(A, y) + b
            change = float(ops.max(ops.abs(new - yr)).detach().item())
            yr = new
            if change <= tol * (1.0 + float(ops.max(ops.abs(new)).detach().item())):
                break
        else:
            raise DeerConvergenceError(
                f"sequential_odeint: the implicit step {i} (t={ts[i].detach().item():g} → {ts[i + 1].detach().item():g}) "
                f"did not converge in {max_iter} fixed-point iterations (last change {change:.3g}); "
                "use a finer time grid"
            )
        y = yr
        ys.append(y)
    return reshape(stack(ys, axis=1), batch + (ts.shape[0], n))
