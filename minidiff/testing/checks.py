"""Derivative checks: finite differences, the adjoint identity, and the same one order up.

``check_grads`` holds forward mode and reverse mode against each other and against central finite
differences in float64:

* forward: ``J·v`` from ``jvp`` equals ``(f(x + εv) − f(x − εv)) / 2ε``;
* reverse: ``⟨u, J·v⟩ = ⟨Jᵀ·u, v⟩`` with ``Jᵀ·u`` from ``vjp`` (the adjoint identity), and against the
  finite difference; the same again along ``w = Jᵀ·u`` itself, where ``⟨w, w⟩ = ⟨u, J·w⟩`` is a sum
  of squares (a random projection ``⟨u, J·v⟩`` can be small and hide an error in ``Jᵀ·u``);
* order 2 (and up): the same checks applied to ``x ↦ J(x)·v`` and ``x ↦ J(x)ᵀ·u``, which exercises
  forward-over-forward, reverse-over-forward, forward-over-reverse and reverse-over-reverse.
"""

from __future__ import annotations

from ..backend import numpy_module as np
from ..primitives.creation import asarray
from ..primitives.random import RngLike, as_generator
from ..tensor import pytree
from ..tensor.core import Tensor
from ..transforms.core import jvp, vjp


def _leaves(tree):
    return [asarray(x) for x in pytree.flatten(tree)[0]]


def _np64(x):
    """``x`` (a tensor or an array) as a host float64 NumPy array."""
    return np.asarray(x.numpy() if isinstance(x, Tensor) else x, dtype=np.float64)


def _inner(a, b) -> float:
    """``⟨a, b⟩`` in float64, of two tensors or summed over two lists of them."""
    if isinstance(a, (list, tuple)):
        return float(sum(_inner(x, y) for x, y in zip(a, b)))
    return float(np.vdot(_np64(a), _np64(b)))


def _max_abs(xs) -> float:
    """The largest magnitude among the tensors ``xs``, at least 1: the scale of an ``atol``."""
    return max([1.0] + [float(np.max(np.abs(_np64(x)))) for x in xs if x.size])


def _close(what, got, want, rtol, atol, scale=None, show: bool = False) -> None:
    """Raise ``AssertionError`` unless ``got`` and ``want`` (tensors or arrays) agree elementwise to
    ``rtol`` and ``atol·scale``; ``scale`` is by default the largest magnitude of ``want`` (at least
    1, and 1 if it is not finite).  ``show`` puts both values in the message."""
    g, w = _np64(got), _np64(want)
    if g.shape != w.shape:
        raise AssertionError(f"{what}: shape {g.shape} differs from the reference {w.shape}")
    if scale is None:
        scale = _max_abs([w]) if np.all(np.isfinite(w)) else 1.0
    if not np.allclose(g, w, rtol=rtol, atol=atol * scale, equal_nan=True):
        err = float(np.nanmax(np.abs(g - w))) if g.size else 0.0
        values = f"\n got {g}\n want {w}" if show else ""
        raise AssertionError(
            f"{what}: max abs error {err:.3g} (rtol={rtol}, atol={atol}·{scale:.3g}){values}"
        )


def _random_like(tree, rng):
    leaves, tdef = pytree.flatten(tree)
    return pytree.unflatten(tdef, [rng.normal(asarray(x).shape, dtype=asarray(x).dtype) for x in leaves])


def _axpy(a, x_tree, y_tree):
    return pytree.tree_map(lambda x, y: x + a * y, x_tree, y_tree)


def numerical_jvp(f, args, tangents, eps: float = 1e-6):
    """Central finite difference ``(f(x + εv) − f(x − εv)) / 2ε``, leaf by leaf of the output."""
    plus = f(*_axpy(eps, tuple(args), tuple(tangents)))
    minus = f(*_axpy(-eps, tuple(args), tuple(tangents)))
    return [(p - m) * (1.0 / (2 * eps)) for p, m in zip(_leaves(plus), _leaves(minus))]


def _close_scalar(name, got, want, rtol, atol, scale):
    if not abs(got - want) <= atol * max(scale, 1.0) + rtol * abs(want):
        raise AssertionError(f"{name}: {got!r} != {want!r} (rtol={rtol}, atol={atol})")


