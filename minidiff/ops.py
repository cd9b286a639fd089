"""The NumPy-named functions of minidiff: the primitives' public spellings and composites of them.

Composites (mean, var, softmax, log_softmax, ...) need no rules of their own: they are differentiated
through the primitives they are made of.
"""

from __future__ import annotations

from . import tensor as _tensor_module
from .creation import asarray
from .primitives.elementwise import (  # noqa: F401 - re-exported
    abs,
    add,
    astype,
    clip,
    cos,
    divide,
    equal,
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
    softplus,
    sqrt,
    square,
    subtract,
    tanh,
    where,
)
from .primitives.linalg import dot, einsum, matmul, outer  # noqa: F401
from .primitives.reductions import all, any, argmax, argmin, logsumexp, max, min, prod  # noqa: F401
from .primitives.shape import (  # noqa: F401
    broadcast_to,
    concatenate,
    cumsum,
    expand_dims,
    flip,
    getitem,
    moveaxis,
    normalize_axis,
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
from .tensor import Tensor


def mean(x, axis=None, keepdims=False) -> Tensor:
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


def var(x, axis=None, keepdims=False, ddof=0) -> Tensor:
    """Variance over ``axis`` (``ddof`` as in NumPy)."""
    x = asarray(x)
    axes = normalize_axis("var", axis, x.ndim)
    n = 1
    for a in axes:
        n *= x.shape[a]
    centered = x - mean(x, axis=axes, keepdims=True)
    return sum(centered * centered, axis=axes, keepdims=keepdims) / (n - ddof)


def log_softmax(x, axis=-1) -> Tensor:
    """``x - logsumexp(x)`` along ``axis``."""
    x = asarray(x)
    normalize_axis("log_softmax", axis, x.ndim)
    return x - logsumexp(x, axis=axis, keepdims=True)


def softmax(x, axis=-1) -> Tensor:
    """``exp(x) / sum(exp(x))`` along ``axis``, computed stably."""
    x = asarray(x)
    normalize_axis("softmax", axis, x.ndim)
    return exp(x - logsumexp(x, axis=axis, keepdims=True))


def trace(x) -> Tensor:
    """Sum of the diagonal of the last two axes."""
    from .creation import eye

    x = asarray(x)
    return sum(x * eye(x.shape[-2], x.shape[-1], dtype=x.dtype, device=x.device), axis=(-2, -1))


def stop_gradient(x) -> Tensor:
    """The value of ``x`` with every derivative dropped (same as ``x.detach()``)."""
    return asarray(x).detach()


def allclose(a, b, rtol=1e-5, atol=1e-8) -> bool:
    """Whether two tensors are elementwise equal within tolerances (values only, no derivative)."""
    a, b = asarray(a), asarray(b)
    return bool(a.device.xp.allclose(a._data, asarray(b, device=a.device)._data, rtol=rtol, atol=atol))


_tensor_module._ops = __import__(__name__, fromlist=["*"])
