"""NumPy's own functions on minidiff tensors: the NEP 13 (``__array_ufunc__``) and NEP 18
(``__array_function__``) protocols, and the tables that say where each NumPy name goes.

When any argument of a NumPy ufunc (``np.sin``, ``np.add``, the operators of an ndarray) or of a NumPy
array function (``np.sum``, ``np.dot``, ``np.linalg.solve``) is a :class:`~minidiff.Tensor`, NumPy hands
the call to :meth:`Tensor.__array_ufunc__` / :meth:`Tensor.__array_function__`, which land here:

1. A name in :data:`UFUNCS` or :data:`FUNCTIONS` calls its minidiff function, with NumPy's keywords
   mapped onto minidiff's (``axis``, ``keepdims``, ``axes``, ``a_min``/``a_max``; ``dtype=`` of the
   reductions casts the input first).  The result is a Tensor and differentiates exactly as the minidiff
   function does, in every mode and nesting.  Targets are looked up *by name* at call time (``linalg.eigh``
   is ``md.linalg.eigh`` when the call happens), so a function added to minidiff later is reached without
   editing the table.
2. Anything minidiff cannot honour — a NumPy function with no minidiff equivalent, a keyword the
   equivalent lacks (ufunc ``out=`` and ``where=``, ``initial=``, an unsupported ``dtype=``), a ufunc
   method other than ``__call__``, ``reduce``, ``accumulate`` and ``outer`` — depends on the arguments:

   * if any argument carries derivative information (a :class:`~minidiff.tensor.Tracer`: a dual number,
     a tape entry including a ``requires_grad=True`` leaf, a vmapped batch), it raises
     :class:`~minidiff.errors.UnsupportedError`, naming the NumPy function, what is missing and the
     minidiff function to use where one exists.  A derivative is never dropped silently.
   * otherwise (only concrete tensors, no derivative at stake) NumPy computes it on the host arrays
     (each tensor converted with ``.numpy()``).  Array results come back as tensors on the tensors'
     device; NumPy scalars and other Python objects are returned as NumPy returns them; with ``out=``
     NumPy's result (the caller's own array) is returned unchanged, so ``a += t`` keeps ``a`` an ndarray.
3. ``out=`` naming a tensor always raises: tensors are values, never written in place.

>>> import numpy as np
>>> import minidiff as md
>>> md.grad(lambda x: np.sum(np.sin(x)))(md.tensor([0.0, 1.0])).tolist() == np.cos([0.0, 1.0]).tolist()
True
>>> np.arange(2.0) + md.tensor([1.0, 2.0])      # ndarray + Tensor is a Tensor
tensor([1., 3.])

Regenerate the support table of ``docs/numpy.md`` with ``python -m minidiff.primitives.numpy_api --write
docs/numpy.md`` (without arguments it prints the table).
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from ..backend import numpy_module as _np
from ..errors import UnsupportedError, describe
from ..tensor.core import Tensor, Tracer

__all__ = [
    "UFUNCS",
    "SPECIAL_UFUNCS",
    "FUNCTIONS",
    "Rule",
    "array_ufunc",
    "array_function",
    "support_table",
    "write_table",
]


@dataclass(frozen=True)
class Rule:
    """Where one NumPy name goes.

    ``target``: the minidiff function, a dotted name under ``minidiff`` (``"sum"``, ``"linalg.solve"``),
    looked up when called.  ``call``: an adapter written with NumPy's parameter names, used instead of
    the target (the target then only names what the adapter calls, for the docs and for error hints).
    ``renames``: NumPy keyword -> minidiff keyword.  ``cast_dtype``: ``dtype=`` casts the first argument.
    ``ignore``: NumPy keywords that do not change the result.  ``note``: shown in the docs table.
    ``raw``: ``call`` receives the NumPy function and its arguments untouched (the value-only rows).
    """

    target: str
    call: Callable | None = None
    renames: tuple[tuple[str, str], ...] = ()
    cast_dtype: bool = False
    ignore: tuple[str, ...] = ()
    note: str = ""
    raw: bool = False  # ``call`` takes (numpy function, args, kwargs) as NumPy received them


class _Unsupported(Exception):
    """Internal: this call cannot go to minidiff (the message says why); see rule 2 of the module."""


def _md():
    return sys.modules["minidiff"]


def resolve(target: str) -> Any:
    """The minidiff function named ``target`` (``"sum"``, ``"linalg.eigh"``), or None if it is missing.

    >>> resolve("linalg.inv").__name__, resolve("linalg.no_such_function")
    ('inv', None)
    """
    obj = _md()
    for part in target.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _target(rule: Rule):
    fn = rule.call or resolve(rule.target)
    if fn is None:
        raise _Unsupported(f"minidiff has no md.{rule.target} (yet)")
    return fn


# ----------------------------------------------------------------------------- composites
# NumPy spellings minidiff has no primitive of its own for, written with minidiff functions, so they
# differentiate (to any order) through the primitives they are made of.
_LN2, _LN10 = 0.6931471805599453, 2.302585092994046


def _identity(x):
    return _md().asarray(x)


def _exp2(x):
    return _md().exp(_md().multiply(x, _LN2))


def _log2(x):
    return _md().log(x) * (1.0 / _LN2)


def _log10(x):
    return _md().log(x) * (1.0 / _LN10)


def _reciprocal(x):
    return _md().divide(1.0, x)


def _ceil(x):
    md = _md()
    return md.negative(md.floor(md.negative(x)))


def _isinf(x):
    md = _md()
    return md.logical_and(md.logical_not(md.isfinite(x)), md.logical_not(md.isnan(x)))


def _logaddexp(x, y):
    md = _md()
    return md.maximum(x, y) + md.log1p(md.exp(md.negative(md.abs(md.subtract(x, y)))))


def _value_of(v):
    """The host value of a tensor whose derivative cannot matter (see :func:`_on_values`)."""
    if isinstance(v, Tensor):
        value = v.detach()
        if isinstance(value, Tracer):
            raise _Unsupported("a batch of values inside vmap has no single value to compute on")
        return value.numpy()
    if isinstance(v, (list, tuple)):
        return type(v)(_value_of(i) for i in v)
    return v


def _on_values(func, args, kwargs):
    """NumPy's ``func`` on the values of the arguments, for functions whose result carries no
    derivative whatever the inputs (indices, counts, rounding): detaching loses nothing."""
    device = next(_leaves((args, kwargs), Tensor)).device
    return _wrap(func(*_value_of(args), **{k: _value_of(v) for k, v in kwargs.items()}), device)


def _ufunc_on_values(name: str):
    def run(*inputs):
        return _on_values(getattr(_np, name), inputs, {})

    return run


_DEG = 0.017453292519943295  # π / 180


def _scaled(factor: float):
    def scaled(x):
        return _md().multiply(x, factor)

    return scaled


def _logaddexp2(x, y):
    md = _md()
    return _logaddexp(md.multiply(x, _LN2), md.multiply(y, _LN2)) * (1.0 / _LN2)


def _hypot(x, y):
    md = _md()
    return md.sqrt(md.square(x) + md.square(y))


def _fmax(x, y):
    md = _md()
    return md.where(md.isnan(y), x, md.where(md.isnan(x), y, md.maximum(x, y)))


def _fmin(x, y):
    md = _md()
    return md.where(md.isnan(y), x, md.where(md.isnan(x), y, md.minimum(x, y)))


def _float_power(x, y):
    md = _md()
    x = md.asarray(x).astype("float64") if isinstance(x, Tensor) else x
    y = md.asarray(y).astype("float64") if isinstance(y, Tensor) else y
    return md.power(x, y)


# fmt: off
#: NumPy ufunc name -> minidiff.  Binary ones also serve ``ufunc.outer``.
UFUNCS: dict[str, Rule] = {
    "add": Rule("add"), "subtract": Rule("subtract"), "multiply": Rule("multiply"),
    "divide": Rule("divide", note="also np.true_divide"), "power": Rule("power"),
    "float_power": Rule("power", _float_power, note="tensors cast to float64 first"),
    "negative": Rule("negative"), "positive": Rule("asarray", _identity, note="identity"),
    "absolute": Rule("abs", note="also np.abs"), "fabs": Rule("abs"),
    "exp": Rule("exp"), "exp2": Rule("exp", _exp2, note="exp(x ln 2)"),
    "log": Rule("log"), "log2": Rule("log", _log2, note="log(x) / ln 2"),
    "log10": Rule("log", _log10, note="log(x) / ln 10"), "log1p": Rule("log1p"), "expm1": Rule("expm1"),
    "sqrt": Rule("sqrt"), "square": Rule("square"), "reciprocal": Rule("divide", _reciprocal, note="1 / x"),
    "sin": Rule("sin"), "cos": Rule("cos"), "tan": Rule("tan"),
    "arcsin": Rule("arcsin"), "arccos": Rule("arccos"), "arctan": Rule("arctan"),
    "arctan2": Rule("arctan2"), "sinh": Rule("sinh"), "cosh": Rule("cosh"), "tanh": Rule("tanh"),
    "logaddexp": Rule("log1p", _logaddexp, note="max(x, y) + log1p(exp(-abs(x - y)))"),
    "hypot": Rule("sqrt", _hypot, note="sqrt(x² + y²)"),
    "maximum": Rule("maximum", note="ties share the derivative equally"), "minimum": Rule("minimum"),
    "fmax": Rule("maximum", _fmax, note="NaN-ignoring, via md.where"),
    "fmin": Rule("minimum", _fmin, note="NaN-ignoring, via md.where"),
    "matmul": Rule("matmul"), "conjugate": Rule("asarray", _identity, note="identity (real tensors)"),
    "remainder": Rule("remainder", note="also np.mod"), "floor_divide": Rule("floor_divide"),
    "divmod": Rule("divmod"),
    "less": Rule("less"), "less_equal": Rule("less_equal"), "greater": Rule("greater"),
    "greater_equal": Rule("greater_equal"), "equal": Rule("equal"), "not_equal": Rule("not_equal"),
    "logical_and": Rule("logical_and"), "logical_or": Rule("logical_or"),
    "logical_not": Rule("logical_not"), "logical_xor": Rule("logical_xor"),
    "sign": Rule("sign"), "floor": Rule("floor"), "ceil": Rule("floor", _ceil, note="-floor(-x)"),
    "rint": Rule("stop_gradient", _ufunc_on_values("rint"), note="NumPy on the values (derivative 0)"),
    "trunc": Rule("stop_gradient", _ufunc_on_values("trunc"), note="NumPy on the values (derivative 0)"),
    "deg2rad": Rule("multiply", _scaled(_DEG), note="x · π/180"), "radians": Rule("multiply", _scaled(_DEG)),
    "rad2deg": Rule("multiply", _scaled(1 / _DEG), note="x · 180/π"),
    "degrees": Rule("multiply", _scaled(1 / _DEG)),
    "logaddexp2": Rule("log1p", _logaddexp2, note="logaddexp(x ln 2, y ln 2) / ln 2"),
    "isfinite": Rule("isfinite"), "isnan": Rule("isnan"), "isinf": Rule("isfinite", _isinf, note="not isfinite and not isnan"),
}
#: Ufuncs of ``scipy.special`` (NumPy ufuncs made by SciPy, so tensors reach them through NEP 13 too).
SPECIAL_UFUNCS: dict[str, Rule] = {"erf": Rule("erf")}
#: ``ufunc.reduce`` and ``ufunc.accumulate`` -> minidiff reduction (NumPy's default ``axis=0``).
REDUCE = {"add": "sum", "multiply": "prod", "maximum": "max", "minimum": "min",
          "logical_and": "all", "logical_or": "any"}
ACCUMULATE = {"add": "cumsum"}
# fmt: on

_UFUNC_DEFAULTS = {"where": True, "casting": "same_kind", "order": "K", "subok": True, "signature": None}


# ----------------------------------------------------------------------------- array-function adapters
# Each takes NumPy's parameter names; what it does not accept is reported as an unsupported keyword.
def _where(condition, x=None, y=None):
    if x is None and y is None:  # np.nonzero: indices, no derivative to keep
        return _on_values(_np.nonzero, (condition,), {})
    if x is None or y is None:
        raise _Unsupported("np.where needs both x and y, or neither")
    return _md().where(condition, x, y)


def _einsum(*operands, optimize=False):
    if not operands or not isinstance(operands[0], str):
        raise _Unsupported("only the subscripts-string form of einsum is supported")
    return _md().einsum(operands[0], *operands[1:])


def _reshape(a, shape, order="C", copy=None):
    if order != "C":
        raise _Unsupported(f"order={order!r} (only 'C')")
    return _md().reshape(a, shape)


def _ravel(a, order="C"):
    if order != "C":
        raise _Unsupported(f"order={order!r} (only 'C')")
    return _md().ravel(a)


def _trace(a, offset=0, axis1=0, axis2=1):
    md = _md()
    return md.trace(md.moveaxis(md.asarray(a), (axis1, axis2), (-2, -1)), offset)


def _inner(a, b):
    md = _md()
    a, b = md.asarray(a), md.asarray(b)
    if a.ndim == 0 or b.ndim == 0:
        return md.multiply(a, b)
    return md.tensordot(a, b, axes=([-1], [-1]))


def _vdot(a, b):
    md = _md()
    return md.sum(md.ravel(a) * md.ravel(b))


def _multi_dot(arrays):
    return functools.reduce(_md().matmul, arrays)


def _size(a, axis=None):
    a = _md().asarray(a)
    return a.size if axis is None else a.shape[axis]


def _like(fill: str):
    def like(a, dtype=None, shape=None):
        md = _md()
        a = md.asarray(a)
        make = md.zeros if fill == "zeros" else md.ones
        return make(a.shape if shape is None else shape, dtype=dtype or a.dtype, device=a.device)

    return like


def _full_like(a, fill_value, dtype=None, shape=None):
    md = _md()
    a = md.asarray(a)
    shape, dtype = a.shape if shape is None else tuple(shape), dtype or a.dtype
    if isinstance(fill_value, Tensor):  # a traced fill value keeps its derivative
        return md.broadcast_to(md.asarray(fill_value).astype(dtype), shape)
    return md.full(shape, fill_value, dtype=dtype, device=a.device)


def _isclose(a, b, rtol=1e-05, atol=1e-08):
    md = _md()
    a, b = md.asarray(a).detach(), md.asarray(b).detach()  # a comparison: no derivative to keep
    return md.less_equal(md.abs(a - b), atol + rtol * md.abs(b))


def _average(a, axis=None, weights=None, keepdims=False):
    md = _md()
    if weights is None:
        return md.mean(a, axis=axis, keepdims=keepdims)
    a, w = md.asarray(a), md.asarray(weights)
    if w.shape != a.shape:
        if axis is None or not isinstance(axis, int) or w.ndim != 1:
            raise _Unsupported(f"weights of shape {w.shape} for an array of shape {a.shape}")
        w = md.reshape(w, tuple(-1 if i == axis % a.ndim else 1 for i in range(a.ndim)))
    w = md.broadcast_to(w, a.shape)
    return md.sum(a * w, axis=axis, keepdims=keepdims) / md.sum(w, axis=axis, keepdims=keepdims)


def _tri(lower: bool):
    def tri(m, k=0):
        md = _md()
        m = md.asarray(m)
        rows, cols = m.shape[-2], m.shape[-1]
        keep = m.device.xp.tri(rows, cols, k if lower else k - 1, dtype=bool)
        mask = md.asarray(keep if lower else ~keep, device=m.device)
        return md.where(mask, m, md.zeros_like(m))

    return tri


def _atleast(ndim: int):
    def atleast(*arys):
        out = [_padded_shape(_md().asarray(a), ndim) for a in arys]
        return out[0] if len(out) == 1 else tuple(out)

    return atleast


def _padded_shape(a, ndim: int):
    """``a`` with size-1 axes added as ``np.atleast_{1,2,3}d`` adds them."""
    if a.ndim >= ndim:
        return a
    if a.ndim == 0:
        shape = (1,) * ndim
    elif ndim == 2 or a.ndim == 2:  # (n,) -> (1, n); (m, n) -> (m, n, 1)
        shape = (1, *a.shape) if ndim == 2 else (*a.shape, 1)
    else:  # (n,) -> (1, n, 1)
        shape = (1, *a.shape, 1)
    return _md().reshape(a, shape)


def _broadcast_arrays(*args):
    md = _md()
    xs = [md.asarray(a) for a in args]
    shape = _np.broadcast_shapes(*[x.shape for x in xs])
    return tuple(md.broadcast_to(x, shape) for x in xs)


def _diagonal(a, offset=0, axis1=0, axis2=1):
    md = _md()
    if offset != 0:
        raise _Unsupported(f"offset={offset!r} (only 0)")
    a = md.moveaxis(md.asarray(a), (axis1, axis2), (-2, -1))
    n, m = a.shape[-2:]
    return md.sum(a * md.eye(n, m, dtype=a.dtype, device=a.device), axis=-1)[..., : min(n, m)]


def _diag(v, k=0):
    md = _md()
    v = md.asarray(v)
    if k != 0 or v.ndim not in (1, 2):
        raise _Unsupported(f"k={k!r} with a {v.ndim}-d input (only k=0, 1-d or 2-d)")
    if v.ndim == 2:
        return _diagonal(v)
    return md.expand_dims(v, 1) * md.eye(v.shape[0], dtype=v.dtype, device=v.device)


def _array_equal(a1, a2):
    md = _md()
    a1, a2 = md.asarray(a1), md.asarray(a2)
    return a1.shape == a2.shape and bool(md.all(md.equal(a1.detach(), a2.detach())))


def _result_type(*arrays_and_dtypes):
    return _np.result_type(*[a.dtype if isinstance(a, Tensor) else a for a in arrays_and_dtypes])


def _matrix_transpose(x):
    return _md().swapaxes(x, -1, -2)


def _hstack(tup):
    md = _md()
    xs = [md.reshape(x, (-1,)) if md.asarray(x).ndim == 0 else x for x in tup]
    return md.concatenate(xs, axis=0 if md.asarray(xs[0]).ndim == 1 else 1)


def _vstack(tup):
    md = _md()
    xs = [md.reshape(x, (1, -1)) if md.asarray(x).ndim < 2 else x for x in tup]
    return md.concatenate(xs, axis=0)


def _order(a, axis: int):
    """``argsort`` of the values of ``a`` along ``axis`` (stable), as a backend integer array."""
    value = a.detach()
    if isinstance(value, Tracer):
        raise _Unsupported("sorting inside vmap is not supported")
    return value.device.xp.argsort(value._data, axis=axis, kind="stable")


def _gather(a, index, axis: int):
    """``np.take_along_axis(a, index, axis)`` as one differentiable integer-array index of ``a``."""
    xp = a.device.xp
    grid = [xp.arange(n).reshape([-1 if j == i else 1 for j in range(a.ndim)]) for i, n in enumerate(a.shape)]
    grid[axis] = index
    return _md().getitem(a, tuple(grid))


def _take_along_axis(arr, indices, axis=-1):
    md = _md()
    arr = md.asarray(arr)
    if axis is None:
        arr, axis = md.ravel(arr), 0
    index = _value_of(indices)
    return _gather(arr, arr.device.xp.asarray(index), axis % arr.ndim)


def _sort(a, axis=-1, kind=None, stable=None):
    md = _md()
    a = md.asarray(a)
    if axis is None:
        a, axis = md.ravel(a), 0
    axis %= a.ndim
    return _gather(a, _order(a, axis), axis)


def _median(a, axis=None, keepdims=False):
    md = _md()
    a = md.asarray(a)
    shape = a.shape
    if axis is None:
        a, axis = md.ravel(a), 0
    axis %= a.ndim
    n = a.shape[axis]
    middle = md.take(_sort(a, axis=axis), [(n - 1) // 2, n // 2], axis=axis)
    out = md.mean(middle, axis=axis, keepdims=keepdims)
    return md.reshape(out, (1,) * len(shape)) if keepdims and a.shape != shape else out


_VALUES = "NumPy on the values: the result carries no derivative"
_VALUE_FUNCTIONS = (
    "argsort",
    "nonzero",
    "argwhere",
    "flatnonzero",
    "count_nonzero",
    "searchsorted",
    "digitize",
    "round",
    "around",
    "linalg.matrix_rank",
)
# fmt: off
_REDUCTION: dict[str, Any] = dict(cast_dtype=True)
#: NumPy array function (dotted name below ``numpy``) -> minidiff.
FUNCTIONS: dict[str, Rule] = {
    "sum": Rule("sum", **_REDUCTION), "mean": Rule("mean", **_REDUCTION), "var": Rule("var", **_REDUCTION),
    "std": Rule("std", **_REDUCTION),
    "max": Rule("max"), "min": Rule("min"), "amax": Rule("max"), "amin": Rule("min"),
    "prod": Rule("prod", **_REDUCTION), "cumsum": Rule("cumsum", **_REDUCTION),
    "average": Rule("mean", _average, note="weights of a's shape or 1-D along one axis"),
    "any": Rule("any"), "all": Rule("all"), "argmax": Rule("argmax"), "argmin": Rule("argmin"),
    "where": Rule("where", _where, note="three-argument form"),
    "clip": Rule("clip", renames=(("min", "a_min"), ("max", "a_max"))),
    "dot": Rule("dot"), "vdot": Rule("sum", _vdot, note="real tensors"),
    "inner": Rule("tensordot", _inner, note="over the last axes"), "outer": Rule("outer"), "tensordot": Rule("tensordot"),
    "einsum": Rule("einsum", _einsum, ignore=("optimize",), note="subscripts-string form"),
    "reshape": Rule("reshape", _reshape, note="order='C'"), "ravel": Rule("ravel", _ravel, note="order='C'"),
    "transpose": Rule("transpose"), "swapaxes": Rule("swapaxes"), "moveaxis": Rule("moveaxis"),
    "expand_dims": Rule("expand_dims"), "squeeze": Rule("squeeze"),
    "broadcast_to": Rule("broadcast_to", ignore=("subok",)),
    "concatenate": Rule("concatenate"), "stack": Rule("stack"),
    "hstack": Rule("concatenate", _hstack, note="axis 1 (0 for 1-D)"), "vstack": Rule("concatenate", _vstack, note="1-D as rows, axis 0"),
    "split": Rule("split"), "repeat": Rule("repeat"), "take": Rule("take"), "pad": Rule("pad"), "flip": Rule("flip"),
    "trace": Rule("trace", _trace, note="any offset and axis pair", **_REDUCTION),
    "tril": Rule("where", _tri(True), note="triangular mask"),
    "triu": Rule("where", _tri(False), note="triangular mask"),
    "copy": Rule("asarray", _identity, ignore=("order", "subok"), note="identity: tensors are values"),
    "zeros_like": Rule("zeros_like", _like("zeros"), ignore=("order", "subok", "device"), note="a constant"),
    "empty_like": Rule("zeros_like", _like("zeros"), ignore=("order", "subok", "device"), note="zeros"),
    "ones_like": Rule("ones_like", _like("ones"), ignore=("order", "subok", "device"), note="a constant"),
    "full_like": Rule("full", _full_like, ignore=("order", "subok", "device"),
                      note="a tensor fill_value keeps its derivative"),
    "shape": Rule("Tensor.shape", lambda a: _md().asarray(a).shape, note="the attribute"),
    "ndim": Rule("Tensor.ndim", lambda a: _md().asarray(a).ndim, note="the attribute"),
    "size": Rule("Tensor.size", _size, note="the attribute"),
    "atleast_1d": Rule("reshape", _atleast(1)), "atleast_2d": Rule("reshape", _atleast(2)),
    "atleast_3d": Rule("reshape", _atleast(3)),
    "broadcast_arrays": Rule("broadcast_to", _broadcast_arrays, ignore=("subok",)),
    "diagonal": Rule("eye", _diagonal, note="offset=0: sum(a * eye, axis=-1)"),
    "diag": Rule("eye", _diag, note="k=0"),
    "result_type": Rule("Tensor.dtype", _result_type, note="of the dtypes"),
    "iscomplexobj": Rule("Tensor.dtype", lambda x: _md().asarray(x).dtype.kind == "c", note="of the dtype"),
    "isrealobj": Rule("Tensor.dtype", lambda x: _md().asarray(x).dtype.kind != "c", note="of the dtype"),
    "array_equal": Rule("equal", _array_equal, note="values only"),
    "sort": Rule("getitem", _sort, ignore=("kind", "stable"), note="gather at the argsort of the values"),
    "median": Rule("mean", _median, note="middle of the sort"),
    "take_along_axis": Rule("getitem", _take_along_axis),
    **{name: Rule("stop_gradient", _on_values, raw=True, note=_VALUES) for name in _VALUE_FUNCTIONS},
    "allclose": Rule("allclose"), "isclose": Rule("less_equal", _isclose, note="values only"),
    "linalg.solve": Rule("linalg.solve"), "linalg.inv": Rule("linalg.inv"),
    "linalg.det": Rule("linalg.det"), "linalg.slogdet": Rule("linalg.slogdet"),
    "linalg.cholesky": Rule("linalg.cholesky"), "linalg.qr": Rule("linalg.qr"),
    "linalg.eigh": Rule("linalg.eigh"), "linalg.eigvalsh": Rule("linalg.eigvalsh"),
    "linalg.svd": Rule("linalg.svd"), "linalg.svdvals": Rule("linalg.svdvals"),
    "linalg.norm": Rule("linalg.norm"), "linalg.vector_norm": Rule("linalg.vector_norm"),
    "linalg.matrix_norm": Rule("linalg.matrix_norm"), "linalg.matrix_power": Rule("linalg.matrix_power"),
    "linalg.trace": Rule("linalg.trace"), "linalg.matrix_transpose": Rule("swapaxes", _matrix_transpose, note="swapaxes(x, -1, -2)"),
    "matrix_transpose": Rule("swapaxes", _matrix_transpose, note="swapaxes(x, -1, -2)"),
    "linalg.multi_dot": Rule("matmul", _multi_dot, note="chained matmul"),
}
# fmt: on

# Where a NumPy name is missing from the tables, the hint names the minidiff way if there is one.
HINTS = {
    "percentile": "minidiff has no percentile; np.median (a sort, then the middle) is supported.",
    "quantile": "minidiff has no quantile; np.median (a sort, then the middle) is supported.",
    "cumprod": "minidiff has no cumprod; md.exp(md.cumsum(md.log(x))) for positive x.",
}


# ----------------------------------------------------------------------------- the protocols
def array_ufunc(ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
    """``Tensor.__array_ufunc__`` (NEP 13): ``ufunc.method(*inputs, **kwargs)`` through minidiff.

    >>> import numpy as np
    >>> import minidiff as md
    >>> np.add.reduce(md.tensor([[1.0, 2.0], [3.0, 4.0]]), axis=1).tolist()
    [3.0, 7.0]
    """
    if not _known(inputs) or not _known(kwargs.get("out") or ()):
        return NotImplemented
    name = f"np.{ufunc.__name__}" + ("" if method == "__call__" else f".{method}")
    if _any_tensor(kwargs.get("out") or ()):
        raise UnsupportedError(
            f"{name}: out= names a minidiff tensor, and tensors are values that are never written in "
            f"place; use the returned tensor (y = {name}(...)) instead"
        )
    if method == "at" and isinstance(inputs[0], Tensor):
        raise UnsupportedError(
            f"{name}: writes in place into a minidiff tensor of shape {inputs[0].shape}, and tensors are "
            "values; use the functional update t.at[index].add(v) (or .set(v)) instead"
        )
    try:
        return _ufunc_call(ufunc, method, inputs, kwargs)
    except _Unsupported as why:
        hint = _hint(ufunc.__name__, _rule_of(ufunc), method)
        return _fallback(name, str(why), getattr(ufunc, method), inputs, kwargs, hint)


def array_function(func: Callable, types: Collection[type], args: tuple, kwargs: dict) -> Any:
    """``Tensor.__array_function__`` (NEP 18): the NumPy function ``func`` through minidiff.

    >>> import numpy as np
    >>> import minidiff as md
    >>> np.linalg.det(md.tensor([[2.0, 0.0], [0.0, 3.0]]))
    tensor(6.)
    """
    if not all(issubclass(t, (Tensor, _np.ndarray)) for t in types):
        return NotImplemented
    name = numpy_name(func)
    rule = FUNCTIONS.get(name)
    try:
        return _function_call(name, rule, func, args, kwargs)
    except _Unsupported as why:
        return _fallback(f"np.{name}", str(why), func, args, kwargs, _hint(name, rule))


def numpy_name(func: Callable) -> str:
    """The dotted name of a NumPy function below ``numpy`` (``"sum"``, ``"linalg.solve"``).

    >>> import numpy as np
    >>> numpy_name(np.linalg.solve), numpy_name(np.sum)
    ('linalg.solve', 'sum')
    """
    module = getattr(func, "__module__", "") or ""
    prefix = module[len("numpy") :].lstrip(".") if module.startswith("numpy") else module
    return f"{prefix}.{func.__name__}" if prefix else func.__name__


# ----------------------------------------------------------------------------- ufunc calls
def _ufunc_call(ufunc, method: str, inputs, kwargs):
    kwargs = {k: v for k, v in kwargs.items() if not (k in _UFUNC_DEFAULTS and _same(v, _UFUNC_DEFAULTS[k]))}
    dtype = kwargs.pop("dtype", None)
    if method == "__call__":
        fn = _target(_ufunc_rule(ufunc))
        _no_keywords(kwargs)
        result = fn(*[_cast(x, dtype) for x in inputs])
        if dtype is not None and _np.dtype(dtype) != getattr(result, "dtype", None):
            got = getattr(result, "dtype", "?")
            raise _Unsupported(f"dtype={_np.dtype(dtype)} is not supported (minidiff computes {got} here)")
        return result
    if method == "outer":
        fn = _target(_ufunc_rule(ufunc))
        _no_keywords(kwargs)
        md = _md()
        a, b = (md.asarray(_cast(x, dtype)) for x in inputs)
        return fn(md.reshape(a, a.shape + (1,) * b.ndim), b)
    table = {"reduce": REDUCE, "accumulate": ACCUMULATE}.get(method, {})
    if ufunc.__name__ not in table:
        raise _Unsupported(f"minidiff has no {method} of {ufunc.__name__}")
    fn = _target(Rule(table[ufunc.__name__]))
    axis = kwargs.pop("axis", 0)
    extra = {"keepdims": True} if method == "reduce" and kwargs.pop("keepdims", False) else {}
    _no_keywords(kwargs)
    (x,) = inputs
    return fn(_cast(x, dtype), axis=axis, **extra)


def _rule_of(ufunc) -> Rule | None:
    """The table entry of a NumPy ufunc, or of a ``scipy.special`` one (NumPy has no ``erf``)."""
    return UFUNCS.get(ufunc.__name__) or SPECIAL_UFUNCS.get(ufunc.__name__)


def _ufunc_rule(ufunc) -> Rule:
    rule = _rule_of(ufunc)
    if rule is None:
        raise _Unsupported("minidiff has no equivalent")
    return rule


def _no_keywords(kwargs) -> None:
    for key in kwargs:
        raise _Unsupported(f"keyword {key}= is not supported")


def _cast(x, dtype):
    """A tensor argument converted to ``dtype`` (differentiably between float dtypes)."""
    if dtype is None or not isinstance(x, Tensor):
        return x
    return x.astype(dtype)


# ----------------------------------------------------------------------------- array-function calls
def _function_call(name: str, rule: Rule | None, func, args, kwargs):
    if rule is None:
        raise _Unsupported("minidiff has no equivalent")
    if rule.raw:
        assert rule.call is not None  # a raw rule is declared with its adapter
        return rule.call(func, args, kwargs)
    params = _bound(name, func, args, kwargs)
    for key in rule.ignore:
        params.pop(key, None)
    if "out" in params:
        if _any_tensor(params["out"]):
            raise UnsupportedError(
                f"np.{name}: out= names a minidiff tensor; tensors are never written in place"
            )
        raise _Unsupported("keyword out= is not supported (minidiff returns new tensors)")
    first = next(iter(params))
    if rule.cast_dtype and "dtype" in params:
        params[first] = _cast(_md().asarray(params[first]), params.pop("dtype"))
    return _call(_target(rule), params, dict(rule.renames))


_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_EMPTY = inspect.Parameter.empty


@functools.cache
def _spec(fn) -> tuple[tuple[str, inspect._ParameterKind, object], ...]:
    """``(name, kind, default)`` of each parameter of ``fn``, computed once per function (binding with
    ``inspect.Signature.bind`` on every call would cost more than the minidiff operation itself)."""
    return tuple((p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values())


def _bound(name: str, func, args, kwargs) -> dict:
    """The arguments of a NumPy call by NumPy's parameter names, leaving out those given their default."""
    params, kwargs, i = {}, dict(kwargs), 0
    for pname, kind, default in _spec(func):
        if kind is inspect.Parameter.VAR_POSITIONAL:
            params[pname], i = tuple(args[i:]), len(args)
            continue
        if kind is inspect.Parameter.VAR_KEYWORD:
            params.update(kwargs)
            kwargs = {}
            continue
        if kind in _POSITIONAL and i < len(args):
            if pname in kwargs:
                raise TypeError(f"np.{name}: got multiple values for argument {pname!r}")
            value, i = args[i], i + 1
        elif kind is not inspect.Parameter.POSITIONAL_ONLY and pname in kwargs:
            value = kwargs.pop(pname)
        elif default is _EMPTY:
            raise TypeError(f"np.{name}: missing required argument {pname!r}")
        else:
            continue
        if default is _EMPTY or not _same(value, default):
            params[pname] = value
    if i < len(args) or kwargs:
        raise TypeError(f"np.{name}: unexpected arguments {args[i:]!r} {sorted(kwargs)}")
    return params


