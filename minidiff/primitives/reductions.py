"""Reductions that are not linear: max, min and prod (sum and cumsum are linear, in ``shape``).

Ties in max/min share the derivative evenly among the tied elements, in both modes.
"""

from __future__ import annotations

from ..tensor.core import ArrayLike, Axis, Tensor
from .batching_rules import batch_axis_op
from .creation import eye
from .elementwise import astype, equal, exp, where
from .registry import bind, general, nondifferentiable
from .shape import (
    _t,
    broadcast_to,
    expand_axes,
    expand_dims,
    moveaxis,
    normalize_axis,
    normalize_one_axis,
    reshape,
    sum,
)


def _winners(x, ans, axis, keepdims):
    """Each element's share of the derivative of max/min: 1/(number of ties) where it won, else 0."""
    hit = astype(equal(x, ans if keepdims else expand_axes(ans, axis)), x.dtype)
    return hit / sum(hit, axis=axis, keepdims=True)


def _keep(g, axis, keepdims):
    return g if keepdims else expand_axes(g, axis)


def _others(x, axis):
    """Product of all the other elements along ``axis``, for every element (exact with zeros)."""

    n = x.shape[axis]
    rows = moveaxis(x, axis, -1)
    square = broadcast_to(expand_dims(rows, -2), rows.shape[:-1] + (n, n))
    square = where(eye(n, dtype=bool, device=x.device), 1, square)
    return moveaxis(bind(prod_p, square, axis=square.ndim - 1, keepdims=False), -1, axis)


# name     impl     JVP rule     VJP rule     batching rule (set below)     what the VJP rule reads
max_p = general(
    "max",
    lambda xp, x, axis, keepdims: xp.max(x, axis=axis, keepdims=keepdims),
    lambda t, ans, x, axis, keepdims: sum(t * _winners(x, ans, axis, keepdims), axis=axis, keepdims=keepdims),
    lambda g, ans, x, axis, keepdims: _keep(g, axis, keepdims) * _winners(x, ans, axis, keepdims),
    None,
    reads="x ans",
)
min_p = general(
    "min",
    lambda xp, x, axis, keepdims: xp.min(x, axis=axis, keepdims=keepdims),
    lambda t, ans, x, axis, keepdims: sum(t * _winners(x, ans, axis, keepdims), axis=axis, keepdims=keepdims),
    lambda g, ans, x, axis, keepdims: _keep(g, axis, keepdims) * _winners(x, ans, axis, keepdims),
    None,
    reads="x ans",
)
prod_p = general(  # one axis at a time; prod() below folds several axes into one
    "prod",
    lambda xp, x, axis, keepdims: xp.prod(x, axis=axis, keepdims=keepdims),
    lambda t, ans, x, axis, keepdims: sum(t * _others(x, axis), axis=(axis,), keepdims=keepdims),
    lambda g, ans, x, axis, keepdims: _keep(g, (axis,), keepdims) * _others(x, axis),
    None,
    reads="x",
)


