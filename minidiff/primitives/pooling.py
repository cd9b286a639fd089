"""Pooling over the last two axes, written on strided sub-grids: max-pooling and its window algebra.

A window of ``kernel = (kh, kw)`` moved by ``stride = (sh, sw)`` over ``(..., H, W)`` takes
``Ho = (H − kh)//sh + 1`` by ``Wo = (W − kw)//sw + 1`` positions (rows and columns past the last whole
window are left out).  Element ``(i, j)`` of every window lies on the *sub-grid*
``x[..., i::sh, j::sw]`` (cut to ``Ho × Wo``), numbered ``k = i·kw + j``; there are ``K = kh·kw``.
Every primitive here works on those K strided views — a max-pool is the elementwise maximum of its K
sub-grids — never on a reshaped view reduced over its non-contiguous axes (3, 5), which NumPy does
about 30× slower (2×2 windows on (64, 64, 28, 28) float32; ``benchmarks/pooling.py``).

``pool2d_windows`` (linear)
    the K sub-grids stacked as ``(K, ..., Ho, Wo)``, each one contiguous; its transpose is
``pool2d_fold`` (linear)
    which adds each of the K slabs back onto its sub-grid of ``(..., H, W)`` (a plain assignment when
    the windows tile the input exactly); its transpose is ``pool2d_windows``.
``pool2d_sum`` (linear)
    the sum of each window: the K sub-grids added (avg_pool2d divides it by K); its transpose spreads
    each cotangent over its window, ``fold`` of the cotangent repeated K times (a broadcast view).
``max_pool2d`` (general)
    the maximum of each window.  Ties share the derivative evenly among the tied elements, as the
    ``max``/``min`` reductions do (``minidiff/primitives/reductions.py``), in both modes and at every
    order: with ``share`` each element's part of its window's derivative (1/k for the k tied maxima,
    0 elsewhere), the JVP is ``Σ_k share_k · windows(ẋ)_k`` and the VJP ``fold(share · ȳ)`` — minidiff
    operations, so they differentiate again (``share`` is piecewise constant: no derivative).  The VJP
    reads the input and the output (``reads="x ans"``) and recomputes the shares: K comparisons of
    sub-grids, cheaper than keeping a mask alive from the forward pass (a primitive has one output).
``max_pool2d_share`` (not differentiable)
    those shares, ``(K, ..., Ho, Wo)`` in the input's (floating) dtype.

Leading axes are free, so ``vmap`` adds one more of them; the batching rules only move the ``K`` axis.
"""

from __future__ import annotations

from functools import lru_cache

from ..errors import ShapeError
from ..tensor.core import Tensor
from .batching_rules import materialize
from .registry import General, Linear, bind, general, linear, nondifferentiable
from .shape import broadcast_to, moveaxis, sum

__all__ = ["max_pool", "window_sum", "windows", "fold", "out_size"]

Pair = tuple[int, int]


def out_size(op: str, kernel: Pair, stride: Pair, size: tuple[int, ...]) -> Pair:
    """``(Ho, Wo)``: the number of whole windows down and across an ``(H, W)`` input."""
    if len(size) != 2:
        raise ShapeError(f"{op}: pools the last two axes; got an input with only {len(size)}")
    (kh, kw), (sh, sw), (h, w) = kernel, stride, size
    if min(kh, kw, sh, sw) < 1:
        raise ShapeError(f"{op}: kernel {kernel} and stride {stride} must be positive")
    if kh > h or kw > w:
        raise ShapeError(f"{op}: kernel {kernel} larger than the input's last two axes {(h, w)}")
    return (h - kh) // sh + 1, (w - kw) // sw + 1


@lru_cache(maxsize=256)
def _subgrids(kernel: Pair, stride: Pair, size: Pair) -> tuple:
    """The index of each of the K sub-grids, ``k = i·kw + j``."""
    (kh, kw), (sh, sw) = kernel, stride
    ho, wo = out_size("pooling", kernel, stride, size)
    return tuple(
        (Ellipsis, slice(i, i + sh * (ho - 1) + 1, sh), slice(j, j + sw * (wo - 1) + 1, sw))
        for i in range(kh)
        for j in range(kw)
    )


# ----------------------------------------------------------------------------- on backend arrays
def _max_impl(xp, x, kernel, stride):
    grids = [x[s] for s in _subgrids(kernel, stride, x.shape[-2:])]
    if len(grids) == 1:
        return grids[0].copy()
    out = xp.maximum(grids[0], grids[1])
    for g in grids[2:]:
        xp.maximum(out, g, out=out)
    return out


def _share_impl(xp, x, y, kernel, stride):
    """1/k for each of the k tied maxima of a window, 0 for the others (NaN where a window has none:
    a NaN maximum, as the max reduction gives)."""
    index = _subgrids(kernel, stride, x.shape[-2:])
    hit = xp.empty((len(index),) + y.shape, dtype=bool)
    for k, s in enumerate(index):
        xp.equal(x[s], y, out=hit[k])
    share = hit.astype(x.dtype if x.dtype.kind in "fc" else xp.float64)
    count = share.sum(axis=0)
    if not bool((count == 1).all()):  # ties (or NaN windows): divide, exactly as hit / count
        share /= count
    return share


