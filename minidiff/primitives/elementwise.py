"""Elementwise primitives.

Each line declares an op with its derivative rule per input, ``rule(g, ans, *inputs) -> g · d``, and
what those rules read (``reads=``, in the rules' own names: the tape keeps exactly that).  The
Jacobian of an elementwise op is diagonal, so one rule is both the JVP (``g`` a tangent) and the VJP
(``g`` a cotangent).

Conventions where the derivative is not defined — the same in both modes and at every order
(forward-over-reverse, reverse-over-forward, reverse-over-reverse), tested in
``tests/test_conventions.py``:

* ``relu'(0) = 0``; ``abs'(0) = 0`` (the sign); their second derivatives are 0 everywhere;
* ``clip(x, lo, hi)' = 1`` on the closed interval ``[lo, hi]`` (bounds included), 0 outside;
* ``maximum``/``minimum`` split a tie evenly: ½ to each side (``maximum(x, x)' = 1``); the ``max``/
  ``min`` reductions share the derivative evenly among the k tied elements (1/k each);
* ``x**y``: ``d/dx = 0`` where ``y = 0`` (``x**0 = 1`` for every x, 0 included); ``d/dy = 0`` where
  ``x <= 0`` (the limit from the right at 0 for ``y > 0``; no real derivative for ``x < 0``); integer
  powers at ``x = 0`` are exact (``x**2`` has derivatives 0 and 2 there).  The rules route the
  excluded points through a safe base (1), so no NaN appears at any order — not even through a
  ``where`` whose untaken branch is differentiated with a zero cotangent.  The mixed second
  derivative at ``x = 0, y = 1`` does not exist (``∂/∂x (x**y·log x) → −∞``): there the two orders
  of differentiation give 1 (``∂/∂y`` of ``d/dx``) and 0 (``∂/∂x`` of ``d/dy``);
* ``arcsin``/``arccos`` at ±1 have infinite derivatives (their domain's ends), ``tan`` at its poles
  infinite values, and ``arctan2`` at the origin a NaN derivative (0/0): the functions themselves
  are not differentiable there, and the rules say so rather than invent a value;
* ``sqrt'(0) = +inf`` as in NumPy and JAX (with NumPy's divide-by-zero warning); the derivative of
  ``where(x > 0, sqrt(x), 0)`` at 0 is then NaN in reverse mode (``0·inf``), as in JAX: write
  ``sqrt(where(x > 0, x, 1))`` for the untaken branch (the "double where").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Number
from typing import Any

from ..backend import erf as _backend_erf
from ..backend import numpy_module
from ..tensor.core import ArrayLike, DTypeLike, Tensor
from .creation import asarray
from .registry import Primitive, bind, bind_args, elementwise, nondifferentiable


def _share(x, y):
    """1 where x wins, ½ on a tie, 0 where y wins (the tie convention of maximum and minimum)."""
    return where(x > y, 1.0, where(x == y, 0.5, 0.0))


def _positive_or_one(x):
    """x where x > 0, and 1 elsewhere: a base at which x**y and log(x) are finite at every order."""
    return where(greater(x, 0), x, 1.0)


def _log_positive(x):
    """log(x) where x > 0, and 0 elsewhere (d(x**y)/dy at x <= 0 taken as 0).  Only safe values reach
    ``log``: the untaken branch of a ``where`` is still differentiated (with a zero cotangent), and
    log(0) there would turn that zero into NaN (the where-NaN trap)."""
    if isinstance(x, Number):
        return math.log(x) if x > 0 else 0.0
    return log(_positive_or_one(x))


def _dpow_dx(x, y):
    """d(x**y)/dx = y·x**(y-1), taken as 0 at x = y = 0 (x**0 = 1 for every x, 0 included), where
    0·0**-1 would be NaN.  There x is replaced by 1 on the side, so no NaN at any order; elsewhere the
    formula is left alone, so its derivative in y stays right (x**(y-1) + y·x**(y-1)·log x)."""
    if isinstance(y, Number):
        return y * x ** (y - 1) if y != 0 else 0.0
    both_zero = logical_and(equal(x, 0), equal(y, 0))
    x_safe = where(both_zero, 1.0, x)
    return where(both_zero, 0.0, y * x_safe ** (y - 1))


def _dpow_dy(x, y):
    """d(x**y)/dy = x**y·log(x) where x > 0, and 0 where x <= 0 (at x = 0 the limit from the right
    for y > 0; for x < 0 the real power has no derivative in y).  x**y is recomputed at the safe base
    rather than read from the output, whose own derivative at x = 0 can be infinite (0·inf = NaN)."""
    if isinstance(x, Number):
        return x**y * math.log(x) if x > 0 else 0.0 * y
    return _positive_or_one(x) ** y * _log_positive(x)


_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)  # erf'(x) = 2/sqrt(pi) * exp(-x**2)

# fmt: off
# name           impl on backend arrays                 derivative rule per input (JVP = VJP)     what the rules read (the tape keeps it)
add_p = elementwise("add", lambda xp, x, y: xp.add(x, y), lambda g, ans, x, y: g, lambda g, ans, x, y: g)
subtract_p = elementwise("subtract", lambda xp, x, y: xp.subtract(x, y), lambda g, ans, x, y: g, lambda g, ans, x, y: -g)
multiply_p = elementwise("multiply", lambda xp, x, y: xp.multiply(x, y), lambda g, ans, x, y: g * y, lambda g, ans, x, y: g * x, reads=("y", "x"))
divide_p = elementwise("divide", lambda xp, x, y: xp.divide(x, y), lambda g, ans, x, y: g / y, lambda g, ans, x, y: -g * ans / y, reads=("y", "ans y"))
power_p = elementwise("power", lambda xp, x, y: xp.power(x, y), lambda g, ans, x, y: g * _dpow_dx(x, y), lambda g, ans, x, y: g * _dpow_dy(x, y), reads="x y")
maximum_p = elementwise("maximum", lambda xp, x, y: xp.maximum(x, y), lambda g, ans, x, y: g * _share(x, y), lambda g, ans, x, y: g * _share(y, x), reads="x y")
minimum_p = elementwise("minimum", lambda xp, x, y: xp.minimum(x, y), lambda g, ans, x, y: g * _share(y, x), lambda g, ans, x, y: g * _share(x, y), reads="x y")
negative_p = elementwise("negative", lambda xp, x: xp.negative(x), lambda g, ans, x: -g)
exp_p = elementwise("exp", lambda xp, x: xp.exp(x), lambda g, ans, x: g * ans, reads="ans")
log_p = elementwise("log", lambda xp, x: xp.log(x), lambda g, ans, x: g / x, reads="x")
log1p_p = elementwise("log1p", lambda xp, x: xp.log1p(x), lambda g, ans, x: g / (1 + x), reads="x")
expm1_p = elementwise("expm1", lambda xp, x: xp.expm1(x), lambda g, ans, x: g * (ans + 1), reads="ans")
sqrt_p = elementwise("sqrt", lambda xp, x: xp.sqrt(x), lambda g, ans, x: g * 0.5 / ans, reads="ans")
square_p = elementwise("square", lambda xp, x: xp.square(x), lambda g, ans, x: g * 2 * x, reads="x")
abs_p = elementwise("abs", lambda xp, x: xp.abs(x), lambda g, ans, x: g * sign(x), reads="x")
sin_p = elementwise("sin", lambda xp, x: xp.sin(x), lambda g, ans, x: g * cos(x), reads="x")
cos_p = elementwise("cos", lambda xp, x: xp.cos(x), lambda g, ans, x: -g * sin(x), reads="x")
tan_p = elementwise("tan", lambda xp, x: xp.tan(x), lambda g, ans, x: g * (1 + ans * ans), reads="ans")
arcsin_p = elementwise("arcsin", lambda xp, x: xp.arcsin(x), lambda g, ans, x: g / sqrt(1 - x * x), reads="x")
arccos_p = elementwise("arccos", lambda xp, x: xp.arccos(x), lambda g, ans, x: -g / sqrt(1 - x * x), reads="x")
arctan_p = elementwise("arctan", lambda xp, x: xp.arctan(x), lambda g, ans, x: g / (1 + x * x), reads="x")
arctan2_p = elementwise("arctan2", lambda xp, y, x: xp.arctan2(y, x), lambda g, ans, y, x: g * x / (x * x + y * y), lambda g, ans, y, x: -g * y / (x * x + y * y), reads="y x")
sinh_p = elementwise("sinh", lambda xp, x: xp.sinh(x), lambda g, ans, x: g * cosh(x), reads="x")
cosh_p = elementwise("cosh", lambda xp, x: xp.cosh(x), lambda g, ans, x: g * sinh(x), reads="x")
erf_p = elementwise("erf", lambda xp, x: _backend_erf(xp)(x), lambda g, ans, x: g * _TWO_OVER_SQRT_PI * exp(-x * x), reads="x")
tanh_p = elementwise("tanh", lambda xp, x: xp.tanh(x), lambda g, ans, x: g * (1 - ans * ans), reads="ans")
sigmoid_p = elementwise("sigmoid", lambda xp, x: _sigmoid(xp, x), lambda g, ans, x: g * (ans * (1 - ans)), reads="ans")
relu_p = elementwise("relu", lambda xp, x: xp.maximum(x, 0), lambda g, ans, x: g * greater(x, 0), reads="x")
softplus_p = elementwise("softplus", lambda xp, x: xp.logaddexp(x, 0), lambda g, ans, x: g * sigmoid(x), reads="x")
clip_p = elementwise("clip", lambda xp, x, lo, hi: xp.clip(x, lo, hi), lambda g, ans, x, lo, hi: g * _inside(x, lo, hi), reads="x")
where_p = elementwise("where", lambda xp, c, x, y: xp.where(c, x, y), None, lambda g, ans, c, x, y: where(c, g, 0.0), lambda g, ans, c, x, y: where(c, 0.0, g), reads=(None, "c", "c"))
astype_p = elementwise("astype", lambda xp, x, dtype: x.astype(dtype, copy=False), lambda g, ans, x, dtype: g)
# fmt: on


def _sigmoid(xp, x):
    # stable for large |x| in both directions
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def _inside(x, lo, hi):
    m = 1.0
    if lo is not None:
        m = m * greater_equal(x, lo)
    if hi is not None:
        m = m * less_equal(x, hi)
    return m


# non-differentiable elementwise ops: their outputs carry no derivative
# fmt: off
less_p = nondifferentiable("less", lambda xp, x, y: xp.less(x, y))
less_equal_p = nondifferentiable("less_equal", lambda xp, x, y: xp.less_equal(x, y))
greater_p = nondifferentiable("greater", lambda xp, x, y: xp.greater(x, y))
greater_equal_p = nondifferentiable("greater_equal", lambda xp, x, y: xp.greater_equal(x, y))
equal_p = nondifferentiable("equal", lambda xp, x, y: xp.equal(x, y))
not_equal_p = nondifferentiable("not_equal", lambda xp, x, y: xp.not_equal(x, y))
logical_not_p = nondifferentiable("logical_not", lambda xp, x: xp.logical_not(x))
logical_and_p = nondifferentiable("logical_and", lambda xp, x, y: xp.logical_and(x, y))
logical_or_p = nondifferentiable("logical_or", lambda xp, x, y: xp.logical_or(x, y))
sign_p = nondifferentiable("sign", lambda xp, x: xp.sign(x))
floor_p = nondifferentiable("floor", lambda xp, x: xp.floor(x))
isfinite_p = nondifferentiable("isfinite", lambda xp, x: xp.isfinite(x))
isnan_p = nondifferentiable("isnan", lambda xp, x: xp.isnan(x))
cast_nd_p = nondifferentiable("cast", lambda xp, x, dtype: x.astype(dtype, copy=False))
# fmt: on


# ----------------------------------------------------------------------------- public functions
def operand(x: ArrayLike, like: object = None) -> Any:
    """Tensors and Python numbers pass through (numbers stay weakly typed, as in NumPy); other
    array-likes become tensors on the device of ``like``."""
    if isinstance(x, (Tensor, Number)):
        return x

    return asarray(x, device=like.device if isinstance(like, Tensor) else None)


_Unary = Callable[[ArrayLike], Tensor]
_Binary = Callable[[ArrayLike, ArrayLike], Tensor]


def _unary(prim: Primitive) -> _Unary:
    def fn(x: ArrayLike) -> Tensor:
        return bind_args(prim, (operand(x),), {})

    fn.__name__ = prim.name
    fn.__doc__ = f"Elementwise ``{prim.name}``, as ``numpy.{prim.name}``; differentiable in both modes."
    return fn


def _binary(prim: Primitive) -> _Binary:
    def fn(x: ArrayLike, y: ArrayLike) -> Tensor:
        if not (
            isinstance(x, Tensor) and isinstance(y, Tensor)
        ):  # two tensors (the usual case) pass as they are
            if not isinstance(x, Tensor) and not isinstance(y, Tensor):
                x = asarray(x)
            x, y = operand(x, y), operand(y, x)
        return bind_args(prim, (x, y), {})

    fn.__name__ = prim.name
    fn.__doc__ = f"Elementwise ``{prim.name}`` with NumPy broadcasting; differentiable in both modes."
    return fn


add: _Binary = _binary(add_p)
subtract: _Binary = _binary(subtract_p)
multiply: _Binary = _binary(multiply_p)
divide: _Binary = _binary(divide_p)
maximum: _Binary = _binary(maximum_p)
minimum: _Binary = _binary(minimum_p)
less: _Binary = _binary(less_p)
less_equal: _Binary = _binary(less_equal_p)
greater: _Binary = _binary(greater_p)
greater_equal: _Binary = _binary(greater_equal_p)
equal: _Binary = _binary(equal_p)
not_equal: _Binary = _binary(not_equal_p)
logical_and: _Binary = _binary(logical_and_p)
logical_or: _Binary = _binary(logical_or_p)
negative: _Unary = _unary(negative_p)
exp: _Unary = _unary(exp_p)
log: _Unary = _unary(log_p)
log1p: _Unary = _unary(log1p_p)
expm1: _Unary = _unary(expm1_p)
sqrt: _Unary = _unary(sqrt_p)
square: _Unary = _unary(square_p)
abs: _Unary = _unary(abs_p)  # noqa: A001 - NumPy's name
sin: _Unary = _unary(sin_p)
cos: _Unary = _unary(cos_p)
tanh: _Unary = _unary(tanh_p)
tan: _Unary = _unary(tan_p)
arcsin: _Unary = _unary(arcsin_p)
arccos: _Unary = _unary(arccos_p)
arctan: _Unary = _unary(arctan_p)
arctan2: _Binary = _binary(arctan2_p)
sinh: _Unary = _unary(sinh_p)
cosh: _Unary = _unary(cosh_p)
erf: _Unary = _unary(erf_p)

tan.__doc__ = """Elementwise tangent, as ``numpy.tan``; ``tan'(x) = 1 + tan(x)**2`` (read from the output).

    Poles (``x = π/2 + kπ``) give ±inf values and derivatives, as the function does.

    >>> import minidiff as md
    >>> md.grad(md.tan)(md.tensor(0.0)).item()
    1.0
    """
arcsin.__doc__ = """Elementwise inverse sine, as ``numpy.arcsin``; ``arcsin'(x) = 1 / sqrt(1 - x**2)``.

    Defined on [-1, 1]; at ±1 the derivative is +inf (with NumPy's divide-by-zero warning), as
    ``sqrt'(0)``; outside, values and derivatives are NaN.

    >>> import minidiff as md
    >>> md.grad(md.arcsin)(md.tensor(0.0)).item()
    1.0
    """
arccos.__doc__ = """Elementwise inverse cosine, as ``numpy.arccos``; ``arccos'(x) = -1 / sqrt(1 - x**2)``.

    Defined on [-1, 1]; at ±1 the derivative is -inf, outside NaN (as :func:`arcsin`).

    >>> import minidiff as md
    >>> md.grad(md.arccos)(md.tensor(0.0)).item()
    -1.0
    """
arctan.__doc__ = """Elementwise inverse tangent, as ``numpy.arctan``; ``arctan'(x) = 1 / (1 + x**2)``.

    >>> import minidiff as md
    >>> md.grad(md.arctan)(md.tensor(1.0)).item()
    0.5
    """
arctan2.__doc__ = """The angle of the point ``(x, y)``: ``arctan2(y, x)`` elementwise with broadcasting, as
    ``numpy.arctan2(x1, x2)`` (``x1`` is ``y``).  Derivatives ``x / (x² + y²)`` in ``y`` and
    ``-y / (x² + y²)`` in ``x``; at the origin both are NaN (0/0: the angle has no limit there).

    >>> import minidiff as md
    >>> [g.item() for g in md.grad(md.arctan2, argnums=(0, 1))(md.tensor(1.0), md.tensor(1.0))]
    [0.5, -0.5]
    """
sinh.__doc__ = """Elementwise hyperbolic sine, as ``numpy.sinh``; ``sinh' = cosh``.

    >>> import minidiff as md
    >>> md.grad(md.sinh)(md.tensor(0.0)).item()
    1.0
    """
cosh.__doc__ = """Elementwise hyperbolic cosine, as ``numpy.cosh``; ``cosh' = sinh``.

    >>> import minidiff as md
    >>> md.grad(md.cosh)(md.tensor(0.0)).item()
    0.0
    """
erf.__doc__ = """The error function elementwise, as ``scipy.special.erf`` (NumPy has none; the backend
    provides SciPy's, or CuPy's ``cupyx.scipy.special.erf`` on the GPU); ``erf'(x) = 2/sqrt(π)·exp(-x²)``.

    >>> import minidiff as md
    >>> round(md.erf(md.tensor(1.0)).item(), 6), round(md.grad(md.erf)(md.tensor(0.0)).item(), 6)
    (0.842701, 1.128379)
    """
sigmoid: _Unary = _unary(sigmoid_p)
relu: _Unary = _unary(relu_p)
softplus: _Unary = _unary(softplus_p)
logical_not: _Unary = _unary(logical_not_p)
sign: _Unary = _unary(sign_p)
floor: _Unary = _unary(floor_p)
isfinite: _Unary = _unary(isfinite_p)
isnan: _Unary = _unary(isnan_p)


def power(x: ArrayLike, y: ArrayLike) -> Tensor:
    """``x ** y`` elementwise with broadcasting (d/dy taken as 0 where x <= 0)."""
    if isinstance(y, Number) and y == 1:
        return operand(x)
    if isinstance(y, Number) and y == 2:
        return square(x)
    return _binary(power_p)(x, y)


def where(condition: ArrayLike, x: ArrayLike, y: ArrayLike) -> Tensor:
    """``x`` where ``condition`` holds, else ``y`` (broadcast); differentiable in ``x`` and ``y``.

    >>> import minidiff as md
    >>> md.where(md.tensor([True, False]), 1.0, md.tensor([5.0, 6.0])).tolist()
    [1.0, 6.0]
    """
    like = next((v for v in (x, y, condition) if isinstance(v, Tensor)), None)
    c = operand(condition, like)
    if not isinstance(c, Tensor) or c.dtype.kind != "b":
        from .creation import asarray

        c = asarray(c, device=like.device if like is not None else None).astype(bool)
    return bind(where_p, c, operand(x, like), operand(y, like))


def clip(x: ArrayLike, a_min: ArrayLike | None = None, a_max: ArrayLike | None = None) -> Tensor:
    """Limit values to ``[a_min, a_max]``; the derivative is 1 on the closed interval, 0 outside."""
    v = operand(x)
    if a_min is None and a_max is None:
        raise ValueError("clip: give at least one of a_min and a_max")
    if isinstance(a_min, Tensor) or isinstance(a_max, Tensor):
        if a_min is not None:
            v = maximum(v, a_min)
        return minimum(v, a_max) if a_max is not None else v
    return bind(clip_p, v, lo=a_min, hi=a_max)


def astype(x: ArrayLike, dtype: DTypeLike) -> Tensor:
    """``x`` converted to ``dtype``: differentiable between floating dtypes, a constant otherwise."""

    x = x if isinstance(x, Tensor) else asarray(x)  # a number too: operand() would keep it bare
    dtype = numpy_module.dtype(dtype)
    if x.dtype == dtype:
        return x
    if dtype.kind == "f" and x.dtype.kind == "f":
        return bind(astype_p, x, dtype=dtype)
    return bind(cast_nd_p, x, dtype=dtype)