def _call(fn, params: dict, renames: dict):
    """Call ``fn`` with NumPy's arguments: the first one positionally, the others matched by name."""
    items = iter(params.items())
    first = next(items)[1]
    rest = {renames.get(k, k): v for k, v in items}
    spec = _spec(fn)
    args = list(first) if spec and spec[0][1] is inspect.Parameter.VAR_POSITIONAL else [first]
    if not any(kind is inspect.Parameter.VAR_KEYWORD for _, kind, _ in spec):
        named = {n for n, kind, _ in spec[1:] if kind is not inspect.Parameter.VAR_POSITIONAL}
        for key in rest:
            if key not in named:
                raise _Unsupported(f"keyword {key}= is not supported")
    for pname, kind, _ in spec[1:]:  # fill positional parameters in order, so positional-only ones work too
        if kind not in _POSITIONAL or pname not in rest:
            break
        args.append(rest.pop(pname))
    return fn(*args, **rest)


# ----------------------------------------------------------------------------- what minidiff cannot do
def _fallback(name: str, why: str, fn, args, kwargs, hint: str):
    """Rule 2 of the module: raise if a derivative is at stake, else let NumPy compute on the values."""
    tracer = next(_leaves((args, kwargs), Tracer), None)
    if tracer is not None:
        raise UnsupportedError(
            f"{name}: {why}, and an argument ({type(tracer).__name__} {describe(tracer)}) carries "
            f"derivatives that NumPy would silently drop. {hint}"
        )
    device = next(_leaves((args, kwargs), Tensor)).device
    result = fn(*_host(args), **_host(kwargs))
    return result if kwargs.get("out") is not None else _wrap(result, device)