def _sum_impl(xp, x, kernel, stride):
    """The K sub-grids added in order k = 0, 1, ...: the same sums as ``windows(x).sum(axis=0)``."""
    grids = [x[s] for s in _subgrids(kernel, stride, x.shape[-2:])]
    out = grids[0].copy()
    for g in grids[1:]:
        out += g
    return out


def _windows_impl(xp, x, kernel, stride):
    return xp.stack([x[s] for s in _subgrids(kernel, stride, x.shape[-2:])])


def _fold_impl(xp, c, kernel, stride, size):
    index = _subgrids(kernel, stride, size)
    ho, wo = out_size("pool2d_fold", kernel, stride, size)
    if c.ndim < 3 or c.shape[0] != len(index) or c.shape[-2:] != (ho, wo):
        raise ShapeError(
            f"pool2d_fold: expected windows of shape ({len(index)}, ..., {ho}, {wo}) for kernel {kernel}, "
            f"stride {stride} and size {size}, got {c.shape}"
        )
    (kh, kw), (sh, sw), (h, w) = kernel, stride, size
    overlap = sh < kh or sw < kw
    tiles = (sh, sw) == (kh, kw) and (h, w) == (ho * kh, wo * kw)  # every element in one window
    out = (xp.empty if tiles else xp.zeros)(c.shape[1:-2] + (h, w), dtype=c.dtype)
    for k, s in enumerate(index):
        if overlap:
            out[s] += c[k]
        else:
            out[s] = c[k]
    return out


# ----------------------------------------------------------------------------- the primitives
def _share(x, ans, kernel, stride):
    return bind(max_pool2d_share_p, x, ans, kernel=kernel, stride=stride)


def _batch_share(vals, batched, size, kernel, stride):
    x, y = (materialize(v, b, size) for v, b in zip(vals, batched))
    return moveaxis(bind(max_pool2d_share_p, x, y, kernel=kernel, stride=stride), 0, 1)


# fmt: off
# name        impl on backend arrays     JVP rule / transpose        VJP rule        batching rule        what the VJP reads
max_pool2d_p: General = general(
    "max_pool2d", _max_impl,
    lambda t, ans, x, kernel, stride: sum(_share(x, ans, kernel, stride) * windows(t, kernel, stride), axis=0),
    lambda g, ans, x, kernel, stride: fold(_share(x, ans, kernel, stride) * g, kernel, stride, x.shape[-2:]),
    lambda vals, b, n, kernel, stride: bind(max_pool2d_p, vals[0], kernel=kernel, stride=stride),
    reads="x ans",
)
max_pool2d_share_p = nondifferentiable("max_pool2d_share", _share_impl, batch=_batch_share)
pool2d_sum_p: Linear = linear(
    "pool2d_sum", _sum_impl,
    lambda g, ans, x, kernel, stride: fold(broadcast_to(g, (kernel[0] * kernel[1],) + g.shape), kernel, stride, x.shape[-2:]),
    lambda vals, b, n, kernel, stride: bind(pool2d_sum_p, vals[0], kernel=kernel, stride=stride),
)
pool2d_windows_p: Linear = linear(
    "pool2d_windows", _windows_impl,
    lambda g, ans, x, kernel, stride: fold(g, kernel, stride, x.shape[-2:]),
    lambda vals, b, n, kernel, stride: moveaxis(bind(pool2d_windows_p, vals[0], kernel=kernel, stride=stride), 0, 1),
)
pool2d_fold_p: Linear = linear(
    "pool2d_fold", _fold_impl,
    lambda g, ans, c, kernel, stride, size: windows(g, kernel, stride),
    lambda vals, b, n, kernel, stride, size: bind(pool2d_fold_p, moveaxis(vals[0], 0, 1), kernel=kernel, stride=stride, size=size),
)
# fmt: on


# ----------------------------------------------------------------------------- the functions
def max_pool(x: Tensor, kernel: Pair, stride: Pair) -> Tensor:
    """The maximum of every ``kernel`` window of the last two axes of ``x``, moved by ``stride``."""
    out_size("max_pool2d", kernel, stride, x.shape[-2:])
    return bind(max_pool2d_p, x, kernel=kernel, stride=stride)


def window_sum(x: Tensor, kernel: Pair, stride: Pair) -> Tensor:
    """The sum of every ``kernel`` window of the last two axes of ``x``, moved by ``stride``."""
    out_size("pool2d_sum", kernel, stride, x.shape[-2:])
    return bind(pool2d_sum_p, x, kernel=kernel, stride=stride)


def windows(x: Tensor, kernel: Pair, stride: Pair) -> Tensor:
    """The K sub-grids of ``x`` (one per position in the window), stacked: ``(K, ..., Ho, Wo)``."""
    out_size("pool2d_windows", kernel, stride, x.shape[-2:])
    return bind(pool2d_windows_p, x, kernel=kernel, stride=stride)


def fold(c: Tensor, kernel: Pair, stride: Pair, size: Pair) -> Tensor:
    """The transpose of :func:`windows`: each slab of ``c`` added onto its sub-grid of ``(..., *size)``."""
    return bind(pool2d_fold_p, c, kernel=kernel, stride=stride, size=tuple(size))