def _lse(xp, x, axis, keepdims):
    m = xp.max(x, axis=axis, keepdims=True) if x.size else xp.zeros((1,) * x.ndim, x.dtype)
    m = xp.where(xp.isfinite(m), m, 0)
    out = xp.log(xp.sum(xp.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else xp.squeeze(out, axis=axis)


def _softmax_of(x, ans, axis, keepdims):
    """exp(x − logsumexp(x)): the derivative of logsumexp, from its saved output."""
    return exp(x - _keep(ans, axis, keepdims))


logsumexp_p = general(  # one primitive rather than eight: cross-entropy is on every training step
    "logsumexp",
    _lse,
    lambda t, ans, x, axis, keepdims: sum(
        t * _softmax_of(x, ans, axis, keepdims), axis=axis, keepdims=keepdims
    ),
    lambda g, ans, x, axis, keepdims: _keep(g, axis, keepdims) * _softmax_of(x, ans, axis, keepdims),
    None,
    reads="x ans",
)
for _p in (max_p, min_p, prod_p, logsumexp_p):
    _p.batch = batch_axis_op(_p)


def logsumexp(x: ArrayLike, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """``log(sum(exp(x)))`` over ``axis``, computed stably (shifted by the maximum)."""
    x = _t(x)
    return bind(logsumexp_p, x, axis=normalize_axis("logsumexp", axis, x.ndim), keepdims=bool(keepdims))


def max(x: ArrayLike, axis: Axis = None, keepdims: bool = False) -> Tensor:  # noqa: A001 - NumPy's name
    """Largest value over ``axis``; ties share the derivative evenly."""
    x = _t(x)
    return bind(max_p, x, axis=normalize_axis("max", axis, x.ndim), keepdims=bool(keepdims))


def min(x: ArrayLike, axis: Axis = None, keepdims: bool = False) -> Tensor:  # noqa: A001 - NumPy's name
    """Smallest value over ``axis``; ties share the derivative evenly."""
    x = _t(x)
    return bind(min_p, x, axis=normalize_axis("min", axis, x.ndim), keepdims=bool(keepdims))


def prod(x: ArrayLike, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """Product over ``axis``; its derivative is exact where elements are zero."""
    x = _t(x)
    axes = normalize_axis("prod", axis, x.ndim)
    if len(axes) == 1:
        return bind(prod_p, x, axis=axes[0], keepdims=bool(keepdims))
    rest = [a for a in range(x.ndim) if a not in axes]
    moved = moveaxis(x, axes, tuple(range(x.ndim - len(axes), x.ndim))) if axes else x
    folded = (
        reshape(moved, tuple(x.shape[a] for a in rest) + (-1,))
        if x.size
        else reshape(moved, tuple(x.shape[a] for a in rest) + (0,))
    )
    out = bind(prod_p, folded, axis=folded.ndim - 1, keepdims=False)
    if keepdims:
        out = reshape(out, tuple(1 if a in axes else s for a, s in enumerate(x.shape)))
    return out


def _batch_index_reduction(prim):
    def rule(vals, batched, size, axis):
        (x,) = vals
        if axis is None:
            x = reshape(x, (x.shape[0], -1))
            return bind(prim, x, axis=1)
        return bind(prim, x, axis=axis + 1)

    return rule


def _batch_bool_reduction(prim):
    def rule(vals, batched, size, axis):
        return bind(prim, vals[0], axis=tuple(a + 1 for a in axis))

    return rule


argmax_p = nondifferentiable("argmax", lambda xp, x, axis: xp.argmax(x, axis=axis))
argmin_p = nondifferentiable("argmin", lambda xp, x, axis: xp.argmin(x, axis=axis))
any_p = nondifferentiable("any", lambda xp, x, axis: xp.any(x, axis=axis))
all_p = nondifferentiable("all", lambda xp, x, axis: xp.all(x, axis=axis))
argmax_p.batch, argmin_p.batch = _batch_index_reduction(argmax_p), _batch_index_reduction(argmin_p)
any_p.batch, all_p.batch = _batch_bool_reduction(any_p), _batch_bool_reduction(all_p)


def argmax(x: ArrayLike, axis: Axis = None) -> Tensor:
    """Index of the largest value along ``axis`` (of the flattened array if None); no derivative."""
    x = _t(x)
    return bind(argmax_p, x, axis=None if axis is None else normalize_one_axis("argmax", axis, x.ndim))


def argmin(x: ArrayLike, axis: Axis = None) -> Tensor:
    """Index of the smallest value along ``axis`` (of the flattened array if None); no derivative."""
    x = _t(x)
    return bind(argmin_p, x, axis=None if axis is None else normalize_one_axis("argmin", axis, x.ndim))


def any(x: ArrayLike, axis: Axis = None) -> Tensor:  # noqa: A001 - NumPy's name
    """Whether any element along ``axis`` is true."""
    x = _t(x)
    return bind(any_p, x, axis=normalize_axis("any", axis, x.ndim))


def all(x: ArrayLike, axis: Axis = None) -> Tensor:  # noqa: A001 - NumPy's name
    """Whether every element along ``axis`` is true."""
    x = _t(x)
    return bind(all_p, x, axis=normalize_axis("all", axis, x.ndim))