def check_grads(
    f,
    args,
    order: int = 2,
    modes=("fwd", "rev"),
    eps: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    seed: RngLike = 0,
) -> None:
    """Raise ``AssertionError`` unless the derivatives of ``f`` at ``args`` up to ``order`` are right.

    ``args`` is a tuple of arguments (pytrees of float64 tensors for tight checks); ``modes`` chooses
    forward (``"fwd"``), reverse (``"rev"``) or both.  Directions are random with ``seed`` (an int, or
    a ``minidiff.primitives.random.Generator`` / ``numpy.random.Generator`` whose draws continue at each order).

    Example:
        >>> import minidiff as md
        >>> md.testing.check_grads(md.tanh, (md.tensor([0.1, -0.7]),), order=3)
    """
    args, modes = tuple(args), _check_modes(modes)
    rng = as_generator(seed, op="check_grads")
    seeds = (seed + 1, seed + 2) if isinstance(seed, int) else (rng, rng)
    v = tuple(_random_like(a, rng) for a in args)
    u = _random_like(f(*args), rng)
    numeric = numerical_jvp(f, args, v, eps)
    scale = _max_abs(numeric)
    jv = None
    if "fwd" in modes:
        _, jv = jvp(f, args, v)
        for got, want in zip(_leaves(jv), numeric):
            _close("forward mode vs finite differences", got, want, rtol, atol, scale, show=True)
    if "rev" in modes:
        _check_reverse(f, args, u, v, jv, numeric, (eps, rtol, atol))
    if order > 1:
        if "fwd" in modes:
            check_grads(lambda *a: jvp(f, a, v)[1], args, order - 1, modes, eps, rtol, atol, seeds[0])
        if "rev" in modes:
            check_grads(lambda *a: vjp(f, *a)[1](u), args, order - 1, modes, eps, rtol, atol, seeds[1])


def _check_modes(modes) -> tuple:
    modes = tuple(modes)
    unknown = set(modes) - {"fwd", "rev"}
    if unknown or not modes:
        raise ValueError(f"check_grads: modes must be drawn from ('fwd', 'rev'), got {modes}")
    return modes


def _check_reverse(f, args, u, v, jv, numeric, tol) -> None:
    """``Jᵀ·u`` from ``vjp`` against ``J·v`` (the adjoint identity, when ``jv`` was computed) and the
    finite difference ``numeric``, then along ``w = Jᵀ·u`` itself."""
    eps, rtol, atol = tol
    scale = _max_abs(numeric)
    jtu = vjp(f, *args)[1](u)
    lhs = _inner(_leaves(jtu), _leaves(v))
    if jv is not None:
        rhs = _inner(_leaves(u), _leaves(jv))
        _close_scalar("adjoint identity <J^T u, v> = <u, J v>", lhs, rhs, rtol, atol, scale)
    rhs_fd = _inner(_leaves(u), numeric)
    _close_scalar("reverse mode vs finite differences", lhs, rhs_fd, rtol * 10, atol * 10, scale)
    # Along w = J^T u itself: <w, w> = <u, J w> is a sum of squares, so a VJP that is off by a
    # small factor cannot hide behind a random projection <u, J v> that happens to be small.
    ww = _inner(_leaves(jtu), _leaves(jtu))
    if ww <= 1e-200:  # (w = 0 leaves nothing to check)
        return
    # w rescaled to the norm of v, so the finite-difference step stays eps-sized
    k = (_inner(_leaves(v), _leaves(v)) / ww) ** 0.5
    w = pytree.tree_map(lambda x: x * k, tuple(jtu))
    ww *= k
    numeric_w = numerical_jvp(f, args, w, eps)
    w_scale = _max_abs(numeric_w)
    uw_fd = _inner(_leaves(u), numeric_w)
    _close_scalar("reverse mode along J^T u vs finite differences", ww, uw_fd, rtol * 10, atol * 10, w_scale)
    if jv is not None:
        uw = _inner(_leaves(u), _leaves(jvp(f, args, w)[1]))
        _close_scalar("adjoint identity <J^T u, J^T u> = <u, J J^T u>", ww, uw, rtol, atol, w_scale)


__all__ = ["check_grads", "numerical_jvp", "Tensor"]
