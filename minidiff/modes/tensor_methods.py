"""What you can do with a tensor: its operators and ndarray methods, attached to the class in one place.

:mod:`minidiff.tensor` defines what a tensor *is* (an array on a device, its metadata, how its value
is read out); it imports nothing above the backend.  The operators (``+``, ``@``, ``x[i]``...) and
the ndarray methods (``x.sum()``, ``x.reshape()``...) call minidiff's public functions and the tape,
which sit in higher layers, so they are written here and :func:`attach` adds them to
:class:`~minidiff.tensor.Tensor` when the package is imported — the one place this happens.
"""

from __future__ import annotations

from .. import backend
from ..errors import DTypeError, TapeError
from ..primitives import ops as _ops
from ..primitives.creation import zeros
from ..primitives.indexing import IndexUpdater
from ..primitives.numpy_api import array_function, array_ufunc
from ..tensor.core import Tensor, Tracer, wrap
from .reverse import backward, make_leaf

__all__ = ["attach"]

_NO_VALUE = object()  # NumPy's "argument not given" for ``initial=``


def _unsupported(method: str, out=None, initial=_NO_VALUE, where=True) -> None:
    if out is not None:
        raise TypeError(
            f"{method}: out= is not supported: minidiff never writes into an existing array (tensors "
            "are values); use the returned tensor"
        )
    if initial is not _NO_VALUE:
        raise NotImplementedError(
            f"{method}: initial= is not supported; combine the result with the initial value yourself"
        )
    if where is not True:
        raise NotImplementedError(
            f"{method}: where= is not supported; mask the input first, e.g. md.where(mask, x, 0.0)"
        )


def _check_order(op: str, order: str) -> None:
    if order != "C":
        raise NotImplementedError(
            f"{op}: only order='C' (row-major) is supported, not {order!r}; for column-major order "
            "transpose first (x.T.{op}() reads x in Fortran order)"
        )


def _cast(method: str, x, dtype):
    """``x`` in the accumulator ``dtype`` of a reduction (None: its own); real dtypes only."""
    if dtype is None:
        return x
    try:
        dt = backend.numpy_module.dtype(dtype)
    except TypeError as exc:
        raise DTypeError(f"{method}: unknown dtype={dtype!r}") from exc
    if dt.kind not in "biuf":
        raise DTypeError(
            f"{method}: dtype={dt} is not supported (minidiff tensors hold booleans, integers and reals)"
        )
    return _ops.astype(x, dt)


def _keep(out, x, axis, keepdims: bool):
    """Re-insert the reduced axes of ``x`` as size 1 (``keepdims=True``) for reductions without it."""
    if not keepdims:
        return out
    axes = _ops.normalize_axis("keepdims", axis, x.ndim)
    return _ops.reshape(out, tuple(1 if a in axes else s for a, s in enumerate(x.shape)))