def _hint(name: str, rule: Rule | None, method: str = "") -> str:
    if method and method != "__call__":
        reduce = ", ".join(sorted(REDUCE))
        return (
            f"minidiff supports ufunc.reduce of {reduce}, ufunc.accumulate of {', '.join(ACCUMULATE)}, "
            "and ufunc.outer of the binary ufuncs it has (see docs/numpy.md)."
        )
    if method and rule is not None and resolve(rule.target) is not None:
        return f"Use md.{rule.target}, or .detach() the argument if no derivative should flow."
    if rule is not None and rule.call is not None:
        return "Compute it with md.* functions, or .detach() the argument if no derivative should flow."
    if rule is not None and resolve(rule.target) is not None:
        accepted = _keywords(rule)
        said = f" (it accepts {', '.join(accepted)})" if accepted else ""
        return f"Use md.{rule.target}{said}, or .detach() the argument if no derivative should flow."
    short = name.rsplit(".", 1)[-1]
    if name in HINTS:
        return HINTS[name]
    if resolve(name) is not None or resolve(short) is not None:
        return f"Use md.{name if resolve(name) is not None else short} instead."
    return "Write it with minidiff functions (see docs/numpy.md), or .detach() the argument."


def _leaves(tree, kind):
    if isinstance(tree, kind):
        yield tree
    elif isinstance(tree, (list, tuple)):
        for item in tree:
            yield from _leaves(item, kind)
    elif isinstance(tree, dict):
        for item in tree.values():
            yield from _leaves(item, kind)


