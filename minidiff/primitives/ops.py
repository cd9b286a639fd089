"""The NumPy-named functions of minidiff: the primitives' public spellings and composites of them.

Composites (mean, var, softmax, log_softmax, ...) need no rules of their own: they are differentiated
through the primitives they are made of.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

from ..backend import numpy_module
from ..errors import ShapeError
from ..tensor.core import ArrayLike, Axis, Tensor
from .creation import asarray, eye
from .elementwise import (  # noqa: F401 - re-exported
    abs,
    add,
    arccos,
    arcsin,
    arctan,
    arctan2,
    astype,
    clip,
    cos,
    cosh,
    divide,
    equal,
    erf,
    exp,
    expm1,
    floor,
    greater,
    greater_equal,
    isfinite,
    isnan,
    less,
    less_equal,
    log,
    log1p,
    logical_and,
    logical_not,
    logical_or,
    maximum,
    minimum,
    multiply,
    negative,
    not_equal,
    power,
    relu,
    sigmoid,
    sign,
    sin,
    sinh,
    softplus,
    sqrt,
    square,
    subtract,
    tan,
    tanh,
    where,
)
from .matrix import dot, einsum, matmul, outer  # noqa: F401
from .reductions import all, any, argmax, argmin, logsumexp, max, min, prod  # noqa: F401
from .shape import (  # noqa: F401
    broadcast_to,
    concatenate,
    cumsum,
    expand_dims,
    flip,
    getitem,
    moveaxis,
    normalize_axis,
    normalize_one_axis,
    pad,
    ravel,
    reshape,
    split,
    squeeze,
    stack,
    sum,
    sum_to,
    swapaxes,
    take,
    to_device,
    transpose,
)

#: What ``from minidiff.primitives.ops import *`` (the facade) exports: the array functions.
__all__ = [
    "abs",
    "add",
    "all",
    "allclose",
    "any",
    "arccos",
    "arcsin",
    "arctan",
    "arctan2",
    "argmax",
    "argmin",
    "astype",
    "broadcast_to",
    "clip",
    "concatenate",
    "cos",
    "cosh",
    "cumsum",
    "divide",
    "divmod",
    "dot",
    "einsum",
    "equal",
    "erf",
    "exp",
    "expand_dims",
    "expm1",
    "flip",
    "floor",
    "floor_divide",
    "getitem",
    "greater",
    "greater_equal",
    "isfinite",
    "isnan",
    "less",
    "less_equal",
    "log",
    "log1p",
    "log_softmax",
    "logical_and",
    "logical_not",
    "logical_or",
    "logical_xor",
    "logsumexp",
    "matmul",
    "max",
    "maximum",
    "mean",
    "min",
    "minimum",
    "mod",
    "moveaxis",
    "multiply",
    "negative",
    "not_equal",
    "outer",
    "pad",
    "power",
    "prod",
    "ravel",
    "relu",
    "remainder",
    "repeat",
    "reshape",
    "sigmoid",
    "sign",
    "sin",
    "sinh",
    "softmax",
    "softplus",
    "split",
    "sqrt",
    "square",
    "squeeze",
    "stack",
    "std",
    "stop_gradient",
    "subtract",
    "sum",
    "sum_to",
    "swapaxes",
    "take",
    "tan",
    "tanh",
    "tensordot",
    "to_device",
    "trace",
    "transpose",
    "var",
    "where",
]


def mean(x: ArrayLike, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """Arithmetic mean over ``axis``.

    >>> import minidiff as md
    >>> md.mean(md.tensor([[1.0, 2.0], [3.0, 4.0]]), axis=0).tolist()
    [2.0, 3.0]
    """
    x = asarray(x)
    axes = normalize_axis("mean", axis, x.ndim)
    n = 1
    for a in axes:
        n *= x.shape[a]
    return sum(x, axis=axes, keepdims=keepdims) * (1.0 / n if n else float("nan"))


def var(x: ArrayLike, axis: Axis = None, keepdims: bool = False, ddof: int = 0) -> Tensor:
    """Variance over ``axis`` (``ddof`` as in NumPy: the divisor is ``max(n - ddof, 0)``).

    >>> import minidiff as md
    >>> md.var(md.tensor([[1.0, 3.0], [2.0, 2.0]]), axis=1, ddof=1).tolist()
    [2.0, 0.0]
    """
    x = asarray(x)
    axes = normalize_axis("var", axis, x.ndim)
    n = 1
    for a in axes:
        n *= x.shape[a]
    centered = x - mean(x, axis=axes, keepdims=True)
    return sum(centered * centered, axis=axes, keepdims=keepdims) / builtins.max(n - ddof, 0)


def log_softmax(x: ArrayLike, axis: Axis = -1) -> Tensor:
    """``x - logsumexp(x)`` along ``axis``."""
    x = asarray(x)
    normalize_axis("log_softmax", axis, x.ndim)
    return x - logsumexp(x, axis=axis, keepdims=True)


def softmax(x: ArrayLike, axis: Axis = -1) -> Tensor:
    """``exp(x) / sum(exp(x))`` along ``axis``, computed stably."""
    x = asarray(x)
    normalize_axis("softmax", axis, x.ndim)
    return exp(x - logsumexp(x, axis=axis, keepdims=True))


def trace(x: ArrayLike, offset: int = 0) -> Tensor:
    """Sum of diagonal ``offset`` of the last two axes (above the main one for ``offset > 0``).

    >>> import minidiff as md
    >>> md.trace(md.tensor([[1.0, 2.0], [3.0, 4.0]])).item(), md.trace(md.eye(2), offset=1).item()
    (5.0, 0.0)
    """

    x = asarray(x)
    mask = eye(x.shape[-2], x.shape[-1], k=offset, dtype=x.dtype, device=x.device)
    return sum(x * mask, axis=(-2, -1))


def stop_gradient(x: ArrayLike) -> Tensor:
    """The value of ``x`` with every derivative dropped (same as ``x.detach()``)."""
    return asarray(x).detach()


def allclose(a: ArrayLike, b: ArrayLike, rtol: float = 1e-5, atol: float = 1e-8) -> bool:
    """Whether two tensors are elementwise equal within tolerances (values only, no derivative)."""
    a, b = asarray(a), asarray(b)
    return bool(a.device.xp.allclose(a._data, asarray(b, device=a.device)._data, rtol=rtol, atol=atol))


def tensordot(a: ArrayLike, b: ArrayLike, axes: int | Sequence[Any] = 2) -> Tensor:
    """Sum of products over paired axes, as ``numpy.tensordot``: the last ``axes`` axes of ``a`` with the
    first ``axes`` of ``b``, or the axes listed in ``axes = (axes_a, axes_b)``.  One matrix product after
    a transpose and a reshape of each side, so both modes use BLAS.

    >>> import minidiff as md
    >>> md.tensordot(md.ones((2, 3, 4)), md.ones((3, 4, 5))).shape
    (2, 5)
    >>> md.tensordot(md.ones((3, 2)), md.ones((3, 4)), axes=([0], [0])).shape
    (2, 4)
    """
    a, b = asarray(a), asarray(b)
    ax_a, ax_b = _tensordot_axes(a, b, axes)
    free_a = [i for i in range(a.ndim) if i not in ax_a]
    free_b = [j for j in range(b.ndim) if j not in ax_b]
    m, k, n = (_size(a.shape, free_a), _size(a.shape, ax_a), _size(b.shape, free_b))
    out_shape = tuple(a.shape[i] for i in free_a) + tuple(b.shape[j] for j in free_b)
    a2 = reshape(transpose(a, free_a + ax_a), (m, k))
    b2 = reshape(transpose(b, ax_b + free_b), (k, n))
    return reshape(matmul(a2, b2), out_shape)


def _size(shape: Sequence[int], axes: Sequence[int]) -> int:
    n = 1
    for i in axes:
        n *= shape[i]
    return n


def _tensordot_axes(a: Tensor, b: Tensor, axes: Any) -> tuple[list[int], list[int]]:
    """``axes`` of ``numpy.tensordot`` as two lists of non-negative axes of equal sizes, checked."""
    from numbers import Integral

    if isinstance(axes, Integral):
        n = int(axes)
        if n < 0 or n > a.ndim or n > b.ndim:
            raise ShapeError(f"tensordot: axes={n} does not fit shapes {a.shape} and {b.shape}")
        pairs = (list(range(a.ndim - n, a.ndim)), list(range(n)))
    else:
        try:
            given = [[s] if isinstance(s, Integral) else list(s) for s in axes]
        except TypeError:
            given = []
        if len(given) != 2 or len(given[0]) != len(given[1]):
            raise ShapeError(f"tensordot: axes {axes!r} must be an int or two sequences of equal length")
        pairs = (
            [normalize_one_axis("tensordot", i, a.ndim) for i in given[0]],
            [normalize_one_axis("tensordot", j, b.ndim) for j in given[1]],
        )
    if len(set(pairs[0])) != len(pairs[0]) or len(set(pairs[1])) != len(pairs[1]):
        raise ShapeError(f"tensordot: repeated axis in {axes!r}")
    if [a.shape[i] for i in pairs[0]] != [b.shape[j] for j in pairs[1]]:
        raise ShapeError(f"tensordot: axes {axes!r} pair unequal sizes of shapes {a.shape} and {b.shape}")
    return pairs


# ----------------------------------------------------------------------------- NumPy's remaining operators
# ``//`` and ``%`` as composites: floor_divide is piecewise constant (its output carries no derivative),
# and remainder = x - floor_divide(x, y) * y differentiates as d/dx = 1, d/dy = -floor_divide(x, y).
def _both_integer(x: ArrayLike, y: ArrayLike) -> bool:
    kinds = [v.dtype.kind if isinstance(v, Tensor) else "f" if isinstance(v, float) else "i" for v in (x, y)]
    return builtins.all(k in "iu" for k in kinds)  # not md.all, which ops.py exports


def floor_divide(x: ArrayLike, y: ArrayLike) -> Tensor:
    """``x // y`` elementwise, as ``numpy.floor_divide``: the largest integer not above ``x / y``.

    Piecewise constant, so its output carries no derivative (like ``md.floor``).  Integer inputs give
    integers (exact while ``|x / y| < 2**53``), and ``n // 0 == 0`` as in NumPy.  For floats this is
    ``floor(x / y)``, which can differ from NumPy's fmod-based result where ``x / y`` rounds onto an
    integer (``1.0 // 0.1`` is 10.0 here, 9.0 in NumPy).

    >>> import minidiff as md
    >>> md.floor_divide(md.tensor([7, -7]), 2).tolist(), (md.tensor([7.5, -7.5]) // 2).tolist()
    ([3, -4], [3.0, -4.0])
    """
    if not isinstance(x, Tensor) and not isinstance(y, Tensor):
        x = asarray(x)
    if not _both_integer(x, y):
        return floor(divide(x, y))

    dtype = numpy_module.result_type(*[v.dtype if isinstance(v, Tensor) else v for v in (x, y)])
    zero = equal(y, 0)
    q = floor(divide(x, where(zero, 1, y)))
    return where(zero, 0, q).astype(dtype)


def remainder(x: ArrayLike, y: ArrayLike) -> Tensor:
    """``x % y`` elementwise, as ``numpy.remainder``: the result has the sign of ``y``.

    Differentiable: d/dx = 1 and d/dy = -(x // y), jumps excepted.  Integer inputs give integers and
    ``n % 0 == 0`` as in NumPy.  For floats the same rounding caveat as :func:`floor_divide` applies
    where ``x / y`` rounds onto an integer.

    >>> import minidiff as md
    >>> (md.tensor([5.5, -5.5]) % 2).tolist()
    [1.5, 0.5]
    >>> float(md.grad(lambda y: md.remainder(7.0, y))(md.tensor(2.0)))
    -3.0
    """
    if not isinstance(x, Tensor) and not isinstance(y, Tensor):
        x = asarray(x)
    r = subtract(x, multiply(floor_divide(x, y), y))
    return where(equal(y, 0), 0, r) if _both_integer(x, y) else r


mod = remainder


def divmod(x: ArrayLike, y: ArrayLike) -> tuple[Tensor, Tensor]:  # noqa: A001 - NumPy's name
    """``(x // y, x % y)``, as ``numpy.divmod`` and Python's ``divmod(x, y)`` on tensors."""
    return floor_divide(x, y), remainder(x, y)


def logical_xor(x: ArrayLike, y: ArrayLike) -> Tensor:
    """Elementwise exclusive or of the truth values of ``x`` and ``y`` (a boolean tensor)."""
    x = asarray(x) if not isinstance(x, Tensor) else x
    return not_equal(astype(x, bool), astype(asarray(y, device=x.device), bool))


def std(x: ArrayLike, axis: Axis = None, keepdims: bool = False, ddof: int = 0) -> Tensor:
    """Standard deviation over ``axis``: ``sqrt(var(x, axis, keepdims, ddof))``, with NumPy's
    ``axis`` (None, an int or a tuple, negative ones too), ``keepdims`` and ``ddof``.

    Composed from :func:`var` and ``sqrt``, so both modes and every order come from their rules.
    Where the variance is 0 (a constant slice) std is not differentiable (``sqrt'(0) = inf`` meets
    a zero derivative of the variance: NaN); there its derivative is taken as 0, the minimum-norm
    subgradient (as PyTorch does), at every order, through a "double where" that keeps the untaken
    ``sqrt`` branch finite.  NaN and inf variances (``ddof >= n``) pass through as in NumPy.

    >>> import minidiff as md
    >>> md.std(md.tensor([1.0, 3.0])).item()
    1.0
    >>> md.grad(lambda x: md.std(x))(md.tensor([2.0, 2.0])).tolist()   # zero variance
    [0.0, 0.0]
    >>> md.std(md.tensor([[1.0, 3.0], [2.0, 4.0]]), axis=0, keepdims=True, ddof=1).shape
    (1, 2)
    """
    v = var(x, axis=axis, keepdims=keepdims, ddof=ddof)
    flat = equal(v, 0)
    return where(flat, 0.0, sqrt(where(flat, 1.0, v)))


def repeat(x: ArrayLike, repeats: ArrayLike, axis: Axis = None) -> Tensor:
    """Repeat each element ``repeats`` times along ``axis`` (of the flattened array if None), as
    ``numpy.repeat``; differentiable (gathering, whose transpose sums the copies back).

    >>> import minidiff as md
    >>> md.repeat(md.tensor([1.0, 2.0]), 2).tolist(), md.tensor([[1, 2]]).repeat([1, 2], axis=1).tolist()
    ([1.0, 1.0, 2.0, 2.0], [[1, 2, 2]])
    """

    x = asarray(x)
    if axis is None:
        x, axis = ravel(x), 0
    ax = normalize_one_axis("repeat", axis, x.ndim)
    xp = x.device.xp
    counts = repeats.detach()._data if isinstance(repeats, Tensor) else repeats
    try:
        index = xp.repeat(xp.arange(x.shape[ax]), counts)
    except (ValueError, TypeError) as exc:
        raise ShapeError(f"repeat: cannot repeat axis {ax} of shape {x.shape} by {repeats!r}: {exc}") from exc
    return take(x, index, axis=ax)