class _TensorMethods:
    """Operators and ndarray methods of every tensor (see the module doc)."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        """NEP 13: ``np.sin(t)``, ``ndarray + t``... run minidiff's function (see :mod:`minidiff.primitives.numpy_api`)."""

        return array_ufunc(ufunc, method, *inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        """NEP 18: ``np.sum(t)``, ``np.linalg.solve(a, t)``... run minidiff's function (same module)."""

        return array_function(func, types, args, kwargs)

    # ----------------------------------------------------------------- conversion
    def to(self, device) -> Tensor:
        """A copy on ``device`` (``"cpu"`` or ``"cuda"``); the tensor itself if already there."""
        dev = backend.get_device(device)
        if dev is self._device:
            return self
        return _ops.to_device(self, dev)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        """Return a tape leaf with this value whose operations will be recorded (tape style).

        Unlike PyTorch this returns a new tensor: minidiff tensors are values, never changed in place
        by the tape.
        """
        if not requires_grad:
            return self.detach()

        return make_leaf(self)

    # ----------------------------------------------------------------- reverse mode, tape style
    def backward(self, cotangent=None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every tape leaf it depends on."""

        backward(self, cotangent, retain_graph)

    # ----------------------------------------------------------------- operators
    def __add__(self, other):
        return _ops.add(self, other)

    def __radd__(self, other):
        return _ops.add(other, self)

    def __sub__(self, other):
        return _ops.subtract(self, other)

    def __rsub__(self, other):
        return _ops.subtract(other, self)

    def __mul__(self, other):
        return _ops.multiply(self, other)

    def __rmul__(self, other):
        return _ops.multiply(other, self)

    def __truediv__(self, other):
        return _ops.divide(self, other)

    def __rtruediv__(self, other):
        return _ops.divide(other, self)

    def __pow__(self, other):
        return _ops.power(self, other)

    def __rpow__(self, other):
        return _ops.power(other, self)

    def __matmul__(self, other):
        return _ops.matmul(self, other)

    def __rmatmul__(self, other):
        return _ops.matmul(other, self)

    def __mod__(self, other):
        return _ops.remainder(self, other)

    def __rmod__(self, other):
        return _ops.remainder(other, self)

    def __floordiv__(self, other):
        return _ops.floor_divide(self, other)

    def __rfloordiv__(self, other):
        return _ops.floor_divide(other, self)

    def __divmod__(self, other):
        return _ops.divmod(self, other)

    def __rdivmod__(self, other):
        return _ops.divmod(other, self)

    # In-place operators.  A tensor is a value, so ``x += v`` makes a new tensor and rebinds ``x`` to
    # it, as ``x = x + v`` does.  On a tape-style leaf (``requires_grad=True``) that rebinding would
    # send the gradient to the old leaf and leave ``x.grad`` None, so it raises instead.
    def _inplace(self, symbol: str, op, other):
        if self._is_tape_leaf():
            raise TapeError(
                f"x {symbol} v: x ({self.dtype}{list(self.shape)}) is a tape leaf with requires_grad=True, "
                f"and `x {symbol} v` would rebind the name x to a new tensor: backward() would then fill "
                "the gradient of the old leaf and x.grad would stay None. Write `y = x "
                f"{symbol[:-1]} v` for a new value (x stays the leaf), x.at[index].set(v) / .add(v) "
                "for a copy with some entries changed, or md.assign_(x, new_value) under md.no_grad() "
                "to replace the value of a parameter (what the optimizers do)"
            )
        return op(self, other)

    def __iadd__(self, other):
        return self._inplace("+=", _ops.add, other)

    def __isub__(self, other):
        return self._inplace("-=", _ops.subtract, other)

    def __imul__(self, other):
        return self._inplace("*=", _ops.multiply, other)

    def __itruediv__(self, other):
        return self._inplace("/=", _ops.divide, other)

    def __ifloordiv__(self, other):
        return self._inplace("//=", _ops.floor_divide, other)

    def __imod__(self, other):
        return self._inplace("%=", _ops.remainder, other)

    def __ipow__(self, other):
        return self._inplace("**=", _ops.power, other)

    def __imatmul__(self, other):
        return self._inplace("@=", _ops.matmul, other)

    def __iand__(self, other):
        return self._inplace("&=", Tensor.__and__, other)

    def __ior__(self, other):
        return self._inplace("|=", Tensor.__or__, other)

    def __ixor__(self, other):
        return self._inplace("^=", Tensor.__xor__, other)

    def __neg__(self):
        return _ops.negative(self)

    def __pos__(self):
        return self

    def __abs__(self):
        return _ops.abs(self)

    def __lt__(self, other):
        return _ops.less(self, other)

    def __le__(self, other):
        return _ops.less_equal(self, other)

    def __gt__(self, other):
        return _ops.greater(self, other)

    def __ge__(self, other):
        return _ops.greater_equal(self, other)

    def __eq__(self, other):
        return _ops.equal(self, other)

    def __ne__(self, other):
        return _ops.not_equal(self, other)

    # ``~ & | ^`` are logical on boolean tensors, as in NumPy; NumPy's bitwise meaning on integers is
    # not implemented, so integers raise rather than silently compute the logical result
    def _check_bool(self, symbol: str, *others) -> None:
        for v in (self, *others):
            kind = v.dtype.kind if hasattr(v, "dtype") else ("b" if isinstance(v, bool) else "?")
            if kind != "b":
                what = f"dtype {v.dtype}" if hasattr(v, "dtype") else f"a {type(v).__name__}"
                raise TypeError(
                    f"{symbol}: minidiff implements {symbol} for boolean tensors only (logical), got "
                    f"{what}; NumPy's bitwise {symbol} on integers is not supported"
                )

    def __invert__(self):
        self._check_bool("~")
        return _ops.logical_not(self)

    def __and__(self, other):
        self._check_bool("&", other)
        return _ops.logical_and(self, other)

    def __rand__(self, other):
        self._check_bool("&", other)
        return _ops.logical_and(other, self)

    def __or__(self, other):
        self._check_bool("|", other)
        return _ops.logical_or(self, other)

    def __ror__(self, other):
        self._check_bool("|", other)
        return _ops.logical_or(other, self)

    def __xor__(self, other):
        self._check_bool("^", other)
        return _ops.logical_xor(self, other)

    def __rxor__(self, other):
        self._check_bool("^", other)
        return _ops.logical_xor(other, self)

    def __getitem__(self, index):
        return _ops.getitem(self, index)

    def __setitem__(self, index, value):
        raise TypeError(
            f"tensors do not support item assignment (x[{index!r}] = ...): a minidiff tensor is a value. "
            "Write x = x.at[index].set(value) (or .add(value)): it returns a new tensor and is "
            "differentiable with respect to both x and value"
        )

    @property
    def at(self):
        """Functional index updates, in JAX's spelling: ``x.at[index].set(v)``, ``.add(v)``,
        ``.multiply(v)``, ``.min(v)``, ``.max(v)`` and ``.get()`` return a new tensor (``x`` is
        unchanged), differentiable with respect to ``x`` and ``v`` in every mode.

        >>> import minidiff as md
        >>> x = md.zeros(4)
        >>> x.at[1].set(5.0).tolist(), x.at[md.tensor([0, 0, 3])].add(1.0).tolist()
        ([0.0, 5.0, 0.0, 0.0], [2.0, 0.0, 0.0, 1.0])
        """

        return IndexUpdater(self)

    # ----------------------------------------------------------------- method spellings
    # The ndarray methods a NumPy user calls, with NumPy's keywords; each is the md function of the
    # same name, differentiable where the math is.  ``out=`` (minidiff never writes into an array),
    # ``where=`` and ``initial=`` raise; ``dtype=`` casts first, as NumPy's accumulator dtype does.
    @property
    def T(self) -> Tensor:
        return _ops.transpose(self)

    @property
    def real(self) -> Tensor:
        """The real part: the tensor itself (minidiff tensors are real)."""
        return self

    @property
    def imag(self) -> Tensor:
        """The imaginary part: zeros (minidiff tensors are real)."""

        return zeros(self.shape, dtype=self.dtype, device=self.device)

    def conj(self) -> Tensor:
        """The complex conjugate: the tensor itself (minidiff tensors are real)."""
        return self

    conjugate = conj

    def reshape(self, *shape, order: str = "C", copy=None) -> Tensor:
        """``md.reshape(self, shape)``; ``t.reshape(2, 3)`` and ``t.reshape((2, 3))`` both work.

        >>> import minidiff as md
        >>> md.arange(6.0).reshape(2, -1).shape
        (2, 3)
        """
        _check_order("reshape", order)
        if not shape:
            raise TypeError("reshape: a new shape is required, e.g. t.reshape(2, 3)")
        return _ops.reshape(self, shape[0] if len(shape) == 1 else shape)

    def ravel(self, order: str = "C") -> Tensor:
        """The elements as a 1-D tensor, in row-major order."""
        _check_order("ravel", order)
        return _ops.ravel(self)

    def flatten(self, order: str = "C") -> Tensor:
        """The elements as a 1-D tensor (tensors are values, so this is :meth:`ravel`)."""
        _check_order("flatten", order)
        return _ops.ravel(self)

    def squeeze(self, axis=None) -> Tensor:
        return _ops.squeeze(self, axis)

    def transpose(self, *axes) -> Tensor:
        return _ops.transpose(self, (axes[0] if len(axes) == 1 else axes) or None)

    def swapaxes(self, axis1: int, axis2: int) -> Tensor:
        return _ops.swapaxes(self, axis1, axis2)

    def repeat(self, repeats, axis=None) -> Tensor:
        return _ops.repeat(self, repeats, axis)

    def astype(self, dtype, order: str = "K", casting: str = "unsafe", subok: bool = True, copy=True):
        """``self`` converted to ``dtype`` (differentiable between floating dtypes)."""
        if casting != "unsafe":
            raise NotImplementedError(f"astype: only casting='unsafe' is supported, not {casting!r}")
        return _ops.astype(self, dtype)

    def copy(self, order: str = "C") -> Tensor:
        """A new tensor with the same values (on a tape, a new node: the copy is not the leaf).

        ``order`` is accepted for NumPy's signature; the copy is row-major."""
        return wrap(self._data.copy(), self._device)

    def sum(self, axis=None, dtype=None, out=None, keepdims=False, initial=_NO_VALUE, where=True):
        _unsupported("sum", out=out, initial=initial, where=where)
        return _ops.sum(_cast("sum", self, dtype), axis=axis, keepdims=keepdims)

    def mean(self, axis=None, dtype=None, out=None, keepdims=False, *, where=True):
        _unsupported("mean", out=out, where=where)
        return _ops.mean(_cast("mean", self, dtype), axis=axis, keepdims=keepdims)

    def var(self, axis=None, dtype=None, out=None, ddof=0, keepdims=False, *, where=True):
        _unsupported("var", out=out, where=where)
        return _ops.var(_cast("var", self, dtype), axis=axis, keepdims=keepdims, ddof=ddof)

    def std(self, axis=None, dtype=None, out=None, ddof=0, keepdims=False, *, where=True):
        _unsupported("std", out=out, where=where)
        return _ops.std(_cast("std", self, dtype), axis=axis, keepdims=keepdims, ddof=ddof)

    def prod(self, axis=None, dtype=None, out=None, keepdims=False, initial=_NO_VALUE, where=True):
        _unsupported("prod", out=out, initial=initial, where=where)
        return _ops.prod(_cast("prod", self, dtype), axis=axis, keepdims=keepdims)

    def max(self, axis=None, out=None, keepdims=False, initial=_NO_VALUE, where=True):
        _unsupported("max", out=out, initial=initial, where=where)
        return _ops.max(self, axis=axis, keepdims=keepdims)

    def min(self, axis=None, out=None, keepdims=False, initial=_NO_VALUE, where=True):
        _unsupported("min", out=out, initial=initial, where=where)
        return _ops.min(self, axis=axis, keepdims=keepdims)

    def argmax(self, axis=None, out=None, *, keepdims=False) -> Tensor:
        _unsupported("argmax", out=out)
        return _keep(_ops.argmax(self, axis=axis), self, axis, keepdims)

    def argmin(self, axis=None, out=None, *, keepdims=False) -> Tensor:
        _unsupported("argmin", out=out)
        return _keep(_ops.argmin(self, axis=axis), self, axis, keepdims)

    def any(self, axis=None, out=None, keepdims=False, *, where=True) -> Tensor:
        _unsupported("any", out=out, where=where)
        return _keep(_ops.any(self, axis=axis), self, axis, keepdims)

    def all(self, axis=None, out=None, keepdims=False, *, where=True) -> Tensor:
        _unsupported("all", out=out, where=where)
        return _keep(_ops.all(self, axis=axis), self, axis, keepdims)

    def cumsum(self, axis=None, dtype=None, out=None) -> Tensor:
        _unsupported("cumsum", out=out)
        return _ops.cumsum(_cast("cumsum", self, dtype), axis=axis)

    def clip(self, min=None, max=None, out=None) -> Tensor:  # noqa: A002 - NumPy's names
        _unsupported("clip", out=out)
        return _ops.clip(self, min, max)

    def dot(self, b, out=None) -> Tensor:
        _unsupported("dot", out=out)
        return _ops.dot(self, b)

    def exp(self) -> Tensor:
        return _ops.exp(self)

    def log(self) -> Tensor:
        return _ops.log(self)

    def __round__(self, ndigits=None):
        raise TypeError(
            "round(): minidiff has no rounding operation; use md.floor(x + 0.5) (a constant, no "
            "derivative) or x.detach().item() for a Python number"
        )


class _TracerMethods:
    """Where a traced value differs."""

    def copy(self, order: str = "C") -> Tensor:
        return _ops.getitem(self, Ellipsis)  # a new traced value (on a tape, a new node)


_CLASS_ATTRIBUTES = {"__module__", "__qualname__", "__dict__", "__weakref__", "__doc__"}
_CLASS_ATTRIBUTES |= {"__firstlineno__", "__static_attributes__"}  # Python 3.13+


def attach() -> None:
    """Add the operators and methods to :class:`Tensor` and :class:`Tracer` (done once, on import)."""
    for cls, methods in ((Tensor, _TensorMethods), (Tracer, _TracerMethods)):
        for name, value in vars(methods).items():
            if name not in _CLASS_ATTRIBUTES:
                setattr(cls, name, value)


attach()