def _any_tensor(tree) -> bool:
    return next(_leaves(tree, Tensor), None) is not None


def _known(values) -> bool:
    """Whether every value is something this protocol may handle (NEP 13: defer to other array types)."""
    for v in values:
        if not isinstance(v, (Tensor, _np.ndarray, _np.generic)) and hasattr(type(v), "__array_ufunc__"):
            return False
    return True


def _host(tree):
    if isinstance(tree, Tensor):
        return tree.numpy()
    if isinstance(tree, list):
        return [_host(v) for v in tree]
    if isinstance(tree, tuple):
        items = [_host(v) for v in tree]
        return type(tree)(*items) if hasattr(tree, "_fields") else tuple(items)
    if isinstance(tree, dict):
        return {k: _host(v) for k, v in tree.items()}
    return tree


def _wrap(value, device):
    if isinstance(value, _np.ndarray):
        return _md().asarray(value, device=device)
    if isinstance(value, list):
        return [_wrap(v, device) for v in value]
    if isinstance(value, tuple):
        items = [_wrap(v, device) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    return value


def _same(value, default) -> bool:
    """Whether an argument equals a parameter's default (compared only for plain Python values)."""
    if value is default:
        return True
    plain = (str, bool, int, float, type(None))
    return isinstance(value, plain) and type(value) is type(default) and value == default


# ----------------------------------------------------------------------------- the docs table
def _keywords(rule: Rule) -> list[str]:
    """The NumPy arguments after the first that a rule honours (minidiff names mapped back)."""
    if rule.raw:
        return ["all of NumPy's"]
    fn = rule.call or resolve(rule.target)
    if fn is None or not callable(fn):
        return []
    back = {md_name: np_name for np_name, md_name in rule.renames}
    names = []
    for pname, kind, _ in _spec(fn)[1:]:
        if kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        names.append(f"{pname}/{back[pname]}" if pname in back else pname)
    if rule.cast_dtype:
        names.append("dtype")
    return [n for n in names if n not in rule.ignore]


def _row(name: str, rule: Rule, keywords: bool) -> str:
    if resolve(rule.target) is None and rule.call is None:
        cells = ["—"] * (3 if keywords else 2)
        cells[-1] = "not in minidiff yet: NumPy computes it on plain tensors; an error on traced ones"
        return f"| `np.{name}` | " + " | ".join(cells) + " |"
    shown = f"`t.{rule.target[7:]}`" if rule.target.startswith("Tensor.") else f"`md.{rule.target}`"
    how = f"composite: {rule.note}" if rule.call is not None and rule.note else rule.note
    if not keywords:
        return f"| `np.{name}` | {shown} | {how} |"
    honoured = ", ".join(f"`{k}`" for k in _keywords(rule)) or "—"
    return f"| `np.{name}` | {shown} | {honoured} | {how} |"


def support_table() -> str:
    """The Markdown table "NumPy name -> minidiff support", generated from :data:`UFUNCS` and :data:`FUNCTIONS`.

    >>> print(support_table().splitlines()[0])
    ### Ufuncs (NEP 13)
    """
    lines = ["### Ufuncs (NEP 13)", "", "| NumPy | minidiff | notes |", "|---|---|---|"]
    lines += [_row(n, r, keywords=False) for n, r in sorted(UFUNCS.items())]
    reduce = ", ".join(f"`np.{u}.reduce` → `md.{t}`" for u, t in sorted(REDUCE.items()))
    accumulate = ", ".join(f"`np.{u}.accumulate` → `md.{t}`" for u, t in sorted(ACCUMULATE.items()))
    lines += ["", f"Ufunc methods (keywords `axis`, `keepdims`, `dtype`): {reduce}; {accumulate};"]
    lines += ["and `.outer` of every binary ufunc above.", ""]
    lines += ["### `scipy.special` ufuncs (NEP 13)", "", "| SciPy | minidiff | notes |", "|---|---|---|"]
    for n, r in sorted(SPECIAL_UFUNCS.items()):
        lines.append(_row(n, r, keywords=False).replace(f"`np.{n}`", f"`scipy.special.{n}`", 1))
    lines.append("")
    head = ["| NumPy | minidiff | arguments after the first | notes |", "|---|---|---|---|"]
    for title, linalg in (("Array functions (NEP 18)", False), ("`np.linalg` (NEP 18)", True)):
        lines += [f"### {title}", "", *head]
        lines += [
            _row(n, r, keywords=True)
            for n, r in sorted(FUNCTIONS.items())
            if n.startswith("linalg.") == linalg
        ]
        lines.append("")
    return "\n".join(lines)


START, END = "<!-- numpy-support-table:start -->", "<!-- numpy-support-table:end -->"


def write_table(path: str) -> None:
    """Replace the text between the table markers of ``path`` with :func:`support_table`."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if START not in text or END not in text:
        raise ValueError(f"{path}: the markers {START} and {END} are missing")
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"{before}{START}\n{support_table()}\n{END}{after}")


def main(argv: list[str] | None = None) -> None:
    """``python -m minidiff.primitives.numpy_api [--write docs/numpy.md]``: print or write the support table."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--write"] and len(argv) == 2:
        write_table(argv[1])
    elif not argv:
        print(support_table())
    else:
        raise SystemExit("usage: python -m minidiff.primitives.numpy_api [--write docs/numpy.md]")


if __name__ == "__main__":
    main()
